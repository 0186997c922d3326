"""Checkpoints written on a node other than the driver's, and learners that cannot see output_dir.

A real two-node Ray (ray.cluster_utils.Cluster, one raylet per node) runs in a subprocess, so the
session's Ray is never touched. The head, where the driver attaches, has no CPU, so every actor
lands on the other node; and the raylets start in another folder than the driver's, as on a
cluster started with `ray start`, so a relative output_dir must reach the learners as the
driver's absolute folder. Both nodes share this machine's disk, so a learner node that does not
see output_dir is simulated: the driver's marker is left outside output_dir, and the learners
find there what such a node would: nothing, or a stale marker of their own.
"""

import json
import shutil
import subprocess
import sys
import tempfile
import textwrap

from ray_processes import kill_processes_under

CLUSTER_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path

    import ray
    from ray.cluster_utils import Cluster

    from anomalyr1.platform import shared_output
    from anomalyr1.platform.checkpoint import find_resumable
    from anomalyr1.platform.driver import Trainer
    from anomalyr1.platform.metrics import read_metrics
    from anomalyr1.platform.recipe import RecipeError, load_recipe

    temp_dir, model, data, cache, out, reward = sys.argv[1:]
    out = Path(out)


    class Watched(Trainer):
        def _start_learners(self):
            super()._start_learners()
            self.learner_nodes = ray.get([learner.__ray_call__.remote(lambda _: ray.get_runtime_context().get_node_id())
                                          for learner in self.roles.learners.actors])


    def recipe(output, *more):
        return load_recipe(None, [f"model.path={model}", f"data.root={data}", f"model.cache_dir={cache}", f"trainer.output_dir={output}",
                                  "trainer.progress_bar=false", "trainer.placement_timeout_s=60", "trainer.prompts_per_step=2",
                                  "rollout.n=4", "rollout.placement=separate", "rollout.workers=1", "reward.actors=1", "learner.workers=2", reward, *more])


    def refusal(output):
        try:
            Trainer(recipe(output, "trainer.steps=1")).train()
        except RecipeError as exc:
            return str(exc)
        return None


    (out / "raylets").mkdir()
    os.chdir(out / "raylets")  # the raylets' folder, where the actors work: not the driver's
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False, "temp_dir": temp_dir})
    try:
        cluster.add_node(num_cpus=2)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address)
        os.chdir(out)
        result = {"driver_node": ray.get_runtime_context().get_node_id()}

        trainer = Watched(recipe("run", "trainer.steps=2", "trainer.save_every=1"))  # relative: the driver's folder
        trainer.train()
        result["learner_nodes"] = trainer.learner_nodes
        found = find_resumable(trainer.output, learners=2)
        result["resumable"] = None if found is None else [found[0].name, found[1].step]
        resumed = Trainer(recipe("run", "trainer.steps=3", "trainer.save_every=1"), resume=True)
        result["resumed_from"] = resumed.step
        resumed.train()
        result["steps"] = [m["step"] for m in read_metrics(resumed.output / "metrics.jsonl")]

        driver_only = out / "driver-only"  # the driver's own folder, which the learners' node would not see
        driver_only.mkdir()
        real_write = shared_output.write_marker

        def write_elsewhere(output):
            marker, token = real_write(driver_only)
            return output / marker.name, token

        shared_output.write_marker = write_elsewhere
        result["unseen"] = refusal(out / "unseen")
        (out / "stale").mkdir()
        (out / "stale" / shared_output.MARKER).write_text("a token of the learner node's own folder")
        result["stale"] = refusal(out / "stale")
        result["stale_steps"] = (out / "stale" / "metrics.jsonl").exists()
        print(json.dumps(result))
    finally:
        ray.shutdown()
        cluster.shutdown()
    """
)


def test_checkpoints_written_on_another_node_commit_and_resume_and_unshared_output_is_refused(
    tmp_path, tiny_model, synthetic_root, cache_dir, learnable_reward
):
    script = tmp_path / "cluster.py"
    script.write_text(CLUSTER_SCRIPT)
    temp_dir = tempfile.mkdtemp(prefix="ar1-shared-")  # short: Ray's socket paths live under it
    try:
        done = subprocess.run(
            [sys.executable, str(script), temp_dir, tiny_model, str(synthetic_root), str(cache_dir), str(tmp_path), learnable_reward],
            capture_output=True, text=True, timeout=300,
        )
    finally:
        kill_processes_under(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(result["learner_nodes"]) == 2 and result["driver_node"] not in result["learner_nodes"], result
    assert result["resumable"] == ["step_2", 2]
    assert (result["resumed_from"], result["steps"]) == (2, [1, 2, 3])
    run = tmp_path / "run"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_1", "step_2", "step_3"]
    assert not (tmp_path / "raylets" / "run").exists(), "a relative output_dir is the driver's folder, not the actors'"
    assert not list(run.glob(".anomalyr1-shared-check")), "the marker is removed after the check"
    assert result["unseen"] == (
        f"trainer.output_dir = '{tmp_path / 'unseen'}': learner 0 does not see it (its node does not share the driver's storage), "
        "so checkpoints could not be written there; use an absolute path on storage every node shares (e.g. /shared/...)"
    )
    assert result["stale"].startswith(f"trainer.output_dir = '{tmp_path / 'stale'}': learner 0 sees another folder of that name"), result
    assert result["stale_steps"] is False, "the refusal comes before the first step"

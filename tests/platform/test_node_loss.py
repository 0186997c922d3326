"""A Ray node lost mid-run: the run goes on where the cluster can still hold the roles, and stops
with what is missing, within trainer.placement_timeout_s, where it cannot.

A real multi-node Ray (ray.cluster_utils.Cluster, one raylet per node) runs in a subprocess, so
the session's Ray is never touched; `remove_node(allow_graceful=False)` kills a node's raylet
and every process on it, as a failed machine would. The head, where the driver attaches, has no
CPU, and two 1-CPU nodes hold the roles in a known layout: the rollout worker (1 CPU) fills one,
the reward actor and the learner (0.5 CPU each) share the other. Where the run should survive, an
empty 1-CPU node joins after the roles are placed, so the lost node's bundles can only go there.
The run is held just after it starts step 2's rollout until the node is gone.
"""

import json
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from ray_processes import kill_processes_under

CLUSTER_SCRIPT = textwrap.dedent(
    """
    import json, sys, threading, time

    import ray
    from ray.cluster_utils import Cluster
    from ray.util.placement_group import placement_group_table

    from anomalyr1.platform.checkpoint import find_resumable
    from anomalyr1.platform.driver import Trainer
    from anomalyr1.platform.metrics import read_metrics
    from anomalyr1.platform.recipe import load_recipe

    scenario, temp_dir, model, data, cache, out, reward = sys.argv[1:]
    STEPS, LOSE_AT = 4, 2
    settings = {
        "learner": ["trainer.save_every=1", "trainer.placement_timeout_s=120"],
        "rollout": ["trainer.max_staleness=1", "trainer.save_every=0", "trainer.placement_timeout_s=120"],
        "no_room": ["trainer.save_every=1", "trainer.placement_timeout_s=40"],
    }[scenario]
    base = [
        f"model.path={model}", f"data.root={data}", f"model.cache_dir={cache}", f"trainer.output_dir={out}/run",
        "trainer.progress_bar=false", f"trainer.steps={STEPS}", "trainer.prompts_per_step=2", "rollout.n=4",
        "rollout.placement=separate", "rollout.workers=1", "rollout.num_cpus=1", "reward.actors=1", "reward.num_cpus=0.5",
        "learner.workers=1", "learner.num_cpus=0.5", reward, *settings]
    recipe = load_recipe(None, base)
    health = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 1000, "health_check_failure_threshold": 3}
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": False, "temp_dir": temp_dir, "_system_config": health})


    at_loss, node_lost = threading.Event(), threading.Event()


    class LosingANode(Trainer):
        # Holds the run just after it starts step LOSE_AT's rollout (ahead, during the step before,
        # with max_staleness 1) until the node is gone: a loss mid-step, however fast the machine.
        def launch(self, step, count=None, draw=0):
            launched = super().launch(step, count, draw)
            if step == LOSE_AT and not draw:
                at_loss.set()
                node_lost.wait(timeout=120)
            return launched


    def node_of(trainer, role):
        node_id = placement_group_table(trainer.roles.groups[role])["bundles_to_node_id"][0]
        return next(node for node in cluster.worker_nodes if node.node_id == node_id)


    def wait_for(condition, thread, timeout=150):
        deadline = time.monotonic() + timeout
        while not condition():
            assert thread.is_alive() and time.monotonic() < deadline, f"the run ended or stalled before the node was lost: {outcome}"
            time.sleep(0.05)


    try:
        for _ in range(2):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address)
        trainer = LosingANode(recipe)
        outcome = {}

        def run():
            try:
                outcome["final"] = str(trainer.train())
            except Exception as exc:
                outcome["error"] = f"{type(exc).__name__}: {exc}"
                outcome["stopped_at"] = time.monotonic()

        thread = threading.Thread(target=run)
        thread.start()
        wait_for(lambda: trainer.step >= 1 and hasattr(trainer, "version"), thread)
        victim = node_of(trainer, "rollout" if scenario == "rollout" else "learner")
        result = {"shared": node_of(trainer, "reward") is node_of(trainer, "learner") is not node_of(trainer, "rollout")}
        if scenario != "no_room":
            cluster.add_node(num_cpus=1)  # room for the lost node's actors
            cluster.wait_for_nodes()
        wait_for(at_loss.is_set, thread)
        cluster.remove_node(victim, allow_graceful=False)
        lost_at = time.monotonic()
        node_lost.set()
        thread.join(timeout=240)
        result["hung"] = thread.is_alive()
        result["error"] = outcome.get("error")
        result["final"] = outcome.get("final")
        result["stop_s"] = outcome["stopped_at"] - lost_at if "stopped_at" in outcome else None
        metrics = read_metrics(trainer.output / "metrics.jsonl")
        result["steps"] = [m["step"] for m in metrics]
        result["faults"] = {k: v for k, v in metrics[-1].items() if k.startswith("fault/")} if metrics else {}
        if scenario == "no_room":
            found = find_resumable(trainer.output, learners=1)
            result["resumable"] = found[1].step if found else None
            cluster.add_node(num_cpus=1)  # the node is back: --resume continues
            cluster.wait_for_nodes()
            resumed = Trainer(load_recipe(None, base + ["trainer.placement_timeout_s=120"]), resume=True)  # room to start on a busy machine
            result["resumed_from"] = resumed.step
            result["final"] = str(resumed.train())
            result["resumed_steps"] = [m["step"] for m in read_metrics(resumed.output / "metrics.jsonl")]
        print("RESULT " + json.dumps(result))  # the raylets' own log lines come to stdout too
    finally:
        ray.shutdown()
        cluster.shutdown()
    """
)


def run_scenario(scenario, tmp_path, tiny_model, synthetic_root, cache_dir, learnable_reward) -> dict:
    script = tmp_path / "cluster.py"
    script.write_text(CLUSTER_SCRIPT)
    temp_dir = tempfile.mkdtemp(prefix="ar1-loss-")  # short: Ray's socket paths live under it
    try:
        done = subprocess.run(
            [sys.executable, str(script), scenario, temp_dir, tiny_model, str(synthetic_root), str(cache_dir), str(tmp_path), learnable_reward],
            capture_output=True, text=True, timeout=420,
        )
    finally:
        kill_processes_under(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[len("RESULT "):])
    assert result["shared"], "the layout was not rollout worker alone, reward actor and learner together"
    assert not result["hung"], "the run neither finished nor stopped"
    return result


def final_model_written(result) -> bool:
    return result["final"] is not None and any(Path(result["final"]).glob("*.safetensors"))


def test_losing_the_node_of_a_learner_and_a_reward_actor_rebuilds_them_on_another(tmp_path, tiny_model, synthetic_root, cache_dir, learnable_reward):
    result = run_scenario("learner", tmp_path, tiny_model, synthetic_root, cache_dir, learnable_reward)
    assert result["error"] is None, result["error"]
    assert result["steps"] == [1, 2, 3, 4], "every step exactly once, redone steps replaced"
    assert final_model_written(result)
    assert result["faults"] == {"fault/learner_restarts": 1, "fault/reward_restarts": 1, "fault/rollout_restarts": 0}


def test_losing_the_node_of_a_rollout_worker_with_staleness_1_restarts_it_elsewhere(
    tmp_path, tiny_model, synthetic_root, cache_dir, learnable_reward
):
    result = run_scenario("rollout", tmp_path, tiny_model, synthetic_root, cache_dir, learnable_reward)
    assert result["error"] is None, result["error"]
    assert result["steps"] == [1, 2, 3, 4]
    assert final_model_written(result)
    assert result["faults"] == {"fault/learner_restarts": 0, "fault/reward_restarts": 0, "fault/rollout_restarts": 1}


def test_losing_a_node_no_other_can_replace_stops_with_what_is_missing_and_resumes_once_it_is_back(
    tmp_path, tiny_model, synthetic_root, cache_dir, learnable_reward
):
    result = run_scenario("no_room", tmp_path, tiny_model, synthetic_root, cache_dir, learnable_reward)
    assert result["error"] is not None and result["error"].startswith("PlacementError: "), result["error"]
    line = result["error"].removeprefix("PlacementError: ")
    assert "\n" not in line
    expected_tail = (
        "did not come back within 40s (trainer.placement_timeout_s): the recipe needs 2 CPU "
        "(1 rollout x (1 CPU), 1 reward x (0.5 CPU), 1 learner x (0.5 CPU)) but the cluster has 1 CPU"
    )
    assert line in (f"the learner group {expected_tail}", f"reward actor 0 {expected_tail}"), line
    assert result["stop_s"] < 40 + 20, "the stop came later than placement_timeout_s after the loss, with some seconds to notice it"
    assert result["resumable"] == result["steps"][-1], "the last checkpoint is the last step logged, intact"
    assert result["resumed_from"] == result["resumable"]
    assert result["resumed_steps"] == [1, 2, 3, 4]
    assert final_model_written(result)

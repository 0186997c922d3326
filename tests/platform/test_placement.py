"""Placement plans: where each actor lands per node, and an early clear error when it cannot.

The plans are pure and checked on made-up cluster shapes; one test starts a real three-node
Ray (ray.cluster_utils.Cluster) in a subprocess, so the session's Ray is never touched, and
checks that Ray places the roles as planned and that the driver refuses an unplaceable recipe
before creating anything.
"""

import json
import shutil
import subprocess
import sys
import tempfile
import textwrap

import pytest

from anomalyr1.platform.placement import PlacementError, RoleDemand, check_capacity, plan_placement
from ray_processes import kill_processes_under


def rollout(count, cpus=1.0, gpus=0.0):
    return RoleDemand("rollout", count, cpus, gpus, "SPREAD")


def learner(count, cpus=1.0, gpus=0.0):
    return RoleDemand("learner", count, cpus, gpus, "PACK")


def nodes(count, cpus, gpus=0):
    return [{"CPU": float(cpus), "GPU": float(gpus), "memory": 1e10} for _ in range(count)]


def test_spread_goes_round_robin_over_nodes():
    assert plan_placement([rollout(3)], nodes(3, 4)) == {"rollout": [0, 1, 2]}
    assert plan_placement([rollout(5)], nodes(2, 4)) == {"rollout": [0, 1, 0, 1, 0]}


def test_spread_skips_nodes_without_room():
    shape = [{"CPU": 8.0}, {"CPU": 1.0}, {"CPU": 8.0}]
    assert plan_placement([rollout(4, cpus=2)], shape) == {"rollout": [0, 2, 0, 2]}


def test_pack_fills_one_node_before_the_next():
    assert plan_placement([learner(4, gpus=1)], nodes(2, 8, gpus=2)) == {"learner": [0, 0, 1, 1]}
    # the node with room for the whole group, not the first one
    assert plan_placement([learner(3)], [{"CPU": 2.0}, {"CPU": 4.0}]) == {"learner": [1, 1, 1]}


def test_roles_are_placed_on_what_the_earlier_ones_left():
    plan = plan_placement([rollout(2), learner(2)], nodes(3, 2))
    assert plan == {"rollout": [0, 1], "learner": [2, 2]}


def test_gpu_and_cpu_fractions_share_nodes():
    assert plan_placement([learner(4, cpus=0.5, gpus=0.5)], nodes(2, 1, gpus=1)) == {"learner": [0, 0, 1, 1]}
    # ten 0.1-CPU actors fill one CPU exactly, although 1 - 9 x 0.1 < 0.1 in floating point
    reward = RoleDemand("reward", 10, 0.1, 0.0, "SPREAD")
    assert plan_placement([reward], nodes(1, 1)) == {"reward": [0] * 10}
    with pytest.raises(PlacementError, match="reward actor 11 of 11"):
        plan_placement([RoleDemand("reward", 11, 0.1, 0.0, "SPREAD")], nodes(1, 1))


def test_an_actor_bigger_than_every_node_fails_even_when_the_sum_fits():
    demands = [learner(1, gpus=2)]
    check_capacity(demands, {"CPU": 16.0, "GPU": 2.0})  # the cluster's sum is enough ...
    with pytest.raises(PlacementError) as error:  # ... but no single node is
        plan_placement(demands, nodes(2, 8, gpus=1))
    assert str(error.value) == (
        "one learner actor needs 1 CPU + 2 GPU on a single node, but no node has that much "
        "(nodes: node 0: 8 CPU + 1 GPU; node 1: 8 CPU + 1 GPU)"
    )


def test_roles_that_do_not_fit_together_name_the_role_and_what_is_left():
    with pytest.raises(PlacementError) as error:
        plan_placement([rollout(2), learner(1, cpus=2)], nodes(2, 2))
    assert str(error.value) == (
        "the roles do not fit together: learner actor 1 of 1 needs 2 CPU on one node and none has that left "
        "after placing rollout on nodes [0, 1] (free: node 0: 1 CPU; node 1: 1 CPU)"
    )


def test_a_group_that_outgrows_the_cluster_names_its_own_placed_actors():
    with pytest.raises(PlacementError, match=r"learner actor 5 of 5 .* after placing learner on nodes \[0, 0, 1, 1\] "
                                             r"\(free: node 0: 6 CPU \+ 0 GPU; node 1: 6 CPU \+ 0 GPU\)"):
        plan_placement([learner(5, gpus=1)], nodes(2, 8, gpus=2))


CLUSTER_SCRIPT = textwrap.dedent(
    """
    import json, sys, time

    import ray
    from ray.cluster_utils import Cluster

    from anomalyr1.platform.driver import Trainer
    from anomalyr1.platform.placement import (
        PlacementError, RoleDemand, actor_options, cluster_nodes, place_roles, plan_placement, release)
    from anomalyr1.platform.recipe import load_recipe

    temp_dir, model, data, cache, output = sys.argv[1:]
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False, "temp_dir": temp_dir})
    try:
        for _ in range(2):
            cluster.add_node(num_cpus=2)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address)
        ids = [node["NodeID"] for node in ray.nodes() if node["Alive"]]  # cluster_nodes' order

        @ray.remote
        class Where:
            def node(self):
                return ray.get_runtime_context().get_node_id()

        demands = [RoleDemand("rollout", 2, 1.0, 0.0, "SPREAD"), RoleDemand("learner", 2, 1.0, 0.0, "PACK")]
        plan = plan_placement(demands, cluster_nodes())
        groups = place_roles(demands, timeout_s=60)
        actual = {}
        for demand in demands:
            actors = [Where.options(**actor_options(groups[demand.role], i, demand)).remote() for i in range(demand.count)]
            actual[demand.role] = [ids.index(node) for node in ray.get([a.node.remote() for a in actors])]
        release(groups)

        base = [f"model.path={model}", f"data.root={data}", f"model.cache_dir={cache}", f"trainer.output_dir={output}",
                "trainer.progress_bar=false", "trainer.placement_timeout_s=60"]
        recipe = load_recipe(None, base + ["rollout.placement=separate", "rollout.workers=2", "learner.workers=1", "learner.num_cpus=3"])  # 4.2 CPUs of 6, but 3 on one node
        start = time.perf_counter()
        try:
            Trainer(recipe).train()
            refusal = None
        except PlacementError as exc:
            refusal = str(exc)
        print(json.dumps({"nodes": len(ids), "plan": plan, "actual": actual, "refusal": refusal,
                          "refusal_s": time.perf_counter() - start}))
    finally:
        ray.shutdown()
        cluster.shutdown()
    """
)


def canonical(plan: dict[str, list[int]]) -> dict[str, list[int]]:
    """Nodes renumbered by first use: which node is which is Ray's choice, the shape is the plan's."""
    names: dict[int, int] = {}
    return {role: [names.setdefault(node, len(names)) for node in where] for role, where in plan.items()}


def test_ray_places_the_roles_as_planned_on_a_three_node_cluster(tmp_path, tiny_model, synthetic_root, cache_dir):
    script = tmp_path / "cluster.py"
    script.write_text(CLUSTER_SCRIPT)
    temp_dir = tempfile.mkdtemp(prefix="ar1-cluster-")  # short: Ray's socket paths live under it
    try:
        done = subprocess.run(
            [sys.executable, str(script), temp_dir, tiny_model, str(synthetic_root), str(cache_dir), str(tmp_path / "run")],
            capture_output=True, text=True, timeout=240,
        )
    finally:
        kill_processes_under(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["nodes"] == 3
    assert result["plan"] == {"rollout": [0, 1], "learner": [2, 2]}
    actual = result["actual"]
    assert len(set(actual["rollout"])) == 2, f"rollout workers share a node: {actual}"
    assert canonical(actual) == canonical(result["plan"]), f"Ray placed {actual}, the plan said {result['plan']}"
    assert result["refusal"] is not None and "one learner actor needs 3 CPU on a single node" in result["refusal"], result
    assert result["refusal_s"] < 30, "the driver waited for placement instead of refusing at once"

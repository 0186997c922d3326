"""Where the roles go: one Ray placement group per role, and a clear error when they cannot go.

Ray waits forever for resources it does not have; a user would see a hung job. So the demand of
every role is checked against the cluster before anything is created, and placement groups are
awaited with a deadline, after which the error names the role and what is missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from anomalyr1.platform.recipe import Recipe


class PlacementError(RuntimeError):
    pass


@dataclass(frozen=True)
class RoleDemand:
    role: str
    count: int
    cpus: float
    gpus: float
    strategy: Literal["SPREAD", "PACK"]
    """Rollout workers spread over nodes (independent, throughput scales with nodes); learners
    pack (their collectives run every forward pass, so they want the fastest links)."""

    def bundle(self) -> dict[str, float]:
        bundle = {"CPU": self.cpus}
        if self.gpus:
            bundle["GPU"] = self.gpus
        return bundle

    def describe(self) -> str:
        needs = f"{self.cpus:g} CPU" + (f" + {self.gpus:g} GPU" if self.gpus else "")
        return f"{self.count} {self.role} x ({needs})"


def role_demands(recipe: Recipe) -> list[RoleDemand]:
    """Colocated, the rollout role has no actors: its engines live in the learners' bundles."""
    rollout_gpus = recipe.rollout.num_gpus * (recipe.rollout.tensor_parallel_size if recipe.rollout.engine == "vllm" else 1)
    rollout = [RoleDemand("rollout", recipe.rollout.workers, recipe.rollout.num_cpus, rollout_gpus, "SPREAD")]
    return [
        *(rollout if recipe.rollout.placement == "separate" else []),
        RoleDemand("reward", recipe.reward.actors, recipe.reward.num_cpus, 0.0, "SPREAD"),
        RoleDemand("learner", recipe.learner.workers, recipe.learner.num_cpus, recipe.learner.num_gpus, "PACK"),
    ]


def eval_demand(recipe: Recipe) -> RoleDemand:
    """The rollout workers `anomalyr1 eval` starts: the recipe's own, or for a colocated recipe
    one per learner rank on the learners' CPUs and GPUs, where its engines ran in training."""
    if recipe.rollout.placement == "separate":
        return role_demands(recipe)[0]
    return RoleDemand("rollout", recipe.learner.workers, recipe.learner.num_cpus, recipe.learner.num_gpus, "SPREAD")


def check_capacity(demands: list[RoleDemand], total: dict[str, float]) -> None:
    """Fail now if the cluster as a whole cannot hold every role at once."""
    for resource, key in (("CPU", "cpus"), ("GPU", "gpus")):
        need = sum(d.count * getattr(d, key) for d in demands)
        have = float(total.get(resource, 0.0))
        if need > have + 1e-9:
            parts = ", ".join(d.describe() for d in demands if getattr(d, key))
            raise PlacementError(f"the recipe needs {need:g} {resource} ({parts}) but the cluster has {have:g} {resource}")


def cluster_nodes() -> list[dict[str, float]]:
    """Each alive node's total resources: what plan_placement needs to see a single actor that
    fits the cluster's sum but no one node."""
    import ray

    return [dict(node["Resources"]) for node in ray.nodes() if node["Alive"]]


def plan_placement(demands: list[RoleDemand], nodes: list[dict[str, float]]) -> dict[str, list[int]]:
    """The node index each actor of each role lands on, as Ray would place the roles' groups.

    check_capacity compares sums, but an actor needs its whole bundle on one node: two 1-GPU
    nodes cannot hold a 2-GPU learner, and Ray would wait for it forever. Groups are placed in
    order, each on what the earlier ones left, as place_roles creates them. SPREAD puts each
    bundle on the fitting node holding fewest of its group (round-robin); PACK fills the fitting
    node with room for most of the group's remaining bundles first.
    """
    shown = ("CPU", "GPU") if any(node.get("GPU") for node in nodes) else ("CPU",)
    free = [{key: float(value) for key, value in node.items()} for node in nodes]
    plan: dict[str, list[int]] = {}
    for demand in demands:
        bundle = demand.bundle()
        if not any(_fits(bundle, node) for node in nodes):
            raise PlacementError(
                f"one {demand.role} actor needs {_show(bundle, bundle)} on a single node, "
                f"but no node has that much (nodes: {_show_nodes(nodes, shown)})"
            )
        placed: list[int] = []
        plan[demand.role] = placed
        for number in range(demand.count):
            candidates = [i for i, node in enumerate(free) if _fits(bundle, node)]
            if not candidates:
                so_far = ", ".join(f"{role} on nodes {where}" for role, where in plan.items() if where)
                raise PlacementError(
                    f"the roles do not fit together: {demand.role} actor {number + 1} of {demand.count} needs "
                    f"{_show(bundle, bundle)} on one node and none has that left after placing {so_far} "
                    f"(free: {_show_nodes(free, shown)})"
                )
            if demand.strategy == "SPREAD":
                chosen = min(candidates, key=lambda i: (placed.count(i), i))
            else:
                left = demand.count - number
                chosen = min(candidates, key=lambda i: (i not in placed, -min(left, _room(bundle, free[i])), i))
            for key, amount in bundle.items():
                free[chosen][key] -= amount
            placed.append(chosen)
    return plan


_EPSILON = 1e-9
"""Fractions (0.1 CPU, 0.5 GPU) add up with float error."""


def _fits(bundle: dict[str, float], node: dict[str, float]) -> bool:
    return all(node.get(key, 0.0) + _EPSILON >= amount for key, amount in bundle.items())


def _room(bundle: dict[str, float], node: dict[str, float]) -> int:
    return min(int((node.get(key, 0.0) + _EPSILON) // amount) for key, amount in bundle.items() if amount > 0)


def _show(resources: dict[str, float], keys) -> str:
    return " + ".join(f"{max(0.0, resources.get(key, 0.0)):g} {key}" for key in keys)


def _show_nodes(nodes: list[dict[str, float]], keys) -> str:
    return "; ".join(f"node {i}: {_show(node, keys)}" for i, node in enumerate(nodes))


def place_roles(demands: list[RoleDemand], timeout_s: float) -> dict[str, object]:
    """A ready placement group per role; on timeout, names the role Ray could not place."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    groups: dict[str, object] = {}
    for demand in demands:
        group = placement_group([demand.bundle()] * demand.count, strategy=demand.strategy, name=f"anomalyr1-{demand.role}")
        groups[demand.role] = group
    for demand in demands:
        ready, _ = ray.wait([groups[demand.role].ready()], timeout=timeout_s)
        if not ready:
            available = available_now()
            for group in groups.values():
                remove_placement_group(group)
            raise PlacementError(
                f"could not place {demand.describe()} within {timeout_s:g}s "
                f"(available now: {available}; a single actor must fit on one node)"
            )
    return groups


def available_now() -> str:
    """The CPUs and GPUs no actor holds, cluster-wide."""
    import ray

    return ", ".join(f"{k} {v:g}" for k, v in sorted(ray.available_resources().items()) if k in ("CPU", "GPU")) or "nothing"


def shortfall(demands: list[RoleDemand]) -> str | None:
    """What the cluster's live nodes now lack to hold every role, in the planner's words (None
    when they could hold them): after a node is lost, why an actor cannot be placed again."""
    import ray

    try:
        check_capacity(demands, ray.cluster_resources())
        plan_placement(demands, cluster_nodes())
    except PlacementError as exc:
        return str(exc)
    return None


def reserve(demands: list[RoleDemand], timeout_s: float) -> dict[str, object]:
    """Check the totals, plan node by node, then place: a recipe the cluster cannot hold fails
    at once with what is missing; one Ray still cannot place fails after timeout_s."""
    import logging

    import ray

    check_capacity(demands, ray.cluster_resources())
    logging.getLogger("anomalyr1").info("placement plan (node index per actor): %s", plan_placement(demands, cluster_nodes()))
    return place_roles(demands, timeout_s)


def actor_options(group: object, index: int, demand: RoleDemand) -> dict:
    """Ray actor options that put one actor of a role on bundle `index` of the role's group."""
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    strategy = PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=index)
    return dict(num_cpus=demand.cpus, num_gpus=demand.gpus, scheduling_strategy=strategy)


def release(groups: dict[str, object]) -> None:
    from ray.util.placement_group import remove_placement_group

    for group in groups.values():
        remove_placement_group(group)

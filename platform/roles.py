"""The roles on Ray: placed, started, called, recovered and stopped, for the step pipeline.

The pipeline (driver.Trainer) sees three parts: the learner group, the reward pool, and the
rollout side, whose shape `rollout.placement` chooses:

- SeparateRollout: rollout workers are actors of their own, on resources of their own; new
  weights go learner rank 0 -> Ray's object store -> every worker, and a worker Ray restarted is
  given them again and redoes its share.
- ColocatedRollout: the learner ranks generate, each with an engine in its own process, and take
  their weights from their own shards in memory; a rank lost while generating is a learner
  failure (the group is rebuilt from the last checkpoint, engines included).

Both answer the same four questions (who generates, whether a result came from the weights it
was given, what to do when a generating actor is lost, how new weights get there), so a
placement is one class here, not flags threaded through the pipeline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import ray

from anomalyr1.platform.learner.worker import LearnerWorker
from anomalyr1.platform.placement import actor_options, release, reserve, role_demands, shortfall
from anomalyr1.platform.recipe import Recipe
from anomalyr1.platform.remote_calls import LOST, ActorWaits, Restarts
from anomalyr1.platform.reward_pool import RewardPool
from anomalyr1.platform.rollout.worker import RolloutWorker
from anomalyr1.platform.shared_output import check_learners_see

MAX_RESTARTS = 3
"""Per role and run: how many actor deaths are recovered from before the run stops."""


class LearnerFailure(RuntimeError):
    """Learner actors died: the group is rebuilt from the last checkpoint."""

    def __init__(self, deaths: int, message: str):
        super().__init__(message)
        self.deaths = deaths


class LearnerGroup:
    """The learner actors: the ranks of one torch.distributed group, started, called and
    killed together (a rank alone cannot go on: the others wait for it in a collective)."""

    def __init__(self, recipe: Recipe, raw: dict, options: Callable[[int], dict], waits: ActorWaits, output: Path):
        self.recipe, self.raw, self.options, self.waits, self.output = recipe, raw, options, waits, output
        self.actors: list = []

    def start(self, resume_from: Path | None) -> None:
        """New actors in the learner bundles (after a node loss, where Ray places them again),
        joined into one group that loads the policy (`resume_from`'s checkpoint when given)."""
        world = self.recipe.learner.workers
        learner_cls = ray.remote(LearnerWorker)
        self.actors = self.waits.start(
            lambda: [learner_cls.options(max_restarts=0, **self.options(i)).remote(i, world, self.raw) for i in range(world)],
            "the learner group",
        )
        check_learners_see(self.output, self.actors)  # before any model loads: checkpoints need output_dir shared
        address, port = ray.get(self.actors[0].rendezvous.remote())
        self.call("setup", address, port, str(resume_from) if resume_from else None)

    def call(self, method: str, *args, per_rank: list | None = None) -> list:
        """Every rank's `method`; if one dies, all are killed and LearnerFailure raised."""
        calls = per_rank if per_rank is not None else [args] * len(self.actors)
        refs = [getattr(learner, method).remote(*call) for learner, call in zip(self.actors, calls)]
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                ray.get(done[0])
            except Exception as exc:
                dead = self._dead(refs)
                self.kill()
                if dead:
                    raise LearnerFailure(dead, f"{dead} learner(s) died during {method}: {exc}") from exc
                raise
        return ray.get(refs)

    @staticmethod
    def _dead(refs: list, timeout_s: float = 10.0) -> int:
        """How many of the calls failed because their learner died (or its node did, with the
        result): a rank's collective error (gloo's "connection reset by peer") is often the first
        news of another rank's death."""
        done, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
        dead = 0
        for ref in done:
            try:
                ray.get(ref)
            except LOST:
                dead += 1
            except Exception:  # this rank's own error: the death, if any, shows on another ref
                continue
        return dead

    def kill(self) -> None:
        for learner in self.actors:
            ray.kill(learner, no_restart=True)
        self.actors = []

    def shutdown(self, timeout_s: float) -> None:
        """Leave the process group, within one shared limit (a rank that died does not answer), then go."""
        if self.actors:
            ray.wait([learner.shutdown.remote() for learner in self.actors], num_returns=len(self.actors), timeout=timeout_s)
        self.kill()


class SeparateRollout:
    """Rollout workers as actors of their own; Ray restarts one that dies, and it is re-armed."""

    def __init__(self, recipe: Recipe, raw: dict, options: Callable[[int], dict], waits: ActorWaits,
                 learners: LearnerGroup, count_fault: Callable[[str, object], None]):
        self.recipe, self.waits, self.learners, self.count_fault = recipe, waits, learners, count_fault
        rollout_cls = ray.remote(RolloutWorker)
        # Ray restarts a dead rollout worker; the driver notices the new incarnation, pushes the
        # current weights to it and redoes its share (no automatic retry: it would use stale weights).
        self.actors = [
            rollout_cls.options(max_restarts=MAX_RESTARTS, max_task_retries=0, **options(i)).remote(i, raw)
            for i in range(recipe.rollout.workers)
        ]
        self.incarnations: dict[int, str] = {}
        """rank -> the worker process holding the current weights."""
        self.pushes: dict[int, ray.ObjectRef] = {}
        """Weight loads handed to the workers and not yet confirmed, by rank."""
        self.restarts = Restarts()
        self.weights = None
        """The last weights (an ObjectRef): a restarted worker is given these before it generates again."""

    def holder(self, rank: int) -> str | ray.ObjectRef | None:
        """What generates `rank`'s next rollout: the incarnation holding the weights, or the ref
        of the push loading them (the rollout queues behind it)."""
        return self.pushes.get(rank, self.incarnations.get(rank))

    def stale(self, incarnation: str, holder: str | ray.ObjectRef | None) -> str | None:
        """Why a rollout by `incarnation` did not use the weights `holder` gave it, or None."""
        return None if incarnation == _holder(holder) else "restarted since its last weights"

    def recover(self, rank: int, cause: object) -> None:
        """A worker's call was lost or it came back with its initial weights: give it the current
        ones. A worker Ray restarted is a death, counted once however many calls it lost."""
        worker = self.actors[rank]
        while True:  # waits while Ray restarts the worker (see remote_calls)
            process = self.waits.until_back(worker, f"rollout worker {rank}")
            try:
                self.incarnations[rank] = ray.get(worker.update_weights.remote(self.weights))
                break
            except LOST:  # lost again while loading them
                continue
        self.pushes.pop(rank, None)
        if self.restarts.saw(rank, process):
            self.count_fault("rollout", f"rollout worker {rank}: {cause}")

    def sync(self, check: bool, wait: bool) -> None:
        """The learners' weights to every worker, each as soon as it is free: behind a rollout
        still running (max_staleness > 0), which goes on meanwhile, unless `wait`. With `check`,
        the workers' loads are compared with the learners' weights."""
        self.weights = self.learners.call("state_dict")[0][0]
        self.pushes = {rank: worker.update_weights.remote(self.weights, check) for rank, worker in enumerate(self.actors)}
        if wait or check:
            self.settle()
        if check:
            _check_fingerprints(self.learners, ray.get([w.fingerprint.remote() for w in self.actors]), self.recipe)

    def settle(self) -> None:
        """Wait for the weight loads handed out; a worker that died keeps its old incarnation here."""
        for rank, ref in self.pushes.items():
            held = _holder(ref)
            if held is not None:
                self.incarnations[rank] = held
        self.pushes = {}


class ColocatedRollout:
    """The learner ranks generate, each with the engine in its own process (see
    LearnerWorker.sync_engine for how the weights get there)."""

    def __init__(self, recipe: Recipe, learners: LearnerGroup):
        self.recipe, self.learners = recipe, learners
        self.incarnations: dict[int, str] = {}

    @property
    def actors(self) -> list:
        return self.learners.actors

    def holder(self, rank: int) -> str | None:
        return self.incarnations.get(rank)

    def stale(self, incarnation: str, holder: str | None) -> str | None:
        return None if incarnation == holder else "a new learner process since its last weights"

    def recover(self, rank: int, cause: object) -> None:
        """Learners are not restarted one by one: the group goes, and is rebuilt by the driver."""
        self.learners.kill()
        raise LearnerFailure(1, f"learner {rank} was lost while generating: {cause}")

    def sync(self, check: bool, wait: bool) -> None:
        """Every rank loads the full weights into its engine (always before returning: the next
        call on these actors is the rollout)."""
        loaded = self.learners.call("sync_engine", check)
        self.incarnations = {rank: incarnation for rank, (incarnation, _) in enumerate(loaded)}
        if check:
            _check_fingerprints(self.learners, [value for _, value in loaded], self.recipe)

    def settle(self) -> None:
        """Nothing is pending: sync returns once every engine holds the weights."""


def _holder(holder: str | ray.ObjectRef | None) -> str | None:
    """The incarnation that loaded some weights: `holder` is it, or the ref of the push that loaded them."""
    if not isinstance(holder, ray.ObjectRef):
        return holder
    try:
        return ray.get(holder)
    except LOST:
        return None  # it died: its next rollout shows a new incarnation and is redone


def _check_fingerprints(learners: LearnerGroup, loaded: list[float], recipe: Recipe) -> None:
    """Once per run: the engines hold exactly the learners' weights."""
    learner_print = learners.call("fingerprint")[0]
    tolerance = 1e-6 if recipe.model.dtype == "float32" else 1e-2  # rollout copies may be cast down
    for rank, value in enumerate(loaded):
        if abs(value - learner_print) > tolerance * max(1.0, abs(learner_print)):
            raise RuntimeError(f"weight sync failed: rollout engine {rank} fingerprint {value} != learners' {learner_print}")


class Roles:
    """Every role of a run, in the placement groups reserved for them."""

    def __init__(self, recipe: Recipe, output: Path, count_fault: Callable[[str, object], None]):
        self.recipe, self.output, self.count_fault = recipe, output, count_fault
        self.groups: dict[str, object] = {}
        self.actors: list = []
        """Every actor started, learners aside, for stop()."""

    def start(self) -> None:
        """Reserve the roles' bundles and start the rollout and reward actors; the learners start
        (and every later time they are rebuilt) with `learners.start`."""
        recipe = self.recipe
        demands = {d.role: d for d in role_demands(recipe)}
        self.groups = reserve(list(demands.values()), recipe.trainer.placement_timeout_s)
        waits = ActorWaits(recipe.trainer.placement_timeout_s, lambda: shortfall(list(demands.values())))
        raw = recipe.model_dump(mode="json")

        def on(role: str) -> Callable[[int], dict]:
            return lambda index: actor_options(self.groups[role], index, demands[role])

        self.learners = LearnerGroup(recipe, raw, on("learner"), waits, self.output)
        if recipe.rollout.placement == "colocated":
            self.rollout = ColocatedRollout(recipe, self.learners)
        else:
            self.rollout = SeparateRollout(recipe, raw, on("rollout"), waits, self.learners, self.count_fault)
            self.actors += self.rollout.actors
        terms = [t.model_dump() for t in recipe.reward.terms]
        self.reward_pool = RewardPool.start(terms, recipe.reward.actors, on("reward"), waits)
        self.actors += self.reward_pool.actors

    def stop(self, timeout_s: float = 30.0) -> None:
        """Whatever started, however far start() got."""
        if hasattr(self, "learners"):
            self.learners.shutdown(timeout_s)
        for actor in self.actors:
            ray.kill(actor)
        release(self.groups)
        self.groups = {}

"""The reward role: M Ray actors that score completions in parallel, results back in order.

Terms are loaded inside each actor from their specs (a name, `file.py:fn` or `pkg.mod:fn`), so a
recipe swaps the reward by editing one line. Work is split by prompt group, because group-aware
terms (lr_iad) need all G completions of a prompt together. Actors run with Ray restarts: a share
whose actor died (or whose node did) is sent again once the actor is back, and since scoring is a
pure function of (completions, sample) nothing is lost or counted twice.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import ray

from anomalyr1.platform.remote_calls import LOST, ActorWaits, Restarts, process_of
from anomalyr1.rewards import RewardResult, RewardTerm, combine_rewards

if TYPE_CHECKING:  # a reward actor imports this module: it needs neither torch nor the batch types
    from anomalyr1.platform.batch import RolloutGroup


@dataclass
class ScoredShare:
    results: list[list[RewardResult]]
    compute_s: float
    process: tuple[str, bool]
    """The scoring process (remote_calls.process_of): a new restarted one is a death."""


class RewardActor:
    def __init__(self, terms: list[dict]):
        self.reward = combine_rewards([RewardTerm(spec=t["name"], weight=t["weight"], params=t["params"]) for t in terms])

    def score(self, jobs: list[tuple[list[str], dict]]) -> ScoredShare:
        start = time.perf_counter()
        results = [self.reward.score_group(texts, sample) for texts, sample in jobs]
        return ScoredShare(results=results, compute_s=time.perf_counter() - start, process=process_of())

    def pid(self) -> int:
        return os.getpid()


def reward_inputs(group: RolloutGroup, shared: dict | None = None) -> tuple[list[str], dict]:
    """What a reward sees of a group: the texts, and the sample with the model's input size and
    the run's shared state (e.g. the class-frequency table lr_iad reads)."""
    sample = dict(group.sample)
    extra = {**(sample.get("extra") or {}), **(shared or {})}
    if group.model_input_size is not None:
        extra["input_size"] = list(group.model_input_size)
    sample["extra"] = extra
    return group.texts, sample


@dataclass
class PendingScores:
    refs: list[ray.ObjectRef]
    slices: list[list[int]]
    actors: list[int]
    jobs: list[list[tuple[list[str], dict]]]
    """Each share's inputs, sent again if its actor is lost."""
    size: int


class RewardPool:
    MAX_RESTARTS = 3
    """Restarts per actor before the pool gives up."""

    def __init__(self, actors: list, waits: ActorWaits):
        self.actors = actors
        self.waits = waits
        self._next = 0
        self._restarts = Restarts()

    @property
    def restarts(self) -> int:
        """Actor deaths recovered from so far (Ray restarted the actor; its share was scored again)."""
        return self._restarts.count

    @classmethod
    def start(
        cls, terms: list[dict], count: int, options: Callable[[int], dict] = lambda i: {}, waits: ActorWaits = ActorWaits(60.0)
    ) -> "RewardPool":
        """`count` actors scoring `terms` (recipe reward terms as dicts); `options(i)` places actor i.
        No task retries by Ray: they would be used up while the actor restarts on another node."""
        actor = ray.remote(RewardActor)
        return cls([actor.options(max_restarts=cls.MAX_RESTARTS, max_task_retries=0, **options(i)).remote(terms) for i in range(count)], waits)

    def submit(self, groups: list[RolloutGroup], shared: dict | None = None) -> PendingScores:
        """Spread the groups over the actors (round-robin from where the last batch stopped)."""
        shares: dict[int, list[int]] = {}
        for index in range(len(groups)):
            shares.setdefault((self._next + index) % len(self.actors), []).append(index)
        self._next = (self._next + len(groups)) % len(self.actors)
        jobs = [[reward_inputs(groups[i], shared) for i in indices] for indices in shares.values()]
        refs = [self.actors[actor_index].score.remote(share) for actor_index, share in zip(shares, jobs)]
        return PendingScores(refs=refs, slices=list(shares.values()), actors=list(shares), jobs=jobs, size=len(groups))

    def gather(self, pending: PendingScores) -> tuple[list[list[RewardResult]], float]:
        """Results in the submitted order, and the longest actor compute time."""
        ordered: list[list[RewardResult] | None] = [None] * pending.size
        longest = 0.0
        for ref, indices, actor, jobs in zip(pending.refs, pending.slices, pending.actors, pending.jobs):
            share = self._scored(ref, actor, jobs)
            self._restarts.saw(actor, share.process)
            longest = max(longest, share.compute_s)
            for index, results in zip(indices, share.results):
                ordered[index] = results
        return ordered, longest

    def _scored(self, ref: ray.ObjectRef, actor: int, jobs: list) -> ScoredShare:
        """The share's scores, sent again while its actor is lost and restarted."""
        while True:
            try:
                return ray.get(ref)
            except LOST:
                self.waits.until_back(self.actors[actor], f"reward actor {actor}")
                ref = self.actors[actor].score.remote(jobs)

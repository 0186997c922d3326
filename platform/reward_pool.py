"""The reward role: M Ray actors that score completions in parallel, results back in order.

Terms are loaded inside each actor from their specs (a name, `file.py:fn` or `pkg.mod:fn`), so a
recipe swaps the reward by editing one line. Work is split by prompt group, because group-aware
terms (lr_iad) need all G completions of a prompt together. Actors run with Ray restarts and task
retries: a killed actor comes back and its share is scored again, and since scoring is a pure
function of (completions, sample) nothing is lost or counted twice.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import ray

from anomalyr1.rewards import RewardResult, RewardTerm, combine_rewards

if TYPE_CHECKING:  # a reward actor imports this module: it needs neither torch nor the batch types
    from anomalyr1.platform.batch import RolloutGroup


@dataclass
class ScoredShare:
    results: list[list[RewardResult]]
    compute_s: float
    pid: int
    """The scoring process: a new one means Ray restarted the actor (counted as a fault)."""


class RewardActor:
    def __init__(self, terms: list[dict]):
        self.reward = combine_rewards([RewardTerm(spec=t["name"], weight=t["weight"], params=t["params"]) for t in terms])

    def score(self, jobs: list[tuple[list[str], dict]]) -> ScoredShare:
        start = time.perf_counter()
        results = [self.reward.score_group(texts, sample) for texts, sample in jobs]
        return ScoredShare(results=results, compute_s=time.perf_counter() - start, pid=os.getpid())

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
    size: int


class RewardPool:
    MAX_RESTARTS = 3
    """Restarts per actor (and retries per batch share) before the pool gives up."""

    def __init__(self, actors: list):
        self.actors = actors
        self._next = 0
        self._pids: dict[int, int] = {}
        self.restarts = 0
        """Actor restarts seen so far (Ray restarted the actor and re-ran its share)."""

    @classmethod
    def start(cls, terms: list[dict], count: int, options: Callable[[int], dict] = lambda i: {}) -> "RewardPool":
        """`count` actors scoring `terms` (recipe reward terms as dicts); `options(i)` places actor i."""
        actor = ray.remote(RewardActor)
        return cls([
            actor.options(max_restarts=cls.MAX_RESTARTS, max_task_retries=cls.MAX_RESTARTS, **options(i)).remote(terms)
            for i in range(count)
        ])

    def submit(self, groups: list[RolloutGroup], shared: dict | None = None) -> PendingScores:
        """Spread the groups over the actors (round-robin from where the last batch stopped)."""
        shares: dict[int, list[int]] = {}
        for index in range(len(groups)):
            shares.setdefault((self._next + index) % len(self.actors), []).append(index)
        self._next = (self._next + len(groups)) % len(self.actors)
        refs, slices = [], []
        for actor_index, indices in shares.items():
            refs.append(self.actors[actor_index].score.remote([reward_inputs(groups[i], shared) for i in indices]))
            slices.append(indices)
        return PendingScores(refs=refs, slices=slices, actors=list(shares), size=len(groups))

    def gather(self, pending: PendingScores) -> tuple[list[list[RewardResult]], float]:
        """Results in the submitted order, and the longest actor compute time."""
        ordered: list[list[RewardResult] | None] = [None] * pending.size
        longest = 0.0
        try:
            shares = ray.get(pending.refs)
        except ray.exceptions.RayActorError as exc:
            raise RuntimeError(f"a reward actor died more than {self.MAX_RESTARTS} times; giving up ({exc})") from exc
        for share, indices, actor in zip(shares, pending.slices, pending.actors):
            if self._pids.setdefault(actor, share.pid) != share.pid:
                self.restarts += 1
                self._pids[actor] = share.pid
            longest = max(longest, share.compute_s)
            for index, results in zip(indices, share.results):
                ordered[index] = results
        return ordered, longest

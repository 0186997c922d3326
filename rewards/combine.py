"""A weighted sum of rewards that is itself a reward, so the platform scores a recipe's terms
through one object and logs every term (and every term's parts) as a metric."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from .base import Reward, RewardResult
from .registry import load_reward


@dataclass(frozen=True)
class RewardTerm:
    spec: str | Reward
    """A spec for `load_reward`, or an already built reward (e.g. a seeded lr_iad)."""
    weight: float = 1.0
    params: Mapping[str, Any] = field(default_factory=dict)
    name: str | None = None
    """Metric name of the term; defaults to the reward's name. Needed when two terms share one."""


def _weighted_range(weight: float, low: float, high: float) -> tuple[float, float]:
    if weight == 0:
        return 0.0, 0.0  # not 0 * inf
    ends = (weight * low, weight * high)
    return min(ends), max(ends)


@dataclass
class CombinedReward(Reward):
    rewards: list[Reward]
    weights: list[float]
    names: list[str]
    name: str = "combined"

    @property
    def value_range(self) -> tuple[float, float]:
        ranges = [_weighted_range(w, *r.value_range) for w, r in zip(self.weights, self.rewards)]
        return sum(low for low, _ in ranges), sum(high for _, high in ranges)

    def _combine(self, term_results: Sequence[RewardResult]) -> RewardResult:
        parts: dict[str, float] = {}
        for name, result in zip(self.names, term_results):
            parts[name] = result.score
            parts.update({f"{name}/{part}": value for part, value in result.parts.items()})
        score = sum(w * result.score for w, result in zip(self.weights, term_results))
        return RewardResult(score, parts)

    def _score(self, completion: str, sample: Mapping[str, Any]) -> RewardResult:
        return self._combine([reward(completion, sample) for reward in self.rewards])

    def _score_group(self, completions: Sequence[str], sample: Mapping[str, Any]) -> list[RewardResult]:
        per_term = [reward.score_group(completions, sample) for reward in self.rewards]
        return [self._combine(term_results) for term_results in zip(*per_term)]


def combine_rewards(terms: Sequence[RewardTerm]) -> CombinedReward:
    """score = sum(weight * term score); parts = {term: score, term/part: value}."""
    if not terms:
        raise ValueError("combine_rewards needs at least one RewardTerm")
    rewards, weights, names = [], [], []
    for term in terms:
        if isinstance(term.spec, Reward):
            if term.params:
                raise ValueError(f"reward term {term.spec.name!r}: params apply to specs, not to built rewards")
            reward = term.spec
        else:
            reward = load_reward(term.spec, **dict(term.params))
        weight = float(term.weight)
        if not math.isfinite(weight):
            raise ValueError(f"reward term {term.spec!r}: weight must be finite, got {term.weight}")
        rewards.append(reward)
        weights.append(weight)
        names.append(term.name or reward.name)
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"reward terms share the name(s) {duplicates}; give each a distinct RewardTerm.name")
    return CombinedReward(rewards, weights, names, name="+".join(names))

"""Plain callables as rewards, so a user can write `def my_reward(completion, sample): ...`
in a file and name it in a recipe without learning the Reward class."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from .base import Reward, RewardResult

UNBOUNDED = (-math.inf, math.inf)


def as_result(value: Any) -> RewardResult:
    """Accept what user functions naturally return: a number, `(number, parts)` or a RewardResult."""
    if isinstance(value, RewardResult):
        return value
    if isinstance(value, tuple) and len(value) == 2:
        score, parts = value
        return RewardResult(score, dict(parts))
    if isinstance(value, (int, float)):
        return RewardResult(value)
    raise TypeError(f"a reward function must return a float, (float, dict) or RewardResult, got {type(value).__name__}")


def declared_range(fn: Callable[..., Any]) -> tuple[float, float]:
    """A function may declare its bounds as a `value_range` attribute; otherwise only finiteness
    is promised."""
    low, high = getattr(fn, "value_range", UNBOUNDED)
    low, high = float(low), float(high)
    if not low <= high:
        raise ValueError(f"value_range must be (low, high) with low <= high, got {(low, high)}")
    return low, high


@dataclass
class FunctionReward(Reward):
    fn: Callable[..., Any]
    name: str
    params: Mapping[str, Any] = field(default_factory=dict)
    """Passed to `fn` as keyword arguments on every call."""
    value_range: tuple[float, float] = UNBOUNDED

    def _score(self, completion: str, sample: Mapping[str, Any]) -> RewardResult:
        return as_result(self.fn(completion, sample, **self.params))

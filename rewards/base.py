"""The reward contract: a scorer that never raises and never returns a non-finite number.

A single malformed completion or a buggy user function must not kill a training step that
scores thousands of completions, so every reward funnels through `Reward.__call__` /
`Reward.score_group`, which turn exceptions into a zero score with an `error` part and
replace NaN/inf by 0. Subclasses implement `_score` (and `_score_group` when the G
completions of one prompt must be scored together).
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

logger = logging.getLogger(__name__)

_warned: set[str] = set()
"""Names of rewards whose failure was already logged: one warning per reward, not per call."""


def finite(value: Any) -> float:
    """`value` as a float, or 0.0 when it is not a finite number (metrics and advantages
    downstream cannot absorb NaN/inf)."""
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return 0.0
    return number if math.isfinite(number) else 0.0


@dataclass(frozen=True)
class RewardResult:
    score: float
    parts: dict[str, float] = field(default_factory=dict)
    """Named sub-scores; each becomes a metric, so they stay floats."""

    def sanitized(self) -> "RewardResult":
        return RewardResult(finite(self.score), {str(k): finite(v) for k, v in self.parts.items()})


class Reward(ABC):
    """Base of every reward. Subclasses are dataclasses whose init fields are the reward's
    parameters (what `load_reward(spec, **params)` may override)."""

    name: str = "reward"
    value_range: tuple[float, float]
    """Declared (low, high) bounds of `score`; subclasses define it as a field or property."""

    @abstractmethod
    def _score(self, completion: str, sample: Mapping[str, Any]) -> RewardResult:
        """Score one completion; may raise, `__call__` guards it."""

    def _score_group(self, completions: Sequence[str], sample: Mapping[str, Any]) -> list[RewardResult]:
        """Score the G completions of one prompt; independent by default, so each is guarded
        on its own and one failure does not zero its siblings."""
        return [self(completion, sample) for completion in completions]

    def __call__(self, completion: str, sample: Mapping[str, Any]) -> RewardResult:
        try:
            return self._score(completion, sample).sanitized()
        except Exception as exc:  # noqa: BLE001 - a reward must never raise, see module doc
            return self._failed(exc)

    def score_group(self, completions: Sequence[str], sample: Mapping[str, Any]) -> list[RewardResult]:
        completions = list(completions)
        try:
            results = self._score_group(completions, sample)
            if len(results) != len(completions):
                raise ValueError(f"returned {len(results)} results for {len(completions)} completions")
            return [result.sanitized() for result in results]
        except Exception as exc:  # noqa: BLE001 - a reward must never raise, see module doc
            return [self._failed(exc)] * len(completions)

    def _failed(self, exc: Exception) -> RewardResult:
        if self.name not in _warned:
            _warned.add(self.name)
            logger.warning(
                "reward %r raised %s: %s; scoring 0 (later failures of this reward are not logged)",
                self.name, type(exc).__name__, exc, exc_info=exc,
            )
        return RewardResult(0.0, {"error": 1.0})

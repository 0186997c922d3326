"""LR-IAD: format reward plus a focal bonus for right answers that pays more when the policy
rarely gets the question right and when the defect class is rare.

    score = format_weight * format + [right] * alpha * (1 - p) ** gamma * f

p is the policy's probability of answering right. GRPO samples G completions per prompt, so
the group's share of right answers is an unbiased estimate of it; a caller that has the
actual probability passes it as sample["extra"]["policy_prob"]. A single `__call__` is a
group of one, so p is 1 for a right answer and the bonus vanishes unless gamma is 0: score
groups (or pass policy_prob) to get the focal term.

f is the rarity of the sample's class: f = clip((mean count / class count) ** f_power, 1,
f_max) over a class-frequency table. Normal images are one class (`good`) that dominates
(76% of MVTec-AD, 89% of VisA), so they get f = 1 and each defect type gets more; keying by
(dataset, category, defect_type) spreads the same idea over categories. A class absent from
the table is rarer than any seen and gets f_max.

Where the frequencies come from: seeds (`class_counts`), plus, in `running` mode, the prompts
seen as training goes. When the platform trains, it owns that running table (the training set
plus every prompt drawn so far) and passes it as sample["extra"]["class_counts"], a list of
{dataset, category, defect_type, count} records; then every reward actor scores with the same
table, and a restarted actor (which lost its own counts) scores exactly as the one it replaced.
Without it (a reward called on its own) the reward counts what it scores itself.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Mapping, Sequence

from .accuracy import AnswerCheck
from .base import Reward, RewardResult
from .parsing import is_exact_format
from .registry import register_reward


@register_reward("lr_iad")
@dataclass
class LrIad(AnswerCheck, Reward):
    alpha: float = 1.0
    gamma: float = 2.0
    """Focal exponent; 2 is the focal-loss default (the LR-IAD values are not published here)."""
    f_max: float = 5.0
    f_power: float = 1.0
    format_weight: float = 1.0
    class_key: tuple[str, ...] = ("defect_type",)
    """Sample keys whose values, joined by '/', name a class, e.g. ("dataset", "category", "defect_type")."""
    class_counts: Mapping[str, float] = field(default_factory=dict)
    """Seed counts per class key, e.g. the training set's; `observe(samples)` adds more."""
    frequency: Literal["running", "fixed"] = "running"
    """running: every scored prompt also counts (once per group); fixed: only the seeds do."""
    _counts: Counter[str] = field(init=False, repr=False, default_factory=Counter)

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.class_key, str):
            self.class_key = (self.class_key,)
        self.class_key = tuple(self.class_key)
        for name in ("alpha", "gamma", "f_power", "format_weight"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValueError(f"{name} must be finite and >= 0, got {getattr(self, name)}")
        if not (math.isfinite(self.f_max) and self.f_max >= 1):
            raise ValueError(f"f_max must be finite and >= 1, got {self.f_max}")
        if not self.class_key:
            raise ValueError("class_key must name at least one sample key")
        if self.frequency not in ("running", "fixed"):
            raise ValueError(f"frequency must be 'running' or 'fixed', got {self.frequency!r}")
        for key, count in self.class_counts.items():
            if not (math.isfinite(count) and count >= 0):
                raise ValueError(f"class_counts[{key!r}] must be finite and >= 0, got {count}")
            self._counts[str(key)] += count

    @property
    def value_range(self) -> tuple[float, float]:
        return 0.0, self.format_weight + self.alpha * self.f_max

    def class_of(self, sample: Mapping[str, Any]) -> str:
        return "/".join(str(sample.get(key)) for key in self.class_key)

    def observe(self, samples: Iterable[Mapping[str, Any]]) -> None:
        """Count samples into the frequency table, e.g. the training set before training."""
        self._counts.update(self.class_of(sample) for sample in samples)

    def _table(self, sample: Mapping[str, Any]) -> Counter[str]:
        """The frequency table for this sample: seeds plus the platform's running counts, if given."""
        shared = _shared_counts(sample)
        if shared is None:
            return self._counts
        table = Counter(self._counts)
        for record in shared:
            table[self.class_of(record)] += finite_count(record.get("count"))
        return table

    def rarity(self, sample: Mapping[str, Any], table: Mapping[str, float] | None = None) -> float:
        table = self._counts if table is None else table
        counts = [n for n in table.values() if n > 0]
        if not counts:
            return 1.0
        count = table.get(self.class_of(sample), 0)
        if count <= 0:
            return self.f_max
        mean = sum(counts) / len(counts)
        return min(max((mean / count) ** self.f_power, 1.0), self.f_max)

    def _score(self, completion: str, sample: Mapping[str, Any]) -> RewardResult:
        return self._score_group([completion], sample)[0]

    def _score_group(self, completions: Sequence[str], sample: Mapping[str, Any]) -> list[RewardResult]:
        shared = _shared_counts(sample) is not None
        if self.frequency == "running" and not shared:
            self.observe([sample])
        table = self._table(sample) if self.frequency == "running" else self._counts
        rights = [self.is_right(completion, sample) for completion in completions]
        p = _policy_prob(sample)
        if p is None:
            p = sum(rights) / len(rights) if rights else 0.0
        f = self.rarity(sample, table)
        focal = self.alpha * (1.0 - p) ** self.gamma * f
        results = []
        for completion, right in zip(completions, rights):
            formatted = float(is_exact_format(completion))
            bonus = focal if right else 0.0
            results.append(RewardResult(self.format_weight * formatted + bonus, {
                "format": formatted, "right": float(right), "p": p, "f": f, "focal": bonus,
            }))
        return results


def _policy_prob(sample: Mapping[str, Any]) -> float | None:
    """sample["extra"]["policy_prob"] when it is a probability; anything else is ignored."""
    extra = sample.get("extra")
    value = extra.get("policy_prob") if isinstance(extra, Mapping) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if 0.0 <= value <= 1.0 else None


def _shared_counts(sample: Mapping[str, Any]) -> list[Mapping[str, Any]] | None:
    extra = sample.get("extra")
    records = extra.get("class_counts") if isinstance(extra, Mapping) else None
    if not isinstance(records, list):
        return None
    return [r for r in records if isinstance(r, Mapping)]


def finite_count(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        return 0.0
    return float(value)


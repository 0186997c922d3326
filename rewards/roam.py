"""ROAM (AnomalyR1): reward the answer letter, and whether the reasoning concludes the same one.

ROAM = Phi(reasoning, reference reasoning) + Psi(answer, truth, reasoning). Psi is the
reference implementation's ladder, reproduced by default (see `parsing` for how letters are
read); Phi, off by default because the reference trained without it, adds partial credit
for the reasoning's agreement with a reference reasoning when the sample has one.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Mapping

from .base import Reward, RewardResult
from .parsing import ANSWER, THINK, Extractor, check_extractor, extract_choice, has_think_answer_pair, last_block, same_letter
from .registry import register_reward

_WORD = re.compile(r"[a-z0-9]{3,}|[\u4e00-\u9fff]")
_STOPWORDS = frozenset(
    "the and are was were this that with from for has have not but its there their which image "
    "can also into than then these those been being any all some".split()
)


def content_words(text: str) -> set[str]:
    """Lower-cased words of 3+ characters (and single CJK characters) minus common function
    words: what a defect description and location are made of."""
    return set(_WORD.findall(text.lower())) - _STOPWORDS


def reasoning_agreement(reasoning: str, reference: str) -> float:
    """Share of the reference reasoning's content words that the reasoning also uses (recall:
    a reasoning is not penalised for saying more than the reference)."""
    wanted = content_words(reference)
    if not wanted:
        return 0.0
    return len(wanted & content_words(reasoning)) / len(wanted)


@register_reward("roam")
@dataclass
class Roam(Reward):
    """t = letter concluded by the last think block, a = letter of the last answer block; zero
    unless a think block is followed (whitespace only between) by an answer block."""

    no_letters: float = 0.0
    """t none, a none."""
    answer_only_right: float = 0.8
    """t none, a right."""
    answer_only_wrong: float = 0.05
    """t none, a wrong."""
    both_right: float = 1.0
    both_wrong_same: float = 0.1
    """t and a wrong but the same letter: consistent reasoning earns a little."""
    otherwise: float = 0.0
    """Inconsistent, or one of t and a right and the other wrong or missing."""
    reasoning_weight: float = 0.0
    """Phi's weight: Phi = reasoning_weight * share of the reference reasoning's content words
    found in the think block. 0 turns Phi off (the reference)."""
    extractor: Extractor = "reference"
    case_sensitive: bool = True
    """The reference compares letters exactly, so a bare lower-case "b" is not "B"."""

    def __post_init__(self) -> None:
        check_extractor(self.extractor)
        if not all(math.isfinite(value) for value in self._ladder):
            raise ValueError(f"ROAM constants must be finite, got {self._ladder}")
        if not (math.isfinite(self.reasoning_weight) and self.reasoning_weight >= 0):
            raise ValueError(f"reasoning_weight must be finite and >= 0, got {self.reasoning_weight}")

    @property
    def _ladder(self) -> tuple[float, ...]:
        return (self.no_letters, self.answer_only_right, self.answer_only_wrong,
                self.both_right, self.both_wrong_same, self.otherwise)

    @property
    def value_range(self) -> tuple[float, float]:
        return min(0.0, *self._ladder), max(0.0, *self._ladder) + self.reasoning_weight

    def psi(self, t: str | None, a: str | None, answer: str) -> float:
        t_right = same_letter(t, answer, self.case_sensitive)
        a_right = same_letter(a, answer, self.case_sensitive)
        if t is None:
            if a is None:
                return self.no_letters
            return self.answer_only_right if a_right else self.answer_only_wrong
        if t_right and a_right:
            return self.both_right
        if not t_right and a is not None and not a_right and same_letter(t, a, self.case_sensitive):
            return self.both_wrong_same
        return self.otherwise

    def _score(self, completion: str, sample: Mapping[str, Any]) -> RewardResult:
        if not has_think_answer_pair(completion):
            return _result(paired=False, t=None, a=None, psi=0.0, phi=0.0, case_sensitive=self.case_sensitive)
        thinking = last_block(completion, THINK) or ""
        t = extract_choice(thinking, self.extractor)
        a = extract_choice(last_block(completion, ANSWER) or "", self.extractor)
        psi = self.psi(t, a, str(sample["answer"]).strip())
        reference = sample.get("reasoning") or ""
        phi = self.reasoning_weight * reasoning_agreement(thinking, reference) if self.reasoning_weight and reference else 0.0
        return _result(paired=True, t=t, a=a, psi=psi, phi=phi, case_sensitive=self.case_sensitive)


def _result(paired: bool, t: str | None, a: str | None, psi: float, phi: float, case_sensitive: bool) -> RewardResult:
    return RewardResult(psi + phi, {
        "format": float(paired),
        "t_letter_found": float(t is not None),
        "a_letter_found": float(a is not None),
        "consistent": float(t is not None and a is not None and same_letter(t, a, case_sensitive)),
        "psi": psi,
        "phi": phi,
    })

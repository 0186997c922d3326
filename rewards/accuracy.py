"""The plain rewards AnomalyR1 summed with ROAM: is the answer letter right, and is the output
laid out as think-then-answer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from .base import Reward, RewardResult
from .parsing import ANSWER, Extractor, answer_region, check_extractor, extract_choice, has_think_answer_pair, is_exact_format, last_block, same_letter
from .registry import register_reward


def answer_letter(completion: str, extractor: Extractor, require_format: bool) -> str | None:
    """The letter the completion answers with. With `require_format`, only a completion with
    ROAM's think-then-answer pair has one (read from its last answer block); without, the
    last answer block or, lacking one, the whole text is read."""
    if require_format:
        if not has_think_answer_pair(completion):
            return None
        return extract_choice(last_block(completion, ANSWER) or "", extractor)
    return extract_choice(answer_region(completion), extractor)


@dataclass
class AnswerCheck:
    """Shared by `accuracy` and `lr_iad`, which must agree on what a right answer is."""

    extractor: Extractor = "reference"
    require_format: bool = True
    case_sensitive: bool = True
    """The reference's choice reward and ROAM compare the letter exactly (a bare "b" is not
    "B"); False is the lenient reading that folds case on both sides."""

    def __post_init__(self) -> None:
        check_extractor(self.extractor)

    def is_right(self, completion: str, sample: Mapping[str, Any]) -> bool:
        letter = answer_letter(completion, self.extractor, self.require_format)
        return same_letter(letter, str(sample["answer"]).strip(), self.case_sensitive)


@register_reward("accuracy")
@dataclass
class Accuracy(AnswerCheck, Reward):
    """1 when the answer letter equals sample["answer"]: the reference's choice reward (its
    `accuracy`), which agrees with ROAM on what a right letter is, case included."""

    value_range = (0.0, 1.0)

    def _score(self, completion: str, sample: Mapping[str, Any]) -> RewardResult:
        return RewardResult(float(self.is_right(completion, sample)))


@register_reward("format")
@dataclass
class Format(Reward):
    """1 when the output is exactly a think block then an answer block (see
    `parsing.is_exact_format`); stricter than the pair ROAM looks for anywhere in the text."""

    value_range = (0.0, 1.0)

    def _score(self, completion: str, sample: Mapping[str, Any]) -> RewardResult:
        return RewardResult(float(is_exact_format(completion)))

"""accuracy and format."""

from __future__ import annotations

import pytest
from reward_samples import make_sample, think_answer

from anomalyr1.rewards import load_reward

SAMPLE = make_sample(answer="B")


@pytest.mark.parametrize(
    ("completion", "required", "optional"),
    [
        (think_answer("hm", "B"), 1.0, 1.0),
        (think_answer("hm", "b"), 1.0, 1.0),  # case-insensitive
        (think_answer("so B", "C"), 0.0, 0.0),  # only the answer block counts
        ("<answer>B</answer>", 0.0, 1.0),  # no think block
        ("The answer is B", 0.0, 1.0),  # no tags: the whole text
        ("<answer>C</answer> but B", 0.0, 0.0),  # the answer block wins over the text
        ("", 0.0, 0.0),
    ],
)
def test_accuracy(completion: str, required: float, optional: float) -> None:
    assert load_reward("accuracy")(completion, SAMPLE).score == required
    assert load_reward("accuracy", require_format=False)(completion, SAMPLE).score == optional


def test_accuracy_answer_key_is_case_insensitive() -> None:
    assert load_reward("accuracy")(think_answer("hm", "B"), make_sample(answer="b")).score == 1.0


def test_accuracy_strict_extractor() -> None:
    completion = think_answer("hm", "B is the final ANSWER")  # the reference reads the A of ANSWER
    assert load_reward("accuracy")(completion, SAMPLE).score == 0.0
    assert load_reward("accuracy", extractor="strict")(completion, SAMPLE).score == 1.0


@pytest.mark.parametrize(
    ("completion", "score"),
    [
        (think_answer("reasoning", "B"), 1.0),
        ("\n <think>r</think>\n\n<answer>B</answer> \n", 1.0),
        ("Sure! <think>r</think><answer>B</answer>", 0.0),
        ("<think>r</think> so <answer>B</answer>", 0.0),
        ("<think>r</think><answer>B</answer><answer>C</answer>", 0.0),
        ("<answer>B</answer>", 0.0),
    ],
)
def test_format(completion: str, score: float) -> None:
    assert load_reward("format")(completion, SAMPLE).score == score

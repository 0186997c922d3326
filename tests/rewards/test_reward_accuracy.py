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
        (think_answer("hm", "b"), 0.0, 0.0),  # the reference compares letters exactly
        (think_answer("hm", "B."), 1.0, 1.0),  # short answers lose their punctuation
        (think_answer("hm", "The answer is B"), 1.0, 1.0),  # the reference's heuristic reads B
        ("<think>hm</think> and <answer>B</answer>", 0.0, 1.0),  # the pair needs only whitespace between
        ("<think>hm</think>\n<answer>B</answer>", 1.0, 1.0),
        ("<think>hm<answer>B</answer>", 0.0, 1.0),  # an unclosed think is no pair
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


def test_accuracy_lenient_case_is_a_parameter() -> None:
    lenient = load_reward("accuracy", case_sensitive=False)
    assert lenient(think_answer("hm", "b"), SAMPLE).score == 1.0
    assert lenient(think_answer("hm", "B"), make_sample(answer="b")).score == 1.0
    assert load_reward("accuracy")(think_answer("hm", "B"), make_sample(answer="b")).score == 0.0


@pytest.mark.parametrize("answer_text", ["B", "b", "B.", "(B)", "c", "The answer is B", "ANSWER: B", "Bottle", "", "1"])
def test_accuracy_and_roam_agree_on_what_a_right_letter_is(answer_text: str) -> None:
    """The recipe sums them: ROAM's a-right (0.8 with no letter in the reasoning) and accuracy's 1
    must come from the same reading of the same answer block."""
    completion = think_answer("looking at the surface", answer_text)
    roam = load_reward("roam")(completion, SAMPLE)
    accuracy = load_reward("accuracy")(completion, SAMPLE).score
    assert roam.parts["t_letter_found"] == 0.0
    assert (roam.score == 0.8) == (accuracy == 1.0)


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

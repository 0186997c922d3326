"""The ROAM ladder, case by case, and Phi."""

from __future__ import annotations

import pytest
from reward_samples import make_sample, think_answer

from anomalyr1.rewards import load_reward

SAMPLE = make_sample(answer="B")


@pytest.mark.parametrize(
    ("completion", "score", "t_found", "a_found"),
    [
        # t none & a none
        (think_answer("nothing decided", "none"), 0.0, 0.0, 0.0),
        # t none & a right / wrong
        (think_answer("looks fine", "B"), 0.8, 0.0, 1.0),
        (think_answer("looks fine", "C"), 0.05, 0.0, 1.0),
        # t right & a right
        (think_answer("so B.", "B"), 1.0, 1.0, 1.0),
        # t wrong & a wrong & t == a
        (think_answer("so C.", "C"), 0.1, 1.0, 1.0),
        # every other case: 0
        (think_answer("so C.", "D"), 0.0, 1.0, 1.0),  # both wrong, inconsistent
        (think_answer("so B.", "C"), 0.0, 1.0, 1.0),  # t right, a wrong
        (think_answer("so C.", "B"), 0.0, 1.0, 1.0),  # t wrong, a right
        (think_answer("so B.", "none"), 0.0, 1.0, 0.0),  # t right, a none
        (think_answer("so C.", "none"), 0.0, 1.0, 0.0),  # t wrong, a none
    ],
)
def test_ladder(completion: str, score: float, t_found: float, a_found: float) -> None:
    result = load_reward("roam")(completion, SAMPLE)
    assert result.score == pytest.approx(score)
    assert result.parts["psi"] == pytest.approx(score)
    assert (result.parts["t_letter_found"], result.parts["a_letter_found"]) == (t_found, a_found)
    assert result.parts["format"] == 1.0


@pytest.mark.parametrize(
    ("completion", "score"),
    [
        ("B", 0.0),  # no tags
        ("<answer>B</answer>", 0.0),  # no think block
        ("<answer>B</answer><think>so B.</think>", 0.0),  # wrong order
        ("<think>so B.</think> because <answer>B</answer>", 0.0),  # text between
        ("<think>so B.</think>\n \t<answer> B </answer>", 1.0),  # whitespace between is fine
        ("prefix <think>so B.</think><answer>B</answer> suffix", 1.0),  # the pair may sit anywhere
        # the last blocks are read, not the ones forming the pair
        (think_answer("so C.", "C") + " " + think_answer("so B.", "B"), 1.0),
        (think_answer("hmm", "C") + " later <answer>B</answer>", 0.8),
        (think_answer("ok", "B"), 0.0),  # a think block under 3 characters concludes "o": wrong
        (think_answer("so B.", "b"), 0.0),  # the reference compares letters exactly
    ],
)
def test_gate_and_blocks(completion: str, score: float) -> None:
    assert load_reward("roam")(completion, SAMPLE).score == pytest.approx(score)


def test_consistent_part() -> None:
    roam = load_reward("roam")
    assert roam(think_answer("so C.", "C"), SAMPLE).parts["consistent"] == 1.0
    assert roam(think_answer("so C.", "D"), SAMPLE).parts["consistent"] == 0.0
    assert roam("no tags", SAMPLE).parts["format"] == 0.0


def test_constants_are_parameters() -> None:
    roam = load_reward("roam", answer_only_right=0.5, both_right=2.0, both_wrong_same=-0.5)
    assert roam(think_answer("looks fine", "B"), SAMPLE).score == 0.5
    assert roam(think_answer("so B.", "B"), SAMPLE).score == 2.0
    assert roam(think_answer("so C.", "C"), SAMPLE).score == -0.5
    assert roam.value_range == (-0.5, 2.0)


def test_case_insensitive_and_strict_options() -> None:
    assert load_reward("roam", case_sensitive=False)(think_answer("so B.", "b"), SAMPLE).score == 1.0
    # the reference reads "ANSWER" as a candidate A; strict does not
    completion = think_answer("looks fine", "B is the final ANSWER")
    assert load_reward("roam")(completion, SAMPLE).score == 0.05
    assert load_reward("roam", extractor="strict")(completion, SAMPLE).score == 0.8


def test_phi_rewards_agreement_with_reference_reasoning() -> None:
    sample = make_sample(answer="B", reasoning="A scratch on the top left edge of the bottle.")
    completion = think_answer("I see a scratch at the top left. So B.", "B")
    # reference content words: scratch, top, left, edge, bottle; the reasoning has 3 of 5
    roam = load_reward("roam", reasoning_weight=0.5)
    result = roam(completion, sample)
    assert result.parts["phi"] == pytest.approx(0.5 * 3 / 5)
    assert result.score == pytest.approx(1.0 + 0.5 * 3 / 5)
    assert roam.value_range == (0.0, 1.5)
    assert roam(completion, SAMPLE).parts["phi"] == 0.0  # no reference reasoning
    assert roam("<think>scratch top left</think>", sample).score == 0.0  # no pair, no Phi
    assert load_reward("roam")(completion, sample).parts["phi"] == 0.0  # off by default


def test_bad_parameters_are_rejected() -> None:
    with pytest.raises(ValueError, match="reasoning_weight"):
        load_reward("roam", reasoning_weight=-1.0)
    with pytest.raises(ValueError, match="finite"):
        load_reward("roam", both_right=float("inf"))
    with pytest.raises(ValueError, match="extractor"):
        load_reward("roam", extractor="fuzzy")

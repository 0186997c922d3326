"""Weighted combination of reward terms."""

from __future__ import annotations

import pytest
from reward_samples import make_sample, think_answer

from anomalyr1.rewards import RewardTerm, combine_rewards, load_reward

SAMPLE = make_sample(answer="B")
RIGHT = think_answer("so B.", "B")
WRONG = think_answer("so C.", "C")


def test_score_and_parts() -> None:
    combined = combine_rewards([RewardTerm(spec="roam", weight=0.5), RewardTerm(spec="accuracy", weight=2.0)])
    result = combined(RIGHT, SAMPLE)
    assert result.score == pytest.approx(0.5 * 1.0 + 2.0 * 1.0)
    assert result.parts["roam"] == 1.0 and result.parts["accuracy"] == 1.0
    assert result.parts["roam/psi"] == 1.0 and result.parts["roam/format"] == 1.0
    assert combined(WRONG, SAMPLE).score == pytest.approx(0.5 * 0.1)
    assert combined.name == "roam+accuracy"
    assert combined.value_range == (0.0, 2.5)


def test_params_reach_the_term() -> None:
    combined = combine_rewards([RewardTerm(spec="roam", params={"both_wrong_same": 0.3})])
    assert combined(WRONG, SAMPLE).score == pytest.approx(0.3)


def test_negative_weight_range() -> None:
    combined = combine_rewards([RewardTerm("format", weight=-1.0), RewardTerm("lr_iad", weight=0.5, params={"f_max": 2.0})])
    assert combined.value_range == (-1.0, 0.5 * 3.0)


def test_score_group_composes_group_aware_terms() -> None:
    terms = [RewardTerm("lr_iad", params={"class_counts": {"broken_large": 1}, "frequency": "fixed"}),
             RewardTerm("accuracy", weight=0.5)]
    group = [RIGHT, WRONG, WRONG, WRONG]
    results = combine_rewards(terms).score_group(group, SAMPLE)
    focal = (1 - 0.25) ** 2
    assert [r.score for r in results] == pytest.approx([1 + focal + 0.5, 1.0, 1.0, 1.0])
    assert [r.parts["lr_iad/p"] for r in results] == [0.25] * 4
    # a single call sees a group of one: the same completion earns no focal term
    assert combine_rewards(terms)(RIGHT, SAMPLE).score == pytest.approx(1 + 0.5)


def test_built_rewards_and_names() -> None:
    seeded = load_reward("lr_iad", class_counts={"broken_large": 1})
    combined = combine_rewards([RewardTerm(seeded), RewardTerm("roam", name="roam_ref"),
                                RewardTerm("roam", name="roam_strict", params={"extractor": "strict"})])
    assert {"lr_iad", "roam_ref", "roam_strict", "roam_strict/psi"} <= set(combined(RIGHT, SAMPLE).parts)
    with pytest.raises(ValueError, match="params apply to specs"):
        combine_rewards([RewardTerm(seeded, params={"alpha": 2.0})])


@pytest.mark.parametrize(
    ("terms", "message"),
    [
        ([], "at least one"),
        ([RewardTerm("roam"), RewardTerm("roam")], r"share the name.*'roam'"),
        ([RewardTerm("roam", weight=float("nan"))], "finite"),
        ([RewardTerm("rooam")], "unknown reward 'rooam'"),
        ([RewardTerm("roam", params={"both_rite": 1.0})], "'both_rite'"),
    ],
)
def test_bad_terms(terms: list[RewardTerm], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        combine_rewards(terms)

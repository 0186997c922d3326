"""The LR-IAD focal reward: group probability, rarity factor, frequency table."""

from __future__ import annotations

import pytest
from reward_samples import make_sample, think_answer

from anomalyr1.rewards import load_reward

RIGHT = think_answer("so B.", "B")
WRONG = think_answer("so C.", "C")
UNFORMATTED_RIGHT = "Sure. <think>so B.</think><answer>B</answer> Done."  # the pair, not the exact layout
SEEDS = {"good": 76, "scratch": 4, "crack": 20}


def test_group_share_is_p() -> None:
    reward = load_reward("lr_iad", class_counts={"broken_large": 1}, frequency="fixed")
    results = reward.score_group([RIGHT, WRONG, WRONG, WRONG], make_sample())
    focal = 1.0 * (1 - 0.25) ** 2 * 1.0
    assert [r.score for r in results] == pytest.approx([1.0 + focal, 1.0, 1.0, 1.0])
    assert results[0].parts == pytest.approx({"format": 1.0, "right": 1.0, "p": 0.25, "f": 1.0, "focal": focal})
    assert results[1].parts["focal"] == 0.0


def test_bonus_needs_a_right_answer_but_not_the_exact_format() -> None:
    reward = load_reward("lr_iad", class_counts={"broken_large": 1}, frequency="fixed", gamma=1.0)
    results = reward.score_group([UNFORMATTED_RIGHT, WRONG], make_sample())
    assert results[0].parts["format"] == 0.0
    assert results[0].score == pytest.approx(0.5)  # alpha * (1 - 0.5) * f
    assert results[1].score == 1.0


def test_everyone_right_pays_no_bonus() -> None:
    results = load_reward("lr_iad").score_group([RIGHT] * 4, make_sample())
    assert [r.score for r in results] == [1.0] * 4


@pytest.mark.parametrize(("policy_prob", "p"), [(0.5, 0.5), (0, 0.0), (1.5, 0.5), ("0.1", 0.5), (True, 0.5)])
def test_policy_prob_when_valid(policy_prob: object, p: float) -> None:
    sample = make_sample(extra={"policy_prob": policy_prob})
    reward = load_reward("lr_iad", class_counts={"broken_large": 1}, frequency="fixed")
    results = reward.score_group([RIGHT, WRONG], sample)  # group share would be 0.5
    assert results[0].parts["p"] == p
    assert results[0].parts["focal"] == pytest.approx((1 - p) ** 2)


def test_single_call_is_a_group_of_one() -> None:
    sample = make_sample()
    assert load_reward("lr_iad")(RIGHT, sample).score == 1.0  # p = 1: no focal term
    assert load_reward("lr_iad", gamma=0.0)(RIGHT, sample).score == 2.0  # (1 - p) ** 0 = 1
    assert load_reward("lr_iad")(WRONG, sample).score == 1.0
    assert load_reward("lr_iad", gamma=0.0)(RIGHT, make_sample(extra={"policy_prob": 0.5})).score == 2.0


@pytest.mark.parametrize(
    ("defect_type", "f"),
    [("good", 1.0), ("crack", (100 / 3) / 20), ("scratch", 5.0), ("never_seen", 5.0)],
)
def test_rarity_from_seeded_counts(defect_type: str, f: float) -> None:
    reward = load_reward("lr_iad", class_counts=SEEDS, frequency="fixed", gamma=0.0)
    result = reward.score_group([RIGHT], make_sample(defect_type=defect_type))[0]
    assert result.parts["f"] == pytest.approx(f)
    assert result.score == pytest.approx(1.0 + f)
    assert result.score <= reward.value_range[1]


def test_f_power_and_f_max() -> None:
    reward = load_reward("lr_iad", class_counts=SEEDS, frequency="fixed", f_power=0.5, f_max=10.0)
    assert reward.rarity(make_sample(defect_type="scratch")) == pytest.approx(((100 / 3) / 4) ** 0.5)
    assert reward.value_range == (0.0, 1.0 + 1.0 * 10.0)


def test_running_counts_each_group_once() -> None:
    reward = load_reward("lr_iad", gamma=0.0)
    good, crack = make_sample(defect_type="good"), make_sample(defect_type="crack")
    for _ in range(3):
        reward.score_group([RIGHT] * 8, good)
    result = reward.score_group([RIGHT], crack)[0]  # counts now good 3, crack 1: mean 2
    assert result.parts["f"] == pytest.approx(2.0)
    assert reward.score_group([RIGHT], good)[0].parts["f"] == 1.0


def test_fixed_counts_do_not_move() -> None:
    reward = load_reward("lr_iad", class_counts=SEEDS, frequency="fixed")
    before = reward.rarity(make_sample(defect_type="crack"))
    reward.score_group([RIGHT] * 8, make_sample(defect_type="crack"))
    assert reward.rarity(make_sample(defect_type="crack")) == before


def test_observe_and_composite_class_key() -> None:
    reward = load_reward("lr_iad", class_key=["dataset", "category", "defect_type"], frequency="fixed")
    reward.observe([make_sample(defect_type="good")] * 9 + [make_sample(defect_type="crack")])
    assert reward.class_of(make_sample(defect_type="crack")) == "DS-MVTec/bottle/crack"
    assert reward.rarity(make_sample(defect_type="crack")) == pytest.approx(5.0)
    assert reward.rarity(make_sample(defect_type="good")) == 1.0
    assert reward.rarity(make_sample(defect_type="crack", category="cable")) == 5.0  # unseen


def test_empty_table_is_neutral() -> None:
    assert load_reward("lr_iad", frequency="fixed").rarity(make_sample()) == 1.0


@pytest.mark.parametrize(
    "params",
    [{"gamma": -1.0}, {"alpha": float("nan")}, {"f_max": 0.5}, {"frequency": "weekly"},
     {"class_counts": {"good": -3}}, {"class_key": []}, {"extractor": "fuzzy"}],
)
def test_bad_parameters(params: dict) -> None:
    with pytest.raises(ValueError, match="lr_iad"):
        load_reward("lr_iad", **params)

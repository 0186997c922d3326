"""Box rewards: parsing, rescaling, matching, normal images, limits."""

from __future__ import annotations

import json

import pytest
from reward_samples import make_sample, think_answer

from anomalyr1.rewards import load_reward
from anomalyr1.rewards.bbox import stated_boxes
from anomalyr1.rewards.boxes import Box, iou, matched_iou, parse_boxes

GT = (100.0, 100.0, 200.0, 200.0)
DEFECT = make_sample(bbox=GT)


def boxes_answer(*boxes: list[float]) -> str:
    return think_answer("look", json.dumps([{"bbox_2d": list(b), "label": "crack"} for b in boxes]))


@pytest.mark.parametrize(
    ("answer", "score"),
    [
        ('[{"bbox_2d": [100, 100, 200, 200], "label": "crack"}]', 1.0),
        ('{"bbox_2d": [100, 100, 200, 200], "label": "crack"}', 1.0),
        ("[100, 100, 200, 200]", 1.0),
        ("[[100, 100, 200, 200]]", 1.0),
        ('```json\n[{"bbox_2d": [100, 100, 200, 200]}]\n```', 1.0),
        ("[100, 100, 150, 200]", 0.5),  # half of the truth
        ("[150, 100, 250, 200]", 50 * 100 / (2 * 100 * 100 - 50 * 100)),
        ("[0, 0, 50, 50]", 0.0),  # no overlap
        ("[0, 0, 100, 100]", 0.0),  # touching corners only
        ("The crack is at [100, 100, 200, 200].", 1.0),  # embedded in prose: still read
        ('[{"bbox_2d": [100, 100, 200', 0.0),  # malformed JSON
        ("[200, 200, 100, 100]", 0.0),  # inverted box is not a box
        ("[NaN, 100, 200, 200]", 0.0),
        ("[1e400, 100, 200, 200]", 0.0),
        ('[{"bbox_2d": [100, 100, 200]}]', 0.0),
        ("", 0.0),
    ],
)
def test_iou_against_one_truth_box(answer: str, score: float) -> None:
    result = load_reward("bbox_iou")(think_answer("look", answer), DEFECT)
    assert result.score == pytest.approx(score)


def test_whole_text_when_no_answer_block() -> None:
    assert load_reward("bbox_iou")('[{"bbox_2d": [100, 100, 200, 200]}]', DEFECT).score == 1.0


def test_rescaled_from_model_input_to_image_pixels() -> None:
    sample = make_sample(bbox=GT, extra={"input_size": (500, 400), "image_size": (1000, 800)})
    assert load_reward("bbox_iou")(boxes_answer([50, 50, 100, 100]), sample).score == 1.0
    assert load_reward("bbox_iou")(boxes_answer([50, 50, 100, 100]), DEFECT).score == 0.0
    anisotropic = make_sample(bbox=GT, extra={"input_size": (400, 200), "image_size": (800, 800)})
    assert load_reward("bbox_iou")(boxes_answer([50, 25, 100, 50]), anisotropic).score == 1.0


@pytest.mark.parametrize("extra", [{"input_size": (0, 400), "image_size": (1000, 800)}, {"image_size": (1000, 800)},
                                   {"input_size": "big", "image_size": (1000, 800)}])
def test_unusable_sizes_mean_no_rescaling(extra: dict) -> None:
    sample = make_sample(bbox=GT, extra=extra)
    assert load_reward("bbox_iou")(boxes_answer(list(GT)), sample).score == 1.0


SECOND = [300.0, 300.0, 400.0, 400.0]
SEVERAL = make_sample(bbox=GT, extra={"bboxes": [list(GT), SECOND]})


@pytest.mark.parametrize(
    ("boxes", "score"),
    [
        ([list(GT), SECOND], 1.0),
        ([SECOND, list(GT)], 1.0),  # order does not matter
        ([list(GT)], 0.5),  # one defect missed
        ([list(GT), SECOND, [0, 0, 10, 10]], 2 / 3),  # one spurious box
        ([list(GT), list(GT)], 0.5),  # one box cannot match two truths
    ],
)
def test_several_truth_boxes(boxes: list[list[float]], score: float) -> None:
    result = load_reward("bbox_iou")(boxes_answer(*boxes), SEVERAL)
    assert result.score == pytest.approx(score)
    assert result.parts["n_truth"] == 2.0


def test_covering_the_image_with_boxes_does_not_pay() -> None:
    spam = [list(GT)] + [[x, 0, x + 10, 10] for x in range(0, 300, 20)]
    assert load_reward("bbox_iou")(boxes_answer(*spam), DEFECT).score == pytest.approx(1 / 16)


def test_box_count_is_capped() -> None:
    result = load_reward("bbox_iou", max_boxes=5)(boxes_answer(*[list(GT)] * 100), DEFECT)
    assert result.parts["n_pred"] == 5.0


@pytest.mark.parametrize(
    ("completion", "score"),
    [(think_answer("fine", "[]"), 1.0), (think_answer("fine", "No defect."), 1.0), ("no answer", 1.0),
     (boxes_answer([0, 0, 5, 5]), 0.0)],
)
def test_normal_image_rewards_no_box(completion: str, score: float) -> None:
    assert load_reward("bbox_iou")(completion, make_sample(defect_type="good")).score == score


def test_defect_without_truth_cannot_score() -> None:
    result = load_reward("bbox_iou")(boxes_answer(list(GT)), make_sample(defect_type="crack"))
    assert result.score == 0.0 and result.parts["no_truth"] == 1.0


def test_overlong_answer_scores_zero() -> None:
    answer = "[100, 100, 200, 200]" + " " * 30_000
    assert load_reward("bbox_iou")(think_answer("x", answer), DEFECT).score == 0.0
    assert load_reward("bbox_iou")(think_answer("x", " " * 30_000), make_sample(defect_type="good")).score == 0.0
    assert load_reward("bbox_iou", max_chars=50_000)(think_answer("x", answer), DEFECT).score == 1.0


@pytest.mark.parametrize(
    ("answer", "score"),
    [
        ('[{"bbox_2d": [1, 2, 3, 4], "label": "crack"}]', 1.0),
        ('{"bbox_2d": [1, 2, 3, 4], "label": "crack"}', 1.0),
        ("[1, 2, 3, 4]", 1.0),
        ("[[1, 2, 3, 4], [5, 6, 7, 8]]", 1.0),
        ("[]", 1.0),
        ('```json\n{"bbox_2d": [1, 2, 3, 4]}\n```', 1.0),
        ("The box is [1, 2, 3, 4].", 0.0),
        ("[1, 2, 3]", 0.0),
        ('[[1, 2, 3, 4], "crack"]', 0.0),
        ('{"box": [1, 2, 3, 4]}', 0.0),
        ('[{"bbox_2d": [1, 2, 3, 4]', 0.0),
        ("[true, 2, 3, 4]", 0.0),
        ("[" * 5000 + "]" * 5000, 0.0),  # nesting beyond the JSON decoder's recursion limit
        ("[" + "9" * 5000 + ", 1, 2, 3]", 0.0),  # integer beyond the decoder's digit limit
        ("B", 0.0),
    ],
)
def test_bbox_format(answer: str, score: float) -> None:
    result = load_reward("bbox_format")(think_answer("x", answer), DEFECT)
    assert result.score == score
    assert "error" not in result.parts


def test_parse_boxes_limits() -> None:
    assert parse_boxes("[1, 2, 3, 4]", max_chars=5, max_boxes=1) is None
    garbage = "{[" * 5000 + "[1, 2, 3, 4]"
    assert parse_boxes(garbage, max_chars=20_000, max_boxes=5).boxes == ()  # decode attempts are bounded


def test_iou_and_matching_primitives() -> None:
    a, b = Box(0, 0, 10, 10), Box(5, 5, 15, 15)
    assert iou(a, b) == pytest.approx(25 / 175)
    assert iou(a, a) == 1.0
    assert iou(Box(0, 0, 0, 0), Box(0, 0, 0, 0)) == 0.0
    assert matched_iou([], [a]) == 0.0
    assert matched_iou([a, b], [b]) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("answer", "score"),
    [
        ("[100, 100, 200, 200]", 1.0),
        ("[100, 100, 160, 200]", 1.0),  # IoU 0.6
        ("[100, 100, 150, 200]", 0.0),  # IoU exactly 0.5: the reference pays only above it
        ("[100, 100, 140, 200]", 0.0),  # IoU 0.4
        ("[0, 0, 50, 50]", 0.0),
    ],
)
def test_reference_threshold_rule(answer: str, score: float) -> None:
    """iou_threshold 0.5 is the reference's iou_reward: 1 when IoU > 0.5, else 0."""
    result = load_reward("bbox_iou", iou_threshold=0.5)(think_answer("look", answer), DEFECT)
    assert result.score == score


def test_threshold_rule_counts_matched_pairs_over_the_larger_count() -> None:
    sample = make_sample(bbox=None, extra={"bboxes": [[0, 0, 10, 10], [100, 100, 200, 200]]})
    one_good_one_poor = boxes_answer([0, 0, 10, 10], [100, 100, 140, 200])
    assert load_reward("bbox_iou", iou_threshold=0.5)(one_good_one_poor, sample).score == 0.5
    assert load_reward("bbox_iou")(one_good_one_poor, sample).score == pytest.approx((1.0 + 0.4) / 2)


@pytest.mark.parametrize("threshold", [-0.1, 1.0, 2.0])
def test_threshold_outside_zero_one_is_refused(threshold: float) -> None:
    with pytest.raises(ValueError, match="iou_threshold must be in"):
        load_reward("bbox_iou", iou_threshold=threshold)


def test_stated_boxes_are_rescaled_to_image_pixels() -> None:
    sample = {"extra": {"input_size": [500, 400], "image_size": [1000, 800]}}
    assert stated_boxes(think_answer("look", "[10, 20, 30, 40]"), sample, 100, 4) == [Box(20, 40, 60, 80)]
    assert stated_boxes("x" * 101, sample, 100, 4) is None

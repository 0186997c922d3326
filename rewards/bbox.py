"""Localization rewards: box overlap with the ground truth, and the JSON box format.

Both read the last answer block (the whole text when there is none), and at most
`max_chars` of it: a longer answer is not a box answer and scores 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from .base import Reward, RewardResult
from .boxes import Box, as_box, matched_iou, parse_boxes
from .parsing import answer_region
from .registry import register_reward

NORMAL_DEFECT = "good"
"""The data contract's defect_type of a normal image (data_pipelines.schema.NORMAL_DEFECT),
restated rather than imported: importing the schema runs the whole data_pipelines package
(image and dataset loaders) in every reward worker, for one string."""

@dataclass
class _BoxLimits:
    max_chars: int = 20_000
    max_boxes: int = 20

    def __post_init__(self) -> None:
        if self.max_chars < 1 or self.max_boxes < 1:
            raise ValueError(f"max_chars and max_boxes must be >= 1, got {self.max_chars}, {self.max_boxes}")


def _size(value: Any) -> tuple[float, float] | None:
    """A (width, height) with positive finite numbers, else None."""
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        return None
    try:
        w, h = float(value[0]), float(value[1])
    except (TypeError, ValueError, OverflowError):
        return None
    return (w, h) if all(math.isfinite(v) and v > 0 for v in (w, h)) else None


def input_to_image_scale(sample: Mapping[str, Any]) -> tuple[float, float]:
    """Factors taking model-input pixels to image pixels, from extra["input_size"] and
    extra["image_size"] (both (w, h)); (1, 1) when either is missing, as then the processor
    is assumed not to have resized."""
    extra = sample.get("extra")
    if not isinstance(extra, Mapping):
        return 1.0, 1.0
    model_input, image = _size(extra.get("input_size")), _size(extra.get("image_size"))
    if model_input is None or image is None:
        return 1.0, 1.0
    return image[0] / model_input[0], image[1] / model_input[1]


def stated_boxes(completion: str, sample: Mapping[str, Any], max_chars: int, max_boxes: int) -> list[Box] | None:
    """The boxes a completion states (last answer block, else the whole text), in image
    pixels; None when the answer is too long to be a box answer. `anomalyr1 masks` reads
    completions with this too, so the boxes it segments are the ones the reward paid for."""
    parsed = parse_boxes(answer_region(completion), max_chars, max_boxes)
    if parsed is None:
        return None
    sx, sy = input_to_image_scale(sample)
    return [box.scaled(sx, sy) for box in parsed.boxes]


def truth_boxes(sample: Mapping[str, Any]) -> list[Box]:
    """extra["bboxes"] when given (several defects), else sample["bbox"]; invalid boxes dropped."""
    extra = sample.get("extra")
    several = extra.get("bboxes") if isinstance(extra, Mapping) else None
    candidates = several if isinstance(several, (list, tuple)) else [sample.get("bbox")]
    return [box for box in map(as_box, candidates) if box is not None]


@register_reward("bbox_iou")
@dataclass
class BboxIou(_BoxLimits, Reward):
    """Overlap of the predicted boxes with the truth (`boxes.matched_iou`), in image pixels.

    `iou_threshold: null` (the default) pays the continuous overlap; `iou_threshold: 0.5` is
    the AnomalyR1 reference's rule (1 when IoU > 0.5, else 0; see `matched_iou`).

    A normal image (no truth box, defect_type `good` or absent) scores 1 when the completion
    predicts no box and 0 when it predicts any. A defective sample without a truth box cannot
    be scored and gets 0 with part `no_truth`.
    """

    iou_threshold: float | None = None
    value_range = (0.0, 1.0)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.iou_threshold is not None and not 0 <= self.iou_threshold < 1:
            raise ValueError(f"iou_threshold must be in [0, 1) or null, got {self.iou_threshold}")

    def _score(self, completion: str, sample: Mapping[str, Any]) -> RewardResult:
        predicted = stated_boxes(completion, sample, self.max_chars, self.max_boxes)
        if predicted is None:
            return RewardResult(0.0, {"too_long": 1.0})
        truth = truth_boxes(sample)
        parts = {"n_pred": float(len(predicted)), "n_truth": float(len(truth))}
        if truth:
            return RewardResult(matched_iou(predicted, truth, self.iou_threshold), parts)
        if sample.get("defect_type", NORMAL_DEFECT) != NORMAL_DEFECT:
            return RewardResult(0.0, {**parts, "no_truth": 1.0})
        return RewardResult(float(not predicted), parts)


@register_reward("bbox_format")
@dataclass
class BboxFormat(_BoxLimits, Reward):
    """1 when the answer is exactly JSON in the box format (`boxes.ParsedBoxes.well_formed`)."""

    value_range = (0.0, 1.0)

    def _score(self, completion: str, sample: Mapping[str, Any]) -> RewardResult:
        parsed = parse_boxes(answer_region(completion), self.max_chars, self.max_boxes)
        return RewardResult(float(parsed is not None and parsed.well_formed))

"""Localization scores: the boxes a model states, and the masks made from them, against the
ground-truth masks MMAD ships for its defective images.

Needs no model, so `anomalyr1 masks` and anyone holding predicted boxes and masks score the
same way. Per image: `box_iou` (the stated boxes against the boxes around the ground-truth
mask's connected regions, matched as the bbox_iou reward matches them), `mask_iou` and `dice`
(pixels). A normal image has no defect to find: any stated box there is a false alarm, and no
box on a defective image is a miss.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from anomalyr1.data_pipelines.regions import component_boxes
from anomalyr1.data_pipelines.scoring import AVERAGE, mean_present, render_table
from anomalyr1.rewards.boxes import Box, matched_iou

RATE_COLUMNS = ("box_iou", "mask_iou", "dice", "miss_rate", "false_alarm_rate")
"""Percent: means over defective images (the first four) or normal ones (false alarms)."""
COUNT_COLUMNS = ("defective", "normal")
"""Images scored."""
COLUMNS = RATE_COLUMNS + COUNT_COLUMNS

Table = dict[str, dict[str, float | int | None]]
"""row (`dataset/category`, then `dataset`, ..., then "Average") -> column -> value."""


@dataclass(frozen=True)
class ImageScore:
    image: str
    """The image's path relative to the data root (its mmad.json key)."""
    dataset: str
    category: str
    normal: bool
    boxes: int
    """Boxes the model stated (inside the image)."""
    box_iou: float | None
    """0..1; None on a normal image."""
    mask_iou: float | None
    dice: float | None
    false_alarm: bool | None
    """A box on a normal image; None on a defective one."""
    miss: bool | None
    """No box on a defective image; None on a normal one."""


def mask_iou(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Pixel intersection over union; 0 when both are empty."""
    union = np.logical_or(predicted, truth).sum()
    return float(np.logical_and(predicted, truth).sum() / union) if union else 0.0


def dice(predicted: np.ndarray, truth: np.ndarray) -> float:
    """2 |P & T| / (|P| + |T|); 0 when both are empty."""
    total = predicted.sum() + truth.sum()
    return float(2 * np.logical_and(predicted, truth).sum() / total) if total else 0.0


def score_image(image: str, dataset: str, category: str, boxes: Sequence[Box],
                predicted: np.ndarray, truth: np.ndarray | None) -> ImageScore:
    """One image's scores. `truth` is None for a normal image, else its ground-truth mask with
    at least one set pixel; `predicted` is the mask made from `boxes`, of the same shape."""
    if truth is None:
        return ImageScore(image, dataset, category, True, len(boxes), None, None, None, bool(boxes), None)
    if not truth.any():
        raise ValueError(f"{image}: the ground-truth mask of a defective image is empty")
    return ImageScore(image, dataset, category, False, len(boxes), matched_iou(boxes, component_boxes(truth)),
                      mask_iou(predicted, truth), dice(predicted, truth), None, not boxes)


def _row(scores: Sequence[ImageScore]) -> dict[str, float | int | None]:
    defective = [s for s in scores if not s.normal]
    normal = [s for s in scores if s.normal]

    def percent(values: list[float]) -> float | None:
        return 100.0 * float(np.mean(values)) if values else None

    return {
        "box_iou": percent([s.box_iou for s in defective]),
        "mask_iou": percent([s.mask_iou for s in defective]),
        "dice": percent([s.dice for s in defective]),
        "miss_rate": percent([float(s.miss) for s in defective]),
        "false_alarm_rate": percent([float(s.false_alarm) for s in normal]),
        "defective": len(defective),
        "normal": len(normal),
    }


def _combined(rows: Sequence[dict[str, float | int | None]]) -> dict[str, float | int | None]:
    """Rates: the mean of the rows that have them (as MMAD averages its cells); counts: sums."""
    combined: dict[str, float | int | None] = {c: mean_present([r[c] for r in rows]) for c in RATE_COLUMNS}
    combined.update({c: sum(r[c] for r in rows) for c in COUNT_COLUMNS})
    return combined


def localization_table(scores: Sequence[ImageScore]) -> Table:
    """Rows `dataset/category` for each category, then the dataset's row (the mean of its
    category rows), and last `Average` (the mean of the dataset rows), like the MMAD table."""
    grouped: dict[str, dict[str, list[ImageScore]]] = defaultdict(lambda: defaultdict(list))
    for score in scores:
        grouped[score.dataset][score.category].append(score)
    table: Table = {}
    for dataset, categories in grouped.items():
        rows = [_row(items) for items in categories.values()]
        table.update({f"{dataset}/{category}": row for category, row in zip(categories, rows)})
        table[dataset] = _combined(rows)
    table[AVERAGE] = _combined([table[dataset] for dataset in grouped])
    return table


@dataclass(frozen=True)
class LocalizationScores:
    per_image: list[ImageScore]
    table: Table
    problems: list[str]
    """Inputs reported and skipped (a missing image, an unreadable mask, a box outside the image)."""

    def to_json(self) -> dict[str, Any]:
        return {"per_image": [asdict(s) for s in self.per_image], "table": self.table, "problems": self.problems}

    def render(self) -> str:
        lines = render_table(self.table, COLUMNS)
        defective = sum(not s.normal for s in self.per_image)
        lines.append(f"{len(self.per_image)} images scored ({defective} defective, {len(self.per_image) - defective} normal), "
                     f"{len(self.problems)} problems")
        return "\n".join(lines)


def score_localization(per_image: Sequence[ImageScore], problems: Sequence[str] = ()) -> LocalizationScores:
    return LocalizationScores(list(per_image), localization_table(per_image), list(problems))

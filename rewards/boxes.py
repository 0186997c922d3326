"""Boxes in model output: JSON parsing, rescaling to image pixels, and overlap with the truth.

Qwen2.5-VL writes boxes as JSON in the pixels of its (possibly resized) input, e.g.
`[{"bbox_2d": [x1, y1, x2, y2], "label": "scratch"}]`, often inside a ```json fence. Parsing
is bounded (characters, decode attempts, boxes) because the text is arbitrary model output.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Iterable

BOX_KEY = "bbox_2d"
_DECODER = json.JSONDecoder()
_MAX_DECODE_ATTEMPTS = 256
"""Bracket positions tried when the text is not one JSON value; bounds the scan on garbage."""


@dataclass(frozen=True)
class Box:
    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def area(self) -> float:
        return (self.x2 - self.x1) * (self.y2 - self.y1)

    def scaled(self, sx: float, sy: float) -> "Box":
        return Box(self.x1 * sx, self.y1 * sy, self.x2 * sx, self.y2 * sy)


@dataclass(frozen=True)
class ParsedBoxes:
    boxes: tuple[Box, ...]
    well_formed: bool
    """The whole text (fence aside) is one JSON value in the box format: a box object, a bare
    [x1, y1, x2, y2], or a list of those (empty included: "no defect")."""


def as_box(value: Any) -> Box | None:
    """A box from [x1, y1, x2, y2] with finite numbers and x1 <= x2, y1 <= y2, else None."""
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        return None
    numbers = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return None
        try:
            number = float(v)
        except OverflowError:
            return None
        if not math.isfinite(number):
            return None
        numbers.append(number)
    box = Box(*numbers)
    return box if box.x1 <= box.x2 and box.y1 <= box.y2 else None


def _item_box(item: Any) -> Box | None:
    """A box from one element of the format: `{"bbox_2d": [...], ...}` or a bare list."""
    return as_box(item.get(BOX_KEY)) if isinstance(item, dict) else as_box(item)


def _format_boxes(value: Any) -> list[Box] | None:
    """The boxes of a value in the box format, or None when it is not in the format."""
    single = _item_box(value)
    if single is not None:
        return [single]
    if not isinstance(value, list):
        return None
    boxes = [_item_box(item) for item in value]
    return None if any(box is None for box in boxes) else boxes  # type: ignore[return-value]


def _strip_fence(text: str) -> str:
    """```json ... ``` -> its body (string operations: a regex here can backtrack on long
    whitespace)."""
    text = text.strip()
    if not text.startswith("```"):
        return text
    newline = text.find("\n")
    body = text[newline + 1:] if newline >= 0 else text[3:]
    body = body.rstrip()
    return body[:-3] if body.endswith("```") else body


_FAILED = object()


def _decode(text: str) -> Any:
    """json.loads that reports failure as a sentinel; deep nesting and 4300+ digit integers
    raise RecursionError / ValueError in the stdlib decoder."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return _FAILED


def _scan_boxes(text: str, max_boxes: int) -> list[Box]:
    """Boxes in JSON fragments embedded in prose ("the box is [1, 2, 3, 4]"): decode at each
    '[' or '{', keep what parses, skip past it."""
    boxes: list[Box] = []
    pos, attempts = 0, 0
    while len(boxes) < max_boxes and attempts < _MAX_DECODE_ATTEMPTS:
        starts = [i for i in (text.find("[", pos), text.find("{", pos)) if i >= 0]
        if not starts:
            break
        start = min(starts)
        attempts += 1
        try:
            value, end = _DECODER.raw_decode(text, start)
        except (ValueError, RecursionError):
            pos = start + 1
            continue
        boxes.extend(_nested_boxes(value))
        pos = end
    return boxes[:max_boxes]


def _nested_boxes(value: Any) -> Iterable[Box]:
    """Boxes in a decoded fragment: the value itself, or the elements of a list of them."""
    single = _item_box(value)
    if single is not None:
        return [single]
    if isinstance(value, list):
        return [box for box in map(_item_box, value) if box is not None]
    return []


def parse_boxes(text: str, max_chars: int, max_boxes: int) -> ParsedBoxes | None:
    """Boxes written in `text`; None when the text is longer than `max_chars` (not a box
    answer, and too costly to scan). Strict JSON first; prose with embedded boxes still
    yields them but is not well formed."""
    if len(text) > max_chars:
        return None
    body = _strip_fence(text)
    strict = _format_boxes(_decode(body))
    if strict is not None:
        return ParsedBoxes(tuple(strict[:max_boxes]), well_formed=True)
    return ParsedBoxes(tuple(_scan_boxes(body, max_boxes)), well_formed=False)


def iou(a: Box, b: Box) -> float:
    """Continuous intersection over union; 0 for disjoint or degenerate boxes."""
    width = min(a.x2, b.x2) - max(a.x1, b.x1)
    height = min(a.y2, b.y2) - max(a.y1, b.y1)
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    union = a.area + b.area - inter
    value = inter / union if union > 0 else 0.0
    return value if math.isfinite(value) else 0.0


def matched_iou(predicted: Iterable[Box], truth: Iterable[Box], threshold: float | None = None) -> float:
    """Sum of IoUs of a greedy one-to-one matching (best pairs first) divided by the larger
    of the two box counts: a missed defect and a spurious box both cost, so covering the
    image with many boxes does not pay. One box against one box is their plain IoU.

    With `threshold`, a matched pair counts 1 when its IoU exceeds it and 0 otherwise, so one
    box against one box pays 1 exactly when IoU > threshold (the AnomalyR1 reference's
    `iou_reward` in open-r1-multimodal/src/open_r1/grpo_rec.py pays 1.0 for IoU > 0.5)."""
    predicted, truth = list(predicted), list(truth)
    if not predicted or not truth:
        return 0.0
    pairs = sorted(((iou(p, t), i, j) for i, p in enumerate(predicted) for j, t in enumerate(truth)), reverse=True)
    used_p: set[int] = set()
    used_t: set[int] = set()
    total = 0.0
    for overlap, i, j in pairs:
        if overlap <= 0:
            break
        if i in used_p or j in used_t:
            continue
        used_p.add(i)
        used_t.add(j)
        total += overlap if threshold is None else float(overlap > threshold)
    return total / max(len(predicted), len(truth))

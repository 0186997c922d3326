"""Logged completions and eval answers as gallery cards, with thumbnails drawn by PIL: every box
the text states (magenta), the ground truth (cyan: the box, or the mask's outline) and, for an
eval folder that `anomalyr1 masks` has segmented, SAM2's mask of the stated boxes (yellow fill).

Thumbnails are small JPEGs embedded as data URIs, each distinct (image, boxes) once: the G
completions of a prompt mostly state no box and share one thumbnail.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

from anomalyr1.platform.eval_answers import choose_letter
from anomalyr1.rewards.bbox import input_to_image_scale
from anomalyr1.rewards.boxes import parse_boxes
from anomalyr1.rewards.parsing import ANSWER, THINK, answer_region, last_block

THUMB_SIDE = 160
PREDICTED, TRUTH, SEGMENTED = (255, 0, 220), (0, 190, 255), (255, 210, 0)
"""Magenta for what the text states, cyan for the truth, yellow for SAM2's mask of the stated
boxes: none is a colour the synthetic parts are drawn in."""
SEGMENTED_OPACITY = 110
"""Of 255: the mask is filled, so the part under it must stay visible."""
MAX_BOX_CHARS, MAX_BOXES = 20_000, 20
"""bbox_iou's own limits: a longer answer is not a box answer."""


@dataclass
class Card:
    """One completion or answer, as the gallery shows it."""

    step: int | None
    sample_id: str
    dataset: str
    category: str
    question_type: str
    question: str
    options: dict[str, str]
    truth: str
    text: str
    chosen: str | None
    image: str | None
    boxes: list[tuple[float, float, float, float]]
    """Boxes the text states, in image pixels."""
    bbox: list[float] | None = None
    mask_path: str | None = None
    segmented: str | None = None
    """SAM2's mask PNG of the stated boxes (`anomalyr1 masks`), at the image's size."""
    reward: float | None = None
    reward_parts: dict[str, float] = field(default_factory=dict)
    advantage: float | None = None
    length: int | None = None
    cut: bool = False

    @property
    def verdict(self) -> str:
        """right / wrong / none (no letter read from the text)."""
        if self.chosen is None:
            return "none"
        return "right" if self.chosen == self.truth else "wrong"

    @property
    def think(self) -> str | None:
        return last_block(self.text, THINK)

    @property
    def answer(self) -> str | None:
        return last_block(self.text, ANSWER)


def stated_boxes(text: str, scale: tuple[float, float]) -> list[tuple[float, float, float, float]]:
    parsed = parse_boxes(answer_region(text), MAX_BOX_CHARS, MAX_BOXES)
    boxes = parsed.boxes if parsed is not None else ()
    return [(b.x1 * scale[0], b.y1 * scale[1], b.x2 * scale[0], b.y2 * scale[1]) for b in boxes]


def rollout_card(record: dict) -> Card:
    """A card from a rollouts/step_N.jsonl record (boxes mapped from model-input to image pixels)."""
    scale = input_to_image_scale({"extra": {"input_size": record.get("input_size"), "image_size": record.get("image_size")}})
    text = record["completion"]
    return Card(
        step=record["step"], sample_id=record["sample_id"], dataset=record["dataset"], category=record["category"],
        question_type=record["question_type"], question=record["question"], options=record["options"], truth=record["truth"],
        text=text, chosen=choose_letter(text, record["options"]), image=record.get("image"), boxes=stated_boxes(text, scale),
        bbox=record.get("bbox"), mask_path=record.get("mask_path"), reward=record.get("reward"),
        reward_parts=record.get("reward_parts") or {}, advantage=record.get("advantage"), length=record.get("length"),
        cut=bool(record.get("cut")),
    )


def answer_card(record: dict, masks: dict[str, str] | None = None) -> Card:
    """A card from an answers.json record, with its SAM2 mask when `masks` (image key -> mask
    file) has one. Evaluation keeps no model-input size, so stated boxes are drawn as written
    (the model's input pixels)."""
    text = record.get("response") or ""
    return Card(
        step=None, sample_id=record["image"], dataset=record.get("dataset") or record["image"].split("/", 1)[0],
        category=record.get("category") or "", question_type=record["question_type"], question=record.get("question") or "",
        options=record.get("options") or {}, truth=record["correct_answer"], text=text, chosen=record["gpt_answer"],
        image=record.get("image_path"), boxes=stated_boxes(text, (1.0, 1.0)), bbox=record.get("bbox"),
        mask_path=record.get("mask_path"), segmented=(masks or {}).get(record["image"]),
    )


def _binary(mask_path: str, size: tuple[int, int], on: int) -> Image.Image | None:
    """The mask resized to `size`: `on` where it is set, 0 elsewhere; None when unreadable."""
    try:
        with Image.open(mask_path) as mask:
            return mask.convert("L").resize(size, Image.NEAREST).point(lambda v: on if v > 127 else 0)
    except OSError:
        return None


def _mask_outline(mask_path: str, size: tuple[int, int]) -> Image.Image | None:
    binary = _binary(mask_path, size, 255)
    return binary.filter(ImageFilter.FIND_EDGES).filter(ImageFilter.MaxFilter(3)) if binary is not None else None


def thumbnail(card: Card) -> bytes | None:
    """A JPEG of the card's image, at most THUMB_SIDE a side, with truth and stated boxes; None
    when the image cannot be read."""
    try:
        with Image.open(card.image) as opened:
            image = opened.convert("RGB")
    except (OSError, TypeError, ValueError):
        return None
    width, height = image.size
    factor = THUMB_SIDE / max(width, height)
    image = image.resize((max(1, round(width * factor)), max(1, round(height * factor))), Image.BILINEAR)
    segmented = _binary(card.segmented, image.size, SEGMENTED_OPACITY) if card.segmented else None
    if segmented is not None:  # first, so the outlines stay on top
        image.paste(SEGMENTED, mask=segmented)
    draw = ImageDraw.Draw(image)
    outline = _mask_outline(card.mask_path, image.size) if card.mask_path else None
    if outline is not None:
        image.paste(TRUTH, mask=outline)
    elif card.bbox:
        draw.rectangle([v * factor for v in card.bbox], outline=TRUTH, width=2)
    for box in card.boxes:
        x1, y1, x2, y2 = (v * factor for v in box)
        draw.rectangle([x1, y1, max(x1, x2), max(y1, y2)], outline=PREDICTED, width=2)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=75)
    return out.getvalue()


class Thumbnails:
    """Data URIs of card thumbnails, one per distinct (image, boxes), keyed for the page's map."""

    def __init__(self):
        self.uris: dict[str, str] = {}
        self._keys: dict[tuple, str | None] = {}

    def key(self, card: Card) -> str | None:
        """The card's thumbnail key, or None when it has no readable image."""
        identity = (card.image, card.mask_path, card.segmented, tuple(card.bbox or ()), tuple(card.boxes))
        if identity not in self._keys:
            data = thumbnail(card) if card.image and Path(card.image).is_file() else None
            key = None
            if data is not None:
                key = f"t{len(self.uris)}"
                self.uris[key] = "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")
            self._keys[identity] = key
        return self._keys[identity]

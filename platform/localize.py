"""`anomalyr1 masks`: the boxes a model stated in an answers file, turned into SAM2 masks and
scored against the data root's ground-truth masks.

The answers are read as the bbox_iou reward reads completions (last answer block, JSON boxes
or a bare [x1, y1, x2, y2], rescaled from the record's `input_size` to the image), so what is
segmented is what training paid for. Bad input costs its image, never the run: a missing image,
an unreadable mask or an image outside mmad.json is reported with its path and skipped, and a
box wholly outside its image is reported and left out (one partly outside is clipped).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Mapping

import numpy as np
from PIL import Image
from tqdm import tqdm

from anomalyr1.data_pipelines import DataError, Sample, load_image, load_mmad
from anomalyr1.data_pipelines.fewshot import image_key
from anomalyr1.data_pipelines.images import load_mask
from anomalyr1.data_pipelines.localization import LocalizationScores, score_image, score_localization
from anomalyr1.data_pipelines.scoring import read_answers
from anomalyr1.platform.mask_index import MASKS_DIR, write_mask_index
from anomalyr1.platform.segment import DEFAULT_SAM2, Sam2Segmenter
from anomalyr1.rewards.bbox import BboxIou, stated_boxes
from anomalyr1.rewards.boxes import Box

SCORES_FILE = "localization.json"
_LIMITS = BboxIou()
"""The bbox reward's reading limits (characters, boxes), so both read an answer alike."""


@dataclass(frozen=True)
class MasksResult:
    index_path: Path
    scores_path: Path
    scores: LocalizationScores


class _Skip(Exception):
    """An image that cannot be segmented or scored; the message names it."""


@dataclass
class _Image:
    """One answered image, ready for SAM2 and scoring."""
    key: str
    sample: Sample
    image: Image.Image
    boxes: list[Box]
    truth: np.ndarray | None
    """The ground-truth mask; None for a normal image."""
    notes: list[str] = field(default_factory=list)
    """Problems that cost a box, not the image."""


def make_masks(answers: str | Path, root: str | Path, out_dir: str | Path, sam2: str | None = None,
               cache_dir: str | Path = "~/.cache/anomalyr1", batch_size: int = 8, device: str | None = None) -> MasksResult:
    """Writes out_dir/masks/<image key>.png (0 or 255, the image's size) for every answered image,
    out_dir/masks.json (the index) and out_dir/localization.json (per-image scores and the table).
    An image answered several times (an MMAD answers file) is segmented from its first answer.
    sam2: a local folder, hub id or builtin:tiny-sam2 (None: DEFAULT_SAM2)."""
    sam2 = sam2 or DEFAULT_SAM2
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    records = read_answers(answers)
    loaded = load_mmad(root)
    samples: dict[str, Sample] = {}
    for sample in loaded.samples:
        samples.setdefault(image_key(sample), sample)
    skipped = {problem.key.split("#", 1)[0]: problem.message for problem in loaded.problems}
    problems: list[str] = []
    first: dict[str, Mapping[str, Any]] = {}
    for index, record in enumerate(records):
        if not (isinstance(record, dict) and isinstance(record.get("image"), str) and isinstance(record.get("response"), str)):
            problems.append(f"{answers}[{index}]: an answer needs the strings 'image' and 'response'")
            continue
        first.setdefault(record["image"], record)
    segmenter = Sam2Segmenter(sam2, cache_dir, device)
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    scores, index = [], []
    keys = list(first)
    with tqdm(total=len(keys), desc="masks", unit="image") as bar:
        for start in range(0, len(keys), batch_size):
            batch = []
            for key in keys[start:start + batch_size]:
                try:
                    batch.append(_prepare(key, first[key], samples, skipped))
                except _Skip as skip:
                    problems.append(str(skip))
            masks = segmenter.segment([item.image for item in batch], [item.boxes for item in batch])
            for item, mask in zip(batch, masks):
                problems += item.notes
                index.append(_write_mask(out, item, mask))
                scores.append(score_image(item.key, item.sample.dataset, item.sample.category, item.boxes, mask, item.truth))
            bar.update(len(keys[start:start + batch_size]))
    result = score_localization(scores, problems)
    index_path, scores_path = write_mask_index(out, answers, root, sam2, index), out / SCORES_FILE
    scores_path.write_text(json.dumps(result.to_json(), indent=1))
    return MasksResult(index_path, scores_path, result)


def _prepare(key: str, record: Mapping[str, Any], samples: Mapping[str, Sample], skipped: Mapping[str, str]) -> _Image:
    sample = samples.get(key)
    if sample is None:
        raise _Skip(f"{key}: skipped, " + (skipped[key] if key in skipped else "not an image of the data root's mmad.json"))
    try:
        image = load_image(sample.image)
        truth = None if sample.is_normal else _truth(sample, image.size)
    except DataError as exc:
        raise _Skip(f"{key}: skipped, {exc}") from None
    stated = stated_boxes(record["response"], {"extra": {"input_size": record.get("input_size"), "image_size": list(image.size)}},
                          _LIMITS.max_chars, _LIMITS.max_boxes)
    item = _Image(key, sample, image, [], truth)
    if stated is None:
        item.notes.append(f"{key}: answer longer than {_LIMITS.max_chars} characters, read as no box")
    for box in stated or []:
        clipped = Box(max(box.x1, 0.0), max(box.y1, 0.0), min(box.x2, image.width), min(box.y2, image.height))
        if clipped.x2 > clipped.x1 and clipped.y2 > clipped.y1:
            item.boxes.append(clipped)
        else:
            item.notes.append(f"{key}: box {[box.x1, box.y1, box.x2, box.y2]} is outside the "
                              f"{image.width}x{image.height} image {sample.image}; left out")
    return item


def _truth(sample: Sample, size: tuple[int, int]) -> np.ndarray:
    if sample.mask_path is None:
        raise DataError(f"no ground-truth mask for the defective image {sample.image}")
    mask = load_mask(sample.mask_path, size)
    if not mask.any():
        raise DataError(f"{sample.mask_path}: the ground-truth mask is empty")
    return mask


def _write_mask(out: Path, item: _Image, mask: np.ndarray) -> dict[str, Any]:
    """Writes the mask (its image's key, suffix .png, under masks/) and returns its index entry."""
    relative = PurePosixPath(MASKS_DIR, item.key).with_suffix(".png")
    target = out / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * 255).save(target)
    return {"image": item.key, "mask": str(relative), "width": item.image.width, "height": item.image.height,
            "boxes": [[b.x1, b.y1, b.x2, b.y2] for b in item.boxes]}

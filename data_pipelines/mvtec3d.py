"""MVTec 3D-AD's RGB test images as an MMAD-format set, so the loader, prompts and scorer work
on it unchanged.

Source layout: <src>/<category>/{train,validation,test}/<defect or good>/{rgb,gt,xyz}/NNN.png.
The output root gets symbolic links in MMAD's layout (the loader reads the defect type from the
folder above the file, which here would be `rgb`) and an mmad.json:

  <dataset>/<category>/image/<defect>/NNN.png         -> test/<defect>/rgb/NNN.png
  <dataset>/<category>/ground_truth/<defect>/NNN.png  -> test/<defect>/gt/NNN.png
  <dataset>/<category>/train/good/NNN.png             -> train/good/rgb/NNN.png (templates)

Questions per image: Anomaly Detection (Yes/No); Object Classification (the category among
other categories); for defective images Defect Classification (among the category's defect
types) and Defect Localization (the 3x3 grid cell holding most of the ground-truth mask, against
cells the mask does not touch, so no distractor is also right). Only the RGB channel is used; the
point clouds (xyz) are not.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from anomalyr1.data_pipelines.errors import DataError
from anomalyr1.data_pipelines.images import load_image
from anomalyr1.data_pipelines.mmad import MMAD_FILE
from anomalyr1.data_pipelines.schema import NORMAL_DEFECT, OPTION_LETTERS
from anomalyr1.data_pipelines.synthetic import ANOMALY_QUESTION, REGIONS

DATASET = "MVTec3D-AD"
MAX_OPTIONS = 4
"""MMAD's questions have at most four options for these types."""
THUMBNAIL = 32
"""Side of the grey thumbnails that rank templates by similarity: cheap, and enough to tell an
object's pose and lighting apart."""


@dataclass
class MVTec3DConversion:
    root: Path
    images: int = 0
    questions: int = 0
    problems: list[str] = field(default_factory=list)
    """Images or questions left out, with the file and the reason."""


@dataclass(frozen=True)
class _Query:
    category: str
    defect: str
    rgb: Path
    gt: Path | None


def convert_mvtec3d(source: str | Path, out: str | Path, *, dataset: str = DATASET, seed: int = 0,
                    templates: int = 8) -> MVTec3DConversion:
    """Writes out/mmad.json (last, so its presence means a complete set) and the links.

    templates: normal training images per category offered as k-shot templates (seeded pick,
    ranked per query image by thumbnail similarity for `similar_templates`)."""
    source, out = Path(os.path.abspath(source)), Path(os.path.abspath(out))
    if not source.is_dir():
        raise DataError(f"{source}: no such folder (expected the MVTec 3D-AD root)")
    if out == source or source in out.parents:
        raise DataError(f"{out}: the output root must lie outside the source {source}")
    if not dataset or "/" in dataset or dataset.startswith("."):
        raise ValueError(f"dataset name {dataset!r} must be a plain folder name")
    queries = _queries(source)
    if not queries:
        raise DataError(f"{source}: no <category>/test/<defect>/rgb/*.png found (expected the MVTec 3D-AD layout)")
    categories = sorted({q.category for q in queries})
    defects = {c: sorted({q.defect for q in queries if q.category == c and q.defect != NORMAL_DEFECT}) for c in categories}
    rng = random.Random(seed)
    result = MVTec3DConversion(out)
    entries: dict[str, Any] = {}
    pools = {c: _templates(source, out, dataset, c, templates, rng, result) for c in categories}
    for query in queries:
        try:
            thumbnail = _thumbnail(query.rgb)
        except DataError as exc:
            result.problems.append(f"{exc}; image left out")
            continue
        base = f"{dataset}/{query.category}"
        key = _link(out, f"{base}/image/{query.defect}/{query.rgb.name}", query.rgb)
        defective = query.defect != NORMAL_DEFECT
        mask_key, regions = _mask(out, f"{base}/ground_truth/{query.defect}/{query.rgb.name}", query, result) if defective else (None, None)
        questions = [{"Question": ANOMALY_QUESTION, "Options": {"A": "Yes", "B": "No"},
                      "Answer": "A" if defective else "B", "type": "Anomaly Detection"}]
        questions += _choice(rng, "Object Classification", "What kind of object is shown in the image?",
                             query.category, categories)
        if defective:
            questions += _choice(rng, "Defect Classification", "What type of defect is on the object?",
                                 query.defect, defects[query.category])
        if regions is not None:
            right, untouched = regions
            questions += _choice(rng, "Defect Localization", "Where in the image is the defect?", right, untouched)
        pool = pools[query.category]
        entries[key] = {
            "conversation": questions,
            "mask_path": mask_key or "",
            "similar_templates": sorted(pool, key=lambda k: float(np.abs(thumbnail - pool[k]).mean())),
            "random_templates": rng.sample(sorted(pool), len(pool)),
        }
        result.images += 1
        result.questions += len(questions)
    (out / MMAD_FILE).write_text(json.dumps(entries, indent=1))
    return result


def _queries(source: Path) -> list[_Query]:
    queries = []
    for category in sorted(p for p in source.iterdir() if (p / "test").is_dir()):
        for defect in sorted(p for p in (category / "test").iterdir() if p.is_dir()):
            for rgb in sorted((defect / "rgb").glob("*.png")):
                gt = defect / "gt" / rgb.name
                queries.append(_Query(category.name, defect.name, rgb, gt if gt.is_file() else None))
    return queries


def _link(out: Path, key: str, target: Path) -> str:
    """A symbolic link at out/key to target (replacing an old one), so no image is copied."""
    path = out / key
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink() or path.exists():
        path.unlink()
    path.symlink_to(target)
    return key


def _templates(source: Path, out: Path, dataset: str, category: str, count: int, rng: random.Random,
               result: MVTec3DConversion) -> dict[str, np.ndarray]:
    """A seeded pick of the category's normal training images: key -> thumbnail."""
    files = sorted((source / category / "train" / NORMAL_DEFECT / "rgb").glob("*.png"))
    pool = {}
    for file in sorted(rng.sample(files, min(count, len(files)))):
        try:
            thumbnail = _thumbnail(file)
        except DataError as exc:
            result.problems.append(f"{exc}; template left out")
            continue
        pool[_link(out, f"{dataset}/{category}/train/{NORMAL_DEFECT}/{file.name}", file)] = thumbnail
    return pool


def _mask(out: Path, key: str, query: _Query, result: MVTec3DConversion) -> tuple[str | None, tuple[str, list[str]] | None]:
    """(mask key, (region, regions the mask does not touch)) or Nones, with the reason recorded."""
    if query.gt is None:
        result.problems.append(f"{query.rgb}: no ground-truth mask; no localization question")
        return None, None
    try:
        mask = np.asarray(load_image(query.gt).convert("L")) > 0
    except DataError as exc:
        result.problems.append(f"{exc}; no localization question")
        return None, None
    if not mask.any():
        result.problems.append(f"{query.gt}: empty mask on a defective image; no localization question")
        return None, None
    height, width = mask.shape
    cells = {REGIONS[row][col]: int(mask[row * height // 3:(row + 1) * height // 3, col * width // 3:(col + 1) * width // 3].sum())
             for row in range(3) for col in range(3)}
    right = max(cells, key=cells.__getitem__)
    untouched = [name for name, pixels in cells.items() if pixels == 0]
    return _link(out, key, query.gt), ((right, untouched) if untouched else None)


def _choice(rng: random.Random, kind: str, text: str, right: str, pool: list[str]) -> list[dict[str, Any]]:
    """One question (right answer plus up to MAX_OPTIONS-1 distractors from pool, shuffled), or
    none when the pool offers no distractor."""
    others = sorted(set(pool) - {right})
    if not others:
        return []
    options = rng.sample(others, min(len(others), MAX_OPTIONS - 1)) + [right]
    rng.shuffle(options)
    texts = [o.replace("_", " ") for o in options]
    return [{"Question": text, "Options": dict(zip(OPTION_LETTERS, texts)),
             "Answer": OPTION_LETTERS[options.index(right)], "type": kind}]


def _thumbnail(path: Path) -> np.ndarray:
    """A small grey copy; templates are ranked per query by mean absolute difference to it."""
    return np.asarray(load_image(path).convert("L").resize((THUMBNAIL, THUMBNAIL), Image.Resampling.BILINEAR), dtype=np.float32)

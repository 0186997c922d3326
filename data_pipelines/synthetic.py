"""A small MMAD-format data set drawn from scratch.

Tests, the tiny CPU recipe and CI need data that goes through the same loader as the real
benchmark, which is licence-bound, gigabytes large and never downloaded here. So this writes the
MMAD layout and `mmad.json` for flat-coloured objects on a striped background, some carrying a
defect whose mask, box and question answers all come from the same drawing, so they agree.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw

from anomalyr1.data_pipelines.errors import DataError
from anomalyr1.data_pipelines.schema import NORMAL_DEFECT, OPTION_LETTERS


@dataclass(frozen=True)
class SynthCategory:
    name: str
    shape: str
    """One of SHAPES."""
    colour: str
    """A key of COLOURS."""


@dataclass(frozen=True)
class SynthDefect:
    name: str
    description: str
    consequence: str
    rgb: tuple[int, int, int]


COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (200, 45, 40),
    "green": (45, 150, 70),
    "blue": (45, 80, 200),
    "yellow": (225, 200, 50),
    "orange": (230, 130, 35),
    "purple": (130, 55, 165),
}
SHAPES = ("circle", "square", "hexagon", "octagon")
CATEGORIES = (
    SynthCategory("bottle", "circle", "green"),
    SynthCategory("metal_nut", "hexagon", "blue"),
    SynthCategory("tile", "square", "orange"),
    SynthCategory("pill", "circle", "yellow"),
    SynthCategory("capsule", "octagon", "red"),
    SynthCategory("pcb", "square", "purple"),
    SynthCategory("cashew", "hexagon", "orange"),
    SynthCategory("candle", "octagon", "yellow"),
)
DEFECTS = (
    SynthDefect("scratch", "A thin, bright straight line scraped into the surface.",
                "Cosmetic damage that lets corrosion start.", (235, 235, 225)),
    SynthDefect("hole", "A small, round, dark pit going into the surface.",
                "A puncture that lets the contents leak.", (20, 18, 18)),
    SynthDefect("crack", "A dark, jagged line running across the surface.",
                "A structural weakness that can make the part break.", (45, 35, 30)),
    SynthDefect("stain", "A brownish, blotchy discoloured patch on the surface.",
                "Contamination that spoils the appearance and cleanliness.", (110, 75, 35)),
)
DEFECT_TYPES_PER_CATEGORY = 3
REGIONS = (
    ("top-left", "top", "top-right"),
    ("left", "center", "right"),
    ("bottom-left", "bottom", "bottom-right"),
)
ANOMALY_QUESTION = "Is there any defect in the object?"


def generate_synthetic_mmad(
    root: str | Path,
    *,
    seed: int = 0,
    datasets: Sequence[str] = ("SynthMVTec", "SynthVisA"),
    categories_per_dataset: int = 2,
    normal_per_category: int = 4,
    defective_per_category: int = 4,
    templates_per_category: int = 4,
    image_size: int = 112,
) -> Path:
    """Writes the data set under root (same seed and arguments, same bytes) and returns root.

    mmad.json is written last, so its presence means the set is complete."""
    _check_arguments(datasets, categories_per_dataset, normal_per_category,
                     defective_per_category, templates_per_category, image_size)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    entries: dict[str, Any] = {}
    knowledge: dict[str, dict[str, dict[str, str]]] = {}
    for d_index, dataset in enumerate(datasets):
        for c_index in range(categories_per_dataset):
            category = CATEGORIES[(d_index * categories_per_dataset + c_index) % len(CATEGORIES)]
            writer = _CategoryWriter(root, dataset, category, image_size,
                                     np.random.default_rng([seed, d_index, c_index]))
            entries.update(writer.write(normal_per_category, defective_per_category,
                                        templates_per_category))
            knowledge.setdefault(dataset, {})[category.name] = writer.domain_knowledge()
    (root / "domain_knowledge.json").write_text(json.dumps(knowledge, indent=1))
    (root / "mmad.json").write_text(json.dumps(entries, indent=1))
    return root


def ensure_synthetic_mmad(root: str | Path, **kwargs: Any) -> Path:
    """Generates the set at root unless root/mmad.json exists.

    It is built in a temporary sibling folder and renamed into place, so concurrent callers
    (Ray workers, parallel test runs) never see a half-written set: the first rename wins and
    the others find its mmad.json and throw their copy away (same seed, same content)."""
    root = Path(root)
    if (root / "mmad.json").is_file():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        generate_synthetic_mmad(staging, **kwargs)
        try:
            os.rename(staging, root)  # atomic; replaces root only if it is an empty folder
        except OSError as exc:
            if not (root / "mmad.json").is_file():
                raise DataError(f"{root}: exists and is not an MMAD set (no mmad.json); "
                                "refusing to write into it") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def _check_arguments(datasets: Sequence[str], categories: int, normal: int, defective: int,
                     templates: int, image_size: int) -> None:
    if isinstance(datasets, str) or not datasets or len(set(datasets)) != len(datasets):
        raise ValueError(f"datasets must be distinct names, got {datasets!r}")
    for name in datasets:
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"dataset name {name!r} must be a plain folder name")
    if not 1 <= categories <= len(CATEGORIES):
        raise ValueError(f"categories_per_dataset must be in 1..{len(CATEGORIES)}, got {categories}")
    if normal < 0 or defective < 0 or templates < 0 or normal + defective == 0:
        raise ValueError("normal/defective/templates_per_category must be >= 0 with at least one "
                         f"query image, got {normal}/{defective}/{templates}")
    if image_size < 32:
        raise ValueError(f"image_size must be >= 32, got {image_size}")


class _CategoryWriter:
    """Draws and writes one category's images, in a fixed order from its own random stream, so
    a category's content does not depend on how many others are generated."""

    def __init__(self, root: Path, dataset: str, category: SynthCategory, size: int,
                 rng: np.random.Generator) -> None:
        self.root, self.dataset, self.category, self.size, self.rng = root, dataset, category, size, rng
        self.base = f"{dataset}/{category.name}"
        first = CATEGORIES.index(category)
        self.defects = [DEFECTS[(first + i) % len(DEFECTS)] for i in range(DEFECT_TYPES_PER_CATEGORY)]

    def write(self, normal: int, defective: int, templates: int) -> dict[str, Any]:
        template_paths, template_pixels = [], []
        for index in range(templates):
            image, _ = self._draw_object()
            template_paths.append(self._save(image, f"{self.base}/train/good/{index:03d}.png"))
            template_pixels.append(np.asarray(image, dtype=np.int16))
        entries: dict[str, Any] = {}
        for index in range(normal):
            image, _ = self._draw_object()
            path = self._save(image, f"{self.base}/image/{NORMAL_DEFECT}/{index:03d}.png")
            entries[path] = self._entry(image, None, None, None, template_paths, template_pixels)
        counters = {defect.name: 0 for defect in self.defects}
        for index in range(defective):
            defect = self.defects[index % len(self.defects)]
            number = counters[defect.name]
            counters[defect.name] += 1
            image, on_object = self._draw_object()
            mask = Image.fromarray(self._draw_defect(image, on_object, defect).astype(np.uint8) * 255)
            path = self._save(image, f"{self.base}/image/{defect.name}/{number:03d}.png")
            mask_path = self._save(
                mask, f"{self.base}/ground_truth/{defect.name}/{number:03d}_mask.png")
            entries[path] = self._entry(image, defect, mask_path, mask.getbbox(),
                                        template_paths, template_pixels)
        return entries

    def domain_knowledge(self) -> dict[str, str]:
        c = self.category
        text = {NORMAL_DEFECT: f"A normal {_display(c.name)} is a flat {c.colour} {c.shape} "
                               "on a striped grey background, with no marks on its surface."}
        text.update({d.name: f"{d.name}: {d.description} {d.consequence}" for d in self.defects})
        return text

    def _save(self, image: Image.Image, rel_path: str) -> str:
        target = self.root / rel_path
        target.parent.mkdir(parents=True, exist_ok=True)
        image.save(target)
        return rel_path

    def _draw_object(self) -> tuple[Image.Image, np.ndarray]:
        """The object on a textured background, and which pixels the object covers."""
        size, rng = self.size, self.rng
        yy, xx = np.mgrid[0:size, 0:size]
        angle, period = rng.uniform(0, np.pi), rng.uniform(6, 14)
        stripes = 10 * np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period)
        grey = rng.uniform(100, 140) + stripes + rng.normal(0, 5, (size, size))
        image = Image.fromarray(np.repeat(np.clip(grey, 0, 255).astype(np.uint8)[..., None], 3, 2))
        cx, cy = size / 2 + rng.uniform(-0.04, 0.04, 2) * size
        radius = size * rng.uniform(0.38, 0.43)
        colour = np.clip(np.array(COLOURS[self.category.colour]) + rng.integers(-12, 13, 3), 0, 255)
        coverage = Image.new("L", (size, size))
        for canvas, fill in ((image, tuple(int(v) for v in colour)), (coverage, 255)):
            draw = ImageDraw.Draw(canvas)
            shape = self.category.shape
            if shape == "circle":
                draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=fill)
            elif shape == "square":
                half = 0.85 * radius
                draw.rectangle((cx - half, cy - half, cx + half, cy + half), fill=fill)
            else:
                draw.regular_polygon((cx, cy, radius), 6 if shape == "hexagon" else 8, fill=fill)
        return image, np.asarray(coverage) > 0

    def _draw_defect(self, image: Image.Image, on_object: np.ndarray,
                     defect: SynthDefect) -> np.ndarray:
        """Paints the defect in place and returns its mask: the changed pixels exactly.

        The region (of a 3x3 grid) is drawn first, so localization answers spread evenly."""
        size, rng = self.size, self.rng
        row, col = rng.integers(0, 3, 2)
        cell = np.zeros_like(on_object)
        cell[row * size // 3:(row + 1) * size // 3, col * size // 3:(col + 1) * size // 3] = True
        candidates = np.argwhere(on_object & cell)
        if len(candidates) == 0:  # the object does not reach that cell
            candidates = np.argwhere(on_object)
        y, x = candidates[rng.integers(len(candidates))] + 0.5
        layer = Image.new("L", (size, size))
        draw = ImageDraw.Draw(layer)
        width = max(2, size // 50)
        if defect.name == "scratch":
            half, angle = size * rng.uniform(0.07, 0.12), rng.uniform(0, np.pi)
            dx, dy = half * np.cos(angle), half * np.sin(angle)
            draw.line((x - dx, y - dy, x + dx, y + dy), fill=255, width=width)
        elif defect.name == "crack":
            points, angle = [(x, y)], rng.uniform(0, 2 * np.pi)
            for _ in range(4):
                angle += rng.uniform(-0.9, 0.9)
                step = size * rng.uniform(0.04, 0.07)
                x_end, y_end = points[-1]
                points.append((x_end + step * np.cos(angle), y_end + step * np.sin(angle)))
            draw.line(points, fill=255, width=width, joint="curve")
        else:
            rx, ry = size * rng.uniform(0.03, 0.06, 2) * (1.5 if defect.name == "stain" else 1.0)
            draw.ellipse((x - rx, y - ry, x + rx, y + ry), fill=255)
        mask = (np.asarray(layer) > 0) & on_object
        pixels = np.array(image)
        pixels[mask] = np.clip(np.array(defect.rgb) + rng.integers(-8, 9, (int(mask.sum()), 3)), 0, 255)
        image.paste(Image.fromarray(pixels))
        return mask

    def _entry(self, image: Image.Image, defect: SynthDefect | None, mask_path: str | None,
               bbox: tuple[int, int, int, int] | None, template_paths: list[str],
               template_pixels: list[np.ndarray]) -> dict[str, Any]:
        pixels = np.asarray(image, dtype=np.int16)
        distance = [float(np.abs(pixels - t).mean()) for t in template_pixels]
        entry: dict[str, Any] = {
            "conversation": self._conversation(defect, bbox),
            "mask_path": mask_path or "",
            "similar_templates": [template_paths[i] for i in np.argsort(distance, kind="stable")],
            "random_templates": [template_paths[i] for i in self.rng.permutation(len(template_paths))],
        }
        if bbox is not None:
            entry["bbox"] = list(bbox)
        return entry

    def _conversation(self, defect: SynthDefect | None,
                      bbox: tuple[int, int, int, int] | None) -> list[dict[str, Any]]:
        c = self.category
        questions = [{"Question": ANOMALY_QUESTION, "Answer": "B" if defect is None else "A",
                      "Options": {"A": "Yes", "B": "No"}, "type": "Anomaly Detection"}]
        if defect is not None and bbox is not None:
            x_mid, y_mid = (bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2
            region = REGIONS[min(2, int(3 * y_mid / self.size))][min(2, int(3 * x_mid / self.size))]
            questions += [
                self._question("Defect Classification", "What type of defect is on the object?",
                               defect.name, [d.name for d in DEFECTS]),
                self._question("Defect Localization", "Where in the image is the defect?",
                               region, [r for line in REGIONS for r in line]),
                self._question("Defect Description", "Which description matches the defect?",
                               defect.description, [d.description for d in DEFECTS]),
                self._question("Defect Analysis", "What is the most likely effect of this defect?",
                               defect.consequence, [d.consequence for d in DEFECTS]),
            ]
        questions += [
            self._question("Object Classification", "What kind of object is shown in the image?",
                           _display(c.name), [_display(k.name) for k in CATEGORIES]),
            self._question("Object Structure", "What is the outline shape of the object?",
                           c.shape, list(SHAPES)),
            self._question("Object Details", "What is the main colour of the object?",
                           c.colour, list(COLOURS)),
        ]
        return questions

    def _question(self, kind: str, text: str, right: str, pool: list[str]) -> dict[str, Any]:
        """2 to 4 options: the right one and distractors from pool, in random order."""
        others = sorted(set(pool) - {right})
        count = int(self.rng.integers(2, min(4, len(others) + 1) + 1))
        chosen = [others[i] for i in self.rng.choice(len(others), count - 1, replace=False)] + [right]
        texts = [chosen[i] for i in self.rng.permutation(count)]
        return {"Question": text, "Answer": OPTION_LETTERS[texts.index(right)],
                "Options": dict(zip(OPTION_LETTERS, texts)), "type": kind}


def _display(name: str) -> str:
    return name.replace("_", " ")

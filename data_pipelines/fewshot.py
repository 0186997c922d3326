"""Few-shot training sets: a few images per class, chosen once and saved, so runs can be
reproduced and compared on exactly the same images.

AnomalyR1 trains on about 600 images, 2 to 5 per class, where a class is a (dataset, category,
defect type) triple with `good` as the normal class. Selection is round-robin over the classes
in a seeded order: every class gets one image before any gets a second, so a total smaller than
classes x per_class still covers as many classes as it can, evenly. Within a class the images
are drawn in a seeded order that depends only on the seed and the class, so adding a data set
does not change which images the other classes get.

A few-shot file names images by their mmad.json keys, so it works with any copy of the same
MMAD root. Its questions are all the questions of those images (`load_fewshot`).
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

from anomalyr1.data_pipelines.errors import DataError
from anomalyr1.data_pipelines.mmad import MMAD_FILE, MMADLoad, load_mmad, read_json
from anomalyr1.data_pipelines.schema import Sample

FORMAT = "anomalyr1-fewshot/1"
PAPER_TOTAL = 600
DEFAULT_PER_CLASS = 3


@dataclass(frozen=True)
class FewShotSettings:
    per_class: int = DEFAULT_PER_CLASS
    """Images per (dataset, category, defect type) at most."""
    total: int | None = PAPER_TOTAL
    """Images in all at most (None: no cap)."""
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.per_class, bool) or not isinstance(self.per_class, int) or self.per_class < 1:
            raise ValueError(f"per_class must be an integer >= 1, got {self.per_class!r}")
        if self.total is not None and (isinstance(self.total, bool) or not isinstance(self.total, int) or self.total < 1):
            raise ValueError(f"total must be an integer >= 1 or None, got {self.total!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")


@dataclass(frozen=True)
class FewShotSet:
    images: tuple[str, ...]
    """mmad.json keys (paths relative to the MMAD root), in selection order."""
    settings: FewShotSettings
    classes: int
    """Classes the images were drawn from (after exclusion)."""
    excluded: int
    """Images left out because they are evaluation images."""

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {"format": FORMAT, "settings": asdict(self.settings), "classes": self.classes,
                  "excluded": self.excluded, "images": list(self.images)}
        path.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        return path


def image_key(sample: Sample) -> str:
    """The sample's mmad.json key: its id is `<key>#<question index>`."""
    return sample.id.rsplit("#", 1)[0]


def select_fewshot(samples: Sequence[Sample], settings: FewShotSettings = FewShotSettings(),
                   exclude: Iterable[str] = ()) -> FewShotSet:
    """Up to settings.per_class images per class, settings.total in all, none in `exclude`."""
    excluded = set(exclude)
    by_class: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for sample in samples:
        key = image_key(sample)
        if key not in excluded:
            by_class[(sample.dataset, sample.category, sample.defect_type)].add(key)
    if not by_class:
        raise DataError("no images to choose from" + (" after excluding the evaluation images" if excluded else ""))
    classes = sorted(by_class)
    queues = []
    for cls in classes:
        keys = sorted(by_class[cls])
        random.Random(f"{settings.seed}:{'/'.join(cls)}").shuffle(keys)
        queues.append(keys[:settings.per_class])
    random.Random(settings.seed).shuffle(queues)
    limit = settings.total if settings.total is not None else sum(len(q) for q in queues)
    chosen: list[str] = []
    for round_ in range(settings.per_class):
        for queue in queues:
            if len(chosen) < limit and round_ < len(queue):
                chosen.append(queue[round_])
    all_keys = {image_key(s) for s in samples}
    return FewShotSet(tuple(chosen), settings, classes=len(classes), excluded=len(excluded & all_keys))


def read_fewshot(path: str | Path) -> FewShotSet:
    raw = read_json(path)
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise DataError(f"{path}: not a few-shot file (expected an object with \"format\": \"{FORMAT}\")")
    images = raw.get("images")
    if not isinstance(images, list) or not images or not all(isinstance(k, str) and k for k in images):
        raise DataError(f"{path}: 'images' must be a non-empty list of mmad.json keys")
    if len(set(images)) != len(images):
        raise DataError(f"{path}: 'images' lists some images twice")
    try:
        settings = FewShotSettings(**raw.get("settings", {}))
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path}: bad 'settings' ({exc})") from None
    counts = {name: raw.get(name, 0) for name in ("classes", "excluded")}
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise DataError(f"{path}: {name!r} must be a count, got {value!r}")
    return FewShotSet(tuple(images), settings, **counts)


def read_image_keys(path: str | Path) -> list[str]:
    """The images named by an evaluation file: a JSON list of mmad.json keys, an answers file
    (records with `image`), a few-shot file, or an mmad.json (its keys)."""
    raw = read_json(path)
    if isinstance(raw, dict):
        return read_fewshot(path).images if raw.get("format") == FORMAT else list(raw)
    if isinstance(raw, list) and all(isinstance(k, str) for k in raw):
        return raw
    if isinstance(raw, list) and all(isinstance(r, dict) and isinstance(r.get("image"), str) for r in raw):
        return [r["image"] for r in raw]
    raise DataError(f"{path}: expected a list of image keys, an answers list (records with 'image'), "
                    "a few-shot file or an mmad.json")


def load_fewshot(path: str | Path, root: str | Path, *, strict: bool = False,
                 datasets: Sequence[str] | None = None, question_types: Sequence[str] | None = None,
                 max_samples: int | None = None) -> MMADLoad:
    """All questions of the few-shot file's images under root, filtered as `load_mmad` filters.

    An image that mmad.json does not have is an error (the file was made for another root);
    a broken one is a recorded problem, as in `load_mmad`."""
    fewshot = read_fewshot(path)
    loaded = load_mmad(root, strict=strict, datasets=datasets, question_types=question_types)
    known = read_json(loaded.root / MMAD_FILE)
    missing = [key for key in fewshot.images if key not in known]
    if missing:
        raise DataError(f"{path}: {len(missing)} of its images are not in {loaded.root / MMAD_FILE} "
                        f"(first: {missing[0]!r}); was it made for another MMAD root?")
    wanted = set(fewshot.images)
    loaded.samples = [s for s in loaded.samples if image_key(s) in wanted][:max_samples]
    loaded.problems = [p for p in loaded.problems if p.key.split("#", 1)[0] in wanted]
    return loaded


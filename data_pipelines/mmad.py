"""MMAD-format data sets (the real benchmark or synthetic.py's) read into Samples.

A broken entry should cost one entry, not a training run: each problem is recorded with its
mmad.json key and skipped, or with strict=True raised at once. Every path in mmad.json must stay
inside the data root, since the file may come from anywhere.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Mapping, Sequence

from anomalyr1.data_pipelines.errors import DataError
from anomalyr1.data_pipelines.images import BBox, image_size, mask_boxes
from anomalyr1.data_pipelines.schema import NORMAL_DEFECT, OPTION_LETTERS, QUESTION_TYPES, Sample

MMAD_FILE = "mmad.json"
DOMAIN_KNOWLEDGE_FILE = "domain_knowledge.json"
FOLDED_TYPES = {"Object Structure": "Object Analysis", "Object Details": "Object Analysis"}
"""MMAD's raw question types that its scorer reports together."""


@dataclass(frozen=True)
class DataProblem:
    key: str
    """The mmad.json key, with `#<question index>` when one question is at fault."""
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


@dataclass
class MMADLoad:
    root: Path
    samples: list[Sample] = field(default_factory=list)
    problems: list[DataProblem] = field(default_factory=list)

    def summary(self) -> str:
        """A few lines for the run log: what was loaded and what was skipped, and why."""
        images = len({s.image for s in self.samples})
        per_dataset = Counter(s.dataset for s in self.samples)
        per_type = Counter(s.question_type for s in self.samples)
        unboxed = sum(1 for s in self.samples if not s.is_normal and s.bbox is None)
        lines = [
            f"{len(self.samples)} questions on {images} images from {self.root}",
            "  datasets: " + ", ".join(f"{k} {v}" for k, v in sorted(per_dataset.items())),
            "  types: " + ", ".join(f"{k} {per_type[k]}" for k in QUESTION_TYPES if per_type[k]),
        ]
        if unboxed:
            lines.append(f"  {unboxed} questions on defective images have no box (no mask found)")
        lines.append(f"  {len(self.problems)} problems, skipped")
        lines += [f"    {p}" for p in self.problems[:5]]
        if len(self.problems) > 5:
            lines.append(f"    ... and {len(self.problems) - 5} more")
        return "\n".join(lines)


class _Skip(Exception):
    """An entry or question that cannot become a Sample."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.problem = DataProblem(key, message)


@dataclass(frozen=True)
class _Image:
    """What one mmad.json entry says about its image, shared by all its questions."""
    path: str
    dataset: str
    category: str
    defect_type: str
    mask_path: str | None
    boxes: tuple[BBox, ...]
    """The entry's bbox, else one box per region of the mask; () when neither is known."""
    similar_templates: tuple[str, ...]
    random_templates: tuple[str, ...]


def load_mmad(
    root: str | Path,
    *,
    strict: bool = False,
    datasets: Sequence[str] | None = None,
    question_types: Sequence[str] | None = None,
    max_samples: int | None = None,
) -> MMADLoad:
    """One Sample per question of root/mmad.json, in file order.

    datasets / question_types keep only those (question types by their folded names);
    max_samples stops reading early, so a tiny run does not check every image of the set."""
    if max_samples is not None and max_samples < 0:
        raise ValueError(f"max_samples must be >= 0, got {max_samples}")
    # abspath, not resolve: MMAD's README suggests symlinking the source data sets into the root.
    root = Path(os.path.abspath(root))
    entries = read_json(root / MMAD_FILE)
    if not isinstance(entries, dict):
        raise DataError(f"{root / MMAD_FILE}: expected an object mapping image paths to entries")
    knowledge_file = root / DOMAIN_KNOWLEDGE_FILE
    knowledge = read_json(knowledge_file) if knowledge_file.is_file() else {}
    _check_filters(entries, datasets, question_types)
    load = MMADLoad(root)

    def report(skip: _Skip) -> None:
        if strict:
            raise DataError(str(skip)) from None
        load.problems.append(skip.problem)

    for key, entry in entries.items():
        if max_samples is not None and len(load.samples) >= max_samples:
            break
        if datasets is None or key.split("/", 1)[0] in datasets:
            load.samples += _entry_samples(root, key, entry, knowledge, question_types, report)
    if max_samples is not None:
        del load.samples[max_samples:]
    return load


def _entry_samples(root: Path, key: str, entry: Any, knowledge: Any,
                   question_types: Sequence[str] | None,
                   report: Callable[[_Skip], None]) -> list[Sample]:
    """The entry's wanted questions as Samples. Questions are checked before the image, so an
    image none of whose questions is wanted is never opened."""
    try:
        conversation = _conversation(key, entry)
    except _Skip as skip:
        report(skip)
        return []
    questions = []
    for index, raw in enumerate(conversation):
        try:
            question = _question(f"{key}#{index}", raw)
        except _Skip as skip:
            report(skip)
            continue
        if question_types is None or question["question_type"] in question_types:
            questions.append((index, question))
    if not questions:
        return []
    try:
        image = _image(root, key, entry)
    except _Skip as skip:
        report(skip)
        return []
    text = _domain_knowledge(knowledge, image.dataset, image.category)
    return [
        Sample(id=f"{key}#{index}", image=image.path, dataset=image.dataset,
               category=image.category, defect_type=image.defect_type,
               reference_images=image.similar_templates, bbox=_union(image.boxes),
               mask_path=image.mask_path, **question,
               extra={"random_templates": list(image.random_templates),
                      **({} if text is None else {"domain_knowledge": text}),
                      # several defect regions: the bbox_iou reward matches a box to each
                      **({"bboxes": [list(b) for b in image.boxes]} if len(image.boxes) > 1 else {})})
        for index, question in questions
    ]


def read_json(path: str | Path) -> Any:
    """A JSON file's content; a missing or unparsable file is a DataError naming it."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from exc


def _check_filters(entries: Mapping[str, Any], datasets: Sequence[str] | None,
                   question_types: Sequence[str] | None) -> None:
    """A misspelt filter would otherwise load nothing, silently."""
    for name, value in (("datasets", datasets), ("question_types", question_types)):
        if isinstance(value, str):
            raise ValueError(f"{name} must be a list of names, not the string {value!r}")
    if question_types is not None:
        unknown = sorted(set(question_types) - set(QUESTION_TYPES))
        if unknown:
            raise ValueError(f"question_types {unknown} unknown; "
                             f"expected some of {list(QUESTION_TYPES)}")
    if datasets is not None:
        present = {key.split("/", 1)[0] for key in entries}
        missing = sorted(set(datasets) - present)
        if missing:
            raise DataError(f"datasets {missing} not in mmad.json; it has {sorted(present)}")


def _inside(root: Path, rel: str, base: str = "") -> Path:
    """root/base/rel, refused when it leaves root. The check is on the normalised path, not
    the resolved one, so symlinked data folders stay usable."""
    if os.path.isabs(rel) or PurePosixPath(rel).is_absolute():
        raise ValueError(f"path {rel!r} is absolute; mmad.json paths must be relative "
                         "to the data root")
    path = Path(os.path.normpath(root / base / rel))
    if path != root and root not in path.parents:
        raise ValueError(f"path {rel!r} escapes the data root {root}")
    return path


def _conversation(key: str, entry: Any) -> list[Any]:
    if not isinstance(entry, dict):
        raise _Skip(key, f"malformed entry: expected an object, got {type(entry).__name__}")
    conversation = entry.get("conversation")
    if not isinstance(conversation, list) or not conversation:
        raise _Skip(key, "malformed entry: 'conversation' must be a non-empty list")
    return conversation


def _question(key: str, raw: Any) -> dict[str, Any]:
    """The question's Sample fields (question, options, answer, question_type)."""
    if not isinstance(raw, dict):
        raise _Skip(key, f"malformed question: expected an object, got {type(raw).__name__}")
    text, answer, options, kind = (raw.get(k) for k in ("Question", "Answer", "Options", "type"))
    if not isinstance(text, str) or not isinstance(answer, str) or not isinstance(kind, str):
        raise _Skip(key, "malformed question: 'Question', 'Answer' and 'type' must be strings")
    if not isinstance(options, dict) or not all(isinstance(v, str) for v in options.values()):
        raise _Skip(key, "malformed question: 'Options' must map letters to strings")
    letters = "".join(options)
    if len(options) < 2 or letters != OPTION_LETTERS[:len(options)]:
        raise _Skip(key, "malformed question: options must be lettered A, B, ... "
                         f"(got {list(options)})")
    if answer not in options:
        raise _Skip(key, f"answer {answer!r} is not among the options {list(options)}")
    question_type = FOLDED_TYPES.get(kind, kind)
    if question_type not in QUESTION_TYPES:
        raise _Skip(key, f"unknown question type {kind!r}")
    return {"question": text, "options": dict(options), "answer": answer,
            "question_type": question_type}


def _image(root: Path, key: str, entry: dict[str, Any]) -> _Image:
    parts = PurePosixPath(key).parts
    if len(parts) < 3:
        raise _Skip(key, "malformed key: expected <dataset>/<category>/.../<image file>")
    try:
        path = _inside(root, key)
        similar = tuple(str(_inside(root, p)) for p in _paths(entry, "similar_templates"))
        randoms = tuple(str(_inside(root, p)) for p in _paths(entry, "random_templates"))
        mask = _mask(root, parts, entry.get("mask_path"))
        size = image_size(path)
        boxes = _boxes(entry.get("bbox"), mask, size)
    except ValueError as exc:  # DataError included
        raise _Skip(key, str(exc)) from exc
    # MMAD marks a normal image by `good` anywhere in its path (its scorer does the same).
    defect_type = NORMAL_DEFECT if NORMAL_DEFECT in parts[:-1] else parts[-2]
    return _Image(str(path), parts[0], parts[1], defect_type,
                  None if mask is None else str(mask), boxes, similar, randoms)


def _paths(entry: dict[str, Any], name: str) -> list[str]:
    value = entry.get(name, [])
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise ValueError(f"malformed entry: {name!r} must be a list of paths")
    return value


def _mask(root: Path, parts: tuple[str, ...], mask_path: Any) -> Path | None:
    """The mask file, or None when there is none on disk (a box is then unknown, not an error).

    The synthetic set writes mask paths relative to the root; MMAD's own metadata script joins
    them onto the query path's leading folders instead, so those are tried as well."""
    if mask_path in (None, ""):
        return None
    if not isinstance(mask_path, str):
        raise ValueError("malformed entry: 'mask_path' must be a string")
    candidates, refusals = [], []
    for base in ("", "/".join(parts[:3]), "/".join(parts[:2])):
        try:
            candidates.append(_inside(root, mask_path, base))
        except ValueError as exc:
            refusals.append(exc)
    if not candidates:
        raise refusals[0]
    return next((c for c in candidates if c.is_file()), None)


def _boxes(raw: Any, mask: Path | None, size: tuple[int, int]) -> tuple[BBox, ...]:
    if raw is None:
        return () if mask is None else tuple(mask_boxes(mask, size))
    if (not isinstance(raw, list) or len(raw) != 4
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in raw)
            or not (raw[0] < raw[2] and raw[1] < raw[3])):
        raise ValueError("malformed entry: 'bbox' must be [x1, y1, x2, y2] with x1<x2, y1<y2, "
                         f"got {raw!r}")
    return ((float(raw[0]), float(raw[1]), float(raw[2]), float(raw[3])),)


def _union(boxes: tuple[BBox, ...]) -> BBox | None:
    """The box around all of them (Sample.bbox), None for none."""
    if not boxes:
        return None
    x1s, y1s, x2s, y2s = zip(*boxes)
    return (min(x1s), min(y1s), max(x2s), max(y2s))


def _domain_knowledge(knowledge: Any, dataset: str, category: str) -> str | None:
    """MMAD's domain_knowledge.json is keyed `MVTec` for the DS-MVTec images; its evaluation
    scripts join the category's texts with newlines, and so does this."""
    if not isinstance(knowledge, dict):
        return None
    per_dataset = knowledge.get(dataset, knowledge.get(dataset.removeprefix("DS-")))
    texts = per_dataset.get(category) if isinstance(per_dataset, dict) else None
    if isinstance(texts, dict):
        return "\n".join(str(t) for t in texts.values())
    return texts if isinstance(texts, str) else None

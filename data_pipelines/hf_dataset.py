"""Samples as a Hugging Face dataset with the image files inside it, and back.

A data root on one machine's disk is not visible to the other nodes of a cluster; one dataset
folder (Arrow files, `datasets.load_from_disk`) on shared storage is, and it carries its
images, so every node reads the same bytes. It holds two tables: `questions` (one row per
Sample, file fields naming files by key) and `files` (one row per distinct file, embedded as
`datasets.Image`): MMAD's images carry about five questions and share template images, so
storing a file once per row would multiply the size several times.

Keys are the files' paths relative to the deepest folder holding them all, so MMAD's layout
(and with it `good` in a normal image's path) survives the trip.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any, Iterator, Sequence

from anomalyr1.data_pipelines.errors import DataError
from anomalyr1.data_pipelines.schema import Sample

QUESTIONS, FILES = "questions", "files"
MARKER = "anomalyr1_dataset.json"
"""Written last: the build's fingerprint, so an unchanged build is reused."""


def _file_paths(sample: Sample) -> list[str]:
    """Every file a Sample names. MMAD's random_templates sit in `extra`; they are files too."""
    paths = [sample.image, *sample.reference_images, *sample.extra.get("random_templates", [])]
    return paths + ([sample.mask_path] if sample.mask_path else [])


def build_hf_dataset(samples: Sequence[Sample], out: str | Path) -> Path:
    """Writes the dataset folder at out and returns it; reused as is when the samples and
    their files (size, mtime) are unchanged. Built beside out and renamed into place, so a
    reader never sees half a dataset."""
    if not samples:
        raise ValueError("no samples to write")
    out = Path(out)
    paths = sorted({os.path.abspath(p) for s in samples for p in _file_paths(s)})
    fingerprint = _fingerprint(samples, paths)
    marker = out / MARKER
    if marker.is_file() and json.loads(marker.read_text()).get("fingerprint") == fingerprint:
        return out
    from datasets import Dataset, DatasetDict, Features, Image, Sequence as HFSequence, Value

    base = os.path.commonpath([os.path.dirname(p) for p in paths])
    keys = {p: PurePosixPath(Path(os.path.relpath(p, base))).as_posix() for p in paths}
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        def files() -> Iterator[dict[str, Any]]:
            for path in paths:
                yield {"key": keys[path], "file": {"bytes": _read_bytes(path), "path": keys[path]}}

        string = Value("string")
        tables = DatasetDict({
            QUESTIONS: Dataset.from_list([_row(s, keys) for s in samples], features=Features({
                "id": string, "image": string, "reference_images": HFSequence(string), "question": string,
                "options": string, "answer": string, "question_type": string, "dataset": string,
                "category": string, "defect_type": string, "bbox": HFSequence(Value("float64")),
                "mask": string, "reasoning": string, "extra": string})),
            FILES: Dataset.from_generator(files, features=Features({"key": string, "file": Image()}),
                                          cache_dir=str(staging / "cache")),
        })
        tables.save_to_disk(str(staging / "data"))
        (staging / "data" / MARKER).write_text(json.dumps({"fingerprint": fingerprint, "samples": len(samples), "files": len(paths)}))
        if out.exists():
            shutil.rmtree(out)
        os.rename(staging / "data", out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def load_hf_dataset(path: str | Path, cache_dir: str | Path) -> list[Sample]:
    """The Samples of a dataset folder, their files written under cache_dir (kept when already
    there with the same bytes, so nodes that share a cache folder write each file once)."""
    from datasets import DatasetDict, Image, load_from_disk

    if not (Path(path) / MARKER).is_file():
        raise DataError(f"{path}: not a dataset written by build_hf_dataset (no {MARKER})")
    tables = load_from_disk(str(path))
    if not isinstance(tables, DatasetDict) or set(tables) != {QUESTIONS, FILES}:
        raise DataError(f"{path}: expected the tables {QUESTIONS!r} and {FILES!r}")
    cache = Path(os.path.abspath(cache_dir))
    local: dict[str, str] = {}
    for row in tables[FILES].cast_column("file", Image(decode=False)):
        local[row["key"]] = _materialise(cache, row["key"], row["file"]["bytes"], path)
    try:
        return [_sample(row, local) for row in tables[QUESTIONS]]
    except KeyError as exc:
        raise DataError(f"{path}: a question names the file {exc.args[0]!r}, which the files table lacks") from None


def _row(sample: Sample, keys: dict[str, str]) -> dict[str, Any]:
    def key(path: str) -> str:
        return keys[os.path.abspath(path)]

    extra = dict(sample.extra)
    if "random_templates" in extra:
        extra["random_templates"] = [key(p) for p in extra["random_templates"]]
    try:
        extra_json = json.dumps(extra)
    except TypeError as exc:
        raise ValueError(f"{sample.id}: extra is not JSON-serialisable ({exc})") from None
    return {
        "id": sample.id, "image": key(sample.image), "reference_images": [key(p) for p in sample.reference_images],
        "question": sample.question, "options": json.dumps(sample.options), "answer": sample.answer,
        "question_type": sample.question_type, "dataset": sample.dataset, "category": sample.category,
        "defect_type": sample.defect_type, "bbox": None if sample.bbox is None else list(sample.bbox),
        "mask": None if sample.mask_path is None else key(sample.mask_path),
        "reasoning": sample.reasoning, "extra": extra_json,
    }


def _sample(row: dict[str, Any], local: dict[str, str]) -> Sample:
    extra = json.loads(row["extra"])
    if "random_templates" in extra:
        extra["random_templates"] = [local[k] for k in extra["random_templates"]]
    return Sample(
        id=row["id"], image=local[row["image"]], question=row["question"], options=json.loads(row["options"]),
        answer=row["answer"], question_type=row["question_type"], dataset=row["dataset"],
        category=row["category"], defect_type=row["defect_type"],
        reference_images=tuple(local[k] for k in row["reference_images"]),
        bbox=None if row["bbox"] is None else tuple(row["bbox"]),
        mask_path=None if row["mask"] is None else local[row["mask"]], reasoning=row["reasoning"], extra=extra,
    )


def _materialise(cache: Path, key: str, data: bytes, source: str | Path) -> str:
    parts = PurePosixPath(key).parts
    if not parts or PurePosixPath(key).is_absolute() or ".." in parts:
        raise DataError(f"{source}: file key {key!r} would leave the cache folder")
    target = cache.joinpath(*parts)
    if not (target.is_file() and target.read_bytes() == data):
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        partial.write_bytes(data)
        os.replace(partial, target)
    return str(target)


def _read_bytes(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read the file ({exc.strerror or exc})") from exc


def _fingerprint(samples: Sequence[Sample], paths: list[str]) -> str:
    digest = hashlib.sha256()
    for sample in samples:
        digest.update(json.dumps(sample.to_dict(), sort_keys=True, default=str).encode())
    for path in paths:
        try:
            stat = os.stat(path)
        except OSError as exc:
            raise DataError(f"{path}: cannot read the file ({exc.strerror or exc})") from exc
        digest.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()

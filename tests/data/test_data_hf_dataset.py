"""Samples -> Hugging Face dataset folder -> Samples, with the images inside: the round trip
keeps every field and byte, works after the source files are gone, and is cached."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from anomalyr1.data_pipelines.errors import DataError
from anomalyr1.data_pipelines.hf_dataset import MARKER, build_hf_dataset, load_hf_dataset
from anomalyr1.data_pipelines.mmad import load_mmad
from anomalyr1.data_pipelines.synthetic import generate_synthetic_mmad


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return generate_synthetic_mmad(tmp_path / "mmad", datasets=("D", "E"), categories_per_dataset=1,
                                   normal_per_category=2, defective_per_category=2, templates_per_category=2)


def _relocated(sample, old: Path, new: Path):
    """The sample with every file path moved from the old root to the new one."""
    move = lambda p: str(new / Path(p).relative_to(old))  # noqa: E731
    extra = {**sample.extra, "random_templates": [move(p) for p in sample.extra["random_templates"]]}
    return replace(sample, image=move(sample.image), reference_images=tuple(map(move, sample.reference_images)),
                   mask_path=sample.mask_path and move(sample.mask_path), extra=extra)


def test_round_trip_without_the_source_files(root: Path, tmp_path: Path) -> None:
    samples = load_mmad(root).samples
    assert any(s.bbox for s in samples) and any(s.bbox is None for s in samples)
    originals = {p: p.read_bytes() for p in root.rglob("*.png")}
    out = build_hf_dataset(samples, tmp_path / "hf")
    shutil.rmtree(root)  # what a node without the source sees
    cache = tmp_path / "cache"
    back = load_hf_dataset(out, cache)
    assert back == [_relocated(s, root, cache) for s in samples]
    for sample in back:
        for path in (sample.image, *sample.reference_images, *([sample.mask_path] if sample.mask_path else [])):
            assert Path(path).read_bytes() == originals[root / Path(path).relative_to(cache)]
    stamp = Path(back[0].image).stat().st_mtime_ns
    assert load_hf_dataset(out, cache) == back
    assert Path(back[0].image).stat().st_mtime_ns == stamp  # a second reader reuses the written files


def test_unchanged_samples_reuse_the_build(root: Path, tmp_path: Path) -> None:
    samples = load_mmad(root).samples
    out = build_hf_dataset(samples, tmp_path / "hf")
    stamp = (out / MARKER).stat().st_mtime_ns
    assert build_hf_dataset(samples, out) == out and (out / MARKER).stat().st_mtime_ns == stamp
    build_hf_dataset(samples[:3], out)
    assert (out / MARKER).stat().st_mtime_ns != stamp
    assert len(load_hf_dataset(out, tmp_path / "cache")) == 3


def test_missing_file_and_foreign_folder(root: Path, tmp_path: Path) -> None:
    samples = load_mmad(root).samples
    Path(samples[0].reference_images[0]).unlink()
    with pytest.raises(DataError, match=r"train/good/\d+\.png: cannot read the file"):
        build_hf_dataset(samples, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()
    with pytest.raises(DataError, match="not a dataset written by build_hf_dataset"):
        load_hf_dataset(root, tmp_path / "cache")
    with pytest.raises(ValueError, match="no samples"):
        build_hf_dataset([], tmp_path / "hf")

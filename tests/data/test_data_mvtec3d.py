"""MVTec 3D-AD -> MMAD format, on a tiny generated copy of its layout (broken parts included):
the loader reads the result, and every answer agrees with the folders and masks it came from."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anomalyr1.data_pipelines.errors import DataError
from anomalyr1.data_pipelines.mmad import load_mmad
from anomalyr1.data_pipelines.mvtec3d import DATASET, convert_mvtec3d

SIZE = 60


def _png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8)).save(path)


def _rgb(level: int) -> np.ndarray:
    return np.full((SIZE, SIZE, 3), level)


def _mask(rows: slice, cols: slice) -> np.ndarray:
    mask = np.zeros((SIZE, SIZE))
    mask[rows, cols] = 255
    return mask


def _write_sample(root: Path, category: str, defect: str, number: int, level: int, mask: np.ndarray | None) -> None:
    base = root / category / "test" / defect
    _png(base / "rgb" / f"{number:03d}.png", _rgb(level))
    if mask is not None:
        _png(base / "gt" / f"{number:03d}.png", mask)
    (base / "xyz").mkdir(exist_ok=True)
    (base / "xyz" / f"{number:03d}.tiff").write_bytes(b"point cloud, ignored")


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """Two categories: bagel with two defect types, rope with one."""
    root = tmp_path / "mvtec3d"
    for category in ("bagel", "rope"):
        for number, level in enumerate((40, 120, 200)):
            _png(root / category / "train" / "good" / "rgb" / f"{number:03d}.png", _rgb(level))
        _png(root / category / "validation" / "good" / "rgb" / "000.png", _rgb(0))
        _write_sample(root, category, "good", 0, 125, np.zeros((SIZE, SIZE)))
    _write_sample(root, "bagel", "crack", 0, 45, _mask(slice(2, 12), slice(3, 15)))  # top-left cell only
    _write_sample(root, "bagel", "hole", 0, 195, _mask(slice(10, 50), slice(25, 35)))  # mostly center, touches top/bottom
    _write_sample(root, "rope", "cut", 0, 100, _mask(slice(45, 58), slice(45, 58)))  # bottom-right
    return root


def _questions(entries: dict, key: str) -> dict[str, dict]:
    return {q["type"]: q for q in entries[key]["conversation"]}


def _answer_text(question: dict) -> str:
    return question["Options"][question["Answer"]]


def test_converted_set_loads_and_agrees_with_its_sources(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "mmad"
    result = convert_mvtec3d(source, out, templates=2)
    assert (result.images, result.problems) == (5, [])
    entries = json.loads((out / "mmad.json").read_text())
    crack = f"{DATASET}/bagel/image/crack/000.png"
    assert (out / crack).resolve() == (source / "bagel/test/crack/rgb/000.png").resolve()

    good = _questions(entries, f"{DATASET}/bagel/image/good/000.png")
    assert set(good) == {"Anomaly Detection", "Object Classification"}
    assert _answer_text(good["Anomaly Detection"]) == "No" and _answer_text(good["Object Classification"]) == "bagel"

    q = _questions(entries, crack)
    assert _answer_text(q["Anomaly Detection"]) == "Yes"
    assert _answer_text(q["Defect Classification"]) == "crack" and set(q["Defect Classification"]["Options"].values()) == {"crack", "hole"}
    assert _answer_text(q["Defect Localization"]) == "top-left"

    hole = _questions(entries, f"{DATASET}/bagel/image/hole/000.png")["Defect Localization"]
    assert _answer_text(hole) == "center"
    assert not {"top", "bottom"} & set(hole["Options"].values())  # touched cells are never distractors
    assert 2 <= len(hole["Options"]) <= 4

    rope = _questions(entries, f"{DATASET}/rope/image/cut/000.png")
    assert "Defect Classification" not in rope  # one defect type: nothing to choose between
    assert _answer_text(rope["Defect Localization"]) == "bottom-right"

    # templates: the seeded two of three, the closest in brightness first
    templates = entries[crack]["similar_templates"]
    assert len(templates) == 2 and all(t.startswith(f"{DATASET}/bagel/train/good/") for t in templates)
    levels = {f"{DATASET}/bagel/train/good/{n:03d}.png": level for n, level in enumerate((40, 120, 200))}
    assert [abs(levels[t] - 45) for t in templates] == sorted(abs(levels[t] - 45) for t in templates)
    assert sorted(entries[crack]["random_templates"]) == sorted(templates)

    loaded = load_mmad(out, strict=True)
    assert len({s.image for s in loaded.samples}) == 5 and len(loaded.samples) == result.questions
    by_key = {s.id: s for s in loaded.samples}
    crack_sample = next(s for s in loaded.samples if s.id.startswith(crack))
    assert (crack_sample.dataset, crack_sample.category, crack_sample.defect_type) == (DATASET, "bagel", "crack")
    assert crack_sample.bbox == (3.0, 2.0, 15.0, 12.0)
    assert all(s.is_normal == ("/good/" in s.id) for s in by_key.values())


def test_same_seed_same_set(source: Path, tmp_path: Path) -> None:
    convert_mvtec3d(source, tmp_path / "a", seed=5)
    convert_mvtec3d(source, tmp_path / "b", seed=5)
    convert_mvtec3d(source, tmp_path / "c", seed=6)
    read = lambda name: (tmp_path / name / "mmad.json").read_text()  # noqa: E731
    assert read("a") == read("b") != read("c")


def test_broken_sources_are_reported_and_skipped(source: Path, tmp_path: Path) -> None:
    (source / "bagel/test/crack/gt/000.png").unlink()
    (source / "bagel/test/hole/gt/000.png").write_bytes(b"not a png")
    (source / "rope/test/good/rgb/000.png").write_bytes(b"not a png")
    _png(source / "rope/test/cut/gt/000.png", np.zeros((SIZE, SIZE)))
    result = convert_mvtec3d(source, tmp_path / "mmad")
    assert result.images == 4
    problems = "\n".join(result.problems)
    assert "crack/rgb/000.png: no ground-truth mask" in problems
    assert "hole/gt/000.png: not a readable image" in problems
    assert "rope/test/good/rgb/000.png: not a readable image" in problems and "image left out" in problems
    assert "cut/gt/000.png: empty mask on a defective image" in problems
    entries = json.loads((tmp_path / "mmad" / "mmad.json").read_text())
    assert all("Defect Localization" not in _questions(entries, k) for k in entries)
    assert load_mmad(tmp_path / "mmad").problems == []


def test_bad_roots(source: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such folder"):
        convert_mvtec3d(tmp_path / "missing", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no <category>/test/<defect>/rgb/\*\.png found"):
        convert_mvtec3d(tmp_path / "empty", tmp_path / "out")
    with pytest.raises(DataError, match="must lie outside the source"):
        convert_mvtec3d(source, source / "mmad")

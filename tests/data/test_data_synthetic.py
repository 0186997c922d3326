"""The synthetic MMAD set: layout, mmad.json shape, answers that match the pictures, determinism."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from anomalyr1.data_pipelines import synthetic
from anomalyr1.data_pipelines.errors import DataError
from anomalyr1.data_pipelines.synthetic import (
    CATEGORIES,
    COLOURS,
    DEFECTS,
    ensure_synthetic_mmad,
    generate_synthetic_mmad,
)

RAW_TYPES = {"Anomaly Detection", "Defect Classification", "Defect Localization",
             "Defect Description", "Defect Analysis", "Object Classification",
             "Object Structure", "Object Details"}
OBJECT_TYPES = {"Anomaly Detection", "Object Classification", "Object Structure", "Object Details"}
KEY = re.compile(r"(?P<ds>[^/]+)/(?P<cat>[^/]+)/image/(?P<defect>[^/]+)/(?P<num>\d{3})\.png")


def answer_text(question: dict[str, Any]) -> str:
    return question["Options"][question["Answer"]]


def by_type(entry: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {q["type"]: q for q in entry["conversation"]}


def pixels(root: Path, rel: str) -> np.ndarray:
    return np.asarray(Image.open(root / rel).convert("RGB"), dtype=int)


def test_layout_and_counts(synth_root: Path, synth_entries: dict[str, Any]) -> None:
    assert len(synth_entries) == 2 * 2 * (4 + 4)
    for key, entry in synth_entries.items():
        match = KEY.fullmatch(key)
        assert match, key
        assert (synth_root / key).is_file()
        templates = entry["similar_templates"]
        assert len(templates) == 4 and sorted(templates) == sorted(entry["random_templates"])
        for template in templates:
            assert template.startswith(f"{match['ds']}/{match['cat']}/train/good/")
            assert (synth_root / template).is_file()
        if match["defect"] == "good":
            assert entry["mask_path"] == "" and "bbox" not in entry
        else:
            assert entry["mask_path"] == (f"{match['ds']}/{match['cat']}/ground_truth/"
                                          f"{match['defect']}/{match['num']}_mask.png")
            assert (synth_root / entry["mask_path"]).is_file()
    assert {k.split("/")[0] for k in synth_entries} == {"SynthMVTec", "SynthVisA"}
    assert (synth_root / "domain_knowledge.json").is_file()


def test_questions_are_well_formed(synth_entries: dict[str, Any]) -> None:
    for key, entry in synth_entries.items():
        for question in entry["conversation"]:
            assert set(question) == {"Question", "Answer", "Options", "type"}
            letters = "".join(question["Options"])
            assert letters in ("AB", "ABC", "ABCD"), key
            assert question["Answer"] in question["Options"]
            assert len(set(question["Options"].values())) == len(letters)


def test_every_type_present_and_normal_images_only_get_object_questions(
        synth_entries: dict[str, Any]) -> None:
    seen = set()
    for key, entry in synth_entries.items():
        types = [q["type"] for q in entry["conversation"]]
        assert len(types) == len(set(types))
        seen.update(types)
        expected = OBJECT_TYPES if "/good/" in key else RAW_TYPES
        assert set(types) == expected, key
    assert seen == RAW_TYPES


def test_answer_letters_vary(synth_entries: dict[str, Any]) -> None:
    """A set whose right answer always sits at one letter would teach position, not content."""
    letters = {q["Answer"] for e in synth_entries.values() for q in e["conversation"]
               if q["type"] != "Anomaly Detection"}
    assert len(letters) >= 3


def test_answers_match_the_ground_truth(synth_root: Path, synth_entries: dict[str, Any]) -> None:
    names = {c.name: c for c in CATEGORIES}
    defects = {d.name: d for d in DEFECTS}
    regions = [["top-left", "top", "top-right"], ["left", "center", "right"],
               ["bottom-left", "bottom", "bottom-right"]]
    for key, entry in synth_entries.items():
        match = KEY.fullmatch(key)
        questions = by_type(entry)
        category = names[match["cat"]]
        normal = match["defect"] == "good"
        assert answer_text(questions["Anomaly Detection"]) == ("No" if normal else "Yes")
        assert answer_text(questions["Object Classification"]) == category.name.replace("_", " ")
        assert answer_text(questions["Object Structure"]) == category.shape
        assert answer_text(questions["Object Details"]) == category.colour
        image = pixels(synth_root, key)
        if normal:
            # The object's colour is, of the named ones, the one nearest to the image centre.
            centre = image[image.shape[0] // 2, image.shape[1] // 2]
            nearest = min(COLOURS, key=lambda c: np.abs(np.array(COLOURS[c]) - centre).sum())
            assert nearest == category.colour, key
            continue
        defect = defects[match["defect"]]
        assert answer_text(questions["Defect Classification"]) == defect.name
        assert answer_text(questions["Defect Description"]) == defect.description
        assert answer_text(questions["Defect Analysis"]) == defect.consequence
        mask = np.asarray(Image.open(synth_root / entry["mask_path"])) > 0
        ys, xs = np.nonzero(mask)
        assert entry["bbox"] == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        x_mid, y_mid = (xs.min() + xs.max() + 1) / 2, (ys.min() + ys.max() + 1) / 2
        size = mask.shape[0]
        expected_region = regions[min(2, int(3 * y_mid / size))][min(2, int(3 * x_mid / size))]
        assert answer_text(questions["Defect Localization"]) == expected_region
        # The masked pixels carry the defect's colour, not the object's.
        painted = image[mask].mean(axis=0)
        assert np.abs(painted - defect.rgb).max() < 20, key
        assert np.abs(painted - COLOURS[category.colour]).sum() > 60, key


def test_localization_answers_spread_over_regions(tmp_path: Path) -> None:
    root = generate_synthetic_mmad(tmp_path, datasets=("D",), categories_per_dataset=3,
                                   normal_per_category=0, defective_per_category=9,
                                   templates_per_category=0)
    entries = json.loads((root / "mmad.json").read_text())
    regions = {answer_text(by_type(e)["Defect Localization"]) for e in entries.values()
               if e["mask_path"]}
    assert len(regions) >= 6


def test_similar_templates_are_sorted_by_pixel_distance(synth_root: Path,
                                                        synth_entries: dict[str, Any]) -> None:
    key, entry = next(iter(synth_entries.items()))
    query = pixels(synth_root, key)
    distances = [np.abs(query - pixels(synth_root, t)).mean() for t in entry["similar_templates"]]
    assert distances == sorted(distances)


def test_same_seed_same_bytes_other_seed_other_content(tmp_path: Path, synth_root: Path) -> None:
    again = generate_synthetic_mmad(tmp_path / "again")
    files = sorted(p.relative_to(synth_root) for p in synth_root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for rel in files:
        assert (synth_root / rel).read_bytes() == (again / rel).read_bytes(), rel
    other = generate_synthetic_mmad(tmp_path / "other", seed=1)
    assert (other / "mmad.json").read_bytes() != (synth_root / "mmad.json").read_bytes()
    key = "SynthMVTec/bottle/image/good/000.png"
    assert (other / key).read_bytes() != (synth_root / key).read_bytes()


def test_default_size_is_fast(tmp_path: Path) -> None:
    start = time.perf_counter()
    generate_synthetic_mmad(tmp_path)
    assert time.perf_counter() - start < 2.0


@pytest.mark.parametrize("kwargs", [
    {"datasets": ()},
    {"datasets": ("A", "A")},
    {"datasets": "SynthMVTec"},
    {"datasets": ("a/b",)},
    {"categories_per_dataset": 0},
    {"categories_per_dataset": len(CATEGORIES) + 1},
    {"normal_per_category": 0, "defective_per_category": 0},
    {"templates_per_category": -1},
    {"image_size": 16},
])
def test_bad_arguments_are_refused(tmp_path: Path, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        generate_synthetic_mmad(tmp_path, **kwargs)


def test_ensure_generates_once(tmp_path: Path) -> None:
    root = tmp_path / "sets" / "synth"
    assert ensure_synthetic_mmad(root, categories_per_dataset=1) == root
    marker = root / "mmad.json"
    before = marker.stat().st_mtime_ns
    marker.touch()  # a second call must not regenerate, whatever the arguments
    touched = marker.stat().st_mtime_ns
    ensure_synthetic_mmad(root, seed=5)
    assert marker.stat().st_mtime_ns == touched >= before
    assert [p.name for p in root.parent.iterdir()] == ["synth"]  # no staging folder left


def test_ensure_fills_an_empty_folder(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    ensure_synthetic_mmad(root, categories_per_dataset=1)
    assert (root / "mmad.json").is_file()


def test_ensure_losing_a_race_keeps_the_winner(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process finishes root while this one is still generating its staging copy."""
    root = tmp_path / "synth"
    real = synthetic.generate_synthetic_mmad

    def racing(staging: Path, **kwargs: Any) -> Path:
        real(root, **kwargs)
        return real(staging, **kwargs)

    monkeypatch.setattr(synthetic, "generate_synthetic_mmad", racing)
    assert ensure_synthetic_mmad(root, categories_per_dataset=1) == root
    assert (root / "mmad.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["synth"]


def test_ensure_refuses_a_foreign_folder(tmp_path: Path) -> None:
    root = tmp_path / "synth"
    root.mkdir()
    (root / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="no mmad.json"):
        ensure_synthetic_mmad(root, categories_per_dataset=1)
    assert [p.name for p in tmp_path.iterdir()] == ["synth"]
    assert (root / "notes.txt").read_text() == "mine"

"""Loading MMAD-format sets: what a good set turns into, and how each kind of breakage is
reported (skipped and counted, or raised with strict=True), always naming the key at fault."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest
from PIL import Image

from anomalyr1.data_pipelines.errors import DataError
from anomalyr1.data_pipelines.mmad import MMADLoad, load_mmad
from anomalyr1.data_pipelines.schema import QUESTION_TYPES
from anomalyr1.rewards import load_reward

Edit = Callable[[Path, Callable[[dict[str, Any]], None]], None]


@pytest.fixture(scope="module")
def loaded(synth_root: Path) -> MMADLoad:
    return load_mmad(synth_root)


def test_one_sample_per_question(loaded: MMADLoad, synth_entries: dict[str, Any]) -> None:
    assert loaded.problems == []
    assert len(loaded.samples) == sum(len(e["conversation"]) for e in synth_entries.values())
    ids = [s.id for s in loaded.samples]
    assert len(set(ids)) == len(ids)
    expected = [f"{k}#{i}" for k, e in synth_entries.items() for i in range(len(e["conversation"]))]
    assert ids == expected


def test_sample_fields_come_from_the_entry(loaded: MMADLoad, synth_root: Path,
                                           synth_entries: dict[str, Any]) -> None:
    for sample in loaded.samples:
        key, index = sample.id.rsplit("#", 1)
        entry, raw = synth_entries[key], synth_entries[key]["conversation"][int(index)]
        dataset, category, _, defect, _ = key.split("/")
        assert (sample.dataset, sample.category, sample.defect_type) == (dataset, category, defect)
        assert sample.image == str(synth_root / key) and os.path.isabs(sample.image)
        assert (sample.question, sample.options, sample.answer) == (
            raw["Question"], raw["Options"], raw["Answer"])
        assert sample.reference_images == tuple(str(synth_root / p) for p in entry["similar_templates"])
        randoms = [str(synth_root / p) for p in entry["random_templates"]]
        assert sample.extra["random_templates"] == randoms
        assert category.replace("_", " ") in sample.extra["domain_knowledge"]
        if sample.is_normal:
            assert sample.mask_path is None and sample.bbox is None
        else:
            assert sample.mask_path == str(synth_root / entry["mask_path"])
            assert sample.bbox == tuple(float(v) for v in entry["bbox"])


def test_object_structure_and_details_fold_into_object_analysis(
        loaded: MMADLoad, synth_entries: dict[str, Any]) -> None:
    types = [s.question_type for s in loaded.samples]
    assert set(types) == set(QUESTION_TYPES)
    raw = [q["type"] for e in synth_entries.values() for q in e["conversation"]]
    assert types.count("Object Analysis") == raw.count("Object Structure") + raw.count("Object Details")


def test_box_comes_from_the_mask_without_a_bbox_key(small_root: Path, edit_mmad: Edit) -> None:
    stored = {k: e["bbox"] for k, e in json.loads((small_root / "mmad.json").read_text()).items()
              if "bbox" in e}
    edit_mmad(small_root, lambda entries: [e.pop("bbox", None) for e in entries.values()])
    boxes = {s.id.split("#")[0]: s.bbox for s in load_mmad(small_root).samples if not s.is_normal}
    assert boxes == {k: tuple(float(v) for v in box) for k, box in stored.items()}


def test_a_mask_with_several_regions_gives_a_training_box_per_region(small_root: Path, edit_mmad: Edit) -> None:
    edit_mmad(small_root, lambda entries: [e.pop("bbox", None) for e in entries.values()])
    defective = next(s for s in load_mmad(small_root).samples if not s.is_normal)
    mask = Image.new("L", Image.open(defective.image).size)
    mask.paste(255, (2, 3, 10, 12))
    mask.paste(255, (50, 60, 58, 66))
    mask.save(defective.mask_path)
    reloaded = next(s for s in load_mmad(small_root).samples if s.id == defective.id)
    assert reloaded.extra["bboxes"] == [[2, 3, 10, 12], [50, 60, 58, 66]]
    assert reloaded.bbox == (2, 3, 58, 66)  # the box around them all
    answer = json.dumps([{"bbox_2d": [2, 3, 10, 12]}, {"bbox_2d": [50, 60, 58, 66]}])
    assert load_reward("bbox_iou")(answer, reloaded.to_dict()).score == 1.0


def test_mask_path_relative_to_the_category_folder(small_root: Path, edit_mmad: Edit) -> None:
    """MMAD's own tooling joins mask paths onto the query's leading folders, not the root."""
    def relocate(entries: dict[str, Any]) -> None:
        for key, entry in entries.items():
            entry.pop("bbox", None)
            if entry["mask_path"]:
                entry["mask_path"] = entry["mask_path"].split("/", 2)[2]  # drop <dataset>/<category>/
    edit_mmad(small_root, relocate)
    defective = [s for s in load_mmad(small_root).samples if not s.is_normal]
    assert defective and all(s.bbox is not None and os.path.isfile(s.mask_path) for s in defective)


def test_missing_mask_leaves_the_box_unknown(small_root: Path, edit_mmad: Edit) -> None:
    def drop(entries: dict[str, Any]) -> None:
        for entry in entries.values():
            entry.pop("bbox", None)
            if entry["mask_path"]:
                os.remove(small_root / entry["mask_path"])
    edit_mmad(small_root, drop)
    load = load_mmad(small_root, strict=True)
    defective = [s for s in load.samples if not s.is_normal]
    assert defective and all(s.bbox is None and s.mask_path is None for s in defective)
    assert "no box" in load.summary()


def test_symlinked_data_folders_are_inside_the_root(tmp_path: Path, synth_root: Path) -> None:
    """MMAD's README suggests linking the source data sets into its folder."""
    root = tmp_path / "linked"
    root.mkdir()
    shutil.copy(synth_root / "mmad.json", root / "mmad.json")
    for dataset in ("SynthMVTec", "SynthVisA"):
        (root / dataset).symlink_to(synth_root / dataset, target_is_directory=True)
    load = load_mmad(root, strict=True)
    assert len(load.samples) == len(load_mmad(synth_root).samples)


def test_filters(synth_root: Path, loaded: MMADLoad) -> None:
    visa = load_mmad(synth_root, datasets=["SynthVisA"])
    assert visa.samples and {s.dataset for s in visa.samples} == {"SynthVisA"}
    assert len(visa.samples) == sum(s.dataset == "SynthVisA" for s in loaded.samples)
    kinds = load_mmad(synth_root, question_types=["Object Analysis", "Defect Localization"])
    assert {s.question_type for s in kinds.samples} == {"Object Analysis", "Defect Localization"}
    first = load_mmad(synth_root, max_samples=5)
    assert [s.id for s in first.samples] == [s.id for s in loaded.samples[:5]]
    assert load_mmad(synth_root, max_samples=0).samples == []


def test_misspelt_filters_are_refused(synth_root: Path) -> None:
    with pytest.raises(DataError, match="SynthVisa"):
        load_mmad(synth_root, datasets=["SynthVisa"])
    with pytest.raises(ValueError, match="Object Structure"):
        load_mmad(synth_root, question_types=["Object Structure"])
    with pytest.raises(ValueError, match="not the string"):
        load_mmad(synth_root, datasets="SynthVisA")
    with pytest.raises(ValueError):
        load_mmad(synth_root, max_samples=-1)


def test_summary(loaded: MMADLoad) -> None:
    text = loaded.summary()
    assert f"{len(loaded.samples)} questions on 32 images" in text
    assert "SynthMVTec 96" in text and "Object Analysis 64" in text and "0 problems" in text


# Breakage: each case edits the small set and returns (problem key, words the message must hold,
# how many questions are lost). The set has a normal image (4 questions) and a defective one (8).

def _keys(root: Path) -> tuple[str, str]:
    entries = json.loads((root / "mmad.json").read_text())
    normal = next(k for k in entries if "/good/" in k)
    return normal, next(k for k in entries if k != normal)


def missing_image(root: Path, edit: Edit) -> tuple[str, list[str], int]:
    normal, _ = _keys(root)
    os.remove(root / normal)
    return normal, [str(root / normal), "not found"], 4


def corrupt_image(root: Path, edit: Edit) -> tuple[str, list[str], int]:
    _, defective = _keys(root)
    (root / defective).write_bytes(b"this is not a png")
    return defective, [str(root / defective), "not a readable image"], 8


def truncated_image(root: Path, edit: Edit) -> tuple[str, list[str], int]:
    normal, _ = _keys(root)
    data = (root / normal).read_bytes()
    (root / normal).write_bytes(data[: len(data) // 2])
    return normal, [str(root / normal)], 4


def answer_not_in_options(root: Path, edit: Edit) -> tuple[str, list[str], int]:
    _, defective = _keys(root)
    edit(root, lambda e: e[defective]["conversation"][2].update(Answer="E"))
    return f"{defective}#2", ["'E'", "not among the options"], 1


def malformed_entry(root: Path, edit: Edit) -> tuple[str, list[str], int]:
    normal, _ = _keys(root)
    edit(root, lambda e: e[normal].pop("conversation"))
    return normal, ["malformed entry", "conversation"], 4


def malformed_question(root: Path, edit: Edit) -> tuple[str, list[str], int]:
    normal, _ = _keys(root)
    edit(root, lambda e: e[normal]["conversation"][1].update(Options=["yes", "no"]))
    return f"{normal}#1", ["malformed question", "Options"], 1


def unknown_question_type(root: Path, edit: Edit) -> tuple[str, list[str], int]:
    normal, _ = _keys(root)
    edit(root, lambda e: e[normal]["conversation"][0].update(type="Vibes"))
    return f"{normal}#0", ["unknown question type", "Vibes"], 1


def key_escapes_root(root: Path, edit: Edit) -> tuple[str, list[str], int]:
    normal, _ = _keys(root)
    key = "../elsewhere/x/image/good/outside.png"
    edit(root, lambda e: e.update({key: e[normal]}))
    return key, ["escapes the data root"], 0


def absolute_key(root: Path, edit: Edit) -> tuple[str, list[str], int]:
    normal, _ = _keys(root)
    key = str(root / normal)
    edit(root, lambda e: e.update({key: e[normal]}))
    return key, ["absolute"], 0


def template_escapes_root(root: Path, edit: Edit) -> tuple[str, list[str], int]:
    _, defective = _keys(root)
    edit(root, lambda e: e[defective]["similar_templates"].append("../../etc/passwd"))
    return defective, ["'../../etc/passwd'", "escapes the data root"], 8


def mask_escapes_root(root: Path, edit: Edit) -> tuple[str, list[str], int]:
    _, defective = _keys(root)
    edit(root, lambda e: e[defective].update(mask_path="/etc/passwd"))
    return defective, ["'/etc/passwd'", "absolute"], 8


def malformed_bbox(root: Path, edit: Edit) -> tuple[str, list[str], int]:
    _, defective = _keys(root)
    edit(root, lambda e: e[defective].update(bbox=[5, 5, 1, 1]))
    return defective, ["bbox"], 8


BREAKAGES = [missing_image, corrupt_image, truncated_image, answer_not_in_options, malformed_entry,
             malformed_question, unknown_question_type, key_escapes_root, absolute_key,
             template_escapes_root, mask_escapes_root, malformed_bbox]


@pytest.mark.parametrize("breakage", BREAKAGES, ids=lambda f: f.__name__)
def test_breakage_is_skipped_and_reported(small_root: Path, edit_mmad: Edit,
                                          breakage: Callable[..., tuple[str, list[str], int]]) -> None:
    key, words, lost = breakage(small_root, edit_mmad)
    load = load_mmad(small_root)
    assert [p.key for p in load.problems] == [key]
    for word in words:
        assert word in load.problems[0].message
    assert len(load.samples) == 4 + 8 - lost
    assert key in load.summary()


@pytest.mark.parametrize("breakage", BREAKAGES, ids=lambda f: f.__name__)
def test_breakage_raises_when_strict(small_root: Path, edit_mmad: Edit,
                                     breakage: Callable[..., tuple[str, list[str], int]]) -> None:
    key, words, _ = breakage(small_root, edit_mmad)
    with pytest.raises(DataError) as raised:
        load_mmad(small_root, strict=True)
    assert str(raised.value).startswith(f"{key}: ")
    for word in words:
        assert word in str(raised.value)


def test_missing_mmad_json(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=f"{tmp_path / 'mmad.json'}: file not found"):
        load_mmad(tmp_path)


@pytest.mark.parametrize("name", ["mmad.json", "domain_knowledge.json"])
def test_invalid_json_names_the_file(small_root: Path, name: str) -> None:
    (small_root / name).write_text('{"a": ')
    with pytest.raises(DataError, match=f"{small_root / name}: not valid JSON"):
        load_mmad(small_root)


def test_mmad_json_must_be_an_object(small_root: Path) -> None:
    (small_root / "mmad.json").write_text("[]")
    with pytest.raises(DataError, match="mmad.json: expected an object"):
        load_mmad(small_root)


def test_each_image_is_checked_once(small_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from anomalyr1.data_pipelines import mmad
    checked: list[str] = []
    real = mmad.image_size
    monkeypatch.setattr(mmad, "image_size", lambda path: checked.append(str(path)) or real(path))
    load = load_mmad(small_root)
    assert len(load.samples) == 12
    assert sorted(checked) == sorted({s.image for s in load.samples})

"""Few-shot sets: counts per class and in all, disjoint from evaluation images, the same for the
same seed, stable per class, saved and loaded back; broken files and roots named."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from anomalyr1.data_pipelines.errors import DataError
from anomalyr1.data_pipelines.fewshot import (
    FewShotSettings,
    image_key,
    load_fewshot,
    read_fewshot,
    read_image_keys,
    select_fewshot,
)
from anomalyr1.data_pipelines.mmad import MMADLoad, load_mmad
from anomalyr1.platform import cli


@pytest.fixture(scope="module")
def loaded(synth_root: Path) -> MMADLoad:
    return load_mmad(synth_root)


def classes(loaded: MMADLoad) -> dict[str, tuple[str, str, str]]:
    return {image_key(s): (s.dataset, s.category, s.defect_type) for s in loaded.samples}


def test_at_most_k_per_class_and_every_class_up_to_k(loaded: MMADLoad) -> None:
    of = classes(loaded)
    available = Counter(of.values())
    chosen = select_fewshot(loaded.samples, FewShotSettings(per_class=3, total=None))
    per_class = Counter(of[key] for key in chosen.images)
    assert per_class == {cls: min(3, n) for cls, n in available.items()}
    assert len(set(chosen.images)) == len(chosen.images)
    assert chosen.classes == len(available) == 16


def test_a_total_spreads_evenly_over_the_classes(loaded: MMADLoad) -> None:
    of = classes(loaded)
    chosen = select_fewshot(loaded.samples, FewShotSettings(per_class=3, total=20))
    assert len(chosen.images) == 20
    per_class = Counter(of[key] for key in chosen.images)
    assert len(per_class) == 16 and max(per_class.values()) == 2  # one each before any gets a second


def test_disjoint_from_the_evaluation_images(loaded: MMADLoad) -> None:
    everything = select_fewshot(loaded.samples, FewShotSettings(per_class=5, total=None))
    evaluation = list(everything.images[:10]) + ["not/in/this/set.png"]
    chosen = select_fewshot(loaded.samples, FewShotSettings(per_class=5, total=None), exclude=evaluation)
    assert not set(chosen.images) & set(evaluation)
    assert chosen.excluded == 10
    assert len(chosen.images) == len(everything.images) - 10


def test_same_seed_same_set_other_seed_other_set(loaded: MMADLoad) -> None:
    settings = FewShotSettings(per_class=2, total=12, seed=7)
    first = select_fewshot(loaded.samples, settings)
    assert select_fewshot(list(reversed(loaded.samples)), settings) == first  # file order does not matter
    assert select_fewshot(loaded.samples, FewShotSettings(per_class=2, total=12, seed=8)).images != first.images


def test_a_class_gets_the_same_images_whatever_else_is_in_the_set(loaded: MMADLoad) -> None:
    settings = FewShotSettings(per_class=2, total=None)
    alone = select_fewshot([s for s in loaded.samples if s.dataset == "SynthVisA"], settings)
    together = select_fewshot(loaded.samples, settings)
    assert set(alone.images) == {k for k in together.images if k.startswith("SynthVisA/")}


def test_file_round_trip_and_questions(tmp_path: Path, synth_root: Path, loaded: MMADLoad) -> None:
    chosen = select_fewshot(loaded.samples, FewShotSettings(per_class=1, total=6, seed=3))
    path = chosen.save(tmp_path / "sets" / "fewshot.json")
    assert read_fewshot(path) == chosen
    assert read_image_keys(path) == chosen.images
    back = load_fewshot(path, synth_root)
    expected = [s for s in loaded.samples if image_key(s) in set(chosen.images)]
    assert back.samples == expected and {image_key(s) for s in back.samples} == set(chosen.images)
    only = load_fewshot(path, synth_root, question_types=["Anomaly Detection"], max_samples=4)
    assert len(only.samples) == 4 and {s.question_type for s in only.samples} == {"Anomaly Detection"}


def test_evaluation_files_of_every_kind(tmp_path: Path) -> None:
    keys = ["D/a/image/good/000.png", "D/a/image/hole/000.png"]
    forms = {
        "keys.json": keys,
        "answers.json": [{"image": k, "gpt_answer": "A"} for k in keys],
        "mmad.json": {k: {"conversation": []} for k in keys},
    }
    for name, content in forms.items():
        (tmp_path / name).write_text(json.dumps(content))
        assert list(read_image_keys(tmp_path / name)) == keys, name
    (tmp_path / "odd.json").write_text(json.dumps([1, 2]))
    with pytest.raises(DataError, match="odd.json: expected a list of image keys"):
        read_image_keys(tmp_path / "odd.json")


def test_broken_entries_are_never_chosen(small_root: Path) -> None:
    defective = next(p for p in (small_root / "D").rglob("image/*/*.png") if "good" not in p.parts)
    defective.unlink()
    loaded = load_mmad(small_root)
    chosen = select_fewshot(loaded.samples, FewShotSettings(per_class=5, total=None))
    assert chosen.images == ("D/bottle/image/good/000.png",)


def test_a_file_for_another_root_is_refused(tmp_path: Path, small_root: Path, synth_root: Path,
                                            loaded: MMADLoad) -> None:
    path = select_fewshot(loaded.samples, FewShotSettings(total=3)).save(tmp_path / "fewshot.json")
    with pytest.raises(DataError, match=r"3 of its images are not in .*mmad\.json.*another MMAD root"):
        load_fewshot(path, small_root)


def test_an_image_broken_since_selection_is_a_problem(tmp_path: Path, small_root: Path) -> None:
    path = select_fewshot(load_mmad(small_root).samples, FewShotSettings(total=None)).save(tmp_path / "f.json")
    (small_root / "D/bottle/image/good/000.png").write_bytes(b"not a png")
    back = load_fewshot(path, small_root)
    assert {image_key(s) for s in back.samples} == {"D/bottle/image/scratch/000.png"}
    assert [p.key for p in back.problems] == ["D/bottle/image/good/000.png"]
    with pytest.raises(DataError, match="good/000.png"):
        load_fewshot(path, small_root, strict=True)


@pytest.mark.parametrize("content, message", [
    ("[", "not valid JSON"),
    (json.dumps({"images": ["a"]}), "not a few-shot file"),
    (json.dumps({"format": "anomalyr1-fewshot/1", "images": []}), "'images' must be a non-empty list"),
    (json.dumps({"format": "anomalyr1-fewshot/1", "images": ["a", "a"]}), "lists some images twice"),
    (json.dumps({"format": "anomalyr1-fewshot/1", "images": ["a"], "settings": {"per_class": 0}}),
     r"bad 'settings' \(per_class must be an integer >= 1"),
    (json.dumps({"format": "anomalyr1-fewshot/1", "images": ["a"], "settings": {"k": 1}}), "bad 'settings'"),
    (json.dumps({"format": "anomalyr1-fewshot/1", "images": ["a"], "classes": "many"}), "'classes' must be a count"),
])
def test_a_broken_fewshot_file_is_named(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "fewshot.json"
    path.write_text(content)
    with pytest.raises(DataError, match=message) as error:
        read_fewshot(path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize("settings, message", [
    ({"per_class": 0}, "per_class must be an integer >= 1"),
    ({"total": 0}, "total must be an integer >= 1 or None"),
    ({"seed": "x"}, "seed must be an integer"),
])
def test_bad_settings(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FewShotSettings(**settings)


def test_excluding_everything_is_an_error(loaded: MMADLoad) -> None:
    with pytest.raises(DataError, match="no images to choose from after excluding"):
        select_fewshot(loaded.samples, exclude={image_key(s) for s in loaded.samples})


def test_cli_writes_a_file_that_excludes_the_evaluation_images(tmp_path: Path, synth_root: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    evaluation = tmp_path / "eval.json"
    evaluation.write_text(json.dumps([{"image": "SynthMVTec/bottle/image/good/000.png", "gpt_answer": "A"}]))
    out = tmp_path / "fewshot.json"
    argv = ["fewshot", str(synth_root), "--out", str(out), "--per-class", "2", "--total", "9", "--seed", "4",
            "--exclude", str(evaluation)]
    assert cli.main(argv) == 0
    chosen = read_fewshot(out)
    assert len(chosen.images) == 9 and chosen.settings == FewShotSettings(2, 9, 4) and chosen.excluded == 1
    assert "SynthMVTec/bottle/image/good/000.png" not in chosen.images
    assert "9 images from 16 classes (1 evaluation images excluded" in capsys.readouterr().out
    assert cli.main(["fewshot", str(synth_root), "--out", str(out), "--exclude", str(tmp_path / "nope.json")]) == 2

"""`anomalyr1 masks` end to end on the synthetic set: localization eval, then masks, then scores;
and bad input reported per image, never a crash."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anomalyr1.data_pipelines import generate_synthetic_mmad, load_mmad
from anomalyr1.data_pipelines.fewshot import image_key
from anomalyr1.data_pipelines.images import load_mask
from anomalyr1.data_pipelines.regions import component_boxes
from anomalyr1.platform import cli
from anomalyr1.platform.segment import build_tiny_sam2


@pytest.fixture(scope="module")
def tiny_sam2(tmp_path_factory) -> Path:
    return build_tiny_sam2(tmp_path_factory.mktemp("sam2") / "tiny-sam2")


@pytest.fixture(scope="module")
def localization_answers(ray_session, tiny_model, synthetic_root, cache_dir, tmp_path_factory) -> Path:
    """`anomalyr1 eval` with the localization prompt, one question (Anomaly Detection) per image."""
    out = tmp_path_factory.mktemp("eval")
    argv = ["eval", "--set", f"model.cache_dir={cache_dir}", "--set", f"data.root={synthetic_root}",
            "--set", "prompt.name=localization", "--set", "data.question_types=[Anomaly Detection]",
            "--set", "rollout.workers=1", "--set", "learner.workers=1",  # the recipe is colocated: its engines are the learners'
            "--checkpoint", tiny_model, "--out", str(out)]
    assert cli.main(argv) == 0
    return out / "answers.json"


def _masks(answers: Path, root: Path, out: Path, sam2: Path) -> dict:
    assert cli.main(["masks", str(answers), "--root", str(root), "--out", str(out), "--sam2", str(sam2), "--batch-size", "16"]) == 0
    return json.loads((out / "localization.json").read_text())


def test_eval_then_masks_then_scores(localization_answers: Path, synthetic_root: Path, tiny_sam2: Path, tmp_path: Path) -> None:
    records = json.loads(localization_answers.read_text())
    images = {image_key(s): s for s in load_mmad(synthetic_root).samples}
    assert sorted(r["image"] for r in records) == sorted(images)
    assert all(len(r["input_size"]) == 2 for r in records)
    scores = _masks(localization_answers, synthetic_root, tmp_path / "random", tiny_sam2)
    index = json.loads((tmp_path / "random" / "masks.json").read_text())["masks"]
    assert [entry["image"] for entry in index] == [r["image"] for r in records]
    for entry in index:
        with Image.open(tmp_path / "random" / entry["mask"]) as mask, Image.open(images[entry["image"]].image) as image:
            assert mask.size == image.size == (entry["width"], entry["height"])
            assert set(np.unique(np.asarray(mask))) <= {0, 255}
    assert len(scores["per_image"]) == len(records) and scores["problems"] == []
    assert set(scores["table"]) == {"SynthMVTec/bottle", "SynthMVTec/metal_nut", "SynthMVTec",
                                    "SynthVisA/tile", "SynthVisA/pill", "SynthVisA", "Average"}

    # The same images answered with the exact ground-truth boxes (in the model's input pixels),
    # and one box on one normal image.
    alarm = next(r["image"] for r in records if "/good/" in r["image"])
    for record in records:
        sample = images[record["image"]]
        (width, height), (in_w, in_h) = Image.open(sample.image).size, record["input_size"]
        boxes = [] if sample.is_normal else component_boxes(load_mask(sample.mask_path, (width, height)))
        stated = [[b.x1 * in_w / width, b.y1 * in_h / height, b.x2 * in_w / width, b.y2 * in_h / height] for b in boxes]
        if record["image"] == alarm:
            stated = [[10, 10, 40, 40]]
        record["response"] = "<think>look</think><answer>" + json.dumps([{"bbox_2d": b, "label": "defect"} for b in stated]) + "</answer>"
    exact = tmp_path / "exact.json"
    exact.write_text(json.dumps(records))
    scores = _masks(exact, synthetic_root, tmp_path / "exact", tiny_sam2)
    per_image = {s["image"]: s for s in scores["per_image"]}
    defective = [s for s in per_image.values() if not s["normal"]]
    assert len(defective) == 16 and all(s["box_iou"] == pytest.approx(1.0) and s["miss"] is False for s in defective)
    assert per_image[alarm]["false_alarm"] is True
    assert sum(s["false_alarm"] is True for s in per_image.values()) == 1
    row = scores["table"]["/".join(alarm.split("/")[:2])]
    assert row["false_alarm_rate"] == 25.0 and row["box_iou"] == pytest.approx(100.0)
    assert scores["table"]["Average"]["miss_rate"] == 0.0


def test_bad_input_is_reported_per_image_and_skipped(tmp_path: Path, tiny_sam2: Path, capsys) -> None:
    root = generate_synthetic_mmad(tmp_path / "mmad", datasets=("D",), categories_per_dataset=1,
                                   normal_per_category=2, defective_per_category=3)
    samples = {image_key(s): s for s in load_mmad(root).samples}
    normal = sorted(k for k, s in samples.items() if s.is_normal)
    defective = sorted(k for k, s in samples.items() if not s.is_normal)
    (root / normal[1]).unlink()  # a missing image
    Path(samples[defective[0]].mask_path).write_bytes(b"not a png")  # an unreadable mask
    answers = [
        {"image": normal[0], "response": "[500, 500, 600, 600]"},  # wholly outside the 112x112 image
        {"image": normal[1], "response": "[]"},
        {"image": defective[0], "response": "[10, 10, 20, 20]"},
        {"image": defective[1], "response": "[100, 100, 150, 150]"},  # partly outside: clipped
        {"image": defective[2], "response": "no box"},
        {"image": "D/elsewhere/image/hole/000.png", "response": "[]"},
        {"response": "[1, 2, 3, 4]"},
    ]
    (tmp_path / "answers.json").write_text(json.dumps(answers))
    capsys.readouterr()
    scores = _masks(tmp_path / "answers.json", root, tmp_path / "out", tiny_sam2)
    problems = scores["problems"]
    assert any(p.startswith(f"{answers[0]['image']}: box [500.0, 500.0, 600.0, 600.0] is outside the 112x112 image") for p in problems)
    assert any(p.startswith(f"{normal[1]}: skipped") and "image file not found" in p for p in problems)
    assert any(p.startswith(f"{defective[0]}: skipped") and "not a readable" in p and samples[defective[0]].mask_path in p for p in problems)
    assert any(p.startswith("D/elsewhere/image/hole/000.png: skipped") for p in problems)
    assert any("answers.json[6]: an answer needs the strings 'image' and 'response'" in p for p in problems)
    assert len(problems) == 5
    per_image = {s["image"]: s for s in scores["per_image"]}
    assert sorted(per_image) == sorted([normal[0], defective[1], defective[2]])
    assert per_image[normal[0]]["false_alarm"] is False and per_image[normal[0]]["boxes"] == 0
    assert per_image[defective[2]]["miss"] is True
    index = {e["image"]: e for e in json.loads((tmp_path / "out" / "masks.json").read_text())["masks"]}
    assert index[defective[1]]["boxes"] == [[100.0, 100.0, 112.0, 112.0]]
    assert "5 problems" in capsys.readouterr().out

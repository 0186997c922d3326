"""Model-free localization scoring: mask regions, pixel overlaps, per-image scores and the table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anomalyr1.data_pipelines.errors import DataError
from anomalyr1.data_pipelines.images import load_mask, mask_boxes
from anomalyr1.data_pipelines.localization import (
    COLUMNS,
    dice,
    mask_iou,
    score_image,
    score_localization,
)
from anomalyr1.data_pipelines.regions import component_boxes
from anomalyr1.rewards.boxes import Box


def test_component_boxes_are_one_box_per_8_connected_region() -> None:
    mask = np.zeros((10, 12), dtype=bool)
    mask[1:3, 1:4] = True
    mask[3, 4] = True  # touches the first region at a corner: same region
    mask[6:9, 8:11] = True
    mask[0, 11] = True
    assert component_boxes(mask) == [Box(11, 0, 12, 1), Box(1, 1, 5, 4), Box(8, 6, 11, 9)]
    assert component_boxes(np.zeros((4, 4), dtype=bool)) == []


def test_component_boxes_join_a_u_shape(tmp_path: Path) -> None:
    """Two arms that meet only below are one region; mask files give the same boxes."""
    mask = np.zeros((20, 20), dtype=bool)
    mask[2:15, 3:5] = True
    mask[2:15, 12:14] = True
    mask[14:16, 3:14] = True
    mask[18, 0] = True
    boxes = component_boxes(mask)
    assert boxes == [Box(3, 2, 14, 16), Box(0, 18, 1, 19)]
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "mask.png")
    assert mask_boxes(tmp_path / "mask.png", (20, 20)) == [(3, 2, 14, 16), (0, 18, 1, 19)]


def test_pixel_overlaps() -> None:
    truth = np.zeros((4, 4), dtype=bool)
    truth[0:2, 0:2] = True  # 4 pixels
    predicted = np.zeros((4, 4), dtype=bool)
    predicted[0:2, 0:4] = True  # 8 pixels, 4 shared
    assert mask_iou(predicted, truth) == pytest.approx(4 / 8)
    assert dice(predicted, truth) == pytest.approx(2 * 4 / 12)
    assert mask_iou(truth, truth) == dice(truth, truth) == 1.0
    empty = np.zeros((4, 4), dtype=bool)
    assert mask_iou(empty, truth) == dice(empty, truth) == 0.0


def test_exact_boxes_score_one_and_no_box_is_a_miss() -> None:
    truth = np.zeros((8, 8), dtype=bool)
    truth[2:4, 2:5] = True
    exact = score_image("D/c/image/hole/000.png", "D", "c", [Box(2, 2, 5, 4)], truth.copy(), truth)
    assert (exact.box_iou, exact.mask_iou, exact.dice, exact.miss, exact.false_alarm) == (1.0, 1.0, 1.0, False, None)
    missed = score_image("D/c/image/hole/000.png", "D", "c", [], np.zeros_like(truth), truth)
    assert (missed.box_iou, missed.mask_iou, missed.miss) == (0.0, 0.0, True)
    with pytest.raises(ValueError, match="ground-truth mask of a defective image is empty"):
        score_image("D/c/image/hole/000.png", "D", "c", [], truth, np.zeros_like(truth))


def test_a_box_on_a_normal_image_is_a_false_alarm() -> None:
    empty = np.zeros((8, 8), dtype=bool)
    alarm = score_image("D/c/image/good/000.png", "D", "c", [Box(0, 0, 2, 2)], empty, None)
    quiet = score_image("D/c/image/good/001.png", "D", "c", [], empty, None)
    assert (alarm.normal, alarm.false_alarm, alarm.box_iou, alarm.miss) == (True, True, None, None)
    assert quiet.false_alarm is False


def test_table_rows_per_category_dataset_and_average() -> None:
    truth = np.zeros((8, 8), dtype=bool)
    truth[2:4, 2:4] = True
    half = np.zeros((8, 8), dtype=bool)
    half[2:4, 2:3] = True
    scores = [
        score_image("A/x/image/hole/0.png", "A", "x", [Box(2, 2, 4, 4)], truth, truth),  # box 1, mask 1
        score_image("A/x/image/hole/1.png", "A", "x", [], np.zeros_like(truth), truth),  # miss
        score_image("A/x/image/good/0.png", "A", "x", [Box(0, 0, 1, 1)], half, None),  # false alarm
        score_image("A/y/image/hole/0.png", "A", "y", [Box(2, 2, 3, 4)], half, truth),  # box 0.5, mask 0.5
        score_image("B/z/image/good/0.png", "B", "z", [], np.zeros_like(truth), None),
    ]
    result = score_localization(scores, ["B/z/image/hole/9.png: skipped, image file not found"])
    table = result.table
    assert list(table) == ["A/x", "A/y", "A", "B/z", "B", "Average"]
    assert table["A/x"] == {"box_iou": 50.0, "mask_iou": 50.0, "dice": 50.0, "miss_rate": 50.0,
                            "false_alarm_rate": 100.0, "defective": 2, "normal": 1}
    assert table["A/y"]["box_iou"] == 50.0 and table["A/y"]["dice"] == pytest.approx(100 * 2 * 2 / 6)
    assert table["A/y"]["false_alarm_rate"] is None
    assert table["A"]["box_iou"] == 50.0 and table["A"]["false_alarm_rate"] == 100.0
    assert (table["A"]["defective"], table["A"]["normal"]) == (3, 1)
    assert table["B"]["box_iou"] is None and table["B"]["false_alarm_rate"] == 0.0
    assert table["Average"]["box_iou"] == 50.0 and table["Average"]["false_alarm_rate"] == 50.0
    assert (table["Average"]["defective"], table["Average"]["normal"]) == (3, 2)
    written = result.to_json()
    assert [r["image"] for r in written["per_image"]] == [s.image for s in scores]
    assert written["problems"] == result.problems
    lines = result.render().splitlines()
    assert lines[0].split() == list(COLUMNS)
    assert lines[-1] == "5 images scored (3 defective, 2 normal), 1 problems"
    assert lines[4].split() == ["B/z", "-", "-", "-", "-", "0.00", "0", "1"]


def test_load_mask_at_the_image_size(tmp_path: Path) -> None:
    pixels = np.zeros((4, 6, 3), dtype=np.uint8)
    pixels[1, 2, 0] = 200  # a colour mask: any band counts
    Image.fromarray(pixels).save(tmp_path / "rgb.png")
    mask = load_mask(tmp_path / "rgb.png", (6, 4))
    assert mask.dtype == bool and mask.shape == (4, 6) and mask.sum() == 1 and mask[1, 2]
    upscaled = load_mask(tmp_path / "rgb.png", (12, 8))
    assert upscaled.shape == (8, 12) and upscaled.sum() == 4 and upscaled[2:4, 4:6].all()


def test_unreadable_mask_names_its_path(tmp_path: Path) -> None:
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"bad\.png: not a readable image"):
        load_mask(tmp_path / "bad.png", (4, 4))
    with pytest.raises(DataError, match=r"missing\.png: image file not found"):
        load_mask(tmp_path / "missing.png", (4, 4))

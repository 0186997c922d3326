"""Opening images: capping their size, boxes from masks, and bad files named in the error."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from anomalyr1.data_pipelines.errors import DataError
from anomalyr1.data_pipelines.images import (
    PAPER_MAX_PIXELS,
    PAPER_MAX_SIZE,
    image_size,
    load_image,
    mask_boxes,
)
from anomalyr1.data_pipelines.prompts import load_image as prompts_load_image


def save(path: Path, size: tuple[int, int], mode: str = "RGB", colour: int | tuple = 0) -> Path:
    Image.new(mode, size, colour).save(path)
    return path


def test_load_image_returns_rgb(tmp_path: Path) -> None:
    image = load_image(save(tmp_path / "grey.png", (30, 20), "L", 7))
    assert image.mode == "RGB" and image.size == (30, 20)
    assert prompts_load_image is load_image


def test_paper_cap_shrinks_a_large_image(tmp_path: Path) -> None:
    image = load_image(save(tmp_path / "big.png", (2000, 1500)), PAPER_MAX_PIXELS)
    width, height = image.size
    assert width * height <= 1000 * 800
    assert width * height > 0.99 * 1000 * 800
    assert abs(width / height - 2000 / 1500) < 0.01


@settings(max_examples=40, deadline=None)
@given(width=st.integers(1, 300), height=st.integers(1, 300), max_pixels=st.integers(1, 20000))
def test_cap_holds_and_keeps_aspect(tmp_path_factory: pytest.TempPathFactory, width: int,
                                    height: int, max_pixels: int) -> None:
    path = save(tmp_path_factory.mktemp("cap") / "x.png", (width, height))
    w, h = load_image(path, max_pixels).size
    if width * height <= max_pixels:
        assert (w, h) == (width, height)
        return
    assert w * h <= max_pixels and w >= 1 and h >= 1
    assert w <= width and h <= height
    if min(w, h) >= 10:
        assert abs(w / h - width / height) <= 0.15 * width / height


@pytest.mark.parametrize(("size", "expected"), [
    ((1024, 1024), (800, 800)),   # MVTec: the height binds (894x894 under the pixel budget)
    ((1500, 1000), (1000, 666)),  # the width binds; int() truncates 666.67 as the reference does
    ((3000, 3000), (800, 800)),
    ((1000, 800), (1000, 800)),   # inside the box: untouched
    ((640, 480), (640, 480)),
])
def test_box_fits_as_the_reference_resizes(tmp_path: Path, size: tuple[int, int], expected: tuple[int, int]) -> None:
    path = save(tmp_path / "x.png", size)
    assert load_image(path, max_size=PAPER_MAX_SIZE).size == expected
    if size == (1024, 1024):
        assert load_image(path, PAPER_MAX_PIXELS).size == (894, 894), "the budget is not the box"


def test_box_resizes_with_lanczos(tmp_path: Path) -> None:
    stripes = Image.new("RGB", (1500, 1000))
    stripes.putdata([(255 * (x % 3 == 0),) * 3 for _y in range(1000) for x in range(1500)])
    stripes.save(tmp_path / "s.png")
    expected = stripes.resize((1000, 666), Image.Resampling.LANCZOS)
    assert list(load_image(tmp_path / "s.png", max_size=PAPER_MAX_SIZE).getdata()) == list(expected.getdata())


def test_box_then_budget(tmp_path: Path) -> None:
    assert load_image(save(tmp_path / "x.png", (3000, 3000)), 400 * 400, (1000, 800)).size == (400, 400)


def test_bad_max_size(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_size"):
        load_image(save(tmp_path / "x.png", (4, 4)), max_size=(0, 10))


def test_bad_max_pixels(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_pixels"):
        load_image(save(tmp_path / "x.png", (4, 4)), 0)


@pytest.mark.parametrize("opener", [load_image, image_size])
def test_missing_and_corrupt_files_name_the_path(tmp_path: Path, opener) -> None:
    missing = tmp_path / "missing.png"
    with pytest.raises(DataError, match=f"{missing}: image file not found"):
        opener(missing)
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match=f"{corrupt}: not a readable image"):
        opener(corrupt)


@pytest.mark.parametrize("opener", [load_image, image_size])
def test_truncated_file_is_caught(tmp_path: Path, opener) -> None:
    noise = Image.frombytes("RGB", (64, 64), bytes(random.Random(0).randbytes(64 * 64 * 3)))
    noise.save(tmp_path / "whole.png")
    whole = (tmp_path / "whole.png").read_bytes()
    cut = tmp_path / "cut.png"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError, match=str(cut)):
        opener(cut)


def test_mask_boxes(tmp_path: Path) -> None:
    mask = Image.new("L", (40, 20))
    mask.paste(255, (10, 4, 18, 9))
    mask.save(tmp_path / "m.png")
    assert mask_boxes(tmp_path / "m.png", (40, 20)) == [(10, 4, 18, 9)]
    # A mask stored at half the image's resolution is scaled up.
    assert mask_boxes(tmp_path / "m.png", (80, 40)) == [(20, 8, 36, 18)]
    assert mask_boxes(save(tmp_path / "empty.png", (8, 8), "L"), (8, 8)) == []
    mask.paste(255, (30, 12, 34, 16))  # a second, separate region: a box of its own
    mask.save(tmp_path / "two.png")
    assert mask_boxes(tmp_path / "two.png", (40, 20)) == [(10, 4, 18, 9), (30, 12, 34, 16)]


@pytest.mark.parametrize("mode,colour", [("RGB", (0, 0, 1)), ("RGBA", (0, 9, 0, 255)), ("P", 3)])
def test_colour_masks_count_any_band(tmp_path: Path, mode: str, colour) -> None:
    mask = Image.new(mode, (10, 10))
    if mode == "P":
        mask.putpalette([0, 0, 0] * 3 + [200, 0, 0])
    mask.paste(colour, (2, 3, 5, 7))
    mask.save(tmp_path / "m.png")
    assert mask_boxes(tmp_path / "m.png", (10, 10)) == [(2, 3, 5, 7)]

"""SAM2 through transformers: the tiny one saved and loaded back, preprocessing without
torchvision, and masks at their images' sizes whatever the batch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import Sam2Model

from anomalyr1.platform.segment import TINY_SAM2, Sam2Segmenter, build_tiny_sam2, resolve_sam2_path
from anomalyr1.rewards.boxes import Box


@pytest.fixture(scope="module")
def tiny_sam2(tmp_path_factory) -> Path:
    return build_tiny_sam2(tmp_path_factory.mktemp("sam2") / "tiny-sam2")


@pytest.fixture(scope="module")
def segmenter(tiny_sam2: Path) -> Sam2Segmenter:
    return Sam2Segmenter(str(tiny_sam2), device="cpu")


def _images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in ((112, 112), (200, 150), (64, 96))]


BOXES = [[Box(10, 10, 60, 70)], [], [Box(0, 0, 30, 40), Box(20, 50, 64, 96), Box(5, 5, 6, 6)]]


def test_tiny_sam2_is_a_transformers_folder_that_loads_back(tiny_sam2: Path, segmenter: Sam2Segmenter) -> None:
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= {p.name for p in tiny_sam2.iterdir()}
    assert json.loads((tiny_sam2 / "config.json").read_text())["model_type"] == "sam2"
    reloaded = Sam2Model.from_pretrained(tiny_sam2)
    rebuilt = build_tiny_sam2(tiny_sam2.parent / "again")  # same seed, same weights
    again = Sam2Model.from_pretrained(rebuilt).state_dict()
    assert all(torch.equal(tensor, again[name]) for name, tensor in reloaded.state_dict().items())
    assert segmenter.preprocessing.size == (128, 128)
    assert sum(p.numel() for p in reloaded.parameters()) < 1_000_000


def test_builtin_tiny_sam2_is_built_once_into_the_cache(tmp_path: Path) -> None:
    path = Path(resolve_sam2_path(TINY_SAM2, tmp_path))
    assert path == tmp_path / "models" / "tiny-sam2" and (path / "model.safetensors").is_file()
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert resolve_sam2_path(TINY_SAM2, tmp_path) == str(path)
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp
    assert resolve_sam2_path(str(tmp_path), tmp_path) == str(tmp_path)
    assert resolve_sam2_path("facebook/sam2.1-hiera-tiny", tmp_path) == "facebook/sam2.1-hiera-tiny"


def test_preprocessing_follows_the_processor_config(segmenter: Sam2Segmenter) -> None:
    """Resize to the model's input, rescale by 1/255, normalise with the config's mean and std."""
    pixels = segmenter.preprocessing.pixels(Image.new("RGB", (30, 20), (255, 0, 128)))
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    expected = (np.array([255, 0, 128]) / 255 - mean) / std
    assert pixels.shape == (3, 128, 128)
    assert np.allclose(pixels[:, 64, 64].numpy(), expected, atol=1e-5)


def test_masks_have_their_images_sizes_and_do_not_depend_on_the_batch(segmenter: Sam2Segmenter) -> None:
    images = _images()
    together = segmenter.segment(images, BOXES)
    alone = [segmenter.segment([image], [boxes])[0] for image, boxes in zip(images, BOXES)]
    assert [m.shape for m in together] == [(112, 112), (150, 200), (96, 64)]
    assert all(m.dtype == bool for m in together)
    assert not together[1].any()  # no box, no mask
    assert 0 < together[0].mean() < 1 and 0 < together[2].mean() < 1  # random weights, yet real masks
    assert all(np.array_equal(a, b) for a, b in zip(together, alone))


def test_an_image_without_boxes_needs_no_model_call(segmenter: Sam2Segmenter, monkeypatch) -> None:
    monkeypatch.setattr(segmenter, "model", None)  # any call would fail
    masks = segmenter.segment(_images()[:2], [[], []])
    assert [m.shape for m in masks] == [(112, 112), (150, 200)] and not any(m.any() for m in masks)

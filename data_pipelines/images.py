"""Image files: the one place that opens them, so a bad file always fails the same way (a
DataError naming its path) whether it is found while loading MMAD or while building a prompt."""

from __future__ import annotations

import math
from os import PathLike

import numpy as np
from PIL import Image

from anomalyr1.data_pipelines.errors import DataError
from anomalyr1.data_pipelines.regions import component_boxes

PAPER_MAX_SIZE = (1000, 800)
"""AnomalyR1's reference shrinks an image that is wider than 1000 or taller than 800 to fit that
box (grpo_rec.py, eval/thinkad_query.py)."""
PAPER_MAX_PIXELS = 1000 * 800
"""The same cap as an area budget: about the same token cost, but not the reference's sizes (a
1024x1024 image becomes 894x894 instead of 800x800)."""

BBox = tuple[float, float, float, float]


def _open(path: str | PathLike[str]) -> Image.Image:
    try:
        return Image.open(path)
    except FileNotFoundError as exc:
        raise DataError(f"{path}: image file not found") from exc
    except Exception as exc:  # PIL raises many unrelated types for damaged files
        raise DataError(f"{path}: not a readable image ({exc})") from exc


def image_size(path: str | PathLike[str]) -> tuple[int, int]:
    """(width, height) of a readable image, checked without decoding pixels: verify() reads
    chunks and checksums only, which keeps checking all of MMAD's 8k images cheap."""
    with _open(path) as image:
        size = image.size
        try:
            image.verify()
        except Exception as exc:
            raise DataError(f"{path}: not a readable image ({exc})") from exc
    return size


def load_image(path: str | PathLike[str], max_pixels: int | None = None,
               max_size: tuple[int, int] | None = None) -> Image.Image:
    """An RGB image, shrunk (aspect kept, LANCZOS) to fit inside the box max_size = (width,
    height) and then so width*height <= max_pixels: huge inspection photos would otherwise
    cost thousands of vision tokens each."""
    if max_pixels is not None and max_pixels < 1:
        raise ValueError(f"max_pixels must be >= 1, got {max_pixels}")
    if max_size is not None and min(max_size) < 1:
        raise ValueError(f"max_size must be two sides >= 1, got {max_size}")
    with _open(path) as raw:
        try:
            image = raw.convert("RGB")
        except Exception as exc:  # truncated data only shows when pixels are decoded
            raise DataError(f"{path}: not a readable image ({exc})") from exc
    if max_size is not None:
        image = _fit_box(image, max_size)
    return image if max_pixels is None else _fit_budget(image, max_pixels)


def _fit_box(image: Image.Image, box: tuple[int, int]) -> Image.Image:
    """The reference's resize: when a side exceeds the box, scale by the tighter side's ratio
    and truncate (int()), exactly its arithmetic, so sizes match it pixel for pixel."""
    width, height = image.size
    if width <= box[0] and height <= box[1]:
        return image
    ratio = min(box[0] / width, box[1] / height)
    return image.resize((max(1, int(width * ratio)), max(1, int(height * ratio))), Image.Resampling.LANCZOS)


def _fit_budget(image: Image.Image, max_pixels: int) -> Image.Image:
    width, height = image.size
    if width * height <= max_pixels:
        return image
    scale = math.sqrt(max_pixels / (width * height))
    # Rounding down keeps the product under budget; the clamps only bite for extreme aspect
    # ratios, where one side would otherwise round to zero.
    new_width = min(max(1, math.floor(width * scale)), max_pixels)
    new_height = max(1, min(math.floor(height * scale), max_pixels // new_width))
    return image.resize((new_width, new_height), Image.Resampling.LANCZOS)


def mask_boxes(path: str | PathLike[str], image_size: tuple[int, int]) -> list[BBox]:
    """Boxes [x1, y1, x2, y2) around a mask's separate (8-connected) regions, in the image's
    pixels (a mask stored at another resolution is resized first); [] for an empty mask."""
    return [(box.x1, box.y1, box.x2, box.y2) for box in component_boxes(load_mask(path, image_size))]


def load_mask(path: str | PathLike[str], image_size: tuple[int, int]) -> np.ndarray:
    """A mask's set pixels as a (height, width) bool array at the image's (width, height): a
    mask stored at another resolution is resized with nearest neighbours, keeping it binary."""
    with _open(path) as raw:
        try:
            # Colour masks (DS-MVTec's rbg_mask) count a pixel when any band is set.
            mask = raw if raw.mode in ("1", "L", "RGB") else raw.convert("RGB")
            if mask.size != tuple(image_size):
                mask = mask.resize(tuple(image_size), Image.Resampling.NEAREST)
            pixels = np.asarray(mask)
        except Exception as exc:  # truncated data only shows when pixels are decoded
            raise DataError(f"{path}: not a readable mask ({exc})") from exc
    return pixels.any(axis=-1) if pixels.ndim == 3 else pixels > 0

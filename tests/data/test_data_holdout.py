"""The held-out slice for evaluation during training: whole images, disjoint, seeded, exact."""

from __future__ import annotations

from pathlib import Path

import pytest

from anomalyr1.data_pipelines.errors import DataError
from anomalyr1.data_pipelines.holdout import split_held_out
from anomalyr1.data_pipelines.mmad import load_mmad


@pytest.fixture(scope="module")
def samples(synth_root: Path):
    return load_mmad(synth_root).samples


def test_whole_images_held_out_exactly_that_many_questions(samples) -> None:
    train, held = split_held_out(samples, 30, seed=0)
    assert len(held) == 30
    train_images, held_images = {s.image for s in train}, {s.image for s in held}
    assert not train_images & held_images
    assert train_images | held_images == {s.image for s in samples}  # no image wasted whole
    assert [s for s in samples if s in train] == train and [s for s in samples if s in held] == held


def test_seeded(samples) -> None:
    assert split_held_out(samples, 30, seed=1) == split_held_out(samples, 30, seed=1)
    assert split_held_out(samples, 30, seed=1)[1] != split_held_out(samples, 30, seed=2)[1]


def test_none_held_out_and_too_many(samples) -> None:
    assert split_held_out(samples, 0, seed=0) == (list(samples), [])
    with pytest.raises(DataError, match=f"holding out {len(samples)} questions takes every one of the 32 images"):
        split_held_out(samples, len(samples), seed=0)
    with pytest.raises(ValueError, match="questions must be >= 0"):
        split_held_out(samples, -1, seed=0)

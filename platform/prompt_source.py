"""The stream of training prompts: the recipe's data, loaded once, drawn in seeded epochs.

Loading (and generating the synthetic set) happens in the driver before Ray starts, so broken
data is reported before any actor exists. The stream's position is a small state dict, which a
checkpoint stores so a resumed run draws the same prompts as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import random
from functools import partial
from pathlib import Path

from anomalyr1.data_pipelines import DataError, MMADLoad, Sample, ensure_synthetic_mmad, load_mmad, shuffle_options
from anomalyr1.data_pipelines.fewshot import load_fewshot
from anomalyr1.data_pipelines.hf_dataset import load_hf_dataset
from anomalyr1.platform.recipe import DataConfig


def synthetic_root(data: DataConfig, cache_dir: str) -> Path:
    if data.root:
        return Path(data.root).expanduser()
    settings = json.dumps(data.synthetic.model_dump(), sort_keys=True)
    digest = hashlib.sha1(settings.encode()).hexdigest()[:10]
    return Path(cache_dir).expanduser() / "data" / f"synthetic-{digest}"


def load_training_data(data: DataConfig, cache_dir: str) -> MMADLoad:
    if data.source == "hf":
        return _load_built_dataset(data, cache_dir)
    if data.source == "synthetic":
        root = ensure_synthetic_mmad(synthetic_root(data, cache_dir), **data.synthetic.model_dump())
    else:
        root = Path(data.root).expanduser()
    # a few-shot file keeps only its images; load_fewshot filters like load_mmad
    load = partial(load_fewshot, data.fewshot_file) if data.fewshot_file else load_mmad
    loaded = load(
        root, strict=data.strict, datasets=data.datasets, question_types=data.question_types, max_samples=data.max_samples
    )
    if not loaded.samples:
        raise DataError(f"{root}: no usable questions after filtering ({len(loaded.problems)} problems)")
    return loaded


class PromptSource:
    def __init__(self, samples: list[Sample], seed: int, shuffle: bool = True):
        self.samples = samples
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.position = 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> list[int]:
        order = list(range(len(self.samples)))
        random.Random(f"{self.seed}:{epoch}").shuffle(order)
        return order

    def next(self, count: int) -> list[Sample]:
        batch = []
        while len(batch) < count:
            if self.position == len(self._order):
                self.epoch, self.position = self.epoch + 1, 0
                self._order = self._permutation(self.epoch)
            index = self._order[self.position]
            sample = self.samples[index]
            if self.shuffle:
                sample = shuffle_options(sample, random.Random(f"{self.seed}:{self.epoch}:{index}"))
            batch.append(sample)
            self.position += 1
        return batch

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._order = self._permutation(self.epoch)


def _load_built_dataset(data: DataConfig, cache_dir: str) -> MMADLoad:
    """A dataset built once and shared: its images land in this node's cache on first use."""
    root = Path(data.root).expanduser()
    samples = load_hf_dataset(root, Path(cache_dir).expanduser() / "hf-files")
    kept = [
        s for s in samples
        if (data.datasets is None or s.dataset in data.datasets) and (data.question_types is None or s.question_type in data.question_types)
    ][: data.max_samples]
    if not kept:
        raise DataError(f"{root}: no questions after filtering")
    return MMADLoad(root, kept)


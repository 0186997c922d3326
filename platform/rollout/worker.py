"""The rollout role: a Ray actor that turns Samples into G completions each (or, with
rollout.placement colocated, the same object inside each learner actor).

Prompt building, image loading and processing happen here, next to the engine, so the driver
only ships small Sample dicts out and gets token ids, pixels and texts back.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, replace
from typing import Iterable, Mapping

import torch

from anomalyr1.data_pipelines.schema import Sample
from anomalyr1.platform.adapter_sync import AdapterUpdate
from anomalyr1.platform.batch import RolloutGroup
from anomalyr1.platform.encoding import encode_prompt
from anomalyr1.platform.models import load_processor, resolve_model_path
from anomalyr1.platform.recipe import recipe_in_actor
from anomalyr1.platform.rollout.hf_engine import HFEngine
from anomalyr1.platform.rollout.sampling import SamplingSettings


@dataclass
class RolloutResult:
    groups: list[RolloutGroup]
    compute_s: float
    incarnation: str
    """Changes when Ray restarts the worker: a restarted worker holds its initial weights again."""


class RolloutWorker:
    def __init__(self, rank: int, recipe: dict):
        self.rank = rank
        self.incarnation = uuid.uuid4().hex
        self.loaded_fingerprint: float | None = None
        self.recipe = recipe_in_actor(recipe)
        torch.set_num_threads(self.recipe.trainer.torch_threads)
        model = self.recipe.model
        self.pixel_dtype = getattr(torch, self.recipe.learner.param_dtype)
        path = resolve_model_path(model)
        self.processor = load_processor(path, model.min_pixels, model.max_pixels)
        if self.recipe.rollout.engine == "vllm":
            from anomalyr1.platform.rollout.vllm_engine import VLLMEngine

            self.engine = VLLMEngine(path, self.processor.tokenizer, self.recipe)
        else:
            # colocated, the engine has the learner's devices (also under `anomalyr1 eval`: placement.eval_demand)
            colocated = self.recipe.rollout.placement == "colocated"
            gpus = self.recipe.learner.num_gpus if colocated else self.recipe.rollout.num_gpus
            device = "cuda" if gpus > 0 and torch.cuda.is_available() else "cpu"
            self.engine = HFEngine(path, self.processor.tokenizer, model.dtype, model.attn_implementation, device)

    def generate(self, samples: list[dict], sampling: SamplingSettings, texts_only: bool = False) -> RolloutResult:
        """G completions per sample. texts_only drops the token ids and pixels from the result:
        evaluation needs only the answers, and shipping every image's pixels back to the driver
        costs megabytes per question on a real model."""
        start = time.perf_counter()
        prompts = [
            encode_prompt(self.processor, Sample.from_dict(s), self.recipe.prompt, self.recipe.data.max_image_pixels,
                          self.recipe.data.max_image_size)
            for s in samples
        ]
        groups = self.engine.generate(prompts, sampling)
        if texts_only:
            groups = [replace(g, prompt_ids=[], pixel_values=torch.empty(0), image_grid_thw=torch.empty(0), responses=[]) for g in groups]
        else:  # the learners' vision tower casts pixels to its compute dtype: in bf16 they travel at half the bytes
            groups = [replace(g, pixel_values=g.pixel_values.to(self.pixel_dtype)) for g in groups]
        return RolloutResult(groups=groups, compute_s=time.perf_counter() - start, incarnation=self.incarnation)

    def update_weights(
        self, weights: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]] | AdapterUpdate, checksum: bool = False
    ) -> str:
        """Load the learners' weights (a dict from the object store, or named tensors as a
        colocated learner gathers them) or their adapters alone (learner.lora.sync = adapter, see
        adapter_sync); returns the incarnation that now holds them. With `checksum`, the load
        also leaves the fingerprint of what it loaded (`fingerprint`)."""
        named = weights.items() if isinstance(weights, Mapping) else weights
        self.loaded_fingerprint = self.engine.update_weights(named, checksum)
        return self.incarnation

    def pid(self) -> int:
        return os.getpid()

    def fingerprint(self) -> float:
        """models.fingerprint of the weights the last load put in the engine, comparable with the
        learners' (see each engine's update_weights for what exactly it sums)."""
        if self.loaded_fingerprint is None:
            raise RuntimeError("no checksum of the last weight load: load with update_weights(state, checksum=True)")
        return self.loaded_fingerprint


"""DeepSpeed ZeRO-2/3 as a learner backend (`learner.backend: deepspeed`).

The learner drives accumulation itself (one backward per micro-batch, one step per mini-batch),
so DeepSpeed runs with gradient_accumulation_steps=1 and is told where a mini-batch ends with
`set_gradient_accumulation_boundary`. On CPU it needs DS_ACCELERATOR=cpu, set before import.

Resume: DeepSpeed's own optimizer checkpoints are pickles, which this platform does not load.
ZeRO wraps the torch AdamW it is given and keeps that optimizer's state for this rank's flat fp32
partition, so each rank saves that state as safetensors (like FSDP2's shards) and loads it back
into the same partition layout: the moments survive a resume.
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.distributed as dist
from torch import nn

from anomalyr1.platform.learner.state import load_rank_state, save_rank_state


def _deepspeed():
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    for key, value in (("RANK", dist.get_rank()), ("LOCAL_RANK", 0), ("WORLD_SIZE", dist.get_world_size())):
        os.environ.setdefault(key, str(value))  # DeepSpeed reads these; the group already exists
    import deepspeed

    return deepspeed


def _config(recipe, stage: int, train: bool) -> dict:
    learner = recipe.learner
    config = {
        "train_micro_batch_size_per_gpu": learner.micro_batch_size,
        "gradient_accumulation_steps": 1,
        "zero_optimization": {"stage": stage},
        "bf16": {"enabled": learner.param_dtype == "bfloat16"},
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }
    if train:
        config["gradient_clipping"] = learner.grad_clip
        if learner.cpu_offload:
            config["zero_optimization"]["offload_optimizer"] = {"device": "cpu"}
    return config


class DeepSpeedBackend:
    def __init__(self, policy: nn.Module, recipe):
        deepspeed = _deepspeed()
        learner = recipe.learner
        self.stage = learner.zero_stage
        self.optimizer = torch.optim.AdamW(policy.parameters(), lr=learner.lr, betas=learner.betas, weight_decay=learner.weight_decay)
        self.engine, self.zero_optimizer, _, _ = deepspeed.initialize(
            model=policy, optimizer=self.optimizer, config=_config(recipe, self.stage, train=True), dist_init_required=False
        )
        self.module = self.engine

    def backward(self, loss: torch.Tensor, last_micro_batch: bool) -> None:
        self.engine.set_gradient_accumulation_boundary(last_micro_batch)
        self.engine.backward(loss)

    def step(self, grad_clip: float, loss_is_finite: bool) -> tuple[float, bool]:
        if not loss_is_finite:  # DeepSpeed has no fp32 overflow check: never let a NaN loss step
            self.zero_optimizer.zero_grad()
            return float("nan"), False
        self.engine.step()
        norm = self.engine.get_global_grad_norm()
        norm = float(norm) if norm is not None else 0.0
        return norm, math.isfinite(norm)

    def _gathered(self):
        if self.stage == 3:
            import deepspeed

            return deepspeed.zero.GatheredParameters(list(self.engine.module.parameters()), modifier_rank=None)
        from contextlib import nullcontext

        return nullcontext()

    def full_state_dict(self, every_rank: bool = False) -> dict[str, torch.Tensor] | None:
        with self._gathered():  # on every rank: ZeRO-3 gathers each parameter whole everywhere
            if dist.get_rank() != 0 and not every_rank:
                return None
            return {k: v.detach().to("cpu", copy=True) for k, v in self.engine.module.state_dict().items()}

    def rollout_weights(self, dtype: torch.dtype, select: Callable[[str], bool] | None = None) -> dict[str, torch.Tensor] | None:
        state = self.full_state_dict()
        return dict(_for_rollout(state, dtype, select)) if state is not None else None

    def stream_rollout_weights(self, dtype: torch.dtype, select: Callable[[str], bool] | None = None) -> Iterator[tuple[str, torch.Tensor]]:
        return _for_rollout(self.full_state_dict(every_rank=True), dtype, select)  # ZeRO-3 gathers the whole model at once anyway

    def save_state(self, directory: Path, rank: int, world_size: int, extra: dict) -> None:
        with self._optimizer_params():
            save_rank_state(directory, rank, world_size, self.optimizer, extra)

    def load_state(self, directory: Path, rank: int, world_size: int) -> dict:
        with self._optimizer_params():
            return load_rank_state(directory, rank, world_size, self.optimizer)

    @contextmanager
    def _optimizer_params(self):
        """ZeRO-3 empties its torch optimizer's param groups between steps (it puts one flat fp32
        partition in at a time to step it); its own state_dict puts them all in around the read,
        and so do these, so the state maps to parameters in a fixed order."""
        if self.stage == 3:
            self.zero_optimizer._set_fp32_optimizer_param_groups()
        try:
            yield
        finally:
            if self.stage == 3:
                self.zero_optimizer._clear_fp32_optimizer_param_groups()


def _for_rollout(state: dict[str, torch.Tensor], dtype: torch.dtype, select: Callable[[str], bool] | None) -> Iterator[tuple[str, torch.Tensor]]:
    """The entries `select` accepts (all without it), floating ones cast to the rollout's dtype."""
    return ((k, v.to(dtype) if v.is_floating_point() else v) for k, v in state.items() if select is None or select(k))


def frozen_reference(policy: nn.Module, recipe) -> nn.Module:
    """The (frozen, eval-mode) reference policy: ZeRO-3 partitions it across ranks; otherwise
    each rank holds a copy."""
    if recipe.learner.zero_stage != 3:
        return policy
    deepspeed = _deepspeed()
    engine, *_ = deepspeed.initialize(model=policy, config=_config(recipe, 3, train=False), dist_init_required=False)
    return engine.eval()

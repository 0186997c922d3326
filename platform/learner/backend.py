"""What a learner needs from its sharding engine, so FSDP2 and DeepSpeed are interchangeable.

The learner owns the GRPO loop (micro-batches, losses, metrics); a backend owns how parameters,
gradients and optimizer state are sharded, how gradients are reduced and clipped, and how full
weights are gathered for the rollout workers and for saving.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator, Protocol

import torch
from torch import nn


class PolicyBackend(Protocol):
    module: nn.Module
    """The trainable policy to call forward on."""
    optimizer: torch.optim.Optimizer
    """The torch AdamW: its param groups carry the learning rate the schedule sets, its state
    the moments a checkpoint keeps."""

    def backward(self, loss: torch.Tensor, last_micro_batch: bool) -> None:
        """Accumulate the loss's gradients; they are reduced across ranks by the last micro-batch
        of an optimizer step at the latest."""

    def step(self, grad_clip: float, loss_is_finite: bool) -> tuple[float, bool]:
        """Clip and apply the accumulated gradients; returns (grad norm, applied). A non-finite
        loss or norm discards the gradients and leaves the weights as they were."""

    def rollout_weights(self, dtype: torch.dtype, select: Callable[[str], bool] | None = None) -> dict[str, torch.Tensor] | None:
        """Full weights at rank 0 (None elsewhere), cast for the rollout engine, only those whose
        names `select` accepts when given; collective."""

    def stream_rollout_weights(self, dtype: torch.dtype, select: Callable[[str], bool] | None = None) -> Iterator[tuple[str, torch.Tensor]]:
        """Full weights on every rank, cast for the rollout engine, tensor by tensor on the
        compute device, for an engine colocated with the rank (only those `select` accepts, when
        given); collective (consume it whole)."""

    def full_state_dict(self) -> dict[str, torch.Tensor] | None:
        """Full fp32 weights at rank 0 (None elsewhere), for saving; collective."""

    def save_state(self, directory: Path, rank: int, world_size: int, extra: dict) -> None: ...

    def load_state(self, directory: Path, rank: int, world_size: int) -> dict: ...


def rank0_loads_weights(name: str, world_size: int) -> bool:
    """Whether only rank 0 reads the weights from disk and the other ranks build the model empty
    (meta device) and receive their shards: FSDP2 with several ranks. DeepSpeed loads on every rank."""
    return name == "fsdp2" and world_size > 1


def make_backend(name: str, policy: nn.Module, recipe, device: torch.device, reference: bool = False) -> PolicyBackend | nn.Module:
    """The policy wrapped by the recipe's backend; with reference=True, a frozen sharded copy.
    `device` is where the learner computes and its collectives' tensors live."""
    if name == "deepspeed":
        from anomalyr1.platform.learner.deepspeed import DeepSpeedBackend, frozen_reference

        return frozen_reference(policy, recipe) if reference else DeepSpeedBackend(policy, recipe)
    from anomalyr1.platform.learner.fsdp import FSDPBackend, shard_policy

    if reference:
        return shard_policy(policy, getattr(torch, recipe.learner.param_dtype), recipe.learner.cpu_offload, device)
    return FSDPBackend(policy, recipe, device)

"""The learning-rate schedule: transformers' curves, advanced once per training step.

The AnomalyR1 reference ran transformers' Trainer defaults: a linear decay to 0 over the run,
no warmup, one optimizer step per training step. Here the schedule counts training steps
(trainer.steps in all), so a step that runs several optimizer steps (ppo_epochs,
mini_batch_size) or drops groups (algorithm.filter_groups) uses one rate throughout and the
schedule still ends where the run ends. Its state is a small JSON-able dict saved with each
checkpoint, so a resumed run continues the same curve.

The factors are those of transformers' get_scheduler ("constant_with_warmup", "linear",
"cosine" with half a cycle; tests/platform/test_lr_schedule.py compares them step by step),
computed here rather than imported: transformers.optimization imports its Trainer's utilities
and through them peft, ~1 s and ~25 MiB in every learner at start-up.
"""

from __future__ import annotations

import functools
import math

import torch


def _factor(step: int, name: str, warmup_steps: int, total_steps: int) -> float:
    """base_lr x this is the rate of training step `step` (0-based)."""
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    if name == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    if name == "linear":
        return max(0.0, 1.0 - progress)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))  # cosine


def lr_scheduler(optimizer: torch.optim.Optimizer, name: str, warmup_steps: int, total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """A scheduler over `optimizer`'s param groups: warmup from 0 over `warmup_steps`, then
    constant, linear to 0 or half a cosine to 0 at `total_steps`."""
    factor = functools.partial(_factor, name=name, warmup_steps=warmup_steps, total_steps=total_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    """The rate the optimizer applies now (its first param group's)."""
    return float(optimizer.param_groups[0]["lr"])

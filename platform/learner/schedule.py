"""The learning-rate schedule: transformers' schedulers, advanced once per training step.

The AnomalyR1 reference ran transformers' Trainer defaults: a linear decay to 0 over the run,
no warmup, one optimizer step per training step. Here the schedule counts training steps
(trainer.steps in all), so a step that runs several optimizer steps (ppo_epochs,
mini_batch_size) or drops groups (algorithm.filter_groups) uses one rate throughout and the
schedule still ends where the run ends. Its state is a small JSON-able dict saved with each
checkpoint, so a resumed run continues the same curve.
"""

from __future__ import annotations

import torch
from transformers import get_scheduler

SCHEDULES = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}
"""Recipe name -> transformers' scheduler (constant honours warmup_steps too)."""


def lr_scheduler(optimizer: torch.optim.Optimizer, name: str, warmup_steps: int, total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """A scheduler over `optimizer`'s param groups: warmup from 0 over `warmup_steps`, then
    constant, linear to 0 or half a cosine to 0 at `total_steps`. Step index s (0-based) trains
    at base_lr x factor(s), as transformers computes it."""
    return get_scheduler(SCHEDULES[name], optimizer, num_warmup_steps=warmup_steps, num_training_steps=total_steps)


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    """The rate the optimizer applies now (its first param group's)."""
    return float(optimizer.param_groups[0]["lr"])

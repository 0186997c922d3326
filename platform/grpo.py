"""The algorithm's numbers, taken from verl's `core_algos` by the names a recipe gives.

The platform owns the Ray roles but not the math: advantage estimators, policy losses, KL
estimators and loss aggregation are verl's, so a recipe can name anything verl registers and
the results match verl's trainers.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from anomalyr1.platform.recipe import AlgorithmConfig


@functools.cache
def _core_algos():
    from verl.trainer.ppo import core_algos

    return core_algos


def compute_advantages(
    scores: torch.Tensor,
    group_ids: Sequence[str],
    response_mask: torch.Tensor,
    estimator: str = "grpo",
    norm_adv_by_std: bool = True,
    epsilon: float = 1e-6,
) -> torch.Tensor:
    """Token-level advantages (N, T) from one scalar score per completion and its group id;
    `epsilon` is added to the group's std by estimators that take it (verl's grpo)."""
    from verl.trainer.config import AlgoConfig

    core = _core_algos()
    token_rewards = torch.zeros_like(response_mask, dtype=torch.float32)
    lengths = response_mask.sum(-1).long()
    rows = torch.arange(len(scores))
    has_tokens = lengths > 0
    token_rewards[rows[has_tokens], lengths[has_tokens] - 1] = scores[has_tokens].float()
    config = AlgoConfig(adv_estimator=estimator, norm_adv_by_std_in_grpo=norm_adv_by_std)
    fn = core.get_adv_estimator_fn(estimator)
    kwargs = dict(token_level_rewards=token_rewards, response_mask=response_mask.float(), config=config)
    params = inspect.signature(fn).parameters
    if "index" in params:
        kwargs["index"] = np.asarray(group_ids, dtype=object)
    if "norm_adv_by_std_in_grpo" in params:
        kwargs["norm_adv_by_std_in_grpo"] = norm_adv_by_std
    if "epsilon" in params:
        kwargs["epsilon"] = epsilon
    advantages, _returns = fn(**kwargs)
    return advantages


@dataclass
class LossParts:
    loss: torch.Tensor
    pg_loss: torch.Tensor
    kl: torch.Tensor
    metrics: dict[str, float]


def _actor_config(algorithm: AlgorithmConfig, rollout_n: int, dp_size: int, batch_num_tokens: int, batch_size: int):
    from verl.workers.config import ActorConfig

    config = ActorConfig(
        strategy="fsdp2",
        rollout_n=rollout_n,
        ppo_mini_batch_size=max(1, batch_size),
        ppo_micro_batch_size_per_gpu=1,
        clip_ratio=algorithm.clip_ratio,
        clip_ratio_low=algorithm.clip_ratio_low,
        clip_ratio_high=algorithm.clip_ratio_high,
        loss_agg_mode=algorithm.loss_agg_mode,
        policy_loss={"loss_mode": algorithm.policy_loss},
    )
    config.global_batch_info.update(dp_size=dp_size, batch_num_tokens=batch_num_tokens, global_batch_size=batch_size)
    return config


def policy_objective(
    algorithm: AlgorithmConfig,
    rollout_n: int,
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    ref_log_prob: torch.Tensor | None = None,
    dp_size: int = 1,
    batch_num_tokens: int | None = None,
    batch_size: int | None = None,
    rollout_is_weights: torch.Tensor | None = None,
) -> LossParts:
    """The GRPO loss of one micro-batch: verl's policy loss plus beta x KL, both aggregated by verl.

    `batch_num_tokens` and `batch_size` describe the whole mini-batch across all learners, so that
    summing micro-batch losses and averaging gradients over `dp_size` ranks gives the same
    gradient as one pass over the whole mini-batch. `rollout_is_weights` (see
    `truncated_is_weights`) scale the token losses, as verl's losses do.
    """
    core = _core_algos()
    mask = response_mask.float()
    tokens = int(mask.sum().item()) if batch_num_tokens is None else batch_num_tokens
    sequences = int((mask.sum(-1) > 0).sum().item()) if batch_size is None else batch_size
    config = _actor_config(algorithm, rollout_n, dp_size, max(tokens, 1), max(sequences, 1))
    loss_fn = core.get_policy_loss_fn(algorithm.policy_loss)
    weights = {} if rollout_is_weights is None else {"rollout_is_weights": rollout_is_weights}
    pg_loss, pg_metrics = loss_fn(
        old_log_prob=old_log_prob,
        log_prob=log_prob,
        advantages=advantages,
        response_mask=mask,
        loss_agg_mode=algorithm.loss_agg_mode,
        config=config,
        **weights,
    )
    loss = pg_loss
    kl = torch.zeros((), dtype=log_prob.dtype)
    if ref_log_prob is not None and algorithm.kl_coef > 0:
        kl_mat = core.kl_penalty(log_prob, ref_log_prob, algorithm.kl_type)
        kl = core.agg_loss(kl_mat, mask, algorithm.loss_agg_mode, **config.global_batch_info)
        loss = loss + algorithm.kl_coef * kl
    metrics = {key: float(value) for key, value in pg_metrics.items()}
    return LossParts(loss=loss, pg_loss=pg_loss, kl=kl, metrics=metrics)


def truncated_is_weights(
    old_log_prob: torch.Tensor, rollout_log_prob: torch.Tensor, response_mask: torch.Tensor, level: str, threshold: float
) -> torch.Tensor:
    """verl's truncated importance weights min(pi_old / pi_rollout, threshold), per token or per
    sequence: they correct for samples drawn by the engine while the ratio's denominator is the
    learner's own log-prob of the same weights (the train/inference mismatch)."""
    from verl.trainer.ppo.rollout_corr_helper import compute_rollout_correction_weights

    weights, _metrics = compute_rollout_correction_weights(
        old_log_prob - rollout_log_prob, response_mask.float(), rollout_is=level, rollout_is_threshold=threshold
    )
    return weights

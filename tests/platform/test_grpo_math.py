"""GRPO numbers on a fixed small batch, against a hand computation (verl does the math)."""

import math

import pytest
import torch

from anomalyr1.platform.grpo import compute_advantages, policy_objective
from anomalyr1.platform.recipe import AlgorithmConfig
from anomalyr1.platform.verl_names import OUTCOME_ARGS, known_adv_estimators, known_policy_losses


def test_group_relative_advantages_by_hand():
    scores = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.2, 0.2, 0.2, 0.2])
    groups = ["a"] * 4 + ["b"] * 4
    mask = torch.tensor([[1, 1, 1]] * 8, dtype=torch.float32)
    mask[1, 2] = 0
    advantages = compute_advantages(scores, groups, mask, "grpo", norm_adv_by_std=True)
    std_a = math.sqrt(4 * 0.5**2 / 3)  # torch.std is the unbiased one, as in verl and DeepSeekMath
    expected = [0.5 / std_a, -0.5 / std_a, -0.5 / std_a, 0.5 / std_a, 0, 0, 0, 0]
    for row, value in enumerate(expected):
        assert advantages[row, 0].item() == pytest.approx(value, abs=1e-5)
    assert advantages[1, 2].item() == 0.0, "padding tokens get no advantage"
    dr_grpo = compute_advantages(scores, groups, mask, "grpo", norm_adv_by_std=False)
    assert dr_grpo[0, 0].item() == pytest.approx(0.5)


def test_adv_epsilon_reaches_verls_estimator():
    """(r - mean) / (std + eps): the reference's 1e-4 shows on a group whose std is small."""
    scores = torch.tensor([0.0, 0.0, 0.0, 1e-3])
    mask = torch.ones((4, 2))
    std = torch.tensor([0.0, 0.0, 0.0, 1e-3]).std().item()
    for epsilon in (1e-6, 1e-4):
        advantages = compute_advantages(scores, ["g"] * 4, mask, "grpo", epsilon=epsilon)
        assert advantages[3, 0].item() == pytest.approx((1e-3 - 2.5e-4) / (std + epsilon), rel=1e-5)
    assert compute_advantages(scores, ["g"] * 4, mask, "grpo", epsilon=1e-4)[3, 0].item() == pytest.approx(1.25, rel=1e-4)
    assert compute_advantages(scores, ["g"] * 4, mask, "grpo")[3, 0].item() == pytest.approx(1.497, rel=1e-3)  # verl's 1e-6


def test_clipped_loss_and_k3_kl_by_hand():
    old = torch.tensor([[-1.0, -1.0], [-2.0, -3.0]])
    new = torch.tensor([[-0.5, -1.2], [-1.9, -3.0]])
    ref = old.clone()
    advantages = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    algorithm = AlgorithmConfig(clip_ratio=0.2, kl_coef=0.1, kl_type="low_var_kl")
    parts = policy_objective(algorithm, 2, log_prob=new, old_log_prob=old, advantages=advantages, response_mask=mask, ref_log_prob=ref)

    r1, r2, r3 = math.exp(0.5), math.exp(-0.2), math.exp(0.1)
    token_losses = [max(-r1, -1.2), max(-r2, -min(max(r2, 0.8), 1.2)), max(r3, min(max(r3, 0.8), 1.2))]
    pg = sum(token_losses) / 3
    k3 = [math.exp(d) - d - 1 for d in (-0.5, 0.2, -0.1)]  # d = log pi_ref - log pi
    kl = sum(k3) / 3
    assert parts.pg_loss.item() == pytest.approx(pg, abs=1e-6)
    assert parts.kl.item() == pytest.approx(kl, abs=1e-6)
    assert parts.loss.item() == pytest.approx(pg + 0.1 * kl, abs=1e-6)
    assert parts.metrics["actor/pg_clipfrac"] == pytest.approx(1 / 3, abs=1e-6)


def test_sharded_micro_batches_sum_to_the_whole_batch_loss():
    """Learners aggregate with the global token count: shards' losses average to the full loss."""
    torch.manual_seed(0)
    old = torch.randn(4, 5)
    new = old + 0.3 * torch.randn(4, 5)
    ref = old + 0.1 * torch.randn(4, 5)
    advantages = torch.randn(4, 1).expand(4, 5).clone()
    mask = (torch.rand(4, 5) > 0.3).float()
    algorithm = AlgorithmConfig(kl_coef=0.05)
    whole = policy_objective(algorithm, 2, new, old, advantages, mask, ref).loss
    tokens = int(mask.sum())
    shards = [
        policy_objective(algorithm, 2, new[i::2], old[i::2], advantages[i::2], mask[i::2], ref[i::2], dp_size=2, batch_num_tokens=tokens, batch_size=4).loss
        for i in range(2)
    ]
    assert (sum(shards) / 2).item() == pytest.approx(whole.item(), abs=1e-6)


def test_recipe_names_come_from_verl():
    assert {"grpo", "rloo", "reinforce_plus_plus"} <= known_adv_estimators()
    assert "gae" not in known_adv_estimators(), "estimators that need a critic are not offered"
    assert {"vanilla", "gspo"} <= known_policy_losses()


def test_names_read_from_verls_source_are_its_live_registries():
    """verl_names reads the registrations without importing verl; verl itself must agree."""
    import inspect

    from verl.trainer.ppo import core_algos

    def required(fn):
        return {p.name for p in inspect.signature(fn).parameters.values()
                if p.default is inspect.Parameter.empty and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}

    live = {name for name, fn in core_algos.ADV_ESTIMATOR_REGISTRY.items() if required(fn) <= OUTCOME_ARGS}
    assert known_adv_estimators() == live
    assert known_policy_losses() == set(core_algos.POLICY_LOSS_REGISTRY)

"""Bounded staleness without Ray: which rollouts may start early, the staleness figures, and the
truncated importance weights (verl's) the learner may apply."""

import math

import pytest
import torch

from anomalyr1.platform.batch import RolloutGroup, TrainSequence
from anomalyr1.platform.grpo import policy_objective, truncated_is_weights
from anomalyr1.platform.recipe import AlgorithmConfig, TrainerConfig
from anomalyr1.platform.staleness import may_launch, staleness_metrics


def launchable(trainer: TrainerConfig, current: int) -> list[int]:
    """Steps whose rollout may start while step `current` trains (weights of step current - 1)."""
    return [step for step in range(current + 1, current + 5) if may_launch(step, current - 1, trainer)]


def test_zero_staleness_never_starts_a_rollout_early():
    trainer = TrainerConfig(steps=10, max_staleness=0)
    assert all(launchable(trainer, step) == [] for step in range(1, 11))


@pytest.mark.parametrize("k", [1, 2, 3])
def test_k_steps_may_run_ahead_but_not_past_the_end(k):
    trainer = TrainerConfig(steps=10, max_staleness=k)
    assert launchable(trainer, 3) == list(range(4, 4 + k))
    assert launchable(trainer, 9) == [10]
    assert launchable(trainer, 10) == []


def test_no_rollout_starts_across_a_checkpoint():
    """A run resumed at checkpoint c generates step c + 1 from c's weights; so must the uninterrupted run."""
    trainer = TrainerConfig(steps=10, max_staleness=2, save_every=4)
    assert launchable(trainer, 2) == [3, 4]
    assert launchable(trainer, 3) == [4], "step 5 would come from weights older than the checkpoint at 4"
    assert launchable(trainer, 4) == []
    assert launchable(trainer, 5) == [6, 7]


def _sequence(staleness: int) -> TrainSequence:
    group = RolloutGroup(sample={}, prompt_ids=[1], pixel_values=torch.zeros(1, 1), image_grid_thw=torch.ones(1, 3), responses=[[2]], texts=["x"])
    return TrainSequence(group=group, response_index=0, advantage=0.0, staleness=staleness)


def test_staleness_metrics():
    metrics = staleness_metrics([_sequence(0), _sequence(1), _sequence(1), _sequence(2)])
    assert metrics == {"async/staleness_mean": 1.0, "async/staleness_max": 2.0}


def test_a_stale_sequence_without_engine_log_probs_is_refused():
    with pytest.raises(RuntimeError, match="engine's log-probs"):
        _sequence(1).behaviour_log_prob()


@pytest.mark.parametrize("level", ["token", "sequence"])
def test_truncated_importance_weights_by_hand(level):
    old = torch.tensor([[-1.0, -2.0, -0.5], [-1.0, -1.0, -1.0]])
    engine = torch.tensor([[-1.5, -1.0, -0.5], [-3.0, -1.0, -9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    weights = truncated_is_weights(old, engine, mask, level, threshold=2.0)
    if level == "token":
        expected = [[math.exp(0.5), math.exp(-1.0), 1.0], [2.0, 1.0, 0.0]]
    else:
        expected = [[math.exp(-0.5)] * 3, [2.0, 2.0, 0.0]]  # exp(2) truncated at 2
    torch.testing.assert_close(weights, torch.tensor(expected), atol=1e-6, rtol=0)


def test_importance_weights_scale_the_policy_loss():
    log_prob = torch.tensor([[-1.0, -2.0]])
    advantages = torch.tensor([[1.0, 1.0]])
    mask = torch.ones(1, 2)
    algorithm = AlgorithmConfig()
    plain = policy_objective(algorithm, 2, log_prob, log_prob, advantages, mask).pg_loss
    weighted = policy_objective(algorithm, 2, log_prob, log_prob, advantages, mask, rollout_is_weights=torch.tensor([[0.5, 1.0]])).pg_loss
    assert plain.item() == pytest.approx(-1.0)
    assert weighted.item() == pytest.approx(-(0.5 + 1.0) / 2)

"""GRPO on the platform learns, not only runs: a learnable reward rises over training."""

from statistics import fmean

import pytest

from anomalyr1.platform.driver import Trainer
from anomalyr1.platform.metrics import read_metrics

STEPS = 24
WINDOW = 5


@pytest.mark.parametrize(
    "setting",
    ["trainer.max_staleness=0", "trainer.max_staleness=1", "rollout.placement=colocated"],
    ids=["synchronous", "staleness1", "colocated"],
)
def test_reward_rises_under_grpo(ray_session, tiny_recipe, learnable_reward, setting):
    recipe = tiny_recipe(
        f"trainer.steps={STEPS}",
        setting,
        learnable_reward,
        "learner.lr=2.0e-3",
        "algorithm.kl_coef=0.0",
    )
    trainer = Trainer(recipe)
    trainer.train()
    rewards = [m["reward/mean"] for m in read_metrics(trainer.output / "metrics.jsonl")]
    first, last = fmean(rewards[:WINDOW]), fmean(rewards[-WINDOW:])
    assert last > first + 0.2 and last > 2 * first, (
        f"mean reward over the first {WINDOW} steps {first:.3f}, over the last {WINDOW} steps {last:.3f}: "
        f"expected a clear rise (all steps: {[round(r, 2) for r in rewards]})"
    )

"""The tiny recipe on Ray: every role for real, in both shapes the issue names."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from anomalyr1.platform.driver import Trainer
from anomalyr1.platform.metrics import read_metrics

REQUIRED_METRICS = {
    "reward/mean", "reward/std", "reward/contains_target", "actor/pg_loss", "actor/kl", "actor/clipfrac",
    "actor/grad_norm", "response_length/mean", "timing/rollout_s", "timing/reward_s", "timing/learner_s",
    "timing/sync_s", "timing/step_s", "throughput/tokens_per_s", "rollout/log_prob_diff_mean", "rollout/log_prob_diff_max",
}


def _run(recipe):
    trainer = Trainer(recipe)
    final = trainer.train()
    return trainer, final, read_metrics(trainer.output / "metrics.jsonl")


@pytest.mark.parametrize("workers", [2, 1], ids=["2x2x2", "1x1x1"])
def test_tiny_recipe_trains_on_ray(ray_session, tiny_recipe, tiny_model, learnable_reward, workers):
    recipe = tiny_recipe(
        "trainer.steps=3",
        f"rollout.workers={workers}",
        f"reward.actors={workers}",
        f"learner.workers={workers}",
        learnable_reward,
        "trainer.prompts_per_step=4",
    )
    trainer, final, metrics = _run(recipe)
    assert [m["step"] for m in metrics] == [1, 2, 3]
    for record in metrics:
        missing = REQUIRED_METRICS - set(record)
        assert not missing, f"step {record['step']} lacks {missing}"
    assert any(m["reward/std"] > 0 for m in metrics), "no reward spread: the learnable reward never fired"
    assert all(m["train/groups_with_spread"] * 4 in (0, 1, 2, 3, 4) for m in metrics), "a share of the step's 4 groups"
    assert any(m["actor/grad_norm"] > 0 for m in metrics)
    assert all(m["rollout/log_prob_diff_mean"] < 1e-3 for m in metrics), "the rollout sampled with weights the learners do not hold"
    start = {key: metrics[0].get(key) for key in ("perf/ray_start_s", "perf/roles_start_s")}
    assert None not in start.values() and start["perf/ray_start_s"] >= 0 and start["perf/roles_start_s"] > 0, f"step 1's start-up times: {start}"
    assert not any("perf/roles_start_s" in m for m in metrics[1:]), "start-up times belong to the first step only"

    from transformers import Qwen2_5_VLForConditionalGeneration

    trained = Qwen2_5_VLForConditionalGeneration.from_pretrained(final)
    initial = load_file(str(Path(tiny_model) / "model.safetensors"))
    changed = [k for k, v in trained.state_dict().items() if k in initial and not torch.equal(v, initial[k])]
    assert changed, "training did not change any weight"
    assert (Path(final) / "tokenizer.json").is_file() and (Path(final) / "processor_config.json").is_file()
    assert (trainer.output / "recipe.yaml").is_file()


def test_staleness_one_overlaps_rollout_and_update(ray_session, tiny_recipe, learnable_reward):
    """max_staleness 1, one actor per role: step 1 is fresh, every later batch comes from the weights
    one update back, and its importance ratio is taken against the engine's (behaviour) log-probs."""
    recipe = tiny_recipe(
        "trainer.steps=4", "trainer.max_staleness=1", "rollout.workers=1", "reward.actors=1", "learner.workers=1",
        learnable_reward, "trainer.prompts_per_step=4",
    )
    trainer, _final, metrics = _run(recipe)
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    assert [m["async/staleness_max"] for m in metrics] == [0.0, 1.0, 1.0, 1.0]
    assert [m["async/staleness_mean"] for m in metrics] == [0.0, 1.0, 1.0, 1.0]
    for record in metrics:
        for role in ("rollout", "learner"):
            assert 0.0 <= record[f"perf/{role}_idle_frac"] < 1.0
    # fresh, one optimizer step: the old policy is the training pass itself, so the ratio is 1
    assert metrics[0]["actor/ratio_mean"] == 1.0
    assert metrics[0]["rollout/log_prob_diff_mean"] < 1e-3
    # stale: the learners moved since the rollout's weights, and the ratio shows it
    assert any(abs(m["actor/ratio_mean"] - 1.0) > 1e-4 for m in metrics[1:]), [m["actor/ratio_mean"] for m in metrics]
    assert not trainer.ahead, "a rollout was started past the run's last step"

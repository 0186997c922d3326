"""The DeepSpeed learner backend: ZeRO-2 and ZeRO-3 (the AnomalyR1 reference's stage) over gloo
on CPU, two ranks, through the whole loop."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from anomalyr1.platform.driver import Trainer
from anomalyr1.platform.metrics import read_metrics


@pytest.mark.parametrize("stage,placement", [(2, "separate"), (3, "separate"), (3, "colocated")])
def test_zero_learners_train_the_tiny_recipe(ray_session, tiny_recipe, tiny_model, learnable_reward, stage, placement):
    """Colocated, every ZeRO-3 rank gathers the whole model into its own engine."""
    trainer = Trainer(tiny_recipe("learner.backend=deepspeed", f"learner.zero_stage={stage}", "learner.workers=2", "trainer.steps=2",
                                  "trainer.prompts_per_step=4", "rollout.n=4", learnable_reward, f"rollout.placement={placement}"))
    final = trainer.train()
    metrics = read_metrics(trainer.output / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2]
    assert metrics[1]["rollout/log_prob_diff_mean"] < 1e-3, "step 2 rolls out with step 1's update: a missed sync shows here"
    assert any(m["actor/grad_norm"] > 0 for m in metrics) and all(m["actor/skipped_updates"] == 0 for m in metrics)

    from transformers import Qwen2_5_VLForConditionalGeneration

    trained = Qwen2_5_VLForConditionalGeneration.from_pretrained(final).state_dict()
    initial = load_file(str(Path(tiny_model) / "model.safetensors"))
    assert any(not torch.equal(v, initial[k]) for k, v in trained.items() if k in initial), f"ZeRO-{stage} updates changed nothing"

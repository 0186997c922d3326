"""The learner on its own (one gloo rank): the numeric guard and micro-batching by token budget."""

import math

import pytest
import torch

from anomalyr1.data_pipelines import load_mmad
from anomalyr1.platform.batch import TrainSequence
from anomalyr1.platform.encoding import encode_prompt
from anomalyr1.platform.learner.worker import LearnerWorker, free_port
from anomalyr1.platform.rollout.hf_engine import HFEngine
from anomalyr1.platform.rollout.sampling import SamplingSettings


@pytest.fixture
def learner(tiny_recipe):
    recipe = tiny_recipe("learner.workers=1", "learner.lr=1e-2")
    worker = LearnerWorker(0, 1, recipe.model_dump(mode="json"))
    worker.setup("127.0.0.1", free_port())
    yield worker
    worker.shutdown()


def sequences(learner, synthetic_root, advantage: float) -> list[TrainSequence]:
    samples = load_mmad(synthetic_root).samples[:2]
    prompts = [encode_prompt(learner.processor, s, learner.recipe.prompt, 112 * 112) for s in samples]
    groups = HFEngine(learner.model_path, learner.processor.tokenizer).generate(prompts, SamplingSettings(n=2, max_new_tokens=8, seed=0))
    return [TrainSequence(group=g, response_index=i, advantage=advantage if i == 0 else -1.0) for g in groups for i in range(2)]


def weights(learner) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in learner.engine.full_state_dict().items()}


def test_non_finite_loss_skips_the_update(learner, synthetic_root):
    before = weights(learner)
    result = learner.update(sequences(learner, synthetic_root, float("nan")), total_sequences=4, seed=0)
    assert result.metrics["actor/skipped_updates"] == 1.0
    after = weights(learner)
    assert all(torch.equal(before[k], after[k]) for k in before), "a skipped update changed the weights"
    assert math.isnan(result.metrics["actor/pg_loss"]), "the bad loss is logged as it was (null in metrics.jsonl)"

    result = learner.update(sequences(learner, synthetic_root, 1.0), total_sequences=4, seed=1)
    assert result.metrics["actor/skipped_updates"] == 0.0
    assert any(not torch.equal(after[k], v) for k, v in weights(learner).items()), "a finite update must still train"


def test_token_budget_packs_micro_batches(tiny_recipe, synthetic_root):
    recipe = tiny_recipe("learner.workers=1", "learner.micro_batch_tokens=200")
    learner = LearnerWorker(0, 1, recipe.model_dump(mode="json"))
    learner.setup("127.0.0.1", free_port())
    try:
        batch = sequences(learner, synthetic_root, 1.0)
        packed = learner._micro_batches(batch)
        assert [s for micro in packed for s in micro] == batch, "packing keeps every sequence, in order"
        for micro in packed:
            width = max(len(s.group.prompt_ids) for s in micro) + max(len(s.response) for s in micro)
            assert len(micro) == 1 or len(micro) * width <= 200
        assert len(packed) > 1
        assert learner.update(batch, total_sequences=len(batch), seed=0).metrics["actor/skipped_updates"] == 0.0
    finally:
        learner.shutdown()


def test_actor_lr_is_the_rate_the_optimizer_applied(tiny_recipe, synthetic_root):
    """With one warmup step the first training step trains at rate 0 (transformers' warmup starts
    there): the weights must not move, and actor/lr must say 0, then the peak."""
    recipe = tiny_recipe("learner.workers=1", "learner.lr=1e-2", "learner.lr_scheduler=linear",
                         "learner.warmup_steps=1", "trainer.steps=3")
    learner = LearnerWorker(0, 1, recipe.model_dump(mode="json"))
    learner.setup("127.0.0.1", free_port())
    try:
        batch = sequences(learner, synthetic_root, 1.0)
        before = weights(learner)
        first = learner.update(batch, total_sequences=len(batch), seed=0).metrics
        assert first["actor/lr"] == 0.0 and first["actor/grad_norm"] > 0
        assert all(torch.equal(before[k], v) for k, v in weights(learner).items()), "rate 0 moved the weights"
        second = learner.update(batch, total_sequences=len(batch), seed=1).metrics
        assert second["actor/lr"] == pytest.approx(1e-2)
        assert any(not torch.equal(before[k], v) for k, v in weights(learner).items())
        assert learner.update(batch, total_sequences=len(batch), seed=2).metrics["actor/lr"] == pytest.approx(0.5e-2)
    finally:
        learner.shutdown()


def test_ppo_epochs_and_mini_batches_recompute_old_log_probs(tiny_recipe, synthetic_root):
    """2 epochs x 2 mini-batches = 4 optimizer steps on one rollout: old log-probs are taken once
    before the first, so the first step's ratio is 1 (ppo_kl 0) and later ones move off it."""
    recipe = tiny_recipe("learner.workers=1", "learner.lr=1e-2", "algorithm.ppo_epochs=2", "learner.mini_batch_size=2")
    learner = LearnerWorker(0, 1, recipe.model_dump(mode="json"))
    learner.setup("127.0.0.1", free_port())
    steps = []
    take_step = learner._optimizer_step

    def recording(chunk, template):
        steps.append((len(chunk), take_step(chunk, template)))
        return steps[-1][1]

    learner._optimizer_step = recording
    try:
        batch = sequences(learner, synthetic_root, 1.0)
        learner.update(batch, total_sequences=len(batch), seed=0)
        assert all(s.old_log_prob is not None and len(s.old_log_prob) == len(s.response) for s in batch)
        assert [size for size, _ in steps] == [2, 2, 2, 2]
        kls = [abs(metrics["actor/ppo_kl"]) for _, metrics in steps]
        assert kls[0] < 1e-6, f"the first step starts at ratio 1: {kls}"
        assert all(kl > 1e-5 for kl in kls[1:]), f"the policy moved, so the ratio must: {kls}"
    finally:
        learner.shutdown()

"""LoRA: adapters train, the base stays exact and is the reference, engines get merged weights,
and the saved model is a plain Qwen2.5-VL with the adapters beside it in PEFT's format."""

import json
from statistics import fmean

import pytest
import torch
from safetensors.torch import load_file

from anomalyr1.data_pipelines import load_mmad
from anomalyr1.platform.batch import TrainSequence
from anomalyr1.platform.driver import Trainer
from anomalyr1.platform.encoding import encode_prompt
from anomalyr1.platform.learner.worker import LearnerWorker, free_port
from anomalyr1.platform.metrics import read_metrics
from anomalyr1.platform.models import load_policy
from anomalyr1.platform.rollout.hf_engine import HFEngine
from anomalyr1.platform.rollout.sampling import SamplingSettings

LORA = ("learner.lora.rank=8", "learner.lora.target_modules=[q_proj, v_proj, lm_head]")
"""On the tiny random model the final norm bounds what adapters inside the layers can do to
the logits (about one nat), so the learning test adapts the output head as well."""


@pytest.mark.parametrize("placement", ["separate", "colocated"])
def test_adapters_alone_learn_and_the_saved_model_is_plain(ray_session, tiny_recipe, learnable_reward, tiny_model, placement):
    """Colocated, each rank merges the gathered adapters into its own engine's copy."""
    recipe = tiny_recipe("trainer.steps=12", learnable_reward, "learner.lr=2e-2", "algorithm.kl_coef=0.0", *LORA, f"rollout.placement={placement}")
    trainer = Trainer(recipe)
    final = trainer.train()
    metrics = read_metrics(trainer.output / "metrics.jsonl")
    rewards = [m["reward/mean"] for m in metrics]
    assert fmean(rewards[-4:]) > fmean(rewards[:4]) + 0.3, rewards
    assert 0 < metrics[0]["learner/trainable_share"] < 0.1
    assert all("learner/trainable_share" not in m for m in metrics[1:])
    assert max(m["rollout/log_prob_diff_mean"] for m in metrics) < 2e-3, "merged weights must reach the engines"
    weights = load_file(str(final / "model.safetensors"))
    assert not [k for k in weights if "lora" in k or "base_layer" in k]
    assert weights.keys() == load_file(f"{tiny_model}/model.safetensors").keys()
    assert load_policy(str(final)).state_dict().keys() == load_policy(tiny_model).state_dict().keys()
    assert json.loads((final / "adapter" / "adapter_config.json").read_text())["r"] == 8
    assert any("lora_B" in k for k in load_file(str(final / "adapter" / "adapter_model.safetensors")))


def test_the_base_stays_exact_and_is_the_reference(tiny_recipe, synthetic_root, tiny_model):
    recipe = tiny_recipe("learner.workers=1", "learner.lr=5e-2", "algorithm.kl_coef=0.5", *LORA)
    learner = LearnerWorker(0, 1, recipe.model_dump(mode="json"))
    learner.setup("127.0.0.1", free_port())
    try:
        samples = load_mmad(synthetic_root).samples[:2]
        prompts = [encode_prompt(learner.processor, s, recipe.prompt, 112 * 112) for s in samples]
        groups = HFEngine(tiny_model, learner.processor.tokenizer).generate(prompts, SamplingSettings(n=2, max_new_tokens=8, seed=0))
        batch = lambda: [TrainSequence(group=g, response_index=i, advantage=1.0 - 2 * i) for g in groups for i in range(2)]
        first = learner.update(batch(), total_sequences=4, seed=0).metrics
        second = learner.update(batch(), total_sequences=4, seed=1).metrics
        assert first["actor/kl"] == 0.0, "before any update the adapters add nothing: policy == reference"
        assert second["actor/kl"] > 0, "the reference is the base, not the adapted policy"
        base = load_policy(tiny_model).state_dict()
        state = learner.engine.full_state_dict()
        frozen = {k.removeprefix("base_model.model.").replace(".base_layer.", "."): v for k, v in state.items() if "lora_" not in k}
        assert frozen.keys() == base.keys() and all(torch.equal(frozen[k], base[k]) for k in base), "the base moved"
        merged = learner._policy_weights()[0]
        assert not torch.equal(merged["lm_head.weight"], base["lm_head.weight"]), "adapters merged into what engines get"
        reference = learner.log_probs(batch(), reference=True)
        model = load_policy(tiny_model)
        from anomalyr1.platform.batch import collate, response_log_probs

        items = collate([(s.group, s.response) for s in batch()], learner.pad_id, learner.image_token_id)
        with torch.no_grad():
            expected = response_log_probs(model(**items.inputs).logits, items, learner.suppressed)
        for row, values in enumerate(reference):
            assert torch.allclose(values, expected[row, : len(values)], atol=1e-5)
    finally:
        learner.shutdown()

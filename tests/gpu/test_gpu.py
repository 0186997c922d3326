"""CUDA paths: skipped cleanly without a GPU (and without vLLM for the vLLM test)."""

import importlib.util

import pytest
import torch

from anomalyr1.data_pipelines import load_mmad
from anomalyr1.platform.batch import TrainSequence
from anomalyr1.platform.encoding import encode_prompt
from anomalyr1.platform.learner.worker import LearnerWorker, free_port
from anomalyr1.platform.rollout.hf_engine import HFEngine
from anomalyr1.platform.rollout.sampling import SamplingSettings

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
needs_vllm = pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="needs vLLM")


@needs_cuda
def test_fsdp2_bf16_learner_step_on_nccl(tiny_recipe, synthetic_root):
    recipe = tiny_recipe("learner.workers=1", "learner.num_gpus=1", "learner.param_dtype=bfloat16", "learner.lr=1e-2",
                         "learner.gradient_checkpointing=true", "model.dtype=bfloat16")
    learner = LearnerWorker(0, 1, recipe.model_dump(mode="json"))
    learner.setup("127.0.0.1", free_port())
    assert learner.device.type == "cuda"
    assert torch.distributed.get_backend_config() == "cpu:gloo,cuda:nccl"  # CPU collectives have gloo
    samples = load_mmad(synthetic_root).samples[:4]
    prompts = [encode_prompt(learner.processor, s, recipe.prompt, 112 * 112) for s in samples]
    engine = HFEngine(learner.model_path, learner.processor.tokenizer, dtype="bfloat16", device="cuda")
    groups = engine.generate(prompts, SamplingSettings(n=4, max_new_tokens=16, seed=0))
    sequences = [TrainSequence(group=g, response_index=i, advantage=1.0 if i % 2 else -1.0) for g in groups for i in range(4)]
    before = {k: v.clone() for k, v in learner.engine.full_state_dict().items()}
    result = learner.update(sequences, total_sequences=len(sequences), seed=0)
    assert result.metrics["actor/skipped_updates"] == 0.0 and result.metrics["actor/grad_norm"] > 0
    after = learner.engine.full_state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    weights = learner.engine.rollout_weights(torch.bfloat16)
    assert all(v.dtype == torch.bfloat16 for v in weights.values() if v.is_floating_point())
    learner.shutdown()


@needs_cuda
@needs_vllm
def test_vllm_generate_update_generate_shows_new_weights(tiny_recipe, tiny_model, synthetic_root):
    from anomalyr1.platform.models import load_policy, load_processor
    from anomalyr1.platform.rollout.vllm_engine import VLLMEngine

    recipe = tiny_recipe("rollout.engine=vllm", "rollout.num_gpus=1", "rollout.gpu_memory_utilization=0.3", "model.dtype=bfloat16")
    processor = load_processor(tiny_model)
    engine = VLLMEngine(tiny_model, processor.tokenizer, recipe)
    prompts = [encode_prompt(processor, s, recipe.prompt, 112 * 112) for s in load_mmad(synthetic_root).samples[:2]]
    greedy = SamplingSettings(greedy=True, max_new_tokens=8)
    first = engine.generate(prompts, greedy)
    state = {k: v.to(torch.bfloat16) for k, v in load_policy(tiny_model).state_dict().items()}
    flipped = dict(state, **{"lm_head.weight": -state["lm_head.weight"]})  # greedy argmax becomes argmin
    engine.update_weights(flipped.items())
    second = engine.generate(prompts, greedy)
    engine.update_weights(state.items())
    third = engine.generate(prompts, greedy)
    assert [g.responses for g in second] != [g.responses for g in first], "the update did not reach vLLM"
    assert [g.responses for g in third] == [g.responses for g in first], "restoring the weights restores the outputs"
    assert all(len(lp) == len(r) for g in first for lp, r in zip(g.log_probs, g.responses))

"""The learners' log-probs: only the responses' logits, and the engines' top-k/top-p view of them."""

import pytest
import torch
from transformers import TopKLogitsWarper, TopPLogitsWarper

from anomalyr1.data_pipelines import load_mmad
from anomalyr1.platform.batch import ModelBatch, TrainSequence, collate, response_log_probs, response_scores, truncated_log_probs
from anomalyr1.platform.encoding import encode_prompt
from anomalyr1.platform.learner.worker import LearnerWorker, free_port
from anomalyr1.platform.models import load_policy, load_processor
from anomalyr1.platform.rollout.hf_engine import HFEngine
from anomalyr1.platform.rollout.sampling import SamplingSettings


@pytest.fixture(scope="module")
def rolled_out(tiny_model, synthetic_root):
    processor = load_processor(tiny_model)
    from anomalyr1.platform.recipe import PromptConfig

    prompts = [encode_prompt(processor, s, PromptConfig(), 112 * 112) for s in load_mmad(synthetic_root).samples[:2]]
    groups = HFEngine(tiny_model, processor.tokenizer).generate(prompts, SamplingSettings(n=3, max_new_tokens=12, seed=0))
    model = load_policy(tiny_model).eval()
    batch = collate([(g, r) for g in groups for r in g.responses], processor.tokenizer.pad_token_id, model.config.image_token_id)
    return model, batch


def test_logits_of_the_responses_alone_give_the_same_log_probs(rolled_out):
    model, batch = rolled_out
    with torch.no_grad():
        full = model(**batch.inputs).logits
        kept = model(**batch.inputs, logits_to_keep=batch.responses.shape[1] + 1).logits
    assert kept.shape[1] == batch.responses.shape[1] + 1 < full.shape[1]
    assert torch.allclose(response_log_probs(kept, batch, [], 0.7), response_log_probs(full, batch, [], 0.7), atol=1e-6)


@pytest.mark.parametrize("top_k, top_p", [(5, 1.0), (0, 0.6), (7, 0.8)])
def test_truncated_log_probs_are_those_of_transformers_warpers(top_k, top_p):
    torch.manual_seed(0)
    scores = torch.randn(3, 6, 50) * 3
    flat = scores.reshape(-1, 50)
    if top_k:
        flat = TopKLogitsWarper(top_k)(None, flat)
    if top_p < 1.0:
        flat = TopPLogitsWarper(top_p)(None, flat)
    warped = flat.reshape(scores.shape).log_softmax(-1)
    sampled = torch.multinomial(warped.exp().reshape(-1, 50), 1).reshape(3, 6)  # tokens the engine could have drawn
    batch = ModelBatch(inputs={}, responses=sampled, response_mask=torch.ones(3, 6), prompt_width=0)
    expected = warped.gather(-1, sampled.unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(truncated_log_probs(scores, batch, top_k, top_p), expected, atol=1e-5)
    outside = ModelBatch(inputs={}, responses=scores.argmin(-1), response_mask=torch.ones(3, 6), prompt_width=0)
    assert torch.isfinite(truncated_log_probs(scores, outside, top_k, top_p)).all(), "a token outside the cut scores finitely"


def test_the_gap_metric_compares_like_with_like_under_top_k(tiny_recipe, synthetic_root):
    """With top_k the engine reports the truncated distribution's log-probs; compared with the
    learner's whole-vocabulary ones, truncation would pass for drift."""
    recipe = tiny_recipe("learner.workers=1", "rollout.top_k=5")
    learner = LearnerWorker(0, 1, recipe.model_dump(mode="json"))
    learner.setup("127.0.0.1", free_port())
    try:
        samples = load_mmad(synthetic_root).samples[:2]
        prompts = [encode_prompt(learner.processor, s, recipe.prompt, 112 * 112) for s in samples]
        engine = HFEngine(learner.model_path, learner.processor.tokenizer)
        groups = engine.generate(prompts, SamplingSettings.of(recipe.rollout).seeded(0))
        batch = [TrainSequence(group=g, response_index=i, advantage=1.0 - i) for g in groups for i in range(2)]
        gap = learner.update(batch, total_sequences=len(batch), seed=0).metrics["rollout/log_prob_diff_mean"]
        assert gap < 1e-5
        with torch.no_grad():
            items = collate([(s.group, s.response) for s in batch], learner.pad_id, learner.image_token_id)
            whole = response_log_probs(engine.model(**items.inputs).logits, items, learner.suppressed)
        engine_side = torch.tensor([v for s in batch for v in s.rollout_log_prob])
        assert (engine_side - whole[items.response_mask.bool()]).abs().mean() > 100 * max(gap, 1e-7), "the whole-vocabulary view differs"
    finally:
        learner.shutdown()


def test_shared_prompts_give_the_log_probs_and_gradients_of_whole_sequences(tiny_model, synthetic_root):
    """Each distinct prompt goes through the model once and its responses attend to its cached
    keys and values: the same log-probs and gradients as every sequence whole, in fewer tokens."""
    from anomalyr1.platform.batch import response_logits
    from anomalyr1.platform.recipe import PromptConfig

    processor = load_processor(tiny_model)
    samples = list({s.image: s for s in load_mmad(synthetic_root).samples}.values())[:3]
    prompts = [encode_prompt(processor, s, PromptConfig(), 112 * 112) for s in samples]
    assert len({len(p.prompt_ids) for p in prompts}) > 1, "prompts of different lengths: left padding is exercised"
    groups = HFEngine(tiny_model, processor.tokenizer).generate(prompts, SamplingSettings(n=4, max_new_tokens=10, seed=0))
    items = [(g, r) for g in groups for r in g.responses][1:]  # uneven: 3, 4 and 4 responses per prompt
    model = load_policy(tiny_model)
    results = {}
    for share in (False, True):
        model.zero_grad()
        batch = collate(items, processor.tokenizer.pad_token_id, model.config.image_token_id, share_prompts=share)
        log_probs = response_log_probs(response_logits(model, batch), batch, [], 0.7)
        (log_probs * torch.linspace(0.5, 1.5, log_probs.numel()).reshape(log_probs.shape)).sum().backward()
        grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
        results[share] = (batch.inputs["input_ids"].shape[0], log_probs.detach(), grads)
    assert results[False][0] == len(items) and results[True][0] == len(groups), "shared: one row per distinct prompt"
    assert torch.allclose(results[True][1], results[False][1], atol=1e-5), (results[True][1] - results[False][1]).abs().max()
    whole, shared = results[False][2], results[True][2]
    assert whole.keys() == shared.keys()
    for name in whole:
        assert torch.allclose(shared[name], whole[name], rtol=1e-4, atol=1e-6), name

"""The tiny model and the rollout/learner agreement on log-probs."""

import torch

from anomalyr1.data_pipelines import load_mmad
from anomalyr1.platform.batch import collate, response_log_probs
from anomalyr1.platform.encoding import encode_prompt
from anomalyr1.platform.models import VISION_SPECIAL_TOKENS, load_policy, load_processor, suppressed_token_ids
from anomalyr1.platform.recipe import PromptConfig
from anomalyr1.platform.rollout.hf_engine import HFEngine
from anomalyr1.platform.rollout.sampling import SamplingSettings


def test_tiny_model_is_an_ordinary_hf_folder(tiny_model):
    from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_model)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    for token in VISION_SPECIAL_TOKENS:
        assert tokenizer.convert_tokens_to_ids(token) != tokenizer.unk_token_id
    assert model.config.image_token_id == tokenizer.convert_tokens_to_ids("<|image_pad|>")


def test_learner_log_probs_match_the_sampling_distribution(tiny_model, synthetic_root):
    """Log-probs recomputed by a forward pass equal generate's own scores (same masking and temperature)."""
    processor = load_processor(tiny_model)
    samples = load_mmad(synthetic_root).samples[:3]
    prompts = [encode_prompt(processor, s, PromptConfig(), 112 * 112) for s in samples]
    engine = HFEngine(tiny_model, processor.tokenizer)
    temperature = 0.7
    sampling = SamplingSettings(n=4, temperature=temperature, max_new_tokens=16, seed=3)
    groups = engine.generate(prompts, sampling)
    assert [len(g.responses) for g in groups] == [4, 4, 4]
    suppressed = set(suppressed_token_ids(processor.tokenizer))
    assert not any(t in suppressed for g in groups for r in g.responses for t in r)

    # generate's scores for the same draw, through the same left-padded batch
    torch.manual_seed(3)
    width = max(len(p.prompt_ids) for p in prompts)
    ids = torch.full((3, width), processor.tokenizer.pad_token_id)
    attention = torch.zeros_like(ids)
    for row, p in enumerate(prompts):
        ids[row, width - len(p.prompt_ids):] = torch.tensor(p.prompt_ids)
        attention[row, width - len(p.prompt_ids):] = 1
    out = engine.model.generate(
        input_ids=ids, attention_mask=attention, mm_token_type_ids=(ids == engine.image_token_id).int(),
        pixel_values=torch.cat([p.pixel_values for p in prompts]), image_grid_thw=torch.cat([p.image_grid_thw for p in prompts]),
        do_sample=True, temperature=temperature, top_p=1.0, top_k=0, max_new_tokens=16, num_return_sequences=4,
        suppress_tokens=engine.suppressed, eos_token_id=engine.eos_ids, pad_token_id=engine.pad_id,
        output_scores=True, return_dict_in_generate=True,
    )
    scores = torch.stack(out.scores, 1).log_softmax(-1)

    model = load_policy(tiny_model)
    items = [(g, r) for g in groups for r in g.responses]
    batch = collate(items, processor.tokenizer.pad_token_id, model.config.image_token_id)
    with torch.no_grad():
        recomputed = response_log_probs(model(**batch.inputs).logits, batch, sorted(suppressed), temperature)
    engine_log_probs = [lp for g in groups for lp in g.log_probs]  # what the engine recorded while sampling
    for row, (_, response) in enumerate(items):
        assert response == out.sequences[row, width: width + len(response)].tolist()
        expected = scores[row, torch.arange(len(response)), torch.tensor(response)]
        assert torch.allclose(recomputed[row, : len(response)], expected, atol=1e-4), (row, (recomputed[row, :len(response)] - expected).abs().max())
        assert torch.allclose(torch.tensor(engine_log_probs[row]), expected, atol=1e-5), row


def test_the_engine_runs_each_prompt_through_the_model_once(tiny_model, synthetic_root):
    """G completions of a prompt share one pass over it (the test above checks they are what
    generate's num_return_sequences draws); then each step feeds every completion one token."""
    processor = load_processor(tiny_model)
    prompts = [encode_prompt(processor, s, PromptConfig(), 112 * 112) for s in load_mmad(synthetic_root).samples[:3]]
    engine = HFEngine(tiny_model, processor.tokenizer)
    shapes = []
    engine.model.model.language_model.embed_tokens.register_forward_hook(lambda module, args, out: shapes.append(tuple(args[0].shape)))
    engine.generate(prompts, SamplingSettings(n=4, max_new_tokens=6, seed=0))
    width = max(len(p.prompt_ids) for p in prompts)
    assert shapes[0] == (3, width - 1), "the prompts, once each, but their last token"
    assert set(shapes[1:]) == {(12, 1)}, "then one token per completion per step"


def test_repeated_images_are_encoded_once_with_the_same_outputs_and_gradients(tiny_model, synthetic_root):
    """The G copies of a prompt's image go through the vision tower once; nothing else changes."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    processor = load_processor(tiny_model)
    samples = list({s.image: s for s in load_mmad(synthetic_root).samples}.values())[:2]
    groups = HFEngine(tiny_model, processor.tokenizer).generate(
        [encode_prompt(processor, s, PromptConfig(), 112 * 112) for s in samples], SamplingSettings(n=3, max_new_tokens=8, seed=0)
    )
    wrapped = load_policy(tiny_model)
    plain = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_model)
    batch = collate([(g, r) for g in groups for r in g.responses], processor.tokenizer.pad_token_id, plain.config.image_token_id)
    seen = []
    wrapped.model.visual.blocks[0].register_forward_hook(lambda module, args, out: seen.append(args[0].shape[0]))
    results = []
    for model in (wrapped, plain):
        log_probs = response_log_probs(model(**batch.inputs).logits, batch, [], 1.0)
        log_probs.sum().backward()
        results.append((log_probs.detach(), model.model.visual.patch_embed.proj.weight.grad.clone()))
    patches_per_image = int(groups[0].image_grid_thw.prod())
    assert seen == [2 * patches_per_image], "6 sequences of 2 distinct images: 2 images encoded"
    assert torch.allclose(results[0][0], results[1][0], atol=1e-5)
    assert torch.allclose(results[0][1], results[1][1], atol=1e-5), "gradients of the shared encoding must sum the copies'"


def test_texts_only_rollouts_carry_no_model_inputs(tiny_recipe, synthetic_root):
    """Evaluation asks for texts only: no pixels or token ids travel back to the driver."""
    from anomalyr1.platform.rollout.worker import RolloutWorker

    worker = RolloutWorker(0, tiny_recipe().model_dump(mode="json"))
    samples = [s.to_dict() for s in load_mmad(synthetic_root).samples[:2]]
    full = worker.generate(samples, SamplingSettings(greedy=True, max_new_tokens=4))
    light = worker.generate(samples, SamplingSettings(greedy=True, max_new_tokens=4), texts_only=True)
    assert [g.texts for g in light.groups] == [g.texts for g in full.groups]
    assert all(g.pixel_values.numel() == 0 and not g.prompt_ids and not g.responses for g in light.groups)
    assert all(g.pixel_values.numel() > 0 for g in full.groups)


def test_the_cached_tiny_model_is_named_after_how_it_is_built(monkeypatch, tmp_path):
    """An older build in the cache (say, one vLLM's CPU attention cannot run) is never reused."""
    from anomalyr1.platform import models
    from anomalyr1.platform.recipe import TINY_MODEL, ModelConfig

    built = models.resolve_model_path(ModelConfig(path=TINY_MODEL, cache_dir=str(tmp_path)))
    assert built.endswith(f"tiny-qwen2.5-vl-{models.tiny_build_key()}")
    monkeypatch.setattr(models, "_TINY_CORPUS", models._TINY_CORPUS + ("a phrase the last build never saw",))
    assert models.resolve_model_path(ModelConfig(path=TINY_MODEL, cache_dir=str(tmp_path))) != built


def test_processor_pixel_bounds_resize_images_into_them(tiny_model):
    """model.min_pixels / max_pixels reach the image processor, alone or together."""
    from PIL import Image

    for bounds in ({"max_pixels": 56 * 56}, {"min_pixels": 28 * 28 * 4, "max_pixels": 56 * 56}):
        image_processor = load_processor(tiny_model, **bounds).image_processor
        assert image_processor.size["longest_edge"] == 56 * 56
        grid = image_processor(images=[Image.new("RGB", (448, 448))], return_tensors="pt")["image_grid_thw"]
        assert int(grid.prod()) * 14 * 14 <= 56 * 56
    small = load_processor(tiny_model, min_pixels=112 * 112).image_processor(images=[Image.new("RGB", (28, 28))], return_tensors="pt")
    assert int(small["image_grid_thw"].prod()) * 14 * 14 >= 112 * 112

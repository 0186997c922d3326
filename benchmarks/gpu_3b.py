"""GPU benchmark: a randomly initialised Qwen2.5-VL-3B (built from its config, nothing downloaded).

Prints, for one GPU: learner tokens/s and MFU for a full GRPO update (reference log-probs, the
policy's forward and backward with FSDP2 in bf16, AdamW), and rollout tokens/s of the hf engine
(transformers generate; vLLM's throughput is benchmarks/rollout_engines.py's subject).

    python benchmarks/gpu_3b.py [--prompts 8] [--n 8] [--response 256] [--image 448]

MFU counts 6 x params x tokens for the policy's forward+backward and 2 x params x tokens for the
reference forward (recomputation by gradient checkpointing is not counted as useful work),
against the GPU's dense bf16 peak (--peak-tflops, 989 for an H100 SXM).
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from anomalyr1.data_pipelines.schema import Sample
from anomalyr1.platform.batch import TrainSequence
from anomalyr1.platform.encoding import EncodedPrompt, encode_prompt
from anomalyr1.platform.learner.worker import LearnerWorker, free_port
from anomalyr1.platform.models import build_tiny_qwen2_5_vl, load_processor
from anomalyr1.platform.recipe import Recipe, load_recipe
from anomalyr1.platform.rollout.hf_engine import HFEngine
from anomalyr1.platform.rollout.sampling import SamplingSettings

QWEN25_VL_3B = dict(
    text=dict(vocab_size=151936, hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
              num_key_value_heads=2, max_position_embeddings=128000, rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]}),
    vision=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=2048, patch_size=14,
                spatial_merge_size=2, temporal_patch_size=2, window_size=112, fullatt_block_indexes=[7, 15, 23, 31]),
)
"""Qwen/Qwen2.5-VL-3B-Instruct's published config (tie_word_embeddings true)."""


def build_3b(folder: Path) -> tuple[Path, int]:
    """The tiny model's tokenizer and processor with the 3B's config and random bf16 weights."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    build_tiny_qwen2_5_vl(folder)
    tiny = json.loads((folder / "config.json").read_text())
    ids = {k: tiny[k] for k in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")}
    text = dict(QWEN25_VL_3B["text"], bos_token_id=tiny["text_config"]["bos_token_id"], eos_token_id=tiny["text_config"]["eos_token_id"],
                pad_token_id=tiny["text_config"]["pad_token_id"])
    config = Qwen2_5_VLConfig(text_config=text, vision_config=QWEN25_VL_3B["vision"], tie_word_embeddings=True, **ids)
    with torch.device("cuda"):
        model = Qwen2_5_VLForConditionalGeneration(config).to(torch.bfloat16)
    model.generation_config.eos_token_id = tiny["text_config"]["eos_token_id"]
    model.save_pretrained(folder)
    params = sum(p.numel() for p in model.parameters())
    del model
    torch.cuda.empty_cache()
    return folder, params


def prompts(processor, count: int, image_side: int, folder: Path) -> list[EncodedPrompt]:
    """`count` one-image MMAD-style questions on flat-coloured square images."""
    out = []
    for i in range(count):
        path = folder / f"img{i}.png"
        Image.new("RGB", (image_side, image_side), (40 * i % 255, 120, 200)).save(path)
        sample = Sample(id=str(i), image=str(path), question="Is there any defect in the object?", options={"A": "Yes", "B": "No"},
                        answer="B", question_type="Anomaly Detection", dataset="D", category="bottle", defect_type="good")
        out.append(encode_prompt(processor, sample, load_recipe(None).prompt, image_side * image_side))
    return out


def learner_recipe(folder: Path, micro_batch: int, gpu: bool) -> Recipe:
    """One learner on `folder`'s model as the 3B runs it: FSDP2 with gradient checkpointing, a
    KL-anchored reference; bf16 compute on one GPU, fp32 on gloo without one."""
    dtype = "bfloat16" if gpu else "float32"
    return load_recipe(None, [f"model.path={folder}", "rollout.placement=separate", "learner.workers=1", f"learner.num_gpus={int(gpu)}", f"learner.param_dtype={dtype}",
                              "learner.gradient_checkpointing=true", f"learner.micro_batch_size={micro_batch}", "learner.lr=1e-6",
                              f"model.dtype={dtype}", "algorithm.kl_coef=0.04"])


def random_sequences(encoded: list[EncodedPrompt], n: int, length: int, vocab: int) -> list[TrainSequence]:
    """n responses of exactly `length` random tokens per prompt, advantages +-1: a fixed token
    count per update, whatever a random model would have generated."""
    rng = torch.Generator().manual_seed(0)
    groups = [p.group([torch.randint(10, vocab, (length,), generator=rng).tolist() for _ in range(n)], [""] * n) for p in encoded]
    return [TrainSequence(group=g, response_index=i, advantage=float((-1) ** i)) for g in groups for i in range(n)]


def mfu(params: int, tokens: int, seconds: float, peak_tflops: float) -> float:
    """Share of the peak used by one update: 6 x params x tokens for the policy's forward and
    backward, 2 x params x tokens for the reference's forward."""
    return (6 + 2) * params * tokens / seconds / (peak_tflops * 1e12)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--response", type=int, default=256)
    parser.add_argument("--image", type=int, default=448)
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="qwen3b-"))
    start = time.perf_counter()
    folder, params = build_3b(folder)
    print(f"built {params / 1e9:.2f}B-parameter Qwen2.5-VL-3B (random) in {time.perf_counter() - start:.0f}s on {torch.cuda.get_device_name()}")
    processor = load_processor(str(folder), max_pixels=args.image * args.image)
    encoded = prompts(processor, args.prompts, args.image, folder)

    engine = HFEngine(str(folder), processor.tokenizer, dtype="bfloat16", attn_implementation="sdpa", device="cuda")
    sampling = SamplingSettings(n=args.n, max_new_tokens=args.response, seed=0)
    engine.generate(encoded[:1], SamplingSettings(n=2, max_new_tokens=8))
    torch.cuda.synchronize()
    start = time.perf_counter()
    groups = engine.generate(encoded, sampling)
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    generated = sum(len(r) for g in groups for r in g.responses)
    print(f"rollout (transformers generate, bf16, sdpa): {generated} tokens in {elapsed:.1f}s = {generated / elapsed:.0f} tokens/s")
    del engine
    gc.collect()
    torch.cuda.empty_cache()

    learner = LearnerWorker(0, 1, learner_recipe(folder, args.micro_batch, gpu=True).model_dump(mode="json"))
    learner.setup("127.0.0.1", free_port())
    sequences = random_sequences(encoded, args.n, args.response, len(processor.tokenizer))
    tokens = sum(len(s.group.prompt_ids) + len(s.response) for s in sequences)
    learner.update(sequences, len(sequences), 0)  # warm-up
    torch.cuda.synchronize()
    times = []
    for step in range(args.steps):
        start = time.perf_counter()
        result = learner.update(sequences, len(sequences), step + 1)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    median = sorted(times)[len(times) // 2]
    print(f"learner (FSDP2 bf16, grad checkpointing, reference in bf16): {len(sequences)} sequences, {tokens} tokens per update, "
          f"median {median:.2f}s = {tokens / median:.0f} tokens/s, MFU {100 * mfu(params, tokens, median, args.peak_tflops):.1f}% "
          f"of {args.peak_tflops:g} TFLOP/s; peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB; "
          f"grad_norm {result.metrics['actor/grad_norm']:.3f}")
    learner.shutdown()


if __name__ == "__main__":
    main()

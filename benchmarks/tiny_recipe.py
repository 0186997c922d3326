"""Benchmark: the tiny recipe from a cold start, as a user runs it.

Runs `anomalyr1 train` (embedded tiny recipe, local Ray started by the command) in a subprocess
and prints: the median time of each stage over the steps, the platform overhead (step time minus
rollout, reward and learner compute) as a share of the step, the whole run's wall time including
Ray start, and the peak memory of the run's whole process tree (driver, Ray services, actors),
counted as PSS so pages shared between processes count once.

    python benchmarks/tiny_recipe.py --steps 10 [--set key=value ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil


def tree_memory(root: psutil.Process) -> int:
    total = 0
    for proc in [root, *root.children(recursive=True)]:
        try:
            info = proc.memory_full_info()
            total += getattr(info, "pss", info.rss)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--recipe", default=None, help="recipe file (default: the embedded tiny recipe)")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()

    out = Path(tempfile.mkdtemp(prefix="anomalyr1-bench-"))
    command = [sys.executable, "-m", "anomalyr1.platform.cli", "train"] + ([args.recipe] if args.recipe else [])
    command += ["--set", f"trainer.steps={args.steps}", "--set", f"trainer.output_dir={out}", "--set", "trainer.progress_bar=false"]
    for item in args.overrides:
        command += ["--set", item]
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        root = psutil.Process(proc.pid)
        while not done.is_set():
            peak = max(peak, tree_memory(root))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = proc.communicate()
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    if proc.returncode != 0:
        print(output[-4000:])
        print(f"run failed with exit code {proc.returncode}")
        return proc.returncode

    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    median = lambda key: statistics.median(s[key] for s in steps)  # noqa: E731
    print(f"tiny recipe, {len(steps)} steps, {psutil.cpu_count()} cores")
    print(f"{'stage':<22}{'median s':>10}")
    for key in ("timing/rollout_s", "timing/reward_s", "timing/learner_s", "timing/sync_s", "timing/step_s",
                "compute/rollout_s", "compute/reward_s", "compute/learner_s"):
        print(f"{key:<22}{median(key):>10.3f}")
    overhead = statistics.median(s["perf/overhead_frac"] for s in steps[1:] or steps)
    print(f"platform overhead (median over steps 2..{len(steps)}): {100 * overhead:.1f}% of a step")
    print(f"rollout tokens/s (median): {median('throughput/rollout_tokens_per_s'):.0f}")
    print(f"wall time incl. Ray start: {wall:.1f} s")
    print(f"peak memory, all processes (PSS): {peak / 2**30:.2f} GiB")
    print(f"outputs: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

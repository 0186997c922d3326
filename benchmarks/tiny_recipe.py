"""Benchmark: the tiny recipe from a cold start, as a user runs it.

Runs `anomalyr1 train` (embedded tiny recipe, local Ray started by the command) in a subprocess
and prints: the median time of each stage over the steps, the platform overhead (step time minus
rollout, reward and learner compute) as a share of the step, the start-up time (command start
until the first step begins) split into what comes before Ray, Ray's start and the roles' start,
the whole run's wall time, and the peak memory of the run's whole process tree (driver, Ray
services, actors), counted as PSS so pages shared between processes count once.

    python benchmarks/tiny_recipe.py --steps 10 [--set key=value ...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

STAGES = ("timing/rollout_s", "timing/reward_s", "timing/learner_s", "timing/sync_s", "timing/step_s",
          "compute/rollout_s", "compute/reward_s", "compute/learner_s")


@dataclass
class TinyRun:
    steps: list[dict]
    """metrics.jsonl's records."""
    wall_s: float
    """Command start to exit."""
    startup_s: float
    """Command start until the first step began: its metrics line appeared, less its step time."""
    peak_bytes: int
    out: Path

    def median(self, key: str, skip_first: bool = False) -> float:
        records = self.steps[1:] if skip_first and len(self.steps) > 1 else self.steps
        return statistics.median(s[key] for s in records)


def tree_memory(root: psutil.Process) -> int:
    total = 0
    for proc in [root, *root.children(recursive=True)]:
        try:
            info = proc.memory_full_info()
            total += getattr(info, "pss", info.rss)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def run_tiny(steps: int, overrides: list[str], recipe: str | None = None) -> TinyRun:
    """`anomalyr1 train` in a subprocess; raises RuntimeError with the output's tail if it fails."""
    out = Path(tempfile.mkdtemp(prefix="anomalyr1-bench-"))
    command = [sys.executable, "-m", "anomalyr1.platform.cli", "train"] + ([recipe] if recipe else [])
    command += ["--set", f"trainer.steps={steps}", "--set", f"trainer.output_dir={out}", "--set", "trainer.progress_bar=false"]
    for item in overrides:
        command += ["--set", item]
    metrics = out / "metrics.jsonl"
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak, first_line_at = 0, None
    done = threading.Event()

    def sample() -> None:
        # Reading every process's smaps costs tens of ms: done every 10th tick, at the lowest
        # priority (Ray's workers run at nice 15), so measuring does not slow the run it measures.
        nonlocal peak, first_line_at
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        root = psutil.Process(proc.pid)
        tick = 0
        while not done.is_set():
            if tick % 10 == 0:
                peak = max(peak, tree_memory(root))
            if first_line_at is None and metrics.exists() and metrics.stat().st_size > 0:
                first_line_at = time.perf_counter() - start
            tick += 1
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = proc.communicate()
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{output[-4000:]}\nrun failed with exit code {proc.returncode}")
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    startup = (first_line_at or wall) - records[0]["timing/step_s"]
    return TinyRun(steps=records, wall_s=wall, startup_s=startup, peak_bytes=peak, out=out)


def print_startup(run: TinyRun) -> None:
    first = run.steps[0]
    ray_s, roles_s = first["perf/ray_start_s"], first["perf/roles_start_s"]
    print(f"start-up, command start until the first step begins: {run.startup_s:.1f} s "
          f"(before Ray: process, imports, data {run.startup_s - ray_s - roles_s:.1f} s; Ray {ray_s:.1f} s; "
          f"roles {roles_s:.1f} s)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--recipe", default=None, help="recipe file (default: the embedded tiny recipe)")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    try:
        run = run_tiny(args.steps, args.overrides, args.recipe)
    except RuntimeError as exc:
        print(exc)
        return 1

    print(f"tiny recipe, {len(run.steps)} steps, {psutil.cpu_count()} cores")
    print(f"{'stage':<22}{'median s':>10}")
    for key in STAGES:
        print(f"{key:<22}{run.median(key):>10.3f}")
    print(f"median step over steps 2..{len(run.steps)}: {run.median('timing/step_s', skip_first=True):.3f} s")
    print(f"platform overhead (median over steps 2..{len(run.steps)}): {100 * run.median('perf/overhead_frac', skip_first=True):.1f}% of a step")
    print(f"rollout tokens/s (median): {run.median('throughput/rollout_tokens_per_s'):.0f}")
    print_startup(run)
    print(f"wall time, command start to exit: {run.wall_s:.1f} s")
    print(f"peak memory, all processes (PSS): {run.peak_bytes / 2**30:.2f} GiB")
    print(f"outputs: {run.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

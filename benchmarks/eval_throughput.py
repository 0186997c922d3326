"""Benchmark: evaluation throughput (questions per second) with 1 and 2 rollout workers.

Runs `evaluate` (what `anomalyr1 eval` runs) with the tiny model on the synthetic MMAD set, in a
local Ray, a few times per worker count, and prints the median answering rate (workers loaded,
until the last answer) and the median wall time including worker start.

    python benchmarks/eval_throughput.py [--repeats 3] [--workers 1 2] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import ray

from anomalyr1.data_pipelines import generate_synthetic_mmad
from anomalyr1.platform.actor_env import ACTOR_ENV
from anomalyr1.platform.eval_rollout import eval_batch_size
from anomalyr1.platform.evaluate import evaluate
from anomalyr1.platform.models import build_tiny_qwen2_5_vl
from anomalyr1.platform.recipe import load_recipe


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="anomalyr1-eval-bench-"))
    model = build_tiny_qwen2_5_vl(work / "model")
    data = generate_synthetic_mmad(work / "data")
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, runtime_env={"env_vars": ACTOR_ENV})
    print(f"{os.cpu_count()} CPUs; tiny model, synthetic set, mmad_eval prompt")
    print("| rollout workers | questions | batch | questions/s (answering) | wall s incl. worker start |")
    print("|---|---|---|---|---|")
    for workers in args.workers:
        recipe = load_recipe(None, [f"model.cache_dir={work}", f"data.root={data}", "rollout.placement=separate", f"rollout.workers={workers}",
                                    *args.overrides])
        rates, walls, questions = [], [], 0
        for repeat in range(args.repeats):
            start = time.perf_counter()
            result = evaluate(recipe, str(model), work / f"eval-{workers}-{repeat}")
            walls.append(time.perf_counter() - start)
            rates.append(result.questions_per_s)
            questions = result.questions
        print(f"| {workers} | {questions} | {eval_batch_size(recipe)} | {statistics.median(rates):.1f} "
              f"| {statistics.median(walls):.1f} |")
    ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

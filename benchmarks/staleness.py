"""Benchmark: the synchronous loop against bounded staleness (trainer.max_staleness), back to back.

Trains the embedded tiny recipe in one local Ray with one rollout worker and one learner (each
given most of a core) and one reward actor, alternating max_staleness 0 and 1 per repeat, and
prints per setting the median step time (first steps left out: they include warm-up), the median
idle share of each role and the ratio of the staleness-1 step to the synchronous one.

    python benchmarks/staleness.py [--steps 12] [--repeats 2] [--staleness 0 1] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
from pathlib import Path

import ray

from anomalyr1.platform.driver import Trainer
from anomalyr1.platform.ray_session import connect_ray
from anomalyr1.platform.metrics import read_metrics
from anomalyr1.platform.recipe import load_recipe

WARMUP = 2
"""Steps left out of the medians: the first ones load kernels and caches."""
ONE_OF_EACH = ["rollout.placement=separate", "rollout.workers=1", "learner.workers=1", "reward.actors=1", "rollout.num_cpus=0.9", "learner.num_cpus=0.9"]


def run(staleness: int, steps: int, overrides: list[str], out: Path) -> dict[str, float]:
    recipe = load_recipe(None, [*ONE_OF_EACH, f"trainer.steps={steps}", f"trainer.max_staleness={staleness}",
                                f"trainer.output_dir={out}", "trainer.progress_bar=false", "trainer.log_rollouts_every=0", *overrides])
    trainer = Trainer(recipe)
    trainer.train()
    records = read_metrics(trainer.output / "metrics.jsonl")[WARMUP:]
    median = lambda key: statistics.median(r[key] for r in records)  # noqa: E731
    return {key: median(key) for key in ("timing/step_s", "perf/rollout_idle_frac", "perf/learner_idle_frac", "compute/rollout_s", "compute/learner_s")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--staleness", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    work = Path(tempfile.mkdtemp(prefix="anomalyr1-staleness-bench-"))
    connect_ray(load_recipe(None))  # one local Ray for every run, started as `anomalyr1 train` starts it
    results: dict[int, list[dict[str, float]]] = {k: [] for k in args.staleness}
    for repeat in range(args.repeats):
        for k in args.staleness:  # alternated, so drift in the machine's load hits every setting alike
            results[k].append(run(k, args.steps, args.overrides, work / f"k{k}-{repeat}"))
    ray.shutdown()

    print(f"tiny recipe, 1 rollout worker, 1 learner, 1 reward actor, {os.cpu_count()} CPUs; "
          f"{args.steps} steps x {args.repeats} repeats, medians over steps {WARMUP + 1}+")
    print("| max_staleness | step s | rollout compute s | learner compute s | rollout idle | learner idle | step vs synchronous |")
    print("|---|---|---|---|---|---|---|")
    figure = {k: {key: statistics.median(r[key] for r in runs) for key in runs[0]} for k, runs in results.items()}
    base = figure[args.staleness[0]]["timing/step_s"]
    for k, f in figure.items():
        print(f"| {k} | {f['timing/step_s']:.3f} | {f['compute/rollout_s']:.3f} | {f['compute/learner_s']:.3f} "
              f"| {f['perf/rollout_idle_frac']:.2f} | {f['perf/learner_idle_frac']:.2f} | {f['timing/step_s'] / base:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

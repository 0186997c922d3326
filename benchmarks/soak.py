"""A long run, watched for memory that grows: the PSS of every role, step by step.

    python benchmarks/soak.py --steps 400 [RECIPE] [--measure anonymous] [--set key=value ...]

Runs `anomalyr1 train` on the recipe (default: the tiny one) for --steps steps and, each time a
step lands in metrics.jsonl, reads the proportional set size (PSS: shared pages split among the
processes that map them, so the roles add up to the machine's use) of every process of the run:
the driver, the rollout workers (with any vLLM worker processes they start), the learners, the
reward actors, and Ray's own processes (--measure anonymous: each process's anonymous memory
instead, which other jobs on the machine do not move). At the end it prints, per role, PSS after the warm-up
(--warmup steps, default a tenth of the run) and at the end, and the growth per step as the
slope of a least-squares line through every sample after the warm-up (a leak grows in a line;
noise does not), then one JSON line. Start and end are means of the first and last --window
samples (default 10): one sample can land on a step's peak. Every sample is kept in the run's
folder (soak.jsonl, one line per step). The JSON line:

    {"steps": N, "warmup": W, "roles": {"rollout": {"start_mib": .., "end_mib": .., "mib_per_step": ..}, ...},
     "total": {...}, "growth_frac": (end - start) / start over all roles}
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

MEASURES = {"pss": "Pss", "anonymous": "Anonymous"}
"""PSS splits shared pages among every process of the machine that maps them, so it moves when
other jobs start or end; anonymous memory is the process's own."""

ROLES = {"RolloutWorker": "rollout", "LearnerWorker": "learner", "RewardActor": "reward"}


def read_mib(pid: int, field: str) -> float:
    """From smaps_rollup: one read per process, cheap enough to take every step."""
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return 0.0


def role_of(process: psutil.Process, driver: int, known: dict[int, str]) -> str:
    """An actor's processes by its class in Ray's process title; a process an actor started
    (vLLM's workers) counts with it; the rest of the tree is Ray's."""
    if process.pid == driver:
        return "driver"
    if process.pid in known:
        return known[process.pid]
    try:
        title = " ".join(process.cmdline())
        for name, role in ROLES.items():
            if f"ray::{name}" in title:
                return role
        parent = process.parent()
        role = role_of(parent, driver, known) if parent is not None and parent.pid != driver else "ray"
        return role if role in ROLES.values() else "ray"
    except psutil.Error:
        return "ray"


def sample(driver: psutil.Process, known: dict[int, str], field: str) -> dict[str, float]:
    totals: dict[str, float] = {}
    for process in [driver, *driver.children(recursive=True)]:
        try:
            role = known.setdefault(process.pid, role_of(process, driver.pid, known))
            totals[role] = totals.get(role, 0.0) + read_mib(process.pid, field)
        except (OSError, psutil.Error):  # a process that ended between listing and reading
            continue
    return totals


def slope(points: list[tuple[int, float]]) -> float:
    if len(points) < 2:
        return 0.0
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var = sum((x - mean_x) ** 2 for x, _ in points)
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / var if var else 0.0


def steps_done(metrics: Path) -> int:
    try:
        return sum(1 for _ in metrics.open())
    except FileNotFoundError:
        return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", nargs="?")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--warmup", type=int, help="steps before the baseline (default: a tenth of the run, at least 5)")
    parser.add_argument("--measure", choices=MEASURES, default="pss",
                        help="anonymous: each process's own heap, which other processes on the machine do not change")
    parser.add_argument("--window", type=int, default=10, help="samples averaged for the start and the end figures")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    warmup = args.warmup if args.warmup is not None else max(5, args.steps // 10)
    out = Path(tempfile.mkdtemp(prefix="anomalyr1-soak-"))
    command = [sys.executable, "-m", "anomalyr1.platform.cli", "train", *([args.recipe] if args.recipe else [])]
    for assignment in [f"trainer.steps={args.steps}", f"trainer.output_dir={out}", "trainer.progress_bar=false",
                       "trainer.log_rollouts_every=0", *args.overrides]:
        command += ["--set", assignment]
    run = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=open(out.parent / f"{out.name}.log", "w"))
    os.nice(10)  # the sampler must not take time from the run it watches
    driver, known = psutil.Process(run.pid), {}
    series: dict[str, list[tuple[int, float]]] = {}
    seen = 0
    while run.poll() is None:
        done = steps_done(out / "metrics.jsonl")
        if done > seen:
            seen = done
            reading = sample(driver, known, MEASURES[args.measure])
            with (out / "soak.jsonl").open("a") as log:
                log.write(json.dumps({"step": done, **{role: round(mib, 1) for role, mib in reading.items()}}) + "\n")
            for role, mib in reading.items():
                series.setdefault(role, []).append((done, mib))
        time.sleep(0.5)
    if run.returncode:
        sys.exit(f"the run failed (exit {run.returncode}); its log: {out.parent / f'{out.name}.log'}")

    def mean(points: list[tuple[int, float]]) -> float:
        return round(sum(y for _, y in points) / len(points), 1)

    def figures(points: list[tuple[int, float]]) -> dict[str, float]:
        return {"start_mib": mean(points[: args.window]), "end_mib": mean(points[-args.window :]), "mib_per_step": round(slope(points), 4)}

    roles = {role: figures(after) for role, points in sorted(series.items()) if (after := [(x, y) for x, y in points if x >= warmup])}
    # the total only at steps where every role was read (a process that ended mid-read drops one)
    by_step: dict[int, dict[str, float]] = {}
    for role, points in series.items():
        for x, y in points:
            by_step.setdefault(x, {})[role] = y
    total_points = [(x, sum(mibs.values())) for x, mibs in sorted(by_step.items()) if x >= warmup and mibs.keys() >= roles.keys()]
    total = figures(total_points)
    start, end = total["start_mib"], total["end_mib"]
    print(f"{args.steps} steps, baseline after step {warmup} ({args.measure}, MiB; start/end: means of {args.window} samples;"
          " growth per step: least-squares slope after the baseline)")
    print(f"samples: {out / 'soak.jsonl'}")
    print(f"{'role':8} {'start':>9} {'end':>9} {'MiB/step':>9}")
    for role, r in {**roles, "total": total}.items():
        print(f"{role:8} {r['start_mib']:9.1f} {r['end_mib']:9.1f} {r['mib_per_step']:9.4f}")
    print(json.dumps({"steps": args.steps, "warmup": warmup, "measure": args.measure, "roles": roles, "total": total,
                      "growth_frac": round((end - start) / start, 4) if start else None}))


if __name__ == "__main__":
    main()

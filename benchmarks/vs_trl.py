"""Benchmark: the platform beside TRL's GRPOTrainer on the same work, in one run, alternated.

Each repeat runs the embedded tiny recipe as `anomalyr1 train` (benchmarks/tiny_recipe.py) and
then benchmarks/trl_baseline.py (same model, data, prompt, rewards, 8 prompts x G=8 x 32 tokens,
beta 0.04), so drift in the machine's speed hits both alike. Prints each one's median step time
(steps after the first), start-up time and wall time, and the ratio of the platform's median
step to TRL's.

    pip install trl==1.16.0          # or give --trl-python, an interpreter that has it
    python benchmarks/vs_trl.py [--steps 10] [--repeats 2] [--trl-python PATH] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from tiny_recipe import run_tiny

BASELINE = Path(__file__).with_name("trl_baseline.py")


def run_trl(python: str, steps: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as work:
        figures = Path(work) / "trl.json"
        result = subprocess.run([python, str(BASELINE), "--steps", str(steps), "--json", str(figures)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{(result.stdout + result.stderr)[-4000:]}\nTRL baseline failed with exit code {result.returncode}")
        return json.loads(figures.read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--trl-python", default=sys.executable, help="interpreter with trl==1.16.0 and this project installed")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="recipe override for the platform's runs")
    args = parser.parse_args()
    if subprocess.run([args.trl_python, "-c", "import trl"], capture_output=True).returncode != 0:
        print(f"{args.trl_python} cannot import trl: pip install trl==1.16.0, or pass --trl-python")
        return 2

    ours: list[dict[str, float]] = []
    theirs: list[dict[str, float]] = []
    try:
        for _ in range(args.repeats):
            run = run_tiny(args.steps, args.overrides)
            ours.append({"median_step_s": run.median("timing/step_s", skip_first=True), "startup_s": run.startup_s, "wall_s": run.wall_s})
            theirs.append(run_trl(args.trl_python, args.steps))
    except RuntimeError as exc:
        print(exc)
        return 1

    print(f"tiny recipe work, {args.steps} steps x {args.repeats} repeats, alternated; medians over steps 2..{args.steps}")
    print(f"{'':<28}{'median step':>12}{'start-up':>10}  per repeat (step s)")
    for name, rows, extra in (("this platform (anomalyr1)", ours, "wall_s"), ("TRL 1.16.0 GRPOTrainer", theirs, "train_s")):
        step = statistics.median(r["median_step_s"] for r in rows)
        startup = statistics.median(r["startup_s"] for r in rows)
        print(f"{name:<28}{step:>11.2f}s{startup:>9.1f}s  " + ", ".join(f"{r['median_step_s']:.2f}" for r in rows))
    ratios = [o["median_step_s"] / t["median_step_s"] for o, t in zip(ours, theirs)]
    print(f"platform step / TRL step: {statistics.median(ratios):.2f}x (per repeat: {', '.join(f'{r:.2f}' for r in ratios)})")
    print(f"wall, command start to exit (platform): {statistics.median(r['wall_s'] for r in ours):.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""benchmarks/gpu_check.py, the script a lent GPU runs: on CPU it must pass as the GPU machine
would run it (no Ray there), and a part that fails must leave the others' figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

WITHOUT_RAY = (
    "import runpy, sys; sys.modules['ray'] = None; sys.path.insert(0, 'benchmarks'); "
    "sys.argv = ['gpu_check.py', '--device', 'cpu']; runpy.run_path('benchmarks/gpu_check.py', run_name='__main__')"
)
"""`python benchmarks/gpu_check.py --device cpu` in an interpreter where `import ray` fails."""


def test_gpu_check_on_cpu_runs_every_part_without_ray():
    done = subprocess.run([sys.executable, "-c", WITHOUT_RAY], cwd=REPO, capture_output=True, text=True, timeout=240)
    assert done.stdout.strip(), done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["errors"] == {} and report["ok"] is True, done.stderr[-3000:]
    assert done.returncode == 0
    assert report["device"] == "cpu" and report["model_params"] > 0
    assert report["rollout_tokens_per_s"] > 0 and report["learner_tokens_per_s"] > 0 and report["sam2_images_per_s"] > 0
    assert report["weight_sync_s"] > 0
    assert report["learner_mfu"] is None and report["peak_gpu_memory_gib"] is None  # GPU figures only


def test_a_failing_part_is_recorded_and_leaves_the_other_parts_figures(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from gpu_check import Check

    check = Check("cpu")

    def broken():
        raise ValueError("no such kernel")

    def independent():
        check.figures["sam2_images_per_s"] = 12.0

    check.run("model", broken)
    check.run("rollout", lambda: pytest.fail("a part whose prerequisite failed must not run"), needs=("model",))
    check.run("sam2", independent)
    report = check.report()
    assert report["errors"] == {"model": "ValueError: no such kernel", "rollout": "not run: needs model"}
    assert report["sam2_images_per_s"] == 12.0 and report["ok"] is False

"""Exact resume: a run killed with SIGKILL and resumed ends where an uninterrupted run ends."""

import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from anomalyr1.platform.driver import Trainer
from anomalyr1.platform.metrics import read_metrics
from anomalyr1.platform.recipe import dump_recipe

STEPS, SAVE_EVERY = 4, 2
VOLATILE = ("timing/", "compute/", "throughput/", "perf/")
"""Wall-clock figures differ between any two runs; everything else must match exactly."""


def settings(learnable_reward):
    return [f"trainer.steps={STEPS}", f"trainer.save_every={SAVE_EVERY}", "trainer.prompts_per_step=4", "rollout.n=4", learnable_reward]


def stable(records):
    return [{k: v for k, v in r.items() if not k.startswith(VOLATILE)} for r in records]


def cli(recipe_file, resume=False):
    return [sys.executable, "-m", "anomalyr1.platform.cli", "train", str(recipe_file)] + (["--resume"] if resume else [])


@pytest.mark.parametrize(
    "extra",
    [(), ("learner.lora.rank=4", "learner.lr=1e-2"), ("rollout.placement=colocated",)],
    ids=["full", "lora", "colocated"],
)
def test_sigkilled_run_resumes_to_the_same_weights_and_metrics(ray_session, tiny_recipe, learnable_reward, tmp_path, extra):
    """With LoRA a checkpoint holds the adapters and their optimizer state; the merged weights
    and every metric must still come out as the uninterrupted run's. Colocated, the engines are
    rebuilt inside the resumed learners and take the checkpoint's weights from them."""
    reference = Trainer(tiny_recipe(*settings(learnable_reward), *extra))
    reference.train()
    expected_weights = load_file(str(reference.output / "final" / "model.safetensors"))

    out = tmp_path / "interrupted"
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(dump_recipe(tiny_recipe(*settings(learnable_reward), *extra, f"trainer.output_dir={out}")))
    env = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}  # join the session's Ray
    run = subprocess.Popen(cli(recipe_file), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and run.poll() is None:
        if metrics.exists() and any(r["step"] == SAVE_EVERY + 1 for r in read_metrics(metrics)):
            break
        time.sleep(0.2)
    assert run.poll() is None, f"the run ended before it could be killed: {run.stderr.read()[-2000:]}"
    run.send_signal(signal.SIGKILL)
    run.wait()
    assert (out / "checkpoints" / f"step_{SAVE_EVERY}" / "trainer_state.json").is_file()
    assert not (out / "final").exists()

    resumed = subprocess.run(cli(recipe_file, resume=True), env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    resumed_from = re.search(r"resuming from \S*step_(\d+) ", resumed.stderr)
    assert resumed_from and int(resumed_from.group(1)) >= SAVE_EVERY, resumed.stderr[-2000:]

    weights = load_file(str(out / "final" / "model.safetensors"))
    assert weights.keys() == expected_weights.keys()
    different = [k for k in weights if not (weights[k] == expected_weights[k]).all()]
    assert not different, f"resumed weights differ from the uninterrupted run in {different[:5]}"
    assert stable(read_metrics(metrics)) == stable(read_metrics(reference.output / "metrics.jsonl"))



def test_staleness_one_resumes_to_the_same_weights_and_metrics(ray_session, tiny_recipe, learnable_reward, tmp_path):
    """With rollouts running ahead, a run stopped at its checkpoint and resumed regenerates the batch
    that would have been in flight and ends where the uninterrupted run ends."""
    overlap = [*settings(learnable_reward), "trainer.max_staleness=1", "rollout.workers=1", "reward.actors=1", "learner.workers=1"]
    reference = Trainer(tiny_recipe(*overlap))
    reference.train()
    records = read_metrics(reference.output / "metrics.jsonl")
    assert [r["async/staleness_max"] for r in records] == [0.0, 1.0, 0.0, 1.0], "the step after a checkpoint starts from its weights"

    out = f"trainer.output_dir={tmp_path / 'stopped'}"
    Trainer(tiny_recipe(*overlap, out, f"trainer.steps={SAVE_EVERY}")).train()
    resumed = Trainer(tiny_recipe(*overlap, out), resume=True)
    assert resumed.step == SAVE_EVERY
    resumed.train()

    weights = load_file(str(resumed.output / "final" / "model.safetensors"))
    expected = load_file(str(reference.output / "final" / "model.safetensors"))
    different = [k for k in expected if not torch.equal(weights[k], expected[k])]
    assert not different, f"resumed weights differ from the uninterrupted run in {different[:5]}"
    assert stable(read_metrics(resumed.output / "metrics.jsonl")) == stable(records)

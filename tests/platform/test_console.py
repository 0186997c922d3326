"""The default console: the run's progress bar and closing lines, not every actor's bars or Ray's notices."""

import subprocess
import sys

from anomalyr1.platform.recipe import dump_recipe

NOISE = ("Loading weights", "Writing model shards", "Token authentication", "Started a local Ray instance")


def test_a_default_run_prints_only_its_own_lines(tiny_recipe, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(dump_recipe(tiny_recipe("trainer.steps=1", "trainer.progress_bar=true", "learner.workers=1", "rollout.workers=1", "rollout.placement=colocated",
                                              "reward.actors=1", "trainer.prompts_per_step=2", "rollout.n=2")))
    command = [sys.executable, "-m", "anomalyr1.platform.cli", "train", str(recipe)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300)  # a Ray of its own, as a user's command starts
    console = run.stdout + run.stderr
    assert run.returncode == 0, console[-3000:]
    assert "final model:" in console and "1/1" in console, console[-3000:]
    shown = [line for line in console.splitlines() if any(noise in line for noise in NOISE)]
    assert not shown, f"noise on the default console: {shown[:5]}"

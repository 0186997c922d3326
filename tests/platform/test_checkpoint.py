"""Checkpoints: written whole, pruned, and a damaged newest one falls back to the one before."""

import json
import logging
from pathlib import Path

import pytest

from safetensors.torch import load_file

from anomalyr1.platform.checkpoint import find_resumable
from anomalyr1.platform.driver import Trainer
from anomalyr1.platform.metrics import read_metrics
from anomalyr1.platform.recipe import RecipeError


def test_checkpoints_and_fallback_from_a_truncated_one(ray_session, tiny_recipe, learnable_reward, caplog):
    overrides = ["trainer.steps=3", "trainer.save_every=1", "trainer.keep_checkpoints=2", "trainer.prompts_per_step=2", "rollout.n=4",
                 "rollout.workers=1", "reward.actors=1", "learner.workers=1", learnable_reward]
    trainer = Trainer(tiny_recipe(*overrides))
    trainer.train()
    folder = trainer.output / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["step_2", "step_3"], "keep_checkpoints=2 keeps the newest two"
    state = json.loads((folder / "step_3" / "trainer_state.json").read_text())
    assert state["step"] == 3 and len(state["metrics"]) == 3 and state["prompts"]["position"] > 0
    checkpoint_weights = load_file(next((folder / "step_3" / "model").glob("*.safetensors")).as_posix())
    final_weights = load_file((trainer.output / "final" / "model.safetensors").as_posix())
    assert all((checkpoint_weights[k] == final_weights[k]).all() for k in final_weights)

    weights = next((folder / "step_3" / "model").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with caplog.at_level(logging.WARNING, logger="anomalyr1"):
        found = find_resumable(trainer.output, learners=1)
    assert found is not None and found[0].name == "step_2"
    assert any("step_3" in r.getMessage() and "cannot be resumed" in r.getMessage() for r in caplog.records)

    resumed = Trainer(tiny_recipe(*overrides, "trainer.steps=4"), resume=True)
    assert resumed.step == 2
    resumed.train()
    steps = [r["step"] for r in read_metrics(resumed.output / "metrics.jsonl")]
    assert steps == [1, 2, 3, 4], "metrics after the checkpoint are rewritten, not duplicated"


def test_a_fresh_run_refuses_an_output_dir_with_checkpoints(tiny_recipe):
    recipe = tiny_recipe()
    earlier = Path(recipe.trainer.output_dir) / "checkpoints" / "step_5"
    earlier.mkdir(parents=True)
    with pytest.raises(RecipeError, match="--resume"):
        Trainer(recipe)
    assert earlier.is_dir(), "nothing of the earlier run is touched"


def test_learner_resumes_its_update_count(tiny_recipe, tmp_path):
    """The optimizer-step count saved with a rank's state comes back on resume."""
    from anomalyr1.platform.learner.worker import LearnerWorker, free_port

    raw = tiny_recipe("learner.workers=1").model_dump(mode="json")
    first = LearnerWorker(0, 1, raw)
    first.setup("127.0.0.1", free_port())
    first.updates = 7
    first.save_model(str(tmp_path / "ckpt" / "model"))
    first.save_state(str(tmp_path / "ckpt" / "learner"))
    first.shutdown()
    resumed = LearnerWorker(0, 1, raw)
    resumed.setup("127.0.0.1", free_port(), resume_from=str(tmp_path / "ckpt"))
    assert resumed.updates == 7
    resumed.shutdown()

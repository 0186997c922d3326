"""Metric sinks: JSONL always; TensorBoard and W&B (offline) carry the same figures when asked."""

import json

from anomalyr1.platform.metrics import MetricsLog, metric_sinks
from anomalyr1.platform.recipe import load_recipe


def test_tensorboard_and_wandb_receive_every_finite_metric(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    recipe = load_recipe(None, ["trainer.tensorboard=true", "trainer.wandb_project=anomalyr1-test"])
    output = tmp_path / "run"
    log = MetricsLog(output / "metrics.jsonl", 2, False, sinks=metric_sinks(recipe.trainer, output, recipe.model_dump(mode="json")))
    log.write(1, {"reward/mean": 0.25, "actor/kl": float("nan")})
    log.write(2, {"reward/mean": 0.5, "actor/kl": 0.01})
    log.close()

    lines = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["actor/kl"] is None and lines[1]["reward/mean"] == 0.5

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(output / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("reward/mean")] == [(1, 0.25), (2, 0.5)]
    assert [e.step for e in events.Scalars("actor/kl")] == [2], "a NaN is not sent to the sinks"

    runs = list((output / "wandb").glob("offline-run-*"))
    assert runs and any(f.suffix == ".wandb" for f in runs[0].iterdir())

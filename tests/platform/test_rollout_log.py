"""Rollout logs: which steps are written, what a record holds, and the copies in TensorBoard/W&B."""

from __future__ import annotations

import json

import pytest
import torch

from anomalyr1.data_pipelines.schema import Sample
from anomalyr1.platform.batch import RolloutGroup, TrainSequence
from anomalyr1.platform.metrics import metric_sinks
from anomalyr1.platform.recipe import load_recipe
from anomalyr1.platform.rollout_log import RolloutLog, drop_steps_after, is_logged_step, read_rollouts
from anomalyr1.rewards import RewardResult

MAX_NEW_TOKENS = 4


@pytest.mark.parametrize("every, total, logged", [
    (3, 7, [1, 3, 6, 7]),  # the first and the last step always
    (1, 3, [1, 2, 3]),
    (10, 4, [1, 4]),
    (0, 5, []),  # 0 turns it off
])
def test_logged_steps(every: int, total: int, logged: list[int]) -> None:
    assert [s for s in range(1, total + 1) if is_logged_step(s, total, every)] == logged


def _group(index: int, lengths: list[int]) -> RolloutGroup:
    sample = Sample(
        id=f"D/cat/image/hole/{index:03d}.png#0", image=f"/data/D/cat/image/hole/{index:03d}.png", question="Where?",
        options={"A": "left", "B": "right"}, answer="B", question_type="Defect Localization", dataset="D",
        category="cat", defect_type="hole", reference_images=("/data/D/cat/train/good/000.png",),
        bbox=(1.0, 2.0, 3.0, 4.0), mask_path="/data/D/cat/mask/hole/000.png",
    ).to_dict()
    sample["extra"] = {"image_size": [224, 224]}
    return RolloutGroup(
        sample=sample, prompt_ids=[1, 2], pixel_values=torch.zeros(1, 1), image_grid_thw=torch.ones(1, 3, dtype=torch.long),
        responses=[[5] * n for n in lengths], texts=[f"text {index}.{i}" for i in range(len(lengths))], model_input_size=(112, 112),
    )


def _step(ids: list[int]) -> tuple[list[RolloutGroup], list[list[RewardResult]], list[TrainSequence]]:
    groups = [_group(i, [MAX_NEW_TOKENS, 1]) for i in ids]
    scores = [[RewardResult(1.5, {"accuracy": 1.0, "roam/consistent": 0.5}), RewardResult(0.0, {"accuracy": 0.0})] for _ in ids]
    sequences = [TrainSequence(group=g, response_index=i, advantage=float(10 * gi + i)) for gi, g in enumerate(groups) for i in range(2)]
    return groups, scores, sequences


def test_records_hold_the_completion_and_its_figures(tmp_path) -> None:
    trainer = load_recipe(None, ["trainer.steps=4", "trainer.log_rollouts_every=2", "trainer.log_rollout_groups=2"]).trainer
    log = RolloutLog(tmp_path, trainer, MAX_NEW_TOKENS)
    assert log.write(1, *_step([0, 1, 2])) == tmp_path / "rollouts" / "step_1.jsonl"
    assert log.write(3, *_step([5, 6])) is None, "step 3 is neither every 2nd, nor the first or the last"
    records = read_rollouts(tmp_path / "rollouts" / "step_1.jsonl")
    assert len(records) == 4, "2 groups of 2 completions: log_rollout_groups limits the groups"
    first, second = records[0], records[1]
    assert first["completion"] == "text 0.0" and second["completion"] == "text 0.1"
    assert first["reward"] == 1.5 and first["reward_parts"] == {"accuracy": 1.0, "roam/consistent": 0.5}
    assert (first["advantage"], second["advantage"], records[2]["advantage"]) == (0.0, 1.0, 10.0)
    assert (first["length"], first["cut"]) == (MAX_NEW_TOKENS, True) and (second["length"], second["cut"]) == (1, False)
    assert first["truth"] == "B" and first["options"] == {"A": "left", "B": "right"} and first["question"] == "Where?"
    assert first["image"].endswith("hole/000.png") and first["reference_images"] == ["/data/D/cat/train/good/000.png"]
    assert first["bbox"] == [1.0, 2.0, 3.0, 4.0] and first["image_size"] == [224, 224] and first["input_size"] == [112, 112]
    assert first["step"] == 1 and first["sample_id"] == "D/cat/image/hole/000.png#0"


def test_a_prompt_logged_at_step_one_is_preferred_when_it_comes_round(tmp_path) -> None:
    trainer = load_recipe(None, ["trainer.steps=4", "trainer.log_rollouts_every=2", "trainer.log_rollout_groups=1"]).trainer
    log = RolloutLog(tmp_path, trainer, MAX_NEW_TOKENS)
    log.write(1, *_step([7, 8]))
    log.write(2, *_step([3, 4, 7]))  # prompt 7 again: logged although it is the last group
    assert {r["sample_id"] for r in read_rollouts(log.path(2))} == {"D/cat/image/hole/007.png#0"}
    resumed = RolloutLog(tmp_path, trainer, MAX_NEW_TOKENS, start_step=2)  # reads step 1's prompts back
    resumed.write(4, *_step([1, 7]))
    assert {r["sample_id"] for r in read_rollouts(log.path(4))} == {"D/cat/image/hole/007.png#0"}


def test_a_fresh_run_drops_an_earlier_runs_later_steps(tmp_path) -> None:
    folder = tmp_path / "rollouts"
    folder.mkdir()
    for step in (1, 5, 10):
        (folder / f"step_{step}.jsonl").write_text("{}\n")
    evals = tmp_path / "evals" / "step_8"
    evals.mkdir(parents=True)
    (evals / "answers.json").write_text("[]")
    drop_steps_after(folder, 5)
    drop_steps_after(tmp_path / "evals", 5)
    assert sorted(p.name for p in folder.iterdir()) == ["step_1.jsonl", "step_5.jsonl"]
    assert not (tmp_path / "evals" / "step_8").exists()
    RolloutLog(tmp_path, load_recipe(None, ["trainer.steps=2"]).trainer, MAX_NEW_TOKENS)  # start_step 0
    assert list(folder.iterdir()) == []


def test_tensorboard_text_and_wandb_table_get_the_records(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    recipe = load_recipe(None, ["trainer.steps=1", "trainer.tensorboard=true", "trainer.wandb_project=anomalyr1-test"])
    sinks = metric_sinks(recipe.trainer, tmp_path, recipe.model_dump(mode="json"))
    RolloutLog(tmp_path, recipe.trainer, MAX_NEW_TOKENS, sinks).write(1, *_step([0]))
    for sink in sinks:
        sink.close()

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    (text,) = events.Tensors("rollouts/text_summary")
    markdown = text.tensor_proto.string_val[0].decode()
    assert text.step == 1 and "| completion |" in markdown.splitlines()[0] and "text 0.1" in markdown

    tables = list((tmp_path / "wandb").glob("offline-run-*/files/media/table/rollouts_*.table.json"))
    assert len(tables) == 1
    table = json.loads(tables[0].read_text())
    assert "completion" in table["columns"] and len(table["data"]) == 2
    column = table["columns"].index("completion")
    assert [row[column] for row in table["data"]] == ["text 0.0", "text 0.1"]

"""Training on a few-shot file, with evaluation on a held-out slice every N steps."""

from __future__ import annotations

from pathlib import Path

import pytest

from anomalyr1.data_pipelines.fewshot import FewShotSettings, image_key, select_fewshot
from anomalyr1.data_pipelines.mmad import load_mmad
from anomalyr1.data_pipelines.scoring import score_answers
from anomalyr1.platform import eval_rollout
from anomalyr1.platform.driver import Trainer
from anomalyr1.platform.eval_answers import eval_metrics
from anomalyr1.platform.eval_rollout import greedy_answers
from anomalyr1.platform.metrics import read_metrics
from anomalyr1.platform.prompt_source import load_training_data
from anomalyr1.platform.recipe import RecipeError


@pytest.fixture
def fewshot_file(synthetic_root: Path, tmp_path: Path) -> tuple[Path, set[str]]:
    chosen = select_fewshot(load_mmad(synthetic_root).samples, FewShotSettings(per_class=2, total=20))
    return chosen.save(tmp_path / "fewshot.json"), set(chosen.images)


def test_training_data_is_the_fewshot_images_only(tiny_recipe, fewshot_file, cache_dir: Path) -> None:
    path, images = fewshot_file
    data = load_training_data(tiny_recipe(f"data.fewshot_file={path}").data, str(cache_dir))
    assert {image_key(s) for s in data.samples} == images
    capped = load_training_data(tiny_recipe(f"data.fewshot_file={path}", "data.max_samples=5").data, str(cache_dir))
    assert capped.samples == data.samples[:5]


def test_missing_fewshot_file_is_a_recipe_error(tiny_recipe, tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match=r"data.fewshot_file = '.*nope.json': no such file \(expected a few-shot file"):
        tiny_recipe(f"data.fewshot_file={tmp_path / 'nope.json'}")


@pytest.mark.parametrize(
    "setting", ["trainer.max_staleness=0", "trainer.max_staleness=1", "rollout.placement=colocated"], ids=["synchronous", "staleness1", "colocated"]
)
def test_eval_every_n_steps_on_held_out_images(ray_session, tiny_recipe, fewshot_file, monkeypatch, setting) -> None:
    """Colocated, the learners answer, between their updates."""
    path, images = fewshot_file
    recipe = tiny_recipe(
        f"data.fewshot_file={path}", "trainer.steps=2", "trainer.eval_every=2", "trainer.eval_samples=16", setting,
        "rollout.workers=1", "reward.actors=1", "learner.workers=1", "trainer.prompts_per_step=4",
    )
    trainer = Trainer(recipe)
    trained, held = {s.image for s in trainer.data.samples}, {s.image for s in trainer.held_out}
    assert len(trainer.held_out) == 16 and held and not trained & held
    assert {image_key(s) for s in trainer.data.samples + trainer.held_out} <= images

    answered: list[list[dict]] = []

    def spy(*args, **kwargs):
        answered.append(greedy_answers(*args, **kwargs))
        return answered[-1]

    monkeypatch.setattr(eval_rollout, "greedy_answers", spy)
    trainer.train()
    first, second = read_metrics(trainer.output / "metrics.jsonl")
    assert len(answered) == 1, "evaluated once, at step 2"
    assert [r["image"] + r["question"] for r in answered[0]] == [image_key(s) + s.question for s in trainer.held_out]
    assert not any(k.startswith("eval/") for k in first) and "timing/eval_s" not in first
    logged = {k: v for k, v in second.items() if k.startswith("eval/")}
    assert logged == pytest.approx(eval_metrics(score_answers(answered[0])))
    assert "eval/unparsed" in logged and second["timing/eval_s"] > 0
    assert second["fault/rollout_restarts"] == 0, "the workers' weights were taken for a restart"


def test_held_out_answers_rearm_a_restarted_worker_and_redo_its_batch(ray_session, synthetic_root):
    """A worker whose first answer comes from a new incarnation (it restarted with its initial
    weights) is re-armed and its batch answered again: no stale answers reach the metrics."""
    import types

    import ray

    from anomalyr1.data_pipelines import load_mmad
    from anomalyr1.platform.eval_rollout import greedy_answers

    @ray.remote(num_cpus=0.1)
    class Worker:
        def __init__(self):
            self.incarnation, self.calls = "new", 0

        def generate(self, samples, sampling, texts_only=False):
            self.calls += 1
            text = "<answer>stale</answer>" if self.incarnation == "new" else "<answer>A</answer>"
            groups = [types.SimpleNamespace(texts=[text], model_input_size=None) for _ in samples]
            return types.SimpleNamespace(groups=groups, incarnation=self.incarnation)

        def rearm(self):
            self.incarnation = "armed"

    samples = load_mmad(synthetic_root).samples[:6]
    workers = [Worker.remote()]
    incarnations = {0: "armed"}
    rearmed = []

    def rearm(index, cause):
        rearmed.append((index, cause))
        ray.get(workers[index].rearm.remote())

    records = greedy_answers(workers, samples, max_new_tokens=4, batch_size=3, incarnations=incarnations, rearm=rearm)
    assert rearmed == [(0, "restarted since its last weights")]
    assert all(r["gpt_answer"] == "A" for r in records), records

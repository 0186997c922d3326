"""`anomalyr1 eval` on the tiny model and the synthetic set: answers.json in MMAD's format, a table
that `anomalyr1 score` reproduces from those answers, and the same answers from 1 or 2 workers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from anomalyr1.data_pipelines.fewshot import image_key
from anomalyr1.data_pipelines.mmad import load_mmad
from anomalyr1.platform import cli
from anomalyr1.platform.eval_answers import choose_letter
from anomalyr1.platform.evaluate import default_eval_prompt, eval_recipe, evaluate
from anomalyr1.platform.recipe import RecipeError


@pytest.fixture(scope="module")
def cli_run(ray_session, tiny_model, synthetic_root, cache_dir, tmp_path_factory):
    """One eval run through the command line (2 workers, the embedded tiny recipe)."""
    out = tmp_path_factory.mktemp("eval")
    argv = ["eval", "--set", f"model.cache_dir={cache_dir}", "--set", f"data.root={synthetic_root}",
            "--set", "rollout.workers=2", "--set", "trainer.prompts_per_step=8",
            "--checkpoint", tiny_model, "--out", str(out)]
    assert cli.main(argv) == 0
    return out


def test_answers_cover_every_question_in_mmad_format(cli_run: Path, synthetic_root: Path) -> None:
    records = json.loads((cli_run / "answers.json").read_text())
    samples = load_mmad(synthetic_root).samples
    assert [r["image"] for r in records] == [image_key(s) for s in samples]
    for record, sample in zip(records, samples):
        assert record["correct_answer"] == sample.answer and record["question_type"] == sample.question_type
        assert record["dataset"] == sample.dataset and record["question"] == sample.question
        assert record["gpt_answer"] == choose_letter(record["response"], sample.options)
    assert any(r["response"] for r in records)


def test_score_reproduces_the_eval_table(cli_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    written = json.loads((cli_run / "table.json").read_text())
    assert set(written["table"]) == {"SynthMVTec", "SynthVisA", "Average"}
    assert written["scored"] + written["left_out"] == 192
    capsys.readouterr()
    assert cli.main(["score", str(cli_run / "answers.json"), "--out", str(tmp_path / "table.json")]) == 0
    assert json.loads((tmp_path / "table.json").read_text()) == written
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].split()[-1] == "Average" and "answers scored" in printed


def test_one_worker_gives_the_same_answers(cli_run: Path, tiny_recipe, tiny_model, tmp_path: Path) -> None:
    """Same batches (32 prompts each) on one worker instead of two: greedy answers must not change."""
    recipe = tiny_recipe("rollout.workers=1", "trainer.prompts_per_step=4", "data.max_samples=64")
    result = evaluate(recipe, tiny_model, tmp_path / "one")
    assert result.questions == 64 and result.questions_per_s > 0
    one = json.loads(result.answers_path.read_text())
    two = json.loads((cli_run / "answers.json").read_text())[:64]
    assert [r["response"] for r in one] == [r["response"] for r in two]


def test_eval_recipe_overrides(tiny_recipe, tiny_model, tmp_path: Path) -> None:
    recipe = eval_recipe(tiny_recipe(), tiny_model, "mmad_eval")
    assert (recipe.model.path, recipe.prompt.name, recipe.data.fewshot_file) == (tiny_model, "mmad_eval", None)
    with pytest.raises(RecipeError, match=r"evaluation: model.path = '/no/such/checkpoint': no such folder"):
        eval_recipe(tiny_recipe(), "/no/such/checkpoint", "mmad_eval")


def test_eval_asks_with_mmad_prompt_unless_the_recipe_asks_for_boxes(tiny_recipe) -> None:
    assert default_eval_prompt(tiny_recipe()) == "mmad_eval"
    assert default_eval_prompt(tiny_recipe("prompt.name=localization")) == "localization"


def test_cli_bad_checkpoint_is_a_one_line_error(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    assert cli.main(["eval", "--checkpoint", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 2
    assert "model.path" in capsys.readouterr().err

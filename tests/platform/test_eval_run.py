"""`anomalyr1 eval` on the tiny model and the synthetic set: answers.json in MMAD's format, a table
that `anomalyr1 score` reproduces from those answers, and the same answers from 1 or 2 workers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from anomalyr1.data_pipelines.fewshot import image_key
from anomalyr1.data_pipelines.mmad import load_mmad
from anomalyr1.platform import cli
from anomalyr1.platform.eval_answers import choose_letter, reference_letter
from anomalyr1.platform.evaluate import PAPER_PROMPT, default_eval_prompt, eval_recipe, evaluate, paper_shuffle
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


def test_paper_protocol_recipe(tiny_recipe, tiny_model) -> None:
    recipe = eval_recipe(tiny_recipe("rollout.max_new_tokens=32"), tiny_model, PAPER_PROMPT)
    assert (recipe.prompt.name, recipe.rollout.max_new_tokens) == ("anomalyr1_eval", 1024)
    with pytest.raises(RecipeError, match=r"prompt: anomalyr1_eval shows the query image only"):
        eval_recipe(tiny_recipe("prompt.k_shot=1"), tiny_model, PAPER_PROMPT)


def test_paper_shuffle_is_seeded_per_question(synthetic_root: Path) -> None:
    samples = load_mmad(synthetic_root).samples[:40]
    once, again, other = paper_shuffle(samples, 0), paper_shuffle(samples, 0), paper_shuffle(samples, 1)
    assert once == again and once != other
    assert sum(a.options != s.options for a, s in zip(once, samples)) > 10
    assert all(a.options[a.answer] == s.options[s.answer] for a, s in zip(once, samples))


def test_raw_prompt_reaches_the_model_without_a_chat_template(tiny_recipe, synthetic_root: Path) -> None:
    """The reference's processor call: the raw text with <|image_pad|> expanded to the image's
    vision tokens, nothing of the chat template around it."""
    from anomalyr1.platform.encoding import encode_prompt
    from anomalyr1.platform.models import load_processor

    recipe = eval_recipe(tiny_recipe(), None, PAPER_PROMPT)
    processor = load_processor(recipe.model.path)
    sample = load_mmad(synthetic_root).samples[0]
    encoded = encode_prompt(processor, sample, recipe.prompt, None, (1000, 800))
    assert encoded.chat_text.startswith("Test image: <|image_pad|>\n\n") and "<|im_start|>" not in encoded.chat_text
    image_token = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    merge = processor.image_processor.merge_size ** 2
    assert encoded.prompt_ids.count(image_token) == int(encoded.image_grid_thw.prod()) // merge


def test_paper_protocol_answers_shuffled_questions_with_the_reference_reading(ray_session, tiny_recipe, tiny_model, tmp_path: Path) -> None:
    recipe = tiny_recipe("rollout.workers=1", "trainer.prompts_per_step=1", "rollout.n=2", "data.max_samples=4")
    result = evaluate(recipe, tiny_model, tmp_path / "paper", prompt=PAPER_PROMPT)
    records = json.loads(result.answers_path.read_text())
    asked = paper_shuffle(load_mmad(recipe.data.root, max_samples=4).samples, recipe.data.seed)
    assert [r["correct_answer"] for r in records] == [s.answer for s in asked]
    assert all(r["gpt_answer"] == reference_letter(r["response"], s.options) for r, s in zip(records, asked))
    assert any(r["response"] for r in records)

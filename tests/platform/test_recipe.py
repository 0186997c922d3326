"""Recipes: typed, overridable, and a bad one fails with one line before Ray starts."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from anomalyr1.platform import cli
from anomalyr1.platform.recipe import RecipeError, load_recipe

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path, **sections) -> str:
    raw = yaml.safe_load((REPO / "recipes" / "tiny_cpu.yaml").read_text())
    for dotted, value in sections.items():
        node = raw
        *parents, leaf = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        if value is DELETE:
            node.pop(leaf)
        else:
            node[leaf] = value
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


DELETE = object()

BAD_RECIPES = [
    ({"trainer__stepz": 10}, ["trainer.stepz", "unknown key", "expected one of", "steps"]),
    ({"trainer__steps": "ten"}, ["trainer.steps", "'ten'", "integer"]),
    ({"rollout__n": 1}, ["rollout.n", "1", "greater than or equal to 2"]),
    ({"model__path": "/no/such/model"}, ["model.path", "/no/such/model", "no such folder"]),
    ({"model__path": DELETE}, ["model.path", "missing"]),
    ({"rollout__engine": "sglang"}, ["rollout.engine", "'sglang'", "'hf' or 'vllm'"]),
    ({"algorithm__adv_estimator": "gae"}, ["algorithm.adv_estimator", "'gae'", "expected one of", "grpo"]),
    ({"reward__terms": [{"name": "no_such_reward"}]}, ["reward.terms.0.name", "no_such_reward"]),
    ({"data__source": "mmad"}, ["data", "root is required"]),
    ({"learner__lr": -1}, ["learner.lr", "-1", "greater than 0"]),
    ({"trainr": {"steps": 3}}, ["trainr", "unknown key", "expected one of", "trainer"]),
    ({"trainer__steps": 0}, ["trainer.steps", "0", "greater than or equal to 1"]),
    ({"rollout__top_p": 1.5}, ["rollout.top_p", "1.5", "less than or equal to 1"]),
    ({"rollout__temperature": 0}, ["rollout.temperature", "0", "greater than 0"]),
    ({"reward__terms": []}, ["reward.terms", "at least 1 item"]),
    ({"reward__terms": [{"name": "no_such_file.py:fn"}]}, ["reward.terms.0.name", "no_such_file.py:fn"]),
    ({"reward__terms": [{"name": "roam", "params": {"bogus": 1}}]}, ["reward.terms.0.name", "'roam'", "bogus"]),
    ({"data__source": "mmad", "data__root": "/no/such/mmad"}, ["data", "/no/such/mmad", "no mmad.json"]),
    ({"learner__backend": "megatron"}, ["learner.backend", "'megatron'", "'fsdp2' or 'deepspeed'"]),
    ({"algorithm__policy_loss": "ppo2"}, ["algorithm.policy_loss", "'ppo2'", "expected one of", "vanilla"]),
    ({"algorithm__kl_type": "k9"}, ["algorithm.kl_type", "'k9'", "low_var_kl"]),
    ({"model__dtype": "int8"}, ["model.dtype", "'int8'", "bfloat16"]),
    ({"prompt__name": "chatty"}, ["prompt.name", "'chatty'", "anomalyr1"]),
    ({"trainer__output_dir": 5}, ["trainer.output_dir", "5", "string"]),
    ({"reward__actors": 0}, ["reward.actors", "0", "greater than or equal to 1"]),
    ({"learner__workers": "two"}, ["learner.workers", "'two'", "integer"]),
    ({"data__max_image_pixels": 10}, ["data.max_image_pixels", "10", "greater than or equal to 784"]),
    ({"model__path": "builtin:huge-model"}, ["model.path", "builtin:huge-model", "unknown builtin model"]),
]


@pytest.mark.parametrize("change,expected", BAD_RECIPES, ids=[next(iter(c)) for c, _ in BAD_RECIPES])
def test_bad_recipe_message_names_key_value_and_expectation(tmp_path, change, expected):
    path = write(tmp_path, **change)
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    message = str(info.value)
    assert "\n" not in message
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in {message!r}"


@pytest.mark.parametrize("command", ["validate", "train"])
def test_cli_rejects_bad_recipe_before_ray(tmp_path, capsys, monkeypatch, command):
    import anomalyr1.platform.driver as driver

    monkeypatch.setattr(driver, "connect_ray", lambda recipe: pytest.fail("Ray started for a bad recipe"))
    code = cli.main([command, write(tmp_path, rollout__n=1)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and err.startswith("error: ") and "rollout.n = 1" in err


def test_cli_error_is_one_line_without_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "anomalyr1.platform.cli", "train", write(tmp_path, trainer__stepz=3)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "trainer.stepz" in lines[0], result.stderr
    assert "Started a local Ray" not in result.stderr + result.stdout


@pytest.mark.parametrize("text,expected", [
    ("model: {path: x\n", ["not valid YAML", "line"]),
    ("- a list\n- not sections\n", ["expected a mapping of sections", "list"]),
    ("", ["expected a mapping of sections"]),
])
def test_unreadable_recipe_files(tmp_path, text, expected):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError) as info:
        load_recipe(str(path))
    for fragment in expected:
        assert fragment in str(info.value)
    with pytest.raises(RecipeError, match="no such recipe file"):
        load_recipe(str(tmp_path / "absent.yaml"))


def test_overrides_and_embedded_default():
    recipe = load_recipe(None, ["trainer.steps=3", "rollout.n=4", "reward.terms=[{name: accuracy}]"])
    assert (recipe.trainer.steps, recipe.rollout.n, recipe.reward.terms[0].name) == (3, 4, "accuracy")
    with pytest.raises(RecipeError, match="--set"):
        load_recipe(None, ["trainer.steps"])


@pytest.mark.parametrize("name", ["tiny_cpu.yaml", "anomalyr1.yaml", "grpo_classic.yaml", "lr_iad.yaml", "localization.yaml"])
def test_shipped_recipes_validate(name):
    # the paper's model and MMAD are not downloaded in tests
    overrides = ["model.path=builtin:tiny-qwen2.5-vl", "data.source=synthetic", "data.root=null"]
    recipe = load_recipe(str(REPO / "recipes" / name), overrides)
    assert recipe.rollout.n >= 2


def test_paper_recipe_carries_the_paper_settings():
    recipe = load_recipe(str(REPO / "recipes" / "anomalyr1.yaml"), ["model.path=builtin:tiny-qwen2.5-vl", "data.source=synthetic", "data.root=null"])
    raw = yaml.safe_load((REPO / "recipes" / "anomalyr1.yaml").read_text())
    assert raw["model"]["path"] == "Qwen/Qwen2.5-VL-3B-Instruct"
    assert (recipe.rollout.n, recipe.trainer.prompts_per_step, recipe.trainer.steps) == (8, 8, 1000)
    assert (recipe.algorithm.clip_ratio, recipe.algorithm.kl_type) == (0.2, "low_var_kl")
    assert recipe.rollout.engine == "vllm" and recipe.learner.backend == "fsdp2" and recipe.learner.num_gpus >= 1
    assert [t.name for t in recipe.reward.terms] == ["roam", "accuracy"]


def test_localization_recipe_asks_for_boxes_on_defective_images_with_the_reference_rule():
    recipe = load_recipe(str(REPO / "recipes" / "localization.yaml"), ["model.path=builtin:tiny-qwen2.5-vl", "data.source=synthetic", "data.root=null"])
    assert recipe.prompt.name == "localization" and recipe.data.question_types == ["Defect Localization"]
    box = recipe.reward.terms[0]
    assert (box.name, box.params) == ("bbox_iou", {"iou_threshold": 0.5})


def test_file_checks_can_be_left_to_the_machine_that_runs_the_recipe():
    overrides = ["model.path=/cluster/only/model", "data.source=mmad", "data.root=/cluster/only/MMAD"]
    with pytest.raises(RecipeError, match="model.path"):
        load_recipe(None, overrides)
    recipe = load_recipe(None, overrides, check_files=False)
    assert (recipe.model.path, recipe.data.root) == ("/cluster/only/model", "/cluster/only/MMAD")

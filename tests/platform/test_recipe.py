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
    ({"learner__lr_scheduler": "step"}, ["learner.lr_scheduler", "'step'", "'constant', 'linear' or 'cosine'"]),
    ({"learner__warmup_steps": -1}, ["learner.warmup_steps", "-1", "greater than or equal to 0"]),
    ({"data__max_image_size": [1000, 10]}, ["data.max_image_size.1", "10", "greater than or equal to 28"]),
    ({"data__max_image_size": [1000]}, ["data.max_image_size.1", "missing"]),
    ({"algorithm__adv_epsilon": 0}, ["algorithm.adv_epsilon", "0", "greater than 0"]),
    ({"algorithm__filter_groups_max_draws": -1}, ["algorithm.filter_groups_max_draws", "-1", "greater than or equal to 0"]),
    ({"prompt__name": "anomalyr1_eval", "prompt__k_shot": 1}, ["prompt", "anomalyr1_eval shows the query image only"]),
    ({"trainer__max_staleness": 1, "rollout__top_k": 50, "rollout__placement": "separate"},
     ["trainer.max_staleness = 1", "rollout.top_k = 50", "set top_k: 0 and top_p: 1.0"]),
    ({"algorithm__rollout_is": "token", "rollout__top_p": 0.9}, ["algorithm.rollout_is = 'token'", "rollout.top_p = 0.9"]),
    ({"learner__lora__sync": "both"}, ["learner.lora.sync", "'both'", "'merged' or 'adapter'"]),
    ({"learner__lora__sync": "adapter"}, ["learner.lora.sync = 'adapter'", "set learner.lora.rank > 0"]),
    ({"learner__lora__sync": "adapter", "learner__lora__rank": 8}, ["learner.lora.sync = 'adapter'", "rollout.engine = 'hf'", "learner.lora.sync=merged"]),
    ({"learner__lora__sync": "adapter", "learner__lora__rank": 8, "rollout__engine": "vllm", "learner__lora__vision": True},
     ["learner.lora.sync = 'adapter'", "vision tower", "learner.lora.vision = true"]),
    ({"learner__lora__sync": "adapter", "learner__lora__rank": 8, "rollout__engine": "vllm", "learner__lora__target_modules": ["q_proj", "lm_head"]},
     ["learner.lora.sync = 'adapter'", "learner.lora.target_modules ['lm_head']"]),
    ({"learner__lora__sync": "adapter", "learner__lora__rank": 1024, "rollout__engine": "vllm"}, ["up to rank 512", "learner.lora.rank = 1024"]),
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
    import anomalyr1.platform.ray_session as ray_session

    monkeypatch.setattr(ray_session, "connect_ray", lambda recipe: pytest.fail("Ray started for a bad recipe"))
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


@pytest.mark.parametrize("name", ["tiny_cpu.yaml", "anomalyr1.yaml", "anomalyr1_lora.yaml", "grpo_classic.yaml", "lr_iad.yaml", "localization.yaml"])
def test_shipped_recipes_validate(name):
    # the paper's model and MMAD are not downloaded in tests
    overrides = ["model.path=builtin:tiny-qwen2.5-vl", "data.source=synthetic", "data.root=null"]
    recipe = load_recipe(str(REPO / "recipes" / name), overrides)
    assert recipe.rollout.n >= 2


PAPER_OVERRIDES = ["model.path=builtin:tiny-qwen2.5-vl", "data.source=synthetic", "data.root=null"]


def test_paper_recipe_carries_the_paper_settings():
    """The reference's settings (run_grpo_ad.sh, grpo_rec.py, GRPOConfig/grpo_trainer.py defaults,
    TrainingArguments defaults), each one checked."""
    recipe = load_recipe(str(REPO / "recipes" / "anomalyr1.yaml"), PAPER_OVERRIDES)
    raw = yaml.safe_load((REPO / "recipes" / "anomalyr1.yaml").read_text())
    assert raw["model"]["path"] == "Qwen/Qwen2.5-VL-3B-Instruct"
    assert (recipe.model.dtype, recipe.model.min_pixels, recipe.model.max_pixels) == ("bfloat16", 3136, 12845056)
    assert (recipe.data.max_image_size, recipe.data.max_image_pixels, recipe.data.seed) == ((1000, 800), None, 42)
    assert recipe.prompt.name == "anomalyr1" and recipe.prompt.k_shot == 0
    assert (recipe.rollout.n, recipe.trainer.prompts_per_step, recipe.trainer.steps) == (8, 8, 1000)
    assert (recipe.rollout.temperature, recipe.rollout.top_p, recipe.rollout.top_k, recipe.rollout.max_new_tokens) == (1.0, 1.0, 50, 256)
    algorithm = recipe.algorithm
    assert (algorithm.adv_estimator, algorithm.norm_adv_by_std, algorithm.adv_epsilon) == ("grpo", True, 1e-4)
    assert (algorithm.policy_loss, algorithm.clip_ratio, algorithm.loss_agg_mode) == ("vanilla", 0.2, "seq-mean-token-mean")
    assert (algorithm.kl_coef, algorithm.kl_type, algorithm.ppo_epochs, algorithm.filter_groups) == (0.04, "low_var_kl", 1, False)
    learner = recipe.learner
    assert (learner.lr, learner.lr_scheduler, learner.warmup_steps) == (5e-7, "linear", 0)
    assert (learner.weight_decay, learner.betas, learner.grad_clip, learner.mini_batch_size) == (0.0, (0.9, 0.999), 1.0, None)
    assert (learner.param_dtype, learner.gradient_checkpointing, learner.zero_stage) == ("bfloat16", True, 3)
    assert (recipe.trainer.save_every, recipe.trainer.seed) == (100, 42)
    assert recipe.rollout.engine == "vllm" and learner.backend == "fsdp2" and learner.num_gpus >= 1
    assert recipe.rollout.placement == "colocated" and recipe.rollout.workers == learner.workers == 8, "every GPU both roles"
    assert [(t.name, t.weight, t.params) for t in recipe.reward.terms] == [("roam", 1.0, {}), ("accuracy", 1.0, {})]


def test_every_paper_setting_says_where_it_comes_from():
    """Each leaf value line of the paper recipe carries a comment, except plain resource sizes."""
    resources = {"source", "root", "workers", "num_cpus", "num_gpus", "tensor_parallel_size", "gpu_memory_utilization",
                 "actors", "micro_batch_size", "output_dir", "torch_threads"}
    for line in (REPO / "recipes" / "anomalyr1.yaml").read_text().splitlines():
        key, sep, value = line.strip().partition(":")
        if sep and value.strip() and not line.lstrip().startswith(("#", "-")) and key not in resources:
            assert "#" in value, f"no source given for: {line.strip()}"


def test_ablation_differs_from_the_paper_recipe_only_in_rewards():
    paper = load_recipe(str(REPO / "recipes" / "anomalyr1.yaml"), PAPER_OVERRIDES).model_dump()
    classic = load_recipe(str(REPO / "recipes" / "grpo_classic.yaml"), PAPER_OVERRIDES).model_dump()
    assert [t["name"] for t in classic["reward"]["terms"]] == ["accuracy", "format"]
    for recipe in (paper, classic):
        recipe["reward"].pop("terms")
        recipe["trainer"].pop("output_dir")
    assert classic == paper


def test_one_gpu_lora_recipe_is_the_paper_recipe_with_adapters_on_one_gpu():
    """What anomalyr1_lora.yaml changes is where it runs, the adapters and their rate: the
    algorithm, sampling, data and schedule stay the paper's."""
    paper = load_recipe(str(REPO / "recipes" / "anomalyr1.yaml"), PAPER_OVERRIDES).model_dump()
    lora = load_recipe(str(REPO / "recipes" / "anomalyr1_lora.yaml"), PAPER_OVERRIDES).model_dump()
    assert lora["learner"]["lora"]["rank"] == 16 and lora["learner"]["workers"] == lora["rollout"]["workers"] == 1
    assert lora["learner"]["num_gpus"] == 1 and lora["rollout"]["placement"] == "colocated"
    placement = {"rollout": {"workers", "gpu_memory_utilization"},
                 "learner": {"workers", "num_cpus", "num_gpus", "lora", "lr", "zero_stage"},
                 "reward": {"actors"}, "trainer": {"output_dir"}}
    for section, keys in placement.items():
        for recipe in (paper, lora):
            for key in keys:
                recipe[section].pop(key)
    assert lora == paper


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


@pytest.mark.parametrize("overrides,message", [
    (["rollout.workers=3"], r"rollout.workers = 3 must equal learner.workers = 2"),
    (["rollout.engine=vllm", "rollout.tensor_parallel_size=2"], r"rollout.tensor_parallel_size = 2 needs placement: separate"),
    (["trainer.max_staleness=1"], r"trainer.max_staleness = 1: rollouts run ahead .* colocated the same process does both in turn"),
])
def test_colocated_placement_refuses_what_one_process_cannot_do(overrides, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(None, ["rollout.placement=colocated", *overrides])


def test_colocated_rollout_workers_are_the_learner_ranks():
    recipe = load_recipe(None, ["rollout.placement=colocated", "learner.workers=3", "rollout.workers=3"])
    assert recipe.rollout.workers == 3
    from anomalyr1.platform.placement import eval_demand, role_demands

    assert [d.role for d in role_demands(recipe)] == ["reward", "learner"], "colocated, no rollout actors of their own"
    demand = eval_demand(recipe)
    assert (demand.count, demand.cpus, demand.gpus) == (3, recipe.learner.num_cpus, recipe.learner.num_gpus)

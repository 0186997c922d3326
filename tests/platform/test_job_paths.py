"""Under a Ray job a relative recipe path is refused at recipe load, naming the key; elsewhere it
is the user's own folder. A job is recognised as Ray 2.60's job supervisor marks its entrypoint
(test_submit.py checks that on a real job)."""

import json
import os
from pathlib import Path

import pytest

from anomalyr1.platform import cli
from anomalyr1.platform.job_paths import RAY_JOB_ENV, relative_paths
from anomalyr1.platform.recipe import RecipeError, load_recipe

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def in_ray_job(monkeypatch):
    """The environment Ray's job supervisor gives a job's entrypoint."""
    injected = {"runtime_env": {"working_dir": "gcs://_ray_pkg_0123.zip"}, "metadata": {"job_submission_id": "raysubmit_T3st", "job_name": "raysubmit_T3st"}}
    monkeypatch.setenv(RAY_JOB_ENV, json.dumps(injected))


@pytest.fixture
def absolute(tiny_model, synthetic_root, cache_dir, tmp_path):
    return [f"model.path={tiny_model}", f"data.root={synthetic_root}", f"model.cache_dir={cache_dir}", f"trainer.output_dir={tmp_path / 'run'}"]


def test_a_relative_output_dir_is_refused_in_a_ray_job_naming_the_key(in_ray_job, absolute, capsys):
    overrides = absolute[:-1] + ["trainer.output_dir=runs/tiny_cpu"]
    with pytest.raises(RecipeError) as error:
        load_recipe(None, overrides)
    assert str(error.value) == (
        "tiny_cpu.yaml: trainer.output_dir = 'runs/tiny_cpu' is relative, and this runs as Ray job raysubmit_T3st, in a temporary "
        "copy of its working_dir that differs per node and is deleted after the job: use an absolute path on storage every node "
        "shares (e.g. /shared/...)"
    )
    assert cli.main(["validate", *[f"--set={o}" for o in overrides]]) == 2
    assert capsys.readouterr().err.strip() == f"error: {error.value}"


def test_every_relative_path_key_is_named(in_ray_job, absolute, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "few.json").parent.mkdir()
    (tmp_path / "data" / "few.json").write_text("{}")
    model = os.path.relpath(absolute[0].partition("=")[2])  # the tiny model's folder, seen from here
    relative = [f"model.path={model}", "model.cache_dir=cache", "data.root=data/synthetic", "data.fewshot_file=data/few.json", "trainer.output_dir=out"]
    with pytest.raises(RecipeError) as error:
        load_recipe(None, relative + ["data.source=synthetic"])
    assert (f"model.path = {model!r}, model.cache_dir = 'cache', data.root = 'data/synthetic', data.fewshot_file = 'data/few.json', "
            "trainer.output_dir = 'out' are relative, and this runs as Ray job raysubmit_T3st") in str(error.value)


def test_a_hub_id_and_absolute_paths_pass_in_a_ray_job(in_ray_job, absolute):
    assert load_recipe(None, absolute).trainer.output_dir == absolute[-1].partition("=")[2]
    home = load_recipe(None, absolute[1:] + ["model.path=Qwen/Qwen2.5-VL-3B-Instruct", "model.cache_dir=~/.cache/anomalyr1"])
    assert home.model.path == "Qwen/Qwen2.5-VL-3B-Instruct"


def test_relative_paths_stay_allowed_outside_a_ray_job(monkeypatch):
    monkeypatch.delenv(RAY_JOB_ENV, raising=False)
    assert load_recipe(None).trainer.output_dir == "runs/tiny_cpu"


@pytest.mark.parametrize("name", ["anomalyr1.yaml", "grpo_classic.yaml", "lr_iad.yaml", "localization.yaml"])
def test_the_cluster_recipes_pass_the_check_as_shipped(name):
    recipe = load_recipe(str(REPO / "recipes" / name), check_files=False)
    assert relative_paths(recipe, REPO) == []
    assert recipe.data.root == "/shared/MMAD" and recipe.trainer.output_dir.startswith("/shared/runs/")

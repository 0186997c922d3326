"""A recipe's data as a built Hugging Face dataset: what every node of a cluster can read."""

import pytest

from anomalyr1.platform import cli
from anomalyr1.platform.encoding import encode_prompt
from anomalyr1.platform.models import load_processor
from anomalyr1.platform.prompt_source import load_training_data
from anomalyr1.platform.recipe import RecipeError, load_recipe


def test_build_dataset_then_train_from_it(tiny_recipe, tiny_model, synthetic_root, tmp_path, capsys):
    out = tmp_path / "built"
    overrides = [f"model.path={tiny_model}", f"data.root={synthetic_root}", f"model.cache_dir={tmp_path / 'cache'}"]
    assert cli.main(["build-dataset", "--out", str(out)] + [a for o in overrides for a in ("--set", o)]) == 0
    assert "data.source=hf" in capsys.readouterr().out

    original = load_training_data(load_recipe(None, overrides).data, str(tmp_path / "cache"))
    recipe = tiny_recipe("data.source=hf", f"data.root={out}", f"model.cache_dir={tmp_path / 'node-cache'}")
    built = load_training_data(recipe.data, recipe.model.cache_dir)
    assert [(s.id, s.answer, s.options) for s in built.samples] == [(s.id, s.answer, s.options) for s in original.samples]
    assert all(str(tmp_path / "node-cache") in s.image for s in built.samples), "images come from this node's cache"
    encoded = encode_prompt(load_processor(tiny_model), built.samples[0], recipe.prompt, 112 * 112)
    assert encoded.pixel_values.shape[0] > 0

    filtered = tiny_recipe("data.source=hf", f"data.root={out}", "data.question_types=[Anomaly Detection]", f"model.cache_dir={tmp_path / 'node-cache'}")
    assert {s.question_type for s in load_training_data(filtered.data, filtered.model.cache_dir).samples} == {"Anomaly Detection"}


def test_hf_source_needs_a_built_dataset(tmp_path):
    with pytest.raises(RecipeError, match="not a dataset from `anomalyr1 build-dataset`"):
        load_recipe(None, ["data.source=hf", f"data.root={tmp_path}"])

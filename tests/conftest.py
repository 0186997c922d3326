"""Shared test fixtures: one tiny model, one synthetic dataset and one local Ray per session.

`ray.init` costs seconds and the tiny model is rebuilt identically every time, so both are
session-scoped; everything a test writes goes under pytest's tmp paths, never the user's cache.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from anomalyr1.platform.recipe import Recipe, load_recipe

REPO = Path(__file__).resolve().parents[1]


LEARNABLE_REWARD = str(REPO / "tests" / "fixtures" / "token_reward.py") + ":contains_target"
"""A reward term spec (file.py:fn) that a random tiny model can learn; see the fixture file."""


@pytest.fixture(scope="session")
def learnable_reward() -> str:
    return f"reward.terms=[{{name: '{LEARNABLE_REWARD}', weight: 1.0}}]"


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("anomalyr1-cache")


@pytest.fixture(scope="session")
def tiny_model(cache_dir) -> str:
    from anomalyr1.platform.models import build_tiny_qwen2_5_vl

    return str(build_tiny_qwen2_5_vl(cache_dir / "tiny-model"))


@pytest.fixture(scope="session")
def synthetic_root(cache_dir) -> Path:
    from anomalyr1.data_pipelines import generate_synthetic_mmad

    return generate_synthetic_mmad(cache_dir / "synthetic")


@pytest.fixture(scope="session")
def ray_session():
    import ray

    if not ray.is_initialized():
        ray.init(
            address="local",  # never a cluster another process started on this machine
            num_cpus=2,
            include_dashboard=False,
            runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}},
        )
    yield ray
    ray.shutdown()


@pytest.fixture
def tiny_recipe(tiny_model, synthetic_root, cache_dir, tmp_path):
    """The embedded tiny recipe pointed at the session's model, data and a fresh output folder,
    with its rollout on 2 workers of their own (placement: separate): most tests exercise the
    rollout actors, and the colocated ones ask for `rollout.placement=colocated` (the shipped default)."""

    def make(*overrides: str) -> Recipe:
        base = [
            f"model.path={tiny_model}",
            f"model.cache_dir={cache_dir}",
            f"data.root={synthetic_root}",
            f"trainer.output_dir={tmp_path / 'run'}",
            "trainer.progress_bar=false",
            "rollout.placement=separate",
        ]
        return load_recipe(None, base + list(overrides))

    return make


@pytest.fixture(scope="session", autouse=True)
def _quiet_env():
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

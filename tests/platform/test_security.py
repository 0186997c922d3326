"""Security basics: no unpickling of user files, a local dashboard on localhost only."""

import re
from pathlib import Path

import pytest

from anomalyr1.platform import ray_session
from anomalyr1.platform.recipe import load_recipe

SOURCE = Path(__file__).resolve().parents[2]


def test_no_unsafe_loaders_in_the_code():
    unsafe = re.compile(r"\btorch\.load\((?![^)]*weights_only=True)|\bpickle\.loads?\(|\byaml\.load\(|\byaml\.unsafe_load\(")
    found = [
        f"{path.relative_to(SOURCE)}:{number}"
        for folder in ("platform", "rewards", "data_pipelines")
        for path in (SOURCE / folder).rglob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if unsafe.search(line)
    ]
    assert not found, f"unsafe deserialisation at {found}"


@pytest.mark.parametrize("overrides,expected", [
    ([], {"include_dashboard": False, "dashboard_host": "127.0.0.1"}),
    (["trainer.dashboard=true"], {"include_dashboard": True, "dashboard_host": "127.0.0.1"}),
    (["trainer.dashboard=true", "trainer.dashboard_host=0.0.0.0"], {"include_dashboard": True, "dashboard_host": "0.0.0.0"}),
])
def test_local_dashboard_binds_to_localhost_unless_the_recipe_says_otherwise(monkeypatch, overrides, expected):
    seen = {}
    monkeypatch.setattr(ray_session.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray_session.ray, "init", lambda **kwargs: seen.update(kwargs))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    ray_session.connect_ray(load_recipe(None, overrides))
    assert {k: seen[k] for k in expected} == expected

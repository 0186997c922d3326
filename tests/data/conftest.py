"""Synthetic MMAD sets shared by the data_pipelines tests: one read-only default set per session,
and a small fresh one per test for the tests that break things."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest

from anomalyr1.data_pipelines.synthetic import generate_synthetic_mmad


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default set; do not modify it."""
    return generate_synthetic_mmad(tmp_path_factory.mktemp("synth") / "mmad")


@pytest.fixture(scope="session")
def synth_entries(synth_root: Path) -> dict[str, Any]:
    return json.loads((synth_root / "mmad.json").read_text())


@pytest.fixture
def small_root(tmp_path: Path) -> Path:
    """A fresh two-image set (one normal, one defective) that a test may break."""
    return generate_synthetic_mmad(tmp_path / "mmad", datasets=("D",), categories_per_dataset=1,
                                   normal_per_category=1, defective_per_category=1,
                                   templates_per_category=2)


@pytest.fixture
def edit_mmad() -> Callable[[Path, Callable[[dict[str, Any]], None]], None]:
    """Rewrites root/mmad.json through a function that edits the parsed entries in place."""
    def edit(root: Path, change: Callable[[dict[str, Any]], None]) -> None:
        entries = json.loads((root / "mmad.json").read_text())
        change(entries)
        (root / "mmad.json").write_text(json.dumps(entries))
    return edit

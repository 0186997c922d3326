"""Whether every learner sees the driver's trainer.output_dir, checked before training.

A checkpoint's files are written by the learners (the model by rank 0, an optimizer shard by
each rank) into a folder the driver creates and then renames into place. On a cluster that
works only when output_dir is one folder for all of them, on shared storage. A learner on a node
that does not see it would fail at the first checkpoint, hours in, or write into a local folder
of the same name, which the driver then commits without the model. So the driver leaves a fresh
token in output_dir and each learner reads it back, in its own process, before any model loads.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import ray

from anomalyr1.platform.job_paths import ABSOLUTE_RULE
from anomalyr1.platform.recipe import RecipeError

MARKER = ".anomalyr1-shared-check"


def _read_token(_actor, path: str) -> str | None:
    """Runs inside a learner (Ray's __ray_call__): what this process finds at the driver's path."""
    try:
        return Path(path).read_text()
    except OSError:
        return None


def write_marker(output: Path) -> tuple[Path, str]:
    token = secrets.token_hex(16)
    marker = output / MARKER
    marker.write_text(token)
    return marker, token


def check_learners_see(output: Path, learners: list) -> None:
    """One line naming output_dir and the first learner that finds another folder there (or none)."""
    marker, token = write_marker(output)
    try:
        found = ray.get([learner.__ray_call__.remote(_read_token, str(marker)) for learner in learners])
    finally:
        marker.unlink(missing_ok=True)
    for rank, seen in enumerate(found):
        if seen != token:
            what = "does not see it" if seen is None else "sees another folder of that name"
            raise RecipeError(
                f"trainer.output_dir = {str(output)!r}: learner {rank} {what} (its node does not share the driver's storage), "
                f"so checkpoints could not be written there; {ABSOLUTE_RULE}"
            )

"""Recipe paths under a Ray job: absolute, or refused before anything starts.

A Ray job's entrypoint runs inside Ray's temporary copy of the job's working_dir, unpacked on
each node separately and deleted after the job; actors without a working_dir run in their
raylet's folder. So a relative `trainer.output_dir` lands in a folder nobody keeps (or a
different one per role), and a relative `data.root` is looked for in a copy that does not hold
the data (`anomalyr1 submit` leaves `data/` out of the upload). Only an absolute path on storage
every node shares names one folder for the driver and all its actors.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from anomalyr1.platform.recipe import HUB_ID, TINY_MODEL, Recipe, RecipeError

RAY_JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"
"""Ray's job supervisor (ray/dashboard/modules/job/job_supervisor.py, Ray 2.60) sets it in the
environment of a job's entrypoint and of nothing else (actors are started by the raylets, which
set RAY_JOB_ID in every worker of every driver, so that one tells nothing): JSON holding the
job's runtime_env and metadata.job_submission_id, which ray.init reads to join the job."""

ABSOLUTE_RULE = "use an absolute path on storage every node shares (e.g. /shared/...)"


def ray_job_id() -> str | None:
    """The submission id of the Ray job whose entrypoint this process is; None outside one."""
    injected = os.environ.get(RAY_JOB_ENV)
    if injected is None:
        return None
    try:
        return str(json.loads(injected)["metadata"]["job_submission_id"])
    except (ValueError, KeyError, TypeError):  # a Ray that words it otherwise: still a job
        return "(submission id unknown)"


def relative_paths(recipe: Recipe, base: Path) -> list[tuple[str, str]]:
    """(key, value) of each recipe path that would resolve against the working folder `base`:
    model.path when it names a folder (a hub id or the builtin model is no path), the cache, the
    data and the outputs."""
    model = recipe.model.path
    model_is_folder = model != TINY_MODEL and ((base / model).expanduser().exists() or not HUB_ID.fullmatch(model))
    paths = {
        "model.path": model if model_is_folder else None,
        "model.cache_dir": recipe.model.cache_dir,
        "data.root": recipe.data.root,
        "data.fewshot_file": recipe.data.fewshot_file,
        "trainer.output_dir": recipe.trainer.output_dir,
    }
    return [(key, value) for key, value in paths.items() if value is not None and not Path(value).expanduser().is_absolute()]


def describe(relative: list[tuple[str, str]]) -> str:
    """'data.root = 'data/MMAD' is' or 'a = 'x', b = 'y' are': the start of a sentence."""
    named = ", ".join(f"{key} = {value!r}" for key, value in relative)
    return f"{named} {'is' if len(relative) == 1 else 'are'}"


def refuse_relative_paths_in_ray_job(recipe: Recipe, origin: str) -> None:
    """In a Ray job's entrypoint (`ray job submit`, `anomalyr1 submit`), a relative path is an
    error; elsewhere the recipe's relative paths are the user's own folder and stay allowed."""
    job = ray_job_id()
    if job is None:
        return
    relative = relative_paths(recipe, Path.cwd())
    if relative:
        raise RecipeError(
            f"{origin}: {describe(relative)} relative, and this runs as Ray job {job}, in a temporary copy of its "
            f"working_dir that differs per node and is deleted after the job: {ABSOLUTE_RULE}"
        )

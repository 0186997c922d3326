"""`anomalyr1 submit`: run a recipe as a Ray job on a cluster and follow it to the end.

The recipe is validated here first, so a typo costs a second instead of an upload and a job
start. The repository (the folder holding pyproject.toml) travels as the job's working_dir;
everything bulky or machine-local in it is excluded, since Ray uploads it on every submission
and refuses packages of more than a few hundred MiB.
"""

from __future__ import annotations

import asyncio
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from anomalyr1.platform.job_paths import ABSOLUTE_RULE, describe, relative_paths
from anomalyr1.platform.recipe import Recipe

EXCLUDES = [".git", ".venv", "__pycache__", "*.egg-info", ".pytest_cache", ".hypothesis", "/runs", "/data", "/.cache", "/build", "/dist"]
"""Version history, virtual environments, run outputs, data sets (`data/`, where MMAD is often
unpacked: tens of GiB, and the job reads its data at an absolute path anyway) and caches: never
needed by the job. Gitignore patterns without a trailing slash, which also match the folder
itself, so Ray skips it whole instead of walking (a virtualenv: tens of thousands of files) and
dropping each file."""


class SubmitError(RuntimeError):
    """A submission problem worded for the user (no repository, cluster unreachable): one line."""


@dataclass(frozen=True)
class JobSpec:
    entrypoint: str
    runtime_env: dict


def repository_root(recipe_path: Path, cwd: Path) -> Path:
    """The folder holding pyproject.toml above the recipe, else above the current folder."""
    for start in (recipe_path.resolve().parent, cwd.resolve()):
        for folder in (start, *start.parents):
            if (folder / "pyproject.toml").is_file():
                return folder
    raise SubmitError(f"no pyproject.toml above {recipe_path} or {cwd}: run from the repository to upload as the job's working_dir")


def _inside(path: str, root: Path) -> str | None:
    """`path` relative to root when the job would find it inside root (relative paths are the
    job's: its working directory is the uploaded root)."""
    resolved = (root / Path(path).expanduser()).resolve()
    return resolved.relative_to(root).as_posix() if resolved.is_relative_to(root) and resolved != root else None


def job_spec(recipe_path: str, overrides: list[str], recipe: Recipe, cwd: Path) -> JobSpec:
    """What to submit: `anomalyr1 train` on the recipe inside the uploaded repository."""
    from anomalyr1.platform.actor_env import ACTOR_ENV

    root = repository_root(Path(recipe_path), cwd)
    relative = _inside(str(Path(recipe_path).resolve()), root)
    if relative is None:
        raise SubmitError(f"{recipe_path} is outside {root}, the folder uploaded as the job's working_dir: move it there")
    clash = sorted(set(recipe.trainer.runtime_env_vars) & set(ACTOR_ENV))
    if clash:
        raise SubmitError(f"trainer.runtime_env_vars: {', '.join(clash)} is set by the platform for every actor; leave it out")
    relative_keys = relative_paths(recipe, root)  # the job's working folder is its copy of root
    if relative_keys:
        raise SubmitError(
            f"{describe(relative_keys)} relative: the job resolves relative paths in Ray's temporary copy of {root}, "
            f"a different one on each node, deleted after the job; {ABSOLUTE_RULE}"
        )
    excludes = list(EXCLUDES)
    model_folder = recipe.model.path if Path(recipe.model.path).expanduser().is_absolute() else None
    for own in (recipe.trainer.output_dir, recipe.model.cache_dir, recipe.data.root, model_folder):  # read or written at their own paths
        inside = _inside(own, root) if own else None
        if inside is not None:
            excludes.append(f"/{inside}")
    runtime_env: dict = {"working_dir": str(root), "excludes": excludes}
    if recipe.trainer.runtime_pip:
        runtime_env["pip"] = list(recipe.trainer.runtime_pip)
    if recipe.trainer.runtime_env_vars:
        runtime_env["env_vars"] = dict(recipe.trainer.runtime_env_vars)
    # `python -m`: under a pip runtime_env, Ray puts the job's virtualenv python first on PATH
    command = ["python", "-m", "anomalyr1.platform.cli", "train", relative]
    for assignment in overrides:
        command += ["--set", assignment]
    return JobSpec(entrypoint=shlex.join(command), runtime_env=runtime_env)


def _client(address: str):
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except AuthenticationError as exc:
        raise SubmitError(
            f"Ray's job server at {address} wants a token ({str(exc).splitlines()[0]}): "
            "set RAY_AUTH_MODE=token and the cluster's token in RAY_AUTH_TOKEN or ~/.ray/auth_token"
        ) from None
    except (ConnectionError, ValueError) as exc:
        raise SubmitError(f"could not reach Ray's job server at {address}: {str(exc).splitlines()[0]}") from None


def submit(spec: JobSpec, address: str) -> str:
    """The submission id."""
    return _client(address).submit_job(entrypoint=spec.entrypoint, runtime_env=spec.runtime_env)


def follow(address: str, job_id: str, out: TextIO = sys.stdout) -> tuple[str, str]:
    """Stream the job's logs until it ends; its final status and Ray's message about it."""
    client = _client(address)

    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            out.write(chunk)
            out.flush()

    asyncio.run(tail())
    while not (status := client.get_job_status(job_id)).is_terminal():  # the log stream can close first
        time.sleep(1.0)
    return status.value, client.get_job_info(job_id).message or ""

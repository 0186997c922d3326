"""Joining or starting Ray for a run: its own module, light to import (Ray, no torch), so the
CLI can start Ray's processes while the driver's heavy modules are still importing."""

from __future__ import annotations

import logging
import os

import ray

from anomalyr1.platform.actor_env import ACTOR_ENV, QUIET_ENV
from anomalyr1.platform.recipe import Recipe

log = logging.getLogger("anomalyr1")

LOCAL_SYSTEM_CONFIG = {"enable_worker_prestart": False, "prestart_worker_first_driver": False}
"""A local Ray otherwise starts idle Python workers ahead of demand (one per CPU, and more when
the driver connects); every actor here starts a worker of its own, so on a laptop those idle
workers only cost a second of CPU each at start-up and ~45 MiB each for the whole run."""


def connect_ray(recipe: Recipe) -> None:
    """Join the recipe's cluster, RAY_ADDRESS's (as under `ray job submit`), or start a local one.

    The console stays as quiet as the command's logging (`-v` sets INFO): without it, Ray's own
    lines (its start, the token-authentication notice) and the actors' bars stay out."""
    if ray.is_initialized():
        return
    verbose = log.isEnabledFor(logging.INFO)
    env_vars = {**ACTOR_ENV, **({} if verbose else QUIET_ENV)}
    ray_logging = logging.INFO if verbose else logging.ERROR
    address = recipe.trainer.ray_address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, runtime_env={"env_vars": env_vars}, log_to_driver=True, logging_level=ray_logging)
    else:
        trainer = recipe.trainer
        ray.init(
            address="local",  # a new one: without it Ray joins any cluster `ray start` left on this machine
            num_cpus=os.cpu_count(),
            include_dashboard=trainer.dashboard,
            dashboard_host=trainer.dashboard_host,
            runtime_env={"env_vars": env_vars},
            logging_level=ray_logging,
            _system_config=LOCAL_SYSTEM_CONFIG,
        )

"""Waiting on the roles' actors when one is lost: restarting is not dying, and no wait is endless.

When an actor's process or node dies, Ray restarts a rollout worker or reward actor
(max_restarts), on another node when its placement-group bundle had to move there. Until it runs
again its calls fail with ActorUnavailableError ("temporarily unavailable"), and a result that
lived in a dead node's object store is lost (ObjectLostError). Neither is a death to count: the
caller waits for the actor, up to trainer.placement_timeout_s, and sends the call again. A death
is counted once, when the actor first answers from a new process (Restarts), however many of its
calls failed meanwhile. ActorDiedError means Ray will not restart it (restarts used up).

Calls to an actor that runs are bounded by Ray itself: they fail when the actor or its node dies.
The waits that could last for ever are those for an actor that does not run yet: one Ray is
restarting, or one just created (a rebuilt learner) whose bundle Ray must place again. Those wait
at most timeout_s; then the error says what the cluster lacks, in the planner's words.
"""

from __future__ import annotations

import time
import warnings
from typing import Callable

import ray

from anomalyr1.platform.placement import PlacementError, available_now

LOST = (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError, ray.exceptions.OutOfMemoryError)
"""A call's result is gone: its actor died or is restarting (its node was lost, or Ray's memory
monitor killed it), or the node holding the result died."""


class ActorGone(RuntimeError):
    """Ray will not restart the actor again: the run cannot go on without it."""


class ActorWaits:
    """The deadline (trainer.placement_timeout_s) for an actor that does not run, and what to say
    when it passes."""

    POLL_S = 1.0

    def __init__(self, timeout_s: float, shortfall: Callable[[], str | None] = lambda: None):
        self.timeout_s = timeout_s
        self.shortfall = shortfall
        """What the cluster lacks for the roles now (placement.shortfall), or None."""

    def until_back(self, actor, what: str) -> tuple[str, bool]:
        """`actor`'s process (see process_of) once it answers again; a restart also loads its
        model, hence the same limit."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                return ray.get(actor.__ray_call__.remote(_process), timeout=max(0.0, deadline - time.monotonic()))
            except ray.exceptions.ActorDiedError as exc:
                raise ActorGone(f"{what} died and Ray will not restart it again: {str(exc).splitlines()[0]}") from exc
            except ray.exceptions.ActorUnavailableError:  # restarting: its calls fail until it runs
                if time.monotonic() >= deadline:
                    raise self.stranded(what) from None
                time.sleep(self.POLL_S)
            except ray.exceptions.GetTimeoutError:
                raise self.stranded(what) from None

    def start(self, make: Callable[[], list], what: str) -> list:
        """New actors from `make()`, once all of them run. Their calls would queue until Ray places
        them, so this waits at most timeout_s in all; actors placed on a node that died before
        they ran (Ray had not yet found it dead) are made again, into the bundles Ray moves."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            actors = make()
            pending = [actor.__ray_ready__.remote() for actor in actors]
            try:
                while pending:
                    done, pending = ray.wait(pending, num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
                    if not done:
                        raise self.stranded(what)
                    ray.get(done[0])
                return actors
            except ray.exceptions.RayActorError as exc:
                _kill(actors)
                if exc.actor_init_failed:  # its constructor's error: making it again would not help
                    raise
                time.sleep(self.POLL_S)
            except BaseException:
                _kill(actors)
                raise

    def stranded(self, what: str) -> PlacementError:
        missing = self.shortfall() or (
            f"the cluster can hold every role, but it was not running yet (available now: {available_now()}); "
            "a restart that loads a large model may need a larger trainer.placement_timeout_s"
        )
        return PlacementError(f"{what} did not come back within {self.timeout_s:g}s (trainer.placement_timeout_s): {missing}")


def process_of() -> tuple[str, bool]:
    """Called inside an actor: its process (Ray's worker id), and whether it is one Ray restarted."""
    context = ray.get_runtime_context()
    with warnings.catch_warnings():  # Ray 2.60's property reads its own deprecated actor_id
        warnings.simplefilter("ignore", DeprecationWarning)
        return context.get_worker_id(), context.was_current_actor_reconstructed


def _process(_actor) -> tuple[str, bool]:
    return process_of()  # through Ray's __ray_call__, which passes the actor first


class Restarts:
    """Deaths of a role's actors, each counted once: when a process Ray restarted first answers."""

    def __init__(self):
        self._seen: dict[int, set[str]] = {}
        self.count = 0

    def saw(self, index: int, process: tuple[str, bool]) -> bool:
        """Whether actor `index` answering from `process` (process_of's) is news of a death."""
        worker, restarted = process
        seen = self._seen.setdefault(index, set())
        new = restarted and worker not in seen
        seen.add(worker)
        self.count += new
        return new


def _kill(actors: list) -> None:
    for actor in actors:
        ray.kill(actor, no_restart=True)

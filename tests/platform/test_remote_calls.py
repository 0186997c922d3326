"""Waiting on actors that do not run: through a restart, never past the deadline, deaths counted once."""

import os
import signal
import time

import pytest
import ray

from anomalyr1.platform.placement import PlacementError
from anomalyr1.platform.remote_calls import ActorGone, ActorWaits, Restarts


def slow_actor(**options):
    """Restarts take a while, as a model load does; calls fail as "temporarily unavailable" meanwhile.
    Defined here, so Ray ships the class by value: the workers cannot import test modules."""

    class Slow:
        def __init__(self):
            if ray.get_runtime_context().was_current_actor_reconstructed:
                time.sleep(3)

        def process(self) -> str:
            return ray.get_runtime_context().get_worker_id()

        def pid(self) -> int:
            return os.getpid()

    return ray.remote(Slow).options(**options).remote()


def test_a_restarted_process_is_one_death_however_often_it_is_seen():
    restarts = Restarts()
    assert not restarts.saw(0, ("a", False)), "the first process"
    assert restarts.saw(0, ("b", True)), "one Ray restarted"
    assert not restarts.saw(0, ("b", True)), "the same death, seen again"
    assert restarts.saw(1, ("x", True)), "actor 1 first answers from a restart: its first process died unseen"
    assert restarts.count == 2


def test_an_actor_ray_restarts_is_waited_for_and_one_it_gave_up_on_is_gone(ray_session):
    actor = slow_actor(max_restarts=1, max_task_retries=0, num_cpus=0.1)
    first = ray.get(actor.process.remote())
    os.kill(ray.get(actor.pid.remote()), signal.SIGKILL)
    with pytest.raises(ray.exceptions.ActorUnavailableError):
        ray.get(actor.process.remote())  # what a caller sees while Ray restarts it
    worker, restarted = ActorWaits(60.0).until_back(actor, "the slow actor")
    assert restarted and worker != first
    assert ray.get(actor.process.remote()) == worker, "it answers from the restarted process"

    os.kill(ray.get(actor.pid.remote()), signal.SIGKILL)  # its one restart is used up
    with pytest.raises(ActorGone, match="^the slow actor died and Ray will not restart it again: "):
        ActorWaits(60.0).until_back(actor, "the slow actor")


def test_new_actors_ray_cannot_place_end_the_wait_at_the_deadline_with_what_is_missing(ray_session):
    made = []

    def make():
        made.append(slow_actor(num_cpus=64))  # more than the session's Ray has
        return made[-1:]

    waits = ActorWaits(2.0, lambda: "the recipe needs 64 CPU (1 learner x (64 CPU)) but the cluster has 2 CPU")
    start = time.monotonic()
    with pytest.raises(PlacementError) as error:
        waits.start(make, "the learner group")
    assert time.monotonic() - start < 10
    assert str(error.value) == (
        "the learner group did not come back within 2s (trainer.placement_timeout_s): "
        "the recipe needs 64 CPU (1 learner x (64 CPU)) but the cluster has 2 CPU"
    )
    with pytest.raises(ray.exceptions.RayActorError):  # killed, so Ray does not place it later
        ray.get(made[0].process.remote(), timeout=30)

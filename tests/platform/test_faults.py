"""Actors that die come back: the run completes and its metrics count the restarts."""

import os
import signal
import threading
import time

import pytest
import ray

from anomalyr1.platform.driver import Trainer
from anomalyr1.platform.metrics import read_metrics

STEPS = 5


def train_in_thread(trainer) -> tuple[threading.Thread, dict]:
    """The run in a thread, so the test can kill its actors; the outcome holds `final` or `error`."""
    outcome = {}

    def run():
        try:
            outcome["final"] = trainer.train()
        except BaseException as exc:  # reported by the test's assertion
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def wait_for(condition, timeout=300.0):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out waiting for the run"
        time.sleep(0.02)


@pytest.mark.parametrize(
    "overlap", [("trainer.save_every=1",), ("trainer.save_every=2", "trainer.max_staleness=1")], ids=["synchronous", "staleness1"]
)
def test_killed_rollout_reward_and_learner_actors_are_recovered(ray_session, tiny_recipe, learnable_reward, overlap):
    """With staleness 1 checkpoints are two steps apart, so rollouts run ahead between them."""
    trainer = Trainer(tiny_recipe(f"trainer.steps={STEPS}", *overlap, "trainer.prompts_per_step=4", "rollout.n=4", learnable_reward))
    thread, outcome = train_in_thread(trainer)
    wait_for(lambda: trainer.step >= 1 and hasattr(trainer, "version"))  # weights synced once
    roles = trainer.roles
    pids = {
        "rollout": ray.get(roles.rollout.actors[0].pid.remote()),
        "reward": ray.get(roles.reward_pool.actors[0].pid.remote()),
        "learner": ray.get(roles.learners.actors[1].pid.remote()),
    }
    for step, role in ((2, "rollout"), (3, "reward"), (4, "learner")):
        wait_for(lambda: trainer.step >= step or not thread.is_alive())
        os.kill(pids[role], signal.SIGKILL)
    thread.join(timeout=600)
    assert "error" not in outcome, f"the run failed: {outcome.get('error')!r}"
    assert outcome["final"].is_dir()

    metrics = read_metrics(trainer.output / "metrics.jsonl")
    assert [m["step"] for m in metrics] == list(range(1, STEPS + 1)), "every step exactly once, redone steps replaced"
    last = metrics[-1]
    assert last["fault/rollout_restarts"] >= 1, last
    assert last["fault/reward_restarts"] >= 1, last
    assert last["fault/learner_restarts"] == 1, last


def test_a_killed_colocated_learner_is_rebuilt_with_its_engine(ray_session, tiny_recipe, learnable_reward):
    """Colocated, a learner is also a rollout engine: killed (while it generates or trains), the
    group is rebuilt from the last checkpoint, engines included, and every step lands once."""
    trainer = Trainer(tiny_recipe(f"trainer.steps={STEPS}", "trainer.save_every=1", "rollout.placement=colocated",
                                  "trainer.prompts_per_step=4", "rollout.n=4", learnable_reward))
    thread, outcome = train_in_thread(trainer)
    wait_for(lambda: trainer.step >= 2 and hasattr(trainer, "version") or not thread.is_alive())
    victim = ray.get(trainer.roles.learners.actors[1].pid.remote())
    os.kill(victim, signal.SIGKILL)
    thread.join(timeout=600)
    assert "error" not in outcome, f"the run failed: {outcome.get('error')!r}"
    metrics = read_metrics(trainer.output / "metrics.jsonl")
    assert [m["step"] for m in metrics] == list(range(1, STEPS + 1)), "every step exactly once, redone steps replaced"
    assert metrics[-1]["fault/learner_restarts"] == 1, metrics[-1]
    assert metrics[-1]["fault/rollout_restarts"] == 0, "colocated, a lost engine is a learner fault, not a rollout one"

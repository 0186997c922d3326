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
    outcome = {}

    def run():
        try:
            outcome["final"] = trainer.train()
        except BaseException as exc:  # reported by the assertion below
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    wait_for(lambda: trainer.step >= 1 and getattr(trainer, "learners", None) and hasattr(trainer, "version"))  # weights synced once
    pids = {
        "rollout": ray.get(trainer.rollout_workers[0].pid.remote()),
        "reward": ray.get(trainer.reward_pool.actors[0].pid.remote()),
        "learner": ray.get(trainer.learners[1].pid.remote()),
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

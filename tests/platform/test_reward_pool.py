"""The reward pool: results in order, group-aware terms, and no loss when an actor dies."""

import os
import signal
import time
from pathlib import Path

import ray
import torch

from anomalyr1.platform.batch import RolloutGroup
from anomalyr1.platform.reward_pool import RewardPool, reward_inputs
from anomalyr1.rewards import RewardTerm, combine_rewards

SLOW_ROAM = str(Path(__file__).resolve().parents[1] / "fixtures" / "slow_reward.py") + ":slow_roam"
TERMS = [{"name": SLOW_ROAM, "weight": 1.0, "params": {}}, {"name": "accuracy", "weight": 0.5, "params": {}}]

COMPLETIONS = [
    "<think>the answer is B</think><answer>B</answer>",
    "<think>I think A.</think> <answer>B</answer>",
    "<answer>A</answer>",
    "<think>no idea</think><answer>C</answer>",
]


def groups(count: int) -> list[RolloutGroup]:
    made = []
    for i in range(count):
        sample = {"id": f"s{i}", "answer": "AB"[i % 2], "dataset": "D", "category": "c", "defect_type": "good" if i % 3 else "scratch", "extra": {}}
        texts = [COMPLETIONS[(i + j) % len(COMPLETIONS)] for j in range(4)]
        made.append(RolloutGroup(sample=sample, prompt_ids=[1], pixel_values=torch.zeros(1, 1), image_grid_thw=torch.ones(1, 3, dtype=torch.long), responses=[[1]] * 4, texts=texts))
    return made


def expected(batch: list[RolloutGroup]) -> list[list[float]]:
    reward = combine_rewards([RewardTerm(spec=t["name"], weight=t["weight"]) for t in TERMS])
    return [[r.score for r in reward.score_group(*reward_inputs(g))] for g in batch]


def test_scores_come_back_in_order_from_several_actors(ray_session):
    batch = groups(10)
    pool = RewardPool.start(TERMS, 2, lambda i: {"num_cpus": 0.1})
    results, _ = pool.gather(pool.submit(batch))
    assert [[r.score for r in rs] for rs in results] == expected(batch)
    assert {k for rs in results for r in rs for k in r.parts} >= {"slow_roam", "accuracy"}
    for actor in pool.actors:
        ray.kill(actor)


def test_killed_reward_actor_is_restarted_and_nothing_is_lost(ray_session):
    batch = groups(24)
    pool = RewardPool.start(TERMS, 2, lambda i: {"num_cpus": 0.1})
    victim = pool.actors[1]
    pid_before = ray.get(victim.pid.remote())
    pending = pool.submit(batch)  # 12 groups x 4 completions x 20 ms: ~1 s of work per actor
    time.sleep(0.3)
    os.kill(pid_before, signal.SIGKILL)
    results, _ = pool.gather(pending)
    assert [[r.score for r in rs] for rs in results] == expected(batch), "a share was lost or scored twice"
    assert ray.get(victim.pid.remote()) != pid_before, "the actor was not restarted"
    assert pool.restarts == 1, "one death, counted once"
    for actor in pool.actors:
        ray.kill(actor)

"""Benchmark: completions scored per second on the reward pool, for roam and bbox_iou.

Scores the same batch of realistic completions with 1 and with 2 reward actors (Ray, local) and
prints completions/s in all, per actor, and the speed-up from 1 to 2 actors.

    python benchmarks/reward_throughput.py [--groups 400] [--g 8]
"""

from __future__ import annotations

import argparse
import json
import random
import time

import ray
import torch

from anomalyr1.platform.batch import RolloutGroup
from anomalyr1.platform.reward_pool import RewardPool


def completion(rng: random.Random, reward: str) -> str:
    letter = rng.choice("ABCD")
    words = " ".join(rng.choice(["the", "surface", "shows", "a", "scratch", "near", "top", "left", "normal", "crack"]) for _ in range(60))
    if reward == "bbox_iou":
        x, y = rng.randint(0, 800), rng.randint(0, 600)
        boxes = json.dumps([{"bbox_2d": [x, y, x + rng.randint(10, 200), y + rng.randint(10, 200)], "label": "scratch"}])
        return f"<think>{words}</think><answer>{boxes}</answer>"
    return f"<think>{words} so the answer is {letter}.</think><answer>{letter}</answer>"


def batch(reward: str, groups: int, g: int, seed: int = 0) -> list[RolloutGroup]:
    rng = random.Random(seed)
    made = []
    for i in range(groups):
        sample = {"id": str(i), "answer": "B", "dataset": "D", "category": "c", "defect_type": "scratch",
                  "bbox": [100.0, 100.0, 300.0, 260.0], "extra": {"image_size": [1000, 800]}}
        made.append(RolloutGroup(sample=sample, prompt_ids=[0], pixel_values=torch.zeros(1, 1), image_grid_thw=torch.ones(1, 3, dtype=torch.long),
                                 responses=[[0]] * g, texts=[completion(rng, reward) for _ in range(g)], model_input_size=(980, 784)))
    return made


def rate(reward: str, actors: int, work: list[RolloutGroup]) -> float:
    pool = RewardPool.start([{"name": reward, "weight": 1.0, "params": {}}], actors, lambda i: {"num_cpus": 1})
    pool.gather(pool.submit(work[:actors]))  # warm up: actors started, reward imported
    start = time.perf_counter()
    pool.gather(pool.submit(work))
    elapsed = time.perf_counter() - start
    for actor in pool.actors:
        ray.kill(actor)
    return sum(len(g.texts) for g in work) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--groups", type=int, default=400)
    parser.add_argument("--g", type=int, default=8)
    args = parser.parse_args()
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    print(f"{'reward':<10}{'actors':>7}{'completions/s':>15}{'per actor':>11}{'speed-up':>10}")
    for reward in ("roam", "bbox_iou"):
        work = batch(reward, args.groups, args.g)
        one = rate(reward, 1, work)
        two = rate(reward, 2, work)
        print(f"{reward:<10}{1:>7}{one:>15.0f}{one:>11.0f}{'':>10}")
        print(f"{reward:<10}{2:>7}{two:>15.0f}{two / 2:>11.0f}{two / one:>9.2f}x")


if __name__ == "__main__":
    main()

"""How one rollout call samples: the rollout role's contract with both engines.

Built from the recipe's `rollout` section for training; evaluation asks for greedy answers with
its own length. Per call, because the seed changes with the step and the worker.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from anomalyr1.platform.recipe import RolloutConfig


@dataclass(frozen=True)
class SamplingSettings:
    n: int = 8
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 256
    greedy: bool = False
    seed: int | None = None

    @classmethod
    def of(cls, rollout: RolloutConfig) -> "SamplingSettings":
        return cls(n=rollout.n, temperature=rollout.temperature, top_p=rollout.top_p, top_k=rollout.top_k, max_new_tokens=rollout.max_new_tokens)

    def seeded(self, seed: int) -> "SamplingSettings":
        return replace(self, seed=seed)

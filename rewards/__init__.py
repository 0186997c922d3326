"""Rewards for GRPO on industrial anomaly detection: ROAM (AnomalyR1), accuracy and format,
the LR-IAD focal reward, and box rewards; plus loading by spec and weighted combination.

Importing the package registers the builtin rewards. Nothing here imports the platform.
"""

from . import accuracy, bbox, lr_iad, roam  # noqa: F401  (register the builtin rewards)
from .base import Reward, RewardResult
from .combine import CombinedReward, RewardTerm, combine_rewards
from .registry import list_rewards, load_reward, register_reward

__all__ = [
    "CombinedReward",
    "Reward",
    "RewardResult",
    "RewardTerm",
    "combine_rewards",
    "list_rewards",
    "load_reward",
    "register_reward",
]

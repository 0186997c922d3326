"""FSDP2 for a Hugging Face model: one shard unit per transformer block, then the root.

Blocks are found through the model's own `_no_split_modules` (Qwen2.5-VL names its decoder
layer and its vision block there), so the same code shards any model transformers can load.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard


def shard_blocks(model: nn.Module, param_dtype: torch.dtype, cpu_offload: bool = False) -> nn.Module:
    block_names = set(getattr(model, "_no_split_modules", None) or [])
    if not block_names:
        raise ValueError(f"{type(model).__name__} names no _no_split_modules: cannot choose FSDP units")
    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    offload = CPUOffloadPolicy() if cpu_offload else OffloadPolicy()
    blocks = [module for module in model.modules() if type(module).__name__ in block_names]
    for block in blocks:
        fully_shard(block, mp_policy=policy, offload_policy=offload)
    fully_shard(model, mp_policy=policy, offload_policy=offload)
    return model


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The unsharded weights on CPU at rank 0 (empty elsewhere); every rank must call it."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=options)

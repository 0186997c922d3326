"""FSDP2 for a Hugging Face model: one shard unit per transformer block, then the root.

Blocks are found through the model's own `_no_split_modules` (Qwen2.5-VL names its decoder
layer and its vision block there), so the same code shards any model transformers can load.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.tensor import DTensor

from anomalyr1.platform.learner.backend import rank0_loads_weights
from anomalyr1.platform.learner.state import load_rank_state, save_rank_state
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, set_model_state_dict
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


def shard_from_rank0(model: nn.Module, param_dtype: torch.dtype, cpu_offload: bool, device: torch.device) -> nn.Module:
    """Shard a model that only rank 0 loaded (the others built it on the meta device): rank 0
    broadcasts each tensor once and every rank keeps its shard, so the host holds one full copy
    of the weights instead of one per learner (at 3B with a bf16 reference, ~90 GB across four).

    Buffers are not in the state dict (rotary inverse frequencies are non-persistent), so they
    are broadcast from rank 0 too. Every rank must call it.
    """
    full = model.state_dict() if dist.get_rank() == 0 else {}  # the full tensors, before sharding replaces them
    shard_blocks(model, param_dtype, cpu_offload)
    if dist.get_rank() != 0:
        model.to_empty(device="cpu" if cpu_offload else device)
    set_model_state_dict(model, full, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True, cpu_offload=cpu_offload))
    del full
    with torch.no_grad():
        for buffer in model.buffers():
            carried = buffer.to(device)
            dist.broadcast(carried, src=0)
            buffer.copy_(carried)
    return model


def shard_policy(model: nn.Module, param_dtype: torch.dtype, cpu_offload: bool, device: torch.device) -> nn.Module:
    """Shard a model as the learner loaded it: from rank 0's copy when only rank 0 read the
    weights (the learner asks the same rank0_loads_weights), else the rank's own."""
    if rank0_loads_weights("fsdp2", dist.get_world_size()):
        return shard_from_rank0(model, param_dtype, cpu_offload, device)
    return shard_blocks(model, param_dtype, cpu_offload)


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The unsharded weights on CPU at rank 0 (empty elsewhere); every rank must call it."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=options)


def gather_full_weights(
    model: nn.Module,
    device: torch.device,
    dtype: torch.dtype | None = None,
    bucket_bytes: int = 256 << 20,
    select: Callable[[str], bool] | None = None,
) -> dict[str, torch.Tensor] | None:
    """Unsharded weights on the host at rank 0 (None elsewhere); every rank must call it."""
    keep = dist.get_rank() == 0
    weights = dict(stream_full_weights(model, device, dtype, bucket_bytes, keep=keep, out_device=torch.device("cpu"), select=select))
    return weights if keep else None


def stream_full_weights(
    model: nn.Module, device: torch.device, dtype: torch.dtype | None = None, bucket_bytes: int = 256 << 20,
    keep: bool = True, out_device: torch.device | None = None, select: Callable[[str], bool] | None = None,
) -> Iterator[tuple[str, torch.Tensor]]:
    """The unsharded weights, one all-gather per bucket, yielded tensor by tensor as each bucket
    arrives (on out_device, default `device`) where `keep`; ranks that do not keep them still
    run every gather. Every rank must consume it to the end, in step with the others.

    `get_model_state_dict` gathers tensor by tensor, which on gloo costs ~10x more than one flat
    gather; buckets bound the extra memory for multi-GB models, and a consumer that loads each
    tensor as it comes (an engine's weight loader) never holds a second full copy. FSDP2 shards
    every tensor on dim 0, so each tensor is rebuilt by concatenating the ranks' pieces in rank
    order. The buckets travel on `device`, the learners' compute device, even when the shards
    are offloaded to the host: there NCCL carries them, not gloo. `select` keeps only the tensors
    whose names it accepts (the adapters alone, for an adapter-only sync).
    """
    world = dist.get_world_size()
    out_device = out_device or device
    entries = [(name, value) for name, value in model.state_dict().items() if select is None or select(name)]
    local = [(v.to_local() if isinstance(v, DTensor) else v).detach() for _, v in entries]
    sharded = [isinstance(v, DTensor) for _, v in entries]
    rows = torch.tensor([t.shape[0] if t.dim() else 1 for t in local], dtype=torch.long, device=device)
    all_rows = [torch.zeros_like(rows) for _ in range(world)]
    dist.all_gather(all_rows, rows)
    all_rows = [r.cpu() for r in all_rows]
    bucket: list[int] = []
    size = 0
    for index, (name, value) in enumerate(entries):
        if not sharded[index]:
            if keep:
                yield name, value.detach().to(out_device, dtype or value.dtype)
            continue
        bucket.append(index)
        size += value.numel() * value.element_size()
        if size >= bucket_bytes:
            yield from _gather_bucket(entries, local, all_rows, bucket, device, dtype, world, keep, out_device)
            bucket, size = [], 0
    if bucket:
        yield from _gather_bucket(entries, local, all_rows, bucket, device, dtype, world, keep, out_device)


def _gather_bucket(entries, local, all_rows, bucket, device, dtype, world, keep, out_device) -> Iterator[tuple[str, torch.Tensor]]:
    """One all-gather; where `keep`, the bucket's tensors rebuilt on out_device."""
    rank = dist.get_rank()
    wire = dtype or local[bucket[0]].dtype
    row_numel = [math.prod(entries[i][1].shape[1:]) for i in bucket]
    counts = [sum(int(all_rows[r][i]) * n for i, n in zip(bucket, row_numel)) for r in range(world)]
    longest = max(counts)
    flat = torch.zeros(longest, dtype=wire, device=device)
    if counts[rank]:
        flat[: counts[rank]] = torch.cat([local[i].reshape(-1).to(device, wire) for i in bucket])
    gathered = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(gathered, flat)
    if not keep:
        return
    pieces: dict[int, list[torch.Tensor]] = {i: [] for i in bucket}
    for r in range(world):
        offset = 0
        buffer = gathered[r].to(out_device)
        for i, n in zip(bucket, row_numel):
            rows = int(all_rows[r][i])
            shape = (rows, *entries[i][1].shape[1:])
            pieces[i].append(buffer[offset : offset + rows * n].view(shape))
            offset += rows * n
    for i in bucket:
        name, value = entries[i]
        yield name, torch.cat(pieces[i]).reshape(value.shape).clone()


class FSDPBackend:
    """FSDP2 shards of parameters, gradients and AdamW state, one unit per transformer block."""

    def __init__(self, policy: nn.Module, recipe, device: torch.device):
        learner = recipe.learner
        self.device = device
        self.sync_each_micro_batch = learner.sync_grads_each_micro_batch
        self.module = shard_policy(policy, getattr(torch, learner.param_dtype), learner.cpu_offload, device)
        trainable = [p for p in self.module.parameters() if p.requires_grad]  # with LoRA, the adapters alone
        self.optimizer = torch.optim.AdamW(trainable, lr=learner.lr, betas=learner.betas, weight_decay=learner.weight_decay)
        self.optimizer.zero_grad(set_to_none=True)

    def backward(self, loss: torch.Tensor, last_micro_batch: bool) -> None:
        # Reduce-scattering after every micro-batch moves the whole gradient once per micro-batch;
        # held back, FSDP2 accumulates unsharded fp32 gradients and reduces once, at the cost of
        # their memory (4 bytes a parameter) until the step: learner.sync_grads_each_micro_batch
        # trades the traffic back for that memory.
        self.module.set_requires_gradient_sync(last_micro_batch or self.sync_each_micro_batch)
        loss.backward()

    def step(self, grad_clip: float, loss_is_finite: bool) -> tuple[float, bool]:
        norm = torch.nn.utils.clip_grad_norm_(self.module.parameters(), grad_clip)
        norm = float(norm.full_tensor() if isinstance(norm, DTensor) else norm)
        applied = loss_is_finite and math.isfinite(norm)
        if applied:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm, applied

    def rollout_weights(self, dtype: torch.dtype, select: Callable[[str], bool] | None = None) -> dict[str, torch.Tensor] | None:
        return gather_full_weights(self.module, self.device, dtype, select=select)

    def stream_rollout_weights(self, dtype: torch.dtype, select: Callable[[str], bool] | None = None) -> Iterator[tuple[str, torch.Tensor]]:
        return stream_full_weights(self.module, self.device, dtype, select=select)

    def full_state_dict(self) -> dict[str, torch.Tensor] | None:
        state = full_state_dict(self.module)
        return state if dist.get_rank() == 0 else None

    def save_state(self, directory: Path, rank: int, world_size: int, extra: dict) -> None:
        save_rank_state(directory, rank, world_size, self.optimizer, extra)

    def load_state(self, directory: Path, rank: int, world_size: int) -> dict:
        return load_rank_state(directory, rank, world_size, self.optimizer)


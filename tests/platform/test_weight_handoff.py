"""The group path's buckets (platform/weight_handoff.py), without vLLM: what the actor packs is
what every worker unpacks, bit for bit, whatever the dtypes and shapes."""

from __future__ import annotations

import torch

from anomalyr1.platform.weight_handoff import plan_buckets, unpack


def _wire(bucket) -> list:
    """The layout as it travels with collective_rpc: names, dtype names, shapes, offsets."""
    return [[name, str(tensor.dtype).removeprefix("torch."), list(tensor.shape), offset] for name, tensor, offset in bucket.entries]


def test_buckets_carry_every_tensor_bit_for_bit():
    torch.manual_seed(0)
    state = {
        "odd.weight": torch.randn(3, 5),  # 60 bytes: the next tensor's offset must be realigned
        "bf16.weight": torch.randn(7, 3).to(torch.bfloat16),
        "steps": torch.arange(5),
        "scalar": torch.tensor(0.5, dtype=torch.float64),
        "large.weight": torch.randn(64, 64),  # 16 KiB: a bucket of its own
        "transposed.weight": torch.randn(4, 6).t(),  # not contiguous
        "last.bias": torch.randn(9),
    }
    buckets = plan_buckets(state, bucket_bytes=1024)
    assert [[name for name, _, _ in b.entries] for b in buckets] == [
        ["odd.weight", "bf16.weight", "steps", "scalar"], ["large.weight"], ["transposed.weight", "last.bias"]]
    assert buckets[1].pack().data_ptr() == state["large.weight"].data_ptr(), "a bucket of one tensor is sent uncopied"
    received = {}
    for bucket in buckets:
        buffer = bucket.pack().clone()  # what the broadcast leaves in a worker's fresh buffer
        assert buffer.dtype == torch.uint8 and buffer.numel() == bucket.nbytes
        received.update(unpack(buffer, _wire(bucket)))
    assert list(received) == list(state)
    for name, tensor in state.items():
        assert received[name].dtype == tensor.dtype and torch.equal(received[name], tensor), name


"""The learners' torch.distributed group on any device, and the small collectives the loop runs.

`init_process_group("nccl")` makes a CUDA-only group (torch maps only `cuda` to NCCL), and every
collective on a CPU tensor then raises "No backend type associated with device type cpu". The
learners hand small CPU values to collectives (counts, metric sums), and FSDP2's offloaded
shards and torch's state-dict helpers use CPU tensors too, so on a GPU the group gets a backend
per device: NCCL for CUDA tensors, gloo for CPU ones. The learner's own collectives still build
their tensors on the compute device, so they ride NCCL there and never take gloo's slower path
by accident. On CPU there is only gloo.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def process_group_backend(device: torch.device) -> str:
    """The `backend` argument of init_process_group for a group whose compute runs on `device`."""
    return "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"


def all_reduce_values(values: tuple[float, ...], device: torch.device, op=dist.ReduceOp.SUM) -> list[float]:
    """Reduce a few Python numbers over the group, in float64 on the compute device."""
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=op)
    return tensor.tolist()

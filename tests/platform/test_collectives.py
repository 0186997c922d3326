"""The learners' process group on GPU and CPU: every collective's tensors have a backend."""

import torch
import torch.distributed as dist
from torch.distributed.distributed_c10d import BackendConfig

from anomalyr1.platform.learner.collectives import all_reduce_values, process_group_backend
from anomalyr1.platform.learner.worker import free_port


def test_a_cuda_group_carries_cpu_tensors_on_gloo_and_cuda_tensors_on_nccl():
    """A plain "nccl" group maps only cuda: the learners' CPU tensors (offloaded shards, the
    state-dict helpers') would raise "No backend type associated with device type cpu"."""
    assert BackendConfig(dist.Backend("nccl")).get_device_backend_map() == {"cuda": "nccl"}
    chosen = BackendConfig(dist.Backend(process_group_backend(torch.device("cuda", 0)))).get_device_backend_map()
    assert chosen == {"cpu": "gloo", "cuda": "nccl"}
    assert process_group_backend(torch.device("cpu")) == "gloo"


def test_reduced_values_are_built_on_the_compute_device(monkeypatch):
    seen = []
    monkeypatch.setattr(dist, "all_reduce", lambda tensor, op: seen.append((tensor.device, tensor.dtype, op)))
    assert all_reduce_values((3, 4.5), torch.device("cpu"), dist.ReduceOp.MAX) == [3.0, 4.5]
    assert seen == [(torch.device("cpu"), torch.float64, dist.ReduceOp.MAX)]


def test_all_reduce_values_on_a_real_group():
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        assert all_reduce_values((1, 2), torch.device("cpu")) == [1.0, 2.0]
    finally:
        dist.destroy_process_group()

"""FSDP2 helpers over a real 3-rank gloo group (3, so that shards come out uneven)."""

import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD = 3


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _check_gather(rank: int, port: int, path: str, results) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    from anomalyr1.platform.learner.fsdp import full_state_dict, gather_full_weights, shard_blocks
    from anomalyr1.platform.models import load_policy

    model = shard_blocks(load_policy(path), torch.float32)
    reference = full_state_dict(model)
    small_buckets = gather_full_weights(model, bucket_bytes=10_000)
    one_bucket = gather_full_weights(model)
    half = gather_full_weights(model, dtype=torch.bfloat16)
    if rank == 0:
        uneven = [k for k, v in reference.items() if v.dim() and v.shape[0] % WORLD]
        results.put({
            "keys": set(reference) == set(small_buckets) == set(one_bucket),
            "equal": all(torch.equal(reference[k], small_buckets[k]) and torch.equal(reference[k], one_bucket[k]) for k in reference),
            "bf16": all(half[k].dtype == torch.bfloat16 and torch.equal(half[k], reference[k].to(torch.bfloat16)) for k in reference if reference[k].is_floating_point()),
            "uneven": len(uneven),
        })
    else:
        results.put(None if small_buckets is None and one_bucket is None else f"rank {rank} got weights")
    dist.destroy_process_group()


def test_bucketed_gather_equals_torch_full_state_dict(tiny_model):
    context = mp.get_context("spawn")
    results = context.Queue()
    mp.start_processes(_check_gather, args=(_port(), tiny_model, results), nprocs=WORLD, start_method="spawn")
    outcomes = [results.get(timeout=60) for _ in range(WORLD)]
    report = next(o for o in outcomes if isinstance(o, dict))
    assert outcomes.count(None) == WORLD - 1, outcomes
    assert report["keys"] and report["equal"] and report["bf16"], report
    assert report["uneven"] > 0, f"the model should include tensors that do not split evenly over {WORLD} ranks"

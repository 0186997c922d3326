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
    from anomalyr1.platform.learner.fsdp import full_state_dict, gather_full_weights, shard_blocks, stream_full_weights
    from anomalyr1.platform.models import load_policy

    model = shard_blocks(load_policy(path), torch.float32)
    reference = full_state_dict(model)
    small_buckets = gather_full_weights(model, torch.device("cpu"), bucket_bytes=10_000)
    one_bucket = gather_full_weights(model, torch.device("cpu"))
    half = gather_full_weights(model, torch.device("cpu"), dtype=torch.bfloat16)
    streamed = dict(stream_full_weights(model, torch.device("cpu"), bucket_bytes=10_000))  # every rank, as a colocated engine takes them
    everywhere = [None] * WORLD
    dist.all_gather_object(everywhere, {k: v.sum().item() for k, v in streamed.items()})
    if rank == 0:
        uneven = [k for k, v in reference.items() if v.dim() and v.shape[0] % WORLD]
        results.put({
            "keys": set(reference) == set(small_buckets) == set(one_bucket),
            "equal": all(torch.equal(reference[k], small_buckets[k]) and torch.equal(reference[k], one_bucket[k]) for k in reference),
            "bf16": all(half[k].dtype == torch.bfloat16 and torch.equal(half[k], reference[k].to(torch.bfloat16)) for k in reference if reference[k].is_floating_point()),
            "uneven": len(uneven),
            "streamed": set(streamed) == set(reference) and all(torch.equal(reference[k], streamed[k]) for k in reference)
                        and all(sums == everywhere[0] for sums in everywhere),
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
    assert report["keys"] and report["equal"] and report["bf16"] and report["streamed"], report
    assert report["uneven"] > 0, f"the model should include tensors that do not split evenly over {WORLD} ranks"


def _check_deferred_reduction(rank: int, port: int, path: str, results) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    from types import SimpleNamespace

    from anomalyr1.platform.learner.fsdp import FSDPBackend
    from anomalyr1.platform.models import load_policy

    def grads(sync_each: bool):
        torch.manual_seed(0)
        learner = SimpleNamespace(param_dtype="float32", cpu_offload=False, lr=1e-3, betas=(0.9, 0.999), weight_decay=0.0,
                                  sync_grads_each_micro_batch=sync_each)
        backend = FSDPBackend(load_policy(path), SimpleNamespace(learner=learner), torch.device("cpu"))
        embed = backend.module.get_input_embeddings()
        reduced_early = []
        for index in range(3):
            ids = torch.randint(0, 100, (2, 5), generator=torch.Generator().manual_seed(rank * 10 + index))
            loss = backend.module(input_ids=ids).logits.float().pow(2).mean()
            backend.backward(loss, last_micro_batch=index == 2)
            reduced_early.append(embed.weight.grad is not None)
        return reduced_early, {name: p.grad.to_local().clone() for name, p in backend.module.named_parameters() if p.grad is not None}

    deferred, deferred_grads = grads(False)
    each, each_grads = grads(True)
    results.put({
        "deferred": deferred,
        "each": each,
        "same": set(deferred_grads) == set(each_grads) and all(torch.allclose(deferred_grads[k], each_grads[k], atol=1e-6) for k in each_grads),
    })
    dist.destroy_process_group()


def test_gradients_are_reduced_once_per_optimizer_step(tiny_model):
    """Sharded gradients appear only after the last micro-batch (no reduce-scatter before it),
    and equal those reduced after every micro-batch."""
    context = mp.get_context("spawn")
    results = context.Queue()
    mp.start_processes(_check_deferred_reduction, args=(_port(), tiny_model, results), nprocs=2, start_method="spawn")
    for outcome in [results.get(timeout=120) for _ in range(2)]:
        assert outcome["deferred"] == [False, False, True], outcome
        assert outcome["each"] == [True, True, True], outcome
        assert outcome["same"], outcome


def _check_rank0_load(rank: int, port: int, path: str, results) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    import transformers

    from anomalyr1.platform.learner.fsdp import full_state_dict, shard_policy
    from anomalyr1.platform.models import load_policy

    expected = load_policy(path)  # what every rank should end up holding
    reads = []
    original = transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained.__func__
    transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained = classmethod(lambda cls, *a, **k: reads.append(1) or original(cls, *a, **k))
    model = load_policy(path, empty=rank != 0)
    sharded = shard_policy(model, torch.float32, False, torch.device("cpu"))
    buffers_equal = all(torch.equal(b, dict(expected.named_buffers())[n]) for n, b in sharded.named_buffers())
    tied = sharded.lm_head.weight is sharded.get_input_embeddings().weight
    state = full_state_dict(sharded)
    truth = expected.state_dict()
    results.put({
        "rank": rank,
        "reads": len(reads),
        "buffers": buffers_equal,
        "tied": tied == expected.config.tie_word_embeddings,
        "equal": None if rank else set(state) == set(truth) and all(torch.equal(state[k], truth[k]) for k in truth),
    })
    dist.destroy_process_group()


def test_only_rank0_reads_the_weights_and_every_rank_gets_its_shard(tiny_model, tmp_path):
    """The other ranks build the model on the meta device and receive their shards (and the
    non-persistent rotary buffers) from rank 0; tied embeddings stay tied, as Qwen2.5-VL-3B's
    are (every training run with two learners covers the untied tiny model)."""
    from anomalyr1.platform.models import load_policy

    path = tmp_path / "model"
    model = load_policy(tiny_model)
    model.config.tie_word_embeddings = True
    model.lm_head.weight = model.get_input_embeddings().weight
    model.save_pretrained(path)
    context = mp.get_context("spawn")
    results = context.Queue()
    mp.start_processes(_check_rank0_load, args=(_port(), str(path), results), nprocs=WORLD, start_method="spawn")
    outcomes = sorted((results.get(timeout=120) for _ in range(WORLD)), key=lambda o: o["rank"])
    assert [o["reads"] for o in outcomes] == [1] + [0] * (WORLD - 1), outcomes
    assert all(o["buffers"] and o["tied"] for o in outcomes), outcomes
    assert outcomes[0]["equal"], outcomes

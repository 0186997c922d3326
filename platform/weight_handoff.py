"""The learners' weights into a vLLM engine, by the path that fits where the engine runs.

They reach the rollout actor as named tensors (learner rank 0 -> Ray's object store). From there:

- `in_memory`: the engine runs in the actor's own process (vLLM on CPU with tensor_parallel_size
  1: its engine core runs in-process, VLLM_ENABLE_V1_MULTIPROCESSING=0, and its one worker in
  it), so `collective_rpc` calls the worker directly, arguments untouched: the tensors go one by
  one into the model's weight loader, nothing copied or serialized.
- `group`: the engine's workers are other processes (tensor parallelism, or vLLM's multiprocess
  engine core on GPU). `collective_rpc` serializes its arguments there (msgpack, which refuses
  tensors), so only names, dtypes and shapes travel with it. The actor and the workers form one
  process group on the first update, the actor as rank 0, and every update is a broadcast in
  buckets of about BUCKET_BYTES; each worker loads a bucket as it arrives, so no side holds a
  second copy of the model. The group is gloo over host tensors on every device: the weights are
  in host memory already (the object store), and NCCL cannot serve this hop, since the actor holds
  no GPU of its own (its bundle's GPUs are its workers') and NCCL refuses two ranks on one GPU.
- `file`: the fallback (`rollout.weight_handoff: file`): the actor writes a safetensors file in
  the node's temporary folder per update and every worker maps it; what the platform did before
  the other two, and what still works where a process group between the actor and its workers
  cannot form.

(The hf engine needs none of this: its update_weights loads the dict into its model.)

Every path ends in the same load on each worker, WeightReceiver._load: vLLM's layerwise reload in
checkpoint format (what `reload_weights(is_checkpoint_format=True)` runs), which reruns the
loader's post-processing layer by layer: vLLM's CPU build repacks linear weights for its kernels
after loading, and a plain `model.load_weights` into a running CPU engine fails on the repacked
parameters.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import torch
import torch.distributed as dist

from anomalyr1.platform.models import tensor_checksum

WEIGHT_RECEIVER = f"{__name__}.WeightReceiver"
"""What the engine passes as vLLM's worker_extension_cls."""

BUCKET_BYTES = 256 << 20
"""Per broadcast on the group path: few enough collectives, and a bounded buffer to pack into."""

GROUP_TIMEOUT = timedelta(minutes=10)
"""How long one broadcast may wait for the other side (a worker loads a bucket between two)."""

_ALIGN = 64
"""Byte alignment of each tensor inside a packed bucket, so every dtype can be viewed in place."""


def handoff_path(requested: str, in_process: bool) -> str:
    """The path for `rollout.weight_handoff` (auto or file) and where the engine runs."""
    if requested == "file":
        return "file"
    return "in_memory" if in_process else "group"


def engine_in_process(llm) -> bool:
    """Whether the engine's one worker lives in this process, where collective_rpc passes
    arguments as they are."""
    from vllm import envs

    return not envs.VLLM_ENABLE_V1_MULTIPROCESSING and llm.llm_engine.vllm_config.parallel_config.world_size == 1


class WeightHandoff:
    """The actor's side: sends the weights to every worker of one engine by one path."""

    def __init__(self, llm, requested: str):
        self.llm = llm
        self.path = handoff_path(requested, engine_in_process(llm))
        self.workers = llm.llm_engine.vllm_config.parallel_config.world_size
        self.bucket_bytes = BUCKET_BYTES
        self._group: dist.ProcessGroup | None = None

    def send(self, named_tensors: Iterable[tuple[str, torch.Tensor]], checksum: bool = False) -> float | None:
        """Load the weights on every worker; in memory, each tensor as it comes. With `checksum`,
        returns models.fingerprint of what the workers loaded (the same on every worker, or an error)."""
        if self.path == "in_memory":
            sums = self.llm.collective_rpc("handoff_in_memory", args=(iter(named_tensors), checksum))
        elif self.path == "group":
            sums = self._send_over_group(dict(named_tensors), checksum)
        else:
            path = write_weights_file(dict(named_tensors))
            try:
                sums = self.llm.collective_rpc("handoff_from_file", args=(str(path), checksum))
            finally:
                path.unlink()
        if not checksum:
            return None
        if len(set(sums)) != 1:
            raise RuntimeError(f"the engine's workers loaded different weights: checksums {sums}")
        return sums[0]

    def _send_over_group(self, named_tensors: Mapping[str, torch.Tensor], checksum: bool) -> list:
        group = self._group or self._open_group()
        buckets = plan_buckets(named_tensors, self.bucket_bytes)
        layout = [([[name, _dtype_name(t), list(t.shape), offset] for name, t, offset in bucket.entries], bucket.nbytes) for bucket in buckets]
        pool = ThreadPoolExecutor(max_workers=1)
        try:
            receiving = pool.submit(self.llm.collective_rpc, "handoff_from_group", args=(layout, checksum))
            for bucket in buckets:
                _finish(group.broadcast([bucket.pack()], dist.BroadcastOptions()), receiving)
            return receiving.result()
        except BaseException:
            self._group = None  # a broadcast left half done: the next update forms a new group
            raise
        finally:
            pool.shutdown(wait=False)  # never wait on a worker stuck in a broadcast that will not come

    def _open_group(self) -> dist.ProcessGroup:
        """Rank 0 here, ranks 1.. the engine's workers, all on this node (vLLM's multiprocess
        executor starts them beside the actor); the store takes a free port itself."""
        world = 1 + self.workers
        store = dist.TCPStore("127.0.0.1", 0, world, is_master=True, timeout=GROUP_TIMEOUT, wait_for_workers=False)
        pool = ThreadPoolExecutor(max_workers=1)
        try:
            joining = pool.submit(self.llm.collective_rpc, "handoff_join_group", args=(store.port, world))
            group = dist.ProcessGroupGloo(dist.PrefixStore(_GROUP_PREFIX, store), 0, world, GROUP_TIMEOUT)
            joining.result()
        finally:
            pool.shutdown(wait=False)
        self._group = group
        return group


_GROUP_PREFIX = "anomalyr1-weight-handoff"


def _finish(work, receiving: Future) -> None:
    """Wait for one broadcast, or raise at once if the workers' side failed: they would never
    join it, and the broadcast would wait for them until GROUP_TIMEOUT."""
    while not work.is_completed():
        if receiving.done():
            receiving.result()  # the workers' error, if they stopped
            break  # they took every bucket, this one included
        time.sleep(0.0005)
    work.wait()


def _dtype_name(tensor: torch.Tensor) -> str:
    return str(tensor.dtype).removeprefix("torch.")


class Bucket:
    """Tensors broadcast as one buffer of bytes; one large tensor goes as its own bytes, uncopied."""

    def __init__(self):
        self.entries: list[tuple[str, torch.Tensor, int]] = []
        self.nbytes = 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        offset = -(-self.nbytes // _ALIGN) * _ALIGN
        self.entries.append((name, tensor, offset))
        self.nbytes = offset + tensor.numel() * tensor.element_size()

    def pack(self) -> torch.Tensor:
        if len(self.entries) == 1:
            return _bytes_of(self.entries[0][1])
        buffer = torch.empty(self.nbytes, dtype=torch.uint8)
        for _name, tensor, offset in self.entries:
            data = _bytes_of(tensor)
            buffer[offset : offset + data.numel()].copy_(data)
        return buffer


def _bytes_of(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().contiguous().reshape(-1).view(torch.uint8)


def plan_buckets(named_tensors: Mapping[str, torch.Tensor], bucket_bytes: int) -> list[Bucket]:
    """In the state dict's order (layer by layer, so each worker finishes layers as buckets
    arrive); a tensor of bucket_bytes or more gets a bucket of its own."""
    buckets: list[Bucket] = []
    for name, tensor in named_tensors.items():
        if not buckets or buckets[-1].nbytes + tensor.numel() * tensor.element_size() > bucket_bytes:
            buckets.append(Bucket())
        buckets[-1].add(name, tensor)
    return buckets


def unpack(buffer: torch.Tensor, entries: list) -> Iterator[tuple[str, torch.Tensor]]:
    """The named tensors of a received bucket, as views of its buffer."""
    for name, dtype, shape, offset in entries:
        dtype = getattr(torch, dtype)
        size = torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()
        yield name, buffer[offset : offset + size].view(dtype).view(shape)


def write_weights_file(named_tensors: Mapping[str, torch.Tensor]) -> Path:
    from safetensors.torch import save_file

    seen: set[int] = set()
    tensors = {}
    for name, tensor in named_tensors.items():
        tensor = tensor.detach().contiguous()
        if tensor.data_ptr() in seen:  # tied weights: safetensors stores each storage once
            tensor = tensor.clone()
        seen.add(tensor.data_ptr())
        tensors[name] = tensor
    handle, path = tempfile.mkstemp(prefix="anomalyr1-weights-", suffix=".safetensors")
    os.close(handle)
    save_file(tensors, path)
    return Path(path)


class WeightReceiver:
    """Mixed into vLLM's worker class (worker_extension_cls); its methods are called by name
    through collective_rpc, on every worker of the engine at once."""

    def handoff_in_memory(self, named_tensors: Iterable[tuple[str, torch.Tensor]], checksum: bool) -> float | None:
        return self._load(named_tensors, checksum)

    def handoff_from_file(self, path: str, checksum: bool) -> float | None:
        from safetensors import safe_open

        with safe_open(path, framework="pt", device="cpu") as weights:
            return self._load(((name, weights.get_tensor(name)) for name in weights.keys()), checksum)

    def handoff_join_group(self, port: int, world_size: int) -> None:
        store = dist.TCPStore("127.0.0.1", port, world_size, is_master=False, timeout=GROUP_TIMEOUT)
        self._handoff_group = dist.ProcessGroupGloo(dist.PrefixStore(_GROUP_PREFIX, store), 1 + self.rank, world_size, GROUP_TIMEOUT)

    def handoff_from_group(self, layout: list, checksum: bool) -> float | None:
        def arriving() -> Iterator[tuple[str, torch.Tensor]]:
            for entries, nbytes in layout:
                buffer = torch.empty(nbytes, dtype=torch.uint8)  # a fresh one: the loader may hold views of the last
                self._handoff_group.broadcast([buffer], dist.BroadcastOptions()).wait()
                yield from unpack(buffer, entries)

        weights = arriving()
        try:
            return self._load(weights, checksum)
        finally:
            for _left in weights:  # the actor sends every bucket: take them all, whatever the loader did
                pass

    def _load(self, named_tensors: Iterable[tuple[str, torch.Tensor]], checksum: bool) -> float | None:
        """Load every tensor, check that every parameter of the model got one, and with
        `checksum` return models.fingerprint of what was loaded.

        The checksum is over the checkpoint-format tensors as the model's loader takes them, not
        over the model's parameters, which cannot be compared with the learners' state dict:
        vLLM's CPU build empties its linear weights after repacking them for its kernels (the
        values live in oneDNN's packed buffers), tensor-parallel ranks hold shards of some
        tensors and whole copies of others (layer norms, and K/V heads replicated when the
        ranks outnumber them), q/k/v and gate/up are fused and the vocabulary padded. A tensor
        counts only once the loader has taken it, and a parameter no tensor reached fails the
        load, so weights that never reached the model never pass for loaded.
        """
        from vllm.config import set_current_vllm_config
        from vllm.model_executor.model_loader.reload import finalize_layerwise_reload, initialize_layerwise_reload

        total = 0.0

        def taken() -> Iterator[tuple[str, torch.Tensor]]:
            nonlocal total
            for name, tensor in named_tensors:
                if checksum:
                    total += tensor_checksum(tensor)
                yield name, tensor

        model = self.model_runner.get_model()
        with set_current_vllm_config(self.vllm_config), _quiet_layerwise_reload():
            initialize_layerwise_reload(model)
            loaded = model.load_weights(taken())
            finalize_layerwise_reload(model, self.model_config)
        missing = {name for name, _ in model.named_parameters()} - set(loaded)
        if missing:
            raise RuntimeError(f"the weight update reached no tensor of {len(missing)} engine parameters, e.g. {sorted(missing)[:3]}")
        return total if checksum else None


@contextmanager
def _quiet_layerwise_reload():
    """vLLM's layerwise reload warns "Failed to load weights" on every update for layers that
    hold only buffers it computes itself (rotary caches, its fused CPU norm); _load checks every
    parameter instead, so the warning says nothing there and would repeat every step."""
    logger = logging.getLogger("vllm.model_executor.model_loader.reload.layerwise")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)

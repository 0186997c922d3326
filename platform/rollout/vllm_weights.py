"""The learners' weights into every vLLM worker, whatever the placement.

The weights reach the rollout actor as named tensors. vLLM's workers may be other processes
(tensor parallelism, or vLLM's default multiprocess engine on GPU), and `collective_rpc`
serializes its arguments with msgpack, which refuses tensors. So the actor writes the weights
once to a safetensors file in the node's temporary folder and sends only its path; every worker
maps the file and loads from it. The engine in the actor's own process (vLLM on CPU) takes the
same path, so there is one way in for every placement.

Workers reload through vLLM's `reload_weights` in checkpoint format, which reruns the loader's
post-processing: vLLM's CPU build repacks linear weights after loading, and a plain
`model.load_weights` into a running CPU engine fails on the repacked parameters.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Mapping

import torch

WEIGHT_RECEIVER = f"{__name__}.WeightReceiver"
"""What the engine passes as vLLM's worker_extension_cls."""


class WeightReceiver:
    """Mixed into vLLM's worker class; called by name through collective_rpc."""

    def load_weights_file(self, path: str) -> None:
        from safetensors import safe_open

        with safe_open(path, framework="pt", device="cpu") as weights:
            self.reload_weights(weights_iterator=((name, weights.get_tensor(name)) for name in weights.keys()), is_checkpoint_format=True)


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

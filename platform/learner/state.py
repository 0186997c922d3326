"""A learner rank's training state on disk: optimizer shard and RNG, as safetensors.

Each rank writes only its own shard (no gather), so saving costs no collective and scales with
the cluster; the price is that a resume needs the same number of learners, which `load` checks.
Nothing is unpickled on load: tensors come from safetensors, the rest from JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch.distributed.tensor import DTensor


def _shard_file(directory: Path, rank: int) -> Path:
    return directory / f"rank{rank}.safetensors"


def save_rank_state(directory: Path, rank: int, world_size: int, optimizer: torch.optim.Optimizer, extra: dict) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {"rng/torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng/cuda"] = torch.cuda.get_rng_state()
    scalars: dict[str, dict] = {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                local = value.to_local() if isinstance(value, DTensor) else value
                tensors[f"state/{index}/{key}"] = local.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    save_file(tensors, str(_shard_file(directory, rank)))
    meta = {"world_size": world_size, "param_groups": state["param_groups"], "scalars": scalars, **extra}
    (directory / f"rank{rank}.json").write_text(json.dumps(meta))


def load_rank_state(directory: Path, rank: int, world_size: int, optimizer: torch.optim.Optimizer) -> dict:
    """Restore this rank's optimizer shard and RNG; returns the extra metadata saved with them."""
    meta = json.loads((directory / f"rank{rank}.json").read_text())
    if meta["world_size"] != world_size:
        raise ValueError(
            f"{directory}: saved by {meta['world_size']} learners, resuming with {world_size}; "
            "set learner.workers to the saved value"
        )
    tensors = load_file(str(_shard_file(directory, rank)))
    params = [p for group in optimizer.param_groups for p in group["params"]]
    state: dict[int, dict] = {}
    for name, local in tensors.items():
        if not name.startswith("state/"):
            continue
        _, index, key = name.split("/", 2)
        param = params[int(index)]
        value = local.to(param.device)
        if isinstance(param, DTensor) and local.dim() > 0:
            value = DTensor.from_local(value, param.device_mesh, param.placements, shape=param.shape, stride=param.stride())
        state.setdefault(int(index), {})[key] = value
    for index, values in meta["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    torch.set_rng_state(tensors["rng/torch"])
    if "rng/cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng/cuda"])
    return {k: v for k, v in meta.items() if k not in ("world_size", "param_groups", "scalars")}

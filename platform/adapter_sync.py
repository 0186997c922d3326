"""The adapter-only weight sync (`learner.lora.sync: adapter`): what travels from the learners to
a vLLM engine, and what vLLM 0.31 can serve of it.

Each sync carries the adapters alone (a few MB where the merged model is GBs), gathered at learner
rank 0 and passed through Ray's object store like full weights, so the rollout worker may be on
another node. The worker writes them as a PEFT folder in its node's temporary directory, the one
form of adapter that vLLM loads whatever its engine layout (in-process, or workers in other
processes); vLLM serves it as a LoRA request on the base weights it was built with. Those are the
learners' base by construction: with adapters the learners load their base from model.path on
every start, resume included (the checkpoint holds the adapters), and the engine is built from the
same path. Loading base weights into a running LoRA engine is not even possible by vLLM's reload:
its LoRA layers rename the wrapped weights (`qkv_proj.base_layer.weight`), which the checkpoint
loader never reaches.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the recipe reads this module's limits without loading torch
    import torch

SERVED_MODULES = frozenset({"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"})
"""learner.lora.target_modules vLLM 0.31 applies LoRA to in Qwen2.5-VL's language model: it
refuses an adapter on lm_head ("expected target modules in ..."), and applies none to the vision
tower unless its experimental enable_tower_connector_lora is on."""

VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
"""The values vLLM 0.31 accepts for max_lora_rank."""


def engine_max_lora_rank(rank: int) -> int:
    """The smallest max_lora_rank vLLM accepts that holds adapters of `rank` (it sizes its LoRA
    buffers by it, so no larger)."""
    return next(value for value in VLLM_LORA_RANKS if value >= rank)


@dataclass
class AdapterUpdate:
    """One sync of the adapter-only path: the adapters as PEFT saves them."""

    tensors: dict[str, torch.Tensor]
    """PEFT's names, adapter name dropped (`...q_proj.lora_A.weight`), in the rollout dtype."""
    config: dict
    """PEFT's adapter_config.json (rank, alpha, target modules)."""


def write_peft_folder(directory: Path, tensors: dict[str, torch.Tensor], config: dict) -> None:
    """`directory` as PeftModel.save_pretrained writes it: adapter_config.json and adapter_model.safetensors."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    save_file({name: tensor.contiguous() for name, tensor in tensors.items()}, str(directory / "adapter_model.safetensors"))

"""LoRA through PEFT: adapters trained instead of the whole policy (`learner.lora.rank` > 0).

Full fine-tuning of a 3B policy with fp32 masters and AdamW needs ~16 bytes a parameter before
activations; with adapters only their parameters get gradients and optimizer state, and the
frozen base doubles as the reference policy (the same weights with the adapters switched off),
so no second copy of the model is held.

Two ways to the engines (`learner.lora.sync`): `merged` hands them W + (alpha / r) B A computed
on a copy of the gathered weights (`merged_weights`), so the learners' base stays exact and both
engines load the result as they load any full model; `adapter` hands vLLM the adapters alone
(`adapter_weights`, see platform/adapter_sync.py). Either way rollout/log_prob_diff_* compares
the engine's log-probs with the learners' every step: an adapter that never reached the engine
shows there from the second step on (the first one's adapters are zero, B = 0).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from anomalyr1.platform.adapter_sync import write_peft_folder
from anomalyr1.platform.recipe import LoraConfig

ADAPTER_DIR = "adapter"
"""Beside a saved merged model: the adapters in PEFT's own format (PeftModel.from_pretrained)."""

_PEFT_PREFIX = "base_model.model."
_ADAPTER = "default"


def target_pattern(config: LoraConfig) -> str:
    """PEFT's target_modules as one regex (PEFT full-matches a string against module names):
    the named linear layers of the language model, and of the vision tower with `vision`;
    `lm_head` names the output head."""
    towers = "language_model|visual" if config.vision else "language_model"
    names = "|".join(re.escape(name) for name in config.target_modules if name != "lm_head")
    pattern = rf"model\.({towers})\..*\.({names})" if names else ""
    if "lm_head" in config.target_modules:
        pattern = f"{pattern}|lm_head" if pattern else "lm_head"
    return pattern


def add_adapters(model: nn.Module, config: LoraConfig, saved: Path | None = None) -> nn.Module:
    """The model with adapters (and the base frozen); `saved` (a checkpoint's adapter folder)
    restores trained ones. Works on a model on the meta device too (a learner rank that receives
    its shards from rank 0)."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model, set_peft_model_state_dict
    from safetensors.torch import load_file

    peft_config = PeftLoraConfig(
        r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout, target_modules=target_pattern(config), bias="none"
    )
    adapted = get_peft_model(model, peft_config)
    if saved is not None:
        result = set_peft_model_state_dict(adapted, load_file(str(saved / "adapter_model.safetensors")))
        if getattr(result, "unexpected_keys", None):
            raise ValueError(f"{saved}: adapter tensors this model has no place for: {result.unexpected_keys[:3]}")
    return adapted


def trainable_share(model: nn.Module) -> float:
    """Trainable parameters over all parameters, by their full sizes: an FSDP2 DTensor's numel
    is its global one, a ZeRO-3 partitioned parameter's is 0 and its ds_numel the full one."""
    sizes = [(getattr(p, "ds_numel", p.numel()), p.requires_grad) for p in model.parameters()]
    return sum(n for n, trains in sizes if trains) / sum(n for n, _ in sizes)


def is_adapter(name: str) -> bool:
    """Whether a PEFT model's state-dict entry is an adapter tensor (not the frozen base)."""
    return ".lora_A." in name or ".lora_B." in name


def merged_weights(state: dict[str, torch.Tensor], config: LoraConfig) -> dict[str, torch.Tensor]:
    """The base model's state dict (its own names) with every adapter merged in, from a PEFT
    model's full state dict; computed in fp32 on copies, the input is left as it is."""
    scaling = config.alpha / config.rank
    merged: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if is_adapter(name):
            continue
        merged[name.removeprefix(_PEFT_PREFIX).replace(".base_layer.", ".")] = tensor
    for name, down in state.items():
        if not name.endswith(f".lora_A.{_ADAPTER}.weight"):
            continue
        layer = name.removeprefix(_PEFT_PREFIX).removesuffix(f".lora_A.{_ADAPTER}.weight")
        up = state[name.replace(".lora_A.", ".lora_B.")]
        base = merged[f"{layer}.weight"]
        merged[f"{layer}.weight"] = (base.float() + scaling * (up.float() @ down.float())).to(base.dtype)
    return merged


def adapter_weights(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The adapters alone, named as PEFT saves them (adapter name dropped)."""
    return {name.replace(f".{_ADAPTER}.", "."): tensor for name, tensor in state.items() if is_adapter(name)}


def adapter_config(model: nn.Module) -> dict:
    """The PEFT model's adapter_config.json, as a plain dict (PEFT writes its sets as lists)."""
    return {key: sorted(value) if isinstance(value, set) else value for key, value in model.peft_config[_ADAPTER].to_dict().items()}


def save_adapters(model: nn.Module, state: dict[str, torch.Tensor], directory: Path) -> None:
    """`directory` as PeftModel.save_pretrained writes it, from the gathered full state dict."""
    write_peft_folder(directory, adapter_weights(state), adapter_config(model))

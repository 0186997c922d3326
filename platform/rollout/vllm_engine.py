"""Rollout with vLLM: the GPU engine, one `vllm.LLM` per rollout worker.

Prompts go to vLLM as chat text with one placeholder per image plus the PIL images, and vLLM
expands the placeholders itself; the token ids and pixels the learners need come from the same
processor on the worker (encode_prompt), so both sides see one input. Vision special tokens get
a -100 logit bias (vLLM V1 has no hard token suppression), which is exp(-100) of mass: the
learner's -inf mask differs from it by nothing measurable.

Weights arrive from the learners through Ray's object store as named tensors (any placement) and
are loaded in buckets on every vLLM worker through `collective_rpc`. With `rollout.sleep_when_idle`
the engine frees its GPU memory between rollouts, for recipes that put rollout and learner
actors on the same GPUs (fractional num_gpus).
"""

from __future__ import annotations

from typing import Mapping

import torch

from anomalyr1.platform.batch import RolloutGroup
from anomalyr1.platform.encoding import EncodedPrompt
from anomalyr1.platform.models import suppressed_token_ids
from anomalyr1.platform.recipe import Recipe
from anomalyr1.platform.rollout.hf_engine import SamplingSettings

BUCKET_BYTES = 512 << 20
"""Weights are handed to vLLM in buckets of this size, bounding the extra GPU memory of a sync."""


def _load_weights(worker, weights: list[tuple[str, torch.Tensor]]) -> None:
    """Runs inside each vLLM worker process (collective_rpc passes the worker first)."""
    worker.model_runner.model.load_weights(weights=weights)


class VLLMEngine:
    def __init__(self, model_path: str, tokenizer, recipe: Recipe):
        from vllm import LLM

        rollout, model = recipe.rollout, recipe.model
        self.tokenizer = tokenizer
        self.sleep_when_idle = rollout.sleep_when_idle
        self.llm = LLM(
            model=model_path,
            tensor_parallel_size=rollout.tensor_parallel_size,
            gpu_memory_utilization=rollout.gpu_memory_utilization,
            dtype=model.dtype,
            seed=recipe.trainer.seed,
            limit_mm_per_prompt={"image": recipe.prompt.k_shot + 1},
            mm_processor_kwargs={k: v for k, v in (("min_pixels", model.min_pixels), ("max_pixels", model.max_pixels)) if v},
            enable_sleep_mode=rollout.sleep_when_idle,
            enable_prefix_caching=True,  # the G samples of a prompt share its (long, image-heavy) prefix
        )
        self.bias = {token: -100.0 for token in suppressed_token_ids(tokenizer)}
        if self.sleep_when_idle:
            self.llm.sleep(level=1)

    def generate(self, prompts: list[EncodedPrompt], sampling: SamplingSettings) -> list[RolloutGroup]:
        from vllm import SamplingParams

        if not prompts:
            return []
        n = 1 if sampling.greedy else sampling.n
        params = SamplingParams(
            n=n,
            temperature=0.0 if sampling.greedy else sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k if sampling.top_k > 0 else -1,
            max_tokens=sampling.max_new_tokens,
            logprobs=0,  # the sampled token's log-prob
            logit_bias=self.bias,
            seed=sampling.seed,
        )
        requests = [{"prompt": p.chat_text, "multi_modal_data": {"image": p.images}} for p in prompts]
        if self.sleep_when_idle:
            self.llm.wake_up()
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        if self.sleep_when_idle:
            self.llm.sleep(level=1)
        groups = []
        for prompt, output in zip(prompts, outputs):
            completions = output.outputs
            groups.append(
                prompt.group(
                    responses=[list(c.token_ids) for c in completions],
                    texts=[c.text for c in completions],
                    log_probs=[[step[token].logprob for token, step in zip(c.token_ids, c.logprobs)] for c in completions],
                )
            )
        return groups

    def update_weights(self, named_tensors: Mapping[str, torch.Tensor]) -> None:
        if self.sleep_when_idle:
            self.llm.wake_up(tags=["weights"])
        bucket: list[tuple[str, torch.Tensor]] = []
        size = 0
        for name, tensor in named_tensors.items():
            bucket.append((name, tensor))
            size += tensor.numel() * tensor.element_size()
            if size >= BUCKET_BYTES:
                self.llm.collective_rpc(_load_weights, args=(bucket,))
                bucket, size = [], 0
        if bucket:
            self.llm.collective_rpc(_load_weights, args=(bucket,))
        self.llm.reset_prefix_cache()  # cached prefixes were computed by the old weights
        if self.sleep_when_idle:
            self.llm.sleep(level=1)

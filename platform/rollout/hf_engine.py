"""Rollout with transformers' generate: the engine for CPU and for small GPU runs without vLLM."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch

from anomalyr1.platform.batch import RolloutGroup
from anomalyr1.platform.encoding import EncodedPrompt
from anomalyr1.platform.models import load_policy, suppressed_token_ids


@dataclass(frozen=True)
class SamplingSettings:
    n: int = 8
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 256
    greedy: bool = False
    seed: int | None = None


class HFEngine:
    def __init__(self, model_path: str, tokenizer, dtype: str = "float32", attn_implementation: str = "sdpa", device: str = "cpu"):
        self.device = device
        self.model = load_policy(model_path, dtype, attn_implementation, device).eval()
        self.tokenizer = tokenizer
        self.pad_id = tokenizer.pad_token_id
        # Qwen's instruct models stop at either token; padding after a stop is <|endoftext|> too.
        self.eos_ids = sorted({tokenizer.eos_token_id, tokenizer.pad_token_id})
        self.suppressed = suppressed_token_ids(tokenizer)
        self.image_token_id = self.model.config.image_token_id

    @torch.inference_mode()
    def generate(self, prompts: list[EncodedPrompt], sampling: SamplingSettings) -> list[RolloutGroup]:
        if not prompts:
            return []
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        width = max(len(p.prompt_ids) for p in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros_like(input_ids)
        for row, prompt in enumerate(prompts):
            input_ids[row, width - len(prompt.prompt_ids) :] = torch.tensor(prompt.prompt_ids)
            attention[row, width - len(prompt.prompt_ids) :] = 1
        n = 1 if sampling.greedy else sampling.n
        kwargs = dict(
            max_new_tokens=sampling.max_new_tokens,
            num_return_sequences=n,
            suppress_tokens=self.suppressed,
            pad_token_id=self.pad_id,
            eos_token_id=self.eos_ids,
        )
        if sampling.greedy:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k)
        sequences = self.model.generate(
            input_ids=input_ids.to(self.device),
            attention_mask=attention.to(self.device),
            mm_token_type_ids=(input_ids == self.image_token_id).int().to(self.device),
            pixel_values=torch.cat([p.pixel_values for p in prompts]).to(self.device, self.model.dtype),
            image_grid_thw=torch.cat([p.image_grid_thw for p in prompts]).to(self.device),
            **kwargs,
        ).cpu()
        generated = sequences[:, width:].tolist()
        groups = []
        for row, prompt in enumerate(prompts):
            responses = [self._cut(tokens) for tokens in generated[row * n : (row + 1) * n]]
            groups.append(prompt.group(responses, self.tokenizer.batch_decode(responses, skip_special_tokens=True)))
        return groups

    def _cut(self, tokens: list[int]) -> list[int]:
        """Up to and including the first stop token (the sampled one; the rest is padding).

        The stop token stays in the response because the policy has to learn when to stop.
        """
        for i, token in enumerate(tokens):
            if token in self.eos_ids:
                return tokens[: i + 1]
        return tokens

    def update_weights(self, named_tensors: Mapping[str, torch.Tensor]) -> None:
        state = {name: tensor.to(self.device, self.model.dtype) if tensor.is_floating_point() else tensor for name, tensor in named_tensors.items()}
        _missing, unexpected = self.model.load_state_dict(state, strict=False)  # partial (bucketed) updates are fine
        if unexpected:
            raise ValueError(f"weight update has unknown tensors: {unexpected[:5]}")

    def named_weights(self):
        return self.model.state_dict().items()


"""Rollout with transformers' generate: the engine for CPU and for small GPU runs without vLLM."""

from __future__ import annotations

from typing import Iterable

import torch
from transformers import LogitsProcessor, LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from anomalyr1.platform.batch import RolloutGroup
from anomalyr1.platform.encoding import EncodedPrompt
from anomalyr1.platform.models import fingerprint, load_policy, suppressed_token_ids
from anomalyr1.platform.rollout.sampling import SamplingSettings


class SampledLogProbs(LogitsProcessor):
    """Records the log-prob of every sampled token under the distribution it was sampled from.

    Placed last, it sees the scores generate samples from. It cannot see which token is drawn,
    but the next call's input_ids end with it, so each call resolves the previous step and
    `finish` the last one: one (rows, vocab) tensor is kept instead of generate's whole score
    history (output_scores), which at 3B scale is gigabytes per rollout.
    """

    def __init__(self):
        self.steps: list[torch.Tensor] = []
        self._pending: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self._resolve(input_ids[:, -1])
        self._pending = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def _resolve(self, tokens: torch.Tensor) -> None:
        if self._pending is not None:
            self.steps.append(self._pending.gather(-1, tokens.unsqueeze(-1)).squeeze(-1).cpu())
            self._pending = None

    def finish(self, sequences: torch.Tensor) -> torch.Tensor:
        """(rows, generated tokens) log-probs, given generate's output sequences."""
        self._resolve(sequences[:, -1])
        return torch.stack(self.steps, dim=1) if self.steps else torch.zeros((sequences.shape[0], 0))


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
        recorder = SampledLogProbs()
        # The warpers are passed here rather than as generate's temperature/top_k/top_p, which
        # would run them after any processor of ours: the recorder must come last.
        warpers = []
        if not sampling.greedy:
            warpers.append(TemperatureLogitsWarper(sampling.temperature))
            if sampling.top_k > 0:
                warpers.append(TopKLogitsWarper(sampling.top_k))
            if sampling.top_p < 1.0:
                warpers.append(TopPLogitsWarper(sampling.top_p))
        input_ids, attention = input_ids.to(self.device), attention.to(self.device)
        cache = self._prefill(input_ids[:, :-1], attention[:, :-1], prompts, n)
        sequences = self.model.generate(
            input_ids=input_ids.repeat_interleave(n, dim=0),
            attention_mask=attention.repeat_interleave(n, dim=0),
            past_key_values=cache,
            max_new_tokens=sampling.max_new_tokens,
            suppress_tokens=self.suppressed,
            pad_token_id=self.pad_id,
            eos_token_id=self.eos_ids,
            do_sample=not sampling.greedy,
            temperature=1.0,  # neutral values: no built-in warper, and none of the model's defaults
            top_p=1.0,
            top_k=0,
            logits_processor=LogitsProcessorList([*warpers, recorder]),
        ).cpu()
        log_probs = recorder.finish(sequences).tolist()
        generated = sequences[:, width:].tolist()
        groups = []
        for row, prompt in enumerate(prompts):
            rows = range(row * n, (row + 1) * n)
            responses = [self._cut(generated[r]) for r in rows]
            groups.append(
                prompt.group(
                    responses,
                    self.tokenizer.batch_decode(responses, skip_special_tokens=True),
                    [log_probs[r][: len(response)] for r, response in zip(rows, responses)],
                )
            )
        return groups

    def _prefill(self, input_ids: torch.Tensor, attention: torch.Tensor, prompts: list[EncodedPrompt], n: int):
        """Each prompt but its last token through the model once, images included, its keys and
        values then copied for its n completions: generate's num_return_sequences would run the
        prompt (~200 tokens on the tiny recipe, ~1,000 at 3B) n times. generate continues from
        this cache with the last prompt token, which is text (the chat template's assistant
        header), and positions from the multimodal-rope offsets this pass leaves on the model,
        copied per completion as well (transformers reads them there when continuing a cache)."""
        prefill = self.model(
            input_ids=input_ids,
            attention_mask=attention,
            mm_token_type_ids=(input_ids == self.image_token_id).int(),
            pixel_values=torch.cat([p.pixel_values for p in prompts]).to(self.device, self.model.dtype),
            image_grid_thw=torch.cat([p.image_grid_thw for p in prompts]).to(self.device),
            use_cache=True,
            logits_to_keep=1,
        )
        cache = prefill.past_key_values
        cache.batch_repeat_interleave(n)
        self.model.model.rope_deltas = self.model.model.rope_deltas.repeat_interleave(n, dim=0)
        return cache

    def _cut(self, tokens: list[int]) -> list[int]:
        """Up to and including the first stop token (the sampled one; the rest is padding).

        The stop token stays in the response because the policy has to learn when to stop.
        """
        for i, token in enumerate(tokens):
            if token in self.eos_ids:
                return tokens[: i + 1]
        return tokens

    def sleep(self) -> None:
        """Colocated, before the learners train: nothing to free (its copy of the weights is all it holds between rollouts)."""

    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]], checksum: bool = False) -> float | None:
        """Copy each tensor into the model as it comes (a bucketed or streamed update needs no
        whole dict). With `checksum`, returns models.fingerprint of the model's weights after."""
        targets = self.model.state_dict()  # views of the parameters and buffers
        with torch.no_grad():
            for name, tensor in named_tensors:
                target = targets.get(name)
                if target is None:
                    raise ValueError(f"weight update has a tensor the engine's model does not: {name}")
                target.copy_(tensor)
        return fingerprint(self.model.state_dict().items()) if checksum else None

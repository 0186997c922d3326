"""What crosses between roles in one step, and how sequences become model inputs.

A rollout returns one `RolloutGroup` per prompt: the prompt's tokens and pixels once, and its G
responses. Learners rebuild forward-pass inputs from groups with `collate`, left-padding prompts
and right-padding responses so every response starts at the same column: the response log-probs
are then one slice of the logits, for any batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class RolloutGroup:
    sample: dict
    """The Sample (as a dict) the prompt was built from, with options as shown to the model."""
    prompt_ids: list[int]
    pixel_values: torch.Tensor
    """(patches, features) for all images of the prompt, in order."""
    image_grid_thw: torch.Tensor
    """(images, 3)."""
    responses: list[list[int]]
    """G token-id lists, each ending at (and including) EOS when the model stopped by itself."""
    texts: list[str]
    log_probs: list[list[float]] | None = None
    """Per-token log-probs of each response under the distribution the engine sampled from."""
    model_input_size: tuple[int, int] | None = None
    """(width, height) the processor resized the query image to: rewards map boxes back with it."""
    policy_version: int = 0
    """The training step whose update produced the weights that generated it (set by the driver)."""


@dataclass
class TrainSequence:
    """One completion with what the loss needs of it; the unit learners shard and micro-batch."""

    group: RolloutGroup
    response_index: int
    advantage: float
    old_log_prob: torch.Tensor | None = None
    ref_log_prob: torch.Tensor | None = None
    staleness: int = 0
    """Updates the learners made since the weights that generated it: above 0 the engine's
    log-probs, the behaviour policy's, are the importance ratio's denominator."""
    blank: bool = False
    """A padding copy (see LearnerWorker._schedule): same shapes as real work, zero weight."""

    @property
    def response(self) -> list[int]:
        return self.group.responses[self.response_index]

    @property
    def rollout_log_prob(self) -> list[float] | None:
        """The engine's log-probs of the response tokens, as sampled."""
        return None if self.group.log_probs is None else self.group.log_probs[self.response_index]

    def behaviour_log_prob(self) -> torch.Tensor:
        """The engine's log-probs as a tensor: the old policy of a stale sequence."""
        if self.rollout_log_prob is None:
            raise RuntimeError("an off-policy sequence needs the engine's log-probs, and its engine returned none")
        return torch.tensor(self.rollout_log_prob, dtype=torch.float32)


def split_evenly(items: list, parts: int) -> list[list]:
    """`items` cut into `parts` contiguous runs whose sizes differ by at most one.

    Contiguous, not strided: sequences arrive grouped by prompt, so a run keeps a prompt's G
    completions together and a micro-batch carries one image G times, which the vision tower
    encodes once (models.encode_each_image_once) and which crosses to one learner, not all.
    """
    size, extra = divmod(len(items), parts)
    bounds = [index * size + min(index, extra) for index in range(parts + 1)]
    return [items[bounds[i] : bounds[i + 1]] for i in range(parts)]


@dataclass
class ModelBatch:
    inputs: dict[str, torch.Tensor]
    """Keyword arguments of the model's forward pass."""
    responses: torch.Tensor
    """(B, R) response token ids, padded with 0."""
    response_mask: torch.Tensor
    """(B, R) 1 where a response token is real."""
    prompt_width: int
    """Column where responses start: logits[:, prompt_width - 1 + t] predict response token t."""


def collate(items: list[tuple[RolloutGroup, list[int]]], pad_id: int, image_token_id: int) -> ModelBatch:
    """Forward-pass inputs for (group, response) pairs; pixels are repeated per sequence.

    `mm_token_type_ids` marks the image placeholders: without it Qwen2.5-VL silently falls back
    to 1-D positions instead of its multimodal rope, and log-probs no longer match generation.
    """
    prompt_width = max(len(group.prompt_ids) for group, _ in items)
    response_width = max(1, max(len(response) for _, response in items))
    batch = len(items)
    input_ids = torch.full((batch, prompt_width + response_width), pad_id, dtype=torch.long)
    attention = torch.zeros_like(input_ids)
    responses = torch.zeros((batch, response_width), dtype=torch.long)
    response_mask = torch.zeros((batch, response_width), dtype=torch.float32)
    for row, (group, response) in enumerate(items):
        start = prompt_width - len(group.prompt_ids)
        input_ids[row, start:prompt_width] = torch.tensor(group.prompt_ids)
        attention[row, start:prompt_width] = 1
        if response:
            end = prompt_width + len(response)
            input_ids[row, prompt_width:end] = torch.tensor(response)
            attention[row, prompt_width:end] = 1
            responses[row, : len(response)] = torch.tensor(response)
            response_mask[row, : len(response)] = 1
    inputs = {
        "input_ids": input_ids,
        "attention_mask": attention,
        "mm_token_type_ids": (input_ids == image_token_id).int(),
        "pixel_values": torch.cat([group.pixel_values for group, _ in items]),
        "image_grid_thw": torch.cat([group.image_grid_thw for group, _ in items]),
    }
    return ModelBatch(inputs=inputs, responses=responses, response_mask=response_mask, prompt_width=prompt_width)


def response_scores(logits: torch.Tensor, batch: ModelBatch, suppressed_ids: list[int], temperature: float = 1.0) -> torch.Tensor:
    """(B, R, vocab) scores the rollout sampled each response token from, before top-k/top-p.

    `logits` may cover the whole sequence or only its last R + 1 positions (the model's
    `logits_to_keep`, which spares the prompt's ~1,000 positions x 152k vocabulary at 3B): the
    responses end every row, so the R positions that predict them are the R before the last.
    The rollout divides logits by the temperature and never samples vision special tokens, so
    the same is done here: otherwise the learner's policy would not be the sampling policy and
    the importance ratio would be off by the suppressed mass.
    """
    width = batch.responses.shape[1]
    scores = logits[:, -(width + 1) : -1].float()
    if temperature != 1.0:
        scores = scores / temperature
    if suppressed_ids:
        scores = scores.index_fill(-1, torch.tensor(suppressed_ids, device=scores.device), float("-inf"))
    return scores


def chosen_log_probs(scores: torch.Tensor, batch: ModelBatch) -> torch.Tensor:
    """Log-probs of the response tokens under `scores`, 0 on padding."""
    responses = batch.responses.to(scores.device)
    chosen = scores.gather(-1, responses.unsqueeze(-1)).squeeze(-1)
    return (chosen - torch.logsumexp(scores, dim=-1)) * batch.response_mask.to(scores.device)


def response_log_probs(logits: torch.Tensor, batch: ModelBatch, suppressed_ids: list[int], temperature: float = 1.0) -> torch.Tensor:
    """Log-probs of the response tokens under the distribution the rollout sampled from (before top-k/top-p)."""
    return chosen_log_probs(response_scores(logits, batch, suppressed_ids, temperature), batch)


@torch.no_grad()
def truncated_log_probs(scores: torch.Tensor, batch: ModelBatch, top_k: int, top_p: float) -> torch.Tensor:
    """The response tokens' log-probs after top-k then top-p, as both engines sample and report
    them (transformers' warpers and vLLM's sampler cut the same way): what an engine's log-probs
    are compared with. The sampled token always stays in: where the learner's arithmetic ranks
    it just outside the cut, the gap shows a small difference instead of an infinite one."""
    responses = batch.responses.to(scores.device).unsqueeze(-1)
    sampled = scores.gather(-1, responses)
    if top_k > 0 and top_k < scores.shape[-1]:
        kth = scores.topk(top_k, dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if top_p < 1.0:
        ascending, order = scores.sort(dim=-1)
        cut = ascending.softmax(dim=-1).cumsum(dim=-1) <= 1.0 - top_p
        cut[..., -1] = False
        scores = scores.masked_fill(cut.scatter(-1, order, cut), float("-inf"))
    return chosen_log_probs(scores.scatter(-1, responses, sampled), batch)

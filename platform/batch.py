"""What crosses between roles in one step, and how sequences become model inputs.

A rollout returns one `RolloutGroup` per prompt: the prompt's tokens and pixels once, and its G
responses. Learners rebuild forward-pass inputs from groups with `collate`, left-padding prompts
and right-padding responses so every response starts at the same column: the response log-probs
are then one slice of the logits, for any batch. With shared prompts (`response_logits`) each
distinct prompt goes through the model once and its G responses attend to its keys and values:
on the tiny recipe a prompt is ~200 tokens and a response ~30, so a micro-batch of 8 responses
to one prompt costs ~1/5 of the tokens it would whole.
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
    prompt_rows: torch.Tensor | None = None
    """Shared prompts (collate's share_prompts): `inputs` holds each distinct prompt once, and
    sequence b's prompt is its row prompt_rows[b]; None: `inputs` holds every sequence whole."""


def collate(items: list[tuple[RolloutGroup, list[int]]], pad_id: int, image_token_id: int, share_prompts: bool = False) -> ModelBatch:
    """Forward-pass inputs for (group, response) pairs: every sequence whole (pixels repeated per
    sequence), or with `share_prompts` each distinct group's prompt once, for `response_logits`.

    `mm_token_type_ids` marks the image placeholders: without it Qwen2.5-VL silently falls back
    to 1-D positions instead of its multimodal rope, and log-probs no longer match generation.
    """
    prompt_width = max(len(group.prompt_ids) for group, _ in items)
    response_width = max(1, max(len(response) for _, response in items))
    responses = torch.zeros((len(items), response_width), dtype=torch.long)
    response_mask = torch.zeros((len(items), response_width), dtype=torch.float32)
    for row, (_, response) in enumerate(items):
        if response:
            responses[row, : len(response)] = torch.tensor(response)
            response_mask[row, : len(response)] = 1
    prompt_rows = None
    groups = [group for group, _ in items]
    width = prompt_width + response_width
    if share_prompts:
        row_of: dict[int, int] = {}
        distinct: list[RolloutGroup] = []
        for group in groups:
            if id(group) not in row_of:
                row_of[id(group)] = len(distinct)
                distinct.append(group)
        prompt_rows = torch.tensor([row_of[id(group)] for group in groups])
        groups, width = distinct, prompt_width
    input_ids = torch.full((len(groups), width), pad_id, dtype=torch.long)
    attention = torch.zeros_like(input_ids)
    for row, group in enumerate(groups):
        start = prompt_width - len(group.prompt_ids)
        input_ids[row, start:prompt_width] = torch.tensor(group.prompt_ids)
        attention[row, start:prompt_width] = 1
    if not share_prompts:
        input_ids[:, prompt_width:] = torch.where(response_mask.bool(), responses, pad_id)
        attention[:, prompt_width:] = response_mask.long()
    inputs = {
        "input_ids": input_ids,
        "attention_mask": attention,
        "mm_token_type_ids": (input_ids == image_token_id).int(),
        "pixel_values": torch.cat([group.pixel_values for group in groups]),
        "image_grid_thw": torch.cat([group.image_grid_thw for group in groups]),
    }
    return ModelBatch(inputs=inputs, responses=responses, response_mask=response_mask, prompt_width=prompt_width, prompt_rows=prompt_rows)


def response_logits(model: torch.nn.Module, batch: ModelBatch) -> torch.Tensor:
    """(B, R + 1, vocab) logits ending each row, the first R of which predict the response tokens
    (what `response_scores` reads), from a Qwen2.5-VL model however wrapped (FSDP2, DeepSpeed, PEFT).

    Shared prompts take two passes: the distinct prompts, keeping their keys and values; then
    the responses over a copy of their prompt's keys and values for each sequence (autograd
    sums the copies' gradients, so gradients are those of whole sequences). The responses'
    multimodal-rope positions continue their prompt's, as in generation. Gradient checkpointing
    drops the cache (transformers' checkpointed layers), so the learner shares prompts only without it.
    """
    width = batch.responses.shape[1]
    if batch.prompt_rows is None:
        return model(**batch.inputs, use_cache=False, logits_to_keep=width + 1).logits
    prompts = batch.inputs
    rope = next(module for module in model.modules() if hasattr(type(module), "get_rope_index"))
    positions, deltas = rope.get_rope_index(prompts["input_ids"], prompts["mm_token_type_ids"], image_grid_thw=prompts["image_grid_thw"],
                                            attention_mask=prompts["attention_mask"])
    prompt_pass = model(**prompts, position_ids=positions, use_cache=True, logits_to_keep=1)
    rows = batch.prompt_rows
    cache = prompt_pass.past_key_values
    cache.reorder_cache(rows)  # (prompts, ...) -> (sequences, ...): each sequence's copy of its prompt's
    # as generation counts them: the prompt's own tokens (padding left out), plus its rope delta
    lengths = prompts["attention_mask"].sum(-1, keepdim=True)
    after = (lengths + deltas)[rows] + torch.arange(width, device=rows.device)
    response_positions = after.unsqueeze(0).expand(3, -1, -1)
    attention = torch.cat([prompts["attention_mask"][rows], batch.response_mask.to(prompts["attention_mask"])], dim=1)
    response_pass = model(input_ids=batch.responses, attention_mask=attention, position_ids=response_positions, past_key_values=cache,
                          use_cache=True, logits_to_keep=width)
    return torch.cat([prompt_pass.logits[rows], response_pass.logits], dim=1)


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

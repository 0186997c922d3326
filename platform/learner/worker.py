"""The learner role: one Ray actor per rank of a torch.distributed group that trains the policy.

Each rank holds an FSDP2 shard of the policy (and of the frozen reference), receives its share of
the step's sequences, recomputes old and reference log-probs for them, and runs the clipped GRPO
update. FSDP's collectives run inside every forward pass, so all ranks must run the same number
of passes: a rank with fewer sequences pads its schedule with zero-weight passes.
"""

from __future__ import annotations

import math
import os
import random
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from anomalyr1.platform.batch import ModelBatch, TrainSequence, collate, response_log_probs
from anomalyr1.platform.grpo import LossSettings, policy_objective, truncated_is_weights
from anomalyr1.platform.learner.backend import make_backend
from anomalyr1.platform.models import fingerprint, load_policy, load_processor, resolve_model_path, suppressed_token_ids
from anomalyr1.platform.recipe import recipe_in_actor


class LogProbGap:
    """|engine - learner| log-probs of the sampled tokens, before the policy moves.

    Both should score the rollout's weights identically up to arithmetic; a weight update or a
    cache that did not reach the engine shows here, every step, in a real run.
    """

    def __init__(self):
        self.total, self.tokens, self.max = 0.0, 0, 0.0

    def add(self, learner_log_prob: torch.Tensor, sequence: TrainSequence) -> None:
        engine = sequence.rollout_log_prob
        if engine is None or sequence.blank or not engine:
            return
        gap = (learner_log_prob[: len(engine)].detach().float().cpu() - torch.tensor(engine)).abs()
        self.total += float(gap.sum())
        self.tokens += gap.numel()
        self.max = max(self.max, float(gap.max()))


@dataclass
class UpdateResult:
    metrics: dict[str, float]
    compute_s: float


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


class LearnerWorker:
    def __init__(self, rank: int, world_size: int, recipe: dict):
        self.rank, self.world_size = rank, world_size
        self.recipe = recipe_in_actor(recipe)
        torch.set_num_threads(self.recipe.trainer.torch_threads)
        use_cuda = self.recipe.learner.num_gpus > 0 and torch.cuda.is_available()
        self.device = torch.device("cuda", 0) if use_cuda else torch.device("cpu")
        self.backend = "nccl" if use_cuda else "gloo"
        algorithm = self.recipe.algorithm
        self.settings = LossSettings(
            policy_loss=algorithm.policy_loss,
            clip_ratio=algorithm.clip_ratio,
            clip_ratio_low=algorithm.clip_ratio_low,
            clip_ratio_high=algorithm.clip_ratio_high,
            loss_agg_mode=algorithm.loss_agg_mode,
            kl_coef=algorithm.kl_coef,
            kl_type=algorithm.kl_type,
            rollout_n=self.recipe.rollout.n,
            rollout_is=algorithm.rollout_is,
            rollout_is_threshold=algorithm.rollout_is_threshold,
        )

    def rendezvous(self) -> tuple[str, int]:
        """Rank 0's address and a free port for the process group."""
        import ray

        return ray.util.get_node_ip_address(), free_port()

    def setup(self, master_addr: str, master_port: int, resume_from: str | None = None) -> None:
        """Join the group, shard the policy (from `resume_from`'s checkpoint when given) and the reference."""
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        dist.init_process_group(
            self.backend,
            init_method=f"tcp://{master_addr}:{master_port}",
            rank=self.rank,
            world_size=self.world_size,
        )
        torch.manual_seed(self.recipe.trainer.seed)
        learner = self.recipe.learner
        self.model_path = resolve_model_path(self.recipe.model)
        self.processor = load_processor(self.model_path, self.recipe.model.min_pixels, self.recipe.model.max_pixels)
        tokenizer = self.processor.tokenizer
        self.pad_id = tokenizer.pad_token_id
        self.suppressed = suppressed_token_ids(tokenizer)
        attn = self.recipe.model.attn_implementation
        policy_path = str(Path(resume_from) / "model") if resume_from else self.model_path
        policy = load_policy(policy_path, "float32", attn, str(self.device))
        self.image_token_id = policy.config.image_token_id
        if learner.gradient_checkpointing:
            policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        policy.config.use_cache = False
        self.engine = make_backend(learner.backend, policy, self.recipe)
        self.policy = self.engine.module
        self.updates = 0
        if resume_from:
            self.updates = self.engine.load_state(Path(resume_from) / "learner", self.rank, self.world_size).get("updates", 0)
        self.reference = None  # always the starting model: the KL anchors to it, not to a checkpoint
        if self.settings.kl_coef > 0:
            # forward passes only: held in the compute dtype (bf16 on GPU halves its memory)
            reference = load_policy(self.model_path, learner.param_dtype, attn, str(self.device)).eval()
            reference.requires_grad_(False)
            self.reference = make_backend(learner.backend, reference, self.recipe, reference=True)

    # -- forward passes -------------------------------------------------------------------------

    def _batch(self, sequences: list[TrainSequence]) -> ModelBatch:
        batch = collate([(s.group, s.response) for s in sequences], self.pad_id, self.image_token_id)
        batch.inputs = {k: v.to(self.device) for k, v in batch.inputs.items()}
        batch.inputs["pixel_values"] = batch.inputs["pixel_values"].float()
        batch.responses = batch.responses.to(self.device)
        batch.response_mask = batch.response_mask.to(self.device)
        return batch

    def _log_probs(self, model, batch: ModelBatch) -> torch.Tensor:
        logits = model(**batch.inputs, use_cache=False).logits
        return response_log_probs(logits, batch, self.suppressed, self.recipe.rollout.temperature)

    def _schedule(self, sequences: list[TrainSequence], template: TrainSequence) -> list[list[TrainSequence]]:
        """Micro-batches of at most micro_batch_size, as many on every rank (max over ranks).

        A padding micro-batch holds a blank copy of `template` (any sequence of this rank):
        same shapes and collectives as real work, zero weight in loss and gradient.
        """
        local = self._micro_batches(sequences)
        count = torch.tensor([len(local)], dtype=torch.long)
        dist.all_reduce(count, op=dist.ReduceOp.MAX)
        while len(local) < int(count[0]):
            local.append([self._blank(template)])
        return local

    def _micro_batches(self, sequences: list[TrainSequence]) -> list[list[TrainSequence]]:
        """By count (micro_batch_size), or packed under a token budget (micro_batch_tokens), where
        a micro-batch costs its padded size: sequences x (longest prompt + longest response)."""
        learner = self.recipe.learner
        if learner.micro_batch_tokens is None:
            size = learner.micro_batch_size
            return [sequences[i : i + size] for i in range(0, len(sequences), size)]
        batches: list[list[TrainSequence]] = []
        current: list[TrainSequence] = []
        prompt = response = 0
        for sequence in sequences:
            wider_prompt = max(prompt, len(sequence.group.prompt_ids))
            wider_response = max(response, len(sequence.response))
            if current and (len(current) + 1) * (wider_prompt + wider_response) > learner.micro_batch_tokens:
                batches.append(current)
                current, wider_prompt, wider_response = [], len(sequence.group.prompt_ids), len(sequence.response)
            current.append(sequence)
            prompt, response = wider_prompt, wider_response
        return batches + ([current] if current else [])

    @staticmethod
    def _blank(sequence: TrainSequence) -> TrainSequence:
        return TrainSequence(group=sequence.group, response_index=sequence.response_index, advantage=0.0, blank=True)

    @torch.no_grad()
    def log_probs(self, sequences: list[TrainSequence], reference: bool = False, template: TrainSequence | None = None) -> list[torch.Tensor]:
        """Every rank must call it (FSDP collectives), with `template` when its `sequences` may be empty."""
        model = self.reference if reference else self.policy
        results: list[torch.Tensor] = []
        for micro in self._schedule(sequences, template or sequences[0]):
            batch = self._batch(micro)
            values = self._log_probs(model, batch).cpu()
            for row, sequence in enumerate(micro):
                if not sequence.blank:
                    results.append(values[row, : len(sequence.response)])
        return results

    # -- the update -----------------------------------------------------------------------------

    def update(self, sequences: list[TrainSequence], total_sequences: int, seed: int) -> UpdateResult:
        """One training step on this rank's share; `total_sequences` counts all ranks' shares."""
        start = time.perf_counter()
        self.policy.train()
        learner = self.recipe.learner
        mini_batch = learner.mini_batch_size or total_sequences
        steps_per_epoch = max(1, math.ceil(total_sequences / mini_batch))
        policy_moves = self.recipe.algorithm.ppo_epochs > 1 or steps_per_epoch > 1
        self.gap = LogProbGap()
        for sequence in sequences:
            if sequence.staleness > 0:  # generated by older weights: the behaviour policy is the engine's
                sequence.old_log_prob = sequence.behaviour_log_prob()
        if policy_moves:
            # Only then does the policy move before a sequence is trained on; with a single
            # optimizer step the old policy is the current one and its log-probs are taken from
            # the training pass itself (detached), saving a forward pass, as verl does.
            fresh = [s for s in sequences if s.staleness == 0]
            for sequence, old in zip(fresh, self.log_probs(fresh, template=sequences[0])):
                sequence.old_log_prob = old
                self.gap.add(old, sequence)
        if self.reference is not None:
            for sequence, ref in zip(sequences, self.log_probs(sequences, reference=True)):
                sequence.ref_log_prob = ref
        rng = random.Random(seed * 1000 + self.rank)
        totals: dict[str, float] = {}
        for _epoch in range(self.recipe.algorithm.ppo_epochs):
            order = list(sequences)
            if policy_moves:
                rng.shuffle(order)
            for part in range(steps_per_epoch):
                chunk = order[part::steps_per_epoch]
                self._accumulate(totals, self._optimizer_step(chunk, template=sequences[0]))
        metrics = {key: value / max(1, totals.get("_count", 1)) for key, value in totals.items() if key != "_count"}
        metrics["actor/lr"] = learner.lr
        gap_total, gap_tokens = self._global(self.gap.total, self.gap.tokens)
        if gap_tokens:
            metrics["rollout/log_prob_diff_mean"] = gap_total / gap_tokens
            metrics["rollout/log_prob_diff_max"] = self._global(self.gap.max, op=dist.ReduceOp.MAX)[0]
        return UpdateResult(metrics=metrics, compute_s=time.perf_counter() - start)

    @staticmethod
    def _accumulate(totals: dict[str, float], metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            totals[key] = totals.get(key, 0.0) + value
        totals["_count"] = totals.get("_count", 0) + 1

    def _global(self, *values: float, op=dist.ReduceOp.SUM) -> list[float]:
        tensor = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(tensor, op=op)
        return tensor.tolist()

    def _optimizer_step(self, chunk: list[TrainSequence], template: TrainSequence) -> dict[str, float]:
        tokens = sum(len(s.response) for s in chunk)
        global_tokens, global_sequences = self._global(tokens, len(chunk))
        sums = {"pg_loss": 0.0, "kl": 0.0, "clipfrac": 0.0, "ppo_kl": 0.0, "ratio": 0.0}
        schedule = self._schedule(chunk, template)
        for index, micro in enumerate(schedule):
            batch = self._batch(micro)
            if any(s.blank for s in micro):
                batch.response_mask = torch.zeros_like(batch.response_mask)
            width = batch.responses.shape[1]
            ref = self._stack([s.ref_log_prob for s in micro], width) if self.reference is not None else None
            advantages = torch.tensor([s.advantage for s in micro], device=self.device).unsqueeze(1) * batch.response_mask
            log_prob = self._log_probs(self.policy, batch)
            old = self._old_log_probs(micro, log_prob)
            parts = policy_objective(
                self.settings,
                log_prob=log_prob,
                old_log_prob=old,
                advantages=advantages,
                response_mask=batch.response_mask,
                ref_log_prob=ref,
                dp_size=self.world_size,
                batch_num_tokens=max(1, int(global_tokens)),
                batch_size=max(1, int(global_sequences)),
                rollout_is_weights=self._is_weights(micro, old, batch.response_mask),
            )
            self.engine.backward(parts.loss, last_micro_batch=index == len(schedule) - 1)
            micro_tokens = float(batch.response_mask.sum())
            sums["pg_loss"] += float(parts.pg_loss.detach())
            sums["kl"] += float(parts.kl.detach())
            sums["clipfrac"] += parts.metrics.get("actor/pg_clipfrac", 0.0) * micro_tokens
            sums["ppo_kl"] += parts.metrics.get("actor/ppo_kl", 0.0) * micro_tokens
            sums["ratio"] += float((torch.exp((log_prob.detach() - old).clamp(-20, 20)) * batch.response_mask).sum())
        pg_loss, kl, clipfrac, ppo_kl, ratio = self._global(*sums.values())
        grad_norm, applied = self.engine.step(self.recipe.learner.grad_clip, loss_is_finite=math.isfinite(pg_loss))
        skipped = not applied
        self.updates += int(applied)
        return {
            "actor/pg_loss": pg_loss / self.world_size,
            "actor/kl": kl / self.world_size,
            "actor/clipfrac": clipfrac / max(1.0, global_tokens),
            "actor/ppo_kl": ppo_kl / max(1.0, global_tokens),
            "actor/ratio_mean": ratio / global_tokens if global_tokens else 1.0,
            "actor/grad_norm": grad_norm if math.isfinite(grad_norm) else 0.0,
            "actor/skipped_updates": float(skipped),
        }

    def _old_log_probs(self, micro: list[TrainSequence], log_prob: torch.Tensor) -> torch.Tensor:
        """Each row's old policy: its own when it has one (a stale sequence's engine log-probs, or
        the learner's before several optimizer steps), else this pass's, detached; the latter are
        the weights the rollout used, so they are compared with the engine's log-probs."""
        old = log_prob.detach().clone()
        for row, sequence in enumerate(micro):
            if sequence.old_log_prob is None:
                self.gap.add(log_prob[row], sequence)
            else:
                old[row] = 0.0
                old[row, : len(sequence.old_log_prob)] = sequence.old_log_prob.to(old.device)
        return old

    def _is_weights(self, micro: list[TrainSequence], old: torch.Tensor, mask: torch.Tensor) -> torch.Tensor | None:
        """algorithm.rollout_is: truncated pi_old / pi_engine; 1 where the engine's log-probs are
        the old policy already (stale sequences) or are missing."""
        if self.settings.rollout_is is None:
            return None
        engine = old.clone()
        for row, sequence in enumerate(micro):
            if sequence.rollout_log_prob and not sequence.blank:
                engine[row] = 0.0
                engine[row, : len(sequence.rollout_log_prob)] = sequence.behaviour_log_prob().to(old.device)
        return truncated_is_weights(old, engine, mask, self.settings.rollout_is, self.settings.rollout_is_threshold)

    def _stack(self, rows: list[torch.Tensor | None], width: int) -> torch.Tensor:
        out = torch.zeros((len(rows), width), dtype=torch.float32)
        for i, row in enumerate(rows):
            if row is not None:
                out[i, : len(row)] = row
        return out.to(self.device)

    # -- weights out ----------------------------------------------------------------------------

    def state_dict(self) -> list | None:
        """[ObjectRef of the full weights] at rank 0 (None elsewhere), in the rollout's dtype.

        Put in the object store here and returned by reference, so the driver passes the weights
        on to the rollout workers without ever holding a copy; every rank must be called."""
        import ray

        state = self.engine.rollout_weights(getattr(torch, self.recipe.model.dtype))
        return [ray.put(state)] if state is not None else None

    def fingerprint(self) -> float | None:
        state = self.engine.full_state_dict()
        return fingerprint(state.items()) if state is not None else None

    def save_model(self, directory: str) -> None:
        """A from_pretrained-loadable folder (fp32 weights, config, processor), written at rank 0."""
        state = self.engine.full_state_dict()
        if state is None:
            return
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        getattr(self.policy, "module", self.policy).save_pretrained(out, state_dict=state)  # DeepSpeed wraps the model
        self.processor.save_pretrained(out)

    def save_state(self, directory: str) -> None:
        """This rank's optimizer shard and RNG (no collective: every rank writes its own file)."""
        self.engine.save_state(Path(directory), self.rank, self.world_size, {"updates": self.updates})

    def pid(self) -> int:
        return os.getpid()

    def shutdown(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


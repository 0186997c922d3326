"""Greedy answers from rollout workers: shared by `anomalyr1 eval` and evaluation during training
(where the trainer's own workers, holding the current weights, answer)."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import ray

from anomalyr1.data_pipelines.schema import Sample
from anomalyr1.data_pipelines.scoring import score_answers
from anomalyr1.platform.eval_answers import LetterReader, answer_record, choose_letter, eval_metrics, write_answers
from anomalyr1.platform.recipe import Recipe
from anomalyr1.platform.remote_calls import LOST
from anomalyr1.platform.rollout.sampling import SamplingSettings


def eval_batch_size(recipe: Recipe) -> int:
    """Prompts per generate call: as many sequences as a worker generates per training step,
    which the recipe already sizes to fit the worker's memory."""
    return math.ceil(recipe.trainer.prompts_per_step / recipe.rollout.workers) * recipe.rollout.n


def greedy_answers(
    workers: Sequence[Any],
    samples: Sequence[Sample],
    max_new_tokens: int,
    batch_size: int,
    incarnations: dict[int, str] | None = None,
    rearm: Callable[[int, object], None] | None = None,
    reader: LetterReader = choose_letter,
) -> list[dict]:
    """MMAD answer records for samples, in their order. Batches go to whichever worker is free,
    so a slow worker (or a batch of long prompts) does not hold the others up.

    With `incarnations` (the trainer's record of which worker process holds its weights) and
    `rearm`, a worker that died or came back with its initial weights is given the current ones
    and its batch redone, as in training."""
    sampling = SamplingSettings(n=1, greedy=True, max_new_tokens=max_new_tokens)
    starts = list(range(0, len(samples), batch_size))
    texts: list[str] = [""] * len(samples)
    input_sizes: list[tuple[int, int] | None] = [None] * len(samples)
    idle, pending = list(range(len(workers))), {}
    while starts or pending:
        while idle and starts:
            start = starts.pop(0)
            batch = [s.to_dict() for s in samples[start:start + batch_size]]
            index = idle.pop()
            pending[workers[index].generate.remote(batch, sampling, texts_only=True)] = (index, start)
        done, _ = ray.wait(list(pending), num_returns=1)
        index, start = pending.pop(done[0])
        try:
            result = ray.get(done[0])
            cause = None if incarnations is None or result.incarnation == incarnations.get(index) else "restarted since its last weights"
        except LOST as exc:
            if rearm is None:
                raise
            result, cause = None, exc
        if cause is not None:
            rearm(index, cause)
            starts.insert(0, start)
        else:
            for offset, group in enumerate(result.groups):
                texts[start + offset] = group.texts[0]
                input_sizes[start + offset] = group.model_input_size
        idle.append(index)
    return [answer_record(sample, text, size, reader) for sample, text, size in zip(samples, texts, input_sizes)]


def held_out_metrics(
    workers: Sequence[Any], samples: Sequence[Sample], recipe: Recipe, incarnations=None, rearm=None, out: Path | None = None,
) -> dict[str, float]:
    """eval/* metrics of the workers' current policy on the held-out samples, with the training
    prompt (the one the policy is trained to answer), and timing/eval_s. With `out`, the answers
    (full responses included) and their table are also written there, for the run's report."""
    start = time.perf_counter()
    records = greedy_answers(workers, samples, recipe.rollout.max_new_tokens, eval_batch_size(recipe), incarnations, rearm)
    scores = write_answers(out, records) if out is not None else score_answers(records)
    return {**eval_metrics(scores), "timing/eval_s": time.perf_counter() - start}

"""Bounded staleness (trainer.max_staleness): which steps' rollouts may start early, and how stale they were.

With max_staleness k > 0 the driver starts the rollout of a later step while the learners still
train the current one, so rollout workers and learners work at the same time. A step's batch may
then come from weights up to k updates older than those it trains (the learner corrects with the
engine's log-probs as the behaviour policy). Weights are versioned by the step whose update made
them: the initial weights (or a checkpoint's) are the version of the step they start from.
"""

from __future__ import annotations

from anomalyr1.platform.batch import TrainSequence
from anomalyr1.platform.recipe import TrainerConfig


def may_launch(step: int, version: int, trainer: TrainerConfig) -> bool:
    """May step `step`'s rollout start now, from weights `version`?

    Not past the run's end, at most max_staleness updates behind the weights step `step` trains
    (version step - 1), and never across a checkpoint: a run resumed from the checkpoint of step c
    generates step c + 1 from c's weights, so an uninterrupted run must too, or resuming would not
    reproduce it."""
    if step > trainer.steps or step - 1 - version > trainer.max_staleness:
        return False
    every = trainer.save_every
    return not every or (step - 1) // every == version // every


def staleness_metrics(sequences: list[TrainSequence]) -> dict[str, float]:
    """async/staleness_mean and _max: updates between each sequence's behaviour weights and the learners'."""
    values = [s.staleness for s in sequences] or [0]
    return {"async/staleness_mean": sum(values) / len(values), "async/staleness_max": float(max(values))}

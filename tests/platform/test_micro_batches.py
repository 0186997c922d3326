"""How a step's sequences are cut: contiguous shares and mini-batches keep a prompt's G
completions together, so a micro-batch carries one image, encoded once, sent to one learner."""

from types import SimpleNamespace

import pytest
import torch

from anomalyr1.platform.batch import RolloutGroup, TrainSequence, split_evenly
from anomalyr1.platform.driver import StepTimes, Trainer


@pytest.mark.parametrize("count, parts", [(64, 4), (10, 3), (2, 4), (0, 2)])
def test_split_evenly_is_contiguous_and_balanced(count, parts):
    items = list(range(count))
    runs = split_evenly(items, parts)
    assert len(runs) == parts and [i for run in runs for i in run] == items
    assert max(map(len, runs)) - min(map(len, runs)) <= 1


def _group(index: int, g: int) -> RolloutGroup:
    return RolloutGroup(sample={"id": f"s{index}"}, prompt_ids=[1, 2], pixel_values=torch.full((4, 3), float(index)),
                        image_grid_thw=torch.tensor([[1, 2, 2]]), responses=[[5]] * g, texts=[""] * g)


def test_each_learner_gets_whole_prompts(monkeypatch):
    """8 prompts x G=8 over 4 learners: each learner's share is 2 whole prompts, so each group's
    pixels travel to one learner (strided shares sent every learner every image)."""
    groups = [_group(i, 8) for i in range(8)]
    sequences = [TrainSequence(group=g, response_index=i, advantage=0.0) for g in groups for i in range(8)]
    trainer = Trainer.__new__(Trainer)
    trainer._seed = lambda purpose, rank: 0
    sent = {}

    def on_learners(method, per_rank):
        sent["shares"] = [share for share, _total, _seed in per_rank]
        return [SimpleNamespace(compute_s=0.0, metrics={})] * 4

    trainer.roles = SimpleNamespace(learners=SimpleNamespace(actors=[None] * 4, call=on_learners))
    trainer.update(sequences, StepTimes())
    images_per_learner = [len({id(s.group) for s in share}) for share in sent["shares"]]
    assert images_per_learner == [2, 2, 2, 2]

"""Groups without reward spread: the train/groups_with_spread metric and algorithm.filter_groups
(DAPO-style dynamic sampling with bounded extra draws)."""

import torch
from safetensors.torch import load_file

from anomalyr1.platform.driver import StepTimes, Trainer, has_spread
from anomalyr1.platform.metrics import read_metrics
from anomalyr1.rewards import RewardResult


def scored(*values: float) -> list[RewardResult]:
    return [RewardResult(v) for v in values]


def test_has_spread():
    assert has_spread(scored(0.0, 1.0, 0.0)) and has_spread(scored(0.8, 1.8))
    assert not has_spread(scored(1.0, 1.0, 1.0)) and not has_spread(scored(0.05, 0.05))


def test_extra_draws_fill_the_step_with_groups_that_have_spread(tiny_recipe):
    """4 prompts a step: the first draw has 1 group with spread; the next draw asks for the 3
    missing (2 come back with spread), the last for 1; a third draw is past the bound."""
    trainer = Trainer(tiny_recipe("algorithm.filter_groups=true", "algorithm.filter_groups_max_draws=2",
                                  "trainer.prompts_per_step=4"))
    outcomes = iter([
        [scored(0, 0.8), scored(0, 0), scored(0.1, 0)],
        [scored(0, 0.1)],
        [scored(0, 1)],  # never drawn: past filter_groups_max_draws
    ])
    asked, numbered = [], []

    def launch(step, count, draw):
        asked.append(count)
        numbered.append(draw)
        return [object()] * count

    def rollout_and_score(launched, times):
        scores = next(outcomes)[: len(launched)]
        return launched[: len(scores)], scores

    trainer.launch, trainer.rollout_and_score = launch, rollout_and_score
    first = [scored(0, 0), scored(0, 1), scored(1, 1), scored(0.5, 0.5)]
    groups, scores, draws = trainer.groups_with_spread([object()] * 4, first, [has_spread(s) for s in first], StepTimes())
    assert asked == [3, 1] and draws == 2
    assert numbered == [1, 2], "each extra draw is numbered, so it samples with seeds of its own"
    assert len(groups) == 4 and all(has_spread(s) for s in scores)
    assert [s[0].score for s in scores] == [0, 0, 0.1, 0], "kept in draw order: 1 + 2 + 1"


def test_a_step_without_spread_trains_nothing_and_the_schedule_goes_on(ray_session, tiny_recipe, tiny_model):
    """`format` on a random tiny model is 0 for every completion: no group has spread, the extra
    draw finds none either, so no update runs, the weights stay, and the rate still decays."""
    trainer = Trainer(tiny_recipe(
        "reward.terms=[{name: format}]", "algorithm.filter_groups=true", "algorithm.filter_groups_max_draws=1",
        "trainer.steps=2", "trainer.prompts_per_step=2", "rollout.n=2", "algorithm.kl_coef=0",
        "learner.lr=1e-3", "learner.lr_scheduler=linear"))
    final = trainer.train()
    metrics = read_metrics(trainer.output / "metrics.jsonl")
    assert [m["train/groups_with_spread"] for m in metrics] == [0.0, 0.0]
    assert [m["train/groups_kept"] for m in metrics] == [0.0, 0.0]
    assert [m["train/extra_draws"] for m in metrics] == [1.0, 1.0]
    assert [m["actor/skipped_updates"] for m in metrics] == [1.0, 1.0]
    assert [m["actor/lr"] for m in metrics] == [1e-3, 0.5e-3]
    assert trainer.prompts.state()["position"] == 8, "two draws of 2 prompts per step"
    initial = load_file(f"{tiny_model}/model.safetensors")
    trained = load_file(str(final / "model.safetensors"))
    assert all(torch.equal(trained[k], v) for k, v in initial.items() if k in trained)

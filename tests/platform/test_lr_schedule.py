"""Learning-rate schedules: transformers' curves by training step, as the reference's Trainer ran them."""

import math

import pytest
import torch

from anomalyr1.platform.learner.schedule import current_lr, lr_scheduler

LR, STEPS = 5e-7, 1000


def rates(name: str, warmup: int, steps: int = STEPS) -> list[float]:
    """The rate each training step (0-based) trains at: read before the scheduler advances."""
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    scheduler = lr_scheduler(optimizer, name, warmup, steps)
    out = []
    for _ in range(steps):
        out.append(current_lr(optimizer))
        optimizer.step()
        scheduler.step()
    return out


def test_linear_decays_to_zero_over_the_run_like_the_reference():
    """transformers' linear schedule, no warmup (TrainingArguments' defaults): step s trains at lr x (T - s) / T."""
    lrs = rates("linear", 0)
    assert lrs[0] == pytest.approx(LR, rel=1e-12)
    assert lrs[STEPS // 2] == pytest.approx(LR / 2, rel=1e-12)
    assert lrs[-1] == pytest.approx(LR / STEPS, rel=1e-12)
    assert all(a > b for a, b in zip(lrs, lrs[1:]))


def test_cosine_is_half_a_cosine_to_zero():
    lrs = rates("cosine", 0)
    assert lrs[0] == pytest.approx(LR, rel=1e-12)
    assert lrs[STEPS // 2] == pytest.approx(LR / 2, rel=1e-9)
    assert lrs[-1] == pytest.approx(LR * 0.5 * (1 + math.cos(math.pi * (STEPS - 1) / STEPS)), rel=1e-9)


def test_constant_and_warmup():
    assert set(rates("constant", 0, 10)) == {LR}
    warm = rates("constant", 4, 10)
    assert warm[:5] == pytest.approx([0.0, LR / 4, LR / 2, 3 * LR / 4, LR], rel=1e-12)
    assert set(warm[4:]) == {LR}
    linear = rates("linear", 4, 10)
    assert linear[0] == 0.0 and linear[4] == pytest.approx(LR) and linear[7] == pytest.approx(LR / 2)


def test_state_round_trips_through_json():
    """A checkpoint stores the schedule as JSON; a scheduler loaded from it continues the curve."""
    import json

    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    scheduler = lr_scheduler(optimizer, "linear", 2, 10)
    for _ in range(5):
        scheduler.step()
    saved = json.loads(json.dumps(scheduler.state_dict()))
    fresh_optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    fresh = lr_scheduler(fresh_optimizer, "linear", 2, 10)
    fresh.load_state_dict(saved)
    fresh_optimizer.param_groups[0]["lr"] = current_lr(optimizer)  # the optimizer's own state restores this
    scheduler.step()
    fresh.step()
    assert current_lr(fresh_optimizer) == current_lr(optimizer) == pytest.approx(LR * 4 / 8)


@pytest.mark.parametrize("name,warmup", [("linear", 0), ("linear", 30), ("cosine", 0), ("cosine", 50), ("constant", 0), ("constant", 20)])
def test_every_step_is_transformers_rate(name, warmup):
    """The factors are computed here, not imported (transformers' module costs peft's import):
    they must be transformers' get_scheduler's, step by step."""
    from transformers import get_scheduler

    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    theirs = get_scheduler({"constant": "constant_with_warmup"}.get(name, name), optimizer, num_warmup_steps=warmup, num_training_steps=STEPS)
    expected = []
    for _ in range(STEPS):
        expected.append(current_lr(optimizer))
        optimizer.step()
        theirs.step()
    assert rates(name, warmup) == pytest.approx(expected, rel=1e-12, abs=1e-20)

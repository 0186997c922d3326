"""Every reward, on any string: no exception, a finite score inside its declared range, and
bounded time on 1 MB inputs."""

from __future__ import annotations

import math
import random
import time
from typing import Any, Mapping

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reward_samples import make_sample

from anomalyr1.rewards import Reward, RewardResult, RewardTerm, combine_rewards, list_rewards, load_reward

MB = 1_000_000
TIME_LIMIT_S = 2.0

CONFIGURED = [(name, {}) for name in list_rewards()] + [
    ("roam", {"reasoning_weight": 0.5}),
    ("roam", {"extractor": "strict", "case_sensitive": False}),
    ("accuracy", {"require_format": False}),
    ("lr_iad", {"gamma": 0.0, "class_key": ["dataset", "category", "defect_type"]}),
]


def build(name: str, params: dict[str, Any]) -> Reward:
    return load_reward(name, **params)


def build_combined() -> Reward:
    return combine_rewards([RewardTerm(name) for name in list_rewards()])


REWARD_IDS = [f"{name}{params or ''}" for name, params in CONFIGURED]
REWARD_FACTORIES = [lambda n=name, p=params: build(n, p) for name, params in CONFIGURED] + [build_combined]
REWARD_IDS.append("combined")

CHUNKS = [
    "<think>", "</think>", "<answer>", "</answer>", "<think", "answer>", " ", "\n", "\t", "A", "B", "C", "D", "E",
    "a", "b", "ANSWER", "answer is", "答案是", "。", ".", ",", "(C)", "Bottle", "```json\n", "```", "[", "]", "{", "}",
    '{"bbox_2d": [10, 20, 30, 40], "label": "crack"}', "[1, 2, 3, 4]", "[1e400, 2, 3, 4]", "NaN", "-1", "0.5", '"',
    ":", "\x00", "\ud7ff", "🙂",
]
chunked = st.lists(st.sampled_from(CHUNKS), max_size=40).map("".join)
completions = st.one_of(st.text(), chunked)

letters = st.sampled_from(["A", "B", "C", "D", "E", "b", "", " B ", "Z"])
maybe_box = st.one_of(st.none(), st.tuples(*[st.floats(allow_nan=True, allow_infinity=True)] * 4),
                      st.tuples(*[st.integers(0, 500)] * 4))
sizes = st.one_of(st.none(), st.tuples(st.integers(-5, 2000), st.integers(-5, 2000)), st.just("640x480"))
extras = st.fixed_dictionaries(
    {},
    optional={
        "input_size": sizes,
        "image_size": sizes,
        "bboxes": st.one_of(st.lists(maybe_box, max_size=3), st.just("not a list")),
        "policy_prob": st.one_of(st.floats(allow_nan=True), st.just("high"), st.none()),
    },
)
samples = st.builds(
    make_sample,
    answer=letters,
    defect_type=st.sampled_from(["good", "crack", "scratch"]),
    bbox=maybe_box,
    reasoning=st.one_of(st.none(), st.text(max_size=50), st.just("a scratch on the top left edge")),
    extra=st.one_of(extras, st.just(None), st.just([])),
)


def assert_valid(reward: Reward, result: RewardResult) -> None:
    low, high = reward.value_range
    assert math.isfinite(result.score)
    assert low - 1e-9 <= result.score <= high + 1e-9, (result, reward.value_range)
    assert all(isinstance(v, float) and math.isfinite(v) for v in result.parts.values())
    assert not any(key == "error" or key.endswith("/error") for key in result.parts), result.parts


@pytest.mark.parametrize("factory", REWARD_FACTORIES, ids=REWARD_IDS)
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(completion=completions, sample=samples)
def test_any_string_scores_in_range(factory, completion: str, sample: Mapping[str, Any]) -> None:
    reward = factory()
    assert_valid(reward, reward(completion, sample))


@pytest.mark.parametrize("factory", REWARD_FACTORIES, ids=REWARD_IDS)
@settings(max_examples=30, deadline=None)
@given(group=st.lists(completions, max_size=8), sample=samples)
def test_any_group_scores_in_range(factory, group: list[str], sample: Mapping[str, Any]) -> None:
    reward = factory()
    results = reward.score_group(group, sample)
    assert len(results) == len(group)
    for result in results:
        assert_valid(reward, result)


def _one_megabyte(pattern: str) -> str:
    return (pattern * (MB // max(1, len(pattern)) + 1))[:MB]


_rng = random.Random(0)
ADVERSARIAL = {
    "letters": _one_megabyte("A B C D "),
    "uppercase-keywords": _one_megabyte("ANSWER A, CORRECT B. 答案是C。"),
    "think-opens": _one_megabyte("<think>"),
    "blocks": _one_megabyte("<think>so B.</think><answer>B</answer>"),
    "junction-whitespace": "<think>x</think>" + " " * MB,
    "open-then-whitespace": "<think>" + " " * MB + "</think> <answer>",
    "long-answer": "<think>x</think><answer>" + _one_megabyte("[1, ") + "</answer>",
    "answer-under-cap": "<think>x</think><answer>" + "[" * 19_000 + "</answer>" + " " * MB,
    "boxes-under-cap": "<think>x</think><answer>[" + '{"bbox_2d": [1, 2, 3, 4]},' * 700 + "</answer>",
    "brackets": _one_megabyte("[{"),
    "fence-whitespace": "```" + " " * MB,
    "newlines": "\n" * MB,
    "random": "".join(_rng.choices("ABCDabcd <>/thinkanswer.,[]{}\"答案。", k=MB)),
}


def _timed_calls(reward: Reward, text: str, sample: Mapping[str, Any]) -> None:
    start = time.perf_counter()
    result = reward(text, sample)
    assert time.perf_counter() - start < TIME_LIMIT_S
    assert_valid(reward, result)


@pytest.mark.parametrize("text", ADVERSARIAL.values(), ids=ADVERSARIAL.keys())
def test_one_megabyte_inputs_are_fast(text: str) -> None:
    sample = make_sample(bbox=(1, 2, 3, 4), reasoning="a scratch on the top left edge",
                         extra={"input_size": (10, 10), "image_size": (20, 20)})
    for factory in REWARD_FACTORIES:
        _timed_calls(factory(), text, sample)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(pattern=st.lists(st.sampled_from(CHUNKS), min_size=1, max_size=12).map("".join), sample=samples)
def test_generated_one_megabyte_inputs_are_fast(pattern: str, sample: Mapping[str, Any]) -> None:
    text = _one_megabyte(pattern)
    for factory in REWARD_FACTORIES:
        _timed_calls(factory(), text, sample)

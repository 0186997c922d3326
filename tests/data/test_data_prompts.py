"""Prompt builders and option shuffling."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import pytest

from anomalyr1.data_pipelines.errors import DataError
from anomalyr1.data_pipelines.mmad import load_mmad
from anomalyr1.data_pipelines.prompts import (
    BOX_PROMPTS,
    PROMPTS,
    PromptSpec,
    build_prompt,
    format_options,
    shuffle_options,
)
from anomalyr1.data_pipelines.schema import Sample


@pytest.fixture(scope="module")
def samples(synth_root: Path) -> list[Sample]:
    return load_mmad(synth_root, strict=True).samples


@pytest.fixture(scope="module")
def sample(samples: list[Sample]) -> Sample:
    """A four-option defect question."""
    return next(s for s in samples if len(s.options) == 4 and not s.is_normal)


CHAT_PROMPTS = sorted(name for name in PROMPTS if name != "anomalyr1_eval")
"""Prompts built as chat messages; anomalyr1_eval is raw text with the query image only."""


def items(spec: PromptSpec) -> list[dict[str, str]]:
    return [item for message in spec.messages for item in message["content"]]


def text_of(spec: PromptSpec) -> str:
    return "\n".join(item["text"] for item in items(spec) if item["type"] == "text")


def test_format_options() -> None:
    assert format_options({"A": "Yes", "B": "No"}) == "A. Yes\nB. No"


def test_shuffle_keeps_the_right_text_and_reletters(samples: list[Sample]) -> None:
    rng = random.Random(0)
    for sample in samples:
        shuffled = shuffle_options(sample, rng)
        assert list(shuffled.options) == list("ABCD"[: len(sample.options)])
        assert sorted(shuffled.options.values()) == sorted(sample.options.values())
        assert shuffled.options[shuffled.answer] == sample.options[sample.answer]
        assert replace(shuffled, options=sample.options, answer=sample.answer) == sample


def test_shuffle_follows_the_answer_letter_even_with_repeated_texts(sample: Sample) -> None:
    twins = replace(sample, options={"A": "same", "B": "same", "C": "other"}, answer="B")
    for seed in range(20):
        shuffled = shuffle_options(twins, random.Random(seed))
        assert shuffled.options[shuffled.answer] == "same"
        assert sorted(shuffled.options.values()) == ["other", "same", "same"]


def test_shuffle_is_deterministic_for_a_seed_and_varies_across_seeds(sample: Sample) -> None:
    orders = [tuple(shuffle_options(sample, random.Random(seed)).options.values())
              for seed in range(12)]
    assert orders == [tuple(shuffle_options(sample, random.Random(seed)).options.values())
                      for seed in range(12)]
    assert len(set(orders)) > 3
    assert len({shuffle_options(sample, random.Random(s)).answer for s in range(12)}) > 1


@pytest.mark.parametrize("name", CHAT_PROMPTS)
@pytest.mark.parametrize("k_shot", [0, 1, 3])
def test_placeholders_match_images(sample: Sample, name: str, k_shot: int) -> None:
    spec = build_prompt(sample, name, k_shot=k_shot)
    placeholders = [item for item in items(spec) if item["type"] == "image"]
    assert len(placeholders) == len(spec.images) == k_shot + 1
    assert spec.images == [*sample.reference_images[:k_shot], sample.image]
    assert all(m["role"] in ("system", "user") for m in spec.messages)
    json.dumps(spec.messages)  # plain data, safe to ship to Ray workers


@pytest.mark.parametrize("name", CHAT_PROMPTS)
def test_texts_are_kept_apart(sample: Sample, name: str) -> None:
    """Chat templates concatenate content items; each text but the last ends its line."""
    content = items(build_prompt(sample, name, k_shot=1, domain_knowledge=True))
    assert all(i["text"].endswith("\n") for i in content[:-1] if i["type"] == "text")
    assert content[-1]["type"] == "text" and not content[-1]["text"].endswith("\n")


@pytest.mark.parametrize("name", sorted(set(CHAT_PROMPTS) - BOX_PROMPTS))
def test_question_and_options_appear(sample: Sample, name: str) -> None:
    text = text_of(build_prompt(sample, name))
    assert sample.question in text
    assert format_options(sample.options) in text


def test_localization_asks_for_think_and_json_boxes_not_a_letter(sample: Sample) -> None:
    spec = build_prompt(sample, "localization", k_shot=1)
    text = text_of(spec)
    assert "<think> </think>" in text and "<answer> </answer>" in text
    assert '"bbox_2d": [x1, y1, x2, y2]' in text and "[] when there is no defect" in text
    assert sample.question not in text and format_options(sample.options) not in text
    assert items(spec)[-2] == {"type": "image"} and spec.images[-1] == sample.image


def test_question_and_options_appear_in_the_raw_eval_prompt(sample: Sample) -> None:
    text = build_prompt(sample, "anomalyr1_eval").raw_text
    assert sample.question in text and format_options(sample.options) in text


def test_anomalyr1_is_the_reference_training_prompt(sample: Sample) -> None:
    """grpo_rec.py: one user turn, the image first, then "{problem} " + SYSTEM_PROMPT, whose
    pieces join "...the answer." and "Respond ..." without a space."""
    spec = build_prompt(sample, "anomalyr1")
    assert spec.raw_text is None and spec.images == [sample.image]
    assert [m["role"] for m in spec.messages] == ["user"]
    image, text = spec.messages[0]["content"]
    assert image == {"type": "image"}
    assert text == {"type": "text", "text": (
        f"{sample.question}\n{format_options(sample.options)} "
        "A conversation between User and Assistant. The user asks a choice question, and the Assistant solves it. "
        "The assistant first thinks about the reasoning process in the mind and then provides the user with the "
        "answer.Respond with your reasoning in <think> </think> tags followed by a single letter answer in "
        "<answer> </answer> tags.")}


def test_anomalyr1_eval_is_the_reference_raw_text_prompt(sample: Sample) -> None:
    """eval/thinkad_query.py: "Test image: <|image_pad|>\\n\\n{Question} \\n{A. ..\\nB. ..\\n}\\n\\nFirst ..."
    given to the processor without a chat template, the query image only."""
    two = replace(sample, question="Is there any defect?", options={"A": "Yes", "B": "No"}, answer="A")
    spec = build_prompt(two, "anomalyr1_eval")
    assert spec.messages == [] and spec.images == [sample.image]
    assert spec.raw_text == (
        "Test image: <|image_pad|>\n\nIs there any defect? \nA. Yes\nB. No\n\n\n"
        "First output the thinking process in <think> </think> tags and then output the final answer letter "
        "in <answer> </answer> tags.")


@pytest.mark.parametrize(("k_shot", "knowledge"), [(1, False), (0, True)])
def test_anomalyr1_eval_refuses_what_the_reference_never_showed(sample: Sample, k_shot: int, knowledge: bool) -> None:
    with pytest.raises(ValueError, match="anomalyr1_eval is the reference's query-image-only prompt"):
        build_prompt(sample, "anomalyr1_eval", k_shot=k_shot, domain_knowledge=knowledge)


def test_mmad_eval_is_an_inspector_answering_with_a_letter(sample: Sample) -> None:
    text = text_of(build_prompt(sample, "mmad_eval", k_shot=1))
    assert "industrial inspector" in text
    assert "option's letter" in text
    assert "template" in text
    assert "<think>" not in text


@pytest.mark.parametrize("name", CHAT_PROMPTS)
def test_domain_knowledge_only_when_asked(sample: Sample, name: str) -> None:
    knowledge = sample.extra["domain_knowledge"]
    assert knowledge not in text_of(build_prompt(sample, name))
    assert knowledge in text_of(build_prompt(sample, name, domain_knowledge=True))
    bare = replace(sample, extra={})
    with pytest.raises(DataError, match="no domain knowledge"):
        build_prompt(bare, name, domain_knowledge=True)


def test_more_shots_than_templates_is_an_error(sample: Sample) -> None:
    with pytest.raises(DataError, match=f"{sample.id}: a 5-shot prompt needs 5"):
        build_prompt(sample, "mmad_eval", k_shot=5)


def test_bad_name_or_k_is_refused(sample: Sample) -> None:
    with pytest.raises(ValueError, match="anomalyr1"):
        build_prompt(sample, "nope")
    with pytest.raises(ValueError, match="k_shot"):
        build_prompt(sample, "anomalyr1", k_shot=-1)

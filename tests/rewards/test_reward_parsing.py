"""Tag blocks, the think/answer layout and the choice extractors."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anomalyr1.rewards.parsing import (
    ANSWER,
    THINK,
    answer_region,
    extract_choice,
    extract_choice_reference,
    extract_choice_strict,
    has_think_answer_pair,
    is_exact_format,
    last_block,
)

TAG_CHUNKS = ["<think>", "</think>", "<answer>", "</answer>", "x", "B", " ", "\n", "<", ">", "/", "think"]
tag_text = st.lists(st.sampled_from(TAG_CHUNKS), max_size=14).map("".join)


# --- blocks and layout: checked against the reference's regexes on tag-laden strings ---


@settings(max_examples=300, deadline=None)
@given(tag_text)
def test_last_block_equals_last_findall_match(text: str) -> None:
    for open_tag, close_tag in (THINK, ANSWER):
        matches = re.findall(f"{open_tag}(.*?){close_tag}", text, re.DOTALL)
        assert last_block(text, (open_tag, close_tag)) == (matches[-1] if matches else None)


@settings(max_examples=300, deadline=None)
@given(tag_text)
def test_pair_check_equals_reference_regex(text: str) -> None:
    expected = re.search(r"<think>(.*?)</think>\s*<answer>(.*?)</answer>", text, re.DOTALL) is not None
    assert has_think_answer_pair(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<think>a<think>b</think>", "a<think>b"),  # findall starts at the first open tag
        ("<think>a</think>b</think>", "a"),  # a stray close tag does not extend the block
        ("</think><think>a</think>", "a"),
        ("<think>x</think><think>y", "x"),  # an unclosed block is not a block
        ("<think></think>", ""),
        ("no tags", None),
    ],
)
def test_last_block_cases(text: str, expected: str | None) -> None:
    assert last_block(text, THINK) == expected


def test_answer_region_falls_back_to_the_whole_text() -> None:
    assert answer_region("<answer>1</answer> <answer>2</answer>") == "2"
    assert answer_region("just B") == "just B"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<think>r</think><answer>B</answer>", True),
        ("  \n<think>r</think>\n <answer>B</answer>\n", True),
        ("<think></think><answer></answer>", True),
        ("x<think>r</think><answer>B</answer>", False),
        ("<think>r</think><answer>B</answer>x", False),
        ("<think>r</think>so<answer>B</answer>", False),
        ("<answer>B</answer><think>r</think>", False),
        ("<think>r<answer>A</answer></think><answer>B</answer>", False),
        ("<think>r</think><answer>B</answer><answer>B</answer>", False),
        ("<think>r</think>", False),
    ],
)
def test_exact_format(text: str, expected: bool) -> None:
    assert is_exact_format(text) is expected


# --- the reference extractor ---


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", None),
        ("   \n", None),
        ("B", "B"),
        ("B.", "B"),
        (" C \n", "C"),  # stripped first, like the reference's blocks
        ("b", "b"),  # short texts are returned as written, not upper-cased
        ("1", "1"),
        (".", None),
        ("AB", "A"),  # under 3 characters: first character
        ("(C)", "C"),
        ("AB.", "B"),  # "AB" gives two candidates; the period lifts B
        ("The answer is C", "C"),
        ("The answer is E", None),  # only A-D
        ("Bottle", None),  # B followed by a lowercase letter is not a candidate
        ("A or B", "B"),  # past 70% of the text: +2
        ("A B", "A"),  # tie: the first candidate seen
        ("B A", "B"),
        ("answer: A, or B", "B"),  # lower-case keywords do not count
        # Upper-case ANSWER counts, and its own A is a candidate occurrence: A scores
        # (keyword + comma) once per occurrence, 2 x 2 = 4, against B's 1 + 2 = 3.
        ("ANSWER: A, or B", "A"),
        # B is scored at its last occurrence by plain search, the B of "Bob", which lies
        # past 70%; scored at its standalone position it would lose to "A.".
        ("B or A. Bob", "B"),
        ("A" + " x" * 15 + " 答案是B。" + " x" * 30, "B"),  # Chinese keywords, 。
        ("A" + " x" * 15 + " 这里B" + " x" * 30, "A"),  # same without keyword or punctuation: tie
        ("The   answer\n\n is\tD", "D"),
        # the keyword window is text[pos-20 : pos+20]: 20 characters before, 19 after
        ("A-----B" + "-" * 18 + "是" + "-" * 40, "B"),
        ("A-----B" + "-" * 19 + "是" + "-" * 40, "A"),
        ("A" + "-" * 30 + "是" + "-" * 19 + "B" + "-" * 60, "B"),
        ("A" + "-" * 30 + "是" + "-" * 20 + "B" + "-" * 60, "A"),
    ],
)
def test_reference_extractor(text: str, expected: str | None) -> None:
    assert extract_choice_reference(text) == expected
    assert extract_choice(text) == expected  # the default


_KEYWORDS = ["answer", "correct", "choose", "select", "right", "think", "believe", "should",
             "答案", "选择", "正确", "是", "对", "认为", "应该", "觉得"]


def _reference_oracle(text: str) -> str | None:
    """The reference rules transcribed literally, quadratic loop over every occurrence included."""
    text = re.sub(r"\s+", " ", text.strip())
    if not text:
        return None
    if len(text) < 3:
        text = re.sub(r"[^\w\s]", "", text)
        return text[0] if text else None
    candidates = re.findall(r"(?<![a-z])([A-D])(?![a-z])", text)
    if not candidates:
        return None
    if len(candidates) == 1:
        return candidates[0]
    scores = {c: 0 for c in candidates}
    for c in candidates:
        pos = text.rfind(c)
        context = text[max(0, pos - 20):min(len(text), pos + 20)]
        scores[c] += sum(k.upper() in context for k in _KEYWORDS)
        if pos > len(text) * 0.7:
            scores[c] += 2
        if pos < len(text) - 1 and text[pos + 1] in "。.!！,，":
            scores[c] += 1
    return max(scores.items(), key=lambda item: item[1])[0]


EXTRACTOR_CHUNKS = ["A", "B", "C", "D", "E", "a", "b", " ", "  ", "\n", ".", ",", "，", "。", "(", ")",
                    "ANSWER", "answer", "is", "x", "Bob", "答案", "是", "SHOULD"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(EXTRACTOR_CHUNKS), max_size=30).map("".join))
def test_reference_extractor_matches_literal_transcription(text: str) -> None:
    assert extract_choice_reference(text) == _reference_oracle(text)


# --- the strict extractor ---


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", None),
        ("b", "B"),
        ("(c)", "C"),
        ("E.", "E"),
        ("AB", None),
        ("ANSWER", None),
        ("Bottle", None),
        ("答案是B", "B"),
        ("The answer is E", "E"),
        ("A B", "B"),  # tie: the later letter
        ("B or A. Bob", "A"),  # letters inside words are ignored
        ("I think the answer is A, " + "x " * 20 + "not B", "A"),  # lower-case keywords count
        ("the option C_1 or D", "D"),
    ],
)
def test_strict_extractor(text: str, expected: str | None) -> None:
    assert extract_choice_strict(text) == expected
    assert extract_choice(text, "strict") == expected

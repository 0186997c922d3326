"""Reading completions: tag blocks, the think-then-answer layout, and the option letter a text
concludes.

Everything here runs on raw model output during training, so it must be linear-ish in the
input (a 1 MB completion finishes in milliseconds): blocks are located with str.find/rfind,
never with `.*` regexes that can backtrack quadratically.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Callable, Literal

THINK = ("<think>", "</think>")
ANSWER = ("<answer>", "</answer>")

Extractor = Literal["reference", "strict"]

_JUNCTION = re.compile(r"</think>\s*<answer>")
_PUNCTUATION = re.compile(r"[^\w\s]")
_NON_ALNUM = re.compile(r"[\W_]")
_REFERENCE_CANDIDATE = re.compile(r"(?<![a-z])[A-D](?![a-z])")
_STRICT_CANDIDATE = re.compile(r"(?<![A-Za-z0-9_])[A-E](?![A-Za-z0-9_])")

_KEYWORDS = (
    "answer", "correct", "choose", "select", "right", "think", "believe", "should",
    "答案", "选择", "正确", "是", "对", "认为", "应该", "觉得",
)
_REFERENCE_KEYWORDS = tuple(k.upper() for k in _KEYWORDS)
_CLOSERS = frozenset(".!,。！，")
_WINDOW = 20
_LATE = 0.7


def last_block(text: str, tags: tuple[str, str]) -> str | None:
    """Content of the last `open..close` block, exactly as `re.findall(open(.*?)close, DOTALL)[-1]`
    would give it (the reference's reading), or None when there is no complete block.

    findall scans left to right without overlap, so its last match is the one holding the
    last open tag that still has a close tag after it; that match starts at the first open
    tag after the preceding close tag (or text start) and ends at the first close tag after
    the last open tag. Four searches instead of a scan.
    """
    open_tag, close_tag = tags
    last_close = text.rfind(close_tag)
    if last_close < 0:
        return None
    last_open = text.rfind(open_tag, 0, last_close)
    if last_open < 0:
        return None
    previous_close = text.rfind(close_tag, 0, last_open)
    start = text.find(open_tag, previous_close + len(close_tag) if previous_close >= 0 else 0)
    end = text.find(close_tag, last_open + len(open_tag))
    return text[start + len(open_tag):end]


def has_think_answer_pair(text: str) -> bool:
    """Whether `<think>.*?</think>\\s*<answer>.*?</answer>` (DOTALL) occurs anywhere: the
    reference's gate for ROAM and accuracy. The earliest `</think>\\s*<answer>` junction
    after the first `<think>` is the one most likely to have a `</answer>` after it."""
    first_open = text.find(THINK[0])
    if first_open < 0:
        return False
    junction = _JUNCTION.search(text, first_open + len(THINK[0]))
    return junction is not None and text.find(ANSWER[1], junction.end()) >= 0


def is_exact_format(text: str) -> bool:
    """Whether the text is exactly `<think>..</think>` then `<answer>..</answer>`, whitespace
    allowed only around and between them, and no tag anywhere else."""
    stripped = text.strip()
    if not (stripped.startswith(THINK[0]) and stripped.endswith(ANSWER[1])):
        return False
    if any(stripped.count(tag) != 1 for tag in (*THINK, *ANSWER)):
        return False
    think_end = stripped.find(THINK[1])
    answer_start = stripped.find(ANSWER[0])
    return think_end < answer_start and not stripped[think_end + len(THINK[1]):answer_start].strip()


def answer_region(text: str) -> str:
    """The last answer block, or the whole text when the model wrote none."""
    block = last_block(text, ANSWER)
    return text if block is None else block


def same_letter(letter: str | None, answer: str, case_sensitive: bool = False) -> bool:
    if letter is None:
        return False
    if case_sensitive:
        return letter == answer
    return letter.upper() == answer.upper()


def _normalize_whitespace(text: str) -> str:
    """Strip, and make each whitespace run one space (str.split's whitespace is re's \\s)."""
    return " ".join(text.split())


def _occurrence_score(text: str, pos: int, keywords: tuple[str, ...], fold_case: bool) -> int:
    """The reference's evidence that the letter at `pos` is the conclusion: keywords in the
    window text[pos-20 : pos+20] (20 characters before, the letter and 19 after), +2 past 70%
    of the text, +1 when a closing punctuation mark follows."""
    window = text[max(0, pos - _WINDOW):pos + _WINDOW]
    if fold_case:
        window = window.lower()
    score = sum(keyword in window for keyword in keywords)
    if pos > len(text) * _LATE:
        score += 2
    if pos + 1 < len(text) and text[pos + 1] in _CLOSERS:
        score += 1
    return score


def extract_choice_reference(text: str) -> str | None:
    """The letter the text concludes, by the heuristic the AnomalyR1 reference trained with.

    Interpretation, where a prose description of it is ambiguous (matches the reference code):
    - The text is stripped first (the reference strips every block before extracting), then
      whitespace runs become one space. Empty -> None.
    - Under 3 characters: characters that are neither word characters (Unicode `\\w`, digits
      and `_` included) nor whitespace are dropped and the first remaining character is
      returned as is: "B." -> "B", "b" -> "b" (not upper-cased), "1" -> "1"; "." -> None.
    - Candidates: every A-D not adjacent to a lowercase a-z, so "AB" yields A and B, "ANSWER"
      yields A, and "Bottle" yields nothing. Only upper-case ANSWER, CORRECT, ... count as
      keywords (they are compared against the text as written).
    - One distinct candidate: it. Several: each distinct letter is scored at its last
      occurrence found by a plain search (even inside a word: the A of a trailing "ANSWER"),
      and that score counts once per candidate occurrence of the letter (the reference adds
      it in a loop over all occurrences), so a letter named three times scores 3x. Highest
      total wins; on a tie the letter that first appeared as a candidate.
    """
    text = _normalize_whitespace(text)
    if not text:
        return None
    if len(text) < 3:
        bare = _PUNCTUATION.sub("", text)
        return bare[0] if bare else None
    counts = Counter(_REFERENCE_CANDIDATE.findall(text))
    if len(counts) <= 1:
        return next(iter(counts), None)
    totals = {
        letter: n * _occurrence_score(text, text.rfind(letter), _REFERENCE_KEYWORDS, fold_case=False)
        for letter, n in counts.items()
    }
    return max(totals, key=totals.__getitem__)


def extract_choice_strict(text: str) -> str | None:
    """A cleaner reading than the reference, not what the paper trained with.

    - Whitespace-normalized and stripped; a text that is a single letter A-E once
      non-word characters are dropped ("(c)", "B.", "e") gives that letter, upper-cased.
    - Otherwise candidates are upper-case A-E standing alone (not next to an ASCII letter,
      digit or `_`), so "AB", "ANSWER" and "Bottle" give none while "答案是B" gives B.
    - Several distinct candidates: each is scored once at its last standalone occurrence with
      the reference's window/position/punctuation rule, keywords matched case-insensitively.
      Ties go to the letter that occurs last, as conclusions come at the end.
    """
    text = _normalize_whitespace(text)
    bare = _NON_ALNUM.sub("", text)
    if len(bare) == 1 and bare.upper() in "ABCDE":
        return bare.upper()
    last_pos = {match.group(): match.start() for match in _STRICT_CANDIDATE.finditer(text)}
    if len(last_pos) <= 1:
        return next(iter(last_pos), None)
    return max(
        last_pos,
        key=lambda letter: (_occurrence_score(text, last_pos[letter], _KEYWORDS, fold_case=True), last_pos[letter]),
    )


EXTRACTORS: dict[str, Callable[[str], str | None]] = {
    "reference": extract_choice_reference,
    "strict": extract_choice_strict,
}


def extract_choice(text: str, extractor: Extractor = "reference") -> str | None:
    return EXTRACTORS[extractor](text)


def check_extractor(extractor: str) -> None:
    """Fail at construction, not at the first scored completion, on an unknown extractor."""
    if extractor not in EXTRACTORS:
        raise ValueError(f"extractor must be one of {sorted(EXTRACTORS)}, got {extractor!r}")

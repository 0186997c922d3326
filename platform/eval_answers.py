"""Completions -> MMAD answer records -> metrics: the parts of evaluation that need no Ray.

A model that ignores the requested format still gets the credit it earned when its meaning is
clear, so the letter is read in decreasing order of explicitness: the last <answer> block, else
a standalone letter in the text, else the option whose text the answer spells out.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable

from anomalyr1.data_pipelines.schema import QUESTION_TYPES, Sample
from anomalyr1.data_pipelines.scoring import AVERAGE, MMADScores, score_answers
from anomalyr1.rewards.parsing import ANSWER, answer_region, extract_choice_strict

_WORDS = re.compile(r"[^0-9a-z]+")
_REFERENCE_LETTER = re.compile(r"[A-E]")
ANSWERS_FILE = "answers.json"
TABLE_FILE = "table.json"
EVALS_DIR = "evals"
"""Evaluation during training writes <output_dir>/evals/step_N/{answers,table}.json."""


def choose_letter(text: str, options: dict[str, str]) -> str | None:
    """The option letter a completion concludes, or None when it names none.

    The region read is the last <answer> block when there is one, else the whole text. In it:
    the letter `extract_choice_strict` finds (standalone A-E, a late or keyword-marked one
    winning) when it is one of the options; else the option whose text occurs in the region as
    whole words, the longest winning ("top left" over "left"); else the letter found even if it
    is not an option (MMAD scores it as wrong)."""
    region = answer_region(text)
    letter = extract_choice_strict(region)
    if letter in options:
        return letter
    said = f" {_normalise(region)} "
    spelled = [(len(norm), key) for key, value in options.items() if (norm := _normalise(value)) and f" {norm} " in said]
    if spelled:
        return max(spelled)[1]
    return letter


def reference_letter(text: str, options: dict[str, str]) -> str | None:
    """The AnomalyR1 reference's reading (eval/thinkad_query.py, extract_answer_letter): the text
    between the last <answer> and the last </answer> (nothing when the last <answer> comes after
    the last </answer>), stripped; in it the first upper-case A-E anywhere, even inside a word
    ("Bottle" reads B); else the first option whose text occurs in it, case folded; else none
    (the reference writes "X", which MMAD's scoring also leaves out)."""
    start, end = text.rfind(ANSWER[0]), text.rfind(ANSWER[1])
    answer = text[start + len(ANSWER[0]):end].strip() if 0 <= start < end else ""
    if not answer:
        return None
    letter = _REFERENCE_LETTER.search(answer)
    if letter:
        return letter.group()
    return next((key for key, value in options.items() if value.lower() in answer.lower()), None)


LetterReader = Callable[[str, dict[str, str]], "str | None"]


def _normalise(text: str) -> str:
    return _WORDS.sub(" ", text.lower()).strip()


def answer_record(
    sample: Sample, text: str, input_size: tuple[int, int] | None = None, reader: LetterReader = choose_letter
) -> dict[str, Any]:
    """One record of MMAD's answer format (its letter read by `reader`), plus the dataset and the
    full response, what a report needs to show the question (options, category, the image file
    and its ground truth), and the (width, height) the model saw the query image at when known:
    boxes in the response are in those pixels, and `anomalyr1 masks` rescales them with it."""
    record: dict[str, Any] = {
        "image": sample.id.rsplit("#", 1)[0],
        "question": sample.question,
        "question_type": sample.question_type,
        "correct_answer": sample.answer,
        "gpt_answer": reader(text, sample.options),
        "dataset": sample.dataset,
        "response": text,
        "options": sample.options,
        "category": sample.category,
        "defect_type": sample.defect_type,
        "image_path": sample.image,
        "bbox": list(sample.bbox) if sample.bbox is not None else None,
        "mask_path": sample.mask_path,
    }
    if input_size is not None:
        record["input_size"] = list(input_size)
    return record


def write_answers(out: Path, records: list[dict]) -> MMADScores:
    """out/answers.json (the records) and out/table.json (their MMAD table); returns the table."""
    out.mkdir(parents=True, exist_ok=True)
    (out / ANSWERS_FILE).write_text(json.dumps(records, indent=1))
    scores = score_answers(records)
    (out / TABLE_FILE).write_text(json.dumps(scores.to_json(), indent=1))
    return scores


def metric_name(column: str) -> str:
    return "eval/" + column.lower().replace(" ", "_")


def eval_metrics(scores: MMADScores) -> dict[str, float]:
    """eval/<question type> and eval/average from the table's Average row (types without
    questions are absent), and eval/unparsed: the share of answers without a letter."""
    row = scores.table[AVERAGE]
    metrics = {metric_name(column): row[column] for column in (*QUESTION_TYPES, AVERAGE) if row[column] is not None}
    total = scores.scored + scores.left_out
    metrics["eval/unparsed"] = scores.left_out / total if total else 0.0
    return metrics

"""The MMAD table from an answers file: accuracy per dataset and question type.

Answers come in MMAD's own answer format, so tables from this platform and from MMAD's scripts
(or anyone's answers file) are computed the same way: a JSON list of records with `image`
(path relative to the MMAD root), `question`, `question_type`, `correct_answer` and
`gpt_answer`, plus an optional `dataset` (default: the first part of `image`).

Where this differs from MMAD's `caculate_accuracy_mmad`: MMAD writes 0 into a cell that has no
questions and averages it in; here such a cell is None (null in JSON, `-` in text) and left out
of every mean, so a subset (one dataset without localization questions, a held-out slice) is
not scored as if the model had failed questions it never saw. Likewise an Anomaly Detection cell
with only normal or only abnormal images is the accuracy on the side that is present.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from anomalyr1.data_pipelines.errors import DataError
from anomalyr1.data_pipelines.mmad import FOLDED_TYPES, read_json
from anomalyr1.data_pipelines.schema import NORMAL_DEFECT, OPTION_LETTERS, QUESTION_TYPES

AVERAGE = "Average"
COLUMNS = (*QUESTION_TYPES, AVERAGE)
ANOMALY_DETECTION = QUESTION_TYPES[0]
REQUIRED_KEYS = ("image", "question_type", "correct_answer", "gpt_answer")

Table = dict[str, dict[str, float | None]]
"""row (a dataset, then "Average") -> column (COLUMNS) -> accuracy in percent, None if no questions."""


@dataclass(frozen=True)
class MMADScores:
    table: Table
    scored: int
    """Answers that count: gpt_answer is one of A-E."""
    left_out: int
    """Answers whose gpt_answer is not a letter A-E (the model gave no readable choice)."""

    def to_json(self) -> dict[str, Any]:
        return {"table": self.table, "scored": self.scored, "left_out": self.left_out}

    def render(self) -> str:
        lines = render_table(self.table, COLUMNS)
        lines.append(f"{self.scored} answers scored, {self.left_out} left out (answer not a letter A-E)")
        return "\n".join(lines)


def render_table(table: Mapping[str, Mapping[str, float | int | None]], columns: Sequence[str]) -> list[str]:
    """A table as aligned text lines: a header, then one line per row; a float cell with two
    decimals, an int as it is, a missing one as `-`."""
    first = max(len(row) for row in table)
    widths = [max(len(column), 6) for column in columns]
    lines = ["  ".join([" " * first, *(c.rjust(w) for c, w in zip(columns, widths))])]
    for row, cells in table.items():
        values = ("-" if cells[c] is None else str(cells[c]) if isinstance(cells[c], int) else f"{cells[c]:.2f}" for c in columns)
        lines.append("  ".join([row.ljust(first), *(v.rjust(w) for v, w in zip(values, widths))]))
    return lines


def read_answers(path: str | Path) -> list[Any]:
    """The records of an answers file; `score_answers(records, source=path)` checks each one."""
    records = read_json(path)
    if not isinstance(records, list):
        raise DataError(f"{path}: expected a JSON list of answer records, got {type(records).__name__}")
    return records


def _check(record: Any, where: str) -> None:
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected an object, got {type(record).__name__}")
    for key in REQUIRED_KEYS:
        if key not in record:
            raise DataError(f"{where}: missing key {key!r} (an answer needs {', '.join(REQUIRED_KEYS)})")
    for key in ("image", "question_type", "correct_answer", *(("dataset",) if "dataset" in record else ())):
        if not isinstance(record[key], str) or not record[key]:
            raise DataError(f"{where}: {key} must be a non-empty string, got {record[key]!r}")
    if FOLDED_TYPES.get(record["question_type"], record["question_type"]) not in QUESTION_TYPES:
        raise DataError(f"{where}: unknown question_type {record['question_type']!r} "
                        f"(expected one of {list(QUESTION_TYPES)}, Object Structure or Object Details)")
    if record["correct_answer"] not in OPTION_LETTERS:
        raise DataError(f"{where}: correct_answer {record['correct_answer']!r} is not a letter A-E")


def is_normal(image: str) -> bool:
    """MMAD's scorer calls an image normal when `good` occurs in its path; so does this."""
    return NORMAL_DEFECT in image


def score_answers(answers: Sequence[Mapping[str, Any]], source: str = "answers") -> MMADScores:
    """The MMAD table. gpt_answer must be exactly one letter A-E (as MMAD's scorer requires);
    anything else is left out and counted. A malformed record is an error naming
    `source[index]` and the key at fault."""
    # (dataset, column) -> [correct, total]; Anomaly Detection is kept per side (normal, abnormal)
    counts: dict[tuple[str, str], list[int]] = {}
    datasets: list[str] = []
    left_out = 0
    for index, record in enumerate(answers):
        _check(record, f"{source}[{index}]")
        dataset = record.get("dataset") or record["image"].split("/", 1)[0]
        if dataset not in datasets:
            datasets.append(dataset)
        if record["gpt_answer"] not in tuple(OPTION_LETTERS):
            left_out += 1
            continue
        column = FOLDED_TYPES.get(record["question_type"], record["question_type"])
        if column == ANOMALY_DETECTION:
            column += "/normal" if is_normal(record["image"]) else "/abnormal"
        cell = counts.setdefault((dataset, column), [0, 0])
        cell[0] += record["gpt_answer"] == record["correct_answer"]
        cell[1] += 1

    def accuracy(dataset: str, column: str) -> float | None:
        if column == ANOMALY_DETECTION:
            return mean_present([accuracy(dataset, f"{column}/{side}") for side in ("normal", "abnormal")])
        correct, total = counts.get((dataset, column), (0, 0))
        return 100.0 * correct / total if total else None

    table: Table = {}
    for dataset in datasets:
        row = {column: accuracy(dataset, column) for column in QUESTION_TYPES}
        table[dataset] = {**row, AVERAGE: mean_present(list(row.values()))}
    table[AVERAGE] = {column: mean_present([table[d][column] for d in datasets]) for column in COLUMNS}
    return MMADScores(table=table, scored=sum(total for _, total in counts.values()), left_out=left_out)


def mean_present(values: Sequence[float | None]) -> float | None:
    """The mean of the values that are not None; None when there are none."""
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None

"""The MMAD table against one computed by hand, and clear errors for broken answers files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from anomalyr1.data_pipelines.errors import DataError
from anomalyr1.data_pipelines.scoring import AVERAGE, COLUMNS, read_answers, score_answers


def answer(image: str, kind: str, correct: str, given, **extra) -> dict:
    return {"image": image, "question": "q", "question_type": kind, "correct_answer": correct, "gpt_answer": given, **extra}


GOOD, BAD = "D1/cat/image/good/000.png", "D1/cat/image/crack/000.png"
ANSWERS = [
    # D1. Anomaly Detection: normal 1 of 2 (50), abnormal 1 of 1 (100) -> 75
    answer(GOOD, "Anomaly Detection", "B", "B"),
    answer(GOOD, "Anomaly Detection", "B", "A"),
    answer(BAD, "Anomaly Detection", "A", "A"),
    # Defect Classification 3 of 4 -> 75
    answer(BAD, "Defect Classification", "A", "A"),
    answer(BAD, "Defect Classification", "C", "C"),
    answer(BAD, "Defect Classification", "D", "D"),
    answer(BAD, "Defect Classification", "D", "B"),
    # Object Structure right + Object Details wrong fold into Object Analysis -> 50
    answer(GOOD, "Object Structure", "A", "A"),
    answer(GOOD, "Object Details", "A", "C"),
    # no readable letter: left out, so D1 has no Defect Localization cell
    answer(BAD, "Defect Localization", "A", "X"),
    answer(BAD, "Defect Localization", "A", None),
    # D2 by its explicit dataset key (the path starts elsewhere); only abnormal images: 1 of 2 -> 50
    answer("elsewhere/cat/image/hole/000.png", "Anomaly Detection", "A", "A", dataset="D2"),
    answer("elsewhere/cat/image/hole/001.png", "Anomaly Detection", "A", "B", dataset="D2"),
    # Defect Localization 0 of 1 -> 0
    answer("elsewhere/cat/image/hole/000.png", "Defect Localization", "B", "A", dataset="D2"),
]


def test_table_matches_the_hand_computed_one() -> None:
    scores = score_answers(ANSWERS)
    d1 = {"Anomaly Detection": 75.0, "Defect Classification": 75.0, "Object Analysis": 50.0}
    d2 = {"Anomaly Detection": 50.0, "Defect Localization": 0.0}
    expected = {
        "D1": {**d1, AVERAGE: (75 + 75 + 50) / 3},
        "D2": {**d2, AVERAGE: 25.0},
        AVERAGE: {"Anomaly Detection": 62.5, "Defect Classification": 75.0, "Defect Localization": 0.0,
                  "Object Analysis": 50.0, AVERAGE: ((75 + 75 + 50) / 3 + 25) / 2},
    }
    assert list(scores.table) == ["D1", "D2", AVERAGE]
    for row, cells in expected.items():
        assert list(scores.table[row]) == list(COLUMNS)
        for column in COLUMNS:
            assert scores.table[row][column] == pytest.approx(cells.get(column)), (row, column)
    assert (scores.scored, scores.left_out) == (12, 2)


def test_json_and_text_forms() -> None:
    scores = score_answers(ANSWERS)
    assert json.loads(json.dumps(scores.to_json()))["table"]["D2"]["Defect Classification"] is None
    text = scores.render()
    lines = text.splitlines()
    assert all(column in lines[0] for column in COLUMNS)
    assert lines[1].startswith("D1") and lines[3].startswith(AVERAGE)
    assert "66.67" in lines[1] and "-" in lines[2].split()
    assert "12 answers scored, 2 left out" in text


@pytest.mark.parametrize("change, message", [
    (lambda r: r.pop("gpt_answer"), "missing key 'gpt_answer'"),
    (lambda r: r.update(correct_answer="F"), "correct_answer 'F' is not a letter A-E"),
    (lambda r: r.update(question_type="Colour"), "unknown question_type 'Colour'"),
    (lambda r: r.update(image=""), "image must be a non-empty string"),
    (lambda r: r.update(dataset=3), "dataset must be a non-empty string"),
])
def test_a_broken_record_is_named(tmp_path: Path, change, message: str) -> None:
    records = [dict(r) for r in ANSWERS]
    change(records[4])
    path = tmp_path / "answers.json"
    path.write_text(json.dumps(records))
    with pytest.raises(DataError) as error:
        score_answers(read_answers(path), source=str(path))
    assert f"{path}[4]" in str(error.value) and message in str(error.value)


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ('{"image": "a"}', "expected a JSON list of answer records"),
])
def test_a_broken_file_is_named(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "answers.json"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        read_answers(path)
    with pytest.raises(DataError, match="file not found"):
        read_answers(tmp_path / "missing.json")

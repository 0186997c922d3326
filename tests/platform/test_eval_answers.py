"""Reading the chosen letter from a completion, and the records and metrics built from it."""

from __future__ import annotations

import pytest

from anomalyr1.data_pipelines.schema import Sample
from anomalyr1.data_pipelines.scoring import score_answers
from anomalyr1.platform.eval_answers import answer_record, choose_letter, eval_metrics, reference_letter

YES_NO = {"A": "Yes", "B": "No"}
REGIONS = {"A": "left", "B": "top-left", "C": "center", "D": "bottom"}


@pytest.mark.parametrize("text, options, expected", [
    ("<think>A looks fine, but the rim is cracked</think><answer>B</answer>", REGIONS, "B"),  # the answer block wins
    ("<answer>A</answer> ... <answer>C</answer>", REGIONS, "C"),  # the last block
    ("The answer is C.", REGIONS, "C"),  # no block: a standalone letter
    ("B", YES_NO, "B"),
    ("<answer>Yes</answer>", YES_NO, "A"),  # no letter: the option spelled out
    ("The defect is in the top left corner.", REGIONS, "B"),  # the longest option text that occurs wins
    ("It sits on the left side", REGIONS, "A"),
    ("<think>B</think><answer>no defect</answer>", YES_NO, "B"),
    ("E", YES_NO, "E"),  # a letter that is no option is still the model's choice (scored wrong)
    ("leftover bottles", REGIONS, None),  # option words only inside other words do not count
    ("", YES_NO, None),
])
def test_choose_letter(text: str, options: dict, expected: str | None) -> None:
    assert choose_letter(text, options) == expected


def _sample(image: str, kind: str, answer: str = "A") -> Sample:
    dataset = image.split("/", 1)[0]
    return Sample(id=f"{image}#0", image=f"/data/{image}", question="Is there any defect?", options=YES_NO,
                  answer=answer, question_type=kind, dataset=dataset, category="cat",
                  defect_type="good" if "/good/" in image else "hole")


def test_answer_record_is_mmad_format() -> None:
    record = answer_record(_sample("D/cat/image/hole/000.png", "Anomaly Detection"), "<answer>Yes</answer>")
    assert record == {"image": "D/cat/image/hole/000.png", "question": "Is there any defect?",
                      "question_type": "Anomaly Detection", "correct_answer": "A", "gpt_answer": "A",
                      "dataset": "D", "response": "<answer>Yes</answer>",
                      # for the report's gallery: the question as shown, the image file and its truth
                      "options": YES_NO, "category": "cat", "defect_type": "hole",
                      "image_path": "/data/D/cat/image/hole/000.png", "bbox": None, "mask_path": None}


def test_eval_metrics_from_the_average_row() -> None:
    records = [
        answer_record(_sample("D/cat/image/hole/000.png", "Anomaly Detection"), "A"),  # right (abnormal 100)
        answer_record(_sample("D/cat/image/good/000.png", "Anomaly Detection", "B"), "A"),  # wrong (normal 0)
        answer_record(_sample("E/cat/image/hole/000.png", "Object Classification"), "A"),  # right
        answer_record(_sample("E/cat/image/hole/001.png", "Object Classification"), "???"),  # unparsed
    ]
    metrics = eval_metrics(score_answers(records))
    assert metrics == {"eval/anomaly_detection": 50.0, "eval/object_classification": 100.0,
                       "eval/average": 75.0, "eval/unparsed": 0.25}


def test_answer_record_carries_the_model_input_size_boxes_are_in() -> None:
    record = answer_record(_sample("D/cat/image/hole/000.png", "Defect Localization"), "[1, 2, 3, 4]", (448, 336))
    assert record["input_size"] == [448, 336] and record["response"] == "[1, 2, 3, 4]"


@pytest.mark.parametrize("text, options, expected", [
    ("<think>A is wrong</think><answer>B</answer>", YES_NO, "B"),
    ("<answer>A</answer> then <answer> b. No </answer>", YES_NO, "B"),  # the last block; no A-E in it, "no" spells B
    ("<answer>The Bottle is fine</answer>", YES_NO, "B"),  # the first upper-case A-E, even inside a word
    ("<answer>no</answer>", YES_NO, "B"),  # option text, case folded
    ("<answer>yes, no doubt</answer>", YES_NO, "A"),  # the first option whose text occurs
    ("<answer>  </answer>", YES_NO, None),
    ("<answer>B", YES_NO, None),  # no closing tag: nothing read
    ("<answer>A</answer><answer>C", REGIONS, None),  # the last <answer> after the last </answer>
    ("The answer is C.", REGIONS, None),  # no block: the reference reads nothing
])
def test_reference_letter(text: str, options: dict, expected: str | None) -> None:
    assert reference_letter(text, options) == expected

"""Sample mappings for reward tests, shaped like `Sample.to_dict()` without importing the data
package (rewards only ever see a plain mapping)."""

from __future__ import annotations

from typing import Any


def make_sample(answer: str = "B", **overrides: Any) -> dict[str, Any]:
    sample: dict[str, Any] = {
        "id": "DS-MVTec/bottle/image/broken_large/000.png#0",
        "image": "/data/DS-MVTec/bottle/image/broken_large/000.png",
        "question": "Is there any defect in the object?",
        "options": {"A": "Yes", "B": "No", "C": "Maybe", "D": "Unsure"},
        "answer": answer,
        "question_type": "Anomaly Detection",
        "dataset": "DS-MVTec",
        "category": "bottle",
        "defect_type": "broken_large",
        "reference_images": (),
        "bbox": None,
        "mask_path": None,
        "reasoning": None,
        "extra": {},
    }
    sample.update(overrides)
    return sample


def think_answer(thinking: str, answer: str) -> str:
    return f"<think>{thinking}</think><answer>{answer}</answer>"

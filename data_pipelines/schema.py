"""The Sample: the one record every part of the platform exchanges.

Samples cross process boundaries (Ray object store) and reach user reward functions, which are
promised a plain Mapping; so a Sample is a small frozen dataclass with `to_dict`/`from_dict`
rather than a class with behaviour.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

OPTION_LETTERS = "ABCDE"
NORMAL_DEFECT = "good"

QUESTION_TYPES = (
    "Anomaly Detection",
    "Defect Classification",
    "Defect Localization",
    "Defect Description",
    "Defect Analysis",
    "Object Classification",
    "Object Analysis",
)


@dataclass(frozen=True)
class Sample:
    id: str
    """Unique within a dataset: the image path relative to the data root plus the question index."""
    image: str
    """Absolute path of the query image."""
    question: str
    options: dict[str, str]
    """Letter -> option text, letters consecutive from A."""
    answer: str
    """The correct letter, a key of `options`."""
    question_type: str
    """One of QUESTION_TYPES (MMAD's Object Structure / Object Details fold into Object Analysis)."""
    dataset: str
    category: str
    defect_type: str
    """`good` for a normal image."""
    reference_images: tuple[str, ...] = ()
    """Absolute paths of normal template images of the same category (MMAD's k-shot templates)."""
    bbox: tuple[float, float, float, float] | None = None
    """Ground-truth defect box [x1, y1, x2, y2] in image pixels, when known."""
    mask_path: str | None = None
    reasoning: str | None = None
    """A reference reasoning, for rewards that compare the model's reasoning with it."""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_normal(self) -> bool:
        return self.defect_type == NORMAL_DEFECT

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Sample":
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"Sample: unknown field(s) {sorted(unknown)}")
        values = dict(data)
        if values.get("reference_images") is not None:
            values["reference_images"] = tuple(values["reference_images"])
        if values.get("bbox") is not None:
            values["bbox"] = tuple(float(v) for v in values["bbox"])
        return cls(**values)

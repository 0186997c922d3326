"""Data in: MMAD-format sets (real or synthetic), few-shot selections and prompts, as Samples."""

from anomalyr1.data_pipelines.errors import DataError
from anomalyr1.data_pipelines.images import PAPER_MAX_PIXELS, load_image
from anomalyr1.data_pipelines.mmad import DataProblem, MMADLoad, load_mmad
from anomalyr1.data_pipelines.prompts import (
    PROMPTS,
    PromptSpec,
    build_prompt,
    format_options,
    shuffle_options,
)
from anomalyr1.data_pipelines.schema import Sample
from anomalyr1.data_pipelines.synthetic import ensure_synthetic_mmad, generate_synthetic_mmad

__all__ = [
    "DataError",
    "DataProblem",
    "MMADLoad",
    "PAPER_MAX_PIXELS",
    "PROMPTS",
    "PromptSpec",
    "Sample",
    "build_prompt",
    "ensure_synthetic_mmad",
    "format_options",
    "generate_synthetic_mmad",
    "load_image",
    "load_mmad",
    "shuffle_options",
]

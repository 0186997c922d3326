"""Data in: MMAD-format sets (real or synthetic), few-shot selections and prompts, as Samples."""

from anomalyr1.data_pipelines.errors import DataError
from anomalyr1.data_pipelines.fewshot import FewShotSet, FewShotSettings, load_fewshot, read_fewshot, select_fewshot
from anomalyr1.data_pipelines.hf_dataset import build_hf_dataset, load_hf_dataset
from anomalyr1.data_pipelines.holdout import split_held_out
from anomalyr1.data_pipelines.images import PAPER_MAX_PIXELS, PAPER_MAX_SIZE, load_image
from anomalyr1.data_pipelines.mmad import DataProblem, MMADLoad, load_mmad
from anomalyr1.data_pipelines.mvtec3d import convert_mvtec3d
from anomalyr1.data_pipelines.prompts import (
    PROMPTS,
    PromptSpec,
    build_prompt,
    format_options,
    shuffle_options,
)
from anomalyr1.data_pipelines.schema import Sample
from anomalyr1.data_pipelines.scoring import MMADScores, read_answers, score_answers
from anomalyr1.data_pipelines.synthetic import ensure_synthetic_mmad, generate_synthetic_mmad

__all__ = [
    "DataError",
    "DataProblem",
    "FewShotSet",
    "FewShotSettings",
    "MMADLoad",
    "MMADScores",
    "PAPER_MAX_PIXELS",
    "PAPER_MAX_SIZE",
    "PROMPTS",
    "PromptSpec",
    "Sample",
    "build_hf_dataset",
    "build_prompt",
    "convert_mvtec3d",
    "ensure_synthetic_mmad",
    "format_options",
    "generate_synthetic_mmad",
    "load_fewshot",
    "load_hf_dataset",
    "load_image",
    "load_mmad",
    "read_answers",
    "read_fewshot",
    "score_answers",
    "select_fewshot",
    "shuffle_options",
    "split_held_out",
]

"""Data in: MMAD-format sets (real or synthetic), few-shot selections and prompts, as Samples."""

from anomalyr1.data_pipelines.schema import Sample

__all__ = ["Sample"]

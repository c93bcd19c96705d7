"""Batch scoring: files of patients in, predictions (and explanations) out, every row
scored or rejected with its reason; locally in a stream (:mod:`.local`) or on Spark (:mod:`.spark`)."""

from .local import DEFAULT_CHUNK_SIZE, check_scoring_paths, score_files, scoring_paths
from .model_source import LoadedModel, load_model_for_scoring
from .spark import score_files_with_spark

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "LoadedModel",
    "check_scoring_paths",
    "load_model_for_scoring",
    "score_files",
    "score_files_with_spark",
    "scoring_paths",
]

"""Data in and out: cohort schemas, chunked reading, atomic writing, run summaries,
the register of seen ids and saved models."""

from .batch_io import iter_chunks, list_input_files
from .id_register import IdRegister
from .persistence import load_model, load_saved_model, save_model
from .run_summary import RunSummary, check_row_accounting
from .schema import ROW_NUMBER, CohortSchema, load_schema
from .schema_entries import FeatureSpec, OutcomeSpec
from .writing import (
    AtomicPath,
    AtomicTableWriter,
    check_output_paths,
    formula_safe,
    formula_safe_frame,
    write_json_atomically,
)

__all__ = [
    "AtomicPath",
    "AtomicTableWriter",
    "CohortSchema",
    "FeatureSpec",
    "IdRegister",
    "OutcomeSpec",
    "ROW_NUMBER",
    "RunSummary",
    "check_output_paths",
    "check_row_accounting",
    "formula_safe",
    "formula_safe_frame",
    "iter_chunks",
    "list_input_files",
    "load_model",
    "load_saved_model",
    "load_schema",
    "save_model",
    "write_json_atomically",
]

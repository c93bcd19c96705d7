"""Scored and rejected rows as Arrow tables, with the columns of the output spec."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from ..data.schema import ROW_NUMBER, CohortSchema
from ..model.conformal import DEFAULT_COVERAGE
from ..model.outputs import (
    PRED,
    TOP_CONTRIBUTION,
    TOP_FEATURE,
    column_values,
    output_columns,
    top_contributions,
)
from .model_source import LoadedModel, model_columns


def score_table(loaded: LoadedModel, valid: pd.DataFrame, inputs: np.ndarray | None, identity: dict, top_k: int,
                schema: pa.Schema) -> pa.Table:
    """The output rows of the valid rows, built as Arrow columns (class labels and the
    constant model columns dictionary-encoded: cheap to build and to write)."""
    model, n_rows = loaded.model, len(valid)
    columns = {
        ROW_NUMBER: pa.array(valid[ROW_NUMBER].to_numpy(dtype=np.int64)),
        loaded.schema.id_column: pa.Array.from_pandas(valid[loaded.schema.id_column]),
    }
    outputs = model.outputs_from_inputs(inputs) if n_rows else [None] * len(model.task_specs_)
    by_outcome = {spec.name: (spec, output) for spec, output in zip(model.task_specs_, outputs)}
    half_widths = model.interval_half_widths(DEFAULT_COVERAGE, inputs) if n_rows else {}
    contributions = None
    if top_k and n_rows:  # the features are selected (a copy) only when explanations are asked for
        contributions = top_contributions(model, valid[model_columns(model)], top_k)
    for column in output_columns(model, top_k):
        spec, output = by_outcome[column.outcome]
        field = schema.field(column.name)
        if not n_rows:
            columns[column.name] = pa.array([], type=field.type)
        elif column.part in (TOP_FEATURE, TOP_CONTRIBUTION):
            columns[column.name] = pa.array(contributions[column.name].to_numpy(), type=field.type)
        elif column.part == PRED and pa.types.is_dictionary(field.type):  # class labels as text
            columns[column.name] = pa.DictionaryArray.from_arrays(
                pa.array(np.argmax(output, axis=1).astype(np.int32)), pa.array([str(c) for c in spec.classes]))
        else:
            columns[column.name] = pa.array(column_values(column, spec, output, half_widths), type=field.type)
    for name in ("model_name", "model_version", "run_id"):
        columns[name] = _constant(identity[name], n_rows)
    columns["scored_at"] = pa.array(np.full(n_rows, identity["scored_at"], dtype="datetime64[us]"),
                                    type=schema.field("scored_at").type)
    return pa.table(columns, schema=schema)


def _constant(value: str | None, n_rows: int) -> pa.Array:
    indices = pa.array(np.zeros(n_rows, dtype=np.int32)) if value is not None else pa.nulls(n_rows, pa.int32())
    return pa.DictionaryArray.from_arrays(indices, pa.array([value if value is not None else ""], pa.string()))


def output_schema(loaded: LoadedModel, top_k: int) -> pa.Schema:
    id_type = pa.int64() if loaded.schema.id_type == "integer" else pa.string()  # ids are canonical (schema)
    text = pa.dictionary(pa.int32(), pa.string())
    fields = [pa.field(ROW_NUMBER, pa.int64()), pa.field(loaded.schema.id_column, id_type)]
    for column in output_columns(loaded.model, top_k):
        is_label = column.part == PRED and column.dtype == "string"
        fields.append(pa.field(column.name, text if is_label else pa.type_for_alias(column.type_name("arrow"))))
    fields += [pa.field(name, text) for name in ("model_name", "model_version", "run_id")]
    fields.append(pa.field("scored_at", pa.timestamp("us", tz="UTC")))
    return pa.schema(fields)


def reject_schema(schema: CohortSchema) -> pa.Schema:
    return pa.schema([
        pa.field(ROW_NUMBER, pa.int64()), pa.field("source_file", pa.string()),
        pa.field(schema.id_column, pa.string()), pa.field("n_problems", pa.int64()),
        pa.field("reasons", pa.string()),
    ])


def reject_rows(rejected: pd.DataFrame, id_column: str, path: Path) -> pd.DataFrame:
    """Rejected rows as the rejects file holds them: row number, source file, id as text, problems."""
    ids = rejected[id_column].astype(object).where(rejected[id_column].notna(), None)
    return pd.DataFrame({
        ROW_NUMBER: rejected[ROW_NUMBER].to_numpy(dtype=np.int64),
        "source_file": str(path),
        id_column: [None if value is None else _id_text(value) for value in ids],
        "n_problems": rejected["n_problems"].to_numpy(dtype=np.int64),
        "reasons": rejected["reasons"].to_numpy(dtype=object),
    })


def _id_text(value: object) -> str:
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)

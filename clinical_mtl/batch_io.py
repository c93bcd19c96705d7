"""Reading patient files in chunks and writing results atomically.

Inputs are CSV or Parquet files, or a folder of them (read in name order).
Parquet is read one batch of rows at a time and only the columns needed;
CSV is read in blocks with every column as text, so that one malformed cell
rejects its row instead of stopping the file (the schema parses the text).

Outputs are written under a temporary name in the destination folder and
renamed only when complete (``AtomicTableWriter``): a run that fails or is
killed leaves no file at the destination, only a ``.partial`` file.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from .schema import SchemaError

SUPPORTED = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}


def list_input_files(path: str | Path) -> list[Path]:
    """The input files: ``path`` itself, or the CSV/Parquet files of a folder in name order.

    Raises
    ------
    SchemaError
        If the path does not exist, is of an unsupported type, or is a folder
        without CSV or Parquet files.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in SUPPORTED and p.is_file())
        if not files:
            raise SchemaError(f"Input folder {path} holds no .csv or .parquet file.")
        return files
    if not path.exists():
        raise SchemaError(f"Input {path} does not exist.")
    if path.suffix.lower() not in SUPPORTED:
        raise SchemaError(f"Input {path} is not a .csv or .parquet file.")
    return [path]


def count_rows(path: Path) -> int | None:
    """Rows of a Parquet file from its footer (None for CSV, or if unreadable)."""
    if SUPPORTED[path.suffix.lower()] != "parquet":
        return None
    try:
        return pq.ParquetFile(path).metadata.num_rows
    except (pa.ArrowException, OSError):
        return None


def iter_chunks(
    path: Path, columns: Sequence[str], chunk_size: int, text_columns: Sequence[str] = ()
) -> Iterator[pd.DataFrame]:
    """Yield ``path`` as DataFrames of at most ``chunk_size`` rows, holding ``columns``.

    ``text_columns`` stored as text in Parquet are read as pandas categoricals
    (dictionary-encoded): far cheaper than one Python string per cell. Integer
    Parquet columns are read as pandas nullable integers, whether or not a
    chunk has missing values.

    Raises
    ------
    SchemaError
        If the file cannot be read (truncated, not Parquet/CSV), has no rows,
        or lacks some of ``columns`` (all missing columns are named).
    """
    n_rows = 0
    try:
        if SUPPORTED[path.suffix.lower()] == "parquet":
            chunks = _read_parquet(path, columns, chunk_size, text_columns)
        else:
            chunks = _read_csv(path, columns, chunk_size)
        for chunk in chunks:
            n_rows += len(chunk)
            yield chunk
    except (pa.ArrowException, OSError) as error:
        raise SchemaError(f"Cannot read {path}: {error}") from error
    if n_rows == 0:
        raise SchemaError(f"Input file {path} has no rows.")


def _read_parquet(path: Path, columns: Sequence[str], chunk_size: int,
                  text_columns: Sequence[str]) -> Iterator[pd.DataFrame]:
    parquet = pq.ParquetFile(path, pre_buffer=False)
    _check_columns(parquet.schema_arrow.names, columns, path)
    stored_as_text = [name for name in text_columns if pa.types.is_string(parquet.schema_arrow.field(name).type)]
    if stored_as_text:
        parquet = pq.ParquetFile(path, pre_buffer=False, read_dictionary=stored_as_text)
    for batch in parquet.iter_batches(batch_size=chunk_size, columns=list(columns)):
        yield batch.to_pandas(types_mapper=_NULLABLE_INTEGERS.get)


_NULLABLE_INTEGERS = {
    pa.int8(): pd.Int8Dtype(), pa.int16(): pd.Int16Dtype(), pa.int32(): pd.Int32Dtype(),
    pa.int64(): pd.Int64Dtype(), pa.uint8(): pd.UInt8Dtype(), pa.uint16(): pd.UInt16Dtype(),
    pa.uint32(): pd.UInt32Dtype(), pa.uint64(): pd.UInt64Dtype(),
}
"""Integer columns read as pandas nullable integers: a chunk with a missing value would
otherwise turn them into float64 (ids 1.0, 2.0; large ids rounded), so that a column's type
would depend on where the chunk boundaries fall."""


def _read_csv(path: Path, columns: Sequence[str], chunk_size: int) -> Iterator[pd.DataFrame]:
    header = pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=1 << 16))
    _check_columns(header.schema.names, columns, path)
    options = pacsv.ConvertOptions(
        include_columns=list(columns), column_types={name: pa.string() for name in columns},
        strings_can_be_null=True,
    )
    reader = pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=1 << 22), convert_options=options)
    pending: list[pa.RecordBatch] = []
    size = 0
    for batch in reader:
        pending.append(batch)
        size += batch.num_rows
        while size >= chunk_size:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, chunk_size).to_pandas()
            rest = table.slice(chunk_size)
            pending, size = rest.to_batches(), rest.num_rows
    if size:
        yield pa.Table.from_batches(pending).to_pandas()


def _check_columns(available: Sequence[str], required: Sequence[str], path: Path) -> None:
    missing = [name for name in required if name not in available]
    if missing:
        raise SchemaError(f"Input file {path} lacks the required column(s) {missing}.")


def _without_dictionaries(table: pa.Table) -> pa.Table:
    """Dictionary-encoded columns decoded to their values (CSV has no dictionaries)."""
    columns = [
        column.cast(column.type.value_type) if pa.types.is_dictionary(column.type) else column
        for column in table.columns
    ]
    return pa.table(columns, names=table.column_names)


class AtomicTableWriter:
    """Write a table in chunks to a temporary file; rename it into place on ``commit``.

    Parameters
    ----------
    path : str or Path
        Destination; ``.parquet`` or ``.csv``.
    schema : pyarrow.Schema
        Column names and types of every chunk.

    Examples
    --------
    >>> import tempfile, pyarrow as pa, pandas as pd
    >>> folder = Path(tempfile.mkdtemp())
    >>> with AtomicTableWriter(folder / "out.parquet", pa.schema([("x", pa.int64())])) as writer:
    ...     writer.write(pd.DataFrame({"x": [1, 2]}))
    >>> pd.read_parquet(folder / "out.parquet")["x"].tolist()
    [1, 2]
    """

    def __init__(self, path: str | Path, schema: pa.Schema):
        self.path = Path(path)
        self.format = SUPPORTED.get(self.path.suffix.lower())
        if self.format is None:
            raise SchemaError(f"Output {self.path} must end in .parquet or .csv.")
        self.schema = schema
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.partial = self.path.with_name(f".{self.path.name}.partial-{uuid.uuid4().hex[:8]}")
        if self.format == "parquet":
            # Dictionary encoding only where it pays: text columns, not probabilities.
            text = [f.name for f in schema if pa.types.is_dictionary(f.type) or pa.types.is_string(f.type)]
            self._writer = pq.ParquetWriter(self.partial, schema, use_dictionary=text or False)
        else:
            self._writer = pacsv.CSVWriter(self.partial, _without_dictionaries(schema.empty_table()).schema)
        self.rows = 0

    def write(self, rows: pd.DataFrame | pa.Table) -> None:
        """Append ``rows`` (columns as in the schema)."""
        if not len(rows):
            return
        table = rows if isinstance(rows, pa.Table) else pa.Table.from_pandas(
            rows, schema=self.schema, preserve_index=False)
        if self.format == "csv":
            table = _without_dictionaries(table)
        self._writer.write_table(table)
        self.rows += len(rows)

    def commit(self) -> Path:
        """Close the file and move it to its destination."""
        self._writer.close()
        os.replace(self.partial, self.path)
        return self.path

    def abort(self) -> None:
        """Close and delete the temporary file."""
        try:
            self._writer.close()
        finally:
            self.partial.unlink(missing_ok=True)

    def __enter__(self) -> AtomicTableWriter:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is None:
            self.commit()
        else:
            self.abort()

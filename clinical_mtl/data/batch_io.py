"""Reading patient files in chunks (writing them: :mod:`clinical_mtl.data.writing`).

Inputs are CSV or Parquet files, or a folder of them (read in name order).
Parquet is read one batch of rows at a time and only the columns needed;
CSV is read in blocks with every column as text, so that one malformed cell
rejects its row instead of stopping the file (the schema parses the text).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ..exceptions import InputFileError, SchemaError

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
            raise InputFileError(f"Input folder {path} holds no .csv or .parquet file.")
        return files
    if not path.exists():
        raise InputFileError(f"Input {path} does not exist.")
    if path.suffix.lower() not in SUPPORTED:
        raise InputFileError(f"Input {path} is not a .csv or .parquet file.")
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
        raise InputFileError(f"Cannot read {path}: {error}") from error
    if n_rows == 0:
        raise InputFileError(f"Input file {path} has no rows.")


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


READ_PROBLEM = "_read_problem"
"""Column of a chunk that names why a row could not be read (None for rows read): a CSV line
with the wrong number of fields or with bytes that are not UTF-8. The schema rejects such rows."""

_CSV_BLOCK_BYTES = 1 << 22
_NULL_TEXT = frozenset(pacsv.ConvertOptions().null_values)  # what pyarrow reads as missing


def _read_csv(path: Path, columns: Sequence[str], chunk_size: int) -> Iterator[pd.DataFrame]:
    """Chunks of a CSV file, every column as text; a line that cannot be read is a row of its own
    (all values missing, ``READ_PROBLEM`` set), so it costs one row, not the file."""
    with open(path, "rb") as file:
        header = _csv_header(file, path)
        _check_columns(header, columns, path)
        pending: list[pa.Table] = []
        size = 0
        for table in _csv_tables(file, header, columns):
            pending.append(table)
            size += table.num_rows
            while size >= chunk_size:
                joined = pa.concat_tables(pending)
                yield _chunk_frame(joined.slice(0, chunk_size))
                rest = joined.slice(chunk_size)
                pending, size = [rest], rest.num_rows
        if size:
            yield _chunk_frame(pa.concat_tables(pending))


def _csv_header(file, path: Path) -> list[str]:
    """The column names of the header line (line 1; the data start at line 2)."""
    line = file.readline()
    try:
        text = line.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputFileError(f"Input file {path}: the header line is not UTF-8 text.") from None
    names = next(csv.reader([text.rstrip("\r\n")]), [])
    if not any(names):
        raise InputFileError(f"Input file {path} has no header line naming its columns.")
    return names


def _csv_tables(file, header: list[str], columns: Sequence[str]) -> Iterator[pa.Table]:
    """The file's data lines as Arrow tables of text, a block of whole lines at a time."""
    line_number = 2
    rest = b""
    while True:
        data = file.read(_CSV_BLOCK_BYTES)
        block = rest + data
        if not data:
            rest = b""
        else:
            end = block.rfind(b"\n") + 1
            block, rest = block[:end], block[end:]
        if block:
            yield _csv_block(block, header, columns, line_number)
            line_number += block.count(b"\n")
        if not data:
            return


def _csv_block(block: bytes, header: list[str], columns: Sequence[str], first_line: int) -> pa.Table:
    """One block of whole lines; pyarrow parses it unless a line is malformed, then Python does."""
    invalid = []
    options = dict(
        read_options=pacsv.ReadOptions(column_names=header, use_threads=False),
        parse_options=pacsv.ParseOptions(invalid_row_handler=lambda row: invalid.append(1) or "skip"),
        convert_options=pacsv.ConvertOptions(include_columns=list(columns), strings_can_be_null=True,
                                             column_types={name: pa.string() for name in columns}),
    )
    try:
        table = pacsv.read_csv(pa.py_buffer(block), **options)
    except pa.ArrowInvalid:  # bytes that are not UTF-8; anything else is found again line by line
        invalid.append(1)
    if not invalid:
        return table.append_column(READ_PROBLEM, pa.nulls(table.num_rows, pa.string()))
    return _csv_block_by_line(block, header, columns, first_line)


def _csv_block_by_line(block: bytes, header: list[str], columns: Sequence[str], first_line: int) -> pa.Table:
    """A block with a malformed line, read line by line (Python's csv module: slow, but only here)."""
    positions = [header.index(name) for name in columns]
    values: list[list] = [[] for _ in columns]
    problems = []
    lines = block.split(b"\n")
    for offset, line in enumerate(lines[:-1] if not lines[-1] else lines):  # the last line may lack its newline
        line = line.rstrip(b"\r")
        if not line:
            continue  # blank lines are no rows, as pyarrow reads them
        problem, fields = None, None
        try:
            fields = next(csv.reader([line.decode("utf-8")]))
        except UnicodeDecodeError:
            problem = "bytes that are not UTF-8 text"
        except csv.Error:
            problem = "a line that is not valid CSV"
        if fields is not None and len(fields) != len(header):
            problem = f"{len(fields)} fields where the header has {len(header)}"
        for column, position in zip(values, positions):
            column.append(None if problem or fields[position] in _NULL_TEXT else fields[position])
        problems.append(None if problem is None else f"line {first_line + offset} cannot be read: {problem}")
    arrays = [pa.array(column, pa.string()) for column in values] + [pa.array(problems, pa.string())]
    return pa.table(arrays, names=[*columns, READ_PROBLEM])


def _chunk_frame(table: pa.Table) -> pd.DataFrame:
    """A chunk as pandas, without the ``READ_PROBLEM`` column when every row was read."""
    if table.column(READ_PROBLEM).null_count == table.num_rows:
        table = table.drop_columns([READ_PROBLEM])
    return table.to_pandas()


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



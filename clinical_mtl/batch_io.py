"""Reading patient files in chunks and writing results atomically.

Inputs are CSV or Parquet files, or a folder of them (read in name order).
Parquet is read one batch of rows at a time and only the columns needed;
CSV is read in blocks with every column as text, so that one malformed cell
rejects its row instead of stopping the file (the schema parses the text).

Outputs are written under a temporary name in the destination folder and
renamed only when complete (``AtomicTableWriter``): a run that fails or is
killed leaves no file at the destination, only a ``.partial`` file (removed
too when the run is interrupted or terminated rather than killed). Outputs
are checked before anything is read (``check_output_paths``): never the input
itself, never two outputs in one file, never inside an input folder, and
never over a file that the project did not write. Text cells of CSV outputs
that a spreadsheet would run as a formula are neutralised (``formula_safe``).
"""

from __future__ import annotations

import csv
import os
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pandas as pd
from pandas.api import types as ptypes
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from .exceptions import OutputPathError, RowAccountingError
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


def check_output_paths(inputs: str | Path, outputs: dict[str, Path], owned: set[Path] = frozenset()) -> None:
    """Refuse outputs that would overwrite an input, one another, or a file the project did not write.

    Parameters
    ----------
    inputs : str or Path
        The input file or folder.
    outputs : dict of str to Path
        What each output is called in messages (``output``, ``rejects``...) -> its path.
    owned : set of Path, default=frozenset()
        Existing files that an earlier run of the project wrote (so may be replaced).

    Raises
    ------
    OutputPathError
        If an output is the input, lies in the input folder (it would be read
        as input by the next run), is the same file as another output, is a
        folder, or exists and is not in ``owned``.
    """
    source = Path(inputs).resolve()
    owned = {Path(path).resolve() for path in owned}
    claimed: dict[Path, str] = {}
    for label, path in outputs.items():
        target = Path(path).resolve()
        if target == source:
            raise OutputPathError(f"The {label} {path} is the input itself; choose another file.")
        if source.is_dir() and target.parent == source:
            raise OutputPathError(f"The {label} {path} is inside the input folder {inputs}, whose files are all "
                                  "read as input; write it elsewhere.")
        if target in claimed:
            raise OutputPathError(f"The {label} and the {claimed[target]} are the same file {path}; give each "
                                  "its own.")
        if target.is_dir() and target not in owned:  # (the Spark engine writes folders)
            raise OutputPathError(f"The {label} {path} is a folder; name a file.")
        if target.exists() and target not in owned:
            raise OutputPathError(f"The {label} {path} exists and was not written by clinical-mtl (no summary "
                                  "beside it names it); remove it or choose another file.")
        claimed[target] = label


def formula_safe(table: pa.Table) -> pa.Table:
    """``table`` with every text cell that starts like a spreadsheet formula prefixed by ``'``.

    Cells beginning with ``=``, ``+``, ``-``, ``@``, a tab or a carriage
    return are run as formulas by spreadsheet programs (CSV injection,
    OWASP); an apostrophe in front makes them plain text. Numbers are not
    text and are left alone (a negative number stays a number).

    Examples
    --------
    >>> formula_safe(pa.table({"id": ["=1+1", "a-b", None], "x": [-1, 2, 3]})).to_pydict()
    {'id': ["'=1+1", 'a-b', None], 'x': [-1, 2, 3]}
    """
    columns = [
        pc.replace_substring_regex(column, pattern=r"^([=+\-@\t\r])", replacement=r"'\1")
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type) else column
        for column in table.columns
    ]
    return pa.table(columns, names=table.column_names)


def formula_safe_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` whose text cells are neutralised as :func:`formula_safe` does, for ``to_csv``."""
    safe = frame.copy()
    for name in safe.columns:
        column = safe[name]
        if column.dtype == object or ptypes.is_string_dtype(column.dtype):
            text = column.map(lambda value: isinstance(value, str) and value[:1] in _FORMULA_STARTS)
            safe[name] = column.where(~text.astype(bool), "'" + column.astype(str))
    return safe


_FORMULA_STARTS = frozenset("=+-@\t\r")


def count_rows(path: Path) -> int | None:
    """Rows of a Parquet file from its footer (None for CSV, or if unreadable)."""
    if SUPPORTED[path.suffix.lower()] != "parquet":
        return None
    try:
        return pq.ParquetFile(path).metadata.num_rows
    except (pa.ArrowException, OSError):
        return None


def check_row_accounting(rows_in: int, written: Mapping[str, int], rows_in_footers: int | None = None,
                         output: str = "output") -> None:
    """Fail a run if a row was lost or duplicated between reading and writing: a bug, never the input's fault.

    Parameters
    ----------
    rows_in : int
        The rows as the reader yielded them.
    written : mapping of str to int
        What the outputs hold, counted apart from the rows handed along: a
        name (``"scored"``, ``"rejected rows"``) to its count; they must add
        up to ``rows_in``.
    rows_in_footers : int, default=None
        The rows that the inputs' Parquet footers count, when every input is
        Parquet (a reader that loses a row is caught too).
    output : str, default="output"
        What the run would have committed, for the message.

    Raises
    ------
    RowAccountingError
        One line of counts (no patient value) when they disagree.
    """
    footers_agree = rows_in_footers in (None, rows_in)
    if footers_agree and rows_in == sum(written.values()):
        return
    footers = "" if footers_agree else f" (the Parquet footers count {rows_in_footers:,})"
    counts = " and ".join(f"{count:,} {name}" for name, count in written.items())
    raise RowAccountingError(f"Row accounting failed, a bug in clinical-mtl: {rows_in:,} rows read{footers} but "
                             f"{counts} written; no {output} was committed.")


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
        raise SchemaError(f"Input file {path}: the header line is not UTF-8 text.") from None
    names = next(csv.reader([text.rstrip("\r\n")]), [])
    if not any(names):
        raise SchemaError(f"Input file {path} has no header line naming its columns.")
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
        self.partial = self.path.with_name(f".{self.path.name}.partial-{uuid.uuid4().hex[:8]}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.format == "parquet":
                # Dictionary encoding only where it pays: text columns, not probabilities.
                text = [f.name for f in schema if pa.types.is_dictionary(f.type) or pa.types.is_string(f.type)]
                self._writer = pq.ParquetWriter(self.partial, schema, use_dictionary=text or False)
            else:
                self._writer = pacsv.CSVWriter(self.partial, _without_dictionaries(schema.empty_table()).schema)
        except OSError as error:
            raise OutputPathError(f"Cannot write {self.path}: {error.strerror or 'not writable'}.") from None
        self.rows = 0  # written so far

    def write(self, rows: pd.DataFrame | pa.Table) -> None:
        """Append ``rows`` (columns as in the schema)."""
        if not len(rows):
            return
        table = rows if isinstance(rows, pa.Table) else pa.Table.from_pandas(
            rows, schema=self.schema, preserve_index=False)
        if self.format == "csv":
            table = formula_safe(_without_dictionaries(table))
        self._writer.write_table(table)
        self.rows += table.num_rows  # what the file holds: the scoring run's row accounting checks it

    def commit(self) -> Path:
        """Close the file and move it to its destination."""
        self._writer.close()
        try:
            os.replace(self.partial, self.path)
        except OSError as error:
            raise OutputPathError(f"Cannot write {self.path}: {error.strerror or 'not writable'}.") from None
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

"""Writing outputs without losing a user's files: path checks, atomic writes, formula-safe tables.

Outputs are written under a temporary name in the destination folder and
renamed only when complete (``AtomicPath``, which ``AtomicTableWriter``,
``write_json_atomically`` and saved models use): a run that fails or is
killed leaves no file at the destination, only a ``.partial`` file (removed
too when the run is interrupted or terminated rather than killed). Outputs
are checked before anything is read (``check_output_paths``): never the input
itself, never two outputs in one file, never inside an input folder, and
never over a file that the project did not write. Text cells of CSV outputs
that a spreadsheet would run as a formula are neutralised (``formula_safe``).
"""

from __future__ import annotations

import json
import os
import uuid
from contextlib import suppress
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from pandas.api import types as ptypes

from ..exceptions import OutputPathError
from .batch_io import SUPPORTED, _without_dictionaries


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


class AtomicPath:
    """A temporary sibling of ``path`` to write, moved onto ``path`` only once complete.

    The one write-to-temporary-then-rename of the package: tables
    (:class:`AtomicTableWriter`), JSON (:func:`write_json_atomically`) and saved
    models all go through it. The temporary file, ``.<name>.partial-<8 hex>``,
    lies in the destination's folder, so the move is a rename within one file
    system (``os.replace``: atomic, and over an existing file). A reader sees
    the old file or the complete new one, never a half-written one; a run that
    fails leaves no temporary file (one killed outright leaves its hidden
    ``.partial`` file, never a damaged destination). Nothing is fsynced, as
    before: this guards against failed and killed runs, not power loss.

    Use it as a context manager (the temporary path is moved into place when
    the block succeeds, removed when it raises), or call :meth:`commit` and
    :meth:`discard` yourself.

    Parameters
    ----------
    path : str or Path
        The destination.

    Raises
    ------
    OutputPathError
        If writing the temporary file (an ``OSError`` in the block) or moving
        it into place fails, in one line naming ``path``; the temporary file
        is removed.

    Examples
    --------
    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "notes.txt"
    >>> with AtomicPath(target) as partial:
    ...     _ = partial.write_text("complete")
    >>> target.read_text(), sorted(p.name for p in target.parent.iterdir())
    ('complete', ['notes.txt'])
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.partial = self.path.with_name(f".{self.path.name}.partial-{uuid.uuid4().hex[:8]}")

    def commit(self) -> Path:
        """Move the temporary file onto the destination; returns the destination."""
        try:
            os.replace(self.partial, self.path)
        except OSError as error:
            self.discard()
            raise self.error(error) from None
        return self.path

    def discard(self) -> None:
        """Remove the temporary file, if there is one (never raising: it runs while an error is handled)."""
        with suppress(OSError):  # none was written, or its folder cannot be reached (a file, say)
            self.partial.unlink()

    def error(self, error: OSError) -> OutputPathError:
        """The one-line error for ``error`` met while writing the destination."""
        return OutputPathError(f"Cannot write {self.path}: {error.strerror or 'not writable'}.")

    def __enter__(self) -> Path:
        return self.partial

    def __exit__(self, kind, error, traceback) -> None:
        if kind is None:
            self.commit()
            return
        self.discard()
        if isinstance(error, OSError):
            raise self.error(error) from None


def write_json_atomically(path: Path, data: dict) -> None:
    """Write ``data`` as JSON to ``path`` through a temporary file renamed into place (:class:`AtomicPath`).

    Parameters
    ----------
    path : Path
        Destination.
    data : dict
        JSON-ready data (other values are written as their text).

    Raises
    ------
    OutputPathError
        If it cannot be written; the temporary file is removed.
    """
    with AtomicPath(path) as partial:
        partial.write_text(json.dumps(data, indent=2, default=str))


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
            raise OutputPathError(f"Output {self.path} must end in .parquet or .csv.")
        self.schema = schema
        self._target = AtomicPath(self.path)
        self.partial = self._target.partial
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.format == "parquet":
                # Dictionary encoding only where it pays: text columns, not probabilities.
                text = [f.name for f in schema if pa.types.is_dictionary(f.type) or pa.types.is_string(f.type)]
                self._writer = pq.ParquetWriter(self.partial, schema, use_dictionary=text or False)
            else:
                self._writer = pacsv.CSVWriter(self.partial, _without_dictionaries(schema.empty_table()).schema)
        except OSError as error:
            self._target.discard()
            raise self._target.error(error) from None
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
        return self._target.commit()

    def abort(self) -> None:
        """Close and delete the temporary file."""
        try:
            self._writer.close()
        finally:
            self._target.discard()

    def __enter__(self) -> AtomicTableWriter:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is None:
            self.commit()
        else:
            self.abort()

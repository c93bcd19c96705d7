"""Batch scoring: files of patients in, predictions (and explanations) out, every row accounted for.

``score_files`` streams the input in chunks (memory bounded by the chunk
size), validates each chunk against the model's cohort schema, scores the
valid rows and writes them, and writes every other row to the rejects file
with its reasons: rows in = rows scored + rows rejected, always (the rows the
reader yields, and the Parquet footers' counts, against the rows written; a
difference is a bug and fails the run). Duplicate ids are rejected after their
first row, across chunks and files. Outputs are written atomically
(``batch_io.AtomicTableWriter``) and a summary is written as JSON beside the
output. The rejects and the summary are moved into place before the output:
whoever sees the output can trust the rejects and the summary beside it.
"""

from __future__ import annotations

import gc
import json
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from queue import Empty, Queue

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from .allocation import release_free_memory
from .batch_io import (READ_PROBLEM, AtomicTableWriter, check_output_paths, check_row_accounting, count_rows,
                       iter_chunks, list_input_files)
from .estimator import MultiTaskMLP
from .exceptions import ModelLoadError, OutputPathError
from .explain import top_contribution_columns, top_contributions
from .features import CATEGORICAL
from .conformal import DEFAULT_COVERAGE
from .outputs import output_columns
from .schema import ROW_NUMBER, CohortSchema, schema_for_model, schema_from_model

DEFAULT_CHUNK_SIZE = 65_536
MLFLOW_SCHEMES = ("models:/", "runs:/")
# Chunks scored between two hand-backs of the allocators' free memory (see score_files).
RELEASE_EVERY_CHUNKS = 16
_ARROW_TYPES = {"string": pa.string(), "long": pa.int64(), "double": pa.float64(), "boolean": pa.bool_()}


@dataclass
class LoadedModel:
    """A model ready for scoring, with what identifies it.

    Attributes
    ----------
    model : MultiTaskMLP
    schema : CohortSchema
        The cohort schema stored with the model (or one derived from the
        model's columns when it was trained without one).
    name, version, run_id : str or None
        Registered name and version, and the MLflow run that trained it.
    reference : str
        How it was referred to (path or MLflow URI).
    saved_at : str or None
        When the model was saved after training (ISO 8601, UTC).
    """

    model: MultiTaskMLP
    schema: CohortSchema
    name: str | None
    version: str | None
    run_id: str | None
    reference: str
    saved_at: str | None = None

    def identity(self) -> dict:
        """Name, version, run id and reference, as the scoring summary records them."""
        return {"name": self.name, "version": self.version, "run_id": self.run_id, "reference": self.reference}


@dataclass
class ScoringSummary:
    """What a scoring run did (also written as JSON beside the output)."""

    rows_in: int = 0
    rows_scored: int = 0
    rows_rejected: int = 0
    seconds: float = 0.0
    rows_per_second: float = 0.0
    seconds_by_step: dict = field(default_factory=dict)
    input_files: list = field(default_factory=list)
    output: str = ""
    rejects: str = ""
    model: dict = field(default_factory=dict)
    started_at: str = ""
    engine: str = "local"

    def to_dict(self) -> dict:
        data = asdict(self)
        data["seconds_by_step"] = {k: round(v, 4) for k, v in self.seconds_by_step.items()}
        return data


def load_model_for_scoring(reference: str, id_column: str | None = None) -> LoadedModel:
    """Load a model from a saved folder, ``runs:/<run>/model`` or ``models:/<name>@<alias>``.

    Parameters
    ----------
    reference : str
        A folder written by ``persistence.save_model``, or an MLflow model URI.
    id_column : str, default=None
        Id column for models stored without a cohort schema (default "id").

    Returns
    -------
    LoadedModel
    """
    from .persistence import load_saved_model

    if not reference.startswith(MLFLOW_SCHEMES):
        model, schema, info = load_saved_model(reference)
        name, version, run_id = Path(reference).name, None, None
    else:
        model, schema, info, (name, version, run_id) = _load_from_mlflow(reference)
    schema = schema_for_model(schema or schema_from_model(model, id_column or "id"), model)
    schema.validator()  # built now (it imports pandera), not while scoring
    return LoadedModel(model, schema, name, version, run_id, reference, info["saved_at"])


def _load_from_mlflow(reference: str):
    """Model, schema, save information and identity of an MLflow model URI; ``ModelLoadError`` if MLflow
    has none."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from .persistence import load_saved_model
    from .tracking import download_model, model_identity

    uri = mlflow.get_tracking_uri()
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():  # MLflow would create it
        raise ModelLoadError(f"Cannot resolve {reference}: there is no MLflow tracking database at "
                             f"{uri[len('sqlite:///'):]} (set MLFLOW_TRACKING_URI to the one that holds it).")
    try:
        identity = model_identity(reference)
        with download_model(reference) as folder:
            return (*load_saved_model(folder), identity)
    except MlflowException as error:
        reason = str(error.message).strip().splitlines()[0] if str(error.message).strip() else type(error).__name__
        raise ModelLoadError(f"Cannot load {reference} from MLflow at {uri}: {reason}") from None


def score_files(
    loaded: LoadedModel,
    inputs: str | Path,
    output: str | Path,
    rejects: str | Path | None = None,
    *,
    top_k: int = 0,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: bool | None = None,
) -> ScoringSummary:
    """Score a file or folder of patients.

    Parameters
    ----------
    loaded : LoadedModel
        From :func:`load_model_for_scoring`.
    inputs : str or Path
        A CSV or Parquet file, or a folder of them.
    output : str or Path
        ``.parquet`` or ``.csv`` file: ``row_number`` (position in the input,
        counted across files), the id, each outcome's prediction and class
        probabilities (see :mod:`clinical_mtl.outputs`), optionally the
        ``top_k`` largest SHAP contributions per outcome, ``model_name``,
        ``model_version``, ``run_id`` and ``scored_at`` (when this run started,
        UTC). Rows keep their input order.
    rejects : str or Path, default=None
        Where rejected rows go (default: ``<output stem>.rejects.<suffix>``):
        ``row_number``, ``source_file``, the id as text, ``n_problems`` and
        ``reasons``.
    top_k : int, default=0
        Explanations to add per outcome.
    chunk_size : int, default=65536
        Rows read, validated and scored at a time; bounds memory.
    progress : bool, default=None
        Show a progress bar; None shows one on a terminal only.

    Returns
    -------
    ScoringSummary
        Also written to ``<output stem>.summary.json``.

    Raises
    ------
    SchemaError
        If an input cannot be read, is empty or lacks a required column; no
        output is left behind.
    ValueError
        If ``chunk_size`` is below 1 or ``top_k`` below 0.
    """
    from tqdm.auto import tqdm

    if chunk_size < 1:  # 0 would read empty chunks forever
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}.")
    if top_k < 0:
        raise ValueError(f"top_k must be 0 or more, got {top_k}.")
    paths = check_scoring_paths(inputs, output, rejects)
    output, rejects, summary_path = paths["output"], paths["rejects"], paths["summary"]
    files = list_input_files(inputs)
    schema = loaded.schema
    started = datetime.now(timezone.utc)
    summary = ScoringSummary(
        input_files=[str(f) for f in files], output=str(output), rejects=str(rejects),
        model=loaded.identity(),
        started_at=started.isoformat(),
    )
    identity = {"model_name": loaded.name, "model_version": loaded.version, "run_id": loaded.run_id,
                "scored_at": np.datetime64(started.replace(tzinfo=None), "us")}
    clock = time.perf_counter()
    footer_rows = [count_rows(f) for f in files]  # None for CSV
    total = sum(n or 0 for n in footer_rows) or None
    writers: list[AtomicTableWriter] = []
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, torch_threads - 1))  # one core reads and validates meanwhile
    gc.freeze()  # the objects alive now (modules, model) need no cyclic-garbage scans: ~10% of the run
    try:
        with (IdRegister() as ids,
              tqdm(total=total, unit="rows", disable=None if progress is None else not progress) as bar):
            # Reading and validating the next chunk overlaps with scoring this one.
            chunks = _preprocessed_chunks(validated_chunks(files, schema, chunk_size, summary, ids), loaded.model,
                                          chunk_size, summary)
            for n_chunks, (path, chunk, valid, rejected, inputs) in enumerate(_prefetch(chunks), start=1):
                if not writers:  # one at a time: if the second cannot be opened, the first is aborted
                    writers.append(AtomicTableWriter(output, _output_schema(loaded, top_k)))
                    writers.append(AtomicTableWriter(rejects, _reject_schema(schema)))
                with _timed(summary, "predict"):
                    scored = _score(loaded, valid, inputs, identity, top_k, writers[0].schema)
                with _timed(summary, "write"):
                    writers[0].write(scored)
                    writers[1].write(reject_rows(rejected, schema.id_column, path))
                bar.update(len(chunk))
                # pandas frames made from Arrow batches sit in reference cycles that keep the Arrow
                # buffers alive until a full collection, which a large heap makes rare: memory would
                # grow with the input. Collecting per chunk is cheap with the long-lived objects frozen.
                del chunk, valid, rejected, inputs, scored
                gc.collect()
                # The allocators keep freed memory for reuse (allocation.tune_for_streaming), but not
                # all of it is reused, and what they hold would creep up with the input's length:
                # hand the free part back now and then (a few ms a call, plus re-faulting: ~1% of the run).
                if n_chunks % RELEASE_EVERY_CHUNKS == 0:
                    release_free_memory()
        # What the files hold, counted by their writers; rows_in was counted as the reader yielded the rows.
        summary.rows_scored, summary.rows_rejected = writers[0].rows, writers[1].rows
        check_row_accounting(summary.rows_in, {"scored": summary.rows_scored, "rejected rows": summary.rows_rejected},
                             None if None in footer_rows else sum(footer_rows))
        summary.seconds = time.perf_counter() - clock
        summary.rows_per_second = summary.rows_in / summary.seconds if summary.seconds else 0.0
        _commit(writers[0], writers[1], summary_path, summary)
    except BaseException:
        for writer in writers:
            writer.abort()
        raise
    finally:
        torch.set_num_threads(torch_threads)
        gc.unfreeze()
    return summary


def _commit(output: AtomicTableWriter, rejects: AtomicTableWriter, summary_path: Path,
            summary: ScoringSummary) -> None:
    """Move the rejects, then the summary, then the output into place.

    The output is moved last, so that a user or scheduler who sees it can trust
    the rejects and the summary beside it: they are this run's, complete. An
    earlier run's output is removed first, or a run killed between two moves
    would leave it beside this run's rejects and summary. If a move fails, the
    files this run moved are removed again: a failed run leaves no result.
    """
    try:
        output.path.unlink(missing_ok=True)
    except OSError as error:
        raise OutputPathError(f"Cannot replace {output.path}: {error.strerror or 'not removable'}.") from None
    moved: list[Path] = []
    try:
        moved.append(rejects.commit())
        write_json_atomically(summary_path, summary.to_dict())
        moved.append(summary_path)
        output.commit()
    except BaseException:
        if not output.path.exists():  # (a signal may arrive once the output is in place: then keep all)
            for path in moved:
                path.unlink(missing_ok=True)
        raise


def scoring_paths(output: str | Path, rejects: str | Path | None = None) -> dict[str, Path]:
    """The files a scoring run writes: ``output``, ``rejects`` (default ``<output stem>.rejects.<suffix>``)
    and ``summary`` (``<output stem>.summary.json``)."""
    output = Path(output)
    rejects = Path(rejects) if rejects is not None else output.with_name(f"{output.stem}.rejects{output.suffix}")
    return {"output": output, "rejects": rejects, "summary": output.with_name(f"{output.stem}.summary.json")}


def check_scoring_paths(inputs: str | Path, output: str | Path, rejects: str | Path | None = None
                        ) -> dict[str, Path]:
    """:func:`scoring_paths`, refused (``OutputPathError``) where they would overwrite an input, one
    another, or a file that no earlier scoring run wrote (see ``batch_io.check_output_paths``)."""
    paths = scoring_paths(output, rejects)
    check_output_paths(inputs, paths, owned=_written_by_scoring(paths))
    return paths


def _written_by_scoring(paths: dict[str, Path]) -> set[Path]:
    """The existing ``paths`` that an earlier scoring run wrote: those its summary names."""
    try:
        earlier = json.loads(paths["summary"].read_text())
        named = {Path(earlier["output"]).name, Path(earlier["rejects"]).name}
    except (OSError, ValueError, KeyError, TypeError):
        return set()
    return {paths["summary"]} | {path for key, path in paths.items() if key != "summary" and path.name in named}


def validated_chunks(files: list[Path], schema: CohortSchema, chunk_size: int, summary: ScoringSummary,
                     ids: IdRegister):
    """Yield (file, chunk, valid rows, rejected rows) for every chunk, in order; ``ids``
    registers the ids read, to reject repeats, and ``summary.rows_in`` counts the rows read."""
    first_row = 0
    text = [feature.name for feature in schema.features if feature.type == CATEGORICAL]
    for path in files:
        chunks = iter_chunks(path, [schema.id_column, *schema.feature_names], chunk_size, text)
        while True:
            with _timed(summary, "read"):
                chunk = next(chunks, None)
            if chunk is None:
                break
            summary.rows_in += len(chunk)  # as read: checked against the rows written (check_row_accounting)
            with _timed(summary, "validate"):
                read_problems = chunk.pop(READ_PROBLEM).to_numpy() if READ_PROBLEM in chunk else None
                canonical = schema.canonical_ids(chunk[schema.id_column])
                earlier = ids.seen_before(canonical[0].reset_index(drop=True))
                result = schema.validate(chunk, first_row_number=first_row, source=str(path), repeated_ids=earlier,
                                         read_problems=read_problems, canonical_ids=canonical)
                valid, rejected = _numbered(result, first_row, chunk), result.rejected
            first_row += len(chunk)
            yield path, chunk, valid, rejected


def _preprocessed_chunks(chunks, model: MultiTaskMLP, chunk_size: int, summary: ScoringSummary):
    """``validated_chunks`` with the network inputs of the valid rows added to each item."""
    # Input buffers reused round-robin: one being scored, one queued, one being filled.
    buffers = [np.empty((model.preprocessor_.n_features_out_, chunk_size), dtype=np.float32) for _ in range(3)]
    for n_chunks, (path, chunk, valid, rejected) in enumerate(chunks):
        with _timed(summary, "preprocess"):
            # The schema has checked the columns; the preprocessor reads the features by name.
            # Counted by chunk, not by row: chunks can be shorter than chunk_size (a file's last
            # chunk, Parquet row groups), and two chunks in flight must never share a buffer.
            buffer = buffers[n_chunks % len(buffers)]
            inputs = model.preprocessor_.transform(valid, out=buffer) if len(valid) else None
        yield path, chunk, valid, rejected, inputs


def _prefetch(items, depth: int = 1):
    """Iterate ``items`` in a background thread, at most ``depth`` items ahead.

    Exceptions raised by ``items`` are raised here. The consumer stopping early
    stops the producer at its next item.
    """
    queue: Queue = Queue(maxsize=depth)
    done = object()
    stopped = threading.Event()

    def produce():
        try:
            for item in items:
                if stopped.is_set():
                    return
                queue.put((item, None))
        except BaseException as error:  # handed to the consumer
            queue.put((None, error))
            return
        queue.put((done, None))

    worker = threading.Thread(target=produce, name="clinical-mtl-reader", daemon=True)
    worker.start()
    try:
        while True:
            item, error = queue.get()
            if error is not None:
                raise error
            if item is done:
                return
            yield item
    finally:
        stopped.set()
        while worker.is_alive():  # unblock a producer waiting on a full queue
            try:
                queue.get_nowait()
            except Empty:
                pass
            worker.join(timeout=0.05)


_MERGE_FAN_IN = 4  # runs of one size merged into one: a lookup searches at most 3 runs of each size


class IdRegister:
    """Ids seen so far, to reject a later row that repeats one, in memory bounded whatever the input's length.

    Integer ids are kept exactly; other ids as 64-bit hashes (a false
    duplicate needs a hash collision: below 1e-6 for 5 million ids). At most
    ``memory_budget`` ids stay in memory, sorted; beyond that they are written
    as a sorted run to an anonymous temporary file, and runs are merged on
    disk a few at a time, so that a lookup searches a few runs only. A run is
    read back a block at a time into a reused buffer, and only the blocks
    whose range holds an id looked up. Memory: the budget, a few blocks, and
    the first id of each block on disk (8 bytes per ``block_size`` ids).

    Use it as a context manager (or call :meth:`close`): the temporary files
    are deleted on closing.

    Parameters
    ----------
    memory_budget : int, default=2**18
        Most ids held in memory between calls (8 bytes each).
    block_size : int, default=2**16
        Ids read from a temporary file at a time.

    Attributes
    ----------
    ids_in_memory : int
        Ids held in memory now (the others are in temporary files).
    """

    def __init__(self, memory_budget: int = 2**18, block_size: int = 2**16):
        self.memory_budget = memory_budget
        self.block_size = block_size
        # Allocated once, not regrown chunk after chunk: long-lived arrays of changing sizes would
        # fragment the heap that every chunk's frames reuse.
        self._held = np.empty(memory_budget, dtype=np.uint64)
        self._block = np.empty(block_size, dtype=np.uint64)
        self.ids_in_memory = 0
        self._runs: list[_SortedRun] = []

    def seen_before(self, ids: pd.Series) -> np.ndarray:
        """Mark which of ``ids`` were registered by an earlier call, then register them all.

        Parameters
        ----------
        ids : Series
            One chunk's ids; missing ones are never duplicates, and a repeat
            within ``ids`` is not marked (the schema rejects those).

        Returns
        -------
        array of bool
            Whether each id was registered by an earlier call.
        """
        present = ids.notna().to_numpy()
        keys, key_of_row = np.unique(_id_keys(ids[present]), return_inverse=True)
        found = np.zeros(len(keys), dtype=bool)
        if self.ids_in_memory:
            held = self._held[:self.ids_in_memory]
            found |= held[np.minimum(np.searchsorted(held, keys), len(held) - 1)] == keys
        for run in self._runs:
            found |= run.contains(keys, self._block)
        earlier = np.zeros(len(ids), dtype=bool)
        earlier[present] = found[key_of_row]
        self._add(keys[~found])
        return earlier

    def close(self) -> None:
        """Delete the temporary files."""
        for run in self._runs:
            run.file.close()
        self._runs = []

    def __enter__(self) -> IdRegister:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _add(self, keys: np.ndarray) -> None:
        if self.ids_in_memory + len(keys) > self.memory_budget:
            self._spill(self._held[:self.ids_in_memory])
            self.ids_in_memory = 0
        if len(keys) > self.memory_budget:
            self._spill(keys)
            return
        held = self._held[:self.ids_in_memory + len(keys)]
        held[self.ids_in_memory:] = keys
        held.sort(kind="stable")  # two sorted runs: timsort merges them
        self.ids_in_memory = len(held)

    def _spill(self, keys: np.ndarray) -> None:
        if not len(keys):
            return
        run = _SortedRun(self.block_size, tier=0)
        self._runs.append(run)  # closed with the others even if writing it fails
        run.append(keys)
        run.finish()
        tier = 0
        while len(same_tier := [run for run in self._runs if run.tier == tier]) >= _MERGE_FAN_IN:
            merged = _merged(same_tier, self.block_size, tier + 1)
            for run in same_tier:
                run.file.close()
            self._runs = [run for run in self._runs if run.tier != tier] + [merged]
            tier += 1


class _SortedRun:
    """Distinct ids in ascending order in an anonymous temporary file, read back a block at a time."""

    def __init__(self, block_size: int, tier: int):
        self.file = tempfile.TemporaryFile()
        self.block_size = block_size
        self.tier = tier
        self.length = 0
        self.last = np.uint64(0)
        self.block_firsts: np.ndarray | list[np.ndarray] = []

    def append(self, keys: np.ndarray) -> None:
        """Write sorted ``keys``, all above those written before."""
        next_block_start = -self.length % self.block_size
        self.block_firsts.append(keys[next_block_start::self.block_size].copy())
        self.file.write(keys.view(np.uint8))
        self.length += len(keys)
        self.last = keys[-1]

    def finish(self) -> None:
        """Make the run ready to read, once every id is appended."""
        self.file.flush()
        self.block_firsts = np.concatenate(self.block_firsts)

    def blocks(self, buffer: np.ndarray):
        """Yield the run's blocks in order, each read into ``buffer`` (overwritten by the next)."""
        for index in range(len(self.block_firsts)):
            yield self.read_block(index, buffer)

    def read_block(self, index: int, buffer: np.ndarray) -> np.ndarray:
        start = index * self.block_size
        block = buffer[:min(self.block_size, self.length - start)]
        self.file.seek(start * block.itemsize)
        if self.file.readinto(block.view(np.uint8)) != block.nbytes:  # pragma: no cover - a truncated temp file
            raise OSError(f"Could not read back block {index} of a temporary file of ids.")
        return block

    def contains(self, keys: np.ndarray, buffer: np.ndarray) -> np.ndarray:
        """Whether each of the sorted, distinct ``keys`` is in the run; reads only the blocks that could hold one."""
        found = np.zeros(len(keys), dtype=bool)
        start = np.searchsorted(keys, self.block_firsts[0], side="left")
        stop = np.searchsorted(keys, self.last, side="right")
        candidates = keys[start:stop]
        if not len(candidates):
            return found
        block_of_candidate = np.searchsorted(self.block_firsts, candidates, side="right") - 1
        bounds = [0, *(np.flatnonzero(np.diff(block_of_candidate)) + 1), len(candidates)]
        for begin, end in zip(bounds[:-1], bounds[1:]):
            block = self.read_block(block_of_candidate[begin], buffer)
            wanted = candidates[begin:end]
            positions = np.minimum(np.searchsorted(block, wanted), len(block) - 1)
            found[start + begin:start + end] = block[positions] == wanted
        return found


def _merged(runs: list[_SortedRun], block_size: int, tier: int) -> _SortedRun:
    """One run of the ids of ``runs``, merged a block of each at a time."""
    merged = _SortedRun(block_size, tier)
    try:
        readers = [run.blocks(np.empty(block_size, dtype=np.uint64)) for run in runs]
        pending = [(reader, next(reader)) for reader in readers]
        while pending:
            # Every id up to the smallest of the blocks' last ids is in the blocks held: it can be written.
            bound = min(block[-1] for _, block in pending)
            ends = [np.searchsorted(block, bound, side="right") for _, block in pending]
            merged.append(np.sort(np.concatenate([block[:end] for (_, block), end in zip(pending, ends)]),
                                  kind="stable"))  # timsort: a few sorted pieces
            remaining = [(reader, block[end:] if end < len(block) else next(reader, None))
                         for (reader, block), end in zip(pending, ends)]
            pending = [(reader, block) for reader, block in remaining if block is not None]
        merged.finish()
    except BaseException:
        merged.file.close()
        raise
    return merged


def _id_keys(ids: pd.Series) -> np.ndarray:
    if pd.api.types.is_integer_dtype(ids.dtype):
        return ids.to_numpy(dtype=np.int64).view(np.uint64)
    if pd.api.types.is_float_dtype(ids.dtype) and np.all(np.mod(ids.to_numpy(), 1) == 0):
        return ids.to_numpy().astype(np.int64).view(np.uint64)
    return pd.util.hash_array(ids.astype(str).to_numpy(dtype=object))


def _numbered(result, first_row: int, chunk: pd.DataFrame) -> pd.DataFrame:
    """The valid rows of a chunk with their ``row_number``."""
    if len(result.valid) == len(chunk):
        positions = np.arange(len(chunk))
    else:
        positions = chunk.index.get_indexer(result.valid.index)
    return result.valid.assign(**{ROW_NUMBER: positions + first_row})


def _score(loaded: LoadedModel, valid: pd.DataFrame, inputs: np.ndarray | None, identity: dict, top_k: int,
           schema: pa.Schema) -> pa.Table:
    """The output rows of the valid rows, built as Arrow columns (class labels and the
    constant model columns dictionary-encoded: cheap to build and to write)."""
    model, n_rows = loaded.model, len(valid)
    columns = {
        ROW_NUMBER: pa.array(valid[ROW_NUMBER].to_numpy(dtype=np.int64)),
        loaded.schema.id_column: pa.Array.from_pandas(valid[loaded.schema.id_column]),
    }
    outputs = model._outputs_of_inputs(inputs) if n_rows else [None] * len(model._task_specs)
    half_widths = model._interval_half_widths(DEFAULT_COVERAGE)
    for spec, output in zip(model._task_specs, outputs):
        if not spec.is_classification:
            columns[f"{spec.name}_pred"] = _values(output, n_rows)
            if spec.name in half_widths:
                columns[f"{spec.name}_lower"] = _values(output - half_widths[spec.name] if n_rows else None, n_rows)
                columns[f"{spec.name}_upper"] = _values(output + half_widths[spec.name] if n_rows else None, n_rows)
            continue
        picked = np.argmax(output, axis=1) if n_rows else np.zeros(0, dtype=np.int64)
        labels = np.asarray(spec.classes)
        field = schema.field(f"{spec.name}_pred")
        if pa.types.is_dictionary(field.type):
            columns[field.name] = pa.DictionaryArray.from_arrays(
                pa.array(picked.astype(np.int32)), pa.array([str(label) for label in labels]))
        else:
            columns[field.name] = pa.array(labels[picked], type=field.type)
        for k, label in enumerate(spec.classes):
            columns[f"{spec.name}_proba_{label}"] = _values(output[:, k] if n_rows else None, n_rows)
    if top_k:  # the features are selected (a copy) only when explanations are asked for
        contributions = top_contributions(model, valid[model_columns(model)], top_k) if n_rows else None
        for name, _ in top_contribution_columns(model, top_k):
            columns[name] = pa.array(contributions[name].to_numpy() if n_rows else [], type=schema.field(name).type)
    for name in ("model_name", "model_version", "run_id"):
        columns[name] = _constant(identity[name], n_rows)
    columns["scored_at"] = pa.array(np.full(n_rows, identity["scored_at"], dtype="datetime64[us]"),
                                    type=schema.field("scored_at").type)
    return pa.table(columns, schema=schema)


def model_columns(model: MultiTaskMLP) -> list[str]:
    """The feature columns of the model's input, by name, in its order."""
    return list(model.feature_names_in_) if hasattr(model, "feature_names_in_") else list(model.preprocessor_.feature_kinds_)


def _values(values: np.ndarray | None, n_rows: int) -> pa.Array:
    return pa.array(values if n_rows else np.zeros(0), type=pa.float64())


def _constant(value: str | None, n_rows: int) -> pa.Array:
    indices = pa.array(np.zeros(n_rows, dtype=np.int32)) if value is not None else pa.nulls(n_rows, pa.int32())
    return pa.DictionaryArray.from_arrays(indices, pa.array([value if value is not None else ""], pa.string()))


def _output_schema(loaded: LoadedModel, top_k: int) -> pa.Schema:
    id_type = pa.int64() if loaded.schema.id_type == "integer" else pa.string()  # ids are canonical (schema)
    text = pa.dictionary(pa.int32(), pa.string())
    fields = [pa.field(ROW_NUMBER, pa.int64()), pa.field(loaded.schema.id_column, id_type)]
    for name, kind in output_columns(loaded.model, top_k):
        is_label = name.endswith("_pred") and kind == "string"
        fields.append(pa.field(name, text if is_label else _ARROW_TYPES[kind]))
    fields += [pa.field(name, text) for name in ("model_name", "model_version", "run_id")]
    fields.append(pa.field("scored_at", pa.timestamp("us", tz="UTC")))
    return pa.schema(fields)


def _reject_schema(schema: CohortSchema) -> pa.Schema:
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


@contextmanager
def _timed(summary: ScoringSummary, step: str):
    start = time.perf_counter()
    try:
        yield
    finally:
        summary.seconds_by_step[step] = summary.seconds_by_step.get(step, 0.0) + time.perf_counter() - start


def write_json_atomically(path: Path, data: dict) -> None:
    """Write ``data`` as JSON to ``path`` through a temporary file renamed into place.

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
    partial = path.with_name(f".{path.name}.partial")
    try:
        partial.write_text(json.dumps(data, indent=2, default=str))
        partial.replace(path)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise OutputPathError(f"Cannot write {path}: {error.strerror or 'not writable'}.") from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise

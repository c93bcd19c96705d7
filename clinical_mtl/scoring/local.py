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
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from queue import Empty, Queue

import numpy as np
import pandas as pd

from ..data.batch_io import READ_PROBLEM, count_rows, iter_chunks, list_input_files
from ..data.id_register import IdRegister
from ..data.run_summary import RunSummary, check_row_accounting
from ..data.schema import ROW_NUMBER, CohortSchema
from ..data.writing import AtomicTableWriter, check_output_paths, write_json_atomically
from ..exceptions import OutputPathError
from ..model.estimator import MultiTaskMLP
from ..model.features import CATEGORICAL
from .allocation import release_free_memory
from .arrow_output import output_schema, reject_rows, reject_schema, score_table
from .model_source import LoadedModel

DEFAULT_CHUNK_SIZE = 65_536
# Chunks scored between two hand-backs of the allocators' free memory (see score_files).
RELEASE_EVERY_CHUNKS = 16


def score_files(
    loaded: LoadedModel,
    inputs: str | Path,
    output: str | Path,
    rejects: str | Path | None = None,
    *,
    top_k: int = 0,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: bool | None = None,
    release_memory_every: int | None = RELEASE_EVERY_CHUNKS,
) -> RunSummary:
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
        probabilities (see :mod:`clinical_mtl.model.outputs`), optionally the
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
    release_memory_every : int or None, default=16
        Hand the allocators' free memory back to the system (``malloc_trim``)
        after every this many chunks, which keeps a long run's memory flat;
        None never does. It changes no process setting.

    Returns
    -------
    RunSummary
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
    summary = RunSummary(
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
    # Torch's threads and gc.freeze are process-wide: the runner sets them (pipelines.scoring_process_settings).
    try:
        with (IdRegister() as ids,
              tqdm(total=total, unit="rows", disable=None if progress is None else not progress) as bar):
            # Reading and validating the next chunk overlaps with scoring this one.
            chunks = _preprocessed_chunks(validated_chunks(files, schema, chunk_size, summary, ids), loaded.model,
                                          chunk_size, summary)
            for n_chunks, (path, chunk, valid, rejected, inputs) in enumerate(_prefetch(chunks), start=1):
                if not writers:  # one at a time: if the second cannot be opened, the first is aborted
                    writers.append(AtomicTableWriter(output, output_schema(loaded, top_k)))
                    writers.append(AtomicTableWriter(rejects, reject_schema(schema)))
                with summary.timed("predict"):
                    scored = score_table(loaded, valid, inputs, identity, top_k, writers[0].schema)
                with summary.timed("write"):
                    writers[0].write(scored)
                    writers[1].write(reject_rows(rejected, schema.id_column, path))
                bar.update(len(chunk))
                del chunk, valid, rejected, inputs, scored
                _collect_chunk_garbage(n_chunks)
                # The allocators keep freed memory for reuse (allocation.tune_for_streaming), but not
                # all of it is reused, and what they hold would creep up with the input's length:
                # hand the free part back now and then (a few ms a call, plus re-faulting: ~1% of the run).
                # It changes no setting, only returns free pages (see allocation.py).
                if release_memory_every and n_chunks % release_memory_every == 0:
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
    return summary


def _commit(output: AtomicTableWriter, rejects: AtomicTableWriter, summary_path: Path,
            summary: RunSummary) -> None:
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


def validated_chunks(files: list[Path], schema: CohortSchema, chunk_size: int, summary: RunSummary,
                     ids: IdRegister):
    """Yield (file, chunk, valid rows, rejected rows) for every chunk, in order; ``ids``
    registers the ids read, to reject repeats, and ``summary.rows_in`` counts the rows read."""
    first_row = 0
    text = [feature.name for feature in schema.features if feature.type == CATEGORICAL]
    for path in files:
        chunks = iter_chunks(path, [schema.id_column, *schema.feature_names], chunk_size, text)
        while True:
            with summary.timed("read"):
                chunk = next(chunks, None)
            if chunk is None:
                break
            summary.rows_in += len(chunk)  # as read: checked against the rows written (check_row_accounting)
            with summary.timed("validate"):
                read_problems = chunk.pop(READ_PROBLEM).to_numpy() if READ_PROBLEM in chunk else None
                canonical = schema.canonical_ids(chunk[schema.id_column])
                earlier = ids.seen_before(canonical[0].reset_index(drop=True))
                result = schema.validate(chunk, first_row_number=first_row, source=str(path), repeated_ids=earlier,
                                         read_problems=read_problems, canonical_ids=canonical)
                valid, rejected = _numbered(result, first_row, chunk), result.rejected
            first_row += len(chunk)
            yield path, chunk, valid, rejected


def _preprocessed_chunks(chunks, model: MultiTaskMLP, chunk_size: int, summary: RunSummary):
    """``validated_chunks`` with the network inputs of the valid rows added to each item."""
    # Input buffers reused round-robin: one being scored, one queued, one being filled.
    buffers = [np.empty((model.preprocessor_.n_features_out_, chunk_size), dtype=np.float32) for _ in range(3)]
    for n_chunks, (path, chunk, valid, rejected) in enumerate(chunks):
        with summary.timed("preprocess"):
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


def _numbered(result, first_row: int, chunk: pd.DataFrame) -> pd.DataFrame:
    """The valid rows of a chunk with their ``row_number``."""
    if len(result.valid) == len(chunk):
        positions = np.arange(len(chunk))
    else:
        positions = chunk.index.get_indexer(result.valid.index)
    return result.valid.assign(**{ROW_NUMBER: positions + first_row})


def _collect_chunk_garbage(n_chunks: int) -> None:
    """Free the buffers of the chunk just written.

    pandas frames made from Arrow batches sit in reference cycles that keep the Arrow buffers
    alive, and they outlive a few automatic collections while in use, so they end in the oldest
    generation: without full collections, which a large heap makes rare, memory would grow with
    the input. A full collection is cheap when the long-lived objects are frozen (``gc.freeze``,
    as the command line's runner does: ``pipelines.scoring_process_settings``), so then it runs
    every chunk; otherwise it scans the caller's whole heap, so it runs every
    ``RELEASE_EVERY_CHUNKS`` chunks and the young generations are collected in between.
    """
    if gc.get_freeze_count() or n_chunks % RELEASE_EVERY_CHUNKS == 0:
        gc.collect()
    else:
        gc.collect(1)

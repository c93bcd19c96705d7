"""Sentinel patient values: plant them in a cohort, then look for them wherever no patient value may go.

A sentinel is a value no other patient has and no aggregate rounds to (an id, a measurement with
distinctive digits, a category text). :func:`plant` writes one patient's sentinels into a feature table
(and its labels); :class:`SentinelSearch` looks for them in the places a value could leak to: text and
binary files (also inside zip, gzip and Parquet files), folders, MLflow runs, logged models and model
versions (every artifact downloaded), log records, console text, exceptions and HTTP answers. Each
:class:`Hit` names the place, so a failing assertion says where a value leaked::

    hits = SentinelSearch(PATIENT.sentinels()).in_folder(model_dir)
    assert not hits, describe(hits)

A number is looked for as text (``repr``, 3 to 6 significant digits, exponent form, its float32
rounding, with thousands separators for integers), not as part of a longer number, and as raw
little- and big-endian float64, float32, int64 and int32 bytes. Values drawn into images are not
found: search the numbers that images are drawn from instead.
"""

from __future__ import annotations

import gzip
import io
import logging
import re
import struct
import tempfile
import traceback
import warnings
import zipfile
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

_SIGNIFICANT_DIGITS = (3, 4, 5, 6)
_CONTEXT = 30  # characters shown either side of a hit
_SVG_GEOMETRY = re.compile(
    r'\s(?:x|y|x1|x2|y1|y2|cx|cy|r|rx|ry|dx|dy|width|height|viewBox|points|d|transform)="[^"]*"')


@dataclass(frozen=True)
class Sentinel:
    """One planted value.

    Attributes
    ----------
    name : str
        Where it was planted, e.g. "patient 987654321: age"; hits are named by it.
    value : int, float or str
    """

    name: str
    value: int | float | str

    def texts(self) -> tuple[str, ...]:
        """The renderings of the value looked for in text."""
        if isinstance(self.value, str):
            return (self.value,)
        value = float(self.value)
        texts = [repr(self.value), repr(float(np.float32(value))), f"{value:e}"]
        texts += [f"{value:.{digits}g}" for digits in _SIGNIFICANT_DIGITS]
        if isinstance(self.value, (int, np.integer)):
            texts += [f"{self.value:,}", f"{self.value:_}", repr(value)]
        # Longest first: a hit then reports the most precise rendering found at a place.
        return tuple(sorted(set(texts), key=len, reverse=True))

    def blobs(self) -> tuple[bytes, ...]:
        """The binary encodings of the value looked for in bytes."""
        if isinstance(self.value, str):
            return (self.value.encode("utf-8"),)
        value = float(self.value)
        blobs = [struct.pack(f"{order}{kind}", value) for order in "<>" for kind in "df"]
        if isinstance(self.value, (int, np.integer)):
            blobs += [struct.pack(f"{order}{kind}", int(self.value)) for order in "<>" for kind in "qi"
                      if kind == "q" or abs(int(self.value)) < 2**31]
        return tuple(blobs)

    def pattern(self) -> re.Pattern:
        """A regular expression matching any rendering, not inside a longer number."""
        alternatives = "|".join(re.escape(text) for text in self.texts())
        if isinstance(self.value, str):
            return re.compile(alternatives)
        return re.compile(rf"(?<![0-9.])(?:{alternatives})(?![0-9]|\.[0-9])")


@dataclass(frozen=True)
class Hit:
    """A sentinel found somewhere."""

    sentinel: str
    place: str
    found: str
    context: str

    def __str__(self) -> str:
        return f"{self.sentinel} found as {self.found!r} in {self.place}: ...{self.context}..."


def describe(hits: list[Hit]) -> str:
    """A failure message: one line per hit."""
    return f"{len(hits)} patient value(s) leaked:\n" + "\n".join(f"  {hit}" for hit in hits)


@dataclass(frozen=True)
class SentinelPatient:
    """One patient's sentinels: an id, feature values and (optionally) labels."""

    id: int | str
    features: dict = field(default_factory=dict)
    labels: dict = field(default_factory=dict)

    def sentinels(self, *, include_id: bool = True, only: tuple[str, ...] | None = None) -> list[Sentinel]:
        """The sentinels to look for: all, without the id, or only the named columns."""
        named = {"id": self.id} | self.features | self.labels
        chosen = only if only is not None else tuple(named)
        if not include_id:
            chosen = tuple(name for name in chosen if name != "id")
        return [Sentinel(f"patient {self.id}: {name}", named[name]) for name in chosen]


def plant(X: pd.DataFrame, Y: pd.DataFrame | None, patient: SentinelPatient, row: int = 0):
    """Copies of ``X`` (indexed by patient id) and ``Y`` with ``patient`` planted in row ``row``.

    The id replaces the row's index label, each feature and label value its cell (a category
    value joins the column's categories). Returns ``(X, Y)``.
    """
    X = X.copy()
    Y = None if Y is None else Y.copy()
    index = X.index.tolist()
    index[row] = patient.id
    X.index = pd.Index(index, name=X.index.name, dtype=object if isinstance(patient.id, str) else None)
    for column, value in patient.features.items():
        if isinstance(X[column].dtype, pd.CategoricalDtype) and value not in X[column].cat.categories:
            X[column] = X[column].cat.add_categories([value])
        X.iloc[row, X.columns.get_loc(column)] = value
    if Y is not None:
        Y.index = X.index
        for column, value in patient.labels.items():
            Y.iloc[row, Y.columns.get_loc(column)] = value
    return X, Y


class SentinelSearch:
    """Looks for sentinels in texts, bytes, files, MLflow, logs, exceptions and HTTP answers.

    Parameters
    ----------
    sentinels : list of Sentinel
        What to look for.
    """

    def __init__(self, sentinels):
        self.sentinels = list(sentinels)
        self._patterns = [(sentinel, sentinel.pattern()) for sentinel in self.sentinels]

    # -- the primitives -------------------------------------------------------------------------

    def in_text(self, text: str, place: str) -> list[Hit]:
        """Every sentinel rendered in ``text``."""
        hits = []
        for sentinel, pattern in self._patterns:
            match = pattern.search(text)
            if match:
                start, end = max(0, match.start() - _CONTEXT), match.end() + _CONTEXT
                hits.append(Hit(sentinel.name, place, match.group(), text[start:end].replace("\n", "\\n")))
        return hits

    def in_bytes(self, data: bytes, place: str) -> list[Hit]:
        """Every sentinel in ``data``, as text (any byte taken as one character) or binary."""
        hits = self.in_text(data.decode("latin-1"), place)
        found = {hit.sentinel for hit in hits}
        for sentinel in self.sentinels:
            if sentinel.name in found:
                continue
            for blob in sentinel.blobs():
                at = data.find(blob)
                if at >= 0:
                    hits.append(Hit(sentinel.name, place, f"{len(blob)} raw bytes {blob.hex()}",
                                    f"offset {at}"))
                    break
        return hits

    # -- files and folders ----------------------------------------------------------------------

    def in_file(self, path: str | Path, place: str | None = None) -> list[Hit]:
        """The file's bytes, and the content inside it when it is a zip, gzip or Parquet file."""
        path = Path(path)
        place = place or str(path)
        data = path.read_bytes()
        return self._in_content(data, place)

    def _in_content(self, data: bytes, place: str) -> list[Hit]:
        hits = self.in_bytes(data, place)
        if data[:4] == b"PK\x03\x04":  # zip: torch.save, .npz, .xlsx, ...
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                for member in archive.namelist():
                    hits += self._in_content(archive.read(member), f"{place}!{member}")
        elif data[:2] == b"\x1f\x8b":
            hits += self._in_content(gzip.decompress(data), f"{place} (gunzipped)")
        elif data[:4] == b"PAR1":  # Parquet pages may be compressed: look at the values
            import pyarrow.parquet as pq

            frame = pq.read_table(io.BytesIO(data)).to_pandas()
            hits += self.in_text(frame.to_csv(), f"{place} (Parquet values)")
        return _unique(hits)

    def in_html(self, html: str, place: str) -> list[Hit]:
        """A web page without its SVG geometry (positions and sizes of shapes, which are pixels, not
        values: a bar 66.5 pixels wide is not an age of 66.5); text, other attributes and SVG labels
        are searched."""
        return self.in_text(_SVG_GEOMETRY.sub("", html), place)

    def in_folder(self, folder: str | Path, place: str | None = None, *, skip=()) -> list[Hit]:
        """Every file under ``folder`` (except the relative paths in ``skip``)."""
        folder = Path(folder)
        place = place or str(folder)
        hits = []
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder).as_posix()
            if path.is_file() and relative not in skip:
                hits += self.in_file(path, f"{place}/{relative}")
        return hits

    # -- MLflow -----------------------------------------------------------------------------------

    def in_mlflow_run(self, run_id: str) -> list[Hit]:
        """A run's params, metrics (with their histories), tags, inputs, every artifact, and every
        model logged from it (their params, metrics, tags and artifacts)."""
        import mlflow

        client = mlflow.MlflowClient()
        run = client.get_run(run_id)
        place = f"MLflow run {run_id}"
        hits = self._in_entries(run.data.params, f"{place} param")
        hits += self._in_entries(run.data.tags, f"{place} tag")
        for key in run.data.metrics:
            history = client.get_metric_history(run_id, key)
            hits += self._in_metric(key, [metric.value for metric in history], f"{place} metric")
        if run.inputs is not None:
            for dataset in run.inputs.dataset_inputs or ():
                hits += self.in_text(repr(dataset.dataset), f"{place} dataset input")
        with tempfile.TemporaryDirectory() as folder:
            local = mlflow.artifacts.download_artifacts(run_id=run_id, dst_path=folder)
            hits += self.in_folder(local, f"{place} artifact")
        experiment = run.info.experiment_id
        for logged in client.search_logged_models(experiment_ids=[experiment],
                                                  filter_string=f"source_run_id = '{run_id}'"):
            hits += self.in_mlflow_model(f"models:/{logged.model_id}")
        return hits

    def in_mlflow_model(self, model_uri: str) -> list[Hit]:
        """Every artifact of an MLflow model URI; for a logged model (``models:/m-...``) also its
        params, metrics and tags, for a model version (``models:/<name>/<version>``) also its tags,
        description and those of its registered model."""
        import mlflow

        client = mlflow.MlflowClient()
        hits = []
        target = model_uri[len("models:/"):] if model_uri.startswith("models:/") else None
        if target is not None and "/" in target:
            name, number = target.split("/", 1)
            version = client.get_model_version(name, number)
            registered = client.get_registered_model(name)
            hits += self._in_entries(version.tags, f"{model_uri} tag")
            hits += self._in_entries(registered.tags, f"registered model {name} tag")
            hits += self.in_text(f"{version.description} {registered.description}", f"{model_uri} description")
        elif target is not None and "@" not in target:
            logged = client.get_logged_model(target)
            hits += self._in_entries(logged.params, f"{model_uri} param")
            hits += self._in_entries(logged.tags, f"{model_uri} tag")
            for metric in logged.metrics or ():
                hits += self._in_metric(metric.key, [metric.value], f"{model_uri} metric")
        with tempfile.TemporaryDirectory() as folder:
            local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=folder)
            hits += self.in_folder(local, f"{model_uri} artifact")
        return hits

    def _in_entries(self, entries: dict, place: str) -> list[Hit]:
        hits = []
        for key, value in (entries or {}).items():
            hits += self.in_text(f"{key}={value}", f"{place} {key!r}")
        return hits

    def _in_metric(self, key: str, values: list[float], place: str) -> list[Hit]:
        hits = self.in_text(key, f"{place} name {key!r}")
        for sentinel in self.sentinels:
            if isinstance(sentinel.value, str):
                continue
            targets = {float(sentinel.value), float(np.float32(sentinel.value))}
            equal = [value for value in values if value in targets]
            if equal:
                hits.append(Hit(sentinel.name, f"{place} {key!r}", f"the value {equal[0]!r}", "metric value"))
        text = " ".join(repr(value) for value in values)
        return hits + self.in_text(text, f"{place} {key!r} values")

    # -- logs, console, errors, HTTP --------------------------------------------------------------

    def in_log_records(self, records, place: str = "log") -> list[Hit]:
        """Log records: their messages, arguments, exception texts and stack texts."""
        hits = []
        for record in records:
            parts = [record.getMessage(), repr(record.args), record.exc_text or "", record.stack_info or ""]
            if record.exc_info and record.exc_info[1] is not None:
                parts.append("".join(traceback.format_exception(*record.exc_info)))
            hits += self.in_text("\n".join(parts), f"{place} record {record.name}:{record.levelname}")
        return hits

    def in_exception(self, error: BaseException, place: str = "exception") -> list[Hit]:
        """An exception's text, repr and notes, and those of the exceptions it was raised from."""
        hits, seen = [], set()
        while error is not None and id(error) not in seen:
            seen.add(id(error))
            parts = [str(error), repr(error), *getattr(error, "__notes__", ())]
            hits += self.in_text("\n".join(parts), f"{place} ({type(error).__name__})")
            error = error.__cause__ or error.__context__
        return hits

    def in_http(self, status: int, headers, body: bytes, place: str) -> list[Hit]:
        """An HTTP answer: its status line, headers and body."""
        head = f"{status}\n" + "\n".join(f"{key}: {value}" for key, value in dict(headers).items())
        return self.in_text(head, f"{place} headers") + self.in_bytes(body, f"{place} body")

    def in_captured(self, captured: Captured, place: str) -> list[Hit]:
        """What :func:`capture` recorded: console text, log records and warnings."""
        hits = self.in_text(captured.console, f"{place} console")
        hits += self.in_log_records(captured.records, f"{place} log")
        for warning in captured.warnings:
            hits += self.in_text(str(warning.message), f"{place} warning {warning.category.__name__}")
        return hits


@dataclass
class Captured:
    """Console text, log records (every level) and warnings recorded by :func:`capture`."""

    console: str = ""
    records: list = field(default_factory=list)
    warnings: list = field(default_factory=list)


class _Collect(logging.Handler):
    def __init__(self, records: list):
        super().__init__(logging.DEBUG)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.format(record)  # fills exc_text
        self.records.append(record)


@contextmanager
def capture():
    """Record ``sys.stdout``, ``sys.stderr``, every log record and every warning shown in the block.

    For module-scoped fixtures, where ``capsys`` and ``caplog`` are not available. Warning
    filters stay as they are (a warning the test configuration turns into an error still raises).
    """
    captured = Captured()
    root = logging.getLogger()
    handler = _Collect(captured.records)
    level = root.level
    out, err = io.StringIO(), io.StringIO()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        with warnings.catch_warnings(record=True) as shown, redirect_stdout(out), redirect_stderr(err):
            try:
                yield captured
            finally:
                captured.warnings = list(shown)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        captured.console = out.getvalue() + err.getvalue()


def _unique(hits: list[Hit]) -> list[Hit]:
    seen, unique = set(), []
    for hit in hits:
        if (hit.sentinel, hit.place) not in seen:
            seen.add((hit.sentinel, hit.place))
            unique.append(hit)
    return unique

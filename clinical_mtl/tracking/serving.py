"""Checks that the MLflow model runs on every request, with errors that never quote a value.

The MLflow model (``clinical_mtl/mlflow_model_code.py``) validates its input
with the cohort schema stored with the model before predicting. Whatever is
wrong, the answer names row positions, columns and rules, never a value: the
rows of a request are patients.

MLflow's scoring server (``mlflow models serve``, MLflow 3.17) repeats the
request in two of its error paths, and this module keeps both out of reach:

* a failed signature check (``mlflow.pyfunc._validate_prediction_input``:
  "Failed to enforce schema of data '<the rows>'"): the signature's input
  columns are optional and of any type (:func:`permissive_input_schema`), so
  that check cannot fail; types, ranges and categories are checked here;
* an ``MlflowException`` raised by ``predict`` gets "Failed to predict data
  '<the rows>'" put in front of its message by the server
  (``mlflow/pyfunc/scoring_server/__init__.py``, ``invocations``), and any
  other exception is answered with its stack trace: :class:`RequestRejected`
  keeps the message it was raised with, and ``predict`` raises nothing else.

The server also quotes a body that is not JSON in full, before any model
code runs (``_decode_json_input``), and answers a CSV body with a stack trace;
no setting avoids either. ``clinical-mtl serve --model <model uri>``
serves MLflow's own app behind :class:`RequestGuard`, which refuses such
bodies, and bodies above a size, with values-free answers; behind plain
``mlflow models serve``, a reverse proxy must do the same.
"""

from __future__ import annotations

import json
import logging
import os
import traceback
from dataclasses import replace

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException

from ..data.schema import CohortSchema
from ..exceptions import InputDataError, one_line
from ..model.outputs import missing_by_design

MAX_ROWS_ENV = "CLINICAL_MTL_MAX_ROWS_PER_REQUEST"
DEFAULT_MAX_ROWS = 10_000
MAX_BYTES_ENV = "CLINICAL_MTL_MAX_REQUEST_BYTES"
DEFAULT_MAX_BYTES = 8 * 2**20
_SERVING_FLAG = "_MLFLOW_IS_IN_SERVING_ENVIRONMENT"  # set by MLflow's scoring server at start
_SHOWN_ROWS = 10
_logger = logging.getLogger(__name__)


class RequestRejected(MlflowException):
    """An ``MlflowException`` (HTTP 400 by default) whose message cannot be changed.

    MLflow's scoring server rewrites the message of an ``MlflowException``
    raised by ``predict`` to start with the whole request
    (``e.message = f"Failed to predict data '{data}'. ..."``); this one keeps
    the values-free message it was raised with.
    """

    def __init__(self, message: str, error_code: str = "INVALID_PARAMETER_VALUE"):
        from mlflow.protos import databricks_pb2

        super().__init__(message, error_code=getattr(databricks_pb2, error_code))

    @property
    def message(self) -> str:
        return self._message

    @message.setter
    def message(self, value: str) -> None:
        if "_message" not in self.__dict__:  # the first assignment, by MlflowException.__init__
            self._message = value


def max_rows_per_request() -> int:
    """The most rows one served request may hold: ``CLINICAL_MTL_MAX_ROWS_PER_REQUEST``, default 10,000."""
    text = os.environ.get(MAX_ROWS_ENV)
    if text is None:
        return DEFAULT_MAX_ROWS
    try:
        value = int(text)
    except ValueError:
        raise RequestRejected(f"{MAX_ROWS_ENV} must be a whole number above 0.", "INTERNAL_ERROR") from None
    if value < 1:
        raise RequestRejected(f"{MAX_ROWS_ENV} must be a whole number above 0.", "INTERNAL_ERROR")
    return value


def in_serving_environment() -> bool:
    """Whether this process is MLflow's scoring server (which sets a flag in the environment at start)."""
    return os.environ.get(_SERVING_FLAG, "").lower() == "true"


def permissive_input_schema(feature_names):
    """The signature's input: every feature column optional and of any type.

    MLflow cannot reject such an input (its rejections quote the rows); the
    model's own check (:func:`validate_request`) does, without quoting them.
    """
    from mlflow.types import ColSpec, Schema
    from mlflow.types.schema import AnyType

    return Schema([ColSpec(AnyType(), name, required=False) for name in feature_names])


def validate_request(schema: CohortSchema, frame: pd.DataFrame, *, max_rows: int | None = None) -> pd.DataFrame:
    """Check a request's rows with the cohort schema; return its features typed for the model.

    Parameters
    ----------
    schema : CohortSchema
        The model's schema (``schema_for_model`` of the stored cohort schema).
    frame : DataFrame
        The request's rows: the feature columns (an id column is not needed
        and is ignored; rows are named by their position, from 0).
    max_rows : int, default=None
        Refuse requests with more rows.

    Returns
    -------
    DataFrame
        The features, typed as ``CohortSchema.validate`` types them, indexed like ``frame``.

    Raises
    ------
    RequestRejected
        Naming the missing columns, or the rejected rows with their columns and
        rules; never a value.
    """
    if not isinstance(frame, pd.DataFrame):
        raise RequestRejected("Expected a table of the model's feature columns.")
    if max_rows is not None and len(frame) > max_rows:
        raise RequestRejected(f"At most {max_rows} rows per request; this one has {len(frame)}: split it.")
    missing = [name for name in schema.feature_names if name not in frame.columns]
    if missing:
        raise RequestRejected(f"The request lacks the feature column(s) {missing} of the '{schema.cohort}' schema.")
    table = frame[schema.feature_names].assign(**{schema.id_column: np.arange(len(frame))})
    try:
        result = schema.validate(table, source="the request")
    except InputDataError as error:
        raise RequestRejected(one_line(error)) from None
    if len(result.rejected):
        raise RequestRejected(rejection_message(schema, table, len(result.rejected)))
    return result.valid[schema.feature_names]


def rejection_message(schema: CohortSchema, table: pd.DataFrame, n_rejected: int) -> str:
    """One line naming, per failing column, its rule and the rows (positions) that break it.

    Built from the schema's names and rules only, by checking each column on
    its own: nothing of the request's text can reach it.
    """
    parts = []
    for feature in schema.features:
        alone = replace(schema, features=(feature,))
        rows = alone.validate(table[[schema.id_column, feature.name]]).rejected["row_number"].tolist()
        if rows:
            parts.append(f"column '{feature.name}' must be {_rule(feature)} (row(s) {_rows(rows)})")
    return (f"{n_rejected} of {len(table)} row(s) rejected by the '{schema.cohort}' schema: "
            + "; ".join(parts) + ".")


def check_outputs(predictions: pd.DataFrame) -> pd.DataFrame:
    """Refuse predictions with a non-finite number: no class or value is returned for them.

    A NaN that is an answer (``outputs.missing_by_design``: a survival median
    beyond the follow-up, flagged as such) is not a failure.

    Raises
    ------
    RequestRejected
        Naming the rows (positions) and output columns.
    """
    numbers = predictions.select_dtypes("number")
    finite = np.isfinite(numbers.to_numpy(dtype=np.float64)) | missing_by_design(predictions)[numbers.columns].to_numpy()
    if finite.all():
        return predictions
    rows = np.flatnonzero(~finite.all(axis=1)).tolist()
    columns = numbers.columns[~finite.all(axis=0)].tolist()
    raise RequestRejected(f"The model's output is not finite for row(s) {_rows(rows)} (columns {columns}); "
                          "no prediction is returned for this request.")


def check_params(top_k, coverage) -> tuple[int, float]:
    """The ``top_k`` (0 or more) and ``interval_coverage`` (in (0, 1)) parameters, checked."""
    if isinstance(top_k, bool) or not float(top_k).is_integer() or top_k < 0:
        raise RequestRejected("The parameter 'top_k' must be a whole number, 0 or more.")
    if not 0 < float(coverage) < 1:
        raise RequestRejected("The parameter 'interval_coverage' must be between 0 and 1.")
    return int(top_k), float(coverage)


def unexpected_error(error: BaseException) -> RequestRejected:
    """A values-free 500 for an error that should not happen; the server log gets where it happened.

    Only the exception type and the code locations are logged: an exception's
    message may quote the data.
    """
    frames = "".join(traceback.format_tb(error.__traceback__))
    _logger.error("clinical_mtl prediction failed with %s at\n%s", type(error).__name__, frames)
    return RequestRejected(f"The model failed on this request ({type(error).__name__}); the server log says where.",
                           "INTERNAL_ERROR")


def _rule(feature) -> str:
    if feature.type == "boolean":
        text = "true/false or 1/0"
    elif feature.type == "categorical":
        text = feature.describe_rule() if feature.categories is not None else "text"
    elif feature.min is None and feature.max is None:
        text = feature.describe_rule()
    else:
        text = f"a number, {feature.describe_rule()}"
    return text + ("" if feature.nullable else ", required")


def _rows(rows: list[int]) -> str:
    shown = ", ".join(str(row) for row in rows[:_SHOWN_ROWS])
    return shown + (f" and {len(rows) - _SHOWN_ROWS} more" if len(rows) > _SHOWN_ROWS else "")


class RequestGuard:
    """ASGI middleware in front of MLflow's scoring app: values-free answers where MLflow's quote the body.

    On ``POST /invocations`` it answers, without calling MLflow: 413 to a body
    over ``max_bytes``, 415 to a body that is not ``application/json``, 400 to
    a body that is not JSON (MLflow would quote it). Any other answer of 400 or
    more loses its ``stack_trace`` field. Other paths pass through.

    Parameters
    ----------
    app : ASGI application
        Typically ``mlflow.pyfunc.scoring_server.init(model)``.
    max_bytes : int, default=8 MiB
    """

    def __init__(self, app, max_bytes: int = DEFAULT_MAX_BYTES):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != "/invocations" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        body, refusal = await self._read(scope, receive)
        if refusal is not None:
            return await _answer(send, *refusal)
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, _without_stack_trace(send))

    async def _read(self, scope, receive) -> tuple[bytes, tuple | None]:
        headers = dict(scope.get("headers") or [])
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if content_type != b"application/json":
            return b"", (415, "BAD_REQUEST", "Send the rows as application/json "
                         '({"dataframe_split": {"columns": [...], "data": [...]}}).')
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return b"", (400, "BAD_REQUEST", "The client closed the request.")
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                return b"", (413, "BAD_REQUEST", f"At most {self.max_bytes} bytes per request: split it.")
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        try:
            json.loads(body)
        except (ValueError, UnicodeDecodeError):  # JSONDecodeError is a ValueError
            return b"", (400, "BAD_REQUEST", "The body is not valid JSON (UTF-8).")
        return body, None


async def _answer(send, status: int, code: str, message: str) -> None:
    content = json.dumps({"error_code": code, "message": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(content)).encode())]})
    await send({"type": "http.response.body", "body": content})


def _without_stack_trace(send):
    """``send`` for an answer of 400 or more: its JSON body without ``stack_trace`` (code and exception text)."""
    state = {"start": None, "chunks": []}

    async def guarded(message):
        if message["type"] == "http.response.start" and message["status"] >= 400:
            state["start"] = message
            return
        if state["start"] is None or message["type"] != "http.response.body":
            return await send(message)
        state["chunks"].append(message.get("body", b""))
        if message.get("more_body", False):
            return
        body = b"".join(state["chunks"])
        try:
            content = json.loads(body)
        except ValueError:
            content = None
        if isinstance(content, dict) and "stack_trace" in content:
            del content["stack_trace"]
            body = json.dumps(content).encode()
        headers = [(key, value) for key, value in state["start"].get("headers", []) if key.lower() != b"content-length"]
        await send({**state["start"], "headers": headers + [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    return guarded


def create_app(model_uri: str, *, max_bytes: int | None = None):
    """MLflow's scoring app for ``model_uri`` behind :class:`RequestGuard`.

    Parameters
    ----------
    model_uri : str
        Any MLflow model URI (``models:/pbc_mtl@champion``, a folder, ...).
    max_bytes : int, default=None
        Largest body; default ``CLINICAL_MTL_MAX_REQUEST_BYTES`` or 8 MiB.
    """
    from mlflow.pyfunc import scoring_server

    if max_bytes is None:
        max_bytes = int(os.environ.get(MAX_BYTES_ENV, DEFAULT_MAX_BYTES))
    return RequestGuard(scoring_server.init(scoring_server.load_model_with_mlflow_config(model_uri)), max_bytes)

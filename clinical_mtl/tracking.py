"""MLflow tracking: every fit recorded, every fitted model an MLflow model.

``autolog()`` turns tracking on for every later ``MultiTaskMLP.fit``: the fit
logs into the active run (a nested run if the active run already holds a fit,
a new run if none is active) its parameters, a summary of its training data,
per-epoch losses and task weights as step metrics, the validation metrics per
outcome, the training time, the global view of its explanations (mean
absolute SHAP values and beeswarm images) and the model. ``log_fit`` does the
same for one fitted model, explicitly.

With no tracking URI configured, MLflow writes to ``mlflow.db`` (SQLite) in the
working directory and artifacts to ``./mlruns``; ``mlflow ui --backend-store-uri
sqlite:///mlflow.db`` opens it. ``MLFLOW_TRACKING_URI=http://host:5000`` points
everything at an ``mlflow server`` instead.

Patient data stays out of MLflow: the data summary holds counts and fractions
only, and the model's input example is a synthetic row made from the learned
per-feature medians and first categories, never a patient's row. The logged
model is a folder of JSON and a weights-only ``state_dict``, wrapped by a
models-from-code pyfunc: nothing is pickled, and loading works with
``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false``.

``mlflow`` is imported inside the functions, so ``import clinical_mtl`` stays fast.
"""

from __future__ import annotations

import json
import math
import re
import tempfile
import time
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from . import __version__
from .batch_io import formula_safe_frame
from .conformal import DEFAULT_COVERAGE
from .estimator import MultiTaskMLP
from .exceptions import InputDataError
from .explain import global_importance, save_beeswarm_plots
from .features import BOOLEAN, CATEGORICAL, as_frame, prepare_features
from .hooks import add_fit_listener, remove_fit_listener
from .outputs import output_columns
from .persistence import load_model, save_model
from .preprocessing import CategoricalEncoding
from .schema import CohortSchema

MODEL_ARTIFACT = "model"
EXPLANATION_ROWS = 1000
FIT_LOGGED_TAG = "clinical_mtl.fit_logged"
_MODEL_CODE = Path(__file__).with_name("mlflow_model_code.py")
_REQUIREMENTS = ("torch", "mlflow", "scikit-learn", "scipy", "pandas", "numpy", "pyarrow")
_autolog_settings: dict = {}


def autolog(disable: bool = False, *, log_models: bool = True, registered_model_name: str | None = None) -> None:
    """Track every subsequent ``MultiTaskMLP.fit`` in MLflow.

    Parameters
    ----------
    disable : bool, default=False
        Turn tracking off again.
    log_models : bool, default=True
        Log the fitted model (as the MLflow model ``model``) with each fit.
    registered_model_name : str, default=None
        Also register every logged model under this name.

    Examples
    --------
    >>> from clinical_mtl import MultiTaskMLP, tracking
    >>> tracking.autolog()
    >>> model = MultiTaskMLP().fit(X, Y)  # doctest: +SKIP
    >>> tracking.autolog(disable=True)
    """
    if disable:
        remove_fit_listener(_track_fit)
        _autolog_settings.clear()
        return
    _autolog_settings.update(log_models=log_models, registered_model_name=registered_model_name)
    add_fit_listener(_track_fit)


@contextmanager
def _track_fit(model, X, y):
    import mlflow

    started = _start_run_for_fit()
    start = time.perf_counter()
    try:
        yield
    except BaseException:
        if started:
            mlflow.end_run(status="FAILED")
        raise
    try:
        log_fit(
            model, X, y,
            training_seconds=time.perf_counter() - start,
            log_models=_autolog_settings.get("log_models", True),
            registered_model_name=_autolog_settings.get("registered_model_name"),
        )
    finally:
        if started:
            mlflow.end_run()


def _start_run_for_fit() -> bool:
    """Make sure a run is active for the coming fit; return whether one was started."""
    import mlflow

    active = mlflow.active_run()
    if active is None:
        mlflow.start_run()
        return True
    if mlflow.get_run(active.info.run_id).data.tags.get(FIT_LOGGED_TAG) == "true":
        mlflow.start_run(nested=True)
        return True
    return False


def log_fit(
    model: MultiTaskMLP,
    X,
    y,
    *,
    training_seconds: float | None = None,
    log_models: bool = True,
    log_explanations: bool = True,
    registered_model_name: str | None = None,
    schema: CohortSchema | None = None,
) -> str:
    """Log a fitted model and what it learned from into the active run (or a new one).

    Parameters
    ----------
    model : MultiTaskMLP
        The fitted model.
    X, y : DataFrame or array-like
        The data it was fitted on; only counts and fractions are logged.
    training_seconds : float, default=None
        Wall time of the fit, logged as ``training_seconds`` when given.
    log_models : bool, default=True
        Also log the model as the MLflow model ``model``.
    log_explanations : bool, default=True
        Also log the global view of the explanations on (up to 1,000 of) the
        training rows: mean absolute SHAP value per feature and outcome
        (``explanations/global_importance.csv``) and beeswarm images.
    registered_model_name : str, default=None
        Register the logged model under this name.
    schema : CohortSchema, default=None
        The cohort schema the model was trained with; logged as
        ``cohort_schema.yaml`` and stored with the model.

    Returns
    -------
    str
        The run id.
    """
    import mlflow
    from mlflow.entities import Metric, Param

    with _active_run() as run:
        run_id = run.info.run_id
        client = mlflow.MlflowClient()
        now = int(time.time() * 1000)
        params = [Param(key, _param_text(value)) for key, value in model.get_params().items()]
        metrics = [Metric(key, value, now, 0) for key, value in _summary_metrics(model, X).items()]
        metrics += _history_metrics(model.history_, now)
        if model.validation_metrics_ is not None:
            metrics += [Metric(key, value, now, 0) for key, value in _table_metrics(model.validation_metrics_, "valid").items()]
        if training_seconds is not None:
            metrics.append(Metric("training_seconds", float(training_seconds), now, 0))
        client.log_batch(run_id, params=params)
        for start in range(0, len(metrics), 1000):
            client.log_batch(run_id, metrics=metrics[start : start + 1000])
        mlflow.log_dict(training_data_summary(model, X, y), "training_data.json")
        mlflow.set_tags({
            FIT_LOGGED_TAG: "true",
            "clinical_mtl.version": __version__,
            "clinical_mtl.outcomes": json.dumps(model.tasks_),
        })
        if log_explanations:
            _log_global_explanations(model, X)
        if schema is not None:
            mlflow.log_text(yaml.safe_dump(schema.to_dict(), sort_keys=False), "cohort_schema.yaml")
        if log_models:
            info = log_model(model, registered_model_name=registered_model_name, schema=schema)
            mlflow.set_tag("clinical_mtl.model_uri", info.model_uri)
        return run_id


def _log_global_explanations(model: MultiTaskMLP, X) -> None:
    import mlflow

    features = as_frame(X)
    if len(features) > EXPLANATION_ROWS:
        features = features.sample(EXPLANATION_ROWS, random_state=0)
    explanations = model.explain(features)
    with tempfile.TemporaryDirectory() as folder:
        formula_safe_frame(global_importance(explanations).reset_index()).to_csv(
            Path(folder) / "global_importance.csv", index=False)
        save_beeswarm_plots(explanations, folder)
        mlflow.log_artifacts(folder, artifact_path="explanations")


@contextmanager
def _active_run():
    import mlflow

    active = mlflow.active_run()
    if active is not None:
        yield active
        return
    with mlflow.start_run() as run:
        yield run


def log_model(
    model: MultiTaskMLP,
    name: str = MODEL_ARTIFACT,
    *,
    registered_model_name: str | None = None,
    explain_top_k: int = 0,
    schema: CohortSchema | None = None,
):
    """Log a fitted model as an MLflow pyfunc model with a signature.

    The pyfunc takes the clinical columns (in the signature optional and of
    any type; checked against the model's cohort schema, or without one its
    columns and kinds, by the model itself) and returns the
    flat columns of :func:`clinical_mtl.outputs.flat_predictions`. Its
    ``top_k`` parameter adds the largest SHAP contributions per outcome, its
    ``interval_coverage`` parameter (default 0.9) sets the coverage of the
    regression outcomes' prediction intervals.

    Parameters
    ----------
    model : MultiTaskMLP
        The fitted model.
    name : str, default="model"
        Name of the logged model in the run.
    registered_model_name : str, default=None
        Also register it under this name.
    explain_top_k : int, default=0
        Default of the ``top_k`` parameter (the signature's output columns
        include the contributions when positive).
    schema : CohortSchema, default=None
        The cohort schema the model was trained with, stored with it.

    Returns
    -------
    mlflow.models.model.ModelInfo
    """
    import mlflow

    with tempfile.TemporaryDirectory() as folder:
        saved = save_model(model, Path(folder) / "clinical_mtl_model", schema=schema)
        return mlflow.pyfunc.log_model(
            name=name, registered_model_name=registered_model_name, **_pyfunc_arguments(model, saved, explain_top_k)
        )


def save_pyfunc_model(model_dir: str | Path, path: str | Path) -> Path:
    """Write a model saved by ``persistence.save_model`` as an MLflow pyfunc model folder.

    The same model as :func:`log_model` logs, without a tracking server: what
    ``mlflow.pyfunc.load_model`` and ``mlflow.pyfunc.spark_udf`` take.

    Parameters
    ----------
    model_dir : str or Path
        A folder written by :func:`clinical_mtl.persistence.save_model`.
    path : str or Path
        The MLflow model folder to create (must not exist).

    Returns
    -------
    Path
    """
    import mlflow

    mlflow.pyfunc.save_model(path=str(path), **_pyfunc_arguments(load_model(model_dir), Path(model_dir), 0))
    return Path(path)


def _pyfunc_arguments(model: MultiTaskMLP, saved: Path, top_k: int) -> dict:
    return dict(
        python_model=str(_MODEL_CODE),
        artifacts={"model": str(saved)},
        signature=model_signature(model, top_k=top_k),
        input_example=synthetic_input_example(model),
        pip_requirements=_pinned_requirements(),
    )


def load_native_model(model_uri: str) -> MultiTaskMLP:
    """Load the ``MultiTaskMLP`` behind a logged model (``runs:/...``, ``models:/...``).

    Parameters
    ----------
    model_uri : str
        Any MLflow model URI of a model logged by :func:`log_model`.

    Returns
    -------
    MultiTaskMLP
    """
    with download_model(model_uri) as folder:
        return load_model(folder)


@contextmanager
def download_model(model_uri: str):
    """Download a logged model; yields the folder of its ``model.json`` and weights
    (deleted on exit)."""
    import mlflow

    with tempfile.TemporaryDirectory() as folder:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=folder))
        yield local / "artifacts" / "clinical_mtl_model"


def model_identity(model_uri: str) -> tuple[str | None, str | None, str | None]:
    """Registered name, version and training run id of an MLflow model URI.

    ``models:/<name>@<alias>`` and ``models:/<name>/<version>`` give all three,
    ``runs:/<run>/...`` the run only, ``models:/<model id>`` its run.
    """
    import mlflow

    client = mlflow.MlflowClient()
    if model_uri.startswith("runs:/"):
        return None, None, model_uri.split("/")[1]
    if model_uri.startswith("models:/"):
        target = model_uri[len("models:/"):]
        if "@" in target:
            name, alias = target.split("@", 1)
            version = client.get_model_version_by_alias(name, alias)
            return name, str(version.version), version.run_id
        if "/" in target:
            name, number = target.split("/", 1)
            version = client.get_model_version(name, number)
            return name, str(version.version), version.run_id
        logged = client.get_logged_model(target)
        return logged.name, None, logged.source_run_id
    return None, None, None


def register_model(model_uri: str, name: str, *, alias: str | None = None):
    """Register a logged model and optionally point an alias (e.g. "champion") at it.

    Parameters
    ----------
    model_uri : str
        URI of the logged model.
    name : str
        Registered model name.
    alias : str, default=None
        Alias to set on the new version.

    Returns
    -------
    mlflow.entities.model_registry.ModelVersion
    """
    import mlflow

    version = mlflow.register_model(model_uri, name)
    if alias is not None:
        mlflow.MlflowClient().set_registered_model_alias(name, alias, version.version)
    return version


def model_signature(model: MultiTaskMLP, top_k: int = 0):
    """The MLflow signature: clinical columns in, flat prediction columns out, and the
    ``top_k`` (default ``top_k``) and ``interval_coverage`` (default 0.9) parameters.

    The input columns are optional and of any type: MLflow's own check of a
    signature answers with the request's rows, so the model checks types,
    ranges and categories itself, with its cohort schema (``clinical_mtl.serving``).
    """
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    from .serving import permissive_input_schema

    inputs = permissive_input_schema(list(model.preprocessor_.feature_kinds_))
    outputs = Schema([ColSpec(kind, name) for name, kind in output_columns(model, top_k)])
    params = ParamSchema([
        ParamSpec("top_k", "long", int(top_k)),
        ParamSpec("interval_coverage", "double", DEFAULT_COVERAGE),
    ])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def synthetic_input_example(model: MultiTaskMLP) -> pd.DataFrame:
    """One synthetic row: every numeric feature at its training median, every
    boolean at its median, every categorical at its first category. Not a patient."""
    row = {}
    for encoding in model.preprocessor_.encodings_:
        kind = model.preprocessor_.feature_kinds_[encoding.name]
        if isinstance(encoding, CategoricalEncoding):
            row[encoding.name] = encoding.categories[0] if encoding.categories else None
        elif kind == BOOLEAN:
            row[encoding.name] = bool(round(encoding.median))
        else:
            median = float(encoding.to_units(encoding.median))
            row[encoding.name] = float(f"{median:.3g}")
    return pd.DataFrame([row])


def to_pyfunc_input(model: MultiTaskMLP, X) -> pd.DataFrame:
    """Convert a feature table to plain types (float, bool, text) for the MLflow model.

    The columns are checked by clinical_mtl first, so that a bad value raises an
    error naming the column and rows, and never a value. (The MLflow model checks
    its input again, with its cohort schema.)

    Parameters
    ----------
    model : MultiTaskMLP
        The fitted model.
    X : DataFrame
        Features with the model's columns (extra columns are dropped).

    Returns
    -------
    DataFrame
        Numeric columns float64 with NaN, boolean columns object (True,
        False, None), categorical columns object (text or None).
    """
    frame = as_frame(X)
    if hasattr(model, "feature_names_in_"):
        missing = [name for name in model.feature_names_in_ if name not in frame.columns]
        if missing:
            raise InputDataError(f"X lacks the model's feature columns {missing}.")
        frame = frame[list(model.feature_names_in_)]
    frame = model._feature_frame(frame, reset=False)
    kinds = model.preprocessor_.feature_kinds_
    columns = prepare_features(frame, kinds)
    converted = {}
    for name, values in columns.items():
        if kinds[name] == BOOLEAN:
            converted[name] = np.where(np.isnan(values), None, values == 1.0).astype(object)
        elif kinds[name] == CATEGORICAL:
            converted[name] = np.where(values.codes < 0, None, np.asarray(values, dtype=object))
        else:
            converted[name] = values
    return pd.DataFrame(converted, index=frame.index)


def training_data_summary(model: MultiTaskMLP, X, y) -> dict:
    """Counts and fractions describing the training data (no patient rows).

    Returns
    -------
    dict
        ``n_rows``, ``n_features``, per feature its kind and missing fraction,
        per outcome its kind, labelled rows and (classification) events per class.
    """
    features = as_frame(X)
    kinds = model.preprocessor_.feature_kinds_
    missing = features.isna().mean().to_numpy()
    return {
        "n_rows": int(len(features)),
        "n_features": int(features.shape[1]),
        "features": {
            name: {"kind": kind, "missing_fraction": round(float(fraction), 4)}
            for (name, kind), fraction in zip(kinds.items(), missing)
        },
        "outcomes": {
            name: {"kind": model.tasks_[name]}
            | {key: (_str_keys(value) if isinstance(value, dict) else value) for key, value in counts.items()}
            for name, counts in model.label_counts_.items()
        },
    }


def _summary_metrics(model: MultiTaskMLP, X) -> dict[str, float]:
    features = as_frame(X)
    metrics = {"data.n_rows": float(len(features)), "data.n_features": float(features.shape[1])}
    for name, counts in model.label_counts_.items():
        metrics[f"data.{_key(name)}.n_labelled"] = float(counts["n_labelled"])
        for label, events in counts.get("events", {}).items():
            metrics[f"data.{_key(name)}.events.{_key(str(label))}"] = float(events)
    return metrics


def _history_metrics(history: list[dict], timestamp: int) -> list:
    from mlflow.entities import Metric

    metrics = []
    for record in history:
        prefix = f"member_{record['member']}/"
        for key, value in record.items():
            if key not in ("member", "epoch") and value is not None and math.isfinite(value):
                metrics.append(Metric(prefix + _key(key), float(value), timestamp, int(record["epoch"])))
    return metrics


def log_metrics_table(table: pd.DataFrame, prefix: str) -> None:
    """Log an ``evaluate`` table to the active run as ``<prefix>.<outcome>.<metric>``.

    Parameters
    ----------
    table : DataFrame
        As returned by ``MultiTaskMLP.evaluate``.
    prefix : str
        For example "test".
    """
    import mlflow

    mlflow.log_metrics(_table_metrics(table, prefix))


def _table_metrics(table: pd.DataFrame, prefix: str) -> dict[str, float]:
    return {
        f"{prefix}.{_key(outcome)}.{metric}": float(value)
        for outcome, row in table.drop(columns="kind").iterrows()
        for metric, value in row.items()
        if pd.notna(value)
    }


def _key(name: str) -> str:
    """MLflow metric names allow letters, digits and ``_-. :/``; anything else becomes ``_``."""
    return re.sub(r"[^A-Za-z0-9_\-. :/]", "_", name)


def _param_text(value) -> str:
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(_str_keys(value) if isinstance(value, dict) else list(value), default=str)
    return str(value)


def _str_keys(value):
    if isinstance(value, dict):
        return {str(key): _str_keys(item) for key, item in value.items()}
    return value


def _pinned_requirements() -> list[str]:
    pins = []
    for package in _REQUIREMENTS:
        version = metadata.version(package).split("+")[0]
        pins.append(f"{package}=={version}")
    return pins

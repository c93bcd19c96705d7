"""MLflow tracking: every fit recorded, every fitted model an MLflow model.

``autolog()`` turns tracking on for every later ``MultiTaskMLP.fit``: the fit
runs inside the active run (a nested run if the active run already holds a fit,
a new run named after the data and the model if none is active, see
:func:`run_name`), so that the run's start is the training's, and logs its
parameters, its training data as an MLflow dataset input (digest, column
types and counts: ``mlflow.log_input``), a summary of its training data,
per-epoch losses and task weights as step metrics, the validation metrics per
outcome, the training time, the global view of its explanations (mean
absolute SHAP values and beeswarm images) and the model. ``log_fit`` does the
same for one fitted model, explicitly.

With no tracking URI configured, MLflow writes to ``mlflow.db`` (SQLite) in the
working directory and artifacts to ``./mlruns``; ``mlflow ui --backend-store-uri
sqlite:///mlflow.db`` opens it. ``MLFLOW_TRACKING_URI=http://host:5000`` points
everything at an ``mlflow server`` instead.

Patient data stays out of MLflow: the dataset input and the data summary hold
digests, types, counts and fractions only, and the model's input example is a
synthetic row made from the learned per-feature medians and first categories,
never a patient's row. The logged model is a folder of JSON and a weights-only
``state_dict``, wrapped by a models-from-code pyfunc: nothing is pickled, and
loading works with ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false``.

``mlflow`` is imported inside the functions, so ``import clinical_mtl`` stays fast.
"""

from __future__ import annotations

import json
import math
import re
import tempfile
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import yaml

from .. import __version__
from ..data.schema import CohortSchema
from ..data.writing import formula_safe_frame
from ..evaluation.figures import save_beeswarm_plots
from ..model.estimator import MultiTaskMLP
from ..model.explanation import global_importance
from ..model.features import as_frame
from ..model.hooks import add_fit_listener, remove_fit_listener
from .pyfunc import log_model

EXPLANATION_ROWS = 1000
FIT_LOGGED_TAG = "clinical_mtl.fit_logged"
DATASET_ATTR = "dataset"
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

    started = _start_run_for_fit(run_name(dataset_name(X), type(model).__name__))
    start = time.perf_counter()
    try:
        yield
    except BaseException:
        if started:
            mlflow.end_run(status="FAILED")
        raise
    seconds = time.perf_counter() - start
    try:
        if started:
            mlflow.MlflowClient().update_run(
                mlflow.active_run().info.run_id,
                name=run_name(dataset_name(X), type(model).__name__, model.tasks_))
        log_fit(
            model, X, y,
            training_seconds=seconds,
            log_models=_autolog_settings.get("log_models", True),
            registered_model_name=_autolog_settings.get("registered_model_name"),
        )
    finally:
        if started:
            mlflow.end_run()


def _start_run_for_fit(name: str) -> bool:
    """Make sure a run is active for the coming fit; return whether one was started (named ``name``
    until the fit, which knows the outcomes, renames it)."""
    import mlflow

    active = mlflow.active_run()
    if active is None:
        mlflow.start_run(run_name=name)
        return True
    if mlflow.get_run(active.info.run_id).data.tags.get(FIT_LOGGED_TAG) == "true":
        mlflow.start_run(run_name=name, nested=True)
        return True
    return False


def run_name(dataset: str | None, model_name: str, outcomes=None) -> str:
    """A run's name: its data and its model, e.g. ``"pbc · MultiTaskMLP(cirrhosis, death)"``.

    Parameters
    ----------
    dataset : str or None
        The training data's name (left out when None).
    model_name : str
        The estimator's class name.
    outcomes : iterable of str, default=None
        The outcomes it learns (left out when None).
    """
    model = model_name if outcomes is None else f"{model_name}({', '.join(str(o) for o in outcomes)})"
    return model if not dataset else f"{dataset} · {model}"


def dataset_name(X) -> str | None:
    """The name a feature table carries in ``X.attrs["dataset"]`` (``load_pbc`` sets "pbc"), or None."""
    name = getattr(X, "attrs", {}).get(DATASET_ATTR)
    return str(name) if name else None


def log_training_data(X, y, name: str | None = None, context: str = "training") -> None:
    """Record a table as an input of the active run (``mlflow.log_input``): its digest, column
    types and row and cell counts, never its rows.

    Parameters
    ----------
    X : DataFrame or array-like
        The features.
    y : DataFrame, Series or array-like, or None
        The labels, recorded with the features as one table.
    name : str, default=None
        The dataset's name; default ``dataset_name(X)`` or "training data".
    context : str, default="training"
        The input's role in the run.
    """
    import mlflow

    features = as_frame(X)
    table = features.reset_index(drop=True)
    targets = None
    if y is not None:
        labels = pd.DataFrame(y)  # a new frame: renaming its columns leaves the caller's alone
        if isinstance(y, pd.Series) or (not isinstance(y, pd.DataFrame) and labels.shape[1] == 1):
            labels.columns = [getattr(y, "name", None) or "y"]
        labels.columns = [str(column) for column in labels.columns]
        if not set(labels.columns) & set(table.columns) and len(labels) == len(table):
            table = pd.concat([table, labels.reset_index(drop=True)], axis=1)
            targets = labels.columns[0] if labels.shape[1] == 1 else None
    with warnings.catch_warnings():  # MLflow's hint about integer columns concerns model signatures
        warnings.filterwarnings("ignore", "Hint: Inferred schema contains integer", UserWarning)
        dataset = mlflow.data.from_pandas(table, name=name or dataset_name(X) or "training data", targets=targets)
        mlflow.log_input(dataset, context=context)


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
    dataset: str | None = None,
) -> str:
    """Log a fitted model and what it learned from into the active run (or a new one,
    named by :func:`run_name`).

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
    dataset : str, default=None
        The training data's name, for the dataset input and a new run's name;
        default ``X.attrs["dataset"]`` (see :func:`dataset_name`).

    Returns
    -------
    str
        The run id.
    """
    import mlflow
    from mlflow.entities import Metric, Param

    dataset = dataset or dataset_name(X)
    with _active_run(run_name(dataset, type(model).__name__, model.tasks_)) as run:
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
        log_training_data(X, y, dataset)
        mlflow.log_dict(training_data_summary(model, X, y), "training_data.json")
        mlflow.set_tags({
            FIT_LOGGED_TAG: "true",
            "clinical_mtl.version": __version__,
            "clinical_mtl.outcomes": json.dumps(model.tasks_),
            "clinical_mtl.survival_head": model.survival_head_,
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
    # A model fitted on an array is explained on an array (named columns would draw scikit-learn's warning).
    explanations = model.explain(features if hasattr(model, "feature_names_in_") else features.to_numpy())
    with tempfile.TemporaryDirectory() as folder:
        formula_safe_frame(global_importance(explanations).reset_index()).to_csv(
            Path(folder) / "global_importance.csv", index=False)
        save_beeswarm_plots(explanations, folder)
        mlflow.log_artifacts(folder, artifact_path="explanations")


@contextmanager
def _active_run(name: str | None = None):
    import mlflow

    active = mlflow.active_run()
    if active is not None:
        yield active
        return
    with mlflow.start_run(run_name=name) as run:
        yield run


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
        events = counts.get("events", {})
        if not isinstance(events, dict):  # a survival outcome: observed events and censored patients
            metrics[f"data.{_key(name)}.events"] = float(events)
            metrics[f"data.{_key(name)}.censored"] = float(counts["censored"])
            continue
        for label, count in events.items():
            metrics[f"data.{_key(name)}.events.{_key(str(label))}"] = float(count)
    for head, loss in model.survival_head_losses_.items():  # what survival_head="auto" chose by
        metrics[f"survival_head_loss.{head}"] = float(loss)
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
        if not isinstance(value, str) and pd.notna(value)  # not the text of "note"
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



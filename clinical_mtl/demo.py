"""The end-to-end demonstration on the bundled PBC cohort."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pandas as pd
from sklearn.model_selection import train_test_split

from .datasets import load_pbc
from .estimator import MultiTaskMLP

EXPERIMENT = "clinical_mtl_pbc_demo"


@dataclass
class DemoResult:
    """What ``run_pbc_demo`` produced.

    Attributes
    ----------
    model : MultiTaskMLP
        Fitted on the training patients.
    metrics : DataFrame
        ``MultiTaskMLP.evaluate`` on the held-out patients.
    run_id, model_uri : str or None
        The MLflow run and logged model (None without tracking).
    registered_version : int or None
        Version of the registered model (None without tracking).
    """

    model: MultiTaskMLP
    metrics: pd.DataFrame
    run_id: str | None = None
    model_uri: str | None = None
    registered_version: int | None = None


def run_pbc_demo(
    test_size: float = 0.25,
    random_state: int = 0,
    *,
    track: bool = True,
    registered_model_name: str = "pbc_mtl",
    alias: str = "champion",
) -> DemoResult:
    """Fit ``MultiTaskMLP`` with its defaults on PBC and evaluate it on held-out patients.

    The split is stratified on the cirrhosis label (with "unlabelled" as a
    stratum of its own). With tracking, the fit, the held-out metrics
    (``test.<outcome>.<metric>``) and the model are logged to MLflow in the
    experiment ``clinical_mtl_pbc_demo``, and the model is registered under
    ``registered_model_name`` with ``alias`` pointing at the new version.

    Parameters
    ----------
    test_size : float, default=0.25
        Share of patients held out for evaluation.
    random_state : int, default=0
        Seeds the split and the model.
    track : bool, default=True
        Log to MLflow (the configured tracking URI, by default ``mlflow.db`` in
        the working directory) and register the model.
    registered_model_name : str, default="pbc_mtl"
    alias : str, default="champion"

    Returns
    -------
    DemoResult
    """
    X, Y = load_pbc()
    strata = Y["cirrhosis"].astype("string").fillna("unlabelled")
    X_train, X_test, Y_train, Y_test = train_test_split(
        X, Y, test_size=test_size, random_state=random_state, stratify=strata
    )
    start = time.perf_counter()
    model = MultiTaskMLP(random_state=random_state).fit(X_train, Y_train)
    seconds = time.perf_counter() - start
    metrics = model.evaluate(X_test, Y_test)
    if not track:
        return DemoResult(model, metrics)

    import mlflow

    from . import tracking

    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    experiment_id = experiment.experiment_id if experiment else mlflow.create_experiment(EXPERIMENT)
    with mlflow.start_run(experiment_id=experiment_id, run_name="pbc-demo") as run:
        tracking.log_fit(model, X_train, Y_train, training_seconds=seconds)
        tracking.log_metrics_table(metrics, prefix="test")
        model_uri = mlflow.get_run(run.info.run_id).data.tags["clinical_mtl.model_uri"]
    version = tracking.register_model(model_uri, registered_model_name, alias=alias)
    return DemoResult(model, metrics, run.info.run_id, model_uri, int(version.version))

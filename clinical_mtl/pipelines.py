"""Pipelines as configuration: train or score as a YAML file describes.

A pipeline file is read into a typed configuration (:mod:`clinical_mtl.config`:
unknown keys and wrong types are refused, naming the key); relative paths in
it are read from the file's own folder. A training pipeline (``kind: train``)::

    kind: train
    schema: ../data_schemas/pbc.yaml
    data: {dataset: pbc}              # or {path: cohort.csv}: id, features and outcome columns
    split: {test_size: 0.25, random_state: 0, stratify: cirrhosis}
    model: {random_state: 0}          # MultiTaskMLP parameters
    tracking: {experiment: clinical_mtl_pbc, registered_model_name: pbc_mtl, alias: champion}   # or no tracking
    outputs:
      model_dir: ../reports/generated/pbc_model
      metrics: ../reports/generated/pbc_test_metrics.csv
      patients: ../reports/generated/pbc_patients.csv   # the features in schema form, to score
      training_ids: ../reports/generated/pbc_training_ids.csv  # the training split's ids, for reports
      model_card: ../reports/generated/pbc_model_card.md  # and .html beside it
    model_card:                       # all optional
      title: PBC multi-task model
      intended_use: ...
      limitations: [...]
      subgroups: {sex: sex, age_band: {column: age, cuts: [50, 65]}}   # columns, or numeric ones banded
      single_task_comparison: true    # fit each outcome's single-task twin (negative-transfer table)
      n_bootstrap: 200                # resamples of the test metrics' intervals (0: none)

validates the data with the schema (rejected rows are written beside the
metrics and left out), fits ``MultiTaskMLP(tasks=<schema outcomes>)`` on the
training split, evaluates it on the test split (with bootstrap intervals),
writes its model card (see :mod:`clinical_mtl.reporting.model_card`), saves the model
with its schema, and tracks and registers it in MLflow with the card (the MLflow run,
named "<cohort> · MultiTaskMLP(<outcomes>)" unless ``run_name`` is set, starts when
the fit does). A scoring pipeline (``kind: score``) names ``model``, ``input``, ``output`` and optionally
``rejects``, ``top_k``, ``chunk_size``, ``engine`` (``local`` or ``spark``) and
``spark_master``, as ``clinical-mtl score`` does. A report pipeline
(``kind: report``) names ``model`` and ``input`` (patient rows), and optionally
``output`` (a folder; ``reports/patients`` of the working directory), ``scores`` (a ``clinical-mtl score --explain`` file of
those patients), ``training_ids`` (the file a training pipeline's ``outputs.training_ids`` wrote: the pages
of those patients say that their predictions are optimistic), ``top_k``, ``coverage``, ``pdf``, ``intended_use`` and
``limits``, as ``clinical-mtl report`` does. The local scoring engine runs
with :func:`scoring_process_settings`.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from numbers import Real
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import train_test_split

from . import config as pipeline_config
from .config import (
    DataConfig,
    ModelCardConfig,
    PipelineConfig,
    ReportConfig,
    ScoreConfig,
    SubgroupBand,
    TrackingConfig,
    TrainConfig,
)
from .data.schema import CohortSchema, load_schema
from .data.writing import formula_safe_frame
from .exceptions import SchemaError
from .model.estimator import MultiTaskMLP
from .model.tasks import check_one_label_type

if TYPE_CHECKING:
    from .reporting import ModelCard


@dataclass
class TrainResult:
    """What a training pipeline produced."""

    model: MultiTaskMLP
    metrics: pd.DataFrame
    n_rejected: int
    model_dir: Path | None = None
    run_id: str | None = None
    model_uri: str | None = None
    registered: str | None = None
    model_card: ModelCard | None = None
    model_card_path: Path | None = None


def load_pipeline(path: str | Path) -> PipelineConfig:
    """Read a pipeline file into its typed configuration (see :func:`clinical_mtl.config.load_pipeline`).

    Raises
    ------
    PipelineConfigError
        If the file cannot be read, or has an unknown or missing key or a
        value of the wrong type (naming the file and the key's dotted path).
    """
    return pipeline_config.load_pipeline(path)


def run_train(config: TrainConfig) -> TrainResult:
    """Run a ``kind: train`` pipeline (see the module docstring)."""
    with ExitStack() as tracking_run:  # the MLflow run, when tracked: entered just before the fit
        return _run_train(config, tracking_run)


def _run_train(config: TrainConfig, tracking_run: ExitStack) -> TrainResult:
    schema = load_schema(config.schema)
    frame = _training_frame(config.data, schema)
    result = schema.validate(frame)
    outputs = config.outputs
    if len(result.rejected) and outputs.metrics:
        formula_safe_frame(result.rejected).to_csv(_output_path(outputs.metrics).with_suffix(".rejects.csv"),
                                                   index=False)
    features = result.valid.set_index(schema.id_column)[schema.feature_names]
    outcomes = [column for o in schema.outcomes for column in o.label_columns]
    missing = [name for name in outcomes if name not in frame.columns]
    if missing:
        raise SchemaError(f"The training data has no column {missing} for the outcomes of the schema.")
    # The valid rows keep the frame's index, its row positions (see _training_frame): the labels of
    # exactly those rows, in their order, then indexed by id like the features.
    labels = _check_classes(frame[outcomes].iloc[result.valid.index.to_numpy()], schema).set_axis(features.index)

    split = config.split
    strata = labels[split.stratify].astype("string").fillna("unlabelled") if split.stratify else None
    X_train, X_test, Y_train, Y_test = train_test_split(
        features, labels, test_size=split.test_size, random_state=split.random_state, stratify=strata,
    )
    if config.tracking is not None and config.tracking.enabled:
        tracking_run.enter_context(_start_run(config.tracking, schema))
    start = time.perf_counter()
    model = MultiTaskMLP(tasks=schema.tasks, **config.model).fit(X_train, Y_train)
    seconds = time.perf_counter() - start
    card = config.model_card
    evaluation = {"n_bootstrap": card.n_bootstrap, "random_state": split.random_state}
    metrics = model.evaluate(X_test, Y_test, **evaluation)
    train = TrainResult(model, metrics, len(result.rejected))
    if outputs.model_card:
        train.model_card = _model_card(card, model, X_train, Y_train, X_test, Y_test, metrics, evaluation)
        train.model_card_path = _output_path(outputs.model_card)
        train.model_card.save(train.model_card_path)

    if outputs.model_dir:
        from .data.persistence import save_model

        train.model_dir = save_model(model, outputs.model_dir, schema=schema)
    if outputs.metrics:
        formula_safe_frame(metrics.reset_index()).to_csv(_output_path(outputs.metrics), index=False)
    if outputs.patients:
        _write_table(frame[[schema.id_column, *schema.feature_names]], _output_path(outputs.patients))
    if outputs.training_ids:  # patient ids, kept beside the outputs and out of the model and MLflow
        _write_table(X_train.index.to_frame(index=False, name=schema.id_column), _output_path(outputs.training_ids))
    if config.tracking is not None and config.tracking.enabled:
        _track(train, config.tracking, X_train, Y_train, seconds, schema)
    return train


def _model_card(card: ModelCardConfig, model, X_train, Y_train, X_test, Y_test, metrics,
                evaluation: dict) -> ModelCard:
    """The model card of a training pipeline, as its ``model_card`` settings describe."""
    from .evaluation import band
    from .reporting import build_model_card

    groups = {
        name: band(X_test[spec.column], spec.cuts, name=name) if isinstance(spec, SubgroupBand) else X_test[spec]
        for name, spec in card.subgroups.items()
    }
    return build_model_card(
        model, X_train, Y_train, X_test, Y_test, groups=pd.DataFrame(groups) if groups else None,
        single_task=card.single_task_comparison, metrics=metrics, **evaluation,
        title=card.title, intended_use=card.intended_use, limitations=card.limitations,
    )


def _output_path(path: Path) -> Path:
    """An output path of the pipeline, its folder created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def scoring_process_settings() -> Iterator[None]:
    """Tune this process for streaming scoring while the block runs, as the command line scores.

    Torch computes on one thread fewer (one core reads and validates the next
    chunk meanwhile), and the objects alive on entry (modules, the model) are
    frozen out of the cyclic garbage collector, which scoring runs once a
    chunk: about 10% of a run. Both are process-wide, so they belong to the
    program that runs the pipeline, not to :func:`clinical_mtl.scoring.score_files`;
    both are restored on exit (``gc.unfreeze`` also releases objects frozen
    before entry).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads - 1))
    gc.freeze()
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        gc.unfreeze()


def run_score(config: ScoreConfig, progress: bool | None = None, id_column: str | None = None):
    """Run a ``kind: score`` pipeline; returns the ``RunSummary``.

    The local engine runs with :func:`scoring_process_settings`.
    """
    from .scoring import check_scoring_paths, load_model_for_scoring, score_files

    paths = (config.input, config.output, config.rejects)
    check_scoring_paths(*paths)  # before anything is read
    loaded = load_model_for_scoring(config.model, id_column=id_column)
    if config.engine == "spark":
        from .scoring.spark import score_files_with_spark

        return score_files_with_spark(loaded, *paths, top_k=config.top_k, master=config.spark_master)
    with scoring_process_settings():
        return score_files(loaded, *paths, top_k=config.top_k, chunk_size=config.chunk_size, progress=progress)


def run_report(config: ReportConfig, id_column: str | None = None):
    """Run a ``kind: report`` pipeline; returns the ``RunSummary``."""
    from .reporting import write_reports
    from .scoring import load_model_for_scoring

    loaded = load_model_for_scoring(config.model, id_column=id_column)
    return write_reports(
        loaded, config.input, config.output, scores=config.scores, training_ids=config.training_ids,
        top_k=config.top_k, coverage=config.coverage,
        intended_use=" ".join(config.intended_use.split()), limits=" ".join(config.limits.split()),
        pdf=config.pdf,
    )


def _training_frame(data: DataConfig, schema: CohortSchema) -> pd.DataFrame:
    """The training table: the id, feature and outcome columns, indexed by row position."""
    if data.dataset == "pbc":
        from .datasets import load_pbc

        X, Y = load_pbc()
        return X.join(Y).reset_index()
    if data.dataset == "synthetic":
        from .datasets import make_synthetic_cohort

        X, Y = make_synthetic_cohort(data.n_patients, random_state=data.random_state)
        return X.join(Y).reset_index()
    frame = pd.read_parquet(data.path) if data.path.suffix.lower() in (".parquet", ".pq") else pd.read_csv(data.path)
    named = [name for name in frame.index.names if name is not None]
    if named and not set(named) & set(frame.columns):
        return frame.reset_index()  # a Parquet file's stored index (e.g. the id) is a column of the table
    return frame.reset_index(drop=True)


def _check_classes(labels: pd.DataFrame, schema: CohortSchema) -> pd.DataFrame:
    """The labels with every classification outcome's labels as the schema's classes.

    Classes compare by value, whatever the table's types: 1, 1.0 and "1" (as
    a CSV file gives back an integer column with missing values, or a text
    column) are all the schema's class 1. An outcome without classes in the
    schema keeps its labels, integral floats becoming integers. So a table
    trains the same from a file as from memory.

    Raises
    ------
    SchemaError
        If a label is none of the schema's classes, naming the rows by their
        index (``row_number``, the position in the training table), not the values.
    """
    labels = labels.copy()
    for outcome in schema.outcomes:
        if outcome.kind in ("regression", "survival"):
            continue
        column = labels[outcome.name]
        present = column.notna().to_numpy()
        values = column.to_numpy(dtype=object)
        if outcome.classes is None:
            if column.dtype.kind == "f" and np.all(np.mod(values[present].astype(float), 1) == 0):
                labels[outcome.name] = column.astype("Int64")
            elif column.dtype == object:  # named by row_number here, before the split reorders rows
                check_one_label_type(values[present], outcome.name, labels.index[present].to_numpy())
            continue
        by_key = {_class_key(c): c for c in reversed(outcome.classes)}  # the first of equal classes wins
        matched = np.array([not p or _class_key(v) in by_key for v, p in zip(values, present)], dtype=bool)
        if not matched.all():
            rows = labels.index[~matched]
            shown = ", ".join(str(row) for row in rows[:5]) + (f" and {len(rows) - 5} more" if len(rows) > 5 else "")
            raise SchemaError(
                f"Outcome '{outcome.name}' has labels outside the schema's classes {list(outcome.classes)} in "
                f"{len(rows)} row{'s' if len(rows) > 1 else ''} (row_number {shown})."
            )
        classes = [by_key[_class_key(v)] if p else None for v, p in zip(values, present)]
        try:
            labels[outcome.name] = pd.array(classes)  # Int64 for integer classes, string for text, ...
        except (TypeError, ValueError):
            labels[outcome.name] = pd.array(classes, dtype=object)
    return labels


def _class_key(value: object) -> object:
    """A class label by what it means: numbers and numeric text by value, other text stripped."""
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return value.strip()
    if isinstance(value, (Real, np.number)):
        return float(value)
    return value


def _write_table(frame: pd.DataFrame, path: Path) -> None:
    if path.suffix.lower() in (".parquet", ".pq"):
        frame.to_parquet(path, index=False)
    else:
        formula_safe_frame(frame).to_csv(path, index=False)


def _start_run(settings: TrackingConfig, schema: CohortSchema):
    """The pipeline's MLflow run (a context manager), in its experiment, named after the cohort and model."""
    import mlflow

    from .tracking import run_name

    experiment = mlflow.get_experiment_by_name(settings.experiment)
    experiment_id = experiment.experiment_id if experiment else mlflow.create_experiment(settings.experiment)
    name = settings.run_name or run_name(schema.cohort, MultiTaskMLP.__name__, schema.tasks)
    return mlflow.start_run(experiment_id=experiment_id, run_name=name)


def _track(train: TrainResult, settings: TrackingConfig, X_train, Y_train, seconds: float,
           schema: CohortSchema) -> None:
    """Log the fit, the test metrics and the card into the run :func:`_start_run` opened."""
    import mlflow

    from . import tracking
    from .tracking.registry import register_model

    run = mlflow.active_run()
    tracking.log_fit(train.model, X_train, Y_train, training_seconds=seconds, schema=schema, dataset=schema.cohort)
    tracking.log_metrics_table(train.metrics, prefix="test")
    if train.model_card is not None:
        train.model_card.log_to_mlflow()
    train.run_id = run.info.run_id
    train.model_uri = mlflow.get_run(run.info.run_id).data.tags["clinical_mtl.model_uri"]
    if settings.registered_model_name:
        name, alias = settings.registered_model_name, settings.alias
        version = register_model(train.model_uri, name, alias=alias)
        train.registered = f"models:/{name}" + (f"@{alias}" if alias else f"/{version.version}") + (
            f" (version {version.version})")

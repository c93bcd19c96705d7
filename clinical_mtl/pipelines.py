"""Pipelines as configuration: train or score as a YAML file describes.

Relative paths in a pipeline file are read from the file's own folder. A
training pipeline (``kind: train``)::

    kind: train
    schema: ../data_schemas/pbc.yaml
    data: {dataset: pbc}              # or {path: cohort.csv}: id, features and outcome columns
    split: {test_size: 0.25, random_state: 0, stratify: cirrhosis}
    model: {random_state: 0}          # MultiTaskMLP parameters
    tracking: {experiment: clinical_mtl_pbc, registered_model_name: pbc_mtl, alias: champion}
    outputs:
      model_dir: ../reports/generated/pbc_model
      metrics: ../reports/generated/pbc_test_metrics.csv
      patients: ../reports/generated/pbc_patients.csv   # the features in schema form, to score
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
writes its model card (see :mod:`clinical_mtl.model_card`), saves the model
with its schema, and tracks and registers it in MLflow with the card. A scoring pipeline
(``kind: score``) names ``model``, ``input``, ``output`` and optionally
``rejects``, ``top_k``, ``chunk_size``, ``engine`` (``local`` or ``spark``) and
``spark_master``, as ``clinical-mtl score`` does. A report pipeline
(``kind: report``) names ``model``, ``input`` (patient rows) and ``output`` (a
folder), and optionally ``scores`` (a ``clinical-mtl score --explain`` file of
those patients), ``top_k``, ``coverage``, ``pdf``, ``intended_use`` and
``limits``, as ``clinical-mtl report`` does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from numbers import Real
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import yaml
from sklearn.model_selection import train_test_split

from .batch_io import formula_safe_frame
from .estimator import MultiTaskMLP
from .schema import CohortSchema, SchemaError, load_schema
from .tasks import check_one_label_type

if TYPE_CHECKING:
    from .model_card import ModelCard

TRAIN_KEYS = {"kind", "name", "schema", "data", "split", "model", "tracking", "outputs", "model_card"}
SCORE_KEYS = {"kind", "name", "model", "input", "output", "rejects", "top_k", "chunk_size", "engine", "spark_master"}
REPORT_KEYS = {"kind", "name", "model", "input", "scores", "output", "top_k", "coverage", "pdf", "intended_use",
               "limits"}


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


def load_pipeline(path: str | Path) -> dict:
    """Read a pipeline file, resolve its paths and check its keys."""
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise SchemaError(f"Cannot read the pipeline file {path}: {error}") from error
    kind = config.get("kind") if isinstance(config, dict) else None
    allowed = {"train": TRAIN_KEYS, "score": SCORE_KEYS, "report": REPORT_KEYS}.get(kind)
    if allowed is None:
        raise SchemaError(f"{path}: 'kind' must be 'train', 'score' or 'report', got {kind!r}.")
    unknown = set(config) - allowed
    if unknown:
        raise SchemaError(f"{path}: unknown keys {sorted(unknown)} for a {kind} pipeline (allowed: {sorted(allowed)}).")
    config["_folder"] = path.parent
    return config


def resolve(config: dict, value: str | None) -> str | None:
    """A path of the pipeline file, relative to its folder (MLflow URIs unchanged)."""
    if value is None or config["_folder"] is None or "://" in value or value.startswith(("models:/", "runs:/")):
        return value
    return str((config["_folder"] / value).resolve())


def run_train(config: dict) -> TrainResult:
    """Run a ``kind: train`` pipeline (see the module docstring)."""
    schema = load_schema(resolve(config, config["schema"]))
    frame = _training_frame(config.get("data", {}), config, schema)
    result = schema.validate(frame)
    outputs = config.get("outputs", {})
    if len(result.rejected) and outputs.get("metrics"):
        formula_safe_frame(result.rejected).to_csv(_output_path(config, outputs["metrics"]).with_suffix(".rejects.csv"),
                                                   index=False)
    features = result.valid.set_index(schema.id_column)[schema.feature_names]
    outcomes = [o.name for o in schema.outcomes]
    missing = [name for name in outcomes if name not in frame.columns]
    if missing:
        raise SchemaError(f"The training data has no column for the outcomes {missing} of the schema.")
    # The valid rows keep the frame's index, its row positions (see _training_frame): the labels of
    # exactly those rows, in their order, then indexed by id like the features.
    labels = _check_classes(frame[outcomes].iloc[result.valid.index.to_numpy()], schema).set_axis(features.index)

    split = config.get("split", {})
    stratify = split.get("stratify")
    strata = labels[stratify].astype("string").fillna("unlabelled") if stratify else None
    X_train, X_test, Y_train, Y_test = train_test_split(
        features, labels, test_size=split.get("test_size", 0.25), random_state=split.get("random_state", 0),
        stratify=strata,
    )
    start = time.perf_counter()
    model = MultiTaskMLP(tasks=schema.tasks, **config.get("model", {})).fit(X_train, Y_train)
    seconds = time.perf_counter() - start
    card = config.get("model_card") or {}
    evaluation = {"n_bootstrap": int(card.get("n_bootstrap", 200)), "random_state": split.get("random_state", 0)}
    metrics = model.evaluate(X_test, Y_test, **evaluation)
    train = TrainResult(model, metrics, len(result.rejected))
    if outputs.get("model_card"):
        train.model_card = _model_card(card, model, X_train, Y_train, X_test, Y_test, metrics, evaluation)
        train.model_card_path = _output_path(config, outputs["model_card"])
        train.model_card.save(train.model_card_path)

    if outputs.get("model_dir"):
        from .persistence import save_model

        train.model_dir = save_model(model, resolve(config, outputs["model_dir"]), schema=schema)
    if outputs.get("metrics"):
        formula_safe_frame(metrics.reset_index()).to_csv(_output_path(config, outputs["metrics"]), index=False)
    if outputs.get("patients"):
        _write_table(frame[[schema.id_column, *schema.feature_names]], _output_path(config, outputs["patients"]))
    tracking = config.get("tracking")
    if tracking and tracking.get("enabled", True):
        _track(train, tracking, X_train, Y_train, seconds, schema)
    return train


def _model_card(card: dict, model, X_train, Y_train, X_test, Y_test, metrics, evaluation: dict) -> ModelCard:
    """The model card of a training pipeline, as its ``model_card`` settings describe."""
    from .evaluation import band
    from .model_card import DEFAULT_INTENDED_USE, build_model_card

    groups = {
        name: band(X_test[spec["column"]], spec["cuts"], name=name) if isinstance(spec, dict) else X_test[spec]
        for name, spec in (card.get("subgroups") or {}).items()
    }
    return build_model_card(
        model, X_train, Y_train, X_test, Y_test, groups=pd.DataFrame(groups) if groups else None,
        single_task=bool(card.get("single_task_comparison", True)), metrics=metrics, **evaluation,
        title=card.get("title", "Model card"), intended_use=card.get("intended_use", DEFAULT_INTENDED_USE),
        limitations=card.get("limitations", ()),
    )


def _output_path(config: dict, value: str) -> Path:
    """An output path of the pipeline file, its folder created."""
    path = Path(resolve(config, value))
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def run_score(config: dict, progress: bool | None = None, id_column: str | None = None):
    """Run a ``kind: score`` pipeline; returns the ``ScoringSummary``."""
    from .scoring import DEFAULT_CHUNK_SIZE, check_scoring_paths, load_model_for_scoring, score_files

    paths = [resolve(config, config.get(key)) for key in ("input", "output", "rejects")]
    check_scoring_paths(*paths)  # before anything is read
    loaded = load_model_for_scoring(resolve(config, config["model"]), id_column=id_column)
    top_k = int(config.get("top_k", 0))
    if config.get("engine", "local") == "spark":
        from .spark_scoring import score_files_with_spark

        return score_files_with_spark(loaded, *paths, top_k=top_k, master=config.get("spark_master"))
    chunk_size = int(config.get("chunk_size", DEFAULT_CHUNK_SIZE))
    return score_files(loaded, *paths, top_k=top_k, chunk_size=chunk_size, progress=progress)


def run_report(config: dict, id_column: str | None = None):
    """Run a ``kind: report`` pipeline; returns the ``ReportSummary``."""
    from .reporting import DEFAULT_INTENDED_USE, DEFAULT_LIMITS, write_reports
    from .scoring import load_model_for_scoring

    loaded = load_model_for_scoring(resolve(config, config["model"]), id_column=id_column)
    output = resolve(config, config.get("output") or "../reports/patients")
    return write_reports(
        loaded, resolve(config, config["input"]), output, scores=resolve(config, config.get("scores")),
        top_k=int(config.get("top_k", 6)), coverage=float(config.get("coverage", 0.9)),
        intended_use=" ".join(str(config.get("intended_use", DEFAULT_INTENDED_USE)).split()),
        limits=" ".join(str(config.get("limits", DEFAULT_LIMITS)).split()), pdf=bool(config.get("pdf", False)),
    )


def _training_frame(data: dict, config: dict, schema: CohortSchema) -> pd.DataFrame:
    """The training table: the id, feature and outcome columns, indexed by row position."""
    if data.get("dataset") == "pbc":
        from .datasets import load_pbc

        X, Y = load_pbc()
        return X.join(Y).reset_index()
    if data.get("dataset") == "synthetic":
        from .datasets import make_synthetic_cohort

        X, Y = make_synthetic_cohort(int(data.get("n_patients", 1000)), random_state=data.get("random_state", 0))
        return X.join(Y).reset_index()
    if "path" in data:
        path = Path(resolve(config, data["path"]))
        frame = pd.read_parquet(path) if path.suffix.lower() in (".parquet", ".pq") else pd.read_csv(path)
        named = [name for name in frame.index.names if name is not None]
        if named and not set(named) & set(frame.columns):
            return frame.reset_index()  # a Parquet file's stored index (e.g. the id) is a column of the table
        return frame.reset_index(drop=True)
    raise SchemaError("The pipeline's data must be {dataset: pbc}, {dataset: synthetic} or {path: <file>}.")


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
        if outcome.kind == "regression":
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


def _track(train: TrainResult, settings: dict, X_train, Y_train, seconds: float, schema: CohortSchema) -> None:
    import mlflow

    from . import tracking

    name = settings.get("experiment", "clinical_mtl")
    experiment = mlflow.get_experiment_by_name(name)
    experiment_id = experiment.experiment_id if experiment else mlflow.create_experiment(name)
    with mlflow.start_run(experiment_id=experiment_id, run_name=settings.get("run_name", "train")) as run:
        tracking.log_fit(train.model, X_train, Y_train, training_seconds=seconds, schema=schema)
        tracking.log_metrics_table(train.metrics, prefix="test")
        if train.model_card is not None:
            train.model_card.log_to_mlflow()
        train.run_id = run.info.run_id
        train.model_uri = mlflow.get_run(run.info.run_id).data.tags["clinical_mtl.model_uri"]
    if settings.get("registered_model_name"):
        alias = settings.get("alias")
        version = tracking.register_model(train.model_uri, settings["registered_model_name"], alias=alias)
        train.registered = f"models:/{settings['registered_model_name']}" + (
            f"@{alias}" if alias else f"/{version.version}") + f" (version {version.version})"

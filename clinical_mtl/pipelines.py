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
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import yaml
from sklearn.model_selection import train_test_split

from .estimator import MultiTaskMLP
from .schema import CohortSchema, SchemaError, load_schema

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
        result.rejected.to_csv(_output_path(config, outputs["metrics"]).with_suffix(".rejects.csv"), index=False)
    features = result.valid.set_index(schema.id_column)[schema.feature_names]
    labels = frame.loc[result.valid.index, [o.name for o in schema.outcomes]].set_axis(features.index)
    _check_classes(labels, schema)

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
        metrics.to_csv(_output_path(config, outputs["metrics"]))
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
    from .scoring import DEFAULT_CHUNK_SIZE, load_model_for_scoring, score_files

    loaded = load_model_for_scoring(resolve(config, config["model"]), id_column=id_column)
    paths = [resolve(config, config.get(key)) for key in ("input", "output", "rejects")]
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
        return pd.read_parquet(path) if path.suffix.lower() in (".parquet", ".pq") else pd.read_csv(path)
    raise SchemaError("The pipeline's data must be {dataset: pbc}, {dataset: synthetic} or {path: <file>}.")


def _check_classes(labels: pd.DataFrame, schema: CohortSchema) -> None:
    for outcome in schema.outcomes:
        if outcome.classes is None:
            continue
        observed = labels[outcome.name].dropna().unique()
        unknown = [value for value in observed if str(value) not in {str(c) for c in outcome.classes}]
        if unknown:
            raise SchemaError(
                f"Outcome '{outcome.name}' has labels {unknown} outside the schema's classes {list(outcome.classes)}."
            )


def _write_table(frame: pd.DataFrame, path: Path) -> None:
    if path.suffix.lower() in (".parquet", ".pq"):
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)


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

"""The model as an MLflow pyfunc without pickles: logged, saved, its signature and its input."""

from __future__ import annotations

import tempfile
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from ..data.persistence import load_model, save_model
from ..data.schema import CohortSchema
from ..exceptions import InputDataError
from ..model.conformal import DEFAULT_COVERAGE
from ..model.estimator import MultiTaskMLP
from ..model.features import BOOLEAN, CATEGORICAL, as_frame, prepare_features
from ..model.outputs import output_columns
from ..model.preprocessing import CategoricalEncoding

MODEL_ARTIFACT = "model"


_MODEL_CODE = Path(__file__).with_name("mlflow_model_code.py")


_REQUIREMENTS = ("torch", "mlflow", "scikit-learn", "scipy", "pandas", "numpy", "pyarrow")


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
    flat columns of :func:`clinical_mtl.model.outputs.flat_predictions`. Its
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
        A folder written by :func:`clinical_mtl.data.persistence.save_model`.
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
        model_config={"outcome": None},  # load_model(..., model_config={"outcome": name}): that outcome's labels
    )


def model_signature(model: MultiTaskMLP, top_k: int = 0):
    """The MLflow signature: clinical columns in, flat prediction columns out, and the
    ``top_k`` (default ``top_k``) and ``interval_coverage`` (default 0.9) parameters.

    The input columns are optional and of any type: MLflow's own check of a
    signature answers with the request's rows, so the model checks types,
    ranges and categories itself, with its cohort schema (``clinical_mtl.tracking.serving``).
    """
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    from .serving import permissive_input_schema

    inputs = permissive_input_schema(list(model.preprocessor_.feature_kinds_))
    outputs = Schema([ColSpec(c.type_name("mlflow"), c.name) for c in output_columns(model, top_k)])
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
    frame = model.feature_frame(frame)
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


def _pinned_requirements() -> list[str]:
    pins = []
    for package in _REQUIREMENTS:
        version = metadata.version(package).split("+")[0]
        pins.append(f"{package}=={version}")
    return pins

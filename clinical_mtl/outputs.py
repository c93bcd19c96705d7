"""Predictions as one flat table, for files, MLflow models and services.

MLflow models and columnar files have no nested outputs, so every outcome
spreads over named columns:

``<outcome>_pred``
    The predicted class label (classification) or value in the outcome's
    units (regression).
``<outcome>_proba_<class>``
    The probability of each class of a classification outcome, in the order
    of ``model.classes_[outcome]``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .estimator import MultiTaskMLP


def flat_predictions(model: MultiTaskMLP, X) -> pd.DataFrame:
    """Predict every outcome of ``X`` into flat columns (see the module docstring).

    Parameters
    ----------
    model : MultiTaskMLP
        A fitted model.
    X : DataFrame or array-like
        Raw features.

    Returns
    -------
    DataFrame
        Indexed like ``X``, columns as listed by ``output_columns(model)``.
    """
    index, outputs = model._predict_outputs(X)
    columns = {}
    for spec, output in zip(model._task_specs, outputs):
        if spec.is_classification:
            columns[f"{spec.name}_pred"] = np.asarray(spec.classes)[np.argmax(output, axis=1)]
            for k, label in enumerate(spec.classes):
                columns[f"{spec.name}_proba_{label}"] = output[:, k]
        else:
            columns[f"{spec.name}_pred"] = output
    return pd.DataFrame(columns, index=index)


def output_columns(model: MultiTaskMLP) -> list[tuple[str, str]]:
    """Names and MLflow types ("string", "long", "double", "boolean") of the flat columns."""
    columns = []
    for spec in model._task_specs:
        if spec.is_classification:
            columns.append((f"{spec.name}_pred", _label_type(np.asarray(spec.classes))))
            columns += [(f"{spec.name}_proba_{label}", "double") for label in spec.classes]
        else:
            columns.append((f"{spec.name}_pred", "double"))
    return columns


def _label_type(classes: np.ndarray) -> str:
    kinds = {"b": "boolean", "i": "long", "u": "long", "f": "double"}
    return kinds.get(classes.dtype.kind, "string")

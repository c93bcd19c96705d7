"""Predictions as one flat table, for files, MLflow models and services.

MLflow models and columnar files have no nested outputs, so every outcome
spreads over named columns:

``<outcome>_pred``
    The predicted class label (classification) or value in the outcome's
    units (regression).
``<outcome>_proba_<class>``
    The (recalibrated) probability of each class of a classification
    outcome, in the order of ``model.classes_[outcome]``.
``<outcome>_lower``, ``<outcome>_upper``
    The prediction interval of a regression outcome at ``coverage`` (90% by
    default; see ``MultiTaskMLP.predict_interval``), when the model has
    conformal residuals (it was fitted with early stopping).
``<outcome>_top<j>_feature``, ``<outcome>_top<j>_contribution``
    Optionally, the j-th largest SHAP contribution to the outcome and its
    feature.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .conformal import DEFAULT_COVERAGE
from .estimator import MultiTaskMLP
from .explain import top_contribution_columns, top_contributions


def flat_predictions(model: MultiTaskMLP, X, *, top_k: int = 0, coverage: float = DEFAULT_COVERAGE) -> pd.DataFrame:
    """Predict every outcome of ``X`` into flat columns (see the module docstring).

    Parameters
    ----------
    model : MultiTaskMLP
        A fitted model.
    X : DataFrame or array-like
        Raw features.
    top_k : int, default=0
        Also return the ``top_k`` largest SHAP contributions per outcome
        (:func:`clinical_mtl.explain.top_contributions`).
    coverage : float, default=0.9
        Coverage of the prediction intervals of regression outcomes, in (0, 1).

    Returns
    -------
    DataFrame
        Indexed like ``X``, columns as listed by ``output_columns(model, top_k)``.
    """
    half_widths = model._interval_half_widths(coverage)
    index, outputs = model._predict_outputs(X)
    columns = {}
    for spec, output in zip(model._task_specs, outputs):
        if spec.is_classification:
            columns[f"{spec.name}_pred"] = np.asarray(spec.classes)[np.argmax(output, axis=1)]
            for k, label in enumerate(spec.classes):
                columns[f"{spec.name}_proba_{label}"] = output[:, k]
        else:
            columns[f"{spec.name}_pred"] = output
            if spec.name in half_widths:
                columns[f"{spec.name}_lower"] = output - half_widths[spec.name]
                columns[f"{spec.name}_upper"] = output + half_widths[spec.name]
    predictions = pd.DataFrame(columns, index=index)
    if top_k > 0:
        predictions = predictions.join(top_contributions(model, X, top_k))
    return predictions


def output_columns(model: MultiTaskMLP, top_k: int = 0) -> list[tuple[str, str]]:
    """Names and MLflow types ("string", "long", "double", "boolean") of the flat columns."""
    columns = []
    for spec in model._task_specs:
        if spec.is_classification:
            columns.append((f"{spec.name}_pred", _label_type(np.asarray(spec.classes))))
            columns += [(f"{spec.name}_proba_{label}", "double") for label in spec.classes]
        else:
            columns.append((f"{spec.name}_pred", "double"))
            if spec.name in model.conformal_scores_:
                columns += [(f"{spec.name}_lower", "double"), (f"{spec.name}_upper", "double")]
    return columns + (top_contribution_columns(model, top_k) if top_k > 0 else [])


def _label_type(classes: np.ndarray) -> str:
    kinds = {"b": "boolean", "i": "long", "u": "long", "f": "double"}
    return kinds.get(classes.dtype.kind, "string")

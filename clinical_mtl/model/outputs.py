"""The flat output columns: one definition for pandas, Arrow, Spark, MLflow and reports.

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
``<outcome>_event_prob_<h>``
    The predicted probability of a survival outcome's event by each horizon
    ``h`` of the outcome (``task_specs_``; ``h`` written as by
    :func:`~clinical_mtl.model.survival.horizon_label`). Its ``_pred`` is
    the predicted median event-free time, NaN where
    ``<outcome>_median_beyond_follow_up`` is true (the curve stays above 0.5
    through the training follow-up).
``<outcome>_top<j>_feature``, ``<outcome>_top<j>_contribution``
    Optionally, the j-th largest SHAP contribution to the outcome and its
    feature.

``output_columns`` lists them (name, type, outcome, part), ``column_values``
computes each from the prediction core's outputs, and each engine reads its own
type name from ``TYPE_NAMES``. A new kind of output is one entry in
``_COLUMNS_BY_KIND`` and, for a new part, one case in ``column_values``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .conformal import DEFAULT_COVERAGE, check_coverage
from .explanation import attributions, contribution_ranks
from .survival import (
    SURVIVAL,
    headline_horizons,
    horizon_label,
    median_survival,
    survival_at,
)
from .tasks import BINARY, MULTICLASS, REGRESSION, TaskSpec

PRED, PROBA, LOWER, UPPER = "pred", "proba", "lower", "upper"
EVENT_PROB, MEDIAN_BEYOND = "event_prob", "median_beyond_follow_up"
TOP_FEATURE, TOP_CONTRIBUTION = "top_feature", "top_contribution"

TYPE_NAMES = {  # each column type, as each engine names it
    "double": {"numpy": "float64", "arrow": "float64", "spark": "double", "mlflow": "double"},
    "long": {"numpy": "int64", "arrow": "int64", "spark": "bigint", "mlflow": "long"},
    "boolean": {"numpy": "bool", "arrow": "bool", "spark": "boolean", "mlflow": "boolean"},
    "string": {"numpy": "object", "arrow": "string", "spark": "string", "mlflow": "string"},
}


@dataclass(frozen=True)
class OutputColumn:
    """One flat output column.

    Attributes
    ----------
    name : str
    dtype : {"double", "long", "boolean", "string"}
        See ``TYPE_NAMES`` for each engine's name of it.
    outcome : str
    part : str
        ``PRED``, ``PROBA``, ``LOWER``, ``UPPER``, ``EVENT_PROB``,
        ``MEDIAN_BEYOND``, ``TOP_FEATURE`` or ``TOP_CONTRIBUTION``.
    index : int or None
        The class's position (``PROBA``), the horizon's position
        (``EVENT_PROB``) or the contribution's rank from 1 (``TOP_FEATURE``,
        ``TOP_CONTRIBUTION``).
    """

    name: str
    dtype: str
    outcome: str
    part: str
    index: int | None = None

    def type_name(self, engine: str) -> str:
        """The column's type as ``engine`` ("numpy", "arrow", "spark" or "mlflow") names it."""
        return TYPE_NAMES[self.dtype][engine]


def column_name(outcome: str, part: str, index: int | None = None, label=None) -> str:
    """The name of an output column (see the module docstring)."""
    if part == PROBA:
        return f"{outcome}_proba_{label}"
    if part == EVENT_PROB:
        return f"{outcome}_event_prob_{horizon_label(label)}"
    if part in (TOP_FEATURE, TOP_CONTRIBUTION):
        return f"{outcome}_top{index}_{part.removeprefix('top_')}"
    return f"{outcome}_{part}"


def _classification_columns(spec: TaskSpec, with_interval: bool) -> list[OutputColumn]:
    labels = np.asarray(spec.classes)
    kinds = {"b": "boolean", "i": "long", "u": "long", "f": "double"}
    return [OutputColumn(column_name(spec.name, PRED), kinds.get(labels.dtype.kind, "string"), spec.name, PRED)] + [
        OutputColumn(column_name(spec.name, PROBA, label=label), "double", spec.name, PROBA, k)
        for k, label in enumerate(spec.classes)
    ]


def _regression_columns(spec: TaskSpec, with_interval: bool) -> list[OutputColumn]:
    parts = (PRED, LOWER, UPPER) if with_interval else (PRED,)
    return [OutputColumn(column_name(spec.name, part), "double", spec.name, part) for part in parts]


def _survival_columns(spec: TaskSpec, with_interval: bool) -> list[OutputColumn]:
    return [OutputColumn(column_name(spec.name, PRED), "double", spec.name, PRED),
            OutputColumn(column_name(spec.name, MEDIAN_BEYOND), "boolean", spec.name, MEDIAN_BEYOND)] + [
        OutputColumn(column_name(spec.name, EVENT_PROB, label=horizon), "double", spec.name, EVENT_PROB, k)
        for k, horizon in enumerate(spec.horizons)
    ]


_COLUMNS_BY_KIND = {BINARY: _classification_columns, MULTICLASS: _classification_columns,
                    REGRESSION: _regression_columns, SURVIVAL: _survival_columns}


def output_columns(model, top_k: int = 0) -> list[OutputColumn]:
    """The flat columns of ``model``'s predictions, in order.

    Parameters
    ----------
    model : MultiTaskMLP
        A fitted model.
    top_k : int, default=0
        Contributions per outcome (capped at the number of features).

    Returns
    -------
    list of OutputColumn
    """
    columns = []
    for spec in model.task_specs_:
        columns += _COLUMNS_BY_KIND[spec.kind](spec, spec.name in model.conformal_scores_)
    n_ranks = min(top_k, len(model.preprocessor_.feature_kinds_))
    return columns + [
        OutputColumn(column_name(spec.name, part, j), dtype, spec.name, part, j)
        for spec in model.task_specs_
        for j in range(1, n_ranks + 1)
        for part, dtype in ((TOP_FEATURE, "string"), (TOP_CONTRIBUTION, "double"))
    ]


def column_values(column: OutputColumn, spec: TaskSpec, output: np.ndarray, half_widths: dict) -> np.ndarray:
    """The values of a prediction column (not a contribution) from its outcome's output.

    Parameters
    ----------
    column : OutputColumn
    spec : TaskSpec
        The column's outcome.
    output : ndarray
        The outcome's output, as ``MultiTaskMLP.outputs_from_inputs`` gives it.
    half_widths : dict of str to float or ndarray
        As ``MultiTaskMLP.interval_half_widths`` gives them (per patient where normalised).
    """
    if spec.kind == SURVIVAL:
        return _survival_values(column, spec, output)
    if column.part == PRED:
        return predicted_labels(spec, output) if spec.is_classification else output
    if column.part == PROBA:
        return output[:, column.index]
    if column.part == LOWER:
        return output - half_widths[spec.name]
    if column.part == UPPER:
        return output + half_widths[spec.name]
    raise ValueError(f"{column.name} is a contribution column; its values come from top_contributions.")


def _survival_values(column: OutputColumn, spec: TaskSpec, curves: np.ndarray) -> np.ndarray:
    if column.part == EVENT_PROB:
        return 1.0 - survival_at(curves, spec.cut_points, [spec.horizons[column.index]])[:, 0]
    median, beyond = median_survival(curves, spec.cut_points)
    return median if column.part == PRED else beyond


def prediction_columns(model, outputs: list[np.ndarray], half_widths: dict, parts=None) -> dict[str, np.ndarray]:
    """The prediction columns (no contributions) by name, in order, from the outputs of every outcome.

    Parameters
    ----------
    model : MultiTaskMLP
    outputs : list of ndarray
        As ``MultiTaskMLP.outputs_from_inputs`` gives them.
    half_widths : dict of str to float or ndarray
        As ``MultiTaskMLP.interval_half_widths`` gives them (per patient where normalised).
    parts : collection of str, default=None
        Only the columns of these parts (all when None).
    """
    by_outcome = {spec.name: (spec, output) for spec, output in zip(model.task_specs_, outputs)}
    return {column.name: column_values(column, *by_outcome[column.outcome], half_widths)
            for column in output_columns(model) if parts is None or column.part in parts}


def predicted_labels(spec: TaskSpec, output: np.ndarray) -> np.ndarray:
    """The most probable class label of every row of a classification output."""
    return np.asarray(spec.classes)[np.argmax(output, axis=1)]


def flat_predictions(model, X, *, top_k: int = 0, coverage: float = DEFAULT_COVERAGE) -> pd.DataFrame:
    """Predict every outcome of ``X`` into flat columns (see the module docstring).

    Parameters
    ----------
    model : MultiTaskMLP
        A fitted model.
    X : DataFrame or array-like
        Raw features.
    top_k : int, default=0
        Also return the ``top_k`` largest SHAP contributions per outcome
        (:func:`top_contributions`).
    coverage : float, default=0.9
        Coverage of the prediction intervals of regression outcomes, in (0, 1).

    Returns
    -------
    DataFrame
        Indexed like ``X``, columns as listed by ``output_columns(model, top_k)``.
    """
    check_coverage(coverage)
    index, inputs = model.transform_inputs(X)
    outputs = model.outputs_from_inputs(inputs, index)
    half_widths = model.interval_half_widths(coverage, inputs)
    predictions = pd.DataFrame(prediction_columns(model, outputs, half_widths), index=index)
    if top_k > 0:
        predictions = predictions.join(top_contributions(model, X, top_k))
    return predictions


def missing_by_design(predictions: pd.DataFrame) -> pd.DataFrame:
    """Which cells of flat predictions are NaN as an answer: a survival outcome's median
    (``<outcome>_pred``) where its ``<outcome>_median_beyond_follow_up`` flag is true.

    Examples
    --------
    >>> frame = pd.DataFrame({"death_pred": [900.0, np.nan], "death_median_beyond_follow_up": [False, True]})
    >>> missing_by_design(frame)["death_pred"].tolist()
    [False, True]
    """
    missing = pd.DataFrame(False, index=predictions.index, columns=predictions.columns)
    suffix = f"_{MEDIAN_BEYOND}"
    for flag in [name for name in predictions.columns if name.endswith(suffix)]:
        median = column_name(flag[: -len(suffix)], PRED)
        if median in predictions.columns:
            missing[median] = predictions[flag].to_numpy(dtype=bool) & predictions[median].isna().to_numpy()
    return missing


def top_contributions(model, X, top_k: int) -> pd.DataFrame:
    """The ``top_k`` largest contributions (by absolute value) per patient and outcome.

    For a binary outcome the contributions are to the probability of its
    positive class, for a multi-class outcome to the probability of the
    predicted class, for regression to the value in its units, for survival
    to the probability of the event by the outcome's middle horizon
    (:func:`~clinical_mtl.model.survival.headline_horizon`).

    Parameters
    ----------
    model : MultiTaskMLP
        A fitted model.
    X : DataFrame
        Raw features.
    top_k : int
        Contributions kept per outcome (capped at the number of features).

    Returns
    -------
    DataFrame
        Indexed like ``X``; per outcome and rank ``j`` (from 1), the columns
        ``<outcome>_top<j>_feature`` (name) and ``<outcome>_top<j>_contribution``.
    """
    columns = {}
    for name, explanation in attributions(model, X, horizons=headline_horizons(model.task_specs_)).items():
        values = explanation.values
        if values.ndim == 3:  # multi-class: the predicted class
            total = explanation.base_values.copy()
            for f in range(values.shape[1]):  # added feature by feature: the same whatever the row count
                total += values[:, f]
            predicted = np.argmax(total, axis=1)
            values = values[np.arange(len(values)), :, predicted]
        order = contribution_ranks(values, top_k)
        names = np.asarray(explanation.feature_names, dtype=object)
        for j in range(order.shape[1]):
            columns[column_name(name, TOP_FEATURE, j + 1)] = names[order[:, j]]
            columns[column_name(name, TOP_CONTRIBUTION, j + 1)] = values[np.arange(len(values)), order[:, j]]
    return pd.DataFrame(columns, index=model.feature_frame(X).index)

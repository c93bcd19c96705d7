"""Per-outcome metrics, computed on the labelled rows of each outcome only.

Classification outcomes get AUROC (one-vs-rest macro average for several
classes), log loss, Brier score (for several classes the sum over classes of
squared probability errors, averaged over patients) and accuracy; regression
outcomes get RMSE, MAE and R^2, in the outcome's units.

The single per-outcome *score* used by ``MultiTaskMLP.score`` is on one scale
for both kinds, higher is better, 1 is perfect and 0 is no better than a
constant: R^2 for regression and the scaled Brier score (Brier skill score,
``1 - Brier / Brier of always predicting the observed class frequencies``)
for classification.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import numpy as np
import pandas as pd
from sklearn.metrics import log_loss, mean_absolute_error, r2_score, roc_auc_score

CLASSIFICATION_METRICS = ("auroc", "log_loss", "brier", "accuracy")
REGRESSION_METRICS = ("rmse", "mae", "r2")


def classification_metrics(y_true: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """Metrics of predicted class probabilities.

    Parameters
    ----------
    y_true : ndarray of shape (n,), int
        Class indices (positions in the outcome's classes).
    proba : ndarray of shape (n, n_classes)
        Predicted probabilities.

    Returns
    -------
    dict
        ``auroc``, ``log_loss``, ``brier``, ``accuracy`` (NaN when undefined,
        e.g. AUROC with a single class present).
    """
    n_classes = proba.shape[1]
    return {
        "auroc": auroc(y_true, proba),
        "log_loss": float(log_loss(y_true, proba, labels=np.arange(n_classes))),
        "brier": brier_score(y_true, proba),
        "accuracy": float(np.mean(np.argmax(proba, axis=1) == y_true)),
    }


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """RMSE, MAE and R^2 (NaN with fewer than two rows)."""
    return {
        "rmse": float(np.sqrt(np.mean((y_true - y_pred) ** 2))),
        "mae": float(mean_absolute_error(y_true, y_pred)),
        "r2": r_squared(y_true, y_pred),
    }


def auroc(y_true: np.ndarray, proba: np.ndarray) -> float:
    """Area under the ROC curve; one-vs-rest macro average over classes present."""
    if proba.shape[1] == 2:
        present = np.unique(y_true)
        return float(roc_auc_score(y_true, proba[:, 1])) if len(present) == 2 else np.nan
    scores = [
        roc_auc_score(y_true == k, proba[:, k])
        for k in range(proba.shape[1])
        if 0 < np.sum(y_true == k) < len(y_true)
    ]
    return float(np.mean(scores)) if scores else np.nan


def brier_score(y_true: np.ndarray, proba: np.ndarray) -> float:
    """Brier score: squared error of the positive-class probability for two
    classes, summed over classes for more."""
    if proba.shape[1] == 2:
        return float(np.mean((proba[:, 1] - y_true) ** 2))
    one_hot = np.eye(proba.shape[1])[y_true]
    return float(np.mean(np.sum((proba - one_hot) ** 2, axis=1)))


def brier_skill_score(y_true: np.ndarray, proba: np.ndarray) -> float:
    """``1 - Brier / Brier of the observed class frequencies`` (NaN if one class)."""
    frequencies = np.bincount(y_true, minlength=proba.shape[1]) / len(y_true)
    reference = brier_score(y_true, np.tile(frequencies, (len(y_true), 1)))
    if reference == 0:
        return np.nan
    return 1.0 - brier_score(y_true, proba) / reference


def r_squared(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Coefficient of determination (NaN when the labels do not vary)."""
    if len(y_true) < 2 or np.all(y_true == y_true[0]):
        return np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(r2_score(y_true, y_pred))


def skill_score(y_true: np.ndarray, output: np.ndarray, is_classification: bool) -> float:
    """The per-outcome score of ``MultiTaskMLP.score``: Brier skill score or R^2."""
    return brier_skill_score(y_true, output) if is_classification else r_squared(y_true, output)


def metrics_table(outcomes: Iterable[tuple[str, str, np.ndarray, np.ndarray]]) -> pd.DataFrame:
    """Tabulate per-outcome metrics.

    Parameters
    ----------
    outcomes : iterable of (name, kind, y_true, output)
        Per outcome, on its labelled rows: class indices and probabilities
        (classification) or values and predictions (regression).

    Returns
    -------
    DataFrame
        Indexed by outcome, with ``kind``, ``n_labelled`` and every metric
        (NaN where it does not apply).
    """
    rows = {}
    for name, kind, y_true, output in outcomes:
        row = {"kind": kind, "n_labelled": len(y_true)}
        if len(y_true) and kind == "regression":
            row |= regression_metrics(y_true, output)
        elif len(y_true):
            row |= classification_metrics(y_true, output)
        rows[name] = row
    columns = ["kind", "n_labelled", *CLASSIFICATION_METRICS, *REGRESSION_METRICS]
    table = pd.DataFrame.from_dict(rows, orient="index").reindex(columns=columns)
    table.index.name = "outcome"
    return table

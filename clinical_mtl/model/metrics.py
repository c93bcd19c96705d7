"""Per-outcome metrics, computed on the labelled rows of each outcome only.

Classification outcomes get AUROC (one-vs-rest macro average for several
classes), log loss, Brier score (for several classes the sum over classes of
squared probability errors, averaged over patients), accuracy, expected
calibration error and, for binary outcomes, the calibration slope and
intercept; regression outcomes get RMSE, MAE and R^2, in the outcome's units.

Calibration follows Van Calster et al., "A calibration hierarchy for risk
models was defined: from utopia to empirical data", J Clin Epidemiol 2016,
and "Calibration: the Achilles heel of predictive analytics", BMC Medicine
2019: the *calibration slope* is ``b`` in the logistic regression
``logit P(y=1) = a + b logit(p)`` (1 is ideal; below 1 the predicted risks are
too extreme, above 1 too modest) and the *calibration intercept*
(calibration-in-the-large) is ``a`` in ``logit P(y=1) = a + logit(p)``, the
slope fixed at 1 as an offset (0 is ideal; below 0 the risks are too high on
average, above 0 too low). Hosmer-Lemeshow tests are deliberately not given.

``resampled_metrics`` computes the headline metrics (AUROC, Brier score, ECE;
RMSE, R^2) for many bootstrap resamples at once, each resample given as a row
of counts, so confidence intervals cost a few matrix products.

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
from scipy.special import expit
from sklearn.metrics import log_loss, mean_absolute_error, r2_score, roc_auc_score, root_mean_squared_error

from .survival import SURVIVAL
from .survival_metrics import censoring_summary, survival_metrics

CLASSIFICATION_METRICS = (
    "auroc", "log_loss", "brier", "accuracy", "ece", "calibration_slope", "calibration_intercept"
)
REGRESSION_METRICS = ("rmse", "mae", "r2")
SURVIVAL_METRICS = ("censored", "median_follow_up", "harrell_c", "uno_c", "ibs")
HEADLINE_METRICS = {"classification": ("auroc", "brier", "ece"), "regression": ("rmse", "r2"),
                    "survival": ("harrell_c", "ibs")}
# Whether a larger value is better, for every metric that compares models.
HIGHER_IS_BETTER = {"auroc": True, "brier": False, "ece": False, "rmse": False, "r2": True,
                    "harrell_c": True, "uno_c": True, "ibs": False}
ECE_BINS = 10
_LOGIT_CLIP = 1e-6


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
        ``auroc``, ``log_loss``, ``brier``, ``accuracy``, ``ece`` (10 equal-width
        bins), ``calibration_slope`` and ``calibration_intercept`` (binary
        outcomes only) (NaN when undefined, e.g. AUROC with a single class
        present).
    """
    n_classes = proba.shape[1]
    slope, intercept = calibration_slope_intercept(y_true, proba)
    return {
        "auroc": auroc(y_true, proba),
        "log_loss": float(log_loss(y_true, proba, labels=np.arange(n_classes))),
        "brier": brier_score(y_true, proba),
        "accuracy": float(np.mean(np.argmax(proba, axis=1) == y_true)),
        "ece": expected_calibration_error(y_true, proba),
        "calibration_slope": slope,
        "calibration_intercept": intercept,
    }


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """RMSE, MAE and R^2 (NaN with fewer than two rows)."""
    return {
        "rmse": float(root_mean_squared_error(y_true, y_pred)),
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


def calibration_target(y_true: np.ndarray, proba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The predicted probability and the observed event that calibration compares.

    Binary outcomes: the probability of the positive class (the second
    column) and whether the patient is in it. Several classes: the *top-label*
    view, the probability of the most probable class and whether it is the
    true class (Guo et al., "On calibration of modern neural networks", 2017).

    Returns
    -------
    predicted : ndarray of float, shape (n,)
    observed : ndarray of float, shape (n,), 0 or 1
    """
    if proba.shape[1] == 2:
        return proba[:, 1], (y_true == 1).astype(np.float64)
    return proba.max(axis=1), (np.argmax(proba, axis=1) == y_true).astype(np.float64)


def calibration_bins(predicted: np.ndarray, n_bins: int = ECE_BINS, strategy: str = "uniform") -> np.ndarray:
    """Bin of every predicted probability, as ``sklearn.calibration.calibration_curve`` bins.

    Parameters
    ----------
    predicted : ndarray of shape (n,)
        Probabilities in [0, 1].
    n_bins : int, default=10
    strategy : {"uniform", "quantile"}, default="uniform"
        Equal-width bins on [0, 1], or bins holding (about) equal numbers of
        patients, their edges the quantiles of ``predicted``.

    Returns
    -------
    ndarray of int, shape (n,)
        Bin indices in ``range(n_bins)``; bins are closed on the right.
    """
    return np.searchsorted(bin_edges(predicted, n_bins, strategy)[1:-1], predicted)


def bin_edges(predicted: np.ndarray, n_bins: int = ECE_BINS, strategy: str = "uniform") -> np.ndarray:
    """The ``n_bins + 1`` edges of :func:`calibration_bins`."""
    if strategy == "quantile":
        return np.quantile(predicted, np.linspace(0, 1, n_bins + 1))
    if strategy == "uniform":
        return np.linspace(0.0, 1.0, n_bins + 1)
    raise ValueError(f"strategy must be 'uniform' or 'quantile', got {strategy!r}.")


def expected_calibration_error(
    y_true: np.ndarray, proba: np.ndarray, *, n_bins: int = ECE_BINS, strategy: str = "uniform"
) -> float:
    """Expected calibration error: the mean gap between predicted and observed risk.

    Patients are binned by predicted probability (see
    :func:`calibration_bins`); the ECE is the average over bins, weighted by
    the bins' shares of patients, of ``|mean predicted - observed frequency|``.
    0 is perfect, on the probability scale. Binary outcomes use the
    probability of the positive class, several classes the top-label
    probability (see :func:`calibration_target`). The ECE of a finite sample is
    biased upwards (noise in small bins never cancels), more so with fewer
    patients per bin.

    Parameters
    ----------
    y_true : ndarray of shape (n,), int
        Class indices.
    proba : ndarray of shape (n, n_classes)
        Predicted probabilities.
    n_bins : int, default=10
    strategy : {"uniform", "quantile"}, default="uniform"
        Equal-width or equal-mass bins.

    Returns
    -------
    float
        NaN without rows.

    Examples
    --------
    >>> import numpy as np
    >>> y = np.array([0, 1, 1, 1])
    >>> proba = np.array([[0.9, 0.1], [0.1, 0.9], [0.1, 0.9], [0.1, 0.9]])
    >>> round(expected_calibration_error(y, proba), 3)
    0.1
    """
    if len(y_true) == 0:
        return np.nan
    predicted, observed = calibration_target(y_true, proba)
    bins = calibration_bins(predicted, n_bins, strategy)
    return float(_binned_gap(predicted - observed, bins, n_bins, np.ones((1, len(bins))))[0])


def calibration_slope_intercept(y_true: np.ndarray, proba: np.ndarray) -> tuple[float, float]:
    """Calibration slope and intercept of a binary outcome (Van Calster et al. 2016).

    Parameters
    ----------
    y_true : ndarray of shape (n,), int
        Class indices, 1 the positive class.
    proba : ndarray of shape (n, n_classes)
        Predicted probabilities; probabilities of 0 or 1 are clipped to
        ``1e-6`` from the bounds before taking logits.

    Returns
    -------
    slope : float
        ``b`` of ``logit P(y=1) = a + b logit(p)``, fitted by maximum
        likelihood: 1 is ideal, below 1 the predictions are too extreme.
    intercept : float
        ``a`` of ``logit P(y=1) = a + logit(p)`` (the slope fixed at 1):
        0 is ideal, below 0 the predicted risks are too high on average.
        Both NaN for more than two classes (not defined on one scale), with a
        single class present, or when the fit does not converge (separable
        data).
    """
    if proba.shape[1] != 2 or len(np.unique(y_true)) < 2:
        return np.nan, np.nan
    p = np.clip(proba[:, 1], _LOGIT_CLIP, 1 - _LOGIT_CLIP)
    logits = np.log(p) - np.log1p(-p)
    y = (y_true == 1).astype(np.float64)
    ones = np.ones_like(logits)
    slope = _logistic_fit(np.column_stack([ones, logits]), y, np.zeros_like(logits))[1]
    intercept = _logistic_fit(ones[:, None], y, logits)[0]
    return float(slope), float(intercept)


def _logistic_fit(design: np.ndarray, y: np.ndarray, offset: np.ndarray, max_iter: int = 50) -> np.ndarray:
    """Maximum-likelihood coefficients of ``logit P(y=1) = design @ beta + offset``
    by Newton's method; NaN where it does not converge."""
    beta = np.zeros(design.shape[1])
    for _ in range(max_iter):
        p = expit(design @ beta + offset)
        hessian = design.T @ (design * (p * (1 - p))[:, None])
        try:
            step = np.linalg.solve(hessian, design.T @ (y - p))
        except np.linalg.LinAlgError:
            break
        beta = beta + step
        if np.max(np.abs(step)) < 1e-10:
            return beta
    return np.full(design.shape[1], np.nan)


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


def resampled_metrics(kind: str, y_true: np.ndarray, output: np.ndarray, counts: np.ndarray) -> dict[str, np.ndarray]:
    """Headline metrics of many resamples of one outcome's labelled rows at once.

    Parameters
    ----------
    kind : {"binary", "multiclass", "regression"}
    y_true : ndarray of shape (n,)
        Class indices (classification) or values (regression).
    output : ndarray
        Probabilities of shape (n, n_classes) or predictions of shape (n,).
    counts : ndarray of shape (n_resamples, n)
        How many times each row is drawn in each resample (a row of ones is
        the sample itself).

    Returns
    -------
    dict of str to ndarray of shape (n_resamples,)
        ``auroc``, ``brier`` and ``ece`` (classification; ECE with the
        sample's 10 equal-width bins) or ``rmse`` and ``r2`` (regression),
        equal to :func:`classification_metrics` / :func:`regression_metrics`
        on the resampled rows; NaN where undefined (AUROC with one class).
    """
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum(axis=1)
    if kind == "regression":
        squared = counts @ (y_true - output) ** 2
        # The spread is shift-invariant: centring first avoids cancellation for labels far from 0, and a
        # relative threshold tells constant labels (rounding only) from varying ones at any scale.
        centred = y_true - np.mean(y_true)
        sum_squares = counts @ centred**2
        spread = sum_squares - (counts @ centred) ** 2 / total
        with np.errstate(divide="ignore", invalid="ignore"):
            r2 = np.where(spread > 1e-12 * sum_squares, 1 - squared / spread, np.nan)
        return {"rmse": np.sqrt(squared / total), "r2": r2}
    one_hot = np.eye(output.shape[1])[y_true]
    errors = (output[:, 1] - y_true) ** 2 if output.shape[1] == 2 else np.sum((output - one_hot) ** 2, axis=1)
    predicted, observed = calibration_target(y_true, output)
    bins = calibration_bins(predicted)
    columns = [1] if output.shape[1] == 2 else range(output.shape[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # classes absent from a resample
        auc = np.column_stack([_weighted_auroc(one_hot[:, k], output[:, k], counts) for k in columns])
        auc = np.nanmean(auc, axis=1)
    ece = _binned_gap(predicted - observed, bins, ECE_BINS, counts)
    return {"auroc": auc, "brier": counts @ errors / total, "ece": ece}


def _weighted_auroc(positive: np.ndarray, score: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """AUROC (Mann-Whitney, ties count one half) of each row of weights."""
    order = np.argsort(score, kind="stable")
    ranked = score[order]
    starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])  # one group per distinct score
    weights = counts[:, order]
    pos = np.add.reduceat(weights * positive[order], starts, axis=1)
    neg = np.add.reduceat(weights * (1 - positive[order]), starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    pairs = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(pairs > 0, np.sum(pos * (below + 0.5 * neg), axis=1) / pairs, np.nan)


def _binned_gap(residual: np.ndarray, bins: np.ndarray, n_bins: int, counts: np.ndarray) -> np.ndarray:
    """ECE of each row of weights: ``sum over bins |sum of weighted residuals| / total weight``."""
    per_bin = counts @ (np.eye(n_bins)[bins] * residual[:, None])
    return np.abs(per_bin).sum(axis=1) / counts.sum(axis=1)


def event_count(kind: str, y_true: np.ndarray, output: np.ndarray) -> float:
    """Events behind a classification metric: labelled rows in the positive class
    (binary) or in the rarest class (several classes, as in sample-size rules
    for multinomial models); NaN for regression."""
    if kind == "regression":
        return np.nan
    per_class = np.bincount(y_true, minlength=output.shape[1])
    return float(per_class[1] if output.shape[1] == 2 else per_class.min())


def metrics_table(outcomes: Iterable[tuple]) -> pd.DataFrame:
    """Tabulate per-outcome metrics.

    Parameters
    ----------
    outcomes : iterable of (spec, y_true, output)
        Per outcome (a ``TaskSpec``), on its labelled rows: class indices and
        probabilities (classification), values and predictions (regression),
        or follow-up time and event (n, 2) and the survival curves at the
        outcome's cut points (survival; see
        :mod:`clinical_mtl.model.survival_metrics`).

    Returns
    -------
    DataFrame
        Indexed by outcome, with ``kind``, ``n_labelled``, ``events`` (see
        :func:`event_count`; observed events of a survival outcome) and every
        metric (NaN where it does not apply); survival outcomes add
        ``censored``, ``median_follow_up``, ``harrell_c``, ``uno_c``, ``ibs``
        and per horizon ``auc_at_<h>`` and ``calibration_at_<h>``.
    """
    rows = {}
    for spec, y_true, output in outcomes:
        kind = spec.kind
        if kind == SURVIVAL:
            rows[spec.name] = {"kind": kind} | survival_row(spec, y_true, output)
            continue
        row = {"kind": kind, "n_labelled": len(y_true), "events": event_count(kind, y_true, output)}
        if len(y_true) and kind == "regression":
            row |= regression_metrics(y_true, output)
        elif len(y_true):
            row |= classification_metrics(y_true, output)
        rows[spec.name] = row
    columns = ["kind", "n_labelled", "events", *CLASSIFICATION_METRICS, *REGRESSION_METRICS]
    if any(row["kind"] == SURVIVAL for row in rows.values()):
        columns += [*SURVIVAL_METRICS] + sorted(
            {key for row in rows.values() for key in row if key not in columns and key not in SURVIVAL_METRICS},
            key=_horizon_order)
    table = pd.DataFrame.from_dict(rows, orient="index").reindex(columns=columns)
    table.index.name = "outcome"
    return table


def survival_row(spec, y_true: np.ndarray, curves: np.ndarray) -> dict:
    """Censoring accounting and metrics of one survival outcome on its labelled rows."""
    time, event = y_true[:, 0], y_true[:, 1]
    row = censoring_summary(time, event)
    if len(time):
        row |= survival_metrics(time, event, curves, np.asarray(spec.cut_points), spec.horizons)
    return row


def _horizon_order(column: str) -> tuple:
    """``auc_at_<h>`` and ``calibration_at_<h>`` by metric, then by horizon."""
    metric, _, label = column.partition("_at_")
    try:
        return metric, float(label.replace("p", "."))
    except ValueError:
        return metric, np.inf

"""Decision-curve analysis: is treating by the model's risk better than treating everyone or no one?

Vickers and Elkin, "Decision curve analysis: a novel method for evaluating
prediction models", Med Decis Making 2006. A clinician who would treat a
patient whose risk exceeds a threshold ``pt`` weighs a missed case against
``(1 - pt) / pt`` needless treatments; the *net benefit* of treating the
patients whose predicted risk is at least ``pt`` is

    NB(pt) = TP / n - FP / n * pt / (1 - pt),

true and false positives counted among all ``n`` patients. "Treat all" has
net benefit ``prevalence - (1 - prevalence) * pt / (1 - pt)``, "treat none" 0.
A model is useful at the thresholds where its curve lies above both.

Binary outcomes are analysed for their positive class; a multi-class outcome
one class against the rest, for each class (each a decision "treat for this
class or not"). Survival and regression outcomes have no single decision
threshold on a probability here and are left out.

Our own code rather than ``dcurves``: that package pulls in statsmodels,
caps the Python version and loops over thresholds in pandas; the net benefit
is one vectorised line, checked against a hand computation in the tests.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .tasks import BINARY, MULTICLASS

# Thresholds from 5% to 50% in steps of 1%: the range where treatment decisions on a risk usually sit.
DEFAULT_THRESHOLDS = tuple(np.round(np.arange(0.05, 0.5001, 0.01), 2))


def net_benefit(event: np.ndarray, risk: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """Net benefit of treating the patients whose risk is at least each threshold.

    Parameters
    ----------
    event : ndarray of shape (n,)
        1 (or True) for a patient with the event, 0 otherwise.
    risk : ndarray of shape (n,)
        Predicted probability of the event.
    thresholds : sequence of float
        Threshold probabilities, each in (0, 1).

    Returns
    -------
    ndarray of shape (len(thresholds),)
        ``TP / n - FP / n * pt / (1 - pt)``; NaN without patients.

    Examples
    --------
    >>> float(net_benefit(np.array([1, 0, 1, 0]), np.array([0.8, 0.6, 0.3, 0.1]), [0.5])[0])
    0.0
    """
    pt = _check_thresholds(thresholds)
    event = np.asarray(event, dtype=bool)
    risk = np.asarray(risk, dtype=np.float64)
    n = len(event)
    if n == 0:
        return np.full(len(pt), np.nan)
    treated = risk[None, :] >= pt[:, None]
    true_positive = (treated & event).sum(axis=1)
    false_positive = (treated & ~event).sum(axis=1)
    return true_positive / n - false_positive / n * pt / (1 - pt)


def treat_all_net_benefit(event: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """Net benefit of treating every patient: ``prevalence - (1 - prevalence) * pt / (1 - pt)``."""
    pt = _check_thresholds(thresholds)
    prevalence = float(np.mean(np.asarray(event, dtype=bool))) if len(event) else np.nan
    return prevalence - (1 - prevalence) * pt / (1 - pt)


def decision_curve(spec, y_true: np.ndarray, proba: np.ndarray,
                   thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> pd.DataFrame:
    """Decision curves of one classification outcome on its labelled rows.

    Parameters
    ----------
    spec : TaskSpec
        A binary or multi-class outcome (its ``classes`` name the rows).
    y_true : ndarray of shape (n,), int
        Class indices.
    proba : ndarray of shape (n, n_classes)
        Predicted probabilities.
    thresholds : sequence of float, default=5% to 50% by 1%

    Returns
    -------
    DataFrame
        One row per class analysed (binary: the positive class; several
        classes: each, against the rest) and threshold: ``outcome``,
        ``class``, ``threshold``, ``n``, ``events`` and the net benefit of the
        ``model``, ``treat_all`` and ``treat_none`` (0).
    """
    if spec.kind not in (BINARY, MULTICLASS):
        raise ValueError(f"decision curves need a classification outcome; {spec.name!r} is {spec.kind}.")
    pt = _check_thresholds(thresholds)
    positions = [1] if spec.kind == BINARY else range(proba.shape[1])
    frames = []
    for k in positions:
        event = y_true == k
        frames.append(pd.DataFrame({
            "outcome": spec.name, "class": spec.classes[k] if spec.classes is not None else k,
            "threshold": pt, "n": len(event), "events": int(event.sum()),
            "model": net_benefit(event, proba[:, k], pt), "treat_all": treat_all_net_benefit(event, pt),
            "treat_none": 0.0,
        }))
    return pd.concat(frames, ignore_index=True)


def decision_curves(model, X, y, thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> pd.DataFrame:
    """Decision curves of every classification outcome of a fitted model.

    Parameters
    ----------
    model : MultiTaskMLP
        A fitted model.
    X : DataFrame or array-like
        Raw features.
    y : DataFrame or array-like
        Labels, NaN where unlabelled; each outcome is analysed on its labelled rows.
    thresholds : sequence of float, default=5% to 50% by 1%
        Threshold probabilities, each in (0, 1).

    Returns
    -------
    DataFrame
        The rows of :func:`decision_curve` for every binary and multi-class
        outcome, in the model's order (empty without one).

    Examples
    --------
    >>> from clinical_mtl import MultiTaskMLP
    >>> from clinical_mtl.datasets import make_synthetic_cohort
    >>> X, Y = make_synthetic_cohort(200, random_state=0)
    >>> model = MultiTaskMLP(hidden_layer_sizes=(8,), max_epochs=5, ensemble_size=1, random_state=0).fit(X, Y)
    >>> curves = decision_curves(model, X, Y, thresholds=[0.1, 0.2])
    >>> sorted(set(curves["outcome"]))
    ['diagnosis', 'subtype']
    """
    columns = ["outcome", "class", "threshold", "n", "events", "model", "treat_all", "treat_none"]
    frames = [decision_curve(spec, y_true, output, thresholds)
              for spec, y_true, output in model.labelled_pairs(X, y) if spec.kind in (BINARY, MULTICLASS)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def _check_thresholds(thresholds: Sequence[float]) -> np.ndarray:
    pt = np.asarray(thresholds, dtype=np.float64).ravel()
    if pt.size == 0 or not np.all((pt > 0) & (pt < 1)):
        raise ValueError(f"thresholds must be probabilities strictly between 0 and 1, got {list(pt)}.")
    return pt

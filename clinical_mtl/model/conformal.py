"""Split-conformal prediction intervals of regression outcomes.

After training, ``MultiTaskMLP`` keeps, per regression outcome, the sorted
absolute residuals ``|y - y_hat|`` (in the outcome's units) of the labelled
early-stopping rows, each row predicted only by the ensemble members that
held it out, so by networks that never trained on it. For a new patient the
interval at coverage ``1 - alpha`` is ``y_hat +- q``, where ``q`` is the
``ceil((n + 1)(1 - alpha))``-th smallest of the ``n`` residuals (Vovk et al.
2005; Lei et al., "Distribution-free predictive inference for regression",
JASA 2018). When the held-out rows are exchangeable with the new patients, at
least ``1 - alpha`` of such intervals hold the true value (and, without ties,
at most ``1 - alpha + 1 / (n + 1)``). With too few residuals for the coverage
asked (``ceil((n + 1)(1 - alpha)) > n``) the interval is infinite.

The width is the same for every patient: the residuals are not scaled by a
per-patient spread (a held-out row is predicted by one or two networks only,
so the ensemble's spread is not available for it). Two caveats make the
coverage approximate rather than exact: the held-out rows also chose the
networks' stopping epochs (slightly optimistic), and they are predicted by
fewer networks than a new patient (slightly pessimistic).
"""

from __future__ import annotations

import math
from numbers import Real

import numpy as np

DEFAULT_COVERAGE = 0.9


def conformal_scores(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Sorted absolute residuals, the conformity scores of split-conformal intervals.

    Parameters
    ----------
    y_true, y_pred : ndarray of shape (n_samples,)
        Held-out labels and their predictions.

    Returns
    -------
    ndarray of shape (n_samples,), float64, ascending
    """
    return np.sort(np.abs(np.asarray(y_true, dtype=np.float64) - np.asarray(y_pred, dtype=np.float64)))


def conformal_quantile(scores: np.ndarray, coverage: float) -> float:
    """Half-width of the split-conformal interval at ``coverage``.

    Parameters
    ----------
    scores : ndarray of shape (n,), ascending
        As returned by :func:`conformal_scores`.
    coverage : float
        In (0, 1).

    Returns
    -------
    float
        The ``ceil((n + 1) * coverage)``-th smallest score; ``inf`` when that
        exceeds ``n``.

    Examples
    --------
    >>> conformal_quantile(np.arange(1.0, 10.0), 0.8)  # ceil(10 * 0.8) = 8th of 9
    8.0
    >>> conformal_quantile(np.arange(1.0, 10.0), 0.95)
    inf
    """
    check_coverage(coverage)
    rank = math.ceil((len(scores) + 1) * coverage - 1e-9)  # 1e-9: (n + 1) * coverage is often an integer
    return float(scores[rank - 1]) if rank <= len(scores) else math.inf


def check_coverage(coverage) -> float:
    """``coverage`` as a float, or a ValueError unless it is a number strictly between 0 and 1."""
    if isinstance(coverage, bool) or not isinstance(coverage, Real) or not 0 < coverage < 1:
        raise ValueError(f"coverage must be a number strictly between 0 and 1, got {coverage!r}.")
    return float(coverage)

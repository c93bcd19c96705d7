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

With ``interval_method="absolute"`` the width is the same for every patient.
With ``"normalized"`` (the default; Papadopoulos et al. 2008, Lei et al. 2018
section 5.2) it follows a scale ``sigma(x)``, a :class:`ScaleModel`: a ridge
regression of ``log |y - y_hat|`` on the network's inputs (scikit-learn's
``RidgeCV``, its penalty chosen by leave-one-out), fitted on a random half of
the held-out rows. The other half gives the scores ``|y - y_hat| / sigma(x)``
and the interval is ``y_hat +- q sigma(x)``, ``q`` their quantile as above:
as exact as the absolute interval (the scale never saw those rows), wider
where the residuals were larger. Where the residuals do not depend on the
features, the penalty shrinks ``sigma`` to a near-constant and the intervals
to the absolute ones. Normalised is the default by
``reports/interval_widths.md``: on a synthetic cohort whose noise varies
between patients, both cover 91% at the same mean width (half-width 1.20),
but among the noisiest fifth of patients the normalised intervals cover 87%
and the absolute ones 71% (the width's correlation with the error is 0.43);
with the same noise for everyone, normalised intervals are 0.6% narrower
(means over 3 seeds). The ensemble's spread was tried as ``sigma`` and rejected: on
the varying-noise cohort its correlation with the error was 0.04 to 0.12,
and at a held-out row most members trained on it, so its spread there is
not that of a new patient. An outcome with fewer than
``MIN_NORMALIZED_ROWS`` labelled held-out rows keeps the absolute interval.

Two caveats make the coverage approximate rather than exact: the held-out rows also chose the
networks' stopping epochs (slightly optimistic), and they are predicted by
fewer networks than a new patient (slightly pessimistic).

Our own code rather than MAPIE or crepes: MAPIE's ``SplitConformalRegressor``
predicts the calibration rows with one estimator (ours are each predicted by
the members that held them out) and keeps scikit-learn objects, which only
pickle; crepes' ``ConformalRegressor`` is the same quantile from residuals
and sigmas, but computes its rank as ``int((1 - confidence) (n + 1))`` in
floating point: with 9 scores at 0.9 that is ``int(0.99999...) = 0`` and the
interval infinite (checked with crepes 0.9.1), where the 9th score exists.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real

import numpy as np
from sklearn.linear_model import RidgeCV

DEFAULT_COVERAGE = 0.9
NORMALIZED, ABSOLUTE = "normalized", "absolute"
INTERVAL_METHODS = (NORMALIZED, ABSOLUTE)
MIN_NORMALIZED_ROWS = 100
"""Labelled held-out rows an outcome needs for normalised intervals: half fit
the scale, half give the scores; with fewer the scale is mostly noise."""
RIDGE_PENALTIES = np.logspace(-2, 4, 13)


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


@dataclass(frozen=True)
class ScaleModel:
    """``sigma(x) = exp(intercept + inputs @ coefficients)``, the scale of a
    patient's residual, clipped to ``log_range`` (see the module docstring).

    Parameters
    ----------
    coefficients : ndarray of shape (n_inputs,)
        Per network input.
    intercept : float
    log_range : tuple of (float, float)
        The least and greatest ``log sigma`` of the rows it was fitted on; a
        patient far from them gets the nearest (a linear model extrapolates
        without bound).
    """

    coefficients: np.ndarray
    intercept: float
    log_range: tuple

    @classmethod
    def fit(cls, inputs: np.ndarray, residuals: np.ndarray) -> ScaleModel:
        """Ridge regression of ``log |residual|`` on the network's inputs.

        Parameters
        ----------
        inputs : ndarray of shape (n_samples, n_inputs)
            Preprocessed inputs of held-out rows.
        residuals : ndarray of shape (n_samples,)
            Their ``y - y_hat``.

        Returns
        -------
        ScaleModel
        """
        absolute = np.abs(np.asarray(residuals, dtype=np.float64))
        floor = 1e-6 * max(float(absolute.mean()), np.finfo(np.float64).tiny)  # no log(0) on an exact fit
        ridge = RidgeCV(alphas=RIDGE_PENALTIES).fit(np.asarray(inputs, dtype=np.float64), np.log(absolute + floor))
        unclipped = cls(np.asarray(ridge.coef_, dtype=np.float64), float(ridge.intercept_), (-np.inf, np.inf))
        log_scales = unclipped.log_scale(inputs)
        return cls(unclipped.coefficients, unclipped.intercept, (float(log_scales.min()), float(log_scales.max())))

    def log_scale(self, inputs: np.ndarray) -> np.ndarray:
        """``log sigma`` of every row, shape (n_samples,).

        Added input by input, so a patient's value is the same bit for bit
        whatever rows come with it (a matrix product's rounding follows its
        shape).
        """
        total = np.full(len(inputs), self.intercept)
        for j, coefficient in enumerate(self.coefficients):
            total += np.asarray(inputs[:, j], dtype=np.float64) * coefficient
        return np.clip(total, *self.log_range)

    def scale(self, inputs: np.ndarray) -> np.ndarray:
        """``sigma`` of every row, shape (n_samples,), positive."""
        return np.exp(self.log_scale(inputs))

    def to_dict(self) -> dict:
        """Plain JSON-ready data."""
        return {"coefficients": self.coefficients.tolist(), "intercept": self.intercept,
                "log_range": list(self.log_range)}

    @classmethod
    def from_dict(cls, state: dict) -> ScaleModel:
        """Inverse of ``to_dict``."""
        return cls(np.asarray(state["coefficients"], dtype=np.float64), float(state["intercept"]),
                   tuple(float(bound) for bound in state["log_range"]))


def normalized_conformal(inputs: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray,
                         random_state: int) -> tuple[ScaleModel, np.ndarray]:
    """Fit the scale on a random half of the held-out rows, score the other half.

    Parameters
    ----------
    inputs : ndarray of shape (n_samples, n_inputs)
        Preprocessed inputs of the held-out rows.
    y_true, y_pred : ndarray of shape (n_samples,)
        Their labels and predictions.
    random_state : int
        Seeds the split into halves.

    Returns
    -------
    scale : ScaleModel
        Fitted on ``n_samples // 2`` rows.
    scores : ndarray of shape (n_samples - n_samples // 2,), ascending
        ``|y - y_hat| / sigma(x)`` of the other rows.
    """
    residuals = np.asarray(y_true, dtype=np.float64) - np.asarray(y_pred, dtype=np.float64)
    order = np.random.default_rng(random_state).permutation(len(residuals))
    fit_rows, score_rows = order[: len(order) // 2], order[len(order) // 2 :]
    scale = ScaleModel.fit(inputs[fit_rows], residuals[fit_rows])
    return scale, np.sort(np.abs(residuals[score_rows]) / scale.scale(inputs[score_rows]))

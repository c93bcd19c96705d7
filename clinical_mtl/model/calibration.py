"""Recalibrating the predicted probabilities of a classification outcome after training.

A network's probabilities can be too extreme or too modest even when it ranks
patients well. ``MultiTaskMLP`` refits them on the early-stopping rows, each
row predicted only by the ensemble members that held it out (rows no network
trained on), with one of two maps from the ensemble's probability vector
``p`` to a recalibrated one:

``"temperature"`` (:class:`TemperatureScaling`)
    ``softmax(log(p) / T)`` with one scalar ``T > 0`` per outcome, fitted by
    minimising the negative log-likelihood of the held-out labels (Guo et al.,
    "On calibration of modern neural networks", ICML 2017). ``T > 1`` makes
    over-confident probabilities more modest, ``T < 1`` sharpens them. For a
    binary outcome it is ``logit(p') = logit(p) / T``. One parameter: it never
    changes which class is the most probable, nor the ranking of patients.
    The fitted temperature is used only where the held-out rows show
    miscalibration: where the likelihood-ratio test of ``T = 1`` against the
    fitted ``T`` rejects at the 5% level (``2 (NLL(1) - NLL(T)) >= 3.84``,
    NLL summed over the rows); otherwise the temperature is 1 and the
    probabilities are left as they are. Without that test, a well-calibrated
    ensemble would be "recalibrated" by noise: on the synthetic cohort with a
    few hundred held-out rows per outcome, that made the calibration error on
    new patients worse, not better.
    Nor is a temperature fitted where fewer than ``MIN_MINORITY_ROWS`` (30)
    held-out rows are outside the outcome's most common class (for a binary
    outcome: in its rarer class): the map is then the identity, and the
    fitted state records why (``minority_rows`` and ``too_few_rows``). With
    20% of PBC's cirrhosis labels (9 to 15 such rows per fold) the test let
    T = 0.28 through in 1 of 20 folds (two seeds), about the 5% it lets
    through by chance, and that fold's log loss on new patients went from
    0.61 to 1.08: with so few rows a chance rejection comes with a
    temperature far from any that new patients need. Each held-out row is
    predicted by one or two of the five networks that predict new patients,
    but that is not what went wrong: with all labels (62 to 75 such rows)
    the temperatures fitted, untested, on the held-out rows and on the
    ensemble's test rows agreed (medians 0.92 and 0.91; see
    ``reports/calibration_scarce_labels.md``).
``"isotonic"`` (:class:`IsotonicCalibration`)
    A non-decreasing piecewise-linear map of the probability (scikit-learn's
    ``IsotonicRegression``, clipped outside the fitted range): of the
    positive class for a binary outcome; of every class, one-vs-rest, for
    several classes, the results then divided by their sum so that rows sum to
    1 again (Zadrozny and Elkan, KDD 2002). More flexible (it also corrects a
    shift of the average risk) but steps and ties, and data-hungry: use it
    with many held-out rows (thousands). With few, its ends are 0 and 1:
    patients beyond the extreme held-out rows get a probability of exactly 0
    or 1 (on PBC, 5-fold cross-validation, it lowered the calibration error
    but raised the log loss from 0.52 to 0.96).

The fitted state is plain numbers (a temperature, or the thresholds of the
isotonic maps), stored as JSON with the model. ``jacobian`` gives the
derivative of the map, which :mod:`clinical_mtl.model.explanation` uses to carry SHAP
values through it exactly.

Temperature scaling is our own rather than scikit-learn's
``CalibratedClassifierCV(method="temperature")`` (1.8+), which finds the same
temperature (to 1e-6 relative on the same rows, tested) but wants one
estimator predicting the calibration rows (ours are each predicted by the
members that held them out), keeps a fitted object that only pickles (ours is
one number in ``model.json``), and has neither the likelihood-ratio test nor
the Jacobian; measured side by side, its fit took 3.8x our time on 300 rows
and 2.3x to 3.6x on 3,000 (the held-out sizes here), 0.3x on 30,000.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax
from sklearn.isotonic import IsotonicRegression

TEMPERATURE, ISOTONIC = "temperature", "isotonic"
METHODS = (TEMPERATURE, ISOTONIC)
TEMPERATURE_BOUNDS = (0.05, 20.0)
# 95% quantile of the chi-square distribution with one degree of freedom: the
# likelihood-ratio statistic a fitted temperature needs to be used.
LIKELIHOOD_RATIO_THRESHOLD = 3.841458820694124
# Held-out rows outside the most common class below which no temperature is fitted (see the module docstring).
MIN_MINORITY_ROWS = 30
_SMALLEST = 1e-15  # probabilities are clipped here before taking logarithms


@dataclass(frozen=True)
class TemperatureScaling:
    """``softmax(log(p) / temperature)``, row by row (see the module docstring).

    Parameters
    ----------
    temperature : float
        Above 1 softens the probabilities, below 1 sharpens them; 1 leaves
        them as they are.
    minority_rows : int or None, default=None
        Held-out rows outside the most common class that the map was fitted
        on; None where not recorded (models saved before it was).
    too_few_rows : bool, default=False
        True where ``minority_rows`` was below ``MIN_MINORITY_ROWS``, so no
        temperature was fitted (``temperature`` is 1).
    """

    temperature: float
    minority_rows: int | None = None
    too_few_rows: bool = False

    @classmethod
    def fit(cls, proba: np.ndarray, y_true: np.ndarray, *, test: bool = True) -> TemperatureScaling:
        """The temperature minimising the log loss of ``y_true`` (bounded to [0.05, 20]).

        Parameters
        ----------
        proba : ndarray of shape (n_samples, n_classes)
            Predicted probabilities.
        y_true : ndarray of shape (n_samples,), int
            Class indices.
        test : bool, default=True
            Return a temperature of 1 unless there are at least
            ``MIN_MINORITY_ROWS`` rows outside the most common class and the
            likelihood-ratio test rejects ``T = 1`` at the 5% level (see the
            module docstring).

        Returns
        -------
        TemperatureScaling
        """
        minority = int(len(y_true) - np.bincount(y_true).max()) if len(y_true) else 0
        if test and minority < MIN_MINORITY_ROWS:
            return cls(1.0, minority, too_few_rows=True)
        log_p = np.log(np.clip(proba, _SMALLEST, 1.0))
        rows = np.arange(len(y_true))

        def log_loss(log_temperature: float) -> float:
            return -float(np.mean(log_softmax(log_p / math.exp(log_temperature), axis=1)[rows, y_true]))

        low, high = TEMPERATURE_BOUNDS
        result = minimize_scalar(log_loss, bounds=(math.log(low), math.log(high)), method="bounded",
                                 options={"xatol": 1e-6})
        likelihood_ratio = 2 * len(y_true) * (log_loss(0.0) - result.fun)
        if test and likelihood_ratio < LIKELIHOOD_RATIO_THRESHOLD:
            return cls(1.0, minority)
        return cls(float(math.exp(result.x)), minority)

    def transform(self, proba: np.ndarray) -> np.ndarray:
        """Recalibrated probabilities, shape (n_samples, n_classes), rows summing to 1."""
        if self.temperature == 1.0:
            return proba
        return softmax(np.log(np.clip(proba, _SMALLEST, 1.0)) / self.temperature, axis=1)

    def jacobian(self, proba: np.ndarray) -> np.ndarray:
        """Derivatives ``d transform(p)_c / d p_d``, shape (n_samples, n_classes, n_classes)."""
        if self.temperature == 1.0:
            return np.broadcast_to(np.eye(proba.shape[1]), (len(proba), proba.shape[1], proba.shape[1])).copy()
        g = self.transform(proba)
        slope = 1.0 / (self.temperature * np.clip(proba, _SMALLEST, 1.0))
        return (np.einsum("nc,cd->ncd", g, np.eye(g.shape[1])) - g[:, :, None] * g[:, None, :]) * slope[:, None, :]

    def to_dict(self) -> dict:
        """Plain JSON-ready data."""
        return {"method": TEMPERATURE, "temperature": self.temperature, "minority_rows": self.minority_rows,
                "too_few_rows": self.too_few_rows}


@dataclass(frozen=True)
class IsotonicCalibration:
    """Isotonic maps of the probabilities (see the module docstring).

    Parameters
    ----------
    thresholds : tuple of (ndarray, ndarray)
        Per map, the increasing probabilities and their recalibrated values
        (``X_thresholds_`` and ``y_thresholds_`` of ``IsotonicRegression``),
        interpolated linearly in between and constant beyond. One map (of the
        positive class) for a binary outcome, one per class for several. A
        binary map's value of 0 or 1 is held half a row from it, ``1 / (2 n)``
        for ``n`` held-out rows: a step fitted on finitely many patients never
        shows certainty, whose log loss and log-odds would be infinite.
    """

    thresholds: tuple

    @classmethod
    def fit(cls, proba: np.ndarray, y_true: np.ndarray) -> IsotonicCalibration:
        """Fit the isotonic maps on predicted probabilities and class indices.

        Parameters
        ----------
        proba : ndarray of shape (n_samples, n_classes)
        y_true : ndarray of shape (n_samples,), int

        Returns
        -------
        IsotonicCalibration
        """
        classes = [1] if proba.shape[1] == 2 else range(proba.shape[1])
        margin = 0.5 / len(y_true) if proba.shape[1] == 2 else 0.0  # several: a row may map to 0 (transform)
        thresholds = []
        for k in classes:
            regression = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
            regression.fit(proba[:, k], (y_true == k).astype(np.float64))
            thresholds.append((np.asarray(regression.X_thresholds_, dtype=np.float64),
                               np.clip(np.asarray(regression.y_thresholds_, dtype=np.float64), margin, 1 - margin)))
        return cls(tuple(thresholds))

    def transform(self, proba: np.ndarray) -> np.ndarray:
        """Recalibrated probabilities, shape (n_samples, n_classes), rows summing to 1.

        A row whose classes all map to 0 (possible with several classes only)
        keeps its probabilities.
        """
        if len(self.thresholds) == 1:
            positive = np.interp(proba[:, 1], *self.thresholds[0])
            return np.column_stack([1.0 - positive, positive])
        mapped, total = self._mapped(proba)
        return np.where(total > 0, mapped / np.where(total > 0, total, 1.0), proba)

    def jacobian(self, proba: np.ndarray) -> np.ndarray:
        """Derivatives ``d transform(p)_c / d p_d`` (one-sided at the thresholds),
        shape (n_samples, n_classes, n_classes)."""
        if len(self.thresholds) == 1:
            slope = _interp_slope(proba[:, 1], *self.thresholds[0])
            jacobian = np.zeros((len(proba), 2, 2))
            jacobian[:, 0, 1], jacobian[:, 1, 1] = -slope, slope
            return jacobian
        mapped, total = self._mapped(proba)
        slopes = np.column_stack([_interp_slope(proba[:, k], x, y) for k, (x, y) in enumerate(self.thresholds)])
        safe = np.where(total > 0, total, 1.0)
        g = mapped / safe
        identity = np.eye(proba.shape[1])
        jacobian = (identity[None] - g[:, :, None]) * (slopes / safe)[:, None, :]
        return np.where(total[:, :, None] > 0, jacobian, identity[None])

    def to_dict(self) -> dict:
        """Plain JSON-ready data."""
        return {"method": ISOTONIC, "thresholds": [[x.tolist(), y.tolist()] for x, y in self.thresholds]}

    def _mapped(self, proba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mapped = np.column_stack([np.interp(proba[:, k], x, y) for k, (x, y) in enumerate(self.thresholds)])
        return mapped, mapped.sum(axis=1, keepdims=True)


Calibrator = TemperatureScaling | IsotonicCalibration


def fit_calibrator(method: str, proba: np.ndarray, y_true: np.ndarray) -> Calibrator | None:
    """Fit the recalibration ``method`` on held-out probabilities and labels.

    Parameters
    ----------
    method : {"temperature", "isotonic"}
    proba : ndarray of shape (n_samples, n_classes)
        Predicted probabilities of held-out rows.
    y_true : ndarray of shape (n_samples,), int
        Their class indices.

    Returns
    -------
    TemperatureScaling, IsotonicCalibration or None
        None, leaving the probabilities as they are, when the rows cannot
        support the fit: temperature scaling needs two classes among them,
        isotonic maps need every class. With two classes but fewer than
        ``MIN_MINORITY_ROWS`` rows outside the most common one, a temperature
        of 1 marked ``too_few_rows``.
    """
    present = len(np.unique(y_true))
    if method == TEMPERATURE:
        return TemperatureScaling.fit(proba, y_true) if present >= 2 else None
    if method == ISOTONIC:
        return IsotonicCalibration.fit(proba, y_true) if present == proba.shape[1] else None
    raise ValueError(f"calibration method must be one of {METHODS}, got {method!r}.")


def calibrator_from_dict(state: dict) -> Calibrator:
    """Inverse of the calibrators' ``to_dict``."""
    if state["method"] == TEMPERATURE:
        minority = state.get("minority_rows")  # absent from models saved before it was recorded
        return TemperatureScaling(float(state["temperature"]), None if minority is None else int(minority),
                                  bool(state.get("too_few_rows", False)))
    if state["method"] == ISOTONIC:
        return IsotonicCalibration(tuple(
            (np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)) for x, y in state["thresholds"]
        ))
    raise ValueError(f"Unknown calibration method {state['method']!r}; known: {METHODS}.")


def _interp_slope(values: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Slope of ``np.interp(values, x, y)``: of the segment holding each value, 0 beyond the ends."""
    if len(x) < 2:
        return np.zeros(len(values))
    segment = np.clip(np.searchsorted(x, values, side="right") - 1, 0, len(x) - 2)
    slopes = np.diff(y) / np.where(np.diff(x) > 0, np.diff(x), 1.0)
    inside = (values >= x[0]) & (values < x[-1])
    return np.where(inside, slopes[segment], 0.0)

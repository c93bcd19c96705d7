"""Recalibration maps on data with known answers."""

import json
import math

import numpy as np
import pytest
from scipy.special import softmax
from sklearn import __version__ as sklearn_version
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.fixes import parse_version

from clinical_mtl.model.calibration import (
    IsotonicCalibration,
    TemperatureScaling,
    calibrator_from_dict,
    fit_calibrator,
)
from clinical_mtl.model.metrics import expected_calibration_error


def _draw(n_classes, scale, n=20000, seed=0):
    """Labels drawn from softmax(z); predictions softmax(scale * z): over-confident when scale > 1."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 1.5, size=(n, n_classes))
    truth = softmax(logits, axis=1)
    y = (rng.random((n, 1)) > np.cumsum(truth, axis=1)).sum(axis=1)
    return softmax(scale * logits, axis=1), y


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("scale", [2.0, 0.5])
def test_temperature_recovers_a_known_temperature(n_classes, scale):
    proba, y = _draw(n_classes, scale)
    calibrator = TemperatureScaling.fit(proba, y)
    assert calibrator.temperature == pytest.approx(scale, rel=0.06)  # over-confident: T > 1
    calibrated = calibrator.transform(proba)
    np.testing.assert_allclose(calibrated.sum(axis=1), 1.0)
    np.testing.assert_array_equal(calibrated.argmax(axis=1), proba.argmax(axis=1))
    assert expected_calibration_error(y, calibrated) < expected_calibration_error(y, proba) / 2


def test_temperature_stays_1_without_evidence_of_miscalibration():
    """A calibrated model's held-out rows give a fitted T near 1 by chance only: the
    likelihood-ratio test keeps T = 1 and the probabilities exactly as they are."""
    proba, y = _draw(3, 1.0, n=500, seed=4)
    untested = TemperatureScaling.fit(proba, y, test=False).temperature
    assert untested != 1.0 and abs(untested - 1) < 0.15
    calibrator = TemperatureScaling.fit(proba, y)
    assert calibrator.temperature == 1.0
    assert calibrator.transform(proba) is proba
    np.testing.assert_array_equal(calibrator.jacobian(proba[:2]), np.stack([np.eye(3)] * 2))


def test_temperature_of_a_binary_outcome_divides_its_log_odds():
    proba = np.array([[0.8, 0.2], [0.5, 0.5], [0.01, 0.99]])
    calibrated = TemperatureScaling(2.0).transform(proba)
    logit = np.log(proba[:, 1] / proba[:, 0])
    np.testing.assert_allclose(np.log(calibrated[:, 1] / calibrated[:, 0]), logit / 2)
    np.testing.assert_allclose(TemperatureScaling(1.0).transform(proba), proba)


def test_isotonic_corrects_a_monotone_distortion():
    rng = np.random.default_rng(1)
    p = rng.random(20000)
    y = (rng.random(20000) < p**2).astype(int)  # predictions p, true risk p^2: too high
    proba = np.column_stack([1 - p, p])
    calibrator = IsotonicCalibration.fit(proba, y)
    calibrated = calibrator.transform(proba)
    assert len(calibrator.thresholds) == 1
    assert np.all(np.diff(calibrated[np.argsort(p), 1]) >= 0)  # non-decreasing
    assert np.abs(calibrated[:, 1] - p**2).mean() < 0.02
    assert expected_calibration_error(y, calibrated) < 0.02 < expected_calibration_error(y, proba)


def test_isotonic_with_several_classes_is_one_vs_rest_renormalised():
    proba, y = _draw(3, 2.0, n=5000)
    calibrator = IsotonicCalibration.fit(proba, y)
    assert len(calibrator.thresholds) == 3
    calibrated = calibrator.transform(proba)
    np.testing.assert_allclose(calibrated.sum(axis=1), 1.0)
    mapped = np.column_stack([np.interp(proba[:, k], x, v) for k, (x, v) in enumerate(calibrator.thresholds)])
    np.testing.assert_allclose(calibrated, mapped / mapped.sum(axis=1, keepdims=True))
    assert expected_calibration_error(y, calibrated) < expected_calibration_error(y, proba)


@pytest.mark.parametrize("calibrator", [
    TemperatureScaling(1.7),
    IsotonicCalibration(((np.array([0.0, 0.3, 1.0]), np.array([0.1, 0.2, 0.9])),)),
    IsotonicCalibration(tuple((np.array([0.0, 0.2 + k / 10, 1.0]), np.array([0.05, 0.3, 0.8])) for k in range(3))),
])
def test_jacobian_matches_finite_differences(calibrator):
    rng = np.random.default_rng(2)
    n_classes = 2 if len(getattr(calibrator, "thresholds", ())) == 1 else 3
    proba = softmax(rng.normal(size=(5, n_classes)), axis=1)
    jacobian = calibrator.jacobian(proba)
    step = 1e-7
    for d in range(n_classes):
        shift = np.zeros(n_classes)
        shift[d] = step
        numeric = (calibrator.transform(proba + shift) - calibrator.transform(proba - shift)) / (2 * step)
        np.testing.assert_allclose(jacobian[:, :, d], numeric, atol=1e-5)
    np.testing.assert_allclose(jacobian.sum(axis=1), 0.0, atol=1e-12)  # outputs keep summing to 1


@pytest.mark.parametrize("method", ["temperature", "isotonic"])
def test_fitted_state_is_plain_json_and_round_trips_exactly(method):
    proba, y = _draw(3, 1.5, n=2000)
    calibrator = fit_calibrator(method, proba, y)
    restored = calibrator_from_dict(json.loads(json.dumps(calibrator.to_dict())))
    np.testing.assert_array_equal(restored.transform(proba), calibrator.transform(proba))


def test_fit_calibrator_needs_the_classes_among_the_held_out_labels():
    proba, y = _draw(3, 1.5, n=200)
    assert fit_calibrator("temperature", proba, np.zeros(200, dtype=int)) is None
    assert fit_calibrator("isotonic", proba, np.where(y == 2, 0, y)) is None  # class 2 absent
    assert fit_calibrator("temperature", proba, np.where(y == 2, 0, y)) is not None
    with pytest.raises(ValueError, match="calibration method must be one of"):
        fit_calibrator("platt", proba, y)


def _two_level_binary(n_per_side, n_correct):
    """Rows predicted 0.8 / 0.2, the predicted class right ``n_correct`` times out of ``n_per_side``
    on each side: a frequency f below 0.8, so over-confident."""
    proba = np.repeat([[0.2, 0.8], [0.8, 0.2]], n_per_side, axis=0)
    y = np.r_[np.arange(n_per_side) < n_correct, np.arange(n_per_side) >= n_correct].astype(int)
    return proba, y


@pytest.mark.parametrize("n_per_side, rejects", [(30, False), (40, True)])
def test_the_likelihood_ratio_statistic_is_twice_the_summed_log_likelihood_gain(n_per_side, rejects):
    """Every row predicts its class with sigmoid(log 4 / T) and is right with frequency f = 0.7:
    the best T gives sigmoid(log 4 / T) = f, T = log 4 / logit(f), and gains n KL(f || 0.8) nats
    over T = 1 in summed log-likelihood. The statistic 2 n KL is 3.38 with 60 rows (below 3.84,
    T stays 1) and 4.51 with 80 rows (T is used)."""
    from scipy.optimize import minimize_scalar

    proba, y = _two_level_binary(n_per_side, round(0.7 * n_per_side))
    f, n = 0.7, len(y)
    statistic = 2 * n * (f * np.log(f / 0.8) + (1 - f) * np.log((1 - f) / 0.2))
    best = math.log(4) / math.log(f / (1 - f))

    def summed_nll(t):  # the same NLL summed over the rows, by scipy's optimiser over T itself
        p = 1 / (1 + np.exp(-np.log(proba[:, 1] / proba[:, 0]) / t))
        return -np.sum(np.where(y == 1, np.log(p), np.log(1 - p)))

    reference = minimize_scalar(summed_nll, bounds=(0.5, 5.0), method="bounded", options={"xatol": 1e-10})
    assert reference.x == pytest.approx(best, rel=1e-6)
    assert 2 * (summed_nll(1.0) - reference.fun) == pytest.approx(statistic, rel=1e-9)
    assert (statistic >= 3.841458820694124) == rejects and 2.6 < statistic < 4.6
    assert TemperatureScaling.fit(proba, y, test=False).temperature == pytest.approx(best, rel=1e-4)
    expected = best if rejects else 1.0
    assert TemperatureScaling.fit(proba, y).temperature == pytest.approx(expected, rel=1e-4)


@pytest.mark.filterwarnings("error")  # no division by a zero total on the way either
def test_isotonic_row_whose_classes_all_map_to_0_keeps_its_probabilities():
    """Each class maps p below 0.5 to 0: a row without a class above 0.5 keeps its
    probabilities, so its Jacobian is the identity (finite differences agree)."""
    calibrator = IsotonicCalibration(tuple((np.array([0.0, 0.5, 1.0]), np.array([0.0, 0.0, 1.0]))
                                           for _ in range(3)))
    proba = np.array([[0.3, 0.3, 0.4], [0.1, 0.1, 0.8]])
    # Row 2 maps to (0, 0, 0.6), which sums to 0.6: (0, 0, 1) once renormalised.
    np.testing.assert_allclose(calibrator.transform(proba), [[0.3, 0.3, 0.4], [0.0, 0.0, 1.0]])
    jacobian = calibrator.jacobian(proba[:1])
    step = 1e-6
    numeric = np.stack([(calibrator.transform(proba[:1] + step * np.eye(3)[d]) - calibrator.transform(proba[:1]))
                        / step for d in range(3)], axis=-1)
    np.testing.assert_allclose(numeric[0], np.eye(3), atol=1e-9)
    np.testing.assert_array_equal(jacobian, np.eye(3)[None])


def test_isotonic_jacobian_of_a_binary_map_is_its_one_sided_slope():
    """Two held-out probability levels give a map with two thresholds, one linear piece between
    (scikit-learn's IsotonicRegression, clipped beyond). Its derivative, shape (n, 2, 2): the
    piece's slope for p_1 from the first threshold up to (not at) the last, 0 beyond either end,
    one-sided (from above) at the thresholds: the forward difference of scikit-learn's map."""
    from sklearn.isotonic import IsotonicRegression

    p1 = np.repeat([0.2, 0.8], 4)
    y = np.array([1, 0, 0, 0, 1, 1, 1, 0])  # frequencies 0.25 and 0.75
    proba = np.column_stack([1 - p1, p1])
    calibrator = IsotonicCalibration.fit(proba, y)
    reference = IsotonicRegression(out_of_bounds="clip").fit(p1, y)
    np.testing.assert_allclose(calibrator.thresholds[0][0], [0.2, 0.8])
    at = np.array([0.0, 0.1, 0.2, 0.5, 0.7, 0.8, 0.95, 1.0])
    np.testing.assert_allclose(calibrator.transform(np.column_stack([1 - at, at]))[:, 1], reference.predict(at))
    step = 1e-7
    slope = (reference.predict(np.minimum(at + step, 1.0)) - reference.predict(at)) / step
    slope[at == 1.0] = 0.0  # p_1 cannot go above 1; the map is flat there anyway
    np.testing.assert_allclose(slope, [0, 0, 0.5 / 0.6, 0.5 / 0.6, 0.5 / 0.6, 0, 0, 0], atol=1e-6)
    expected = np.zeros((len(at), 2, 2))
    expected[:, 0, 1], expected[:, 1, 1] = -slope, slope  # transform is (1 - g(p_1), g(p_1)): no p_0
    np.testing.assert_allclose(calibrator.jacobian(np.column_stack([1 - at, at])), expected, atol=1e-6)


def test_temperature_reads_a_probability_past_0_or_1_by_rounding_as_0_or_1():
    """Explanations carry base + attributions through the map (``link_attributions.through_calibration``),
    which rounding can put a little past 0 or 1: fitted, transformed and differentiated, such a
    vector gives what the probabilities clipped to [0, 1] give."""
    rng = np.random.default_rng(0)
    proba = softmax(rng.normal(0.0, 3.0, size=(300, 2)), axis=1)
    y = (rng.random(300) < proba[:, 1] ** 1.5).astype(int)
    past = proba.copy()
    near_1 = past[:, 1] > 0.9
    past[near_1] = [-1e-9, 1.0 + 1e-9]
    clipped = np.clip(past, 0.0, 1.0)
    assert near_1.sum() > 50
    fitted = TemperatureScaling.fit(past, y, test=False)
    assert fitted.temperature == TemperatureScaling.fit(clipped, y, test=False).temperature != 1.0
    np.testing.assert_array_equal(fitted.transform(past), fitted.transform(clipped))
    np.testing.assert_array_equal(fitted.jacobian(past), fitted.jacobian(clipped))


class _GivenProbabilities(ClassifierMixin, BaseEstimator):
    """A classifier whose features are its own predicted probabilities: scikit-learn's calibration
    then sees exactly the probabilities ours is fitted on."""

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        return self

    def predict_proba(self, X):
        return np.asarray(X)

    def predict(self, X):
        return self.classes_[np.argmax(X, axis=1)]


@pytest.mark.skipif(parse_version(sklearn_version) < parse_version("1.8"), reason="temperature scaling came in scikit-learn 1.8")
@pytest.mark.parametrize("n_classes, scale, n", [(2, 0.6, 300), (2, 1.7, 3000), (3, 0.8, 3000)])
def test_temperature_is_scikit_learns(n_classes, scale, n):
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.frozen import FrozenEstimator

    proba, y = _draw(n_classes, scale, n=n, seed=n_classes)
    ours = TemperatureScaling.fit(proba, y, test=False)
    theirs = CalibratedClassifierCV(FrozenEstimator(_GivenProbabilities().fit(proba, y)), method="temperature")
    theirs.fit(proba, y)
    inverse = theirs.calibrated_classifiers_[0].calibrators[0].beta_  # their parameter is 1 / T
    assert ours.temperature == pytest.approx(1.0 / inverse, rel=1e-5)
    np.testing.assert_allclose(ours.transform(proba), theirs.predict_proba(proba), atol=1e-6)


def _over_confident_binary(minority, majority=200, seed=0):
    """Binary rows predicted with softmax(3 z) whose labels follow softmax(z) (temperature 3),
    keeping ``minority`` rows of class 1 and ``majority`` of class 0."""
    proba, y = _draw(2, 3.0, n=4000, seed=seed)
    keep = np.r_[np.flatnonzero(y == 1)[:minority], np.flatnonzero(y == 0)[:majority]]
    return proba[keep], y[keep]


def test_no_temperature_is_fitted_below_the_minimum_rows_in_the_rarer_class():
    """Strongly over-confident rows that the likelihood-ratio test alone would recalibrate: with
    29 rows in the rarer class the map is the identity and its state says why; with 30 it is fitted."""
    from clinical_mtl.model.calibration import MIN_MINORITY_ROWS

    assert MIN_MINORITY_ROWS == 30
    proba, y = _over_confident_binary(29)
    assert TemperatureScaling.fit(proba, y, test=False).temperature > 1.5  # the evidence is there...
    calibrator = TemperatureScaling.fit(proba, y)
    assert calibrator.temperature == 1.0  # ...but too few events to trust it
    assert (calibrator.minority_rows, calibrator.too_few_rows) == (29, True)
    assert calibrator.transform(proba) is proba
    assert fit_calibrator("temperature", proba, y) == calibrator
    proba, y = _over_confident_binary(30)
    fitted = TemperatureScaling.fit(proba, y)
    assert fitted.temperature > 1.5 and (fitted.minority_rows, fitted.too_few_rows) == (30, False)


def test_rows_outside_the_most_common_class_count_for_several_classes():
    """Three classes: the rows counted are all but those of the most common class (15 + 14 = 29)."""
    proba, y = _draw(3, 3.0, n=3000, seed=1)
    keep = np.r_[np.flatnonzero(y == 0)[:100], np.flatnonzero(y == 1)[:15], np.flatnonzero(y == 2)[:14]]
    calibrator = TemperatureScaling.fit(proba[keep], y[keep])
    assert (calibrator.temperature, calibrator.minority_rows, calibrator.too_few_rows) == (1.0, 29, True)
    keep = np.r_[keep, np.flatnonzero(y == 2)[14:15]]
    assert TemperatureScaling.fit(proba[keep], y[keep]).too_few_rows is False


def test_the_reason_round_trips_and_older_states_load_with_defaults():
    state = json.loads(json.dumps(TemperatureScaling(1.0, 12, too_few_rows=True).to_dict()))
    assert calibrator_from_dict(state) == TemperatureScaling(1.0, 12, too_few_rows=True)
    older = calibrator_from_dict({"method": "temperature", "temperature": 1.7})  # saved before the rule
    assert older == TemperatureScaling(1.7) and older.minority_rows is None and older.too_few_rows is False


def test_a_binary_isotonic_map_never_reaches_0_or_1():
    """Held-out rows perfectly separated: the steps are 0 and 1, held at half a row (1 / 2n) from them."""
    proba = np.column_stack([1 - np.linspace(0.05, 0.95, 40), np.linspace(0.05, 0.95, 40)])
    y = (np.arange(40) >= 20).astype(int)
    recalibrated = fit_calibrator("isotonic", proba, y).transform(np.array([[0.99, 0.01], [0.01, 0.99]]))
    np.testing.assert_allclose(recalibrated[:, 1], [1 / 80, 1 - 1 / 80])

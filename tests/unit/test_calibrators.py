"""Recalibration maps on data with known answers."""

import json

import numpy as np
import pytest
from scipy.special import softmax

from clinical_mtl.calibration import (
    IsotonicCalibration,
    TemperatureScaling,
    calibrator_from_dict,
    fit_calibrator,
)
from clinical_mtl.metrics import expected_calibration_error


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

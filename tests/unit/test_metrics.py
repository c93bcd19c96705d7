import numpy as np
import pytest
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

from clinical_mtl.metrics import (
    brier_skill_score,
    calibration_slope_intercept,
    classification_metrics,
    event_count,
    expected_calibration_error,
    r_squared,
    regression_metrics,
    resampled_metrics,
)


def test_binary_metrics_match_scikit_learn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p = np.clip(0.3 * y + 0.7 * rng.random(200), 0.01, 0.99)
    proba = np.column_stack([1 - p, p])
    metrics = classification_metrics(y, proba)
    assert metrics["auroc"] == pytest.approx(roc_auc_score(y, p))
    assert metrics["log_loss"] == pytest.approx(log_loss(y, p))
    assert metrics["brier"] == pytest.approx(brier_score_loss(y, p))
    assert metrics["accuracy"] == pytest.approx(np.mean((p >= 0.5) == y))


def test_multiclass_metrics():
    y = np.array([0, 1, 2, 2])
    proba = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.3, 0.4, 0.3]])
    metrics = classification_metrics(y, proba)
    assert metrics["accuracy"] == 0.75
    expected_brier = np.mean(np.sum((proba - np.eye(3)[y]) ** 2, axis=1))
    assert metrics["brier"] == pytest.approx(expected_brier)
    assert metrics["auroc"] == pytest.approx(
        np.mean([roc_auc_score(y == k, proba[:, k]) for k in range(3)])
    )


def test_auroc_is_nan_with_one_class_present():
    assert np.isnan(classification_metrics(np.array([1, 1]), np.array([[0.2, 0.8], [0.4, 0.6]]))["auroc"])


def test_skill_scores_are_zero_for_base_rate_and_one_for_perfect():
    y = np.array([0, 0, 0, 1])
    base_rate = np.tile([0.75, 0.25], (4, 1))
    perfect = np.eye(2)[y]
    assert brier_skill_score(y, base_rate) == pytest.approx(0.0)
    assert brier_skill_score(y, perfect) == pytest.approx(1.0)
    values = np.array([1.0, 2.0, 3.0])
    assert r_squared(values, np.full(3, 2.0)) == pytest.approx(0.0)
    assert np.isnan(r_squared(np.array([1.0, 1.0]), np.array([1.0, 2.0])))


def test_regression_metrics():
    metrics = regression_metrics(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 5.0]))
    assert metrics["rmse"] == pytest.approx(np.sqrt(4 / 3))
    assert metrics["mae"] == pytest.approx(2 / 3)
    assert metrics["r2"] == pytest.approx(1 - 4 / 2)


def _binary(p):
    return np.column_stack([1 - p, p])


def test_ece_is_near_zero_when_calibrated_and_the_gap_when_not():
    rng = np.random.default_rng(0)
    p = rng.random(50_000)
    y = (rng.random(50_000) < p).astype(int)
    assert expected_calibration_error(y, _binary(p)) < 0.01
    assert expected_calibration_error(y, _binary(p), strategy="quantile") < 0.01
    # Everyone predicted 0.8 while half have the event: one bin, gap 0.3.
    y = np.array([0, 1] * 50)
    assert expected_calibration_error(y, _binary(np.full(100, 0.8))) == pytest.approx(0.3)


def test_ece_of_several_classes_uses_the_top_label():
    y = np.array([0, 1, 2, 2])
    proba = np.array([[0.7, 0.2, 0.1], [0.1, 0.7, 0.2], [0.2, 0.1, 0.7], [0.7, 0.2, 0.1]])
    # All top probabilities are 0.7, three of four are right: |0.7 - 0.75|.
    assert expected_calibration_error(y, proba) == pytest.approx(0.05)


def test_calibration_slope_and_intercept():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 1.5, 20_000)
    y = (rng.random(20_000) < 1 / (1 + np.exp(-logits))).astype(int)
    slope, intercept = calibration_slope_intercept(y, _binary(1 / (1 + np.exp(-logits))))
    assert slope == pytest.approx(1, abs=0.05) and intercept == pytest.approx(0, abs=0.05)
    slope, _ = calibration_slope_intercept(y, _binary(1 / (1 + np.exp(-2 * logits))))  # overconfident
    assert slope == pytest.approx(0.5, abs=0.05)
    _, intercept = calibration_slope_intercept(y, _binary(1 / (1 + np.exp(-(logits + 1)))))  # risks too high
    assert intercept == pytest.approx(-1, abs=0.05)
    assert np.isnan(calibration_slope_intercept(np.array([0, 1, 2]), np.full((3, 3), 1 / 3))).all()
    assert np.isnan(calibration_slope_intercept(np.array([1, 1]), _binary(np.array([0.3, 0.6])))).all()


@pytest.mark.parametrize("n_classes", [2, 3])
def test_resampled_metrics_equal_the_metrics_of_the_resampled_rows(n_classes):
    rng = np.random.default_rng(2)
    y = rng.integers(0, n_classes, 300)
    proba = rng.dirichlet(np.ones(n_classes), 300)
    if n_classes == 2:
        proba = _binary(np.round(proba[:, 1], 1))  # many tied scores
    kind = "binary" if n_classes == 2 else "multiclass"
    draws = rng.integers(0, 300, 300)
    counts = np.vstack([np.ones(300), np.bincount(draws, minlength=300)])
    resampled = resampled_metrics(kind, y, proba, counts)
    for row, rows in enumerate([np.arange(300), draws]):
        expected = classification_metrics(y[rows], proba[rows])
        for metric in ("auroc", "brier"):
            assert resampled[metric][row] == pytest.approx(expected[metric])
    assert resampled["ece"][0] == pytest.approx(expected_calibration_error(y, proba))
    values, predictions = rng.normal(size=300), rng.normal(size=300)
    resampled = resampled_metrics("regression", values, predictions, counts)
    expected = regression_metrics(values[draws], predictions[draws])
    assert resampled["rmse"][1] == pytest.approx(expected["rmse"])
    assert resampled["r2"][1] == pytest.approx(expected["r2"])


def test_events_count_positives_or_the_rarest_class():
    assert event_count("binary", np.array([0, 1, 1]), np.zeros((3, 2))) == 2
    assert event_count("multiclass", np.array([0, 1, 1, 2, 2, 2]), np.zeros((6, 3))) == 1
    assert np.isnan(event_count("regression", np.array([1.0]), np.array([1.0])))

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize_scalar
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, log_loss, r2_score, roc_auc_score

from clinical_mtl.model.decision_curve import decision_curve, net_benefit, treat_all_net_benefit
from clinical_mtl.model.metrics import (
    auroc,
    bin_edges,
    brier_skill_score,
    calibration_bins,
    calibration_slope_intercept,
    classification_metrics,
    event_count,
    expected_calibration_error,
    r_squared,
    regression_metrics,
    resampled_metrics,
)
from clinical_mtl.model.tasks import TaskSpec


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


def test_auroc_of_several_classes_averages_the_classes_present_even_singletons():
    y = np.array([0, 0, 1, 2, 2, 0])  # class 1 has one patient, class 3 none
    proba = np.array([[0.6, 0.1, 0.2, 0.1], [0.3, 0.3, 0.3, 0.1], [0.2, 0.2, 0.5, 0.1],
                      [0.1, 0.4, 0.4, 0.1], [0.2, 0.1, 0.6, 0.1], [0.4, 0.2, 0.3, 0.1]])
    expected = np.mean([roc_auc_score(y == k, proba[:, k]) for k in (0, 1, 2)])
    assert roc_auc_score(y == 1, proba[:, 1]) != pytest.approx(expected)  # the singleton class matters
    assert classification_metrics(y, proba)["auroc"] == pytest.approx(expected)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # undefined is NaN, not a scikit-learn warning
        assert np.isnan(auroc(np.array([2, 2, 2]), np.full((3, 3), 1 / 3)))


def test_calibration_bins_are_equal_width_and_closed_on_the_right():
    p = np.array([0.0, 0.05, 0.1, 0.15, 0.2, 0.5, 0.95, 1.0])
    np.testing.assert_array_equal(calibration_bins(p), [0, 0, 0, 1, 1, 4, 9, 9])
    # Ties at the edges 0.1 and 0.2 fall in the bin below: bins {0.1}, {0.15, 0.2}, {0.5} with gaps
    # |0.1 - 0|, |(0.15 - 1) + (0.2 - 0)| and |0.5 - 0|, over 4 patients.
    y = np.array([0, 1, 0, 0])
    assert expected_calibration_error(y, _binary(np.array([0.1, 0.15, 0.2, 0.5]))) == pytest.approx(1.25 / 4)


def test_quantile_bins_hold_equal_numbers_of_patients():
    p = np.arange(1, 9) / 10
    edges = bin_edges(p, 4, "quantile")
    assert len(edges) == 5 and edges[0] == 0.1 and edges[-1] == 0.8
    np.testing.assert_array_equal(calibration_bins(p, 4, "quantile"), [0, 0, 1, 1, 2, 2, 3, 3])
    y = np.array([0, 1, 1, 1, 0, 0, 1, 1])
    # Pairs (0.1, 0.2), (0.3, 0.4), (0.5, 0.6), (0.7, 0.8): gaps |0.3 - 1|, |0.7 - 2|, |1.1 - 0|, |1.5 - 2|.
    ece = expected_calibration_error(y, _binary(p), n_bins=4, strategy="quantile")
    assert ece == pytest.approx((0.7 + 1.3 + 1.1 + 0.5) / 8)


def test_ece_of_one_patient_is_its_gap_and_nan_without_patients():
    assert expected_calibration_error(np.array([1]), _binary(np.array([0.8]))) == pytest.approx(0.2)
    assert np.isnan(expected_calibration_error(np.array([], dtype=int), np.zeros((0, 2))))


def _reference_slope_intercept(y, p):
    """Slope by an unpenalised scikit-learn fit; intercept by minimising the offset likelihood."""
    logits = np.log(p / (1 - p))
    slope = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000).fit(logits[:, None], y).coef_[0, 0]

    def negative_log_likelihood(a):
        return -np.sum(y * (a + logits) - np.logaddexp(0, a + logits))

    return slope, minimize_scalar(negative_log_likelihood, bracket=(-5, 5), tol=1e-12).x


def test_calibration_slope_intercept_clip_certain_predictions_and_match_a_reference_fit():
    rng = np.random.default_rng(5)
    p = np.r_[rng.uniform(0.05, 0.95, 38), 1.0, 0.0]
    y = np.r_[(rng.random(38) < p[:38]).astype(int), 0, 1]  # certain predictions that are wrong
    slope, intercept = calibration_slope_intercept(y, _binary(p))
    expected = _reference_slope_intercept(y, np.clip(p, 1e-6, 1 - 1e-6))
    assert (slope, intercept) == pytest.approx(expected, rel=1e-5)


def test_calibration_slope_is_nan_for_separable_data_while_the_intercept_is_defined():
    y, p = np.array([0, 0, 1, 1]), np.array([0.1, 0.3, 0.6, 0.9])
    slope, intercept = calibration_slope_intercept(y, _binary(p))
    assert np.isnan(slope)
    assert intercept == pytest.approx(_reference_slope_intercept(y, p)[1], abs=1e-7)


def test_brier_skill_score_is_nan_with_one_class():
    assert np.isnan(brier_skill_score(np.array([1, 1, 1]), _binary(np.array([0.8, 0.6, 0.9]))))


def test_r_squared_of_two_rows_matches_scikit_learn():
    y, prediction = np.array([1.0, 3.0]), np.array([1.5, 2.0])
    assert r_squared(y, prediction) == pytest.approx(r2_score(y, prediction))


@pytest.mark.parametrize("scale", [1e-7, 1.0, 1e5])
def test_resampled_r2_matches_r_squared_at_any_scale_of_the_labels(scale):
    rng = np.random.default_rng(6)
    values = scale * rng.normal(size=40)
    predictions = values + scale * rng.normal(0, 0.3, 40)
    draws = rng.integers(0, 40, 40)
    counts = np.vstack([np.ones(40), np.bincount(draws, minlength=40)])
    r2 = resampled_metrics("regression", values, predictions, counts)["r2"]
    assert r2 == pytest.approx([r2_score(values, predictions), r2_score(values[draws], predictions[draws])])
    # Far from 0 (a baseline of 10^7 units), the labels' spread still has full precision.
    offset = 1e7 * scale
    shifted = resampled_metrics("regression", values + offset, predictions + offset, counts)["r2"]
    assert shifted == pytest.approx(r2, rel=1e-6)


def test_resampled_r2_is_nan_where_the_resampled_labels_do_not_vary():
    values = np.array([-1e5 - 0.1, 3.3, 7.1, 2e5 + 0.3])
    counts = 5 * np.eye(4)  # every resample draws one row five times
    assert np.isnan(resampled_metrics("regression", values, values + 1, counts)["r2"]).all()
    constant = np.full(3, 2.5)
    assert np.isnan(resampled_metrics("regression", constant, constant + 1, np.ones((1, 3)))["r2"]).all()


def test_resampled_auroc_of_one_positive_and_one_negative():
    y = np.array([0, 1, 0, 1])
    proba = _binary(np.array([0.7, 0.4, 0.2, 0.9]))
    counts = np.array([[1, 1, 0, 0], [0, 0, 1, 1], [0, 1, 0, 0]])  # one pair each, then positives only
    areas = resampled_metrics("binary", y, proba, counts)["auroc"]
    assert areas[:2] == pytest.approx([roc_auc_score([0, 1], [0.7, 0.4]), roc_auc_score([0, 1], [0.2, 0.9])])
    assert np.isnan(areas[2])


def test_net_benefit_against_a_hand_computation():
    event = np.array([1, 0, 1, 0, 1])
    risk = np.array([0.9, 0.6, 0.4, 0.2, 0.1])
    # pt 0.25: rows 0-2 treated, TP 2, FP 1: 2/5 - 1/5 * 0.25/0.75 = 1/3.
    # pt 0.5: rows 0-1, TP 1, FP 1: 1/5 - 1/5 * 1 = 0. pt 0.6: a risk equal to the threshold is treated
    # (rows 0-1): 1/5 - 1/5 * 1.5 = -0.1. Treat all, prevalence 3/5: 3/5 - 2/5 * pt / (1 - pt).
    np.testing.assert_allclose(net_benefit(event, risk, [0.25, 0.5, 0.6]), [1 / 3, 0.0, -0.1], atol=1e-12)
    np.testing.assert_allclose(treat_all_net_benefit(event, [0.25, 0.5]), [0.6 - 0.4 / 3, 0.2], atol=1e-12)
    for thresholds in ([0.0, 0.5], [0.5, 1.0], [1.5], []):
        with pytest.raises(ValueError, match="strictly between 0 and 1"):
            net_benefit(event, risk, thresholds)
    assert np.isnan(net_benefit(np.array([], bool), np.array([]), [0.5])).all()  # no patients
    np.testing.assert_allclose(net_benefit(np.array([1]), np.array([0.7]), [0.5]), [1.0])  # one is enough


def test_decision_curve_of_several_classes_is_one_against_the_rest():
    spec = TaskSpec("stage", "multiclass", classes=("a", "b", "c"))
    y = np.array([0, 1, 2, 1])
    proba = np.array([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.1, 0.35, 0.55], [0.6, 0.3, 0.1]])
    curve = decision_curve(spec, y, proba, thresholds=[0.3])
    assert curve["class"].tolist() == ["a", "b", "c"] and curve["events"].tolist() == [1, 2, 1]
    assert curve.index.equals(pd.RangeIndex(3))  # one row per class and threshold, numbered afresh
    # Class b at 0.3: rows 1, 2 and 3 treated (0.5, 0.35, 0.3), rows 1 and 3 have it: 2/4 - 1/4 * 3/7.
    b = curve[curve["class"] == "b"]
    assert b["model"].item() == pytest.approx(0.5 - 0.25 * 3 / 7)
    assert b["treat_all"].item() == pytest.approx(0.5 - 0.5 * 3 / 7)
    binary = decision_curve(TaskSpec("d", "binary", classes=(0, 1)), np.array([0, 1]),
                            np.array([[0.8, 0.2], [0.3, 0.7]]), thresholds=[0.5])
    assert binary["class"].tolist() == [1] and binary["model"].item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="classification outcome"):
        decision_curve(TaskSpec("t", "regression"), np.zeros(2), np.zeros(2))

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

from clinical_mtl.metrics import (
    brier_skill_score,
    classification_metrics,
    r_squared,
    regression_metrics,
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

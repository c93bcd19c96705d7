"""The negative-transfer verdict, on intervals and on hand-made predictions (no training that matters)."""

import copy

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import r2_score, roc_auc_score

from clinical_mtl import MultiTaskMLP
from clinical_mtl.evaluation import negative_transfer
from clinical_mtl.evaluation.negative_transfer import (
    HELPED,
    HURT,
    NO_INTERVAL,
    UNCLEAR,
    _verdict,
    single_task_comparison,
)

N = 100


@pytest.mark.parametrize(("lower", "upper", "higher_is_better", "expected"), [
    (0.01, 0.2, True, HELPED),  # e.g. AUROC: the shared model's is higher on every resample
    (-0.2, -0.01, True, HURT),
    (-0.1, 0.1, True, UNCLEAR),
    (0.0, 0.2, True, UNCLEAR),  # an interval that reaches 0 contains it
    (0.01, 0.2, False, HURT),  # e.g. RMSE: the shared model's is higher, so worse
    (-0.2, -0.01, False, HELPED),
    (-0.1, 0.1, False, UNCLEAR),
    (-0.2, 0.0, False, UNCLEAR),
    (np.nan, np.nan, True, NO_INTERVAL),
])
def test_verdict_reads_the_difference_interval_in_the_metrics_direction(lower, upper, higher_is_better, expected):
    assert _verdict(lower, upper, higher_is_better) == expected


@pytest.fixture(scope="module")
def data():
    """N test patients, all labelled: a binary outcome (half events) and a continuous one."""
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=N), "b": rng.normal(size=N)})
    Y = pd.DataFrame({"event": np.tile([0, 1], N // 2), "level": rng.normal(size=N)})
    return X, Y


@pytest.fixture(scope="module")
def fitted(data):
    X, Y = data
    return MultiTaskMLP(hidden_layer_sizes=(4,), max_epochs=1, ensemble_size=1, early_stopping=False,
                        random_state=0).fit(X, Y)


def _predictions(data, quality):
    """Probabilities of ``event`` and values of ``level`` that are "good", "bad" or "mirror" (as good as
    "good" on other rows: "good" with its values swapped between rows of the same class)."""
    _, Y = data
    rng = np.random.default_rng(1)
    y, level = Y["event"].to_numpy(), Y["level"].to_numpy()
    if quality == "good":  # events mostly above non-events; errors of 1 on half the rows
        p, value = np.where(y == 1, 0.4, 0.1) + 0.5 * rng.random(N), level + np.r_[np.ones(N // 2), np.zeros(N // 2)]
    elif quality == "bad":  # unrelated to the outcome: AUROC about 0.5; large errors
        p, value = rng.random(N), level + 3 * rng.normal(size=N)
    else:
        good_p, good_value = _predictions(data, "good")
        swap = np.r_[np.arange(N // 2, N), np.arange(N // 2)]  # rows 2k <-> 50 + 2k: same class, same parity
        p, value = good_p[:, 1][swap], level + (good_value - level)[swap]
    return np.column_stack([1 - p, p]), value


def _compare(fitted, data, shared, alone, monkeypatch, **options):
    """``single_task_comparison`` with the shared model and the twins predicting ``shared`` and ``alone``."""
    X, Y = data
    model = copy.copy(fitted)
    model.predict_outputs = lambda X_: (X_.index, list(_predictions(data, shared)))

    def twin_of(model, name):
        twin = copy.copy(model)
        twin.predict_outputs = lambda X_: (X_.index, list(_predictions(data, alone)))
        twin.fit = lambda *args, **kwargs: twin
        return twin

    monkeypatch.setattr(negative_transfer, "_single_task_twin", twin_of)
    return single_task_comparison(model, X, Y, X, Y, n_bootstrap=200, random_state=0, **options)


@pytest.mark.parametrize(("shared", "alone", "expected"), [("good", "bad", HELPED), ("bad", "good", HURT),
                                                            ("good", "mirror", UNCLEAR)])
def test_verdict_of_hand_made_predictions(fitted, data, shared, alone, expected, monkeypatch):
    table = _compare(fitted, data, shared, alone, monkeypatch)
    _, Y = data
    y, level = Y["event"].to_numpy(), Y["level"].to_numpy()
    (shared_p, shared_value), (alone_p, alone_value) = _predictions(data, shared), _predictions(data, alone)
    rmse = [np.sqrt(np.mean((value - level) ** 2)) for value in (shared_value, alone_value)]
    auroc = [roc_auc_score(y, p[:, 1]) for p in (shared_p, alone_p)]
    assert table.loc["event", "multi_task"] == pytest.approx(auroc[0])
    assert table.loc["event", "single_task"] == pytest.approx(auroc[1])
    assert table.loc["level", ["multi_task", "single_task"]].tolist() == pytest.approx(rmse)
    assert table.loc["level", "delta"] == pytest.approx(rmse[0] - rmse[1])
    assert table["verdict"].tolist() == [expected, expected]
    if expected == UNCLEAR:  # a mirror is exactly as good: the paired resamples straddle 0 symmetrically
        assert table["delta"].tolist() == pytest.approx([0.0, 0.0])
        assert (table["delta_lower"] < 0).all() and (table["delta_upper"] > 0).all()


def test_lower_rmse_and_higher_r2_of_the_shared_model_both_mean_sharing_helped(fitted, data, monkeypatch):
    by_rmse = _compare(fitted, data, "good", "bad", monkeypatch)
    by_r2 = _compare(fitted, data, "good", "bad", monkeypatch, regression_metric="r2")
    _, Y = data
    level = Y["level"].to_numpy()
    r2 = [r2_score(level, _predictions(data, quality)[1]) for quality in ("good", "bad")]
    assert not by_rmse.loc["level", "higher_is_better"]
    assert by_rmse.loc["level", "delta_upper"] < 0 and by_rmse.loc["level", "verdict"] == HELPED
    assert by_r2.loc["level", "higher_is_better"]
    assert by_r2.loc["level", "delta"] == pytest.approx(r2[0] - r2[1]) and r2[0] > r2[1]
    assert by_r2.loc["level", "delta_lower"] > 0 and by_r2.loc["level", "verdict"] == HELPED

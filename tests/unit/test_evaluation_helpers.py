"""Bootstrap intervals, subgroup columns and bands, without a model."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import r2_score, roc_auc_score
from sklearn.utils import check_random_state

from clinical_mtl.evaluation import band, bootstrap_metrics, group_columns
from clinical_mtl.exceptions import InputDataError
from clinical_mtl.model import metric_tables as evaluation
from clinical_mtl.model.metric_tables import percentile_interval
from clinical_mtl.model.metrics import classification_metrics


def _interval(n, seed=0):
    rng = np.random.default_rng(seed)
    p = rng.random(n)
    y = (rng.random(n) < p).astype(int)
    proba = np.column_stack([1 - p, p])
    (resampled,) = bootstrap_metrics("binary", y, [proba], 300, check_random_state(0))
    return classification_metrics(y, proba), {m: percentile_interval(v, 0.95) for m, v in resampled.items()}


def test_bootstrap_interval_contains_the_estimate_and_narrows_with_more_rows():
    point, small = _interval(200)
    _, large = _interval(3200)
    for metric in ("auroc", "brier"):
        lower, upper = small[metric]
        assert lower <= point[metric] <= upper
        assert large[metric][1] - large[metric][0] < 0.5 * (upper - lower)


def test_paired_resamples_are_shared_and_seeded():
    y = np.array([0, 1] * 20)
    proba = np.column_stack([1 - y * 0.6 - 0.2, y * 0.6 + 0.2])
    first, second = bootstrap_metrics("binary", y, [proba, proba], 50, check_random_state(3))
    np.testing.assert_array_equal(first["brier"], second["brier"])
    (again,) = bootstrap_metrics("binary", y, [proba], 50, check_random_state(3))
    np.testing.assert_array_equal(first["brier"], again["brier"])
    assert bootstrap_metrics("binary", y, [proba], 0, check_random_state(3)) == [{}]


def _reference_resamples(n, n_bootstrap, seed):
    """The documented resampling, drawn here: per resample, how often each of n rows is drawn."""
    return np.random.RandomState(seed).multinomial(n, np.full(n, 1.0 / n), size=n_bootstrap)


def _reference_binary_metrics(y, p):
    """AUROC, Brier score and ECE (ten equal-width bins, closed on the right) from their definitions."""
    bins = np.clip(np.ceil(p * 10).astype(int) - 1, 0, 9)
    ece = sum(abs(np.sum(p[bins == b] - y[bins == b])) for b in range(10)) / len(y)
    return {"auroc": roc_auc_score(y, p), "brier": np.mean((p - y) ** 2), "ece": ece}


def _reference_regression_metrics(y, prediction):
    return {"rmse": np.sqrt(np.mean((y - prediction) ** 2)), "r2": r2_score(y, prediction)}


def _reference_values(counts, y, output, metrics_of):
    """Every metric recomputed on the rows of every resample."""
    values = {}
    for row_counts in counts:
        rows = np.repeat(np.arange(len(y)), row_counts)
        for metric, value in metrics_of(y[rows], output[rows]).items():
            values.setdefault(metric, []).append(value)
    return values


@pytest.mark.parametrize("block_cells", [None, 7 * 60])  # one block, or blocks of 7 resamples and a rest
def test_bootstrap_interval_is_the_percentile_interval_of_the_seeded_resamples(block_cells, monkeypatch):
    if block_cells is not None:
        monkeypatch.setattr(evaluation, "_BLOCK_CELLS", block_cells)
    rng = np.random.default_rng(4)
    p = rng.random(60)
    y = (rng.random(60) < p).astype(int)
    values, predictions = rng.normal(size=60), rng.normal(size=60)
    cases = [("binary", y, np.column_stack([1 - p, p]), p, _reference_binary_metrics),
             ("regression", values, predictions, predictions, _reference_regression_metrics)]
    for kind, labels, output, reference_output, metrics_of in cases:
        (resampled,) = bootstrap_metrics(kind, labels, [output], 200, check_random_state(9))
        expected = _reference_values(_reference_resamples(60, 200, 9), labels, reference_output, metrics_of)
        assert set(resampled) == set(expected)
        for metric, reference in expected.items():
            for confidence, quantiles in [(0.95, [0.025, 0.975]), (0.8, [0.1, 0.9])]:
                lower, upper = np.quantile(reference, quantiles)
                got = percentile_interval(resampled[metric], confidence)
                np.testing.assert_allclose(got, (lower, upper), rtol=1e-9, err_msg=f"{kind} {metric} {confidence}")
                assert lower < upper


def test_bootstrap_intervals_cover_the_true_auroc_and_brier_at_their_level():
    # p ~ U(0, 1) and y ~ Bernoulli(p): the positives' p has density 2p and the negatives' 2(1 - p), so
    # AUROC = P(p+ > p-) = 4 * int_0^1 a (a - a^2 / 2) da = 5/6, and Brier = E[p (1 - p)] = 1/2 - 1/3 = 1/6.
    truth = {"auroc": 5 / 6, "brier": 1 / 6}
    rng = np.random.default_rng(0)
    covered = {metric: 0 for metric in truth}
    n_datasets = 200
    for seed in range(n_datasets):
        p = rng.random(200)
        y = (rng.random(200) < p).astype(int)
        (resampled,) = bootstrap_metrics("binary", y, [np.column_stack([1 - p, p])], 200, check_random_state(seed))
        for metric, value in truth.items():
            lower, upper = percentile_interval(resampled[metric], 0.95)
            covered[metric] += lower <= value <= upper
    # 200 intervals at 95%: the covered fraction has sd 0.015; the percentile bootstrap undercovers a little.
    for metric, count in covered.items():
        assert 0.88 <= count / n_datasets <= 0.99, (metric, count)


def test_percentile_interval_ignores_undefined_resamples():
    assert percentile_interval(np.array([np.nan, 1.0, 2.0, 3.0]), 0.5) == (1.5, 2.5)
    assert np.isnan(percentile_interval(np.array([np.nan]), 0.95)).all()


def test_band_labels_and_boundaries():
    ages = pd.Series([30.0, 50.0, 64.99, 65.0, np.nan], name="age")
    banded = band(ages, [50, 65])
    assert banded.name == "age" and banded.cat.ordered
    assert banded.astype(object).tolist()[:4] == ["<50", "50-65", "50-65", ">=65"] and pd.isna(banded.iloc[4])
    with pytest.raises(ValueError, match="increasing"):
        band(ages, [65, 50])


def test_group_columns_accept_names_series_frames_and_arrays():
    X = pd.DataFrame({"sex": ["f", "m", "f"], "age": [40.0, 60.0, 70.0]}, index=[10, 11, 12])
    assert group_columns(X, "sex").columns.tolist() == ["sex"]
    assert group_columns(X, ["sex", "age"]).shape == (3, 2)
    shuffled = pd.Series(["a", "b", "c"], index=[12, 10, 11], name="site")
    assert group_columns(X, shuffled)["site"].tolist() == ["b", "c", "a"]  # aligned on the index
    assert group_columns(X, np.array(["a", "b", "a"])).columns.tolist() == ["group"]
    with pytest.raises(InputDataError, match="not columns of X"):
        group_columns(X, "site")
    with pytest.raises(InputDataError, match="one value per row"):
        group_columns(X, np.array(["a", "b"]))
    with pytest.raises(InputDataError, match="indexed differently"):
        group_columns(X, pd.Series(["a", "b", "c"], index=[1, 2, 3]))


def test_bootstrap_of_no_rows_one_row_and_one_resample():
    assert bootstrap_metrics("binary", np.array([], dtype=int), [np.zeros((0, 2))], 10, check_random_state(0)) == [{}]
    (single,) = bootstrap_metrics("regression", np.array([2.0]), [np.array([3.5])], 4, check_random_state(0))
    np.testing.assert_allclose(single["rmse"], np.full(4, 1.5))  # every resample is the one row
    assert np.isnan(single["r2"]).all()
    y, p = np.array([0, 1, 1, 0, 1]), np.array([0.2, 0.7, 0.4, 0.5, 0.9])
    (once,) = bootstrap_metrics("binary", y, [np.column_stack([1 - p, p])], 1, check_random_state(2))
    expected = _reference_values(_reference_resamples(5, 1, 2), y, p, _reference_binary_metrics)
    assert set(once) == set(expected)
    for metric, values in expected.items():
        np.testing.assert_allclose(once[metric], values, err_msg=metric)


def test_band_accepts_cuts_closer_than_one_and_rejects_repeated_cuts():
    banded = band(pd.Series([0.2, 0.5, 0.7, 1.0]), [0.5, 1.0])
    assert banded.astype(object).tolist() == ["<0.5", "0.5-1", "0.5-1", ">=1"]
    with pytest.raises(ValueError, match="increasing"):
        band(pd.Series([1.0]), [50, 50])


def test_group_columns_keep_groups_indexed_exactly_like_x_with_repeated_labels():
    X = pd.DataFrame({"age": [40.0, 60.0, 70.0]}, index=[7, 7, 8])
    groups = pd.Series(["a", "b", "a"], index=[7, 7, 8], name="site")
    assert group_columns(X, groups)["site"].tolist() == ["a", "b", "a"]
    two = group_columns(X, np.array([["a", "x"], ["b", "y"], ["a", "y"]]))
    assert two.columns.tolist() == ["group0", "group1"] and two["group1"].tolist() == ["x", "y", "y"]


@pytest.fixture(scope="module")
def small_evaluation(fitted_model, cohort):
    X, Y = cohort
    return fitted_model, X.iloc[:60], Y.iloc[:60]


def test_evaluate_model_defaults_to_no_intervals_at_95_percent(small_evaluation):
    model, X, Y = small_evaluation
    assert not [column for column in evaluation.evaluate_model(model, X, Y).columns if column.endswith("_lower")]
    pd.testing.assert_frame_equal(
        evaluation.evaluate_model(model, X, Y, n_bootstrap=20, random_state=0),
        evaluation.evaluate_model(model, X, Y, n_bootstrap=20, confidence=0.95, random_state=0),
    )


@pytest.mark.parametrize("confidence", [0.0, 1.0, 1.5])
def test_evaluate_model_rejects_confidence_outside_the_open_unit_interval(small_evaluation, confidence):
    model, X, Y = small_evaluation
    with pytest.raises(ValueError, match="confidence"):
        evaluation.evaluate_model(model, X, Y, n_bootstrap=5, confidence=confidence, random_state=0)


def test_evaluate_model_subgroups_are_the_observed_values_then_missing(small_evaluation):
    model, X, Y = small_evaluation
    ages = pd.Series(np.where(np.arange(60) % 3 == 0, np.nan, 70.0 + np.arange(60) % 2 * 10), index=X.index)
    sites = np.where(np.arange(60) % 4 == 0, None, np.where(np.arange(60) % 2 == 0, "b", "a")).astype(object)
    table = evaluation.evaluate_model(model, X, Y, band(ages, [50, 75], name="age"))
    # "<50" is a category of the band that no patient falls in.
    assert table.loc["diagnosis"].index.get_level_values("value").tolist() == ["50-75", ">=75", "missing"]
    table = evaluation.evaluate_model(model, X, Y, sites)
    assert table.loc["diagnosis"].index.get_level_values("value").tolist() == ["a", "b", "missing"]
    assert table.loc[("diagnosis", "group", "missing"), "n_labelled"] == Y["diagnosis"].iloc[::4].notna().sum()

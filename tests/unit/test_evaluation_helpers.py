"""Bootstrap intervals, subgroup columns and bands, without a model."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import r2_score, roc_auc_score
from sklearn.utils import check_random_state

from scipy import stats

from clinical_mtl.evaluation import band, bootstrap_intervals, group_columns, too_few_to_estimate
from clinical_mtl.exceptions import InputDataError
from clinical_mtl.model import metric_tables as evaluation
from clinical_mtl.model.metric_tables import metric_statistic, percentile_interval
from clinical_mtl.model.metrics import HEADLINE_METRICS, classification_metrics
from clinical_mtl.model.tasks import TaskSpec


def _spec(kind, classes=None):
    return TaskSpec("y", kind, classes=classes)


def _intervals(kind, y, outputs, n_bootstrap, seed, confidence=0.95):
    metrics = HEADLINE_METRICS["regression" if kind == "regression" else "classification"]
    statistic, vectorized = metric_statistic(_spec(kind), y, outputs, metrics)
    return bootstrap_intervals(statistic, len(y), metrics, n_bootstrap, confidence, check_random_state(seed),
                               vectorized=vectorized)


def _interval(n, seed=0):
    rng = np.random.default_rng(seed)
    p = rng.random(n)
    y = (rng.random(n) < p).astype(int)
    proba = np.column_stack([1 - p, p])
    return classification_metrics(y, proba), _intervals("binary", y, [proba], 300, 0)


def test_bootstrap_interval_contains_the_estimate_and_narrows_with_more_rows():
    point, small = _interval(200)
    _, large = _interval(3200)
    for metric in ("auroc", "brier", "ece"):
        lower, upper, note = small[metric]
        assert lower <= point[metric] <= upper and note == "", metric
        assert large[metric][1] - large[metric][0] < 0.6 * (upper - lower), metric


def _reference_binary_metrics(y, p):
    """AUROC, Brier score and ECE (ten equal-width bins, closed on the right) from their definitions."""
    bins = np.clip(np.ceil(p * 10).astype(int) - 1, 0, 9)
    ece = sum(abs(np.sum(p[bins == b] - y[bins == b])) for b in range(10)) / len(y)
    return {"auroc": roc_auc_score(y, p), "brier": np.mean((p - y) ** 2), "ece": ece}


def _reference_regression_metrics(y, prediction):
    return {"rmse": np.sqrt(np.mean((y - prediction) ** 2)), "r2": r2_score(y, prediction)}


def _scipy_bca(y, output, metrics_of, n_bootstrap, seed, levels):
    """scipy's own BCa intervals of every metric at each level, resampling (label, prediction) pairs one
    resample at a time, with the generator bootstrap_intervals documents (seeded from the RandomState)."""
    generator = np.random.default_rng(np.random.RandomState(seed).randint(np.iinfo(np.int32).max))
    names = list(metrics_of(y, output))

    def statistic(a, b):
        return np.array([metrics_of(a, b)[m] for m in names])

    intervals, result = {}, None
    for level in levels:  # the later levels reuse the first level's resamples, as they must
        result = stats.bootstrap((y, output), statistic, paired=True, vectorized=False, confidence_level=level,
                                 n_resamples=0 if result else n_bootstrap, bootstrap_result=result, method="BCa",
                                 rng=generator)
        intervals[level] = {m: (result.confidence_interval.low[k], result.confidence_interval.high[k])
                            for k, m in enumerate(names)}
    return intervals


@pytest.mark.parametrize("block_cells", [None, 7 * 40])  # one block, or blocks of 7 resamples and a rest
def test_bootstrap_interval_is_scipys_bca_interval_at_the_given_level(block_cells, monkeypatch):
    if block_cells is not None:
        monkeypatch.setattr(evaluation, "_BLOCK_CELLS", block_cells)
    rng = np.random.default_rng(4)
    p = rng.random(40)
    y = (rng.random(40) < p).astype(int)
    values = rng.normal(size=40)
    predictions = values + rng.normal(scale=0.8, size=40)
    cases = [("binary", y, np.column_stack([1 - p, p]), p, _reference_binary_metrics),
             ("regression", values, predictions, predictions, _reference_regression_metrics)]
    kept = set()
    for kind, labels, output, reference_output, metrics_of in cases:
        estimate = metrics_of(labels, reference_output)
        reference = _scipy_bca(labels, reference_output, metrics_of, 100, 9, (0.95, 0.8))
        for confidence, expected in reference.items():
            got = _intervals(kind, labels, [output], 100, 9, confidence)
            assert set(got) == set(expected)
            for metric, (lower, upper, note) in got.items():
                low, high = expected[metric]
                if low <= estimate[metric] <= high:
                    np.testing.assert_allclose((lower, upper), (low, high), rtol=1e-9,
                                               err_msg=f"{kind} {metric} {confidence}")
                    assert note == "" and lower < upper
                    kept.add((metric, confidence))
                else:  # BCa's bias correction went past the estimate (the small-sample ECE, at 80%): not shown
                    assert np.isnan(lower) and np.isnan(upper), (kind, metric, confidence)
                    assert note == "no interval: bootstrap distribution beyond the estimate"
        # The level is honoured: the 80% interval lies strictly inside the 95% one.
        wide, narrow = _intervals(kind, labels, [output], 100, 9, 0.95), _intervals(kind, labels, [output], 100, 9, 0.8)
        for metric in wide:
            if (metric, 0.8) in kept:
                assert wide[metric][0] < narrow[metric][0] < narrow[metric][1] < wide[metric][1], (kind, metric)
    assert {metric for metric, _ in kept} == {"auroc", "brier", "ece", "rmse", "r2"}
    assert {("auroc", 0.8), ("brier", 0.8), ("rmse", 0.8), ("r2", 0.8)} <= kept


def test_paired_intervals_resample_both_predictions_together_and_are_seeded():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 60)
    first = np.clip(0.5 + 0.3 * (2 * y - 1) + rng.normal(scale=0.2, size=60), 0.01, 0.99)
    second = np.clip(first + rng.normal(scale=0.1, size=60), 0.01, 0.99)
    two = [np.column_stack([1 - first, first]), np.column_stack([1 - second, second])]
    got = _intervals("binary", y, two, 100, 3)
    assert got == _intervals("binary", y, two, 100, 3)  # seeded

    def difference(a, b, c):
        return (_reference_binary_metrics(a, b)["brier"] - _reference_binary_metrics(a, c)["brier"])

    generator = np.random.default_rng(np.random.RandomState(3).randint(np.iinfo(np.int32).max))
    expected = stats.bootstrap((y, first, second), difference, paired=True, vectorized=False, n_resamples=100,
                               method="BCa", rng=generator).confidence_interval
    np.testing.assert_allclose(got["brier"][:2], (expected.low, expected.high), rtol=1e-9)
    # Identical predictions: every paired difference is 0; BCa is undefined, the percentile interval is (0, 0).
    same = _intervals("binary", y, [two[0], two[0]], 50, 3)
    assert same["brier"] == (0.0, 0.0, "percentile interval (BCa undefined)")


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
        got = _intervals("binary", y, [np.column_stack([1 - p, p])], 200, seed)
        for metric, value in truth.items():
            lower, upper, _ = got[metric]
            covered[metric] += lower <= value <= upper
    # 200 intervals at 95%: the covered fraction has sd 0.015.
    for metric, count in covered.items():
        assert 0.88 <= count / n_datasets <= 0.99, (metric, count)


def test_interval_that_cannot_bracket_its_estimate_is_not_given():
    # The fraction of distinct rows is 1 on the sample and about 0.63 on every resample: BCa is undefined
    # (no resample below the estimate) and the percentile interval lies wholly below it.
    def distinct(rows, axis=-1):
        ordered = np.sort(rows, axis=-1)
        return (1 + np.sum(np.diff(ordered, axis=-1) != 0, axis=-1)) / rows.shape[-1]

    got = bootstrap_intervals(lambda rows, axis=-1: distinct(rows)[None], 50, ["distinct"], 100, 0.95,
                              check_random_state(0))
    lower, upper, note = got["distinct"]
    assert np.isnan(lower) and np.isnan(upper) and note == "no interval: bootstrap distribution beyond the estimate"


def test_percentile_interval_ignores_undefined_resamples():
    assert percentile_interval(np.array([np.nan, 1.0, 2.0, 3.0]), 0.5) == (1.5, 2.5)
    assert np.isnan(percentile_interval(np.array([np.nan]), 0.95)).all()


def test_no_interval_without_rows_resamples_or_a_second_row():
    proba = np.array([[0.5, 0.5]])
    empty = _intervals("binary", np.array([], dtype=int), [np.zeros((0, 2))], 10, 0)
    assert list(empty) == ["auroc", "brier", "ece"]
    assert all(np.isnan(lower) and np.isnan(upper) and note == "" for lower, upper, note in empty.values())
    assert _intervals("binary", np.array([1, 0]), [np.tile(proba, (2, 1))], 0, 0)["brier"][2] == ""
    (lower, upper, note), = [_intervals("regression", np.array([2.0]), [np.array([3.5])], 4, 0)["rmse"]]
    assert np.isnan(lower) and np.isnan(upper) and note == "no interval: one row"


@pytest.mark.parametrize(("kind", "n_labelled", "events", "hidden"), [
    ("binary", 100, 9, True), ("binary", 100, 10, False), ("binary", 100, 91, True), ("binary", 100, 90, False),
    ("multiclass", 300, 9, True), ("multiclass", 300, 10, False),
    ("survival", 200, 9, True), ("survival", 15, 10, False),
    ("regression", 19, np.nan, True), ("regression", 20, np.nan, False),
])
def test_too_few_to_estimate_at_the_documented_floors(kind, n_labelled, events, hidden):
    reason = too_few_to_estimate(kind, n_labelled, events)
    assert bool(reason) == hidden
    if hidden:
        assert reason.startswith("too few to estimate: ") and "(fewer than " in reason


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


def test_percentile_interval_with_a_note_above_the_bca_row_limit(monkeypatch):
    monkeypatch.setattr(evaluation, "_BCA_MAX_ROWS", 30)
    rng = np.random.default_rng(6)
    values = rng.normal(size=40)
    predictions = values + rng.normal(size=40)
    got = _intervals("regression", values, [predictions], 80, 2)["rmse"]
    generator = np.random.default_rng(np.random.RandomState(2).randint(np.iinfo(np.int32).max))
    expected = stats.bootstrap((values, predictions), lambda a, b: np.sqrt(np.mean((a - b) ** 2)), paired=True,
                               vectorized=False, n_resamples=80, method="percentile", rng=generator)
    np.testing.assert_allclose(got[:2], (expected.confidence_interval.low, expected.confidence_interval.high),
                               rtol=1e-9)
    assert got[2] == "percentile interval (BCa above 30 rows not computed)"

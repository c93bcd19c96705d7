"""Bootstrap intervals, subgroup columns and bands, without a model."""

import numpy as np
import pandas as pd
import pytest
from sklearn.utils import check_random_state

from clinical_mtl.evaluation import band, bootstrap_metrics, group_columns, percentile_interval
from clinical_mtl.exceptions import InputDataError
from clinical_mtl.metrics import classification_metrics


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

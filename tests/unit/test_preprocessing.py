import numpy as np
import pandas as pd
import pytest

from clinical_mtl.model.preprocessing import ClinicalPreprocessor


def test_every_output_column_belongs_to_exactly_one_source(mixed_table):
    pre = ClinicalPreprocessor().fit(mixed_table)
    owners = np.concatenate(list(pre.feature_groups_.values()))
    assert sorted(owners.tolist()) == list(range(pre.n_features_out_))
    assert set(pre.feature_groups_) == set(mixed_table.columns)
    names = pre.get_feature_names_out()
    for source, columns in pre.feature_groups_.items():
        assert all(names[i].startswith(source) for i in columns)


def test_missing_indicators_only_for_columns_missing_in_fit():
    X = pd.DataFrame({"age": [50.0, np.nan, 70.0], "bili": [1.0, 2.0, 3.0]})
    pre = ClinicalPreprocessor().fit(X)
    assert pre.get_feature_names_out().tolist() == ["age", "age_missing", "bili"]
    # A value missing only at predict time is imputed, without a new column.
    out = pre.transform(pd.DataFrame({"age": [np.nan], "bili": [np.nan]}))
    assert out.shape == (1, 3) and np.isfinite(out).all()


def test_unseen_category_encodes_as_zeros(mixed_table):
    pre = ClinicalPreprocessor().fit(mixed_table)
    new = mixed_table.head(1).copy()
    new["stage_text"] = "never seen"
    out = pre.transform(new)
    assert np.all(out[0, pre.feature_groups_["stage_text"]] == 0)


def test_statistics_are_learned_in_fit_only():
    train = pd.DataFrame({"age": [40.0, 50.0, 60.0]})
    pre = ClinicalPreprocessor().fit(train)
    out = pre.transform(pd.DataFrame({"age": [50.0, 1000.0]}))
    assert out[0, 0] == 0.0  # the training mean stays the centre
    assert out[1, 0] > 100


def test_output_is_float32_and_finite_with_missing_values(mixed_table):
    out = ClinicalPreprocessor().fit_transform(mixed_table)
    assert out.dtype == np.float32
    assert np.isfinite(out).all()


def test_auto_log_transform_picks_skewed_positive_columns():
    rng = np.random.default_rng(0)
    X = pd.DataFrame({
        "bili": np.exp(rng.normal(size=200)),          # positive, right-skewed
        "age": rng.normal(60, 10, size=200),           # symmetric
        "shift": np.exp(rng.normal(size=200)) - 1.5,   # skewed but not positive
        "edema": rng.choice([0.5, 1.0], size=200),     # two values only
    })
    pre = ClinicalPreprocessor().fit(X)
    assert pre.log_columns_ == ["bili"]
    s = float(f"{np.percentile(X['bili'], 5):.3g}")  # the 5th percentile, to 3 significant digits
    assert pre.get_feature_names_out()[0] == f"asinh(bili/{s:g})"
    out = pre.transform(X)
    transformed = np.arcsinh(X["bili"] / s)
    np.testing.assert_allclose(out[:, 0], (transformed - transformed.mean()) / transformed.std(ddof=0), rtol=1e-4)
    # Log-like: above 10 s it is log(2 x / s) within 1 / (4 (x / s)^2) <= 0.0025.
    large = X["bili"] > 10 * s
    assert large.sum() > 30
    np.testing.assert_allclose(transformed[large], np.log(2 * X["bili"][large] / s), atol=0.0025)


def test_log_like_transform_takes_zero_and_negative_values():
    X = pd.DataFrame({"bili": [1.0, 2.0, 4.0, 8.0]})
    pre = ClinicalPreprocessor(log_transform=["bili"]).fit(X)
    s = 1.15  # 5th percentile of 1, 2, 4, 8: 1 + 0.05 * 3 * (2 - 1)
    assert pre.get_feature_names_out().tolist() == ["asinh(bili/1.15)"]
    train = np.arcsinh(np.array([1.0, 2.0, 4.0, 8.0]) / s)
    new = np.arcsinh(np.array([1.0, 0.0, -3.0]) / s)
    out = pre.transform(pd.DataFrame({"bili": [1.0, 0.0, -3.0]}))
    np.testing.assert_allclose(out[:, 0], (new - train.mean()) / train.std(), rtol=1e-6)
    assert out[0, 0] > out[1, 0] > out[2, 0]
    # An explicit list may name a column with zeros and negative values in training too.
    signed = ClinicalPreprocessor(log_transform=["shift"]).fit(pd.DataFrame({"shift": [-2.0, 0.0, 0.5, 3.0]}))
    assert signed.get_feature_names_out().tolist() == ["asinh(shift/0.65)"]  # of |x| > 0 (0.5, 2, 3): 0.5 + 0.1 * 1.5
    assert np.isfinite(signed.transform(pd.DataFrame({"shift": [-1e300, 0.0, 1e300]}))).all()
    with pytest.raises(ValueError, match="not numeric feature columns"):
        ClinicalPreprocessor(log_transform=["sex"]).fit(pd.DataFrame({"sex": ["f", "m"]}))


def test_matches_scikit_learn_imputer_scaler_and_one_hot(mixed_table):
    """The numpy transform computes what the scikit-learn building blocks would."""
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    pre = ClinicalPreprocessor(log_transform=None).fit(mixed_table)
    out = pre.transform(mixed_table)
    age = mixed_table[["age"]].to_numpy()
    imputed = SimpleImputer(strategy="median", add_indicator=True).fit_transform(age)
    expected = StandardScaler().fit_transform(imputed)
    np.testing.assert_allclose(out[:, pre.feature_groups_["age"]], expected, rtol=1e-6)
    text = mixed_table[["stage_text"]].astype(object).where(mixed_table[["stage_text"]].notna(), np.nan)
    one_hot = OneHotEncoder(sparse_output=False).fit_transform(text)
    np.testing.assert_array_equal(out[:, pre.feature_groups_["stage_text"]], one_hot)


def test_plain_data_round_trip(mixed_table):
    import json

    pre = ClinicalPreprocessor().fit(mixed_table)
    restored = ClinicalPreprocessor.from_dict(json.loads(json.dumps(pre.to_dict())))
    np.testing.assert_array_equal(restored.transform(mixed_table), pre.transform(mixed_table))
    assert restored.get_feature_names_out().tolist() == pre.get_feature_names_out().tolist()
    assert {k: v.tolist() for k, v in restored.feature_groups_.items()} == {
        k: v.tolist() for k, v in pre.feature_groups_.items()
    }


def _with_skewness(z, target):
    """``exp(a z)`` with ``a`` solved so that its sample skewness is ``target`` (positive values)."""
    from scipy.optimize import brentq
    from scipy.stats import skew

    a = brentq(lambda a: skew(np.exp(a * z), bias=False) - target, 0.01, 2.0, xtol=1e-14)
    return np.exp(a * z)


def test_auto_log_transform_follows_the_documented_rule_column_by_column():
    """Positive, more than two distinct values, sample skewness above 1: by scipy, per column."""
    from scipy.stats import norm, skew

    n = 400
    z = norm.ppf((np.arange(n) + 0.5) / n)  # evenly spread normal quantiles, shuffled below
    z = z[np.random.default_rng(0).permutation(n)]
    lognormal = np.exp(z)
    with_nan = lognormal.copy()
    with_nan[::10] = np.nan
    # Skewness 1.01 and 0.99 over their observed values: filling the gaps (with 0, with the
    # median) before measuring it would put them on the other side of the threshold.
    above_with_nan, below_with_nan = np.full(n, np.nan), np.full(n, np.nan)
    above_with_nan[1::2] = _with_skewness(z[1::2], 1.01)
    below_with_nan[1::2] = _with_skewness(z[1::2], 0.99)
    X = pd.DataFrame({
        "lognormal": lognormal,
        "just_above": _with_skewness(z, 1.01),
        "just_below": _with_skewness(z, 0.99),
        "skewed_with_nan": with_nan,                                   # skewness of the observed values
        "just_above_with_nan": above_with_nan,
        "just_below_with_nan": below_with_nan,
        "skewed_with_a_zero": np.where(np.arange(n) == 7, 0.0, lognormal),
        "skewed_with_a_negative": np.where(np.arange(n) == 7, -0.5, lognormal),
        "two_values": np.where(np.arange(n) % 10 == 0, 50.0, 1.0),     # skewness 2.7, two values only
        "three_values": np.where(np.arange(n) % 10 == 0, 50.0, 1.0 + (np.arange(n) % 10 == 1)),
        "left_skewed": 10.0 - np.exp(0.5 * z),                         # positive, skewness below -1
        "counts": np.ceil(3 * lognormal).astype(np.int64),
        "flag": np.arange(n) % 10 == 0,                                # boolean: never transformed
        "arm": pd.Categorical(np.where(np.arange(n) % 10 == 0, "b", "a")),
    })
    numeric = [name for name in X.columns if name not in ("flag", "arm")]

    def chosen_by_rule(values):
        observed = values[~np.isnan(values)]
        return (observed > 0).all() and len(np.unique(observed)) > 2 and skew(observed, bias=False) > 1.0

    expected = [name for name in numeric if chosen_by_rule(X[name].to_numpy(dtype=float))]
    assert expected == [
        "lognormal", "just_above", "skewed_with_nan", "just_above_with_nan", "three_values", "counts"
    ]
    # The columns at the threshold are on the same side of it with or without the small-sample
    # correction of the skewness, so the test does not hinge on which estimator is meant.
    for above, below in [("just_above", "just_below"), ("just_above_with_nan", "just_below_with_nan")]:
        assert skew(X[above].dropna(), bias=True) > 1.0 > skew(X[below].dropna(), bias=False)
    assert ClinicalPreprocessor().fit(X).log_columns_ == expected
    # Those left out for their sign or their two values are right-skewed all the same.
    for name in ("skewed_with_a_zero", "skewed_with_a_negative", "two_values"):
        assert skew(X[name], bias=False) > 2.0
    assert skew(X["left_skewed"], bias=False) < -1.0


def test_a_category_column_without_missing_values_gets_no_missing_column():
    """"missing" is a category only when it occurred in training; otherwise a missing value
    at predict time encodes as all zeros, as scikit-learn's OneHotEncoder ignores it."""
    from sklearn.preprocessing import OneHotEncoder

    train = pd.DataFrame({"arm": ["b", "a", "b"]})
    pre = ClinicalPreprocessor().fit(train)
    assert pre.get_feature_names_out().tolist() == ["arm=a", "arm=b"]
    new = pd.DataFrame({"arm": ["a", np.nan, "c"]})
    expected = OneHotEncoder(handle_unknown="ignore", sparse_output=False).fit(train).transform(new)
    np.testing.assert_array_equal(pre.transform(new), expected)  # [[1, 0], [0, 0], [0, 0]]


def test_constant_and_near_constant_columns_scale_like_scikit_learn():
    """A constant column keeps a scale of 1, as StandardScaler does; a standard deviation of
    10 machine epsilons or more is a scale (also StandardScaler's result for these columns)."""
    from sklearn.preprocessing import StandardScaler

    eps = np.finfo(np.float64).eps
    train = pd.DataFrame({
        "constant": [5.0, 5.0, 5.0, 5.0],
        "std_10_eps": [0.0, 0.0, 20 * eps, 20 * eps],      # mean and std exactly 10 eps
        "std_10.5_eps": [0.0, 0.0, 21 * eps, 21 * eps],    # mean and std exactly 10.5 eps
    })
    assert train.std(ddof=0).tolist() == [0.0, 10 * eps, 10.5 * eps]
    pre = ClinicalPreprocessor(log_transform=None).fit(train)
    new = pd.concat([train, pd.DataFrame({"constant": [7.0], "std_10_eps": [30 * eps], "std_10.5_eps": [0.0]})])
    expected = StandardScaler().fit(train).transform(new)  # constant: (7 - 5) / 1; the others +-1 (and 2, -1)
    np.testing.assert_allclose(pre.transform(new), expected, rtol=1e-6)
    assert [encoding.scale for encoding in pre.encodings_] == [1.0, 10 * eps, 10.5 * eps]


def test_a_column_missing_in_every_training_row_imputes_like_scikit_learn():
    """No median to impute with: 0, as SimpleImputer(keep_empty_features=True) does; the
    column and its indicator are then constant, and scaled by 1."""
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import StandardScaler

    train = pd.DataFrame({"age": [50.0, 60.0, 70.0, 80.0], "copper": np.nan})
    with pytest.warns(UserWarning, match="no observed value"):
        pre = ClinicalPreprocessor(log_transform=None).fit(train)
    assert pre.get_feature_names_out().tolist() == ["age", "copper", "copper_missing"]
    new = pd.DataFrame({"age": [60.0, 60.0], "copper": [5.0, np.nan]})
    imputer = SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True)
    imputed = imputer.fit_transform(train[["copper"]])
    expected = StandardScaler().fit(imputed).transform(imputer.transform(new[["copper"]]))  # [[5, -1], [0, 0]]
    np.testing.assert_allclose(pre.transform(new)[:, pre.feature_groups_["copper"]], expected, rtol=1e-6)


def test_a_log_column_without_a_non_zero_value_gets_a_scale_of_1():
    pre = ClinicalPreprocessor(log_transform=["x"]).fit(pd.DataFrame({"x": [0.0, 0.0, np.nan, 0.0]}))
    assert pre.get_feature_names_out().tolist() == ["asinh(x/1)", "x_missing"]
    # Training values all asinh(0) = 0: centre 0 and scale 1, so a new value is asinh(x / 1) itself.
    out = pre.transform(pd.DataFrame({"x": [3.0, -0.5]}))
    np.testing.assert_allclose(out[:, 0], np.arcsinh([3.0, -0.5]), rtol=1e-6)


def test_auto_log_transform_needs_a_skewness_strictly_above_1():
    """A column whose sample skewness is exactly 1.0 (by scipy, with and without the
    small-sample correction at most 1) is not "above" the threshold; a little more skew is."""
    from scipy.stats import skew

    at_threshold = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 8.370383198559011])
    above = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 8.5])
    assert skew(at_threshold, bias=False) == 1.0 and skew(at_threshold, bias=True) < 1.0
    assert skew(above, bias=False) > 1.0
    assert ClinicalPreprocessor().fit(pd.DataFrame({"x": at_threshold})).log_columns_ == []
    assert ClinicalPreprocessor().fit(pd.DataFrame({"x": above})).log_columns_ == ["x"]

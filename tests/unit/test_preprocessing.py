import numpy as np
import pandas as pd
import pytest

from clinical_mtl.preprocessing import ClinicalPreprocessor


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

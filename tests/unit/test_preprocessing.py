import numpy as np
import pandas as pd

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
    assert pre.get_feature_names_out().tolist() == ["age", "bili", "age_missing"]
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

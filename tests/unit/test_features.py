import datetime

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from clinical_mtl.exceptions import InputDataError
from clinical_mtl.features import as_frame, infer_feature_kinds, prepare_features


def test_kinds_follow_dtypes(mixed_table):
    table = mixed_table.assign(
        count=[1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
        flag=[True, False] * 5,
        note=pd.array(["a", "b"] * 5, dtype="string"),
        lab=pd.array([1.5, None] * 5, dtype="Float64"),
    )
    assert infer_feature_kinds(table) == {
        "age": "numeric",
        "ascites": "boolean",
        "sex": "categorical",
        "stage_text": "categorical",
        "count": "numeric",
        "flag": "boolean",
        "note": "categorical",
        "lab": "numeric",
    }


def test_object_columns_are_read_by_their_values():
    table = pd.DataFrame(
        {"numbers": [1.5, None, 3], "text": ["a", None, "b"], "flags": [True, None, False]},
        dtype=object,
    )
    assert infer_feature_kinds(table) == {
        "numbers": "numeric",
        "text": "categorical",
        "flags": "boolean",
    }


def test_mixed_object_column_is_an_error_naming_column_and_row():
    table = pd.DataFrame({"bili": [1.2, 3.4, "high", 0.9]}, index=[10, 11, 12, 13])
    with pytest.raises(InputDataError, match=r"Column 'bili' cannot be read as numbers or categories.*row 12"):
        infer_feature_kinds(table)


def test_unsupported_dtypes_are_errors():
    table = pd.DataFrame({
        "visit": pd.to_datetime(["2020-01-01", "2021-01-01"]),
        "z": np.array([1 + 1j, 2 + 0j]),
        "objects": [{"a": 1}, {"b": 2}],
        "dates": [datetime.date(2020, 1, 1), datetime.date(2020, 1, 2)],
    })
    with pytest.raises(InputDataError) as error:
        infer_feature_kinds(table)
    message = str(error.value)
    for column in ("visit", "z", "objects", "dates"):
        assert f"'{column}'" in message
    assert "Complex data not supported" in message


def test_prepare_converts_kinds(mixed_table):
    kinds = infer_feature_kinds(mixed_table)
    prepared = prepare_features(mixed_table, kinds)
    assert list(prepared) == list(mixed_table.columns)
    assert prepared["age"].dtype == np.float64
    np.testing.assert_array_equal(prepared["ascites"][:3], [1.0, 0.0, np.nan])
    assert isinstance(prepared["sex"], pd.Categorical)
    assert prepared["sex"].codes[3] == -1  # missing
    assert list(prepared["sex"].categories) == ["f", "m"]


def test_prepare_rejects_infinite_values_naming_rows():
    table = pd.DataFrame({"bili": [1.0, np.inf, 2.0, -np.inf]}, index=["a", "b", "c", "d"])
    with pytest.raises(InputDataError, match=r"Column 'bili' holds infinite values in rows 'b', 'd'"):
        prepare_features(table, {"bili": "numeric"})


def test_prepare_reports_every_bad_column_at_once():
    table = pd.DataFrame({"bili": [1.0, np.inf], "sex": [1.0, 2.0], "ascites": [0.0, 2.0]})
    kinds = {"bili": "numeric", "sex": "categorical", "ascites": "boolean"}
    with pytest.raises(InputDataError) as error:
        prepare_features(table, kinds)
    message = str(error.value)
    assert "Column 'bili' holds infinite" in message
    assert "Column 'sex' is a categorical feature" in message
    assert "Column 'ascites' is a boolean feature" in message


def test_numeric_text_is_not_silently_parsed():
    table = pd.DataFrame({"bili": ["1.5", "2.0"]})
    with pytest.raises(InputDataError, match="Column 'bili' must hold numbers"):
        prepare_features(table, {"bili": "numeric"})


def test_boolean_feature_accepts_zero_one_numbers():
    table = pd.DataFrame({"ascites": [0.0, 1.0, np.nan]})
    values = prepare_features(table, {"ascites": "boolean"})["ascites"]
    np.testing.assert_array_equal(values, [0.0, 1.0, np.nan])


def test_all_missing_categorical_read_as_floats_is_accepted():
    table = pd.DataFrame({"sex": [np.nan, np.nan]})
    assert (prepare_features(table, {"sex": "categorical"})["sex"].codes == -1).all()


def test_categories_are_matched_by_text():
    codes = pd.DataFrame({"grade": pd.Categorical([1, 2, 1])})
    text = pd.DataFrame({"grade": ["1", "2", "1"]})
    kinds = {"grade": "categorical"}
    assert list(prepare_features(codes, kinds)["grade"]) == list(prepare_features(text, kinds)["grade"])


def test_as_frame_names_array_columns_and_rejects_bad_shapes():
    frame = as_frame(np.zeros((3, 2)))
    assert list(frame.columns) == ["x0", "x1"]
    with pytest.raises(InputDataError, match="Reshape your data"):
        as_frame(np.zeros(3))
    with pytest.raises(TypeError, match="Sparse input is not supported"):
        as_frame(sparse.csr_matrix(np.eye(3)))


def test_all_missing_training_column_warns():
    table = pd.DataFrame({"age": [50.0, 60.0], "copper": [np.nan, np.nan]})
    with pytest.warns(UserWarning, match=r"\['copper'\] have no observed value"):
        infer_feature_kinds(table)

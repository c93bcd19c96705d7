import datetime
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from clinical_mtl.data.schema import CohortSchema, FeatureSpec
from clinical_mtl.exceptions import InputDataError
from clinical_mtl.model.features import as_frame, infer_feature_kinds, prepare_features


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
    dates = [datetime.date(2020, 1, 1), datetime.date(2020, 1, 2)]  # (numbers would read as categories "1", "2")
    table = pd.DataFrame({"bili": [1.0, np.inf], "sex": dates, "ascites": [0.0, 2.0]})
    kinds = {"bili": "numeric", "sex": "categorical", "ascites": "boolean"}
    with pytest.raises(InputDataError) as error:
        prepare_features(table, kinds)
    message = str(error.value)
    assert "Column 'bili' holds infinite" in message
    assert "Column 'sex' is a categorical feature" in message
    assert "Column 'ascites' is a boolean feature" in message


def test_numeric_text_reads_as_its_number_and_other_text_is_refused_naming_rows():
    # As a CSV's cells are read (the schema path): the same value is the same number in either path.
    values = prepare_features(pd.DataFrame({"bili": ["1.5", " 2 ", None]}), {"bili": "numeric"})["bili"]
    np.testing.assert_array_equal(values, [1.5, 2.0, np.nan])
    table = pd.DataFrame({"bili": ["1.5", "high", "nan"]}, index=["a", "b", "c"])
    with pytest.raises(InputDataError, match=r"Column 'bili' must hold numbers.*rows 'b', 'c'\.$") as error:
        prepare_features(table, {"bili": "numeric"})
    assert "high" not in str(error.value)


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


# -- one reading of values: the estimator and the cohort schema accept, refuse and read alike ----

REFUSED = "refused"
DATE = datetime.date(2020, 1, 1)
# kind, value, what both paths read it as (a number, 1.0 / 0.0 for a boolean, a category's text, None for
# missing) or REFUSED. The rules of the clinical_mtl.model.features docstring.
SAME_READING = [
    ("numeric", 1.5, 1.5), ("numeric", 2, 2.0), ("numeric", "1.5", 1.5), ("numeric", " 2 ", 2.0),
    ("numeric", "1e3", 1000.0), ("numeric", True, 1.0), ("numeric", Decimal("1.5"), 1.5), ("numeric", None, None),
    ("numeric", np.nan, None), ("numeric", "high", REFUSED), ("numeric", "", REFUSED), ("numeric", "nan", REFUSED),
    ("numeric", np.inf, REFUSED), ("numeric", "-inf", REFUSED), ("numeric", DATE, REFUSED),
    ("numeric", 1 + 1j, REFUSED),
    ("boolean", True, 1.0), ("boolean", False, 0.0), ("boolean", 1, 1.0), ("boolean", 0.0, 0.0),
    ("boolean", "true", 1.0), ("boolean", " FALSE ", 0.0), ("boolean", "1", 1.0), ("boolean", "0.0", 0.0),
    ("boolean", None, None), ("boolean", 2, REFUSED), ("boolean", 0.5, REFUSED), ("boolean", "yes", REFUSED),
    ("boolean", "", REFUSED), ("boolean", np.inf, REFUSED), ("boolean", DATE, REFUSED),
    ("categorical", "a", "a"), ("categorical", " a", " a"), ("categorical", "1", "1"), ("categorical", 1, "1"),
    ("categorical", 1.0, "1"), ("categorical", 1.5, "1.5"), ("categorical", True, "True"),
    ("categorical", None, None), ("categorical", DATE, REFUSED), ("categorical", {"a": 1}, REFUSED),
    ("categorical", 1 + 1j, REFUSED),
]


def _plain(value):
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return None
    return value if isinstance(value, str) else float(value)


def _through_estimator(kind, column):
    try:
        values = prepare_features(pd.DataFrame({"x": column}), {"x": kind})["x"]
    except InputDataError:
        return REFUSED
    return _plain(values[0])


def _through_schema(kind, column):
    schema = CohortSchema("cohort", "id", (FeatureSpec("x", kind),))  # any category, any finite number
    result = schema.validate(pd.DataFrame({"id": ["p1"], "x": column}))
    return REFUSED if len(result.rejected) else _plain(result.valid["x"].iloc[0])


@pytest.mark.parametrize("container", ["object", "inferred dtype"])
@pytest.mark.parametrize(("kind", "value", "expected"), SAME_READING,
                         ids=[f"{kind}-{value!r}" for kind, value, _ in SAME_READING])
def test_the_estimator_and_the_schema_read_every_value_alike(kind, value, expected, container):
    column = pd.Series([value], dtype=object if container == "object" else None)
    assert (_through_estimator(kind, column), _through_schema(kind, column)) == (expected, expected)


@pytest.mark.parametrize(("kind", "column", "expected"), [
    ("numeric", pd.array([3, None], dtype="Int64"), [3.0, None]),
    ("boolean", pd.array([True, None], dtype="boolean"), [1.0, None]),
    ("boolean", pd.array([1.0, 0.0], dtype="Float64"), [1.0, 0.0]),
    ("categorical", pd.Categorical([1.0, 2.0]), ["1", "2"]),
    ("categorical", pd.array(["f", None], dtype="string"), ["f", None]),
])
def test_typed_columns_are_read_alike_too(kind, column, expected):
    estimator = prepare_features(pd.DataFrame({"x": column}), {"x": kind})["x"]
    schema = CohortSchema("cohort", "id", (FeatureSpec("x", kind),)).validate(
        pd.DataFrame({"id": ["a", "b"], "x": column})).valid["x"]
    assert [_plain(v) for v in estimator] == [_plain(v) for v in schema] == expected

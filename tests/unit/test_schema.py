"""Cohort schemas: loading, checking a schema file, splitting a table, driving training."""

import warnings
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from clinical_mtl import MultiTaskMLP
from clinical_mtl.data.persistence import load_model, load_schema_of, save_model
from clinical_mtl.data.schema import (
    ROW_NUMBER,
    SCHEMAS,
    CohortSchema,
    FeatureSpec,
    OutcomeSpec,
    load_schema,
    schema_from_model,
)
from clinical_mtl.datasets import make_synthetic_cohort, synthetic_schema
from clinical_mtl.exceptions import SchemaError

FAST = {"hidden_layer_sizes": (8,), "max_epochs": 3, "ensemble_size": 1, "random_state": 0}


@pytest.fixture(scope="module")
def pbc_schema():
    return load_schema(SCHEMAS / "pbc.yaml")


def feature(schema, name):
    return next(f for f in schema.features if f.name == name)


# -- the bundled schemas -------------------------------------------------------------------


def test_pbc_schema_describes_the_pbc_table(pbc_schema, pbc):
    X, Y = pbc
    assert pbc_schema.cohort == "pbc"
    assert pbc_schema.version == 1
    assert pbc_schema.id_column == "id" == X.index.name
    assert pbc_schema.feature_names == list(X.columns)
    assert feature(pbc_schema, "bili") == FeatureSpec(
        "bili", "numeric", unit="mg/dL", min=0.1, max=50, nullable=False, description="Serum bilirubin.",
        label="Bilirubin", reference_range=(0.1, 1.2),
    )
    assert feature(pbc_schema, "sex").categories == ("f", "m")
    assert not feature(pbc_schema, "sex").nullable
    trt = feature(pbc_schema, "trt")
    assert (trt.type, trt.categories, trt.nullable) == ("categorical", ("D-penicillamine", "placebo"), True)
    assert (feature(pbc_schema, "ascites").type, feature(pbc_schema, "ascites").nullable) == ("boolean", True)
    assert feature(pbc_schema, "age").unit == "years"
    assert pbc_schema.feature_kinds == {
        "trt": "categorical", "age": "numeric", "sex": "categorical", "ascites": "boolean",
        "hepato": "boolean", "spiders": "boolean", "edema": "numeric", "bili": "numeric",
        "chol": "numeric", "albumin": "numeric", "copper": "numeric", "alk_phos": "numeric",
        "ast": "numeric", "trig": "numeric", "platelet": "numeric", "protime": "numeric",
    }
    assert pbc_schema.outcomes == (
        OutcomeSpec("cirrhosis", "binary", (0, 1), description=pbc_schema.outcomes[0].description,
                    label="Cirrhosis (histologic stage 4)"),
        OutcomeSpec("death", "survival", None, unit="days", description=pbc_schema.outcomes[1].description,
                    label="Death"),
    )
    assert pbc_schema.tasks == {"cirrhosis": "binary", "death": "survival"}
    assert [c for outcome in pbc_schema.outcomes for c in outcome.label_columns] == list(Y.columns)
    assert feature(pbc_schema, "bili").describe_rule() == "0.1 <= bili <= 50"
    assert feature(pbc_schema, "sex").describe_rule() == "one of f, m"


def test_synthetic_schema_describes_the_synthetic_cohort():
    schema = load_schema(SCHEMAS / "synthetic.yaml")
    X, Y = make_synthetic_cohort(5, random_state=0)
    assert schema.cohort == "synthetic"
    assert schema.id_column == "patient_id" == X.index.name
    assert schema.feature_names == list(X.columns)
    assert all(f.nullable for f in schema.features)
    assert feature(schema, "smoking").categories == ("never", "former", "current")
    assert (feature(schema, "crp").min, feature(schema, "crp").max, feature(schema, "crp").unit) == (0.1, 300, "mg/L")
    assert [(o.name, o.kind, o.classes) for o in schema.outcomes] == [
        ("diagnosis", "binary", (0, 1)), ("subtype", "multiclass", ("A", "B", "C")), ("prognosis", "regression", None),
    ]
    assert schema.tasks == {"diagnosis": "binary", "subtype": "multiclass", "prognosis": "regression"}
    assert list(schema.tasks) == list(Y.columns)
    assert synthetic_schema() == schema
    wide = synthetic_schema(4)
    assert wide.feature_names == list(make_synthetic_cohort(5, random_state=0, n_noise_features=4)[0].columns)
    assert feature(wide, "noise_3") == replace(feature(schema, "noise_0"), name="noise_3")


def test_the_bundled_cohorts_pass_their_schemas(pbc_schema, pbc):
    X, _ = pbc
    result = pbc_schema.validate(X.reset_index())
    assert result.rejected.empty
    assert len(result.valid) == len(X)
    synthetic = make_synthetic_cohort(2000, random_state=3)[0].reset_index()
    result = synthetic_schema().validate(synthetic)
    assert result.rejected.empty and len(result.valid) == 2000


def test_schema_round_trips_through_plain_data(pbc_schema):
    assert CohortSchema.from_dict(pbc_schema.to_dict()) == pbc_schema
    assert pbc_schema.to_dict()["features"]["sex"]["categories"] == ["f", "m"]
    bilirubin = pbc_schema.to_dict()["features"]["bili"]
    assert bilirubin["reference_range"] == [0.1, 1.2] and bilirubin["label"] == "Bilirubin"
    survival = next(outcome for outcome in pbc_schema.outcomes if outcome.name == "death")
    assert (survival.display_name, survival.unit, survival.label_columns) == ("Death", "days",
                                                                             ("death_time", "death_event"))


# -- a schema file with mistakes -------------------------------------------------------------

GOOD_FEATURES = "features: {a: {type: numeric}}\n"


@pytest.mark.parametrize("text, message", [
    ("cohort: x\n", r"missing key 'id_column'; missing key 'features'"),
    ("cohort: x\nid_column: id\nfeatures: {a: {type: text}}\n",
     r"feature 'a': type must be one of \['numeric', 'boolean', 'categorical'\], got 'text'"),
    ("cohort: x\nid_column: id\nfeatures: {a: {type: categorical}}\n",
     r"feature 'a': a categorical feature needs its categories"),
    ("cohort: x\nid_column: id\nfeatures: {a: {type: categorical, categories: f}}\n",
     r"feature 'a': categories must be a list, got 'f'"),
    ("cohort: x\nid_column: id\nfeatures: {a: {type: numeric, categories: [1, 2]}}\n",
     r"feature 'a': only a categorical feature has categories"),
    ("cohort: x\nid_column: id\nfeatures: {a: {type: numeric, maximum: 3}}\n",
     r"feature 'a': unknown keys \['maximum'\]"),
    ("cohort: x\nid_column: id\nfeatures: {a: {type: numeric, min: low}}\n",
     r"feature 'a': min must be a number, got 'low'"),
    ("cohort: x\nid_column: id\nfeatures: {a: {type: numeric, min: 5, max: 1}}\n",
     r"feature 'a': min 5 is above max 1"),
    ("cohort: x\nid_column: id\nfeatures: {a: {type: boolean, max: 1}}\n",
     r"feature 'a': only a numeric feature has min and max"),
    ("cohort: x\nid_column: id\nfeatures: {a: {type: numeric, nullable: maybe}}\n",
     r"feature 'a': nullable must be true or false, got 'maybe'"),
    ("cohort: x\nid_column: id\nfeatures: {a: {type: numeric, reference_range: [5, 1]}}\n",
     r"feature 'a': reference_range must be \[low, high\] with low <= high, got \[5, 1\]"),
    ("cohort: x\nid_column: id\nfeatures: {a: {type: numeric, reference_range: 3}}\n",
     r"feature 'a': reference_range must be \[low, high\]"),
    ("cohort: x\nid_column: id\nfeatures: {a: {type: boolean, reference_range: [0, 1]}}\n",
     r"feature 'a': only a numeric feature has a reference_range"),
    ("cohort: x\nid_column: id\n" + GOOD_FEATURES + "outcomes: {y: {kind: binary, display_transform: exp}}\n",
     r"outcome 'y': display_transform must be one of \['exp'\] and only for a regression outcome"),
    ("cohort: x\nid_column: id\n" + GOOD_FEATURES + "outcomes: {y: {kind: regression, display_transform: log}}\n",
     r"outcome 'y': display_transform must be one of \['exp'\]"),
    ("cohort: x\nid_column: id\nfeatures: [a, b]\n", r"'features' must map each name to its entry, got list"),
    ("cohort: x\nid_column: id\nfeatures: {a: numeric}\n", r"feature 'a': expected a mapping of keys"),
    ("cohort: x\nid_column: id\nfeatures: {}\n", r"no feature"),
    ("cohort: x\nid_column: a\n" + GOOD_FEATURES, r"feature 'a': it is the id column"),
    ("cohort: x\nid_column: id\n" + GOOD_FEATURES + "outcomes: {y: {kind: ordinal}}\n",
     r"outcome 'y': kind must be one of \['binary', 'multiclass', 'regression', 'survival'\], got 'ordinal'"),
    ("cohort: x\nid_column: id\n" + GOOD_FEATURES + "outcomes: {y: binary}\n", r"outcome 'y': expected a mapping"),
    ("cohort: x\nid_column: id\n" + GOOD_FEATURES + "outcomes: {y: {kind: binary, classes: 2}}\n",
     r"outcome 'y': classes must be a list, got 2"),
    ("cohort: x\nid_column: id\n" + GOOD_FEATURES + "outcomes: {y: {kind: binary, levels: [0, 1]}}\n",
     r"outcome 'y': unknown keys \['levels'\]"),
    ("cohort: x\nversion: one\nid_column: id\n" + GOOD_FEATURES, r"version must be a whole number, got 'one'"),
    ("- a\n- b\n", r"expected a mapping at the top of the file"),
    ("cohort: x\nid_column: [id\n", r"Cannot read the schema file"),
])
def test_a_bad_schema_file_gets_a_schema_error_naming_the_problem(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SchemaError, match=message) as error:
        load_schema(path)
    assert str(path) in str(error.value)


def test_every_problem_of_a_schema_file_is_named_at_once(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("cohort: x\nid_column: id\nfeatures: {a: {type: numeric, min: 3, max: 1}, b: {type: text}}\n"
                    "outcomes: {y: {kind: ordinal}}\n")
    with pytest.raises(SchemaError) as error:
        load_schema(path)
    assert all(part in str(error.value) for part in ("feature 'a'", "feature 'b'", "outcome 'y'"))


def test_a_missing_schema_file(tmp_path):
    with pytest.raises(SchemaError, match="Cannot read the schema file .*nowhere.yaml"):
        load_schema(tmp_path / "nowhere.yaml")


# -- validate ------------------------------------------------------------------------------


@pytest.fixture
def pbc_rows(pbc):
    """Twelve good PBC patients as a table with an ``id`` column (as read from a file)."""
    X, _ = pbc
    table = X.head(12).reset_index()
    table["id"] = table["id"].astype("Int64")
    return table


def test_validate_splits_good_rows_from_each_kind_of_bad_row(pbc_schema, pbc_rows):
    table = pbc_rows.astype({"bili": object, "sex": object})
    table.index = pd.Index([f"r{i}" for i in range(12)])  # the caller's index is kept
    table.loc["r1", "bili"] = "abc"  # text in a numeric column
    table.loc["r2", "age"] = 150.0  # out of range
    table.loc["r3", "sex"] = "x"  # unknown category
    table.loc["r4", "albumin"] = np.nan  # a required value missing
    table.loc["r5", "id"] = table.loc["r0", "id"]  # a repeated id: the first row is kept
    table.loc["r6", "id"] = pd.NA  # no id
    table.loc["r7", "age"] = 10.0  # two problems in one row
    table.loc["r7", "sex"] = "F"
    table.loc["r8", "chol"] = np.nan  # missing, but allowed
    table.loc["r9", "trt"] = np.nan  # missing category, allowed
    before = table.copy()

    result = pbc_schema.validate(table, first_row_number=100)

    pd.testing.assert_frame_equal(table, before)  # the input is not modified
    assert result.valid.index.tolist() == ["r0", "r8", "r9", "r10", "r11"]
    rejected = result.rejected
    assert list(rejected.columns) == [ROW_NUMBER, "id", "n_problems", "reasons"]
    assert rejected[ROW_NUMBER].tolist() == [101, 102, 103, 104, 105, 106, 107]
    assert rejected["n_problems"].tolist() == [1, 1, 1, 1, 1, 1, 2]
    first_id = int(pbc_rows.loc[0, "id"])
    assert rejected["reasons"].tolist() == [
        "column 'bili' value 'abc': expected a number",
        "column 'age' value 150.0: expected 18 <= age <= 100",
        "column 'sex' value 'x': expected one of f, m",
        "column 'albumin' value missing: a value is required",
        f"column 'id' value {first_id}: duplicate id (an earlier row has it)",
        "column 'id' value missing: a value is required",
        "column 'age' value 10.0: expected 18 <= age <= 100; column 'sex' value 'F': expected one of f, m",
    ]
    ids = rejected["id"].tolist()
    assert ids[:4] == pbc_rows.loc[1:4, "id"].tolist() and ids[4] == first_id and pd.isna(ids[5])

    valid = result.valid
    assert list(valid.columns) == ["id", *pbc_schema.feature_names]
    kept = pbc_rows.iloc[[0, 8, 9, 10, 11]]
    for name in ["age", "bili", "albumin", "protime"]:
        assert valid[name].dtype == np.float64
        np.testing.assert_array_equal(valid[name].to_numpy(), kept[name].to_numpy(dtype=float))
    assert np.isnan(valid.loc["r8", "chol"])
    assert valid["ascites"].dtype == "boolean"
    assert valid["ascites"].tolist() == kept["ascites"].tolist()
    assert isinstance(valid["sex"].dtype, pd.CategoricalDtype)
    assert valid["sex"].astype(object).tolist() == kept["sex"].astype(object).tolist()
    assert pd.isna(valid.loc["r9", "trt"])
    assert valid["id"].tolist() == kept["id"].tolist()


def test_validate_reads_text_columns_by_type(pbc_schema, pbc_rows):
    """A CSV arrives as text: numbers, booleans and categories are parsed from it."""
    table = pbc_rows.astype(object).where(pbc_rows.notna(), None)
    for name in table.columns:
        table[name] = [None if v is None else str(v) for v in table[name]]
    table["ascites"] = ["true", "FALSE", "1", "0", "1.0", None, "maybe", "0", "0", "0", "0", "0"]
    table.loc[8, "edema"] = "half"
    result = pbc_schema.validate(table)
    assert result.rejected[ROW_NUMBER].tolist() == [6, 8]
    assert result.rejected["reasons"].tolist() == [
        "column 'ascites' value 'maybe': expected true/false or 1/0",
        "column 'edema' value 'half': expected a number",
    ]
    valid = result.valid
    assert valid["ascites"].tolist()[:6] == [True, False, True, False, True, pd.NA]
    np.testing.assert_array_equal(valid["bili"].to_numpy(), pbc_rows["bili"].drop([6, 8]).to_numpy())
    assert valid["sex"].astype(object).tolist() == pbc_rows["sex"].drop([6, 8]).astype(object).tolist()


def test_a_boolean_column_of_numbers_other_than_0_and_1_is_rejected(pbc_schema, pbc_rows):
    table = pbc_rows.astype({"hepato": "Float64"})
    table.loc[2, "hepato"] = 2.0
    result = pbc_schema.validate(table)
    assert result.rejected["reasons"].tolist() == ["column 'hepato' value 2.0: expected true/false or 1/0"]


def test_categories_given_as_numbers_read_as_their_text():
    schema = CohortSchema.from_dict({
        "cohort": "c", "id_column": "id",
        "features": {"stage": {"type": "categorical", "categories": [1, 2, 3]}},
    })
    table = pd.DataFrame({"id": [1, 2, 3, 4], "stage": pd.array([1, 3, None, 7], dtype="Int64")})
    result = schema.validate(table)
    assert result.valid["stage"].astype(object).tolist()[:2] == ["1", "3"]
    assert result.rejected["reasons"].tolist() == ["column 'stage' value 7: expected one of 1, 2, 3"]


def test_rows_repeating_an_earlier_chunk_id_are_rejected_once(pbc_schema, pbc_rows):
    table = pbc_rows.copy()
    table.loc[3, "id"] = table.loc[1, "id"]  # a repeat within the table too
    table.loc[5, "bili"] = 99.0
    repeated = np.zeros(12, dtype=bool)
    repeated[[3, 5, 7]] = True  # their ids were seen in an earlier chunk
    result = pbc_schema.validate(table, repeated_ids=repeated)
    assert result.rejected[ROW_NUMBER].tolist() == [3, 5, 7]
    assert result.rejected["n_problems"].tolist() == [1, 2, 1]
    assert result.rejected["reasons"].tolist() == [
        f"column 'id' value {table.loc[1, 'id']}: duplicate id (an earlier row has it)",
        f"column 'id' value {table.loc[5, 'id']}: duplicate id (an earlier row has it); "
        "column 'bili' value 99.0: expected 0.1 <= bili <= 50",
        f"column 'id' value {table.loc[7, 'id']}: duplicate id (an earlier row has it)",
    ]


def test_all_rows_valid_keeps_the_table_and_its_index(pbc_schema, pbc_rows):
    table = pbc_rows.set_axis(pd.RangeIndex(50, 62))
    result = pbc_schema.validate(table)
    assert result.rejected.empty
    assert list(result.rejected.columns) == [ROW_NUMBER, "id", "n_problems", "reasons"]
    assert result.valid.index.equals(table.index)
    pd.testing.assert_frame_equal(result.valid[["age", "bili"]], table[["age", "bili"]])


def test_infinite_values_are_rejected_with_or_without_a_range(pbc_schema, pbc_rows, fitted_model, cohort):
    table = pbc_rows.copy()
    table.loc[4, "bili"] = np.inf
    assert pbc_schema.validate(table).rejected["reasons"].tolist() == [
        "column 'bili' value inf: expected 0.1 <= bili <= 50"]
    X, _ = cohort
    table = X.head(6).reset_index()
    table.loc[2, "noise_0"] = -np.inf
    result = schema_from_model(fitted_model, "patient_id").validate(table)
    assert result.rejected["reasons"].tolist() == ["column 'noise_0' value -inf: expected a finite number"]
    assert len(result.valid) == 5


def test_other_columns_are_ignored_quietly_and_left_alone(pbc_schema, pbc):
    X, Y = pbc
    frame = X.reset_index().join(Y.reset_index(drop=True)).astype({"bili": object})
    before = frame.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no SettingWithCopyWarning from typing a selected column
        result = pbc_schema.validate(frame)
    pd.testing.assert_frame_equal(frame, before)
    assert list(result.valid.columns) == ["id", *pbc_schema.feature_names]
    assert result.valid["bili"].dtype == np.float64 and len(result.valid) == len(X)


def test_a_missing_required_column_is_a_schema_error_naming_it(pbc_schema, pbc_rows):
    with pytest.raises(SchemaError, match=r"visits.csv lacks the column\(s\) \['bili', 'albumin'\] required by "
                                          r"the 'pbc' schema"):
        pbc_schema.validate(pbc_rows.drop(columns=["bili", "albumin"]), source="visits.csv")
    with pytest.raises(SchemaError, match=r"lacks the column\(s\) \['id'\]"):
        pbc_schema.validate(pbc_rows.set_index("id"))


# -- schemas and models ----------------------------------------------------------------------


def test_schema_from_model_takes_the_model_columns_and_kinds(fitted_model, cohort):
    X, _ = cohort
    schema = schema_from_model(fitted_model, "patient_id")
    assert schema.id_column == "patient_id"
    assert schema.feature_names == list(X.columns)
    assert schema.feature_kinds == fitted_model.preprocessor_.feature_kinds_
    assert schema.tasks == fitted_model.tasks_
    assert all(f.nullable and f.min is None and f.max is None and f.categories is None for f in schema.features)
    table = X.head(5).reset_index()
    table["smoking"] = table["smoking"].cat.add_categories(["sometimes"])
    table.loc[1, "smoking"] = "sometimes"  # any category is allowed
    table.loc[2, "age"] = 500.0  # no range
    table.loc[3, "patient_id"] = 0  # but ids are still unique
    result = schema.validate(table)
    assert result.valid.index.tolist() == [0, 1, 2, 4]
    assert result.rejected["reasons"].tolist() == [
        "column 'patient_id' value 0: duplicate id (an earlier row has it)"]


def test_the_schema_drives_training_and_is_stored_with_the_model(tmp_path, pbc_schema, pbc):
    X, Y = pbc
    valid = pbc_schema.validate(X.reset_index()).valid.set_index(pbc_schema.id_column)
    model = MultiTaskMLP(tasks=pbc_schema.tasks, **FAST).fit(valid[pbc_schema.feature_names], Y)
    assert model.tasks_ == pbc_schema.tasks
    assert model.classes_["cirrhosis"].tolist() == list(pbc_schema.outcomes[0].classes)
    assert model.preprocessor_.feature_kinds_ == pbc_schema.feature_kinds

    folder = save_model(model, tmp_path / "with", schema=pbc_schema)
    stored = load_schema_of(folder)
    assert stored == pbc_schema
    assert stored.to_dict() == pbc_schema.to_dict()
    pd.testing.assert_frame_equal(load_model(folder).predict(X), model.predict(X))
    assert load_schema_of(save_model(model, tmp_path / "without")) is None


def test_the_synthetic_schema_drives_training(cohort):
    X, Y = cohort
    schema = synthetic_schema()
    model = MultiTaskMLP(tasks=schema.tasks, **FAST).fit(X, Y)
    assert model.tasks_ == schema.tasks
    assert model.classes_["subtype"].tolist() == list(schema.outcomes[1].classes)
    assert model.classes_["diagnosis"].tolist() == list(schema.outcomes[0].classes)


def test_positive_features_reject_zero_and_negative_values(pbc_schema):
    from clinical_mtl.data.schema import CohortSchema, schema_for_model

    data = pbc_schema.to_dict()
    data["features"]["bili"].pop("min")
    data["features"]["bili"]["positive"] = True
    schema = CohortSchema.from_dict(data)
    assert schema.to_dict()["features"]["bili"]["positive"] is True
    assert "positive" not in schema.to_dict()["features"]["age"]
    assert CohortSchema.from_dict(schema.to_dict()) == schema
    assert [f.describe_rule() for f in schema.features if f.name == "bili"] == ["0 < bili <= 50"]

    from clinical_mtl.model.preprocessing import NumericEncoding

    class LogModel:  # what schema_for_model reads of a fitted model: a plain log (a model stored
        class preprocessor_:  # before the asinh transform) requires positive values; asinh does not
            encodings_ = [NumericEncoding("chol", True, 5.5, 5.6, 0.4),
                          NumericEncoding("bili", True, 0.5, 0.6, 0.9, log_scale=0.4)]

    for_model = schema_for_model(pbc_schema, LogModel())
    assert [f.name for f in for_model.features if f.positive] == ["chol"]
    assert replace(feature(for_model, "chol"), positive=False) == feature(pbc_schema, "chol")
    assert [replace(f, positive=False) for f in for_model.features] == list(pbc_schema.features)

    data["features"]["sex"]["positive"] = True
    data["features"]["age"]["positive"] = "yes"
    with pytest.raises(SchemaError) as error:
        CohortSchema.from_dict(data, source="bad.yaml")
    assert "feature 'sex': only a numeric feature can be positive" in str(error.value)
    assert "feature 'age': positive must be true or false, got 'yes'" in str(error.value)

"""Training from a file works as it does from memory (issue 12, item 7)."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from clinical_mtl import MultiTaskMLP
from clinical_mtl.data.schema import OutcomeSpec, load_schema
from clinical_mtl.datasets import load_pbc, make_synthetic_cohort
from clinical_mtl.exceptions import InputDataError, SchemaError
from clinical_mtl.pipelines import _check_classes, load_pipeline, run_train

PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"
SMALL = {"random_state": 0, "hidden_layer_sizes": [8], "max_epochs": 20, "ensemble_size": 2}
FAST = {"hidden_layer_sizes": (8,), "max_epochs": 15, "ensemble_size": 1, "random_state": 0}


def _train(folder: Path, data: dict):
    """pipelines/pbc_train.yaml with small model settings, no tracking and no outputs, run from ``folder``."""
    config = yaml.safe_load((PIPELINES / "pbc_train.yaml").read_text())
    config.update(schema=str((PIPELINES / config["schema"]).resolve()), data=data, model=SMALL,
                  tracking={"enabled": False}, outputs={}, model_card={"n_bootstrap": 20})
    path = folder / f"train_{len(list(folder.glob('train_*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(config))
    return run_train(load_pipeline(path))


@pytest.fixture(scope="module")
def from_memory(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("memory"), {"dataset": "pbc"})


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_pbc_from_a_file_trains_exactly_like_from_memory(tmp_path, from_memory, suffix):
    X, Y = load_pbc()
    assert Y["cirrhosis"].isna().any()  # what a CSV file gives back as floats 0.0 / 1.0 / NaN
    table = X.join(Y)  # the id is the index: a column of the CSV file, the stored index of the Parquet file
    getattr(table, f"to_{suffix}")(tmp_path / f"pbc.{suffix}")

    from_file = _train(tmp_path, {"path": f"pbc.{suffix}"})

    memory, model = from_memory.model, from_file.model
    assert model.tasks_ == memory.tasks_ == {"cirrhosis": "binary", "death": "survival"}
    assert model.task_specs_ == memory.task_specs_
    assert model.classes_["cirrhosis"].tolist() == [0, 1]  # the schema's classes, integers
    assert model.classes_["cirrhosis"].dtype == memory.classes_["cirrhosis"].dtype
    assert model.label_counts_ == memory.label_counts_
    pd.testing.assert_frame_equal(from_file.metrics, from_memory.metrics)  # the same test split and predictions
    pd.testing.assert_frame_equal(model.predict(X), memory.predict(X))
    for outcome, proba in memory.predict_proba(X).items():
        np.testing.assert_array_equal(model.predict_proba(X)[outcome], proba)


def test_classes_compare_by_value():
    schema = load_schema(PIPELINES / "../data_schemas/pbc.yaml")
    labels = pd.DataFrame({
        "cirrhosis": pd.Series([1, 1.0, "1", 0, "0.0", None, np.nan], dtype=object),
        "death_time": [1.0, 2.0, np.nan, 3.0, 4.0, 5.0, 6.0],
        "death_event": [1.0, 0.0, np.nan, 1.0, 1.0, 0.0, 0.0],
    })
    checked = _check_classes(labels, schema)
    assert checked["cirrhosis"].tolist() == [1, 1, 1, 0, 0, pd.NA, pd.NA]
    assert checked["cirrhosis"].dtype == "Int64"
    pd.testing.assert_frame_equal(checked[["death_time", "death_event"]], labels[["death_time", "death_event"]])


def test_labels_outside_the_classes_name_rows_not_values():
    schema = load_schema(PIPELINES / "../data_schemas/pbc.yaml")
    labels = pd.DataFrame({"cirrhosis": pd.Series([0, 1, "yes", 2.0, 1], dtype=object),
                           "death_time": np.ones(5), "death_event": np.ones(5)}).set_axis(pd.RangeIndex(10, 15))
    with pytest.raises(SchemaError, match=r"Outcome 'cirrhosis' has labels outside the schema's classes "
                                          r"\[0, 1\] in 2 rows \(row_number 12, 13\)") as info:
        _check_classes(labels, schema)
    assert "yes" not in str(info.value) and "2.0" not in str(info.value)


def test_mixed_labels_without_schema_classes_name_rows_before_the_split():
    schema = load_schema(PIPELINES / "../data_schemas/pbc.yaml")
    schema = replace(schema, outcomes=(OutcomeSpec("cirrhosis", "binary"),))  # no classes
    labels = pd.DataFrame({"cirrhosis": pd.Series([0, 1, "yes", None, 1], dtype=object)}).set_axis(
        pd.RangeIndex(10, 15))
    with pytest.raises(InputDataError, match=r"Outcome 'cirrhosis' mixes label types: the row at position 12 "
                                             r"holds text labels") as info:
        _check_classes(labels, schema)
    assert "yes" not in str(info.value)


def test_string_dtype_labels_are_classes():
    X, Y = make_synthetic_cohort(150, random_state=0)
    text = Y.astype({"subtype": "string"})
    model = MultiTaskMLP(**FAST).fit(X, text)
    reference = MultiTaskMLP(**FAST).fit(X, Y)  # the same labels as Python strings (object dtype)
    assert model.tasks_["subtype"] == "multiclass"
    assert model.classes_["subtype"].tolist() == sorted(Y["subtype"].dropna().unique())
    pd.testing.assert_frame_equal(model.predict(X), reference.predict(X))
    assert model.score(X, text) == reference.score(X, Y)
    pd.testing.assert_frame_equal(model.evaluate(X, text), reference.evaluate(X, Y))


@pytest.mark.parametrize("tasks", [None, {"diagnosis": "binary"}])
def test_mixed_type_labels_name_the_outcome_and_positions_not_values(tasks):
    X, _ = make_synthetic_cohort(12, random_state=0)
    labels = pd.DataFrame({"diagnosis": pd.Series([0, 1] * 3 + [np.nan, "yes", 1, 0, "yes", 1], dtype=object)})
    labels = labels.set_axis(X.index)
    with pytest.raises(InputDataError, match=r"Outcome 'diagnosis' mixes label types: the rows at positions 7, 10 "
                                             r"hold text labels, the others number labels") as info:
        MultiTaskMLP(tasks=tasks, **FAST).fit(X, labels)
    assert "yes" not in str(info.value)

"""The one output spec: names, types and values of the flat columns, as every engine reads them."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from mlflow.types import DataType

from clinical_mtl import MultiTaskMLP
from clinical_mtl.datasets import make_synthetic_cohort
from clinical_mtl.model.outputs import (
    LOWER,
    PRED,
    PROBA,
    TOP_CONTRIBUTION,
    TOP_FEATURE,
    TYPE_NAMES,
    UPPER,
    column_name,
    flat_predictions,
    output_columns,
    top_contributions,
)


@pytest.fixture(scope="module")
def fitted():
    X, Y = make_synthetic_cohort(240, random_state=3)
    Y["flag"] = (X["age"] > 60).astype(float)  # a boolean-like binary outcome with numeric labels
    model = MultiTaskMLP(hidden_layer_sizes=(8,), max_epochs=4, ensemble_size=1, random_state=0).fit(X, Y)
    return model, X


def test_every_engine_names_every_type():
    for dtype, names in TYPE_NAMES.items():
        assert pa.type_for_alias(names["arrow"]) is not None
        assert DataType[names["mlflow"]].name == names["mlflow"]
        assert np.dtype(names["numpy"]).kind == {"double": "f", "long": "i", "boolean": "b", "string": "O"}[dtype]
    assert {names["spark"] for names in TYPE_NAMES.values()} == {"double", "bigint", "boolean", "string"}


def test_columns_per_outcome_kind_in_order(fitted):
    model, X = fitted
    columns = output_columns(model, top_k=2)
    expected = [
        ("diagnosis_pred", "long", PRED), ("diagnosis_proba_0", "double", PROBA), ("diagnosis_proba_1", "double", PROBA),
        ("subtype_pred", "string", PRED), *[(f"subtype_proba_{c}", "double", PROBA) for c in "ABC"],
        ("prognosis_pred", "double", PRED), ("prognosis_lower", "double", LOWER), ("prognosis_upper", "double", UPPER),
        ("flag_pred", "double", PRED), ("flag_proba_0.0", "double", PROBA), ("flag_proba_1.0", "double", PROBA),
    ]
    assert [(c.name, c.dtype, c.part) for c in columns[: len(expected)]] == expected
    contributions = columns[len(expected):]
    assert [c.name for c in contributions[:4]] == ["diagnosis_top1_feature", "diagnosis_top1_contribution",
                                                   "diagnosis_top2_feature", "diagnosis_top2_contribution"]
    assert [c.part for c in contributions[:2]] == [TOP_FEATURE, TOP_CONTRIBUTION]
    assert len(contributions) == 4 * 2 * 2
    assert len(output_columns(model, top_k=99)) == len(expected) + 4 * X.shape[1] * 2  # capped at the features


def test_flat_values_are_the_estimators_own_predictions(fitted):
    model, X = fitted
    flat = flat_predictions(model, X.head(30), top_k=2)
    assert list(flat.columns) == [c.name for c in output_columns(model, top_k=2)]
    predicted, proba, interval = model.predict(X.head(30)), model.predict_proba(X.head(30)), model.predict_interval(
        X.head(30))
    for name, classes in model.classes_.items():
        assert flat[column_name(name, PRED)].tolist() == predicted[name].tolist()
        for k, label in enumerate(classes):
            np.testing.assert_array_equal(flat[column_name(name, PROBA, label=label)], proba[name][:, k])
    np.testing.assert_array_equal(flat["prognosis_pred"], predicted["prognosis"])
    pd.testing.assert_frame_equal(flat[["prognosis_lower", "prognosis_upper"]], interval)
    pd.testing.assert_frame_equal(flat[[c.name for c in output_columns(model, 2) if c.part == TOP_FEATURE]],
                                  top_contributions(model, X.head(30), 2).filter(like="_feature"))


def test_flat_predictions_explain_only_when_asked(fitted, monkeypatch):
    from clinical_mtl.model import outputs

    model, X = fitted
    expected = [c.name for c in output_columns(model, top_k=1)]
    assert list(flat_predictions(model, X.head(5), top_k=1).columns) == expected
    assert [c for c in expected if c.startswith("diagnosis_top")] == ["diagnosis_top1_feature",
                                                                      "diagnosis_top1_contribution"]

    def no_explanations(*args, **kwargs):
        raise AssertionError("explained without top_k")

    monkeypatch.setattr(outputs, "attributions", no_explanations)
    assert list(flat_predictions(model, X.head(5)).columns) == [c.name for c in output_columns(model)]
    assert list(flat_predictions(model, X.head(5), top_k=0).columns) == [c.name for c in output_columns(model)]


def test_a_multiclass_outcomes_top_contributions_are_to_its_predicted_class(fitted):
    model, X = fitted
    rows = X.head(80)
    classes = list(model.classes_["subtype"])
    predicted = np.array([classes.index(label) for label in model.predict(rows)["subtype"]])
    assert len(set(predicted)) > 1  # else any one class's contributions would pass
    explanation = model.explain(rows, ["subtype"])["subtype"]
    values = explanation.values[np.arange(len(rows)), :, predicted]
    first = np.argmax(np.abs(values), axis=1)
    top = top_contributions(model, rows, 1)
    assert top["subtype_top1_feature"].tolist() == np.asarray(explanation.feature_names)[first].tolist()
    np.testing.assert_array_equal(top["subtype_top1_contribution"], values[np.arange(len(rows)), first])


def test_no_interval_columns_without_conformal_residuals():
    X, Y = make_synthetic_cohort(120, random_state=4)
    model = MultiTaskMLP(hidden_layer_sizes=(8,), max_epochs=2, ensemble_size=1, early_stopping=False,
                         random_state=0).fit(X, Y)
    parts = [c.part for c in output_columns(model) if c.outcome == "prognosis"]
    assert parts == [PRED]


def test_normalized_intervals_keep_the_column_names_and_vary_by_patient():
    X, Y = make_synthetic_cohort(400, random_state=5)
    # Half the rows held out: 160 labelled prognosis rows, enough for a normalised scale.
    model = MultiTaskMLP(hidden_layer_sizes=(8,), max_epochs=4, ensemble_size=1, validation_fraction=0.5,
                         random_state=0).fit(X, Y)
    assert list(model.interval_scales_) == ["prognosis"]
    flat, interval = flat_predictions(model, X.head(40)), model.predict_interval(X.head(40))
    assert [c.name for c in output_columns(model) if c.outcome == "prognosis"] == [
        "prognosis_pred", "prognosis_lower", "prognosis_upper"]
    pd.testing.assert_frame_equal(flat[["prognosis_lower", "prognosis_upper"]], interval)
    widths = interval["prognosis_upper"] - interval["prognosis_lower"]
    assert widths.nunique() == 40
    _, inputs = model.transform_inputs(X.head(40))
    np.testing.assert_allclose(model.interval_half_widths(0.9, inputs)["prognosis"],
                               (flat["prognosis_upper"] - flat["prognosis_pred"]).to_numpy(), rtol=1e-12)

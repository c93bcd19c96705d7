"""Explanations of a small fitted model: the sums, the averaging over the background,
the raw values shown beside them, the rankings and the codec, each against a
reference computed here from the model's own predictions.

Small on purpose (a few seconds), so that mutation testing can run it per mutant;
``tests/integration/test_explain.py`` checks the default model against shap.
"""

import numpy as np
import pandas as pd
import pytest
from scipy.special import logit

from clinical_mtl import MultiTaskMLP
from clinical_mtl.datasets import make_synthetic_cohort
from clinical_mtl.model.explanation import Background, global_importance
from clinical_mtl.model.feature_codec import RawFeatureCodec
from clinical_mtl.model.outputs import top_contributions


@pytest.fixture(scope="module")
def cohort():
    X, Y = make_synthetic_cohort(300, random_state=0)
    X.loc[X.index[1], "smoking"] = np.nan  # a missing category
    return X, Y


@pytest.fixture(scope="module", params=["isotonic", None])
def model(request, cohort):
    X, Y = cohort
    return MultiTaskMLP(hidden_layer_sizes=(16, 8), max_epochs=8, ensemble_size=2, calibration=request.param,
                        random_state=0).fit(X, Y)


def _training_categories(model, column):
    """The categories of ``column`` in the order the model learnt them."""
    return next(list(e.categories) for e in model.preprocessor_.encodings_ if e.name == column)


def _outputs(model, X):
    proba, predicted = model.predict_proba(X), model.predict(X)
    return {"diagnosis": proba["diagnosis"][:, 1], "subtype": proba["subtype"],
            "prognosis": predicted["prognosis"].to_numpy()}


def test_base_plus_attributions_is_the_output(model, cohort):
    X, _ = cohort
    if model.calibration is not None:
        assert set(model.calibrators_) == {"diagnosis", "subtype"}
    explanations = model.explain(X)
    for name, expected in _outputs(model, X).items():
        total = explanations[name].base_values + explanations[name].values.sum(axis=1)
        np.testing.assert_allclose(total, expected, atol=1e-5, rtol=0, err_msg=name)
    np.testing.assert_allclose(explanations["subtype"].values.sum(axis=2), 0.0, atol=1e-6)


def test_log_odds_add_up_to_the_log_odds_of_every_class(model, cohort):
    X, _ = cohort
    explanations = model.explain(X.head(40), output="log_odds")
    outputs = _outputs(model, X.head(40))
    for name in ("diagnosis", "subtype"):
        total = explanations[name].base_values + explanations[name].values.sum(axis=1)
        np.testing.assert_allclose(total, logit(outputs[name]), atol=1e-4, rtol=0, err_msg=name)
    prognosis = model.explain(X.head(40), outcomes=["prognosis"], output="log_odds")["prognosis"]
    np.testing.assert_array_equal(prognosis.values, model.explain(X.head(40))["prognosis"].values)


def test_attributions_average_the_background_points_by_their_weights(cohort):
    X, Y = cohort
    model = MultiTaskMLP(hidden_layer_sizes=(16,), max_epochs=5, ensemble_size=2, calibration=None,
                         random_state=1).fit(X, Y)
    background = model.explanation_background_
    patients = X.head(20)
    weighted = {name: 0.0 for name in model.tasks_}
    for point, weight in zip(background.points, background.weights):
        model.explanation_background_ = Background(point[None], np.array([1.0]))
        for name, explanation in model.explain(patients).items():
            weighted[name] = weighted[name] + weight * explanation.values
    model.explanation_background_ = background
    for name, explanation in model.explain(patients).items():
        np.testing.assert_allclose(explanation.values, weighted[name], atol=1e-6, err_msg=name)


def test_a_patient_is_explained_the_same_alone_or_in_a_crowd(model, cohort):
    X, _ = cohort
    alone, crowd = model.explain(X.iloc[[290]]), model.explain(X)  # 300 rows: two blocks of 256
    for name in model.tasks_:
        np.testing.assert_array_equal(alone[name].values[0], crowd[name].values[290])
        np.testing.assert_array_equal(alone[name].base_values[0], crowd[name].base_values[290])


def test_outputs_features_and_shapes_are_named(model, cohort):
    X, _ = cohort
    explanations = model.explain(X.head(5))
    assert explanations["diagnosis"].values.shape == (5, X.shape[1])
    assert explanations["diagnosis"].output_names == "diagnosis=1"
    assert explanations["subtype"].values.shape == (5, X.shape[1], 3)
    assert explanations["subtype"].output_names == ["subtype=A", "subtype=B", "subtype=C"]
    assert explanations["prognosis"].output_names == "prognosis"
    assert explanations["diagnosis"].feature_names == list(X.columns)
    assert list(model.explain(X.head(5), outcomes=["subtype"])) == ["subtype"]


def test_the_data_shown_are_the_patients_own_values(model, cohort):
    X, _ = cohort
    explanation = model.explain(X.head(3))["diagnosis"]
    smoking, age = X.columns.get_loc("smoking"), X.columns.get_loc("age")
    categories = _training_categories(model, "smoking")
    assert sorted(categories) == sorted(X["smoking"].cat.categories)
    for row in range(3):
        value = X["smoking"].iloc[row]
        if pd.isna(value):
            assert explanation.display_data[row, smoking] is None and np.isnan(explanation.data[row, smoking])
        else:
            assert explanation.display_data[row, smoking] == value
            assert explanation.data[row, smoking] == categories.index(value)
        assert explanation.data[row, age] == X["age"].iloc[row] == explanation.display_data[row, age]
    missing = X.isna().to_numpy()[:3]
    assert (np.isnan(explanation.data) == missing).all()
    assert ((explanation.display_data == None) == missing).all()  # noqa: E711 (elementwise)


def test_boolean_values_are_shown_as_true_and_false():
    X, Y = make_synthetic_cohort(200, random_state=2)
    X["statin"] = pd.array([True, False, None, False] * 50, dtype="boolean")
    model = MultiTaskMLP(hidden_layer_sizes=(8,), max_epochs=3, ensemble_size=1, random_state=0).fit(X, Y)
    explanation = model.explain(X.head(4))["diagnosis"]
    column = X.columns.get_loc("statin")
    assert list(explanation.display_data[:, column]) == [True, False, None, False]
    np.testing.assert_array_equal(explanation.data[:, column], [1.0, 0.0, np.nan, 0.0])


def test_top_contributions_rank_by_size_and_follow_the_predicted_class(model, cohort):
    X, _ = cohort
    patients = X.head(30)
    table = top_contributions(model, patients, top_k=3)
    explanations = model.explain(patients)
    assert table.index.equals(patients.index)
    names = np.asarray(X.columns)
    predicted = model.predict(patients)["subtype"].to_numpy()
    for row in range(len(patients)):
        for name in ("diagnosis", "subtype", "prognosis"):
            values = explanations[name].values[row]
            if name == "subtype":
                values = values[:, list(model.classes_["subtype"]).index(predicted[row])]
            order = np.argsort(-np.abs(values), kind="stable")[:3]
            assert [table[f"{name}_top{j}_feature"].iloc[row] for j in (1, 2, 3)] == list(names[order])
            np.testing.assert_array_equal([table[f"{name}_top{j}_contribution"].iloc[row] for j in (1, 2, 3)],
                                          values[order])
    wide = top_contributions(model, patients.head(2), top_k=50)
    assert f"diagnosis_top{X.shape[1]}_feature" in wide and f"diagnosis_top{X.shape[1] + 1}_feature" not in wide


def test_global_importance_is_the_mean_absolute_value_sorted(model, cohort):
    X, _ = cohort
    explanations = model.explain(X.head(50))
    table = global_importance(explanations)
    expected = np.abs(explanations["diagnosis"].values).mean(axis=0)
    np.testing.assert_allclose(table["diagnosis"].to_numpy(), np.sort(expected)[::-1])
    assert list(table.index) == list(np.asarray(X.columns)[np.argsort(-expected, kind="stable")])
    subtype = np.abs(explanations["subtype"].values).mean(axis=0)
    np.testing.assert_allclose(table.loc[list(X.columns), "subtype=B"].to_numpy(), subtype[:, 1])
    assert "prognosis" in table.columns and "subtype" not in table.columns


def test_codec_round_trips_raw_tables(model, cohort):
    X, _ = cohort
    codec = RawFeatureCodec(model)
    codes = codec.encode(X.head(10))
    smoking = X.columns.get_loc("smoking")
    categories = _training_categories(model, "smoking")
    expected = [np.nan if pd.isna(v) else categories.index(v) for v in X["smoking"].head(10)]
    np.testing.assert_array_equal(codes[:, smoking], expected)
    decoded = codec.decode(codes)
    pd.testing.assert_frame_equal(decoded, X.head(10).reset_index(drop=True), check_dtype=False,
                                  check_categorical=False)
    assert list(decoded["smoking"].cat.categories) == categories
    beyond = codes[:2].copy()
    beyond[:, smoking] = [len(categories) + 0.5, -3.0]  # perturbed codes out of range: the nearest category
    assert codec.decode(beyond)["smoking"].tolist() == [categories[-1], categories[0]]
    unseen = X.head(2).astype({"smoking": object})
    unseen.loc[unseen.index[0], "smoking"] = "vaping"  # not a training category: shown, coded -1
    explanation = model.explain(unseen)["diagnosis"]
    assert explanation.display_data[0, smoking] == "vaping" and explanation.data[0, smoking] == -1

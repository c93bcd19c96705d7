"""Survival explanations at chosen horizons: exact sums at any positive time, the
same values as the all-horizon explanation at a fitted one, clear errors, and the
consumers (top contributions, patient pages) asking for the headline horizon alone."""

import numpy as np
import pytest
import shap

from clinical_mtl import MultiTaskMLP
from clinical_mtl.datasets import make_synthetic_cohort
from clinical_mtl.model import outputs
from clinical_mtl.model.explanation import attributions
from clinical_mtl.model.outputs import top_contributions
from clinical_mtl.reporting.contributions import explained_outputs


@pytest.fixture(scope="module")
def cohort():
    X, Y = make_synthetic_cohort(300, random_state=0, survival=True)
    return X, Y[["diagnosis", "subtype", "prognosis", "death_time", "death_event"]]


@pytest.fixture(scope="module")
def model(cohort):
    X, Y = cohort
    return MultiTaskMLP(hidden_layer_sizes=(16, 8), max_epochs=10, ensemble_size=2, random_state=0).fit(X, Y)


def _death(model):
    return next(spec for spec in model.task_specs_ if spec.name == "death")


def test_explanations_add_up_to_the_event_probability_at_any_positive_time(model, cohort):
    X, _ = cohort
    spec = _death(model)
    # Between cut points, on one, before the first and past the last (where S is held).
    times = [spec.cut_points[0] / 3, (spec.cut_points[1] + spec.cut_points[2]) / 2, spec.cut_points[2],
             spec.cut_points[-1] * 2]
    explanation = model.explain(X, horizons=times)["death"]
    assert explanation.values.shape == (len(X), X.shape[1], len(times))
    assert list(explanation.output_names) == [f"death event by {t:g}" for t in times]
    expected = 1 - model.predict_survival_function(X, times)["death"]
    total = explanation.base_values + explanation.values.sum(axis=1)
    np.testing.assert_allclose(total, expected, atol=1e-4, rtol=0)
    assert np.ptp(expected[:, :3], axis=0).min() > 1e-2  # patients differ: the sums are not trivially flat


def test_one_horizon_gives_that_column_of_the_all_horizon_explanation(model, cohort):
    X, _ = cohort
    spec = _death(model)
    everything = model.explain(X)["death"]
    for k, horizon in enumerate(spec.horizons):
        alone = model.explain(X, horizons=[horizon])["death"]
        assert alone.values.shape == (len(X), X.shape[1]) and alone.output_names == f"death event by {horizon:g}"
        np.testing.assert_allclose(alone.values, everything.values[:, :, k], atol=1e-6, rtol=0)
        np.testing.assert_allclose(alone.base_values, everything.base_values[:, k], atol=1e-6, rtol=0)
    # Sorted and deduplicated, given as a sequence or per outcome: the fitted horizons again.
    for horizons in (list(reversed(spec.horizons)) + [spec.horizons[0]], {"death": spec.horizons}):
        again = model.explain(X.head(20), horizons=horizons)["death"]
        np.testing.assert_array_equal(again.values, everything.values[:20])


def test_horizons_leave_the_other_outcomes_alone(model, cohort):
    X, _ = cohort
    plain, chosen = model.explain(X.head(30)), model.explain(X.head(30), horizons=[1.0])
    for name in ("diagnosis", "subtype", "prognosis"):
        np.testing.assert_array_equal(chosen[name].values, plain[name].values)
        np.testing.assert_array_equal(chosen[name].base_values, plain[name].base_values)


@pytest.mark.parametrize("horizons, message", [
    ([], r"^horizons must be positive finite times, got \[\]\.$"),
    ([365, 0], r"^horizons must be positive finite times"),
    ([-1.0], r"^horizons must be positive finite times"),
    ([float("nan")], r"^horizons must be positive finite times"),
    ("365", r"^horizons must be a sequence of numbers, got '365'\.$"),
    (365, r"^horizons must be a sequence of numbers"),
    (["a year"], r"^horizons must be a sequence of numbers"),
    ({"death": [0]}, r"^horizons for 'death' must be positive finite times"),
    ({"diagnosis": [365]}, r"^horizons names \['diagnosis'\], which are not survival outcomes being explained"),
])
def test_bad_horizons_get_a_one_line_error_naming_the_parameter(model, cohort, horizons, message):
    X, _ = cohort
    with pytest.raises(ValueError, match=message) as caught:
        model.explain(X.head(3), horizons=horizons)
    assert "\n" not in str(caught.value)


def test_top_contributions_explain_the_headline_horizon_alone(model, cohort, monkeypatch):
    X, _ = cohort
    spec = _death(model)
    headline = model.explain(X)["death"].values[:, :, 1]  # the middle of three horizons
    asked = []

    def spy(*args, **kwargs):
        asked.append(kwargs.get("horizons"))
        return explain(*args, **kwargs)

    explain = outputs.attributions
    monkeypatch.setattr(outputs, "attributions", spy)
    monkeypatch.setattr(shap, "Explanation", None)  # top contributions need the arrays only
    top = top_contributions(model, X, 3)
    assert asked == [{"death": (spec.horizons[1],)}]
    for j in range(3):
        features = top[f"death_top{j + 1}_feature"].map(list(X.columns).index).to_numpy()
        np.testing.assert_allclose(top[f"death_top{j + 1}_contribution"],
                                   headline[np.arange(len(X)), features], atol=1e-6, rtol=0)
    ranked = np.sort(np.abs(headline), axis=1)[:, ::-1][:, :3]
    np.testing.assert_allclose(np.abs(top[[f"death_top{j}_contribution" for j in (1, 2, 3)]]), ranked, atol=1e-6)


def test_patient_pages_explain_the_headline_horizon_alone(model, cohort, monkeypatch):
    X, _ = cohort
    spec = _death(model)
    patients = X.head(12)
    everything = model.explain(patients)["death"]
    asked = []
    explain = model.explain

    def spy(*args, **kwargs):
        asked.append(kwargs.get("horizons"))
        return explain(*args, **kwargs)

    monkeypatch.setattr(model, "explain", spy)
    result = explained_outputs(model, patients, 3, None, {"subtype": model.predict_proba(patients)["subtype"]})["death"]
    assert asked == [{"death": (spec.horizons[1],)}]
    np.testing.assert_allclose(result.base, everything.base_values[:, 1], atol=1e-6, rtol=0)
    np.testing.assert_allclose(result.output, 1 - model.predict_survival_function(patients, [spec.horizons[1]])
                               ["death"][:, 0], atol=1e-5, rtol=0)
    order = np.argsort(-np.abs(everything.values[:, :, 1]), axis=1, kind="stable")[:, :3]
    np.testing.assert_allclose(result.top_amounts, np.take_along_axis(everything.values[:, :, 1], order, axis=1),
                               atol=1e-6, rtol=0)


def test_attributions_are_the_explanations_arrays(model, cohort):
    X, _ = cohort
    explained = model.explain(X.head(40), horizons={"death": [400, 900]}, output="log_odds")
    arrays = attributions(model, X.head(40), horizons={"death": [400, 900]}, output="log_odds")
    assert list(arrays) == list(explained)
    for name, explanation in explained.items():
        np.testing.assert_array_equal(arrays[name].values, explanation.values)
        np.testing.assert_array_equal(arrays[name].base_values, explanation.base_values)
        assert arrays[name].feature_names == list(explanation.feature_names)
        assert arrays[name].output_names == explanation.output_names

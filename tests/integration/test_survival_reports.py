"""A survival outcome on a patient's page: event probabilities with their range, and the
patient's curve against the training cohort's Kaplan-Meier curve."""

import re
from dataclasses import replace

import numpy as np
import pytest

from clinical_mtl import MultiTaskMLP
from clinical_mtl.data.persistence import save_model
from clinical_mtl.data.schema import SCHEMAS, load_schema
from clinical_mtl.datasets import load_pbc
from clinical_mtl.model.survival import headline_horizon
from clinical_mtl.model.survival_metrics import kaplan_meier_curve
from clinical_mtl.reporting import build_patient_reports, write_reports
from clinical_mtl.reporting.content import page_file_name
from clinical_mtl.reporting.survival_page import AXIS_Y, PLOT_LEFT, PLOT_RIGHT, PLOT_TOP
from clinical_mtl.scoring import load_model_for_scoring

pytestmark = pytest.mark.integration

HORIZONS = [365.0, 1826.0, 3652.0]


def _saved(tmp_path_factory, **params):
    X, Y = load_pbc()
    model = MultiTaskMLP(hidden_layer_sizes=(16,), max_epochs=30, random_state=0, survival_horizons=HORIZONS,
                         **params).fit(X, Y)
    folder = tmp_path_factory.mktemp("survival_reports")
    save_model(model, folder / "model", schema=load_schema(SCHEMAS / "pbc.yaml"))
    patients = X.head(8).reset_index()
    patients.to_csv(folder / "patients.csv", index=False)
    loaded = load_model_for_scoring(str(folder / "model"))
    return {"folder": folder, "loaded": loaded, "patients": loaded.schema.validate(patients).valid, "Y": Y}


@pytest.fixture(scope="module")
def pbc_pages(tmp_path_factory):
    return _saved(tmp_path_factory, ensemble_size=3)


def _percent(p: float) -> str:
    """A probability as pages write it: whole percent, <1% and >99% at the ends."""
    text = f"{round(100 * p)}%"
    return {"0%": "<1%", "100%": ">99%"}.get(text, text)


def _death(report):
    return {outcome.name: outcome for outcome in report.outcomes}["death"]


def test_the_stored_cohort_curve_is_the_training_kaplan_meier_estimate(pbc_pages):
    model, Y = pbc_pages["loaded"].model, pbc_pages["Y"]
    cuts = model.task_specs_[[s.name for s in model.task_specs_].index("death")].cut_points
    times = model.cohort_survival_times_["death"]  # as saved and loaded back
    # Finer than the cut points, evenly spaced up to the last one.
    assert len(times) == 24 > len(cuts) and times[-1] == cuts[-1]
    np.testing.assert_allclose(times, np.linspace(0, cuts[-1], 25)[1:], rtol=5e-3)  # to 3 significant digits
    expected = kaplan_meier_curve(Y["death_time"], Y["death_event"], times)[0]
    stored = model.cohort_survival_["death"]
    assert stored.shape == (24,)
    np.testing.assert_allclose(stored, expected, rtol=5e-3)  # stored to 3 significant digits
    assert np.all(np.diff(stored) <= 0) and 0 < stored[-1] < stored[0] < 1


def test_event_probabilities_come_with_their_range_over_the_networks(pbc_pages):
    loaded, patients = pbc_pages["loaded"], pbc_pages["patients"]
    model = loaded.model
    features = patients[list(model.feature_names_in_)]
    reports = build_patient_reports(loaded, patients)
    expected = 1 - model.predict_survival_function(features, times=HORIZONS)["death"]
    position = [s.name for s in model.task_specs_].index("death")
    spec = model.task_specs_[position]
    members = model.member_outputs(features)[position]  # (3 networks, patients, cut points)
    assert members.shape == (3, len(features), len(spec.cut_points))
    np.testing.assert_allclose(members.mean(axis=0), model.predict_survival_function(features)["death"], atol=1e-12)
    by_member = np.stack([1 - np.array([np.interp(HORIZONS, [0, *spec.cut_points], [1, *curve]) for curve in m])
                          for m in members])
    spreads = set()
    for row, report in enumerate(reports):
        death = _death(report)
        assert [h for h, _, _ in death.horizon_probabilities] == ["365 days", "1,826 days", "3,652 days"]
        for k, (_, probability, spread) in enumerate(death.horizon_probabilities):
            assert probability == f"{expected[row, k]:.2f} ({_percent(expected[row, k])})"
            low, high = by_member[:, row, k].min(), by_member[:, row, k].max()
            assert spread == f"{_percent(low)} to {_percent(high)}"
            assert low - 1e-12 <= expected[row, k] <= high + 1e-12
            spreads.add(spread)
        middle = death.horizon_probabilities[1]
        assert death.headline == (f"Probability of death by 1,826 days: {middle[1]}; "
                                  f"the model's networks range from {middle[2]}")
        assert "3 networks" in death.uncertainty
    assert len(spreads) > 3  # patients differ


def test_a_higher_event_probability_is_drawn_as_worse_and_cirrhosis_likewise(pbc_pages):
    loaded, patients = pbc_pages["loaded"], pbc_pages["patients"]
    model = loaded.model
    explanations = model.explain(patients[list(model.feature_names_in_)])
    tones = set()
    for row, report in enumerate(build_patient_reports(loaded, patients, top_k=5)):
        for outcome in report.outcomes:
            values = explanations[outcome.name].values[row]
            if outcome.name == "death":  # explained: the event probability by the headline horizon
                values = values[:, headline_horizon(model.task_specs_[1])]
            top = values[np.argsort(-np.abs(values), kind="stable")[:5]]
            *shown, rest = outcome.chart.steps
            assert [step.tone for step in shown] == ["worse" if v >= 0 else "better" for v in top]
            assert rest.tone == "rest"
            tones |= {step.tone for step in shown}
            assert dict(outcome.chart.legend)["worse"].startswith("red, towards worse: raises the probability of")
    assert tones == {"worse", "better"}
    cirrhosis = build_patient_reports(loaded, patients.head(1))[0].outcomes[0]
    p = model.predict_proba(patients.head(1)[list(model.feature_names_in_)])["cirrhosis"][0, 1]
    assert cirrhosis.headline == f"Cirrhosis (histologic stage 4): {'likely' if p > 0.5 else 'unlikely'} ({_percent(p)})"


def test_the_chart_draws_the_patient_and_the_cohort_curves(pbc_pages):
    loaded, patients = pbc_pages["loaded"], pbc_pages["patients"]
    model = loaded.model
    curves = model.predict_survival_function(patients[list(model.feature_names_in_)])["death"]
    cuts = np.asarray(model.task_specs_[[s.name for s in model.task_specs_].index("death")].cut_points)

    def decoded(points):  # back from SVG coordinates to (time, survival)
        xy = np.array([[float(v) for v in point.split(",")] for point in points.split()])
        return ((xy[:, 0] - PLOT_LEFT) / (PLOT_RIGHT - PLOT_LEFT) * cuts[-1],
                (AXIS_Y - xy[:, 1]) / (AXIS_Y - PLOT_TOP))

    for row, report in enumerate(build_patient_reports(loaded, patients)[:3]):
        chart = _death(report).survival_chart
        times, survival = decoded(chart.patient_points)
        np.testing.assert_allclose(times, [0, *cuts], atol=cuts[-1] / 2000)
        np.testing.assert_allclose(survival, [1, *curves[row]], atol=2e-3)
        times, survival = decoded(chart.cohort_points)
        np.testing.assert_allclose(times, [0, *model.cohort_survival_times_["death"]], atol=cuts[-1] / 2000)
        np.testing.assert_allclose(survival, [1, *model.cohort_survival_["death"]], atol=2e-3)
        assert [tick.text for tick in chart.x_ticks] == ["0", "365", "1,826", "3,652"]
        assert "against" in chart.description and "Kaplan-Meier" in chart.description


def test_a_model_saved_with_the_cohort_curve_at_its_cut_points_draws_it_there(pbc_pages):
    loaded, Y = pbc_pages["loaded"], pbc_pages["Y"]
    cuts = np.asarray(loaded.model.task_specs_[[s.name for s in loaded.model.task_specs_].index("death")].cut_points)
    state, weights = loaded.model.fitted_state()
    state["fitted"].pop("cohort_survival_times")  # what a model saved before the times were stored holds
    at_cuts = kaplan_meier_curve(Y["death_time"], Y["death_event"], cuts)[0]
    state["fitted"]["cohort_survival"] = {"death": at_cuts.tolist()}
    older = MultiTaskMLP.from_fitted_state(loaded.model.get_params(), state, weights)
    chart = _death(build_patient_reports(replace(loaded, model=older), pbc_pages["patients"].head(1))[0]).survival_chart
    xy = np.array([[float(v) for v in point.split(",")] for point in chart.cohort_points.split()])
    assert older.cohort_survival_times_ == {}
    np.testing.assert_allclose((xy[:, 0] - PLOT_LEFT) / (PLOT_RIGHT - PLOT_LEFT) * cuts[-1], [0, *cuts],
                               atol=cuts[-1] / 2000)
    np.testing.assert_allclose((AXIS_Y - xy[:, 1]) / (AXIS_Y - PLOT_TOP), [1, *at_cuts], atol=2e-3)


def test_a_model_saved_without_the_cohort_curve_shows_the_patient_alone(pbc_pages):
    loaded = pbc_pages["loaded"]
    state, weights = loaded.model.fitted_state()
    state["fitted"].pop("cohort_survival")  # what a model saved before the curve was stored holds
    older = MultiTaskMLP.from_fitted_state(loaded.model.get_params(), state, weights)
    older_loaded = replace(loaded, model=older)
    chart = _death(build_patient_reports(older_loaded, pbc_pages["patients"].head(1))[0]).survival_chart
    assert older.cohort_survival_ == {} and chart.cohort_points is None and chart.patient_points
    assert "Kaplan-Meier" not in chart.description


def test_one_network_says_it_has_no_range(tmp_path_factory):
    single = _saved(tmp_path_factory, ensemble_size=1)
    death = _death(build_patient_reports(single["loaded"], single["patients"].head(1))[0])
    assert [spread for _, _, spread in death.horizon_probabilities] == ["one network: no range"] * 3
    assert "range" not in death.headline and death.uncertainty is None


def test_the_page_shows_the_chart_and_the_table_and_passes_axe(pbc_pages, tmp_path):
    from axe_playwright_python.sync_playwright import Axe

    from clinical_mtl.reporting.browser import chromium

    write_reports(pbc_pages["loaded"], pbc_pages["folder"] / "patients.csv", tmp_path / "out")
    page = tmp_path / "out" / "patients" / page_file_name(pbc_pages["patients"]["id"].iloc[0])
    html = page.read_text()
    assert html.count('<svg class="survival"') == 1 and html.count("<polyline") == 2
    assert re.search(r"<caption>Probability of the event by each time</caption>", html)
    assert "Predicted survival" not in html
    with chromium() as context:
        tab = context.new_page()
        tab.goto(page.as_uri())
        box = tab.locator("svg.survival").bounding_box()
        assert box["width"] > 300 and box["height"] > 100
        results = Axe().run(tab)
        assert results.violations_count == 0, results.generate_report()
        tab.close()

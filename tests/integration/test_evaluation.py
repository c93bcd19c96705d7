"""Evaluating a fitted model: subgroups, intervals, reliability diagrams, single-task twins."""

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from scipy import stats
from sklearn.metrics import r2_score

from clinical_mtl import MultiTaskMLP
from clinical_mtl.datasets import make_synthetic_cohort
from clinical_mtl.evaluation import band, decision_curve_figures, decision_curves
from clinical_mtl.evaluation.figures import (
    reliability_diagrams,
    save_reliability_diagrams,
)
from clinical_mtl.evaluation.negative_transfer import (
    _single_task_twin,
    single_task_comparison,
)

SMALL = {"hidden_layer_sizes": (16,), "max_epochs": 20, "ensemble_size": 1, "random_state": 0}


def test_evaluate_without_options_keeps_one_row_per_outcome(fitted_model, cohort):
    X, Y = cohort
    table = fitted_model.evaluate(X, Y)
    assert table.index.tolist() == ["diagnosis", "subtype", "prognosis"]
    assert not [column for column in table.columns if column.endswith(("_lower", "_upper"))]
    assert table.loc["diagnosis", "events"] == (Y["diagnosis"] == 1).sum()
    assert table.loc["subtype", "events"] == Y["subtype"].value_counts().min()
    assert table.loc["diagnosis", ["ece", "calibration_slope", "calibration_intercept"]].notna().all()
    assert np.isnan(table.loc["subtype", "calibration_slope"]) and 0 <= table.loc["subtype", "ece"] <= 1


def test_bootstrap_intervals_bracket_the_headline_metrics(fitted_model, cohort):
    X, Y = cohort
    table = fitted_model.evaluate(X, Y, n_bootstrap=100, random_state=0)
    for outcome, metrics in [("diagnosis", ["auroc", "brier"]), ("subtype", ["auroc", "brier"]),
                             ("prognosis", ["rmse", "r2"])]:
        for metric in metrics:
            row = table.loc[outcome]
            assert row[f"{metric}_lower"] <= row[metric] <= row[f"{metric}_upper"], (outcome, metric)
    assert np.isnan(table.loc["prognosis", "auroc_lower"])
    pd.testing.assert_frame_equal(table, fitted_model.evaluate(X, Y, n_bootstrap=100, random_state=0))
    with pytest.raises(ValueError, match="confidence"):
        fitted_model.evaluate(X, Y, n_bootstrap=10, confidence=95)


def test_evaluate_intervals_are_scipys_bca_intervals_of_the_labelled_rows(fitted_model, cohort):
    X, Y = cohort
    table = fitted_model.evaluate(X, Y, n_bootstrap=60, confidence=0.9, random_state=11)
    # The documented resampling, outcome by outcome in the model's order, one generator seeded per outcome.
    rng = np.random.RandomState(11)
    seeds = {name: rng.randint(np.iinfo(np.int32).max) for name in ["diagnosis", "subtype", "prognosis"]}
    labelled = Y["prognosis"].notna().to_numpy()
    values = Y["prognosis"].to_numpy()[labelled]
    predicted = fitted_model.predict(X)["prognosis"].to_numpy()[labelled]

    def statistic(a, b):
        return np.array([np.sqrt(np.mean((a - b) ** 2)), r2_score(a, b)])

    result = stats.bootstrap((values, predicted), statistic, paired=True, vectorized=False, n_resamples=60,
                             confidence_level=0.9, method="BCa", rng=np.random.default_rng(seeds["prognosis"]))
    got = table.loc["prognosis", ["rmse_lower", "r2_lower", "rmse_upper", "r2_upper"]].to_numpy(dtype=float)
    np.testing.assert_allclose(got, np.r_[result.confidence_interval.low, result.confidence_interval.high],
                               rtol=1e-9)
    assert table["estimable"].all() and (table["note"] == "").all()


def test_subgroup_counts_equal_direct_counts(fitted_model, cohort):
    X, Y = cohort
    ages = band(X["age"], [50, 65], name="age_band")
    table = fitted_model.evaluate(X, Y, pd.DataFrame({"sex": X["sex"], "age_band": ages}))
    assert table.index.names == ["outcome", "group", "value"]
    assert set(table.index.get_level_values("value")[table.index.get_level_values("group") == "sex"]) == {
        "f", "m", "missing"}
    for value, rows in [("f", X["sex"] == "f"), ("missing", X["sex"].isna())]:
        labelled = Y.loc[rows, "diagnosis"].dropna()
        row = table.loc[("diagnosis", "sex", value)]
        assert row["n_labelled"] == len(labelled) and row["events"] == (labelled == 1).sum()
    row = table.loc[("prognosis", "age_band", ">=65")]
    assert row["n_labelled"] == Y.loc[X["age"] >= 65, "prognosis"].notna().sum()
    # Column names of X work too, and the metrics of a subgroup are those of its rows.
    by_name = fitted_model.evaluate(X, Y, "sex")
    women = (X["sex"] == "f").to_numpy()
    expected = fitted_model.evaluate(X[women], Y[women])
    assert by_name.loc[("diagnosis", "sex", "f"), "auroc"] == pytest.approx(expected.loc["diagnosis", "auroc"])


def test_subgroups_too_few_to_estimate_keep_their_counts_only(fitted_model, cohort):
    X, Y = cohort
    table = fitted_model.evaluate(X, Y, "sex", n_bootstrap=30, random_state=0)
    metric_columns = [c for c in table.columns if c not in ("kind", "n_labelled", "events", "estimable", "note")]
    for (outcome, _, value), row in table.iterrows():
        labels = Y.loc[X["sex"].isna() if value == "missing" else X["sex"] == value, outcome].dropna()
        if outcome == "prognosis":
            few, count = len(labels) < 20, len(labels)
        else:
            count = labels.value_counts().reindex(Y[outcome].dropna().unique(), fill_value=0).min()
            few = count < 10
        assert row["estimable"] == (not few), (outcome, value)
        assert row["n_labelled"] == len(labels)
        if few:
            assert row[metric_columns].isna().all(), (outcome, value)
            assert row["note"].startswith(f"too few to estimate: {count} "), row["note"]
        else:
            assert row[["auroc", "r2"]].notna().any() and not row["note"].startswith("too few")
    assert not table["estimable"].all() and table["estimable"].any()  # both kinds of rows occur here


def test_pbc_subgroup_intervals_bracket_their_estimates(pbc):
    X, Y = pbc
    model = MultiTaskMLP(**SMALL).fit(X[:300], Y[:300])
    X_test, Y_test = X[300:], Y[300:]
    groups = pd.DataFrame({"sex": X_test["sex"], "age_band": band(X_test["age"], [50, 65])})
    table = model.evaluate(X_test, Y_test, groups, n_bootstrap=100, random_state=0)
    estimates = shown = 0
    for key, row in table[table["estimable"]].iterrows():
        for metric in ("auroc", "brier", "ece", "harrell_c", "ibs"):
            if pd.isna(row[metric]):
                continue
            estimates += 1
            lower, upper = row[f"{metric}_lower"], row[f"{metric}_upper"]
            if np.isnan(lower):
                assert f"{metric}: no interval" in row["note"], (key, metric)
            else:
                assert lower <= row[metric] <= upper, (key, metric)
                shown += 1
    # 3 estimable cirrhosis subgroups x 3 metrics, 2 death subgroups x 2: each with its interval.
    assert shown == estimates == 13
    men = table.xs(("sex", "m"), level=("group", "value"))
    assert not men["estimable"].any() and men[["auroc", "auroc_lower", "harrell_c", "harrell_c_upper"]].isna().all(
        axis=None)


def test_decision_curves_of_every_classification_outcome(fitted_model, cohort):
    X, Y = cohort
    curves = decision_curves(fitted_model, X, Y, thresholds=[0.1, 0.25])
    assert list(dict.fromkeys(zip(curves["outcome"], curves["class"]))) == [
        ("diagnosis", 1), ("subtype", "A"), ("subtype", "B"), ("subtype", "C")]
    assert curves.index.equals(pd.RangeIndex(8))  # 4 curves x 2 thresholds, numbered afresh
    labelled = Y["diagnosis"].notna().to_numpy()
    risk = fitted_model.predict_proba(X)["diagnosis"][labelled, 1]
    event = Y["diagnosis"].to_numpy()[labelled] == 1
    rows = curves[curves["outcome"] == "diagnosis"]
    for pt, model_nb, treat_all in zip(rows["threshold"], rows["model"], rows["treat_all"]):
        treated = risk >= pt
        expected = (treated & event).sum() / len(event) - (treated & ~event).sum() / len(event) * pt / (1 - pt)
        assert model_nb == pytest.approx(expected)
        assert treat_all == pytest.approx(event.mean() - (1 - event.mean()) * pt / (1 - pt))
    assert (curves["treat_none"] == 0).all()
    figures = decision_curve_figures(decision_curves(fitted_model, X, Y))
    assert list(figures) == ["diagnosis", "subtype"] and len(figures["subtype"].axes) == 3


def test_reliability_diagrams_are_standalone_figures(fitted_model, cohort, tmp_path):
    import matplotlib.pyplot as plt

    X, Y = cohort
    before = plt.get_fignums()
    figures = reliability_diagrams(fitted_model, X, Y)
    assert list(figures) == ["diagnosis", "subtype"]
    assert all(isinstance(figure, Figure) for figure in figures.values())
    assert plt.get_fignums() == before  # nothing left in pyplot's state
    written = save_reliability_diagrams(figures, tmp_path / "diagrams")
    assert sorted(path.name for path in written) == [
        "reliability_diagnosis.png", "reliability_diagnosis.svg", "reliability_subtype.png",
        "reliability_subtype.svg"]
    assert all(path.stat().st_size > 1000 for path in written)


@pytest.fixture(scope="module")
def split():
    X, Y = make_synthetic_cohort(400, random_state=1)
    return X[:300], Y[:300], X[300:], Y[300:]


def test_single_task_comparison_one_row_per_outcome(split):
    X_train, Y_train, X_test, Y_test = split
    model = MultiTaskMLP(**SMALL).fit(X_train, Y_train)
    table = single_task_comparison(model, X_train, Y_train, X_test, Y_test, n_bootstrap=100, random_state=0)
    assert table.index.tolist() == ["diagnosis", "subtype", "prognosis"]
    assert table["metric"].tolist() == ["auroc", "auroc", "rmse"]
    assert table["higher_is_better"].tolist() == [True, True, False]
    assert (table["delta_lower"] <= table["delta"]).all() and (table["delta"] <= table["delta_upper"]).all()
    np.testing.assert_allclose(table["delta"], table["multi_task"] - table["single_task"])
    expected = model.evaluate(X_test, Y_test).loc["diagnosis", "auroc"]
    assert table.loc["diagnosis", "multi_task"] == pytest.approx(expected)
    assert table.loc["prognosis", "n_test"] == Y_test["prognosis"].notna().sum()
    assert set(table["verdict"]) <= {"sharing helped", "sharing hurt", "no clear difference"}


def test_single_task_twin_learns_one_outcome_with_the_same_settings(split):
    X_train, Y_train, *_ = split
    model = MultiTaskMLP(**SMALL | {"max_epochs": 2}, loss_weighting={"diagnosis": 2.0, "subtype": 1.0,
                         "prognosis": 1.0}, class_weight={"subtype": "balanced"}).fit(X_train, Y_train)
    twin = _single_task_twin(model, "subtype")
    assert twin.get_params()["tasks"] == {"subtype": "multiclass"}
    assert twin.loss_weighting == "equal" and twin.class_weight == {"subtype": "balanced"}
    assert _single_task_twin(model, "prognosis").class_weight is None
    assert {k: v for k, v in twin.get_params().items() if k not in ("tasks", "loss_weighting", "class_weight")} == {
        k: v for k, v in model.get_params().items() if k not in ("tasks", "loss_weighting", "class_weight")}


def test_single_task_comparison_fits_an_unfitted_model_and_checks_metrics(split):
    X_train, Y_train, X_test, Y_test = split
    labelled = Y_train["prognosis"].notna()
    X_train, Y_train, Y_test = X_train[labelled], Y_train.loc[labelled, ["prognosis"]], Y_test[["prognosis"]]
    model = MultiTaskMLP(**SMALL)
    table = single_task_comparison(model, X_train, Y_train, X_test, Y_test, regression_metric="r2", n_bootstrap=0)
    # One outcome, every training row labelled: the twin is the same model.
    assert table.loc["prognosis", "delta"] == pytest.approx(0.0)
    assert table.loc["prognosis", "verdict"] == "no interval"
    with pytest.raises(ValueError, match="classification_metric must be one of"):
        single_task_comparison(model, X_train, Y_train, X_test, Y_test, classification_metric="accuracy")

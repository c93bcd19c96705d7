"""Evaluating a fitted model: subgroups, intervals, reliability diagrams, single-task twins."""

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from sklearn.metrics import r2_score, roc_auc_score

from clinical_mtl import MultiTaskMLP
from clinical_mtl.datasets import make_synthetic_cohort
from clinical_mtl.evaluation import band
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


def test_evaluate_intervals_are_percentiles_of_the_seeded_resamples_at_the_given_level(fitted_model, cohort):
    X, Y = cohort
    table = fitted_model.evaluate(X, Y, n_bootstrap=80, confidence=0.9, random_state=11)
    # The documented resampling, drawn here outcome by outcome in the model's order.
    rng = np.random.RandomState(11)
    draws = {name: rng.multinomial(n, np.full(n, 1.0 / n), size=80) for name, n in Y.notna().sum().items()}
    labelled = Y["diagnosis"].notna().to_numpy()
    y = Y["diagnosis"].to_numpy()[labelled].astype(int)
    p = fitted_model.predict_proba(X)["diagnosis"][labelled, 1]
    values = Y["prognosis"].to_numpy()[Y["prognosis"].notna()]
    predicted = fitted_model.predict(X)["prognosis"].to_numpy()[Y["prognosis"].notna()]

    def binary(rows):
        bins = np.clip(np.ceil(p[rows] * 10).astype(int) - 1, 0, 9)
        gaps = [abs(np.sum((p[rows] - y[rows])[bins == b])) for b in range(10)]
        return {"auroc": roc_auc_score(y[rows], p[rows]), "brier": np.mean((p[rows] - y[rows]) ** 2),
                "ece": sum(gaps) / len(rows)}

    def regression(rows):
        return {"rmse": np.sqrt(np.mean((values[rows] - predicted[rows]) ** 2)),
                "r2": r2_score(values[rows], predicted[rows])}

    for outcome, metrics_of in [("diagnosis", binary), ("prognosis", regression)]:
        resamples = [metrics_of(np.repeat(np.arange(counts.size), counts)) for counts in draws[outcome]]
        for metric in resamples[0]:
            expected = np.quantile([resample[metric] for resample in resamples], [0.05, 0.95])
            got = table.loc[outcome, [f"{metric}_lower", f"{metric}_upper"]].to_numpy(dtype=float)
            np.testing.assert_allclose(got, expected, rtol=1e-9, err_msg=f"{outcome} {metric}")


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

import numpy as np
import pandas as pd
import pytest

from clinical_mtl.datasets import load_pbc, make_synthetic_cohort


def test_pbc_matches_its_data_dictionary():
    X, Y = load_pbc()
    assert X.shape == (418, 16) and Y.shape == (418, 3)
    assert X.index.name == "id" and X.index.is_unique
    assert "time" not in X and "status" not in X
    assert int(Y["cirrhosis"].notna().sum()) == 412
    assert int(Y["cirrhosis"].sum()) == 144  # stage 4
    assert Y[["death_time", "death_event"]].notna().all().all()  # every patient: death or censoring
    assert int(Y["death_event"].sum()) == 161  # deaths; transplants (25) and the alive are censored
    assert X["trt"].isna().sum() == 106
    assert str(X["sex"].dtype) == "category" and str(X["ascites"].dtype) == "boolean"
    raw = pd.read_csv(__import__("clinical_mtl.datasets", fromlist=["PBC_CSV"]).PBC_CSV)
    np.testing.assert_array_equal(Y["death_time"].to_numpy(), raw["time"].to_numpy(dtype=float))
    np.testing.assert_array_equal(Y["death_event"].to_numpy(), (raw["status"] == 2).to_numpy(dtype=float))


def test_synthetic_cohort_is_seeded_and_sized():
    X1, Y1 = make_synthetic_cohort(500, random_state=3)
    X2, Y2 = make_synthetic_cohort(500, random_state=3)
    pd.testing.assert_frame_equal(X1, X2)
    pd.testing.assert_frame_equal(Y1, Y2)
    X3, _ = make_synthetic_cohort(500, random_state=4)
    assert not X1.equals(X3)
    assert X1.shape == (500, 12)
    assert list(Y1.columns) == ["diagnosis", "subtype", "prognosis"]


def test_synthetic_missingness_is_controllable():
    X, Y = make_synthetic_cohort(20000, random_state=0, feature_missing_rate=0.2,
                                 label_missing_rate={"diagnosis": 0.0, "subtype": 0.5, "prognosis": 0.9})
    assert X.isna().mean().between(0.18, 0.22).all()
    assert Y["diagnosis"].notna().all()
    assert Y["subtype"].isna().mean() == pytest.approx(0.5, abs=0.02)
    assert Y["prognosis"].isna().mean() == pytest.approx(0.9, abs=0.02)


def test_synthetic_truth_matches_the_labels():
    X, Y, truth = make_synthetic_cohort(20000, random_state=1, label_missing_rate=0.0, return_truth=True)
    p = truth.probabilities["diagnosis"][:, 1]
    assert Y["diagnosis"].astype(float).mean() == pytest.approx(p.mean(), abs=0.01)
    residual = Y["prognosis"] - truth.expected_values["prognosis"]
    assert residual.std() == pytest.approx(truth.noise_sd["prognosis"], rel=0.03)
    subtype_share = Y["subtype"].value_counts(normalize=True).sort_index().to_numpy()
    np.testing.assert_allclose(subtype_share, truth.probabilities["subtype"].mean(axis=0), atol=0.01)
    assert truth.drivers["diagnosis"][0] == "crp"


def test_unknown_outcome_in_missing_rates_is_an_error():
    with pytest.raises(ValueError, match="unknown outcomes"):
        make_synthetic_cohort(10, label_missing_rate={"death": 0.1})


def test_synthetic_survival_is_seeded_and_positive():
    _, Y1 = make_synthetic_cohort(500, random_state=3, survival=True)
    _, Y2 = make_synthetic_cohort(500, random_state=3, survival=True)
    _, Y3 = make_synthetic_cohort(500, random_state=4, survival=True)
    pd.testing.assert_frame_equal(Y1, Y2)
    assert not Y1["death_time"].equals(Y3["death_time"])
    assert list(Y1.columns) == ["diagnosis", "subtype", "prognosis", "death_time", "death_event"]
    labelled = Y1["death_time"].notna()
    assert labelled.equals(Y1["death_event"].notna())
    assert (Y1.loc[labelled, "death_time"] > 0).all() and (Y1.loc[labelled, "death_time"] <= 1825).all()
    assert set(Y1["death_event"].dropna().unique()) == {0, 1}
    # administrative censoring: whoever reaches 5 years is censored there
    assert (Y1.loc[Y1["death_time"] == 1825, "death_event"] == 0).all()


def test_survival_leaves_the_other_columns_unchanged():
    X0, Y0, truth0 = make_synthetic_cohort(800, random_state=7, return_truth=True)
    X1, Y1, truth1 = make_synthetic_cohort(800, random_state=7, survival=True, return_truth=True)
    pd.testing.assert_frame_equal(X0, X1)
    pd.testing.assert_frame_equal(Y0, Y1[Y0.columns])
    np.testing.assert_array_equal(truth0.probabilities["diagnosis"], truth1.probabilities["diagnosis"])
    assert truth0.survival == {} and "death" not in truth0.drivers
    assert truth1.drivers["death"] == ("age", "crp", "creatinine", "albumin")


def test_kaplan_meier_matches_the_true_survival_function():
    from sksurv.nonparametric import kaplan_meier_estimator

    _, Y, truth = make_synthetic_cohort(20000, random_state=2, label_missing_rate=0.0, survival=True,
                                        return_truth=True)
    time, event = Y["death_time"].to_numpy(), Y["death_event"].to_numpy(dtype=bool)
    grid = np.linspace(30, 1800, 60)
    true_curves = truth.survival["death"](grid)
    assert true_curves.shape == (20000, 60) and np.all(np.diff(true_curves, axis=1) <= 0)
    # within the whole cohort and within the halves of lowest and highest true risk, which checks
    # each patient's curve (its hazard ratio), not only their mean
    risk = truth.survival["death"].linear_predictor
    for rows in (np.ones(20000, bool), risk <= np.median(risk), risk > np.median(risk)):
        km_times, km_survival = kaplan_meier_estimator(event[rows], time[rows])
        km = km_survival[np.searchsorted(km_times, grid, side="right") - 1]
        np.testing.assert_allclose(km, true_curves[rows].mean(axis=0), atol=0.02)


def test_synthetic_event_rate_is_in_the_documented_range():
    _, Y = make_synthetic_cohort(20000, random_state=5, label_missing_rate=0.0, survival=True)
    assert 0.35 <= Y["death_event"].astype(float).mean() <= 0.45


def test_missing_death_labels_are_missing_in_both_columns():
    _, Y = make_synthetic_cohort(20000, random_state=0, survival=True, label_missing_rate={"death": 0.3})
    missing = Y["death_time"].isna()
    assert missing.equals(Y["death_event"].isna())
    assert missing.mean() == pytest.approx(0.3, abs=0.02)
    assert Y[["diagnosis", "subtype", "prognosis"]].notna().all().all()
    _, Y = make_synthetic_cohort(20000, random_state=0, survival=True, label_missing_rate=0.1)
    assert Y["death_time"].isna().equals(Y["death_event"].isna())
    assert Y["death_time"].isna().mean() == pytest.approx(0.1, abs=0.01)

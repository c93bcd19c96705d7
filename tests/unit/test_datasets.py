import numpy as np
import pandas as pd
import pytest

from clinical_mtl.datasets import load_pbc, make_synthetic_cohort


def test_pbc_matches_its_data_dictionary():
    X, Y = load_pbc()
    assert X.shape == (418, 16) and Y.shape == (418, 2)
    assert X.index.name == "id" and X.index.is_unique
    assert "time" not in X and "status" not in X
    assert int(Y["cirrhosis"].notna().sum()) == 412
    assert int(Y["cirrhosis"].sum()) == 144  # stage 4
    assert int(Y["log_survival_days"].notna().sum()) == 161  # deaths
    assert X["trt"].isna().sum() == 106
    assert str(X["sex"].dtype) == "category" and str(X["ascites"].dtype) == "boolean"
    raw = pd.read_csv(__import__("clinical_mtl.datasets", fromlist=["PBC_CSV"]).PBC_CSV)
    died = raw["status"] == 2
    np.testing.assert_allclose(np.exp(Y["log_survival_days"].dropna().to_numpy()), raw.loc[died, "time"])


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

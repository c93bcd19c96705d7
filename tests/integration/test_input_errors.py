"""Bad input gets a clear error that names what is wrong."""

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import NotFittedError

from clinical_mtl import MultiTaskMLP

FAST = {"hidden_layer_sizes": (8,), "max_epochs": 3, "ensemble_size": 1, "random_state": 0}


def test_X_and_Y_of_different_lengths(cohort):
    X, Y = cohort
    with pytest.raises(ValueError, match=f"X has {len(X)} rows but Y has {len(X) - 1}"):
        MultiTaskMLP(**FAST).fit(X, Y.iloc[:-1])


def test_Y_columns_not_matching_tasks(cohort):
    X, Y = cohort
    tasks = {"diagnosis": "binary", "death": "binary"}
    with pytest.raises(ValueError, match=r"outcomes in tasks but not in Y: \['death'\].*columns of Y not in tasks: \['subtype', 'prognosis'\]"):
        MultiTaskMLP(tasks=tasks, **FAST).fit(X, Y)


def test_infinite_feature_values_name_column_and_rows(cohort):
    X, Y = cohort
    X = X.copy()
    X.loc[[3, 17], "crp"] = np.inf
    with pytest.raises(ValueError, match=r"Column 'crp' holds infinite values in rows 3, 17"):
        MultiTaskMLP(**FAST).fit(X, Y)


def test_infinite_label_values(cohort):
    X, Y = cohort
    Y = Y.copy()
    Y.loc[5, "prognosis"] = np.inf
    with pytest.raises(ValueError, match="Outcome 'prognosis' holds infinite values"):
        MultiTaskMLP(**FAST).fit(X, Y)


def test_infinite_values_at_predict(fitted_model, cohort):
    X, _ = cohort
    X = X.head(4).copy()
    X.loc[2, "age"] = -np.inf
    with pytest.raises(ValueError, match=r"Column 'age' holds infinite values in row 2"):
        fitted_model.predict(X)


def test_unreadable_object_column(cohort):
    X, Y = cohort
    X = X.copy()
    X["crp"] = X["crp"].astype(object)
    X.loc[7, "crp"] = "high"
    with pytest.raises(ValueError, match=r"Column 'crp' cannot be read as numbers or categories.*row 7"):
        MultiTaskMLP(**FAST).fit(X, Y)


def test_predict_with_missing_column(fitted_model, cohort):
    X, _ = cohort
    with pytest.raises(ValueError, match=r"Feature names seen at fit time, yet now missing:\n- crp"):
        fitted_model.predict(X.drop(columns="crp"))


def test_predict_with_extra_column(fitted_model, cohort):
    X, _ = cohort
    with pytest.raises(ValueError, match=r"Feature names unseen at fit time:\n- patient_name"):
        fitted_model.predict(X.assign(patient_name="x"))


def test_predict_with_renamed_column(fitted_model, cohort):
    X, _ = cohort
    with pytest.raises(ValueError, match=r"unseen at fit time:\n- CRP\n.*yet now missing:\n- crp"):
        fitted_model.predict(X.rename(columns={"crp": "CRP"}))


def test_predict_with_wrong_type_in_a_column(fitted_model, cohort):
    X, _ = cohort
    X = X.head(3).copy()
    X["sex"] = pd.to_datetime(["2020-01-01", "2020-01-02", "2020-01-03"])  # (numbers read as the categories "1", "2")
    with pytest.raises(ValueError, match=r"Column 'sex' is a categorical feature.*rows 0, 1, 2"):
        fitted_model.predict(X)


def test_predict_before_fit(cohort):
    X, _ = cohort
    for method in ("predict", "predict_proba"):
        with pytest.raises(NotFittedError, match="not fitted yet"):
            getattr(MultiTaskMLP(), method)(X)
    with pytest.raises(NotFittedError, match="not fitted yet"):
        MultiTaskMLP().evaluate(X, X)


def test_evaluate_with_unknown_outcome(fitted_model, cohort):
    X, Y = cohort
    with pytest.raises(ValueError, match=r"Y has columns \['death'\] that are not outcomes"):
        fitted_model.evaluate(X, Y.rename(columns={"diagnosis": "death"}))


def test_evaluate_with_unknown_class(fitted_model, cohort):
    X, Y = cohort
    Y = Y.copy()
    Y.loc[4, "subtype"] = "Z"
    with pytest.raises(ValueError, match=r"Outcome 'subtype' has labels outside its training classes.*row 4"):
        fitted_model.evaluate(X, Y)


def test_single_class_and_unlabelled_outcomes_name_the_outcome(cohort):
    X, Y = cohort
    with pytest.raises(ValueError, match="Outcome 'diagnosis' has only one class"):
        MultiTaskMLP(**FAST).fit(X, Y.assign(diagnosis=1))
    with pytest.raises(ValueError, match="Outcome 'prognosis' has no label at all"):
        MultiTaskMLP(**FAST).fit(X, Y.assign(prognosis=np.nan))


@pytest.mark.parametrize(
    "params, message",
    [
        ({"dropout": 1.0}, "'dropout' parameter"),
        ({"loss_weighting": "magic"}, "'loss_weighting' parameter"),
        ({"batch_size": 0}, "'batch_size' parameter"),
    ],
)
def test_invalid_parameters(cohort, params, message):
    X, Y = cohort
    with pytest.raises(ValueError, match=message):
        MultiTaskMLP(**params).fit(X, Y)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_a_gpu_is_a_clear_error(cohort):
    X, Y = cohort
    with pytest.raises(ValueError, match="torch finds no CUDA device"):
        MultiTaskMLP(device="cuda", **FAST).fit(X, Y)

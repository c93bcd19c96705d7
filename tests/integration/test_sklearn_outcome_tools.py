"""scikit-learn's tools work per outcome: 1-d fits, ``for_outcome`` views and outcome scorers."""

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from sklearn.base import is_classifier, is_regressor
from sklearn.calibration import (
    CalibratedClassifierCV,
    CalibrationDisplay,
    calibration_curve,
)
from sklearn.frozen import FrozenEstimator
from sklearn.inspection import permutation_importance
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import (
    RocCurveDisplay,
    get_scorer,
    log_loss,
    r2_score,
    roc_auc_score,
    roc_curve,
    root_mean_squared_error,
)
from sklearn.model_selection import (
    GridSearchCV,
    KFold,
    cross_val_predict,
    cross_val_score,
    cross_validate,
)
from sklearn.utils import get_tags

from clinical_mtl import MultiTaskMLP, mean_outcome_scorer, outcome_scorer
from clinical_mtl.data.persistence import load_model, save_model
from clinical_mtl.datasets import make_synthetic_cohort

matplotlib.use("Agg")

SMALL = {"hidden_layer_sizes": (8,), "max_epochs": 10, "ensemble_size": 1, "random_state": 0}
CV = KFold(3, shuffle=True, random_state=0)


@pytest.fixture(scope="module")
def data():
    return make_synthetic_cohort(300, random_state=0)


@pytest.fixture(scope="module")
def diagnosis(data):
    """The rows labelled for the binary outcome, and their labels (a Series)."""
    X, Y = data
    labelled = Y["diagnosis"].notna().to_numpy()
    return X[labelled], Y["diagnosis"][labelled]


@pytest.fixture(scope="module")
def one_outcome(diagnosis):
    """A fit on the binary outcome alone, given as 1-d labels."""
    return MultiTaskMLP(**SMALL).fit(*diagnosis)


@pytest.fixture(scope="module")
def table(diagnosis):
    """The same labels as a one-column label table: the same network, the dict outputs of a table fit."""
    X, y = diagnosis
    return MultiTaskMLP(**SMALL).fit(X, y.to_frame())


@pytest.fixture(scope="module")
def multi(data):
    return MultiTaskMLP(**SMALL).fit(*data)


@pytest.fixture(scope="module")
def binary_estimators(one_outcome, table, multi):
    """Each scikit-learn face of the binary outcome, beside its probabilities as a table fit gives them."""
    return [
        (one_outcome, lambda X: table.predict_proba(X)["diagnosis"]),
        (multi.for_outcome("diagnosis"), lambda X: multi.predict_proba(X)["diagnosis"]),
    ]


def _table_fit(X, y):
    return MultiTaskMLP(**SMALL).fit(X, y.to_frame())


def test_a_one_outcome_fit_answers_as_a_classifier_and_a_table_fit_as_before(data, diagnosis, one_outcome, table):
    X, y = diagnosis
    assert one_outcome.single_outcome_ == "diagnosis" and table.single_outcome_ is None
    assert is_classifier(one_outcome) and get_tags(one_outcome).estimator_type == "classifier"
    assert not is_classifier(table) and get_tags(table).estimator_type is None
    assert get_tags(MultiTaskMLP()).estimator_type is None  # nothing is known before fit
    proba, predicted = one_outcome.predict_proba(X), one_outcome.predict(X)
    assert isinstance(proba, np.ndarray) and proba.shape == (len(X), 2)
    assert isinstance(predicted, np.ndarray) and predicted.shape == (len(X),)
    np.testing.assert_array_equal(one_outcome.classes_, [0, 1])
    # The same network as the table fit: only the outputs' form differs.
    np.testing.assert_array_equal(proba, table.predict_proba(X)["diagnosis"])
    np.testing.assert_array_equal(predicted, table.predict(X)["diagnosis"].to_numpy())
    np.testing.assert_array_equal(predicted, one_outcome.classes_[proba.argmax(axis=1)])
    assert isinstance(table.classes_, dict) and isinstance(table.predict(X), pd.DataFrame)
    # score is the documented skill score, whatever the 1-d labels are called.
    assert one_outcome.score(X, y) == table.score(X, y.to_frame())
    assert one_outcome.score(X, y.to_numpy()) == one_outcome.score(X, y.rename("other")) == one_outcome.score(X, y)

    X_all, Y = data
    subtype = MultiTaskMLP(**SMALL).fit(X_all, Y["subtype"])  # NaN labels are no labels, as in a table
    assert subtype.predict_proba(X_all).shape == (len(X_all), 3)
    np.testing.assert_array_equal(subtype.classes_, ["A", "B", "C"])
    assert subtype.predict(X_all).shape == (len(X_all),)


def test_a_one_outcome_regression_fit_is_a_regressor_without_probabilities(data):
    X, Y = data
    labelled = Y["prognosis"].notna().to_numpy()
    model = MultiTaskMLP(**SMALL).fit(X[labelled], Y["prognosis"][labelled])
    assert is_regressor(model) and not is_classifier(model)
    assert not hasattr(model, "predict_proba") and not hasattr(model, "classes_")
    assert hasattr(MultiTaskMLP(), "predict_proba")  # unfitted, it may still become a classifier
    predicted = model.predict(X)
    assert isinstance(predicted, np.ndarray) and predicted.shape == (len(X),) and np.isfinite(predicted).all()


def test_cross_val_score_roc_auc_and_log_loss_are_the_per_fold_scores_of_fits_by_hand(diagnosis):
    X, y = diagnosis
    results = cross_validate(MultiTaskMLP(**SMALL), X, y, cv=CV, scoring=["roc_auc", "neg_log_loss"],
                             error_score="raise")
    auc, loss = [], []
    for train, test in CV.split(X):
        model = _table_fit(X.iloc[train], y.iloc[train])
        proba = model.predict_proba(X.iloc[test])["diagnosis"]
        auc.append(roc_auc_score(y.iloc[test], proba[:, 1]))
        loss.append(-log_loss(y.iloc[test], proba, labels=model.classes_["diagnosis"]))
    assert np.isfinite(results["test_roc_auc"]).all()
    np.testing.assert_allclose(results["test_roc_auc"], auc, rtol=1e-12)
    np.testing.assert_allclose(results["test_neg_log_loss"], loss, rtol=1e-12)
    assert len(set(np.round(auc, 6))) == 3  # three folds, three scores


def test_regression_cross_val_score_r2_and_rmse_are_the_per_fold_scores_of_fits_by_hand(data):
    X, Y = data
    labelled = Y["prognosis"].notna().to_numpy()
    X, y = X[labelled], Y["prognosis"][labelled]
    results = cross_validate(MultiTaskMLP(**SMALL), X, y, cv=CV, error_score="raise",
                             scoring=["r2", "neg_root_mean_squared_error"])
    r2, rmse = [], []
    for train, test in CV.split(X):
        predicted = _table_fit(X.iloc[train], y.iloc[train]).predict(X.iloc[test])["prognosis"]
        r2.append(r2_score(y.iloc[test], predicted))
        rmse.append(-root_mean_squared_error(y.iloc[test], predicted))
    np.testing.assert_allclose(results["test_r2"], r2, rtol=1e-12)
    np.testing.assert_allclose(results["test_neg_root_mean_squared_error"], rmse, rtol=1e-12)


def test_cross_val_predict_probabilities_are_those_of_fits_by_hand(diagnosis):
    X, y = diagnosis
    predicted = cross_val_predict(MultiTaskMLP(**SMALL), X, y, cv=CV, method="predict_proba")
    by_hand = np.empty((len(X), 2))
    for train, test in CV.split(X):
        by_hand[test] = _table_fit(X.iloc[train], y.iloc[train]).predict_proba(X.iloc[test])["diagnosis"]
    np.testing.assert_array_equal(predicted, by_hand)


def test_a_view_predicts_exactly_as_its_model(data, multi):
    X, Y = data
    proba, predicted = multi.predict_proba(X), multi.predict(X)
    for outcome, kind in multi.tasks_.items():
        view = multi.for_outcome(outcome)
        np.testing.assert_array_equal(view.predict(X), predicted[outcome].to_numpy())
        score = multi.score(X, Y[[outcome]])  # the model's skill score of this outcome alone
        assert view.score(X, Y[outcome].rename("other")) == view.score(X, Y[outcome].to_numpy()) == score
        assert view.n_features_in_ == multi.n_features_in_
        np.testing.assert_array_equal(view.feature_names_in_, X.columns)
        if kind == "regression":
            assert is_regressor(view) and not hasattr(view, "predict_proba") and not hasattr(view, "classes_")
            continue
        assert is_classifier(view) and get_tags(view).estimator_type == "classifier"
        np.testing.assert_array_equal(view.predict_proba(X), proba[outcome])
        np.testing.assert_array_equal(view.classes_, multi.classes_[outcome])


def test_a_survival_view_predicts_median_times_and_is_neither_classifier_nor_regressor():
    X, Y = make_synthetic_cohort(200, random_state=0, survival=True)
    model = MultiTaskMLP(**SMALL).fit(X, Y)
    view = model.for_outcome("death")
    medians = view.predict(X)
    np.testing.assert_array_equal(medians, model.predict(X)["death"].to_numpy())  # NaN where they are
    crossed = np.flatnonzero(np.isfinite(medians))[:5]
    assert len(crossed) == 5
    for i in crossed:  # the median time is where the patient's curve crosses one half
        curve = model.predict_survival_function(X.iloc[[i]], times=[medians[i]])["death"]
        assert curve[0, 0] == pytest.approx(0.5, abs=1e-6)
    assert view.__sklearn_tags__().target_tags.required  # scikit-learn's tools must pass it y
    assert not is_classifier(view) and not is_regressor(view) and not hasattr(view, "predict_proba")


def test_for_outcome_errors(data, multi):
    X, Y = data
    with pytest.raises(ValueError, match=r"^MultiTaskMLP has no outcome 'nope'; its outcomes are "
                                         r"\['diagnosis', 'subtype', 'prognosis'\]\.$"):
        multi.for_outcome("nope")
    with pytest.raises(TypeError, match="read-only view of a fitted MultiTaskMLP .* refit the MultiTaskMLP"):
        multi.for_outcome("diagnosis").fit(X, Y["diagnosis"])


def test_permutation_importance_roc_auc_of_a_one_outcome_fit_and_of_a_view(diagnosis, binary_estimators):
    X, y = diagnosis
    for model, proba in binary_estimators:
        result = permutation_importance(model, X, y, scoring="roc_auc", n_repeats=3, random_state=0)
        # The same permutations, scored by hand on the probabilities of the table fit's dict.
        by_hand = permutation_importance(model, X, y, n_repeats=3, random_state=0,
                                         scoring=lambda _, X, y, proba=proba: roc_auc_score(y, proba(X)[:, 1]))
        np.testing.assert_array_equal(result.importances, by_hand.importances)
        assert np.isfinite(result.importances).all() and np.abs(result.importances_mean).max() > 0


def test_roc_curve_and_calibration_displays_show_the_models_probabilities(diagnosis, binary_estimators):
    X, y = diagnosis
    for model, proba in binary_estimators:
        positive = proba(X)[:, 1]
        roc = RocCurveDisplay.from_estimator(model, X, y)
        fpr, tpr, _ = roc_curve(y, positive)
        np.testing.assert_array_equal(roc.fpr, fpr)
        np.testing.assert_array_equal(roc.tpr, tpr)
        assert roc.roc_auc == pytest.approx(roc_auc_score(y, positive), rel=1e-12)
        calibration = CalibrationDisplay.from_estimator(model, X, y, n_bins=5)
        prob_true, prob_pred = calibration_curve(y, positive, n_bins=5)
        np.testing.assert_array_equal(calibration.prob_true, prob_true)
        np.testing.assert_array_equal(calibration.prob_pred, prob_pred)
    plt.close("all")


def test_calibrated_classifier_of_a_frozen_model_is_isotonic_regression_of_its_probabilities(
    diagnosis, binary_estimators
):
    X, y = diagnosis
    for model, proba in binary_estimators:
        calibrated = CalibratedClassifierCV(FrozenEstimator(model), method="isotonic").fit(X, y)
        positive = proba(X)[:, 1]
        by_hand = IsotonicRegression(out_of_bounds="clip").fit(positive, y == 1).predict(positive)
        recalibrated = calibrated.predict_proba(X)
        np.testing.assert_allclose(recalibrated[:, 1], by_hand, rtol=1e-12)
        np.testing.assert_allclose(recalibrated.sum(axis=1), 1.0, rtol=1e-12)
        np.testing.assert_array_equal(calibrated.classes_, [0, 1])
        assert not np.allclose(recalibrated[:, 1], positive)  # it did recalibrate


def _auc_by_hand(model, X, Y):
    labelled = Y["diagnosis"].notna().to_numpy()
    return roc_auc_score(Y["diagnosis"][labelled], model.predict_proba(X)["diagnosis"][labelled, 1])


def _r2_by_hand(model, X, Y):
    labelled = Y["prognosis"].notna().to_numpy()
    return r2_score(Y["prognosis"][labelled], model.predict(X)["prognosis"][labelled])


def test_grid_search_with_outcome_scorers_picks_what_a_loop_of_fits_by_hand_picks(data):
    X, Y = data
    cv = KFold(2, shuffle=True, random_state=0)
    grid = [{"learning_rate": 1e-4}, {"learning_rate": 3e-2}]
    scoring = {"auc": outcome_scorer("diagnosis", "roc_auc"),
               "mean": mean_outcome_scorer({"diagnosis": "roc_auc", "prognosis": "r2"})}
    search = GridSearchCV(MultiTaskMLP(**SMALL), {"learning_rate": [1e-4, 3e-2]}, cv=cv, scoring=scoring,
                          refit="auc", error_score="raise").fit(X, Y)
    auc, mean = np.zeros((2, 2)), np.zeros((2, 2))
    for i, params in enumerate(grid):
        for j, (train, test) in enumerate(cv.split(X)):
            model = MultiTaskMLP(**SMALL, **params).fit(X.iloc[train], Y.iloc[train])
            auc[i, j] = _auc_by_hand(model, X.iloc[test], Y.iloc[test])
            mean[i, j] = (auc[i, j] + _r2_by_hand(model, X.iloc[test], Y.iloc[test])) / 2
    assert abs(auc[0].mean() - auc[1].mean()) > 1e-3  # the parameter matters
    np.testing.assert_allclose(search.cv_results_["mean_test_auc"], auc.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(search.cv_results_["mean_test_mean"], mean.mean(axis=1), rtol=1e-12)
    assert search.best_params_ == grid[int(np.argmax(auc.mean(axis=1)))]
    assert repr(scoring["auc"]) == "outcome_scorer('diagnosis', 'roc_auc')"


def test_outcome_scorer_takes_scorer_callables_and_checks_its_scoring(data, multi):
    X, Y = data
    scorer = outcome_scorer("subtype", get_scorer("neg_log_loss"))
    labelled = Y["subtype"].notna().to_numpy()
    by_hand = -log_loss(Y["subtype"][labelled], multi.predict_proba(X)["subtype"][labelled],
                        labels=multi.classes_["subtype"])
    assert scorer(multi, X, Y) == pytest.approx(by_hand, rel=1e-12)
    with pytest.raises(ValueError, match="not a valid scoring value"):
        outcome_scorer("diagnosis", "roc_aux")
    for not_a_mapping in ({}, "roc_auc", ["roc_auc"]):
        with pytest.raises(ValueError, match="takes a non-empty dict outcome -> scoring"):
            mean_outcome_scorer(not_a_mapping)


def test_a_probability_scorer_on_a_table_fit_is_a_clear_error_not_nan(data, multi):
    X, Y = data
    message = r"fitted on a label table .* clinical_mtl\.outcome_scorer\(outcome, scoring\) .*\.for_outcome"
    for name in ("roc_auc", "neg_log_loss", "average_precision", "neg_brier_score"):
        with pytest.raises(ValueError, match=message):
            get_scorer(name)(multi, X, Y)
    with pytest.raises(ValueError, match=message):
        cross_val_score(MultiTaskMLP(**SMALL), X, Y, cv=2, scoring="roc_auc", error_score="raise")
    with pytest.warns(UserWarning, match=message):  # scikit-learn's default error_score: NaN, and why
        assert np.isnan(cross_val_score(MultiTaskMLP(**SMALL), X, Y, cv=2, scoring="roc_auc")).all()
    assert isinstance(multi.predict_proba(X), dict)  # asked directly, the dict as ever


def test_a_saved_one_outcome_fit_loads_with_its_array_behaviour(diagnosis, one_outcome, tmp_path):
    X, _ = diagnosis
    loaded = load_model(save_model(one_outcome, tmp_path / "model"))
    assert loaded.single_outcome_ == "diagnosis" and is_classifier(loaded)
    np.testing.assert_array_equal(loaded.predict_proba(X), one_outcome.predict_proba(X))
    np.testing.assert_array_equal(loaded.predict(X), one_outcome.predict(X))
    np.testing.assert_array_equal(loaded.classes_, [0, 1])

"""MultiTaskMLP as a scikit-learn citizen."""

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, KFold, cross_validate
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils.estimator_checks import parametrize_with_checks

from clinical_mtl import MultiTaskMLP

# Checks that cannot apply, each with its reason (none at present). The checks fit on a 1-d y, and a model
# fitted on one outcome answers as a scikit-learn classifier or regressor (arrays, not the dict and
# DataFrame of a label table: those are tested in test_estimator.py and test_chunk_invariance.py).
EXPECTED_FAILED_CHECKS: dict[str, str] = {}


@parametrize_with_checks(
    [MultiTaskMLP(max_epochs=2, hidden_layer_sizes=(8,), random_state=0)],
    expected_failed_checks=lambda estimator: EXPECTED_FAILED_CHECKS,
)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


def test_expected_failures_do_fail():
    """Keep the list honest: every excluded check must really fail."""
    from sklearn.utils.estimator_checks import check_estimator

    results = check_estimator(
        MultiTaskMLP(max_epochs=2, hidden_layer_sizes=(8,), random_state=0), on_fail=None
    )
    failed = {result["check_name"] for result in results if result["status"] == "failed"}
    assert failed == set(EXPECTED_FAILED_CHECKS)


def test_get_set_params_and_clone():
    model = MultiTaskMLP(hidden_layer_sizes=(32, 16), loss_weighting={"a": 2.0})
    params = model.get_params()
    assert params["hidden_layer_sizes"] == (32, 16)
    assert params["loss_weighting"] == {"a": 2.0}
    model.set_params(dropout=0.3, learning_rate=0.01)
    copy = clone(model)
    assert copy.get_params() == model.get_params()
    assert copy.dropout == 0.3


def test_every_parameter_has_a_default():
    import inspect

    signature = inspect.signature(MultiTaskMLP.__init__)
    defaults = {name: p.default for name, p in signature.parameters.items() if name != "self"}
    assert all(value is not inspect.Parameter.empty for value in defaults.values())
    assert MultiTaskMLP().get_params() == defaults
    required = {"tasks", "hidden_layer_sizes", "dropout", "learning_rate", "weight_decay", "batch_size",
                "max_epochs", "early_stopping", "validation_fraction", "patience", "loss_weighting",
                "class_weight", "random_state", "device", "verbose"}
    assert required <= set(defaults)


def test_pipeline(cohort):
    X, Y = cohort
    pipeline = Pipeline([
        ("log_crp", FunctionTransformer(lambda frame: frame.assign(crp=np.log1p(frame["crp"])))),
        ("model", MultiTaskMLP(hidden_layer_sizes=(16,), max_epochs=10, random_state=0)),
    ]).fit(X, Y)
    predictions = pipeline.predict(X)
    assert predictions.columns.tolist() == ["diagnosis", "subtype", "prognosis"]
    assert np.isfinite(pipeline.score(X, Y))


def test_cross_validate_with_multi_outcome_labels(cohort):
    X, Y = cohort
    results = cross_validate(
        MultiTaskMLP(hidden_layer_sizes=(16,), max_epochs=10, random_state=0),
        X, Y, cv=KFold(3, shuffle=True, random_state=0), error_score="raise",
    )
    assert results["test_score"].shape == (3,)
    assert np.isfinite(results["test_score"]).all()


def test_grid_search(cohort):
    X, Y = cohort
    search = GridSearchCV(
        MultiTaskMLP(max_epochs=10, random_state=0),
        {"hidden_layer_sizes": [(8,), (16,)], "loss_weighting": ["equal", "uncertainty"]},
        cv=2, error_score="raise",
    ).fit(X, Y)
    assert search.best_params_["hidden_layer_sizes"] in [(8,), (16,)]
    assert isinstance(search.predict(X), pd.DataFrame)
    assert len(search.cv_results_["mean_test_score"]) == 4


SMALL = {"hidden_layer_sizes": (8,), "max_epochs": 10, "ensemble_size": 1, "random_state": 0}


def _score_by_hand(model, X, Y):
    """Mean over outcomes of R^2 or of the Brier skill score against the labels' own class
    frequencies, on each outcome's labelled rows."""
    from sklearn.metrics import r2_score

    proba, predicted = model.predict_proba(X), model.predict(X)
    scores = []
    for name, kind in model.tasks_.items():
        labelled = Y[name].notna().to_numpy()
        if kind == "regression":
            scores.append(r2_score(Y[name][labelled].astype(float), predicted[name][labelled]))
            continue
        one_hot = (Y[name][labelled].to_numpy()[:, None] == model.classes_[name][None, :]).astype(float)
        brier = np.mean(np.sum((proba[name][labelled] - one_hot) ** 2, axis=1))
        reference = np.mean(np.sum((one_hot.mean(axis=0) - one_hot) ** 2, axis=1))
        scores.append(1 - brier / reference)
    return float(np.mean(scores))


def test_pipeline_predicts_as_the_model_fitted_on_the_transformed_table(cohort):
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import StandardScaler

    X, Y = cohort
    X = X.select_dtypes("number")
    assert X.isna().any().all()
    pipeline = Pipeline([
        ("impute", SimpleImputer(strategy="median")),
        ("scale", StandardScaler()),
        ("model", MultiTaskMLP(**SMALL)),
    ]).fit(X, Y)
    imputer = SimpleImputer(strategy="median").fit(X)
    scaler = StandardScaler().fit(imputer.transform(X))
    transformed = scaler.transform(imputer.transform(X))
    by_hand = MultiTaskMLP(**SMALL).fit(transformed, Y)
    pd.testing.assert_frame_equal(pipeline.predict(X), by_hand.predict(transformed), check_exact=True)
    for name, proba in by_hand.predict_proba(transformed).items():
        np.testing.assert_array_equal(pipeline.predict_proba(X)[name], proba)
    assert pipeline.score(X, Y) == pytest.approx(_score_by_hand(by_hand, transformed, Y), rel=1e-12)
    # The steps did change what the model saw: fitted on the raw table it predicts otherwise.
    raw = MultiTaskMLP(**SMALL).fit(X, Y).predict(X)["prognosis"].to_numpy()
    assert not np.allclose(raw, by_hand.predict(transformed)["prognosis"].to_numpy())


def test_cross_validate_scores_are_the_per_fold_scores_of_fits_by_hand(cohort):
    X, Y = cohort
    cv = KFold(3, shuffle=True, random_state=0)
    results = cross_validate(MultiTaskMLP(**SMALL), X, Y, cv=cv, error_score="raise")
    by_hand = []
    for train, test in cv.split(X):
        model = MultiTaskMLP(**SMALL).fit(X.iloc[train], Y.iloc[train])
        by_hand.append(_score_by_hand(model, X.iloc[test], Y.iloc[test]))
    np.testing.assert_allclose(results["test_score"], by_hand, rtol=1e-12)
    assert len(set(np.round(by_hand, 6))) == 3  # three different folds, three different scores


def test_grid_search_picks_what_a_loop_of_fits_by_hand_picks(cohort):
    X, Y = cohort
    cv = KFold(2, shuffle=True, random_state=0)
    grid = [{"learning_rate": 1e-4}, {"learning_rate": 3e-2}]
    search = GridSearchCV(MultiTaskMLP(**SMALL), {"learning_rate": [1e-4, 3e-2]}, cv=cv,
                          error_score="raise").fit(X, Y)
    means = []
    for params in grid:
        scores = [
            _score_by_hand(MultiTaskMLP(**SMALL, **params).fit(X.iloc[train], Y.iloc[train]),
                           X.iloc[test], Y.iloc[test])
            for train, test in cv.split(X)
        ]
        means.append(np.mean(scores))
    assert abs(means[0] - means[1]) > 1e-3  # the parameter reaches the fit and matters
    np.testing.assert_allclose(search.cv_results_["mean_test_score"], means, rtol=1e-12)
    assert search.best_params_ == grid[int(np.argmax(means))]
    assert search.best_score_ == pytest.approx(max(means), rel=1e-12)
    refit = MultiTaskMLP(**SMALL, **search.best_params_).fit(X, Y)
    pd.testing.assert_frame_equal(search.predict(X), refit.predict(X), check_exact=True)

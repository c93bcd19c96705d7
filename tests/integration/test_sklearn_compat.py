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

# Checks that cannot apply to a multi-task estimator, each with its reason.
MULTI_OUTPUT_RETURN = (
    "predict_proba returns a dict outcome -> probabilities (one entry per outcome); "
    "the check subtracts or indexes the returned objects as arrays"
)
EXPECTED_FAILED_CHECKS = {
    "check_estimators_pickle": MULTI_OUTPUT_RETURN + " (pickling is tested in test_estimator.py)",
    "check_fit_idempotent": MULTI_OUTPUT_RETURN + " (idempotence is tested in test_estimator.py)",
    "check_methods_sample_order_invariance": (
        "predict returns a DataFrame with one column per outcome and predict_proba a dict, "
        "which the check indexes by row position (tested in test_estimator.py)"
    ),
    "check_methods_subset_invariance": (
        MULTI_OUTPUT_RETURN + " (batch invariance is tested bit for bit in test_chunk_invariance.py)"
    ),
}


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

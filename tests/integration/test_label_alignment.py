"""Labels belong to the right patient: pandas X and Y with different indexes are an error (issue 12, item 2)."""

from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.model_selection import cross_validate

from clinical_mtl import MultiTaskMLP
from clinical_mtl.datasets import load_pbc, make_synthetic_cohort
from clinical_mtl.evaluation.figures import reliability_diagrams
from clinical_mtl.evaluation.negative_transfer import single_task_comparison
from clinical_mtl.exceptions import InputDataError
from clinical_mtl.model.hooks import add_fit_listener, remove_fit_listener
from clinical_mtl.pipelines import load_pipeline, run_train
from clinical_mtl.reporting.model_card import build_model_card

FAST = {"hidden_layer_sizes": (8,), "max_epochs": 15, "ensemble_size": 1, "random_state": 0}
PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"
MISMATCH = r"Y's index differs from X's at position {}: Y must list the same patients in the same order as X"


@pytest.fixture(scope="module")
def patients():
    """120 synthetic patients with text ids (so that a leaked id would show in a message)."""
    X, Y = make_synthetic_cohort(120, random_state=1)
    ids = pd.Index([f"patient-{i:04d}" for i in range(len(X))], name="patient_id")
    return X.set_axis(ids), Y.set_axis(ids)


@pytest.fixture(scope="module")
def model(patients):
    X, Y = patients
    return MultiTaskMLP(**FAST).fit(X, Y)


def _shuffled(Y, seed=0):
    """``Y`` with its rows (index and labels together) in another order."""
    return Y.iloc[np.random.default_rng(seed).permutation(len(Y))]


def _first_difference(left, right) -> int:
    return next(i for i, (a, b) in enumerate(zip(left, right)) if a != b)


def _check_mismatch(call, position, ids):
    """``call()`` raises the mismatch error at ``position``, naming no patient id."""
    with pytest.raises(InputDataError, match=MISMATCH.format(position)) as info:
        call()
    assert not [i for i in ids if str(i) in str(info.value)], "the message names a patient id"


def test_fit_with_reordered_labels_names_the_first_differing_position(patients):
    X, Y = patients
    shuffled = _shuffled(Y)
    position = _first_difference(X.index, shuffled.index)
    _check_mismatch(lambda: MultiTaskMLP(**FAST).fit(X, shuffled), position, X.index)


def test_fit_with_other_patients_is_an_error(patients):
    X, Y = patients
    other = Y.rename(index={Y.index[7]: "someone-else"})
    _check_mismatch(lambda: MultiTaskMLP(**FAST).fit(X, other), 7, X.index)


def test_labels_with_a_missing_patient_id_are_an_error(patients):
    """A missing id (pd.NA) in Y's index is no patient's id: the mismatch error, not a TypeError."""
    X, Y = patients
    ids = list(X.index)
    ids[5] = pd.NA
    _check_mismatch(lambda: MultiTaskMLP(**FAST).fit(X, Y.set_axis(pd.Index(ids, dtype="string"))), 5, X.index)


def test_a_reordered_series_is_an_error_too(patients):
    X, Y = patients
    diagnosis = Y["diagnosis"].iloc[::-1]
    _check_mismatch(lambda: MultiTaskMLP(**FAST).fit(X, diagnosis), 0, X.index)


def test_reordering_the_labels_by_the_index_fits_as_the_original_order(patients, model):
    X, Y = patients
    realigned = MultiTaskMLP(**FAST).fit(X, _shuffled(Y).loc[X.index])
    pd.testing.assert_frame_equal(realigned.predict(X), model.predict(X))


def test_arrays_stay_positional(patients):
    X, Y = patients
    shuffled = _shuffled(Y)
    by_position = shuffled.set_axis(X.index)  # the labels each row gets when matched by position
    array_X = MultiTaskMLP(**FAST).fit(X.to_numpy(), shuffled)  # no index of X to compare with
    expected = MultiTaskMLP(**FAST).fit(X.to_numpy(), by_position.reset_index(drop=True))
    np.testing.assert_array_equal(array_X.predict(X.to_numpy()).to_numpy(), expected.predict(X.to_numpy()).to_numpy())
    assert array_X.score(X.to_numpy(), shuffled) == expected.score(X.to_numpy(), by_position)
    array_y = MultiTaskMLP(**FAST).fit(X, shuffled["prognosis"].to_numpy())
    expected = MultiTaskMLP(**FAST).fit(X, by_position["prognosis"])
    np.testing.assert_array_equal(array_y.predict(X), expected.predict(X))


def test_evaluate_and_score_check_the_index(patients, model):
    X, Y = patients
    shuffled = _shuffled(Y, seed=1)
    position = _first_difference(X.index, shuffled.index)
    for call in (
        lambda: model.score(X, shuffled),
        lambda: model.evaluate(X, shuffled),
        lambda: model.evaluate(X, shuffled, groups="smoking"),  # the position is X's, not a subgroup's
        lambda: model.evaluate(X, shuffled["diagnosis"]),
        lambda: reliability_diagrams(model, X, shuffled),
    ):
        _check_mismatch(call, position, X.index)
    pd.testing.assert_frame_equal(model.evaluate(X, _shuffled(Y).loc[X.index]), model.evaluate(X, Y))


def test_model_card_and_single_task_comparison_check_the_index(patients, model):
    X, Y = patients
    train, test = slice(0, 80), slice(80, None)
    args = (X.iloc[train], Y.iloc[train], X.iloc[test], _shuffled(Y.iloc[test]))
    position = _first_difference(X.index[test], args[3].index)
    _check_mismatch(lambda: single_task_comparison(model, *args, n_bootstrap=0), position, X.index)
    _check_mismatch(lambda: build_model_card(model, *args, single_task=False, n_bootstrap=0), position, X.index)
    shuffled_train = _shuffled(Y.iloc[train])
    _check_mismatch(
        lambda: single_task_comparison(MultiTaskMLP(**FAST), X.iloc[train], shuffled_train, X.iloc[test], Y.iloc[test]),
        _first_difference(X.index[train], shuffled_train.index), X.index,
    )


def test_scikit_learn_slices_still_match(patients):
    X, Y = patients
    scores = cross_validate(MultiTaskMLP(**FAST), X, Y, cv=2)
    assert np.isfinite(scores["test_score"]).all()


def test_training_pipeline_gives_each_patient_its_own_labels(tmp_path):
    """Rows shuffled, one rejected by the schema, and a duplicated row index in the file (two tables
    concatenated): the labels the model is fitted on are still each patient's own."""
    X, Y = load_pbc()
    table = X.join(Y).reset_index().sample(frac=1.0, random_state=0)
    table.loc[table.index[3], "age"] = -5.0  # outside the schema's range: rejected
    rejected_id = table["id"].iloc[3]
    table = pd.concat([table.iloc[:200], table.iloc[200:]])  # keeps the shuffled index...
    table.index = np.r_[np.arange(200), np.arange(len(table) - 200)]  # ...and now repeats it
    table.to_parquet(tmp_path / "pbc.parquet")
    config = yaml.safe_load((PIPELINES / "pbc_train.yaml").read_text())
    config.update(schema=str((PIPELINES / config["schema"]).resolve()), data={"path": "pbc.parquet"},
                  model=FAST, tracking={"enabled": False}, outputs={}, model_card={"n_bootstrap": 0})
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(config))

    seen = []

    def listener(model, X_fit, y_fit):
        seen.append((X_fit, y_fit))
        return nullcontext()

    add_fit_listener(listener)
    try:
        result = run_train(load_pipeline(tmp_path / "train.yaml"))
    finally:
        remove_fit_listener(listener)
    assert result.n_rejected == 1
    (X_fit, y_fit), = seen
    assert rejected_id not in X_fit.index
    expected = Y.loc[X_fit.index]
    pd.testing.assert_frame_equal(y_fit, expected, check_dtype=False, check_names=False, check_index_type=False)
    pd.testing.assert_frame_equal(X_fit[["age", "bili"]], X.loc[X_fit.index, ["age", "bili"]], check_names=False,
                                  check_index_type=False)

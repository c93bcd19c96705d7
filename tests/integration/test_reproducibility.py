"""Same data and random_state, same predictions: in one process and across two."""

import random
import subprocess
import sys

import numpy as np
import pandas as pd
import torch

from clinical_mtl import MultiTaskMLP

SCRIPT = """
import sys
from clinical_mtl import MultiTaskMLP
from clinical_mtl.datasets import load_pbc
X, Y = load_pbc()
model = MultiTaskMLP(max_epochs=40, random_state=7).fit(X, Y)
model.predict(X).to_parquet(sys.argv[1])
"""


def _fit_predict(X, Y, seed):
    model = MultiTaskMLP(max_epochs=40, random_state=seed).fit(X, Y)
    return model.predict(X), model.predict_proba(X)


def test_same_seed_same_predictions_in_one_process(pbc):
    X, Y = pbc
    first_pred, first_proba = _fit_predict(X, Y, seed=7)
    second_pred, second_proba = _fit_predict(X, Y, seed=7)
    pd.testing.assert_frame_equal(first_pred, second_pred)
    np.testing.assert_array_equal(first_proba["cirrhosis"], second_proba["cirrhosis"])
    other_pred, _ = _fit_predict(X, Y, seed=8)
    assert not np.array_equal(other_pred["death"], first_pred["death"], equal_nan=True)


def test_same_seed_same_predictions_across_processes(tmp_path, pbc):
    paths = [tmp_path / "first.parquet", tmp_path / "second.parquet"]
    for path in paths:
        subprocess.run([sys.executable, "-c", SCRIPT, str(path)], check=True)
    first, second = (pd.read_parquet(path) for path in paths)
    pd.testing.assert_frame_equal(first, second, check_exact=True)
    in_process, _ = _fit_predict(*pbc, seed=7)
    np.testing.assert_array_equal(first["death"].to_numpy(), in_process["death"].to_numpy())


def _seed_global_generators(seed):
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def _global_random_states():
    """The states of torch's, numpy's and Python's global generators."""
    return torch.get_rng_state(), np.random.get_state(), random.getstate()


def _assert_same_states(before, after):
    torch_before, numpy_before, python_before = before
    torch_after, numpy_after, python_after = after
    numpy_same = np.array_equal(numpy_before[1], numpy_after[1]) and (
        (numpy_before[0], *numpy_before[2:]) == (numpy_after[0], *numpy_after[2:])
    )
    python_same = python_before == python_after
    assert torch.equal(torch_before, torch_after), "the global torch generator moved"
    assert numpy_same, "numpy's global generator moved"
    assert python_same, "Python's global random generator moved"


def _small_model(**params):
    """An ensemble with early stopping, a validation split, dropout and learned weights."""
    return MultiTaskMLP(**({
        "hidden_layer_sizes": (8,), "max_epochs": 6, "patience": 2, "ensemble_size": 2,
        "validation_fraction": 0.25, "dropout": 0.3, "loss_weighting": "uncertainty",
        "class_weight": "balanced", "random_state": 3,
    } | params))


def test_fit_leaves_the_global_random_generators_alone(cohort):
    X, Y = cohort
    _seed_global_generators(11)
    before = _global_random_states()
    model = _small_model().fit(X, Y)
    assert len(model.module_.members) == 2 and model.calibrators_  # held-out rows were used
    _assert_same_states(before, _global_random_states())


def test_predict_explain_and_evaluate_leave_the_global_random_generators_alone(fitted_model, cohort):
    X, Y = cohort
    _seed_global_generators(12)
    before = _global_random_states()
    fitted_model.predict(X)
    fitted_model.predict_proba(X)
    fitted_model.predict_interval(X)
    fitted_model.explain(X.head(5))
    fitted_model.explain(X.head(5), output="log_odds")
    fitted_model.score(X, Y)
    fitted_model.evaluate(X, Y, n_bootstrap=5, random_state=0)
    _assert_same_states(before, _global_random_states())


def test_fit_does_not_depend_on_the_global_random_generators(cohort):
    X, Y = cohort
    _seed_global_generators(0)
    first = _small_model().fit(X, Y)
    _seed_global_generators(1)
    torch.rand(5)  # and a generator moved from its seeded state
    second = _small_model().fit(X, Y)
    pd.testing.assert_frame_equal(first.predict(X), second.predict(X), check_exact=True)
    np.testing.assert_array_equal(first.predict_proba(X)["subtype"], second.predict_proba(X)["subtype"])

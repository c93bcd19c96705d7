"""Same data and random_state, same predictions: in one process and across two."""

import subprocess
import sys

import numpy as np
import pandas as pd

from clinical_mtl import MultiTaskMLP
from clinical_mtl.datasets import load_pbc

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
    assert not np.array_equal(other_pred["log_survival_days"], first_pred["log_survival_days"])


def test_same_seed_same_predictions_across_processes(tmp_path, pbc):
    paths = [tmp_path / "first.parquet", tmp_path / "second.parquet"]
    for path in paths:
        subprocess.run([sys.executable, "-c", SCRIPT, str(path)], check=True)
    first, second = (pd.read_parquet(path) for path in paths)
    pd.testing.assert_frame_equal(first, second, check_exact=True)
    in_process, _ = _fit_predict(*pbc, seed=7)
    np.testing.assert_array_equal(first["log_survival_days"].to_numpy(), in_process["log_survival_days"].to_numpy())

"""Shared fixtures: small deterministic cohorts and a fitted model."""

import os

import numpy as np
import pandas as pd
import pytest
import torch
from saved_models import save_schema_model

from clinical_mtl import MultiTaskMLP
from clinical_mtl.datasets import load_pbc, make_synthetic_cohort

# The tests' networks are tiny: one intra-op thread is several times faster than two fighting
# over two cores (and over parallel workers); subprocesses started by the tests inherit it.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def pbc():
    """The bundled PBC cohort as (X, Y)."""
    return load_pbc()


@pytest.fixture(scope="session")
def cohort():
    """240 synthetic patients: 10 numeric and 2 categorical features, 3 outcomes."""
    return make_synthetic_cohort(240, random_state=0)


@pytest.fixture(scope="session")
def fitted_model(cohort):
    """A small two-network ensemble fitted on ``cohort``; treat as read-only."""
    X, Y = cohort
    return MultiTaskMLP(hidden_layer_sizes=(16,), max_epochs=30, ensemble_size=2, random_state=0).fit(X, Y)


@pytest.fixture
def mixed_table():
    """Ten patients with numeric, boolean and categorical columns, some missing."""
    return pd.DataFrame(
        {
            "age": [61.0, 47.5, np.nan, 70.2, 55.0, 66.1, 38.9, 59.3, 72.4, 50.0],
            "ascites": pd.array([True, False, None, False, True, False, False, True, None, False],
                                dtype="boolean"),
            "sex": pd.Categorical(["f", "m", "f", None, "f", "m", "f", "f", "m", "f"]),
            "stage_text": ["early", "late", "early", "late", None, "early", "late", "early",
                           "late", "early"],
        },
        index=pd.Index([f"p{i}" for i in range(10)], name="patient_id"),
    )


@pytest.fixture(scope="session")
def small_schema_model(tmp_path_factory):
    """A small one-network model of the synthetic cohort, saved with its cohort schema: its folder."""
    return save_schema_model(tmp_path_factory.mktemp("models") / "mlp")

"""The end-to-end demonstration on the bundled PBC cohort."""

from __future__ import annotations

import pandas as pd
from sklearn.model_selection import train_test_split

from .datasets import load_pbc
from .estimator import MultiTaskMLP


def run_pbc_demo(test_size: float = 0.25, random_state: int = 0) -> tuple[MultiTaskMLP, pd.DataFrame]:
    """Fit ``MultiTaskMLP`` with its defaults on PBC and evaluate it on held-out patients.

    The split is stratified on the cirrhosis label (with "unlabelled" as a
    stratum of its own).

    Parameters
    ----------
    test_size : float, default=0.25
        Share of patients held out for evaluation.
    random_state : int, default=0
        Seeds the split and the model.

    Returns
    -------
    model : MultiTaskMLP
        Fitted on the training patients.
    metrics : DataFrame
        ``MultiTaskMLP.evaluate`` on the held-out patients.
    """
    X, Y = load_pbc()
    strata = Y["cirrhosis"].astype("string").fillna("unlabelled")
    X_train, X_test, Y_train, Y_test = train_test_split(
        X, Y, test_size=test_size, random_state=random_state, stratify=strata
    )
    model = MultiTaskMLP(random_state=random_state).fit(X_train, Y_train)
    return model, model.evaluate(X_test, Y_test)

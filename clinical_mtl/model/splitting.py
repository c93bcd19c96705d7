"""Drawing the early-stopping validation rows out of the training rows."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.model_selection import train_test_split

from ..exceptions import InputDataError


def holdout_split(
    targets: Sequence[np.ndarray],
    labelled: np.ndarray,
    is_classification: Sequence[bool],
    validation_fraction: float,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Split row positions into training and validation rows.

    The split is stratified on the most detailed key every stratum of which
    has at least two rows: first the class (or "unlabelled") of every
    classification task together with the labelled pattern of the regression
    tasks, then the first classification task alone, then the labelled pattern
    alone, and finally no stratification.

    Parameters
    ----------
    targets : sequence of ndarray of shape (n_samples,)
        Encoded targets per task (class indices for classification).
    labelled : ndarray of shape (n_samples, n_tasks), dtype bool
    is_classification : sequence of bool
        Per task.
    validation_fraction : float
        Share of rows held out, in (0, 1).
    seed : int

    Returns
    -------
    train_rows, valid_rows : ndarray of int
        Sorted row positions.
    """
    n_samples = len(labelled)
    n_valid = int(np.ceil(validation_fraction * n_samples))
    if n_valid < 1 or n_samples - n_valid < 1:
        raise InputDataError(
            f"Early stopping needs at least one training and one validation row, but "
            f"validation_fraction={validation_fraction} of n_samples={n_samples} gives "
            f"{n_valid} validation rows; use more rows or early_stopping=False."
        )
    rows = np.arange(n_samples)
    strata = None
    for key in _stratification_keys(targets, labelled, is_classification):
        if _can_stratify(key, n_valid, n_samples - n_valid):
            strata = key
            break
    train_rows, valid_rows = train_test_split(
        rows, test_size=n_valid, random_state=seed, stratify=strata
    )
    return np.sort(train_rows), np.sort(valid_rows)


def _stratification_keys(
    targets: Sequence[np.ndarray], labelled: np.ndarray, is_classification: Sequence[bool]
) -> list[np.ndarray]:
    coded = [
        np.where(labelled[:, t], targets[t], -1) if cls else labelled[:, t].astype(np.int64)
        for t, cls in enumerate(is_classification)
    ]
    pattern = _combine([labelled[:, t].astype(np.int64) for t in range(labelled.shape[1])])
    keys = [_combine(coded)]
    first_classification = next((t for t, cls in enumerate(is_classification) if cls), None)
    if first_classification is not None:
        keys.append(_combine([coded[first_classification]]))
    keys.append(pattern)
    return keys


def _combine(columns: list[np.ndarray]) -> np.ndarray:
    stacked = np.stack(columns, axis=1)
    return np.unique(stacked, axis=0, return_inverse=True)[1].ravel()


def _can_stratify(key: np.ndarray, n_valid: int, n_train: int) -> bool:
    counts = np.bincount(key)
    counts = counts[counts > 0]
    return len(counts) > 1 and counts.min() >= 2 and min(n_valid, n_train) >= len(counts)

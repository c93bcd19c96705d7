"""Which outcomes should share a trunk: the cosine similarity of their gradients.

Two tasks whose loss gradients on the shared trunk point the same way help each
other (a step for one is a step for the other); gradients at right angles are
indifferent; opposite gradients conflict, and sharing then costs one of them
(Yu et al. 2020; Fifty et al. 2021 use the same signal to group tasks). During
``fit`` every ``RELATEDNESS_EVERY`` epochs each network measures, on a fixed
sample of at most ``RELATEDNESS_ROWS`` training rows, the cosine between every
pair of task gradients over all trunk parameters, with dropout off. The
measurements are kept in ``history_`` as ``grad_cosine/<a>/<b>`` and read
here into a table and plain words.

The reading uses the measurements up to each network's best epoch (all of
them without early stopping): as training converges, the task gradients on
the shared layers must cancel (their sum goes to zero), so late measurements
look like conflict whatever the tasks. Cosines are noisy on small cohorts:
read them over the ensemble's networks, next to the single-task comparison.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import combinations

import numpy as np
import pandas as pd
import torch
from torch import Tensor

RELATEDNESS_EVERY = 10
"""Epochs between two measurements (the first epoch is always measured)."""
RELATEDNESS_ROWS = 512
"""Training rows the gradients are measured on: one forward and one backward pass per
outcome on at most this many rows every ``RELATEDNESS_EVERY`` epochs. Measured against
the time of the training epochs of a default fit (one thread): 0.95% on PBC (26
measurements, 246 epochs), 0.13% on a 5,000-patient synthetic cohort."""
ALIGNED, CONFLICTING = 0.1, -0.1
"""Mean cosines above ``ALIGNED`` read as "pull the same way", below
``CONFLICTING`` as "conflict"; in between, "largely independent"."""
PREFIX = "grad_cosine/"
TRAIN_LOSS = "train_loss/"


def cosine_key(first: str, second: str) -> str:
    """The history key of a pair of outcomes."""
    return f"{PREFIX}{first}/{second}"


def gradient_cosines(losses: Sequence[Tensor | None], shared: Sequence[Tensor],
                     names: Sequence[str]) -> dict[str, float]:
    """Cosine similarity of every pair of task gradients on ``shared``.

    Parameters
    ----------
    losses : sequence of Tensor or None
        Each task's loss on the measured rows (None where it has no label there).
    shared : sequence of Tensor
        The trunk's parameters.
    names : sequence of str
        Task names, in the order of ``losses``.

    Returns
    -------
    dict of str to float
        ``cosine_key(a, b)`` -> cosine, for every pair of tasks with a loss.
    """
    gradients = {}
    for name, loss in zip(names, losses):
        if loss is not None:
            parts = torch.autograd.grad(loss, shared, retain_graph=True)
            gradients[name] = torch.cat([part.reshape(-1) for part in parts])
    return {
        cosine_key(a, b): float(torch.nn.functional.cosine_similarity(gradients[a], gradients[b], dim=0))
        for a, b in combinations(names, 2) if a in gradients and b in gradients
    }


def relatedness_table(history: Sequence[dict]) -> pd.DataFrame:
    """Summarise the ``grad_cosine`` measurements of a ``history_``.

    Parameters
    ----------
    history : list of dict
        A fitted model's ``history_``.

    Returns
    -------
    DataFrame
        One row per pair of outcomes (columns ``outcome``, ``other``): the mean
        cosine over every measurement of every network up to its best epoch,
        the means of the first and last of those epochs, the share of measurements that conflict (cosine < 0),
        the number of measurements and ``reading`` ("aligned", "independent"
        or "conflicting"), read from the unrounded mean; means and shares are
        rounded to 3 decimals. Empty for a single outcome or a model without a
        trunk.

    Examples
    --------
    >>> history = [{"member": 0, "epoch": 1, "grad_cosine/a/b": 0.5},
    ...            {"member": 0, "epoch": 2},
    ...            {"member": 0, "epoch": 11, "grad_cosine/a/b": 0.3}]
    >>> relatedness_table(history)[["outcome", "other", "mean_cosine", "reading"]]
      outcome other  mean_cosine  reading
    0       a     b          0.4  aligned
    """
    frame = _up_to_best_epochs(pd.DataFrame(list(history)))
    columns = [column for column in frame.columns if column.startswith(PREFIX)]
    pairs = _outcome_pairs(frame.columns)
    rows = []
    for column in columns:
        first, second = pairs.get(column) or column[len(PREFIX):].split("/", 1)
        measured = frame[["epoch", column]].dropna()
        by_epoch = measured.groupby("epoch")[column].mean()
        mean = float(measured[column].mean())
        rows.append({
            "outcome": first, "other": second, "mean_cosine": round(mean, 3),
            "first_epochs": round(float(by_epoch.iloc[0]), 3), "last_epochs": round(float(by_epoch.iloc[-1]), 3),
            "conflicting_share": round(float((measured[column] < 0).mean()), 3),
            "n_measurements": len(measured), "reading": reading(mean),
        })
    return pd.DataFrame(rows, columns=["outcome", "other", "mean_cosine", "first_epochs", "last_epochs",
                                       "conflicting_share", "n_measurements", "reading"])


def describe_relatedness(table: pd.DataFrame) -> list[str]:
    """Plain-words reading of ``relatedness_table``, one sentence per pair.

    Examples
    --------
    >>> table = pd.DataFrame({"outcome": ["death"], "other": ["cirrhosis"], "mean_cosine": [0.31],
    ...                       "conflicting_share": [0.1], "reading": ["aligned"]})
    >>> describe_relatedness(table)
    ['death and cirrhosis pull the shared layers the same way (mean gradient cosine 0.31; opposed in 10% of measurements).']
    """
    phrases = {
        "aligned": "pull the shared layers the same way",
        "independent": "are largely independent in the shared layers",
        "conflicting": "conflict in the shared layers",
    }
    return [
        f"{row.outcome} and {row.other} {phrases[row.reading]} (mean gradient cosine {row.mean_cosine:.2f}; "
        f"opposed in {row.conflicting_share:.0%} of measurements)."
        for row in table.itertuples()
    ]


def _outcome_pairs(keys) -> dict[str, tuple[str, str]]:
    """``cosine_key(a, b)`` -> ``(a, b)`` for every pair of the outcomes named by the
    history's ``train_loss/<outcome>`` keys: outcome names may hold "/", so a key
    is read by the names, not split at a "/" (a history without them is)."""
    names = [key[len(TRAIN_LOSS):] for key in keys if key.startswith(TRAIN_LOSS)]
    return {cosine_key(a, b): (a, b) for a, b in combinations(names, 2)}


def _up_to_best_epochs(frame: pd.DataFrame) -> pd.DataFrame:
    """The records of each network up to its best (lowest validation loss) epoch."""
    if frame.empty or "valid_loss" not in frame or frame["valid_loss"].isna().all():
        return frame
    best = frame.loc[frame.groupby("member")["valid_loss"].idxmin(), ["member", "epoch"]]
    limits = frame["member"].map(dict(zip(best["member"], best["epoch"])))
    return frame[frame["epoch"] <= limits]


def reading(mean: float) -> str:
    """"aligned", "independent" or "conflicting", by ``ALIGNED`` and ``CONFLICTING``."""
    if math.isnan(mean):
        return "independent"
    return "aligned" if mean > ALIGNED else "conflicting" if mean < CONFLICTING else "independent"


def measurement_rows(n_rows: int, seed: int) -> np.ndarray:
    """The fixed sample of training rows the gradients are measured on."""
    order = np.random.default_rng(seed).permutation(n_rows)
    return np.sort(order[:RELATEDNESS_ROWS])

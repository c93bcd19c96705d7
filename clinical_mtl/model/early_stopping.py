"""Early stopping per outcome (``early_stopping="per_outcome"``).

Joint early stopping watches one validation objective, the weighted sum of
the outcomes' losses, and keeps one epoch's weights for every outcome, so an
outcome that overfits early is served the weights of an epoch past its best
(or one still learning those of an epoch before its best). Here training
stops as with joint early stopping, and each outcome with at least
``MIN_VALIDATION_LABELS`` labelled validation rows keeps the weights of its
own best epoch among those trained; an outcome with fewer keeps the joint
objective's, since a loss over a dozen rows picks a noisy epoch (with 20% of
every outcome's labels, watching each alone lost to joint stopping in the
toolbox benchmark).

Training on until every watched outcome had stopped improving ranked no
better (mean rank 2.83, against 2.78 for stopping with the joint objective,
among five variants on the comparison's selection folds: seed 1, six
cohorts, both label scenarios) and trained up to 3.3 times as many epochs
(224 against 68 on ``nwtco``), so training stops with the joint objective.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from torch import Tensor

PER_OUTCOME = "per_outcome"
MIN_VALIDATION_LABELS = 30


class OutcomeStopping:
    """Early stopping per outcome: each watched outcome's lowest validation loss, its epoch and the weights then.

    Each watched outcome keeps the weights of its own best epoch among those
    trained (training stops with the joint objective: ``keeps_training``).
    Outcomes with fewer than ``min_labels`` labelled validation rows are not
    watched: they keep the joint objective's best weights.

    Parameters
    ----------
    labelled : sequence of int
        Per outcome, its labelled validation rows.
    min_labels : int, default=MIN_VALIDATION_LABELS

    Examples
    --------
    >>> stopping = OutcomeStopping([40, 40])
    >>> for epoch, losses in enumerate([(0.9, 0.5), (0.8, 0.6), (0.7, 0.7)], start=1):
    ...     stopping.update(epoch, losses, lambda: {"epoch": epoch})
    >>> stopping.epochs
    [3, 1]
    """

    def __init__(self, labelled: Sequence[int], min_labels: int = MIN_VALIDATION_LABELS) -> None:
        self.watched = [int(n) >= min_labels for n in labelled]
        self.losses = [math.inf] * len(self.watched)
        self.epochs = [0] * len(self.watched)
        self.states: list[dict | None] = [None] * len(self.watched)

    @classmethod
    def of_validation_rows(cls, weights: Tensor) -> OutcomeStopping:
        """Watching the outcomes of validation rows with row weights ``weights`` (n, n_tasks; 0: unlabelled)."""
        return cls((weights > 0).sum(dim=0).tolist())

    def update(self, epoch: int, losses: Sequence[float | None], snapshot: Callable[[], dict]) -> None:
        """Record ``epoch``'s validation losses (None: no label); ``snapshot()`` is taken once if a watched
        outcome improved."""
        state = None
        for t, (loss, watched) in enumerate(zip(losses, self.watched)):
            if watched and loss is not None and loss < self.losses[t]:
                state = snapshot() if state is None else state
                self.losses[t], self.epochs[t], self.states[t] = loss, epoch, state


def keeps_training(epoch: int, best_epoch: int, patience: int) -> bool:
    """Whether a network trains on after ``epoch``: while the joint objective's best epoch (0: none yet)
    is under ``patience`` epochs old, with joint or per-outcome early stopping alike.

    Examples
    --------
    >>> keeps_training(epoch=5, best_epoch=2, patience=3), keeps_training(epoch=4, best_epoch=2, patience=3)
    (False, True)
    """
    return epoch - best_epoch < patience


def kept_other_epochs(outcome_epochs, best_epochs) -> bool:
    """Whether any outcome keeps the weights of another epoch than its network's best: ``outcome_epochs``
    (n_networks, n_outcomes) or None (every outcome kept its network's), ``best_epochs`` (n_networks,).

    Examples
    --------
    >>> kept_other_epochs([[3, 3], [5, 2]], [3, 5]), kept_other_epochs(None, [3, 5])
    (True, False)
    """
    return outcome_epochs is not None and bool((np.asarray(outcome_epochs) != np.asarray(best_epochs)[:, None]).any())

"""Early stopping per outcome (``early_stopping="per_outcome"``).

Joint early stopping watches one validation objective, the weighted sum of
the outcomes' losses, so an outcome that overfits in a few epochs stops one
that still learns (on PBC, a member stopped at epoch 2 with the diagnosis
still improving until epoch 22). Here each outcome with at least
``MIN_VALIDATION_LABELS`` labelled validation rows is watched on its own; an
outcome with fewer follows the joint objective, since a loss over a dozen
rows picks a noisy epoch (with 20% of every outcome's labels, watching each
alone lost to joint stopping in the toolbox benchmark).
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

    Training goes on while any watched outcome has improved within the
    patience, and each keeps the weights of its own best epoch, so an outcome
    that overfits early does not stop one that still learns (nor the
    reverse). Outcomes with fewer than ``min_labels`` labelled validation rows
    are not watched: they keep the joint objective's best weights.

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
    >>> stopping.epochs, stopping.improving(epoch=4, patience=2), stopping.improving(epoch=5, patience=2)
    ([3, 1], True, False)
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

    @property
    def tracked(self) -> bool:
        """Whether any watched outcome has had a validation loss."""
        return any(state is not None for state in self.states)

    @property
    def follows_joint(self) -> bool:
        """Whether some outcome is not watched, so keeps the joint objective's best weights."""
        return not all(self.watched)

    def improving(self, epoch: int, patience: int) -> bool:
        """Whether any outcome improved within the last ``patience`` epochs."""
        return any(epoch - best < patience for best, state in zip(self.epochs, self.states) if state is not None)


def keeps_training(epoch: int, best_epoch: int, patience: int, outcomes: OutcomeStopping | None) -> bool:
    """Whether a network trains on after ``epoch``: while the joint objective's best epoch (0: none yet)
    is under ``patience`` epochs old; with per-outcome stopping, while any watched outcome still improves
    or, if some outcome follows the joint objective, that objective does.

    Examples
    --------
    >>> keeps_training(epoch=5, best_epoch=2, patience=3, outcomes=None)
    False
    """
    joint = epoch - best_epoch < patience
    if outcomes is not None and outcomes.tracked:
        return outcomes.improving(epoch, patience) or (outcomes.follows_joint and joint)
    return joint


def kept_other_epochs(outcome_epochs, best_epochs) -> bool:
    """Whether any outcome keeps the weights of another epoch than its network's best: ``outcome_epochs``
    (n_networks, n_outcomes) or None (every outcome kept its network's), ``best_epochs`` (n_networks,).

    Examples
    --------
    >>> kept_other_epochs([[3, 3], [5, 2]], [3, 5]), kept_other_epochs(None, [3, 5])
    (True, False)
    """
    return outcome_epochs is not None and bool((np.asarray(outcome_epochs) != np.asarray(best_epochs)[:, None]).any())

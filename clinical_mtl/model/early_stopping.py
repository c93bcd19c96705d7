"""Early stopping per outcome (``early_stopping="per_outcome"``).

Joint early stopping watches one validation objective, the weighted sum of
the outcomes' losses, so an outcome that overfits in a few epochs stops one
that still learns (on PBC, a member stopped at epoch 2 with the diagnosis
still improving until epoch 22). Here each outcome is watched on its own.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

PER_OUTCOME = "per_outcome"


class OutcomeStopping:
    """Early stopping per outcome: each outcome's lowest validation loss, its epoch and the weights then.

    Training goes on while any outcome has improved within the patience, and
    each outcome keeps the weights of its own best epoch, so an outcome that
    overfits early does not stop one that still learns (nor the reverse).

    Examples
    --------
    >>> stopping = OutcomeStopping(2)
    >>> for epoch, losses in enumerate([(0.9, 0.5), (0.8, 0.6), (0.7, 0.7)], start=1):
    ...     stopping.update(epoch, losses, lambda: {"epoch": epoch})
    >>> stopping.epochs, stopping.improving(epoch=4, patience=2), stopping.improving(epoch=5, patience=2)
    ([3, 1], True, False)
    """

    def __init__(self, n_tasks: int) -> None:
        self.losses = [math.inf] * n_tasks
        self.epochs = [0] * n_tasks
        self.states: list[dict | None] = [None] * n_tasks

    def update(self, epoch: int, losses: Sequence[float | None], snapshot: Callable[[], dict]) -> None:
        """Record ``epoch``'s validation losses (None: no label); ``snapshot()`` is taken once if any improved."""
        state = None
        for t, loss in enumerate(losses):
            if loss is not None and loss < self.losses[t]:
                state = snapshot() if state is None else state
                self.losses[t], self.epochs[t], self.states[t] = loss, epoch, state

    @property
    def tracked(self) -> bool:
        """Whether any outcome has had a validation loss."""
        return any(state is not None for state in self.states)

    def improving(self, epoch: int, patience: int) -> bool:
        """Whether any outcome improved within the last ``patience`` epochs."""
        return any(epoch - best < patience for best, state in zip(self.epochs, self.states) if state is not None)


def keeps_training(epoch: int, best_epoch: int, patience: int, outcomes: OutcomeStopping | None) -> bool:
    """Whether a network trains on after ``epoch``: while the joint objective's best epoch (0: none yet)
    is under ``patience`` epochs old or, with per-outcome stopping, while any outcome still improves.

    Examples
    --------
    >>> keeps_training(epoch=5, best_epoch=2, patience=3, outcomes=None)
    False
    """
    if outcomes is not None and outcomes.tracked:
        return outcomes.improving(epoch, patience)
    return epoch - best_epoch < patience

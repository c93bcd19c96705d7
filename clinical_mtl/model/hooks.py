"""Listeners told about every ``MultiTaskMLP.fit`` (how ``tracking.autolog`` and the
command line's training progress work).

A fit listener is a callable ``listener(model, X, y)`` returning a context
manager: it is entered before training starts and exited when ``fit``
returns or raises. A progress listener is a callable ``listener(model,
progress)`` called with a :class:`TrainingProgress` after every epoch of
every network, and once more when a network is done. The estimator knows
nothing else about its listeners.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass

FitListener = Callable[[object, object, object], AbstractContextManager]

_listeners: list[FitListener] = []


@dataclass(frozen=True)
class TrainingProgress:
    """Where the training of one network of an ensemble stands.

    Attributes
    ----------
    outcomes : tuple of str
        The outcomes the model learns.
    network, n_networks : int
        The network being trained (from 0) and the ensemble's size.
    epoch, max_epochs : int
        Epochs run so far by this network (from 1), and the most it may run.
    train_loss : float
        The last epoch's training loss.
    valid_loss, best_valid_loss : float or None
        The last epoch's validation objective and the best so far (None
        without early stopping).
    best_epoch : int
        The epoch of ``best_valid_loss`` (0 without early stopping).
    done : bool
        True once the network has stopped: ``epoch`` is then its last epoch.
    """

    outcomes: tuple[str, ...]
    network: int
    n_networks: int
    epoch: int
    max_epochs: int
    train_loss: float
    valid_loss: float | None
    best_valid_loss: float | None
    best_epoch: int
    done: bool = False


ProgressListener = Callable[[object, TrainingProgress], None]

_progress_listeners: list[ProgressListener] = []


def add_progress_listener(listener: ProgressListener) -> None:
    """Call ``listener(model, progress)`` during every subsequent fit (once, however often added)."""
    if listener not in _progress_listeners:
        _progress_listeners.append(listener)


def remove_progress_listener(listener: ProgressListener) -> None:
    """Stop calling ``listener``; no error if it was not registered."""
    if listener in _progress_listeners:
        _progress_listeners.remove(listener)


def has_progress_listeners() -> bool:
    """Whether any progress listener is registered (training skips the reports otherwise)."""
    return bool(_progress_listeners)


def notify_progress(model, progress: TrainingProgress) -> None:
    """Call every registered progress listener with ``progress``."""
    for listener in list(_progress_listeners):
        listener(model, progress)


def add_fit_listener(listener: FitListener) -> None:
    """Call ``listener`` around every subsequent fit (once, however often added)."""
    if listener not in _listeners:
        _listeners.append(listener)


def remove_fit_listener(listener: FitListener) -> None:
    """Stop calling ``listener``; no error if it was not registered."""
    if listener in _listeners:
        _listeners.remove(listener)


@contextmanager
def notify_fit(model, X, y):
    """Enter every registered listener's context around one fit."""
    with ExitStack() as stack:
        for listener in list(_listeners):
            stack.enter_context(listener(model, X, y))
        yield

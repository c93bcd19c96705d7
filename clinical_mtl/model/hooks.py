"""Listeners told about every ``MultiTaskMLP.fit`` (how ``tracking.autolog`` works).

A listener is a callable ``listener(model, X, y)`` returning a context
manager: it is entered before training starts and exited when ``fit``
returns or raises. The estimator knows nothing else about its listeners.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack, contextmanager

FitListener = Callable[[object, object, object], AbstractContextManager]

_listeners: list[FitListener] = []


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

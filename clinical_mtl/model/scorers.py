"""Scorers of one outcome, or of several, for scikit-learn's model selection.

A ``MultiTaskMLP`` fitted on a label table predicts a dict of probabilities,
which no scikit-learn scorer string can read (``scoring="roc_auc"`` on it
raises). These scorers score a fitted model the scikit-learn way, one
outcome at a time: through the outcome's :class:`~clinical_mtl.model.outcome_view.OutcomeView`,
on the rows labelled for it only (a NaN label is no label, as in ``fit``).

Examples
--------
>>> from sklearn.model_selection import GridSearchCV
>>> from clinical_mtl import MultiTaskMLP, mean_outcome_scorer, outcome_scorer
>>> search = GridSearchCV(
...     MultiTaskMLP(max_epochs=20),
...     {"learning_rate": [1e-3, 1e-2]},
...     scoring={"auc": outcome_scorer("diagnosis", "roc_auc"),
...              "mean": mean_outcome_scorer({"diagnosis": "roc_auc", "prognosis": "r2"})},
...     refit="auc",
... )
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
from sklearn.metrics import get_scorer
from sklearn.utils import _safe_indexing

from .labels import labelled_targets
from .outcome_view import outcome_labels, outcome_spec


def outcome_scorer(outcome: str, scoring: str | Callable) -> Callable:
    """A scorer of one outcome of a fitted ``MultiTaskMLP``.

    Parameters
    ----------
    outcome : str
        The outcome to score: a column of the label table.
    scoring : str or callable
        A scikit-learn scorer name (``"roc_auc"``, ``"neg_log_loss"``,
        ``"r2"``, ...; see ``sklearn.metrics.get_scorer_names``) or a scorer
        callable ``scorer(estimator, X, y)``, such as
        ``sklearn.metrics.make_scorer(metric)`` makes of a metric function.

    Returns
    -------
    callable
        ``scorer(model, X, Y)``: ``scoring`` applied to
        ``model.for_outcome(outcome)`` on the rows of ``X`` labelled for the
        outcome in ``Y`` (a label table with its column, or its labels alone)
        and their labels. Pass it as ``scoring`` to ``cross_val_score``,
        ``GridSearchCV`` or ``permutation_importance``.
    """
    return _OutcomeScorer(outcome, scoring)


def mean_outcome_scorer(scoring: Mapping[str, str | Callable]) -> Callable:
    """A scorer of several outcomes: the mean of their ``outcome_scorer`` scores.

    Parameters
    ----------
    scoring : dict of str to str or callable
        Outcome -> its scoring, as ``outcome_scorer`` takes it, e.g.
        ``{"diagnosis": "roc_auc", "prognosis": "r2"}``. The scores are
        averaged as they are: choose scorings on comparable scales.

    Returns
    -------
    callable
        ``scorer(model, X, Y)``, the unweighted mean of the outcomes' scores.
    """
    if not isinstance(scoring, Mapping) or not scoring:
        raise ValueError(f"mean_outcome_scorer takes a non-empty dict outcome -> scoring, got {scoring!r}.")
    return _MeanOutcomeScorer({outcome: _OutcomeScorer(outcome, each) for outcome, each in scoring.items()})


class _OutcomeScorer:
    def __init__(self, outcome: str, scoring: str | Callable):
        if not isinstance(scoring, str) and not callable(scoring):
            raise TypeError(f"scoring must be a scorer name or a callable, got {scoring!r}.")
        self.outcome, self.scoring = outcome, scoring
        self._scorer = get_scorer(scoring) if isinstance(scoring, str) else scoring

    def __call__(self, estimator, X, y) -> float:
        if not hasattr(estimator, "for_outcome"):
            raise TypeError(f"outcome_scorer scores a fitted MultiTaskMLP, got {type(estimator).__name__}.")
        view = estimator.for_outcome(self.outcome)
        spec = outcome_spec(estimator, self.outcome)
        labelled, y_true = labelled_targets(outcome_labels(estimator, self.outcome, X, y), spec)
        if spec.is_classification:
            y_true = view.classes_[y_true]  # class indices back to the labels, as classes_ spells them
        return float(self._scorer(view, _safe_indexing(X, np.flatnonzero(labelled)), y_true))

    def __repr__(self) -> str:
        return f"outcome_scorer({self.outcome!r}, {self.scoring!r})"


class _MeanOutcomeScorer:
    def __init__(self, scorers: dict[str, _OutcomeScorer]):
        self.scorers = scorers

    def __call__(self, estimator, X, y) -> float:
        return float(np.mean([scorer(estimator, X, y) for scorer in self.scorers.values()]))

    def __repr__(self) -> str:
        scoring = {outcome: scorer.scoring for outcome, scorer in self.scorers.items()}
        return f"mean_outcome_scorer({scoring!r})"

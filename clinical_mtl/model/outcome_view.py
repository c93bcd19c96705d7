"""One outcome of a ``MultiTaskMLP`` as a plain scikit-learn classifier or regressor.

scikit-learn's scorers, displays and meta-estimators speak to one target:
they read ``is_classifier`` from the estimator's tags, then ``classes_`` as an
array, and expect ``predict`` to give a 1-d array and ``predict_proba`` an
array of shape (n_samples, n_classes) (see
``sklearn.utils._response._get_response_values``). A ``MultiTaskMLP`` fitted
on a 1-d ``y`` answers that way itself (its ``single_outcome_``);
:class:`OutcomeView` makes one head of a model fitted on a label table answer
that way, reading the model through its public prediction core only: nothing
is copied or refitted, so the view predicts exactly as the model does.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.utils import ClassifierTags, RegressorTags, get_tags
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

from .features import as_frame
from .labels import as_label_frame
from .outputs import predicted_labels
from .survival import SURVIVAL, median_survival
from .tasks import REGRESSION, TaskSpec

CLASSIFIER, REGRESSOR = "classifier", "regressor"


def single_outcome_of(y, labels: pd.DataFrame) -> str | None:
    """``single_outcome_`` of a fit on ``y`` (read as ``labels``): its outcome if ``y`` is 1-d, else None."""
    return None if isinstance(y, pd.DataFrame) or np.ndim(y) != 1 else str(labels.columns[0])


def single_outcome(model) -> str | None:
    """The outcome of a model fitted on a 1-d ``y``; None for a label table, or before fit."""
    return getattr(model, "single_outcome_", None)


def outcome_spec(model, outcome: str) -> TaskSpec:
    """The ``TaskSpec`` of a fitted model's outcome.

    Raises
    ------
    ValueError
        If the model has no such outcome, listing those it has.
    """
    for spec in model.task_specs_:
        if spec.name == outcome:
            return spec
    raise ValueError(f"{type(model).__name__} has no outcome {outcome!r}; its outcomes are {list(model.tasks_)}.")


def point_prediction(spec: TaskSpec, output: np.ndarray) -> np.ndarray:
    """What ``predict`` gives for one outcome: the most probable class, the value, or the median time."""
    if spec.is_classification:
        return predicted_labels(spec, output)
    if spec.kind == SURVIVAL:
        return median_survival(output, spec.cut_points)[0]
    return output


def outcome_classes(spec: TaskSpec) -> np.ndarray:
    """``classes_`` of an estimator of one outcome; an AttributeError for other than classification."""
    if not spec.is_classification:
        raise AttributeError(f"Outcome {spec.name!r} is a {spec.kind} outcome: it has no classes_.")
    return np.asarray(spec.classes)


def with_estimator_type(tags, kind: str | None):
    """``tags`` of an estimator of one outcome of ``kind``: a classifier, a regressor, or neither.

    A survival outcome (or None, an outcome not known yet) is neither: its
    labels are follow-up times with events, which no scikit-learn scorer reads.
    """
    if kind == REGRESSION:
        tags.estimator_type, tags.regressor_tags = REGRESSOR, RegressorTags()
    elif kind not in (SURVIVAL, None):
        tags.estimator_type, tags.classifier_tags = CLASSIFIER, ClassifierTags()
    return tags


def outcome_labels(model, outcome: str, X, y) -> pd.DataFrame:
    """The labels of one outcome as a label table of it alone, aligned with ``X`` as ``score`` aligns them.

    Parameters
    ----------
    model : MultiTaskMLP
        A fitted model.
    outcome : str
    X : DataFrame or array-like of shape (n_samples, n_features)
    y : DataFrame, Series or array-like of shape (n_samples,)
        A label table with the outcome's columns (others are ignored), or
        the outcome's labels alone, whatever their name.

    Returns
    -------
    DataFrame
        The outcome's label columns, indexed like ``X``.
    """
    spec = outcome_spec(model, outcome)
    if isinstance(y, pd.DataFrame):
        missing = [column for column in spec.label_columns if column not in y.columns]
        if missing:
            raise ValueError(f"y has no column {missing} of outcome {outcome!r}; its columns are {list(y.columns)}.")
        y = y[list(spec.label_columns)]
    labels = as_label_frame(y, as_frame(X).index, match_index=isinstance(X, pd.DataFrame))
    return labels if isinstance(y, pd.DataFrame) else labels.set_axis([spec.name], axis=1)


def _is_classification(view) -> bool:
    return view._spec().is_classification


class OutcomeView(BaseEstimator):
    """One outcome of a fitted ``MultiTaskMLP``, as a read-only scikit-learn classifier or regressor.

    Made by ``MultiTaskMLP.for_outcome``. ``predict`` and ``predict_proba``
    give the model's own predictions of the outcome (``predict(X)[outcome]``
    and ``predict_proba(X)[outcome]``, bit for bit) as arrays, and the tags say
    "classifier" (binary and multi-class outcomes) or "regressor", so that
    every scorer, display and meta-estimator of scikit-learn works on it:
    ``roc_auc`` scoring, ``permutation_importance``, ``RocCurveDisplay``,
    ``CalibratedClassifierCV(FrozenEstimator(view))``. A survival outcome's
    view predicts median event-free times (NaN beyond the follow-up) and is
    neither.

    The view holds the model, not a copy: it cannot be fitted (refit the
    model and take a new view), and a clone of it views an unfitted model.

    Parameters
    ----------
    estimator : MultiTaskMLP
        A fitted model.
    outcome : str
        One of its outcomes, a key of ``estimator.tasks_``.

    Attributes
    ----------
    classes_ : ndarray
        The outcome's class labels, sorted (classification outcomes only).
    n_features_in_ : int
        Number of feature columns the model saw in fit.
    feature_names_in_ : ndarray of str
        Their names, when the model was fitted on a DataFrame.

    See Also
    --------
    clinical_mtl.model.scorers.outcome_scorer : Score one outcome of the model itself, in a search.
    """

    def __init__(self, estimator, outcome):
        self.estimator = estimator
        self.outcome = outcome

    def fit(self, X, y=None, **fit_params):
        """Refuse: a view is read-only.

        Raises
        ------
        TypeError
            Always.
        """
        raise TypeError(
            f"OutcomeView of outcome {self.outcome!r} is a read-only view of a fitted MultiTaskMLP and cannot "
            "be fitted; refit the MultiTaskMLP itself and take model.for_outcome(...) of it again."
        )

    def predict(self, X):
        """Predict the outcome.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_features)
            Raw features with the columns the model saw in fit.

        Returns
        -------
        ndarray of shape (n_samples,)
            The most probable class label (classification), the value in the
            outcome's units (regression) or the median event-free time
            (survival), as the model's ``predict`` gives them.
        """
        return point_prediction(*self._output(X))

    @available_if(_is_classification)
    def predict_proba(self, X):
        """Class probabilities of the outcome (classification outcomes only).

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_features)
            Raw features with the columns the model saw in fit.

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
            Columns in the order of ``classes_``, as the model's
            ``predict_proba(X)[outcome]``.
        """
        return self._output(X)[1]

    def score(self, X, y, sample_weight=None):
        """The model's skill score of the outcome on its labelled rows (see ``MultiTaskMLP.score``).

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_features)
            Raw features.
        y : Series, array-like of shape (n_samples,) or DataFrame
            The outcome's labels (NaN where unlabelled), or a label table
            with its column.
        sample_weight : None
            Not supported; must be None.

        Returns
        -------
        float
            Brier skill score (classification) or R^2 (regression).
        """
        return self.estimator.score(X, outcome_labels(self.estimator, self.outcome, X, y), sample_weight)

    def _spec(self) -> TaskSpec:
        check_is_fitted(self.estimator)
        return outcome_spec(self.estimator, self.outcome)

    @property
    def classes_(self) -> np.ndarray:
        return outcome_classes(self._spec())

    @property
    def n_features_in_(self) -> int:
        return self.estimator.n_features_in_

    @property
    def feature_names_in_(self) -> np.ndarray:
        return self.estimator.feature_names_in_

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self.estimator, "task_specs_")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags = get_tags(self.estimator).input_tags
        tags.target_tags.required = True
        return with_estimator_type(tags, getattr(self.estimator, "tasks_", {}).get(self.outcome))

    def _output(self, X) -> tuple[TaskSpec, np.ndarray]:
        """The outcome's spec, and the model's output of it on ``X`` (see ``outputs_from_inputs``)."""
        spec = self._spec()
        _, outputs = self.estimator.predict_outputs(X)
        return spec, outputs[self.estimator.task_specs_.index(spec)]

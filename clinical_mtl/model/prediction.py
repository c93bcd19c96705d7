"""The prediction core of ``MultiTaskMLP``: raw features in, every outcome's output out.

Scoring, explanations, evaluation and reports build on these public methods
(``task_specs_``, ``transform_inputs`` then ``outputs_from_inputs``), never on
the estimator's private members.
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import torch
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted, validate_data

from ..exceptions import InputDataError
from .conformal import DEFAULT_COVERAGE, check_coverage, conformal_quantile
from .features import as_frame, describe_rows
from .labels import align_labels, labelled_outcomes, labelled_targets
from .outcome_view import (
    OutcomeView,
    outcome_classes,
    outcome_labels,
    outcome_spec,
    point_prediction,
    single_outcome,
)
from .outputs import LOWER, UPPER, prediction_columns
from .survival import SURVIVAL, survival_at
from .tasks import REGRESSION, decode_outputs
from .training import resolve_device


def _has_probabilities(model) -> bool:
    """Whether ``predict_proba`` applies: not to a model fitted on one regression outcome."""
    single = single_outcome(model)
    return single is None or outcome_spec(model, single).is_classification


class PredictionCoreMixin:
    """Prediction from raw features, for a fitted ``MultiTaskMLP``.

    Reads the fitted ``task_specs_``, ``preprocessor_``, ``module_``,
    ``calibrators_``, ``conformal_scores_`` and ``interval_scales_`` and the
    ``device`` parameter.
    """

    def predict(self, X):
        """Predict every outcome.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_features)
            Raw features with the columns seen in fit.

        Returns
        -------
        DataFrame of shape (n_samples, n_outcomes) or ndarray of shape (n_samples,)
            Indexed like ``X``: the most probable class label of every
            classification outcome (by the recalibrated probabilities of
            ``predict_proba``), the predicted value, in its units, of every
            regression outcome, and the predicted median event-free time of
            every survival outcome: NaN where the predicted curve is still
            above 0.5 at the end of the training follow-up (the median lies
            beyond what the model can tell; see ``predict_survival_function``
            and the ``<outcome>_median_beyond_follow_up`` output column). For
            a model fitted on a 1-d ``y`` (``single_outcome_``), that
            outcome's column alone, as an array.
        """
        index, outputs = self.predict_outputs(X)
        columns = {spec.name: point_prediction(spec, output) for spec, output in zip(self.task_specs_, outputs)}
        single = single_outcome(self)
        return columns[single] if single is not None else pd.DataFrame(columns, index=index)

    def predict_survival_function(self, X, times=None):
        """Predicted survival curves of every survival outcome.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_features)
            Raw features with the columns seen in fit.
        times : array-like of float, default=None
            Non-negative times, in the outcomes' unit, at which to evaluate
            the curves. None gives each outcome's cut points (``task_specs_``:
            the ends of its follow-up intervals, at quantiles of the training
            event times, up to the last of them).

        Returns
        -------
        dict of str to ndarray of shape (n_samples, n_times)
            Survival outcome -> ``S(t)``, the probability of being event-free
            at each time: within [0, 1] and non-increasing in ``t``, linear
            between cut points and constant after the last one (the model
            does not extrapolate; see :mod:`clinical_mtl.model.survival`).

        Raises
        ------
        ValueError
            If the model has no survival outcome or ``times`` are not finite
            and non-negative.
        """
        check_is_fitted(self)
        specs = [spec for spec in self.task_specs_ if spec.kind == SURVIVAL]
        if not specs:
            raise ValueError(
                f"predict_survival_function needs a survival outcome; this model's outcomes are {self.tasks_}."
            )
        if times is not None:
            times = np.asarray(times, dtype=np.float64).ravel()
            if not np.all(np.isfinite(times) & (times >= 0)):
                raise ValueError("times must be finite and non-negative.")
        _, outputs = self.predict_outputs(X)
        by_name = {spec.name: output for spec, output in zip(self.task_specs_, outputs)}
        return {spec.name: survival_at(by_name[spec.name], spec.cut_points,
                                       spec.cut_points if times is None else times) for spec in specs}

    @available_if(_has_probabilities)
    def predict_proba(self, X):
        """Class probabilities of every classification outcome.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_features)
            Raw features with the columns seen in fit.

        Returns
        -------
        dict of str to ndarray of shape (n_samples, n_classes), or ndarray
            Classification outcome -> probabilities (float64, rows sum to 1),
            columns in the order of ``classes_[outcome]``: the average of the
            networks' probabilities, recalibrated by ``calibrators_[outcome]``
            where there is one (see the ``calibration`` parameter). For a
            model fitted on one classification outcome as a 1-d ``y``
            (``single_outcome_``), that outcome's array alone; a model fitted
            on one regression outcome has no ``predict_proba``.

        Raises
        ------
        ValueError
            If scikit-learn's scorers or displays ask a model fitted on a
            label table for one array of probabilities.
        """
        check_is_fitted(self)
        single = single_outcome(self)
        if single is None:
            _refuse_one_array_response(self, sys._getframe(1))
        _, outputs = self.predict_outputs(X)
        probabilities = {spec.name: output for spec, output in zip(self.task_specs_, outputs) if spec.is_classification}
        return probabilities[single] if single is not None else probabilities

    def for_outcome(self, outcome):
        """One outcome of the fitted model as a read-only scikit-learn classifier or regressor.

        Parameters
        ----------
        outcome : str
            A key of ``tasks_``.

        Returns
        -------
        OutcomeView
            Predicting the outcome exactly as this model does, with array
            outputs and the tags of a classifier or regressor, for scikit-learn's
            scorers, displays and meta-estimators (see
            :class:`~clinical_mtl.model.outcome_view.OutcomeView`).

        Raises
        ------
        ValueError
            If the model has no such outcome.
        """
        check_is_fitted(self)
        outcome_spec(self, outcome)
        return OutcomeView(self, outcome)

    @property
    def classes_(self):
        """Sorted class labels per classification outcome, or of the one outcome of a 1-d fit."""
        check_is_fitted(self)
        single = single_outcome(self)
        if single is not None:
            return outcome_classes(outcome_spec(self, single))
        return {spec.name: np.asarray(spec.classes) for spec in self.task_specs_ if spec.classes}

    def predict_interval(self, X, coverage=DEFAULT_COVERAGE):
        """Prediction intervals of every regression outcome (split-conformal).

        The interval is ``predict(X)[outcome] +- q * sigma(x)``, where ``q``
        is the finite-sample ``ceil((n + 1) * coverage) / n`` quantile of the
        ``n`` conformity scores of the outcome's labelled early-stopping rows,
        each row predicted only by the networks that held it out
        (``conformal_scores_``; see :mod:`clinical_mtl.model.conformal`).
        With ``interval_method="normalized"`` the scores are residuals divided
        by ``sigma(x)``, a model of the residuals' size fitted on the other
        half of those rows (``interval_scales_``), so the width follows the
        patient; otherwise ``sigma = 1`` and every patient gets the same
        width. For patients like the training cohort, about ``coverage`` of
        the intervals hold the true value. The width is infinite when there
        are too few scores for the coverage asked (``ceil((n + 1) * coverage)
        > n``).

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_features)
            Raw features with the columns seen in fit.
        coverage : float, default=0.9
            Share of patients whose interval should hold the true value, in
            (0, 1).

        Returns
        -------
        DataFrame of shape (n_samples, 2 * n_regression_outcomes)
            Indexed like ``X``; per regression outcome, ``<outcome>_lower``
            and ``<outcome>_upper`` in its units.

        Raises
        ------
        ValueError
            If ``coverage`` is not strictly between 0 and 1, if the model has
            no regression outcome, or if it was fitted with
            ``early_stopping=False`` (no held-out rows, so no residuals).
        """
        check_is_fitted(self)
        coverage = check_coverage(coverage)
        if not any(spec.kind == REGRESSION for spec in self.task_specs_):
            raise ValueError(
                f"predict_interval needs a regression outcome; this model's outcomes {self.tasks_} "
                "are all classification outcomes (use predict_proba)."
            )
        if not self.conformal_scores_:
            raise ValueError(
                "This model has no held-out residuals to calibrate intervals on: it was fitted with "
                "early_stopping=False. Refit with early stopping (the early-stopping rows, which "
                "no network trained on, give the residuals)."
            )
        index, inputs = self.transform_inputs(X)
        outputs = self.outputs_from_inputs(inputs, index)
        half_widths = self.interval_half_widths(coverage, inputs)
        return pd.DataFrame(prediction_columns(self, outputs, half_widths, (LOWER, UPPER)), index=index)

    # -- the core: what scoring, explanations, evaluation and reports build on ---------------

    def feature_frame(self, X) -> pd.DataFrame:
        """Check ``X`` against the fitted columns and name them as the model does inside.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_features)
            Raw features, with the columns seen in ``fit`` (by name for a
            DataFrame, by position for an array).

        Returns
        -------
        DataFrame
            ``X`` with the model's internal column names and ``X``'s index.
        """
        check_is_fitted(self)
        return self._feature_frame(X, reset=False)

    def transform_inputs(self, X, out: np.ndarray | None = None) -> tuple[pd.Index, np.ndarray]:
        """Check and preprocess raw features into the network's input.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_features)
            Raw features.
        out : ndarray of shape (n_inputs, n_samples), float32, default=None
            Written in place when given (see ``ClinicalPreprocessor.transform``).

        Returns
        -------
        index : Index
            The rows' labels.
        inputs : ndarray of shape (n_samples, n_inputs), float32, column-major
        """
        features = self.feature_frame(X)
        return features.index, self.preprocessor_.transform(features, out=out)

    def outputs_from_inputs(self, inputs: np.ndarray, index: pd.Index | None = None) -> list[np.ndarray]:
        """Forward preprocessed inputs and decode, recalibrated, every outcome's output.

        Parameters
        ----------
        inputs : ndarray of shape (n_samples, n_inputs), float32
            As ``transform_inputs`` returns them (column-major is fastest).
        index : Index, default=None
            Row labels used in errors; positions when None.

        Returns
        -------
        list of ndarray
            In the order of ``task_specs_``: probabilities of shape
            (n_samples, n_classes) for a classification outcome, values in the
            target's units of shape (n_samples,) for regression, survival
            probabilities at the cut points of shape (n_samples, J) for
            survival.

        Raises
        ------
        InputDataError
            Naming the rows where an output is not finite: no class or value
            comes of it.
        """
        check_is_fitted(self)
        device = resolve_device(self.device)
        module = self.module_.to(device)
        try:  # the transpose of the column-major input is contiguous: fed feature by feature
            raw = module.predict_feature_major(torch.from_numpy(inputs.T).to(device))
            raw = [out.cpu().numpy() for out in raw]
        finally:
            self.module_.cpu()
        outputs = self._recalibrated([decode_outputs(spec, out) for spec, out in zip(self.task_specs_, raw)])
        _check_finite_outputs(self.task_specs_, outputs, index if index is not None else pd.RangeIndex(len(inputs)))
        return outputs

    def predict_outputs(self, X) -> tuple[pd.Index, list[np.ndarray]]:
        """``outputs_from_inputs`` of raw features, with their index.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_features)

        Returns
        -------
        index : Index
        outputs : list of ndarray
            As ``outputs_from_inputs`` returns them.
        """
        index, inputs = self.transform_inputs(X)
        return index, self.outputs_from_inputs(inputs, index)

    def member_outputs(self, X) -> list[np.ndarray]:
        """Every network's own output, where ``predict_outputs`` gives their average.

        The spread of these over the ensemble's networks is the model's own
        uncertainty (what more training data would reduce), not the
        patient's uncertain outcome.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_features)

        Returns
        -------
        list of ndarray
            In the order of ``task_specs_``, each of shape (n_members, ...)
            where ``...`` is the shape ``outputs_from_inputs`` gives, every
            member decoded and recalibrated on its own.
        """
        _, inputs = self.transform_inputs(X)
        raw = self.module_.predict_feature_major(torch.from_numpy(inputs.T))
        members = range(len(self.module_.members))
        return [
            np.stack([self._recalibrated_one(spec, decode_outputs(spec, out[m : m + 1].double().numpy()))
                      for m in members])
            for spec, out in zip(self.task_specs_, raw)
        ]

    def interval_half_widths(self, coverage: float, inputs: np.ndarray | None = None) -> dict:
        """Half-width of the split-conformal ``coverage`` interval of every regression outcome.

        Parameters
        ----------
        coverage : float in (0, 1)
        inputs : ndarray of shape (n_samples, n_inputs), default=None
            Preprocessed inputs (``transform_inputs``) of the patients; needed
            where the widths are normalised (``interval_scales_``).

        Returns
        -------
        dict of str to float or ndarray of shape (n_samples,)
            Per regression outcome with conformal scores (none without early
            stopping): one width for every patient, or, where normalised,
            each patient's.

        Raises
        ------
        ValueError
            If ``inputs`` is None and some outcome's widths are normalised.
        """
        check_is_fitted(self)
        coverage = check_coverage(coverage)
        scales = getattr(self, "interval_scales_", {})
        if scales and inputs is None:
            raise ValueError(f"The intervals of {sorted(scales)} differ from patient to patient: "
                             "pass the patients' inputs (transform_inputs) to interval_half_widths.")
        return {name: conformal_quantile(scores, coverage) * (scales[name].scale(inputs) if name in scales else 1.0)
                for name, scores in self.conformal_scores_.items()}

    def labelled_pairs(self, X, y):
        """Predictions beside the true labels, outcome by outcome, on labelled rows only.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_features)
        y : DataFrame or array-like
            The label table, aligned with ``X`` as in ``score``.

        Yields
        ------
        spec : TaskSpec
        y_true : ndarray
            Class indices (classification), values (regression) or follow-up
            time and event, shape (n, 2) (survival), of the rows labelled for
            the outcome.
        output : ndarray
            The model's outputs on those rows (see ``outputs_from_inputs``).
        """
        index, outputs = self.predict_outputs(X)
        if single_outcome(self) is not None:  # a 1-d fit scores 1-d labels whatever their name
            y = outcome_labels(self, single_outcome(self), X, y)
        labels = align_labels(y, index, self.task_specs_, match_index=isinstance(X, pd.DataFrame))
        scored = labelled_outcomes(labels, self.task_specs_)
        for spec, output in zip(self.task_specs_, outputs):
            if spec in scored:
                present, y_true = labelled_targets(labels, spec)
                yield spec, y_true, output[present]

    # -- private helpers -------------------------------------------------------------------

    def _feature_frame(self, X, *, reset: bool) -> pd.DataFrame:
        """``X`` as a DataFrame with the model's internal column names.

        Column names are checked the scikit-learn way (same names, same order
        as in fit); arrays are matched by position.
        """
        frame = as_frame(X)
        validate_data(self, X if isinstance(X, pd.DataFrame) else frame.to_numpy(),
                      reset=reset, skip_check_array=True)
        if len(frame) == 0:
            raise InputDataError(
                f"X has 0 rows (shape={frame.shape}) while a minimum of 1 is required."
            )
        if frame.shape[1] == 0:
            raise InputDataError(
                f"0 feature(s) (shape={frame.shape}) while a minimum of 1 is required."
            )
        names = getattr(self, "feature_names_in_", None)
        if reset:
            names = names if names is not None else [f"x{i}" for i in range(frame.shape[1])]
        else:
            names = list(self.preprocessor_.feature_kinds_)
        if list(frame.columns) != list(names):
            frame = frame.set_axis(list(names), axis=1)
        return frame

    def _recalibrated(self, outputs: list[np.ndarray]) -> list[np.ndarray]:
        """Decoded outputs with every classification outcome's recalibration applied."""
        return [self._recalibrated_one(spec, output) for spec, output in zip(self.task_specs_, outputs)]

    def _recalibrated_one(self, spec, output: np.ndarray) -> np.ndarray:
        calibrator = self.calibrators_.get(spec.name)
        return output if calibrator is None else calibrator.transform(output)


def _refuse_one_array_response(model, caller) -> None:
    """Raise where scikit-learn would take the dict of ``predict_proba`` for one array of probabilities.

    Its scorers and displays call ``predict_proba`` from
    ``sklearn.utils._response`` and hand the result to a metric; a dict there
    fails far away with an unrelated message, or becomes a NaN score.
    """
    if caller.f_globals.get("__name__") == "sklearn.utils._response":
        raise ValueError(
            f"This MultiTaskMLP was fitted on a label table of outcomes {list(model.tasks_)}: its predict_proba "
            "gives a dict outcome -> probabilities, which scikit-learn's scorers and displays cannot read. "
            "Score one outcome with clinical_mtl.outcome_scorer(outcome, scoring) (several with "
            "mean_outcome_scorer), or pass model.for_outcome(outcome), a classifier of that outcome alone."
        )


def _check_finite_outputs(specs, outputs: list[np.ndarray], index: pd.Index) -> None:
    """Raise an ``InputDataError`` naming the rows where any outcome's output is not finite."""
    bad = np.zeros(len(index), dtype=bool)
    for output in outputs:
        bad |= ~np.isfinite(output).all(axis=tuple(range(1, output.ndim)))
    if bad.any():
        raise InputDataError(
            f"The network's output is not finite for {describe_rows(index, bad)}, so no prediction is "
            f"given for them; their inputs are too far from the training values (check the units)."
        )

"""``MultiTaskMLP``: the scikit-learn face of the multi-task network.

The estimator checks its inputs and wires the rooms together: features and
preprocessing, tasks, the network, the losses and the training loop. It holds
parameters and fitted state; the rooms do the work.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from numbers import Integral, Real

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from ._compat import Interval, StrOptions, fit_context
from .calibration import ISOTONIC, TEMPERATURE, fit_calibrator
from .conformal import DEFAULT_COVERAGE, check_coverage, conformal_quantile, conformal_scores
from .evaluation import evaluate_model
from .exceptions import InputDataError, TaskSpecificationError
from .explain import PROBABILITY, explain_model, summarise_background
from .features import as_frame, describe_rows
from .hooks import notify_fit
from .losses import EQUAL, UNCERTAINTY, TaskWeighting, weighting_factory
from .metrics import metrics_table, skill_score
from .network import MultiHeadEnsemble, MultiHeadNet, build_network
from .preprocessing import STORED_DIGITS, ClinicalPreprocessor, round_significant
from .splitting import holdout_split
from .tasks import (
    REGRESSION,
    TaskSpec,
    align_labels,
    as_label_frame,
    class_counts,
    class_weight_vectors,
    decode_outputs,
    encode_targets,
    infer_tasks,
    labelled_targets,
)
from .training import (
    TaskData,
    TrainingResult,
    TrainingSettings,
    fit_module,
    predict_module,
    resolve_device,
)

LABEL_PERCENTILES = np.arange(5, 96)
"""Percentiles of the training labels a model stores (``label_percentiles_``)."""


class MultiTaskMLP(BaseEstimator):
    """Predict several clinical outcomes of the same patients with one network.

    A shared multi-layer perceptron trunk feeds one head per outcome: a
    binary or multi-class classification head (a diagnosis) or a regression
    head (a prognosis). Raw clinical tables go in: numeric, boolean and
    categorical columns with missing values are log-transformed where
    right-skewed, imputed (with missing-value indicators), scaled and one-hot
    encoded inside the model, all learned in ``fit``. Each outcome learns from
    the patients labelled for it; a missing label (NaN) adds nothing to that
    outcome's loss or gradient.

    By default ``ensemble_size=5`` such networks are trained, each with its
    own seed and its own early-stopping split (so together they learn from
    every training row), and their probabilities or values are averaged. On
    small clinical tables this beat a single network on every outcome we
    benchmarked (see ``reports/model_comparison.md``).

    Parameters
    ----------
    tasks : dict of str to {"binary", "multiclass", "regression"}, default=None
        Kind of every outcome, keyed by the columns of ``Y``. None infers them
        from the labels (see :mod:`clinical_mtl.tasks`).
    hidden_layer_sizes : tuple of int, default=(64,)
        Widths of the shared trunk's hidden layers. ``()`` gives one linear
        model per outcome.
    dropout : float, default=0.3
        Dropout probability after every hidden layer.
    learning_rate : float, default=1e-3
        AdamW learning rate.
    weight_decay : float, default=1e-2
        AdamW decoupled weight decay, applied to weight matrices only.
    batch_size : int, default=32
        Rows per optimisation step.
    max_epochs : int, default=500
        Upper bound on passes over the training rows.
    early_stopping : bool, default=True
        Hold out ``validation_fraction`` of the rows, stop when the validation
        loss has not improved for ``patience`` epochs and restore the weights
        of the best epoch. The split is stratified on the classification
        labels where their counts allow.
    validation_fraction : float, default=0.15
        Share of training rows held out for early stopping.
    patience : int, default=20
        Epochs without validation improvement before stopping.
    loss_weighting : "equal", "uncertainty" or dict of str to float, default="equal"
        How outcome losses add up: equally, with learned homoscedastic
        uncertainty weights (Kendall, Gal and Cipolla 2018), or with fixed
        non-negative weights per outcome (clinical priorities).
    class_weight : "balanced", dict or None, default=None
        Per-class loss weights of classification outcomes. "balanced" weights
        every class of every classification outcome by
        ``n_labelled / (n_classes * n_in_class)``; a dict maps outcome names to
        "balanced" or to a dict of class label -> weight.
    random_state : int, RandomState instance or None, default=None
        Seeds the weights, the validation split, the batch order and dropout.
        An int gives identical predictions for identical data.
    device : str, default="cpu"
        Torch device used for fitting and predicting, e.g. "cuda". The fitted
        network is kept on the CPU.
    verbose : int, default=0
        Print the losses of every epoch when positive.
    ensemble_size : int, default=5
        Number of networks trained and averaged.
    log_transform : "auto", list of str or None, default="auto"
        Numeric columns replaced by their logarithm before scaling; "auto"
        picks positive columns with skewness above 1 (see
        :class:`~clinical_mtl.preprocessing.ClinicalPreprocessor`).
    calibration : {"temperature", "isotonic"} or None, default="temperature"
        Recalibration of every classification outcome's probabilities after
        training, fitted on the early-stopping rows (each predicted only by
        the networks that held it out): temperature scaling (one parameter per
        outcome; never changes the predicted class or the ranking of
        patients; kept at 1 unless a likelihood-ratio test on the held-out
        rows shows miscalibration at the 5% level) or isotonic maps (more
        flexible, needs thousands of held-out rows); see
        :mod:`clinical_mtl.calibration`. ``predict_proba``,
        ``predict``, ``score``, ``evaluate`` and ``explain`` all speak of the
        recalibrated probabilities. Applies only with ``early_stopping=True``
        (without held-out rows nothing is recalibrated); None turns it off.

    Attributes
    ----------
    n_features_in_ : int
        Number of feature columns seen in fit.
    feature_names_in_ : ndarray of str
        Names of the feature columns, when ``X`` was a DataFrame.
    tasks_ : dict of str to str
        Outcome -> kind, as learned in fit.
    classes_ : dict of str to ndarray
        Classification outcome -> its class labels, sorted.
    label_counts_ : dict of str to dict
        Per outcome: ``n_labelled`` rows, and for classification ``events``,
        the number of labelled rows per class.
    label_percentiles_ : dict of str to ndarray of shape (91,)
        Regression outcome -> the ``LABEL_PERCENTILES`` (5th to 95th)
        percentiles of its training labels, in its units, rounded to 3
        significant digits: where a prediction stands in the training cohort.
        Neither the extremes (the minimum and maximum are one patient's exact
        labels) nor exact quantiles are stored: the model is shared.
    preprocessor_ : ClinicalPreprocessor
        The fitted transformer from raw columns to network inputs.
    module_ : MultiHeadEnsemble
        The trained torch networks, on the CPU.
    history_ : list of dict
        One record per network (``member``) and epoch: total and per-outcome
        training loss (``train_loss/<outcome>``), validation losses with early
        stopping, and the weight of every outcome (``weight/<outcome>``;
        ``sigma/<outcome>`` for uncertainty weighting).
        ``pandas.DataFrame(history_)`` tabulates it.
    best_epoch_ : ndarray of int, shape (ensemble_size,)
        Per network, the epoch whose weights it holds.
    n_iter_ : ndarray of int, shape (ensemble_size,)
        Per network, the epochs run.
    explanation_background_ : Background
        Reference points of ``explain``: at most 20 weighted k-means centres
        of the training inputs, each summarising 5 or more patients.
    validation_metrics_ : DataFrame or None
        ``evaluate``-style metrics on the early-stopping rows, each row
        predicted by the networks that held it out (so never by a network that
        trained on it), after recalibration. Somewhat optimistic, since these
        rows also chose the stopping epochs and fitted the recalibration. None
        without early stopping.
    calibrators_ : dict of str to TemperatureScaling or IsotonicCalibration
        Classification outcome -> its fitted recalibration (see
        :mod:`clinical_mtl.calibration`); a temperature of 1 where the
        held-out rows showed no miscalibration. Empty without early stopping
        or with ``calibration=None``; an outcome is left out when its held-out
        labels cannot support the fit (one class only; for isotonic, a class
        missing).
    conformal_scores_ : dict of str to ndarray
        Regression outcome -> the sorted absolute residuals, in its units, of
        its labelled early-stopping rows, each predicted only by the networks
        that held it out: what ``predict_interval`` takes its quantiles from
        (see :mod:`clinical_mtl.conformal`). Empty without early stopping.

    See Also
    --------
    sklearn.neural_network.MLPClassifier : Single-output scikit-learn MLP.

    Examples
    --------
    >>> from clinical_mtl import MultiTaskMLP
    >>> from clinical_mtl.datasets import make_synthetic_cohort
    >>> X, Y = make_synthetic_cohort(300, random_state=0)
    >>> model = MultiTaskMLP(max_epochs=20, random_state=0).fit(X, Y)
    >>> model.tasks_
    {'diagnosis': 'binary', 'subtype': 'multiclass', 'prognosis': 'regression'}
    >>> model.predict(X.head(2)).columns.tolist()
    ['diagnosis', 'subtype', 'prognosis']
    """

    _parameter_constraints: dict = {
        "tasks": [dict, None],
        "hidden_layer_sizes": [tuple, list],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "patience": [Interval(Integral, 1, None, closed="left")],
        "loss_weighting": [StrOptions({EQUAL, UNCERTAINTY}), dict],
        "class_weight": [StrOptions({"balanced"}), dict, None],
        "random_state": ["random_state"],
        "device": [str],
        "verbose": ["verbose"],
        "ensemble_size": [Interval(Integral, 1, None, closed="left")],
        "log_transform": [StrOptions({"auto"}), list, None],
        "calibration": [StrOptions({TEMPERATURE, ISOTONIC}), None],
    }

    def __init__(
        self,
        tasks=None,
        hidden_layer_sizes=(64,),
        dropout=0.3,
        learning_rate=1e-3,
        weight_decay=1e-2,
        batch_size=32,
        max_epochs=500,
        early_stopping=True,
        validation_fraction=0.15,
        patience=20,
        loss_weighting="equal",
        class_weight=None,
        random_state=None,
        device="cpu",
        verbose=0,
        ensemble_size=5,
        log_transform="auto",
        calibration=TEMPERATURE,
    ):
        self.tasks = tasks
        self.hidden_layer_sizes = hidden_layer_sizes
        self.dropout = dropout
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.loss_weighting = loss_weighting
        self.class_weight = class_weight
        self.random_state = random_state
        self.device = device
        self.verbose = verbose
        self.ensemble_size = ensemble_size
        self.log_transform = log_transform
        self.calibration = calibration

    @fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Fit the network on a clinical table and its outcome labels.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_features)
            Raw features: numeric, boolean and categorical columns, NaN for
            missing values.
        y : DataFrame, Series or array-like of shape (n_samples,) or (n_samples, n_outcomes)
            The label table: one column per outcome, NaN where a patient has
            no label. Arrays name their outcomes ``y`` (1-d) or ``y0, y1, ...``
            (2-d).

        Returns
        -------
        self : MultiTaskMLP
            The fitted estimator.
        """
        with notify_fit(self, X, y):
            return self._fit(X, y)

    def _fit(self, X, y):
        features = self._feature_frame(X, reset=True)
        labels = as_label_frame(y, features.index, match_index=isinstance(X, pd.DataFrame))
        specs = infer_tasks(labels, self.tasks)
        new_weighting = weighting_factory(self.loss_weighting, specs)
        class_weights = class_weight_vectors(specs, labels, self.class_weight)
        device = resolve_device(self.device)

        self._task_specs = tuple(specs)
        self.tasks_ = {spec.name: spec.kind for spec in specs}
        self.classes_ = {spec.name: np.asarray(spec.classes) for spec in specs if spec.classes}
        self.label_counts_ = {
            spec.name: {"n_labelled": int(labels[spec.name].notna().sum())}
            | ({"events": class_counts(labels, spec)} if spec.is_classification else {})
            for spec in specs
        }
        self.label_percentiles_ = {
            spec.name: round_significant(np.percentile(labels[spec.name].dropna().to_numpy(dtype=float),
                                                       LABEL_PERCENTILES), STORED_DIGITS)
            for spec in specs if not spec.is_classification
        }
        self.preprocessor_ = ClinicalPreprocessor(log_transform=self.log_transform).fit(features)
        inputs = np.ascontiguousarray(self.preprocessor_.transform(features))
        targets, labelled = encode_targets(labels, specs)
        row_weights = labelled.astype(np.float32)
        for t, weights in enumerate(class_weights):
            if weights is not None:
                row_weights[:, t] *= weights[targets[t]]
        data = TaskData(
            torch.from_numpy(inputs),
            [torch.from_numpy(t) for t in targets],
            torch.from_numpy(row_weights),
        )

        rng = check_random_state(self.random_state)
        seeds = rng.randint(np.iinfo(np.int32).max, size=self.ensemble_size)
        members, self.history_, best_epochs, n_epochs, held_out = [], [], [], [], []
        for member, seed in enumerate(seeds):
            network, result, valid_rows = self._fit_member(
                data, targets, labelled, new_weighting, int(seed), device
            )
            members.append(network)
            if valid_rows is not None:
                held_out.append((valid_rows, network))
            self.history_ += [{"member": member} | record for record in result.history]
            best_epochs.append(result.best_epoch)
            n_epochs.append(result.n_epochs)
        self.module_ = MultiHeadEnsemble(members)
        self.explanation_background_ = summarise_background(
            inputs, int(rng.randint(np.iinfo(np.int32).max))
        )
        self._fit_held_out(data.X, labels, held_out)
        self.best_epoch_ = np.asarray(best_epochs)
        self.n_iter_ = np.asarray(n_epochs)
        if self.early_stopping and (self.n_iter_ == self.max_epochs).any():
            warnings.warn(
                f"The validation loss was still improving at max_epochs={self.max_epochs} "
                f"(best epochs {self.best_epoch_.tolist()}); increase max_epochs.",
                ConvergenceWarning,
                stacklevel=3,
            )
        return self

    def predict(self, X):
        """Predict every outcome.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_features)
            Raw features with the columns seen in fit.

        Returns
        -------
        DataFrame of shape (n_samples, n_outcomes)
            Indexed like ``X``: the most probable class label of every
            classification outcome (by the recalibrated probabilities of
            ``predict_proba``) and the predicted value, in its units, of every
            regression outcome.
        """
        index, outputs = self._predict_outputs(X)
        columns = {}
        for spec, output in zip(self._task_specs, outputs):
            if spec.is_classification:
                columns[spec.name] = np.asarray(spec.classes)[np.argmax(output, axis=1)]
            else:
                columns[spec.name] = output
        return pd.DataFrame(columns, index=index)

    def predict_proba(self, X):
        """Class probabilities of every classification outcome.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_features)
            Raw features with the columns seen in fit.

        Returns
        -------
        dict of str to ndarray of shape (n_samples, n_classes)
            Classification outcome -> probabilities (float64, rows sum to 1),
            columns in the order of ``classes_[outcome]``: the average of the
            networks' probabilities, recalibrated by ``calibrators_[outcome]``
            where there is one (see the ``calibration`` parameter).
        """
        _, outputs = self._predict_outputs(X)
        return {
            spec.name: output
            for spec, output in zip(self._task_specs, outputs)
            if spec.is_classification
        }

    def predict_interval(self, X, coverage=DEFAULT_COVERAGE):
        """Prediction intervals of every regression outcome (split-conformal).

        The interval is ``predict(X)[outcome] +- q``, where ``q`` is the
        finite-sample ``ceil((n + 1) * coverage) / n`` quantile of the ``n``
        absolute residuals of the outcome's labelled early-stopping rows, each
        row predicted only by the networks that held it out
        (``conformal_scores_``; see :mod:`clinical_mtl.conformal`). For
        patients like the training cohort, about ``coverage`` of the
        intervals hold the true value. The width is the same for every
        patient; it is infinite when there are too few residuals for the
        coverage asked (``ceil((n + 1) * coverage) > n``).

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
        half_widths = self._interval_half_widths(coverage)
        if not any(spec.kind == REGRESSION for spec in self._task_specs):
            raise ValueError(
                f"predict_interval needs a regression outcome; this model's outcomes {self.tasks_} "
                "are all classification outcomes (use predict_proba)."
            )
        if not half_widths:
            raise ValueError(
                "This model has no held-out residuals to calibrate intervals on: it was fitted with "
                "early_stopping=False. Refit with early_stopping=True (the early-stopping rows, which "
                "no network trained on, give the residuals)."
            )
        index, outputs = self._predict_outputs(X)
        columns = {}
        for spec, output in zip(self._task_specs, outputs):
            if spec.name in half_widths:
                columns[f"{spec.name}_lower"] = output - half_widths[spec.name]
                columns[f"{spec.name}_upper"] = output + half_widths[spec.name]
        return pd.DataFrame(columns, index=index)

    def score(self, X, y, sample_weight=None):
        """Mean over outcomes of a per-outcome skill score on labelled rows.

        Per outcome the score is R^2 for regression and the Brier skill score
        ``1 - Brier / Brier of the observed class frequencies`` for
        classification: 1 is perfect, 0 is no better than a constant, higher
        is better. Outcomes whose score is undefined on ``Y`` (one class, or
        fewer than two labels) are left out of the mean.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_features)
            Raw features.
        y : DataFrame, Series or array-like
            Labels of some or all outcomes, NaN where unlabelled.
        sample_weight : None
            Not supported; must be None.

        Returns
        -------
        float
        """
        if sample_weight is not None:
            raise ValueError("MultiTaskMLP.score does not support sample_weight.")
        scores = [
            skill_score(y_true, output, spec.is_classification)
            for spec, y_true, output in self._labelled_pairs(X, y)
        ]
        defined = [s for s in scores if not np.isnan(s)]
        return float(np.mean(defined)) if defined else np.nan

    def evaluate(self, X, y, groups=None, *, n_bootstrap=0, confidence=0.95, random_state=None):
        """Metrics of every outcome on its labelled rows, overall or per subgroup.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_features)
            Raw features.
        y : DataFrame, Series or array-like
            Labels of some or all outcomes, NaN where unlabelled.
        groups : str, list of str, Series, DataFrame or array-like, default=None
            Subgroups to evaluate separately (e.g. sex, age band): column
            names of ``X``, or one value per row of ``X`` (see
            :func:`clinical_mtl.evaluation.evaluate_model`).
        n_bootstrap : int, default=0
            Bootstrap resamples of each outcome's labelled rows for percentile
            confidence intervals of the headline metrics; 0 gives none.
        confidence : float, default=0.95
            Coverage of the intervals.
        random_state : int, RandomState instance or None, default=None
            Seeds the resampling.

        Returns
        -------
        DataFrame
            One row per outcome present in ``Y`` (with ``groups``: per outcome,
            grouping variable and subgroup), with its ``kind``, ``n_labelled``,
            ``events`` (positive-class rows; the rarest class's rows for
            several classes) and AUROC, log loss, Brier score, accuracy,
            expected calibration error, calibration slope and intercept
            (classification; slope and intercept for binary outcomes) or
            RMSE, MAE and R^2 (regression, in the outcome's units); with
            ``n_bootstrap``, ``<metric>_lower`` and ``<metric>_upper`` for
            AUROC, Brier, ECE, RMSE and R^2. NaN where a metric does not apply
            or is undefined.
        """
        return evaluate_model(
            self, X, y, groups, n_bootstrap=n_bootstrap, confidence=confidence, random_state=random_state
        )

    def explain(self, X, outcomes=None, *, output=PROBABILITY):
        """SHAP values of every outcome, on the original clinical features.

        The networks' outputs are attributed with DeepLIFT's rescale rule
        (what ``shap.DeepExplainer`` computes), batched over patients and over
        a background of weighted k-means centres of the training rows fixed
        at fit time; the output link (sigmoid, softmax, target scale) is
        carried through exactly, and the columns that each clinical variable
        produced (value and missing indicator, one-hot columns) are summed
        back into it. Where the outcome is recalibrated (``calibrators_``),
        the attributions are carried through the recalibration map too. So
        for every patient and output, ``base_values + values summed over
        features`` equals the model's output, the (recalibrated) probability
        of ``predict_proba`` or the value of ``predict`` (see
        :mod:`clinical_mtl.explain` for why).

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_features)
            Raw features of the patients to explain.
        outcomes : list of str, default=None
            Outcomes to explain; None explains all.
        output : {"probability", "log_odds"}, default="probability"
            Scale of classification explanations: the predicted probability
            (what ``predict_proba`` returns), or its log-odds. Regression
            outcomes are always explained in their units.

        Returns
        -------
        dict of str to shap.Explanation
            Per outcome: ``values`` of shape (n_samples, n_features) (binary:
            the probability of ``classes_[outcome][1]``; regression: the value)
            or (n_samples, n_features, n_classes) (multi-class), ``base_values``
            per row, ``feature_names`` the columns of ``X``, ``data`` the
            patients' values (categories as their index among the training
            categories), ``display_data`` the values as given (category
            labels, True/False, None for missing), ``output_names`` naming the
            outcome and class.
        """
        check_is_fitted(self)
        return explain_model(self, X, outcomes, output=output)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.input_tags.categorical = True
        tags.input_tags.string = True
        tags.target_tags.required = True
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags

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

    def _predict_outputs(self, X) -> tuple[pd.Index, list[np.ndarray]]:
        """Probabilities (classification) or values in units (regression) per outcome."""
        index, inputs = self._network_inputs(X)
        return index, self._outputs_of_inputs(inputs, index)

    def _network_inputs(self, X, out: np.ndarray | None = None) -> tuple[pd.Index, np.ndarray]:
        """Check and preprocess ``X``: its index and the network's column-major input
        (written into ``out`` when given, see ``ClinicalPreprocessor.transform``)."""
        check_is_fitted(self)
        features = self._feature_frame(X, reset=False)
        return features.index, self.preprocessor_.transform(features, out=out)

    def _outputs_of_inputs(self, inputs: np.ndarray, index: pd.Index | None = None) -> list[np.ndarray]:
        """Forward preprocessed inputs and decode every outcome's output.

        Raises an ``InputDataError`` naming the rows (labels of ``index``, else
        positions) where an output is not finite: no class or value comes of it.
        """
        device = resolve_device(self.device)
        module = self.module_.to(device)
        try:  # the transpose of the column-major input is contiguous: fed feature by feature
            raw = module.predict_feature_major(torch.from_numpy(inputs.T).to(device))
            raw = [out.cpu().numpy() for out in raw]
        finally:
            self.module_.cpu()
        outputs = self._recalibrated([decode_outputs(spec, out) for spec, out in zip(self._task_specs, raw)])
        _check_finite_outputs(self._task_specs, outputs, index if index is not None else pd.RangeIndex(len(inputs)))
        return outputs

    def _recalibrated(self, outputs: list[np.ndarray]) -> list[np.ndarray]:
        """Decoded outputs with every classification outcome's recalibration applied."""
        return [
            self.calibrators_[spec.name].transform(output) if spec.name in self.calibrators_ else output
            for spec, output in zip(self._task_specs, outputs)
        ]

    def _interval_half_widths(self, coverage: float) -> dict[str, float]:
        """Half-width of the ``coverage`` interval of every regression outcome with
        conformal scores (none without early stopping)."""
        coverage = check_coverage(coverage)
        return {name: conformal_quantile(scores, coverage) for name, scores in self.conformal_scores_.items()}

    def _labelled_pairs(self, X, y):
        """Yield (spec, true labels or class indices, predictions) on labelled rows."""
        index, outputs = self._predict_outputs(X)
        labels = align_labels(y, index, self._task_specs, match_index=isinstance(X, pd.DataFrame))
        for spec, output in zip(self._task_specs, outputs):
            if spec.name in labels.columns:
                present, y_true = labelled_targets(labels, spec)
                yield spec, y_true, output[present]

    def _fit_member(
        self,
        data: TaskData,
        targets: list[np.ndarray],
        labelled: np.ndarray,
        new_weighting: Callable[[], TaskWeighting],
        seed: int,
        device: torch.device,
    ) -> tuple[MultiHeadNet, TrainingResult, np.ndarray | None]:
        """Train one network on its own early-stopping split.

        Returns the network (on the CPU), what training did and the positions of
        the rows it held out (None without early stopping).
        """
        specs = self._task_specs
        train, valid, valid_rows = data, None, None
        if self.early_stopping:
            train_rows, valid_rows = holdout_split(
                targets, labelled, [s.is_classification for s in specs], self.validation_fraction, seed
            )
            self._check_every_task_trains(specs, labelled[train_rows])
            train = data.take(torch.from_numpy(train_rows))
            valid = data.take(torch.from_numpy(valid_rows)).to(device)
        network = build_network(
            data.X.shape[1], self.hidden_layer_sizes, [s.n_outputs for s in specs], self.dropout, seed
        ).to(device)
        settings = TrainingSettings(
            learning_rate=self.learning_rate,
            weight_decay=self.weight_decay,
            batch_size=self.batch_size,
            max_epochs=self.max_epochs,
            patience=self.patience,
            verbose=self.verbose,
        )
        result = fit_module(
            network,
            new_weighting().to(device),
            [s.name for s in specs],
            [s.kind for s in specs],
            train.to(device),
            valid,
            settings,
            seed,
        )
        return network.cpu(), result, valid_rows

    def _fit_held_out(self, inputs: torch.Tensor, labels: pd.DataFrame, held_out: list) -> None:
        """Fit the recalibration (``calibrators_``), the conformal scores and the
        ``validation_metrics_`` on the early-stopping rows, out of bag."""
        self.calibrators_, self.conformal_scores_, self.validation_metrics_ = {}, {}, None
        if not held_out:
            return
        seen, outputs = self._out_of_bag_outputs(inputs, held_out)
        held_labels = labels.iloc[seen]
        outcomes = []
        for spec, output in zip(self._task_specs, outputs):
            present, y_true = labelled_targets(held_labels, spec)
            output = output[present]
            if not spec.is_classification:
                self.conformal_scores_[spec.name] = conformal_scores(y_true, output)
            elif self.calibration is not None:
                calibrator = fit_calibrator(self.calibration, output, y_true)
                if calibrator is not None:
                    self.calibrators_[spec.name] = calibrator
                    output = calibrator.transform(output)
            outcomes.append((spec.name, spec.kind, y_true, output))
        self.validation_metrics_ = metrics_table(outcomes)

    def _out_of_bag_outputs(self, inputs: torch.Tensor, held_out: list) -> tuple[np.ndarray, list[np.ndarray]]:
        """Outputs of the early-stopping rows, each row predicted only by the members
        that held it out (never by one that trained on it), before recalibration.

        Returns the positions of the rows some member held out and, per outcome,
        their decoded outputs (probabilities or values in units) averaged over
        those members.
        """
        n_rows = len(inputs)
        sums: list[np.ndarray | None] = [None] * len(self._task_specs)
        counts = np.zeros(n_rows)
        for rows, network in held_out:
            raw = predict_module(network, inputs[torch.from_numpy(rows)])
            counts[rows] += 1
            for t, spec in enumerate(self._task_specs):
                decoded = decode_outputs(spec, raw[t].double().numpy()[None])
                if sums[t] is None:
                    sums[t] = np.zeros((n_rows, *decoded.shape[1:]))
                sums[t][rows] += decoded
        seen = np.flatnonzero(counts > 0)
        return seen, [
            total[seen] / counts[seen].reshape(-1, *[1] * (total.ndim - 1)) for total in sums
        ]

    @staticmethod
    def _check_every_task_trains(specs: list[TaskSpec], labelled_train: np.ndarray) -> None:
        empty = [spec.name for t, spec in enumerate(specs) if not labelled_train[:, t].any()]
        if empty:
            raise TaskSpecificationError(
                f"Outcomes {empty} have no labelled row left for training after the "
                "early-stopping split; provide more labels or set early_stopping=False."
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

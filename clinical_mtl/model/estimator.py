"""``MultiTaskMLP``: the scikit-learn face of the multi-task network.

The estimator checks its inputs and wires the rooms together: features and
preprocessing, tasks, the network, the losses and the training loop. It holds
parameters and fitted state; the rooms do the work.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from ._compat import fit_context
from .calibration import TEMPERATURE
from .conformal import NORMALIZED
from .explaining import ExplanationMixin
from .explanation import summarise_background
from .fitted_state import restore_state, state_of
from .fitting import fit_held_out, fit_survival_heads, label_summaries
from .hooks import notify_fit
from .labels import as_label_frame
from .metric_tables import evaluate_model
from .metrics import skill_score
from .network import MultiHeadEnsemble
from .outcome_view import single_outcome, single_outcome_of, with_estimator_type
from .parameters import PARAMETER_CONSTRAINTS
from .prediction import PredictionCoreMixin
from .preprocessing import ClinicalPreprocessor
from .survival import DEFAULT_INTERVALS, MIXED_HEAD
from .tasks import TaskSpec, infer_tasks
from .training import JOINT


class MultiTaskMLP(PredictionCoreMixin, ExplanationMixin, BaseEstimator):
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
    tasks : dict of str to {"binary", "multiclass", "regression", "survival"}, default=None
        Kind of every outcome, keyed by the columns of ``Y`` (a survival
        outcome ``<name>`` by its two columns ``<name>_time`` and
        ``<name>_event``). None infers them from the labels (see
        :mod:`clinical_mtl.model.tasks`).
    hidden_layer_sizes : tuple of int, default=(64,)
        Widths of the shared trunk's hidden layers. ``()`` gives one linear
        model per outcome.
    dropout : float, default=0.3
        Dropout probability after every hidden layer.
    learning_rate : float or "auto", default="auto"
        AdamW learning rate; "auto": 1e-3 x sqrt(batch size / 32), so 1e-3
        at 32 rows and 2e-3 at 128.
    weight_decay : float, default=1e-2
        AdamW decoupled weight decay, applied to weight matrices only.
    batch_size : int or "auto", default="auto"
        Rows per optimisation step; "auto": 128 from 1,024 training rows
        (after the early-stopping split), else 32 (see
        :func:`clinical_mtl.model.training.auto_batch`). On cross-validation
        folds of six cohorts, 128 rows at 2e-3 scored like 32 at 1e-3 (mean
        AUROC -0.0003, log loss +0.0013) in 2 to 17 times less time, but on
        the small survival cohorts (100 to 300 training rows, one to three
        steps an epoch) it lost up to 0.01 of Harrell's C, so small tables
        keep 32 (``reports/training_speed.md``).
    max_epochs : int, default=500
        Upper bound on passes over the training rows.
    early_stopping : bool or "per_outcome", default=True
        Hold out ``validation_fraction`` of the rows, stop when the validation
        loss has not improved for ``patience`` epochs and restore the weights
        of the best epoch. The split is stratified on the classification
        labels where their counts allow. True watches the weighted sum of the
        outcomes' losses; "per_outcome" lets each outcome with 30 or more
        labelled validation rows keep its own best epoch's weights among those
        trained, copying the trunk per outcome (:mod:`clinical_mtl.model.early_stopping`).
    validation_fraction : float, default=0.15
        Share of training rows held out for early stopping.
    patience : int, default=20
        Epochs without validation improvement before stopping.
    loss_weighting : {"equal", "label_share", "uncertainty", "dwa", "gradnorm", "pcgrad"} or dict, default="equal"
        Equal, by the share of each batch labelled for the outcome, learned uncertainty (Kendall
        et al. 2018) or dynamic task weights (:mod:`clinical_mtl.model.weighting`), or fixed
        non-negative weights per outcome (clinical priorities); per epoch in ``history_``.
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
        Number of networks trained and averaged, each on its own seed and
        early-stopping split. They train together, one batched step for all
        (see :mod:`clinical_mtl.model.stacked_training`), except with
        ``loss_weighting`` "gradnorm" or "pcgrad", ``training="alternate"``,
        ``self_supervision`` or ``sharing="soft"``, which train them one
        after another.
    log_transform : "auto", list of str or None, default="auto"
        Numeric columns replaced by their logarithm before scaling; "auto"
        picks positive columns with skewness above 1 (see
        :class:`~clinical_mtl.model.preprocessing.ClinicalPreprocessor`).
    calibration : {"temperature", "isotonic"} or None, default="temperature"
        Recalibration of every classification outcome's probabilities after
        training, fitted on the early-stopping rows (each predicted only by
        the networks that held it out): temperature scaling (one parameter per
        outcome; never changes the predicted class or the ranking of
        patients; kept at 1 unless at least 30 held-out rows are outside
        the most common class and a likelihood-ratio test on the held-out
        rows shows miscalibration at the 5% level) or isotonic maps (more
        flexible, needs thousands of held-out rows); see
        :mod:`clinical_mtl.model.calibration`. ``predict_proba``,
        ``predict``, ``score``, ``evaluate`` and ``explain`` all speak of the
        recalibrated probabilities. Applies only with early stopping
        (without held-out rows nothing is recalibrated); None turns it off.
    survival_intervals : int, default=4
        Follow-up intervals of each survival outcome's discrete-time hazard,
        cut at quantiles of its training event times (fewer where they
        coincide); see :mod:`clinical_mtl.model.survival`. Each interval
        adds a row of weights to the head: 4 ranked best among 2 to 20 on
        the survival benchmark's cohorts (folds other than those reported),
        from 137 to 4,028 patients.
    survival_horizons : sequence of float, dict of str to sequence or None, default=None
        Times (in the outcome's unit) by which event probabilities are
        reported (flat output columns, reports, metrics), for every survival
        outcome or per outcome. None takes the quartiles of each outcome's
        training event times, to two significant digits.
    survival_head : {"interval", "proportional", "cox", "mixed", "auto"}, default="mixed"
        How a survival head's interval hazards depend on the patient:
        "proportional" gives every interval the same effect of the shared
        layers, ``logit h_j(x) = a_j + eta(x)`` (one risk score per patient, as
        in Cox's model); "interval" gives each interval its own effect (hazard
        ratios that change over follow-up); "cox" is "proportional" with ``eta``
        trained by Cox's partial likelihood in each batch, then the ``a_j`` fitted
        to it (``survival.cox_loss``); "mixed" alternates "interval" and "cox"
        over the ensemble's networks. "auto" trains the ensemble with each of the
        first three and keeps the one with the lower held-out loss of the intervals'
        likelihood (3 to 6 times the training time; ``fitting.fit_survival_heads``).
        See ``reports/survival_benchmark.md``.
    interval_method : {"normalized", "absolute"}, default="normalized"
        Width of ``predict_interval``'s split-conformal intervals: scaled per patient by a model of
        the residuals' size, or one for all (see :mod:`clinical_mtl.model.conformal`).
    head_hidden_layer_sizes : tuple of int or dict of str to tuple, default=()
        Task-specific hidden layers inside every head (or per outcome).
    sharing, sharing_strength : {"hard", "soft"}, float, default="hard", 0.1
        One trunk, or one per outcome tied by an L2 pull of that strength.
    training : {"joint", "alternate"}, default="joint"
        All outcomes' losses in every step, or one outcome per step in turn.
    head_weight_decay : float, dict of str to float or None, default=None
        Weight decay of the heads' matrices, for all or per outcome.
    self_supervision : float, default=0.0
        Weight of a masked-feature reconstruction loss on the trunk (0: off).
        The multi-task options: :mod:`clinical_mtl.model.parameters`.

    Attributes
    ----------
    n_features_in_ : int
        Number of feature columns seen in fit.
    feature_names_in_ : ndarray of str
        Names of the feature columns, when ``X`` was a DataFrame.
    tasks_ : dict of str to str
        Outcome -> kind, as learned in fit.
    single_outcome_ : str or None
        The outcome of a fit on a 1-d ``y``, None for a label table. Fitted on
        one outcome, the model answers as a scikit-learn classifier or
        regressor: arrays from ``predict`` and ``predict_proba``, an array
        ``classes_`` (see :mod:`clinical_mtl.model.outcome_view`).
    classes_ : dict of str to ndarray, or ndarray
        Classification outcome -> its class labels, sorted (with
        ``single_outcome_``, its labels alone).
    label_counts_ : dict of str to dict
        Per outcome: ``n_labelled`` rows, and for classification ``events``,
        the number of labelled rows per class.
    label_percentiles_ : dict of str to ndarray of shape (91,)
        Regression outcome -> the ``LABEL_PERCENTILES`` (5th to 95th)
        percentiles of its training labels, in its units, rounded to 3
        significant digits: where a prediction stands in the training cohort.
        Neither the extremes (the minimum and maximum are one patient's exact
        labels) nor exact quantiles are stored: the model is shared.
    cohort_survival_ : dict of str to ndarray
        Survival outcome -> the training cohort's Kaplan-Meier estimate of
        ``S(t)`` at ``cohort_survival_times_``, to 3 significant digits: the
        curve a patient's prediction is shown against.
    cohort_survival_times_ : dict of str to ndarray
        Survival outcome -> 24 evenly spaced times up to its last cut point
        (``survival.cohort_curve_times``); empty for models saved before
        it existed, whose curve is at the cut points (``task_specs_``).
    preprocessor_ : ClinicalPreprocessor
        The fitted transformer from raw columns to network inputs.
    module_ : MultiHeadEnsemble
        The trained torch networks, on the CPU.
    history_ : list of dict
        One record per network (``member``) and epoch: total and per-outcome
        training loss (``train_loss/<outcome>``), validation losses with early
        stopping, and the weight of every outcome (``weight/<outcome>``;
        ``sigma/<outcome>`` for uncertainty weighting); every tenth epoch, the
        outcomes' gradient cosines (:mod:`clinical_mtl.model.relatedness`).
        ``pandas.DataFrame(history_)`` tabulates it.
    survival_head_ : str
        The head survival outcomes got: ``survival_head``, or what "auto"
        chose ("interval" where there was nothing to choose by).
    survival_head_losses_ : dict of str to float
        With "auto" and a choice made: per head, the held-out loss it was
        chosen by; empty otherwise.
    best_epoch_ : ndarray of int, shape (ensemble_size,)
        Per network, its best epoch by the joint validation objective (the last without early stopping).
    outcome_best_epoch_ : ndarray of int, shape (ensemble_size, n_outcomes), or None
        Per network and outcome, the epoch whose weights it uses (None if saved by an older version).
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
        :mod:`clinical_mtl.model.calibration`); a temperature of 1 where the
        held-out rows showed no miscalibration or were too few
        (``too_few_rows``). Empty without early stopping
        or with ``calibration=None``; an outcome is left out when its held-out
        labels cannot support the fit (one class only; for isotonic, a class
        missing).
    conformal_scores_ : dict of str to ndarray
        Regression outcome -> sorted absolute residuals of its early-stopping rows (out of bag), divided
        by their scale where ``interval_scales_`` has one: ``predict_interval``'s quantiles.
    interval_scales_ : dict of str to ScaleModel
        Regression outcome -> the scale of its intervals where normalised; both empty without early stopping.

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

    _parameter_constraints: dict = PARAMETER_CONSTRAINTS

    def __init__(
        self,
        tasks=None,
        hidden_layer_sizes=(64,),
        dropout=0.3,
        learning_rate="auto",
        weight_decay=1e-2,
        batch_size="auto",
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
        survival_intervals=DEFAULT_INTERVALS,
        survival_horizons=None,
        survival_head=MIXED_HEAD,
        interval_method=NORMALIZED,
        head_hidden_layer_sizes=(),
        training=JOINT,
        head_weight_decay=None,
        self_supervision=0.0,
        sharing="hard",
        sharing_strength=0.1,
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
        self.survival_intervals = survival_intervals
        self.survival_horizons = survival_horizons
        self.survival_head = survival_head
        self.interval_method = interval_method
        self.head_hidden_layer_sizes = head_hidden_layer_sizes
        self.training = training
        self.head_weight_decay = head_weight_decay
        self.self_supervision = self_supervision
        self.sharing = sharing
        self.sharing_strength = sharing_strength

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
            (2-d). A 1-d ``y`` fits one outcome (``single_outcome_``).

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
        specs = tuple(infer_tasks(labels, self.tasks, survival_intervals=self.survival_intervals,
                                  survival_horizons=self.survival_horizons))
        self.single_outcome_ = single_outcome_of(y, labels)
        self._set_task_specs(specs)
        (self.label_counts_, self.label_percentiles_, self.cohort_survival_,
         self.cohort_survival_times_) = label_summaries(labels, specs)
        self.preprocessor_ = ClinicalPreprocessor(log_transform=self.log_transform).fit(features)
        inputs = np.ascontiguousarray(self.preprocessor_.transform(features))
        rng = check_random_state(self.random_state)
        ensemble, self.survival_head_, self.survival_head_losses_ = fit_survival_heads(
            self, specs, inputs, labels, rng.randint(np.iinfo(np.int32).max, size=self.ensemble_size))
        self.module_, self.history_ = MultiHeadEnsemble(ensemble.networks), ensemble.history
        self.best_epoch_, self.n_iter_ = ensemble.best_epochs, ensemble.n_epochs
        self.outcome_best_epoch_ = ensemble.outcome_epochs
        self.explanation_background_ = summarise_background(inputs, int(rng.randint(np.iinfo(np.int32).max)))
        self.calibrators_, self.conformal_scores_, self.interval_scales_, self.validation_metrics_ = fit_held_out(
            self, specs, ensemble, torch.from_numpy(inputs), labels, int(rng.randint(np.iinfo(np.int32).max)))
        if self.early_stopping and (self.n_iter_ == self.max_epochs).any():
            warnings.warn(f"The validation loss was still improving at max_epochs={self.max_epochs} "
                          f"(best epochs {self.best_epoch_.tolist()}); increase max_epochs.",
                          ConvergenceWarning, stacklevel=3)
        return self

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
            for spec, y_true, output in self.labelled_pairs(X, y)
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
            :func:`clinical_mtl.model.metric_tables.evaluate_model`).
        n_bootstrap : int, default=0
            Bootstrap resamples of each outcome's labelled rows for BCa
            confidence intervals of the headline metrics; 0 gives none.
        confidence : float, default=0.95
            Coverage of the intervals.
        random_state : int, RandomState instance or None, default=None
            Seeds the resampling.

        Returns
        -------
        DataFrame
            One row per outcome present in ``Y`` (with ``groups``: per outcome,
            grouping variable and subgroup): its ``kind`` and counts, the metrics
            of its kind with their intervals (with ``n_bootstrap``), and
            ``estimable`` and ``note`` for rows too few to estimate; see
            :func:`clinical_mtl.model.metric_tables.evaluate_model`.
        """
        return evaluate_model(self, X, y, groups, n_bootstrap=n_bootstrap, confidence=confidence,
                              random_state=random_state)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.input_tags.categorical = True
        tags.input_tags.string = True
        tags.target_tags.required = True
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        single = single_outcome(self)
        return tags if single is None else with_estimator_type(tags, self.tasks_[single])

    # -- the fitted state, for persistence ---------------------------------------------------

    def fitted_state(self) -> tuple[dict, dict]:
        """Everything ``fit`` learnt, to be stored (see :mod:`clinical_mtl.model.fitted_state`).

        Returns
        -------
        state : dict
            Plain JSON-ready data: numbers, strings, lists and dicts.
        weights : dict of str to Tensor
            The networks' ``state_dict``.
        """
        check_is_fitted(self)
        return state_of(self), self.module_.state_dict()

    @classmethod
    def from_fitted_state(cls, params: dict, state: dict, weights: dict) -> MultiTaskMLP:
        """A fitted estimator from its parameters and what ``fitted_state`` returned.

        Parameters
        ----------
        params : dict
            As ``get_params`` returns them.
        state : dict
        weights : dict of str to Tensor

        Returns
        -------
        MultiTaskMLP
            Predicting exactly as the estimator whose state it was.
        """
        model = cls(**params)
        restore_state(model, state, weights)
        model._set_task_specs(model.task_specs_)
        return model

    # -- private helpers -------------------------------------------------------------------

    def _set_task_specs(self, specs: tuple[TaskSpec, ...]) -> None:
        """``task_specs_`` and what is read from it: ``tasks_`` (``classes_`` is read on demand)."""
        self.task_specs_ = specs
        self.tasks_ = {spec.name: spec.kind for spec in specs}

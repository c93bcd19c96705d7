"""``MultiTaskMLP``: the scikit-learn face of the multi-task network.

The estimator checks its inputs and wires the rooms together: features and
preprocessing, tasks, the network, the losses and the training loop. It holds
parameters and fitted state; the rooms do the work.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from numbers import Integral, Real

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from ._compat import Interval, StrOptions, fit_context
from .exceptions import InputDataError, TaskSpecificationError
from .features import as_frame
from .losses import EQUAL, UNCERTAINTY, FixedWeighting, TaskWeighting, UncertaintyWeighting
from .metrics import (
    CLASSIFICATION_METRICS,
    REGRESSION_METRICS,
    brier_skill_score,
    classification_metrics,
    r_squared,
    regression_metrics,
)
from .network import build_network
from .preprocessing import ClinicalPreprocessor
from .splitting import holdout_split
from .tasks import (
    BINARY,
    REGRESSION,
    TaskSpec,
    as_label_frame,
    class_counts,
    encode_targets,
    infer_tasks,
)
from .training import TaskData, TrainingSettings, fit_module, predict_module


class MultiTaskMLP(BaseEstimator):
    """Predict several clinical outcomes of the same patients with one network.

    A shared multi-layer perceptron trunk feeds one head per outcome: a
    binary or multi-class classification head (a diagnosis) or a regression
    head (a prognosis). Raw clinical tables go in: numeric, boolean and
    categorical columns with missing values are imputed (with missing-value
    indicators), scaled and one-hot encoded inside the model, all learned in
    ``fit``. Each outcome learns from the patients labelled for it; a missing
    label (NaN) adds nothing to that outcome's loss or gradient.

    Parameters
    ----------
    tasks : dict of str to {"binary", "multiclass", "regression"}, default=None
        Kind of every outcome, keyed by the columns of ``Y``. None infers them
        from the labels (see :mod:`clinical_mtl.tasks`).
    hidden_layer_sizes : tuple of int, default=(64,)
        Widths of the shared trunk's hidden layers. ``()`` gives one linear
        model per outcome.
    dropout : float, default=0.1
        Dropout probability after every hidden layer.
    learning_rate : float, default=1e-3
        AdamW learning rate.
    weight_decay : float, default=1e-3
        AdamW decoupled weight decay, applied to weight matrices only.
    batch_size : int, default=64
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
    preprocessor_ : ClinicalPreprocessor
        The fitted transformer from raw columns to network inputs.
    module_ : MultiHeadNet
        The trained torch network, on the CPU.
    history_ : list of dict
        Per epoch: total and per-outcome training loss (``train_loss/<outcome>``),
        validation losses with early stopping, and the weight of every outcome
        (``weight/<outcome>``; ``sigma/<outcome>`` for uncertainty weighting).
    best_epoch_ : int
        Epoch whose weights the model holds.
    n_iter_ : int
        Epochs run.

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
    }

    def __init__(
        self,
        tasks=None,
        hidden_layer_sizes=(64,),
        dropout=0.1,
        learning_rate=1e-3,
        weight_decay=1e-3,
        batch_size=64,
        max_epochs=500,
        early_stopping=True,
        validation_fraction=0.15,
        patience=20,
        loss_weighting="equal",
        class_weight=None,
        random_state=None,
        device="cpu",
        verbose=0,
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
        features = self._feature_frame(X, reset=True)
        labels = as_label_frame(y, features.index)
        specs = infer_tasks(labels, self.tasks)
        weighting = self._make_weighting(specs)
        class_weights = self._class_weights(specs, labels)
        device = self._torch_device()

        self._task_specs = tuple(specs)
        self.tasks_ = {spec.name: spec.kind for spec in specs}
        self.classes_ = {spec.name: np.asarray(spec.classes) for spec in specs if spec.classes}
        self.label_counts_ = {
            spec.name: {"n_labelled": int(labels[spec.name].notna().sum())}
            | ({"events": class_counts(labels, spec)} if spec.is_classification else {})
            for spec in specs
        }
        self.preprocessor_ = ClinicalPreprocessor().fit(features)
        inputs = self.preprocessor_.transform(features)
        targets, labelled = encode_targets(labels, specs)
        row_weights = labelled.astype(np.float32)
        for t, weights in enumerate(class_weights):
            if weights is not None:
                row_weights[:, t] *= weights[targets[t]]

        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        data = TaskData(
            torch.from_numpy(inputs),
            [torch.from_numpy(t) for t in targets],
            torch.from_numpy(row_weights),
        )
        train, valid = data, None
        if self.early_stopping:
            train_rows, valid_rows = holdout_split(
                targets, labelled, [s.is_classification for s in specs],
                self.validation_fraction, seed,
            )
            train, valid = data.take(torch.from_numpy(train_rows)), data.take(torch.from_numpy(valid_rows))
            self._check_every_task_trains(specs, labelled[train_rows])

        module = build_network(
            inputs.shape[1], self.hidden_layer_sizes, [s.n_outputs for s in specs], self.dropout, seed
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
            module,
            weighting.to(device),
            [s.name for s in specs],
            [s.kind for s in specs],
            train.to(device),
            valid.to(device) if valid is not None else None,
            settings,
            seed,
        )
        self.module_ = module.cpu()
        self.history_ = result.history
        self.best_epoch_ = result.best_epoch
        self.n_iter_ = result.n_epochs
        if self.early_stopping and self.n_iter_ == self.max_epochs:
            warnings.warn(
                f"The validation loss was still improving at max_epochs={self.max_epochs} "
                f"(best epoch {self.best_epoch_}); increase max_epochs.",
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
            classification outcome and the predicted value, in its units, of
            every regression outcome.
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
            columns in the order of ``classes_[outcome]``.
        """
        _, outputs = self._predict_outputs(X)
        return {
            spec.name: output
            for spec, output in zip(self._task_specs, outputs)
            if spec.is_classification
        }

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
        scores = []
        for spec, y_true, output in self._labelled_pairs(X, y):
            if spec.is_classification:
                scores.append(brier_skill_score(y_true, output))
            else:
                scores.append(r_squared(y_true, output))
        defined = [s for s in scores if not np.isnan(s)]
        return float(np.mean(defined)) if defined else np.nan

    def evaluate(self, X, y):
        """Metrics of every outcome on its labelled rows.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_features)
            Raw features.
        y : DataFrame, Series or array-like
            Labels of some or all outcomes, NaN where unlabelled.

        Returns
        -------
        DataFrame
            One row per outcome present in ``Y``, with its ``kind``,
            ``n_labelled`` and AUROC, log loss, Brier score and accuracy
            (classification) or RMSE, MAE and R^2 (regression, in the outcome's
            units); NaN where a metric does not apply or is undefined.
        """
        rows = {}
        for spec, y_true, output in self._labelled_pairs(X, y):
            row = {"kind": spec.kind, "n_labelled": len(y_true)}
            if len(y_true) == 0:
                rows[spec.name] = row
            elif spec.is_classification:
                rows[spec.name] = row | classification_metrics(y_true, output)
            else:
                rows[spec.name] = row | regression_metrics(y_true, output)
        columns = ["kind", "n_labelled", *CLASSIFICATION_METRICS, *REGRESSION_METRICS]
        table = pd.DataFrame.from_dict(rows, orient="index").reindex(columns=columns)
        table.index.name = "outcome"
        return table

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
        check_is_fitted(self)
        features = self._feature_frame(X, reset=False)
        inputs = torch.from_numpy(self.preprocessor_.transform(features))
        device = self._torch_device()
        module = self.module_.to(device)
        try:
            raw = [out.double().cpu() for out in predict_module(module, inputs.to(device))]
        finally:
            self.module_.cpu()
        return features.index, [_decode(spec, out) for spec, out in zip(self._task_specs, raw)]

    def _labelled_pairs(self, X, y):
        """Yield (spec, true labels or class indices, predictions) on labelled rows."""
        index, outputs = self._predict_outputs(X)
        labels = self._label_frame_for_scoring(y, index)
        for spec, output in zip(self._task_specs, outputs):
            if spec.name not in labels.columns:
                continue
            targets, labelled = encode_targets(labels[[spec.name]], [spec])
            present = labelled[:, 0]
            if spec.is_classification:
                yield spec, targets[0][present], output[present]
            else:
                values = labels[spec.name].to_numpy(dtype=np.float64, na_value=np.nan)
                yield spec, values[present], output[present]

    def _label_frame_for_scoring(self, y, index: pd.Index) -> pd.DataFrame:
        labels = as_label_frame(y, index)
        names = [spec.name for spec in self._task_specs]
        named = isinstance(y, pd.DataFrame) or (isinstance(y, pd.Series) and isinstance(y.name, str))
        if not named:
            if labels.shape[1] != len(names):
                raise InputDataError(
                    f"Y has {labels.shape[1]} unnamed columns but the model has "
                    f"{len(names)} outcomes {names}; pass a DataFrame with outcome names."
                )
            return labels.set_axis(names, axis=1)
        unknown = [column for column in labels.columns if column not in names]
        if unknown:
            raise InputDataError(
                f"Y has columns {unknown} that are not outcomes of this model; "
                f"its outcomes are {names}."
            )
        return labels

    def _make_weighting(self, specs: list[TaskSpec]) -> TaskWeighting:
        names = [spec.name for spec in specs]
        if self.loss_weighting == EQUAL:
            return FixedWeighting([1.0] * len(specs))
        if self.loss_weighting == UNCERTAINTY:
            return UncertaintyWeighting([spec.kind == REGRESSION for spec in specs])
        weights = self.loss_weighting
        if set(weights) != set(names):
            raise TaskSpecificationError(
                f"loss_weighting gives weights for {sorted(map(str, weights))} but the "
                f"outcomes are {names}; pass one weight per outcome, 'equal' or 'uncertainty'."
            )
        values = [weights[name] for name in names]
        if not all(isinstance(v, Real) and np.isfinite(v) and v >= 0 for v in values) or not any(values):
            raise TaskSpecificationError(
                f"loss_weighting values must be finite, non-negative and not all 0, got {dict(weights)}."
            )
        return FixedWeighting([float(v) for v in values])

    def _class_weights(self, specs: list[TaskSpec], labels: pd.DataFrame) -> list[np.ndarray | None]:
        """Per outcome, a weight per class index (None for unweighted outcomes)."""
        setting = self.class_weight
        if setting is None:
            return [None] * len(specs)
        if isinstance(setting, str):
            setting = {spec.name: setting for spec in specs if spec.is_classification}
        classification = {spec.name for spec in specs if spec.is_classification}
        unknown = [name for name in setting if name not in classification]
        if unknown:
            raise TaskSpecificationError(
                f"class_weight names {unknown}, which are not classification outcomes "
                f"({sorted(classification)})."
            )
        weights = []
        for spec in specs:
            choice = setting.get(spec.name)
            if choice is None:
                weights.append(None)
            elif choice == "balanced":
                counts = np.array(list(class_counts(labels, spec).values()), dtype=np.float64)
                weights.append(counts.sum() / (len(counts) * counts))
            elif isinstance(choice, Mapping):
                stray = [label for label in choice if label not in spec.classes]
                if stray:
                    raise TaskSpecificationError(
                        f"class_weight for outcome {spec.name!r} names classes {stray} "
                        f"that are not among its classes {list(spec.classes)}."
                    )
                weights.append(np.array([float(choice.get(c, 1.0)) for c in spec.classes]))
            else:
                raise TaskSpecificationError(
                    f"class_weight for outcome {spec.name!r} must be 'balanced', None or a "
                    f"dict of class -> weight, got {choice!r}."
                )
        return weights

    @staticmethod
    def _check_every_task_trains(specs: list[TaskSpec], labelled_train: np.ndarray) -> None:
        empty = [spec.name for t, spec in enumerate(specs) if not labelled_train[:, t].any()]
        if empty:
            raise TaskSpecificationError(
                f"Outcomes {empty} have no labelled row left for training after the "
                "early-stopping split; provide more labels or set early_stopping=False."
            )

    def _torch_device(self) -> torch.device:
        try:
            device = torch.device(self.device)
        except RuntimeError as error:
            raise ValueError(f"device={self.device!r} is not a torch device: {error}") from error
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(
                f"device={self.device!r} was asked for, but torch finds no CUDA device here; "
                "use device='cpu'."
            )
        return device


def _decode(spec: TaskSpec, output: torch.Tensor) -> np.ndarray:
    """Head output (float64) -> class probabilities or a value in the outcome's units."""
    if spec.kind == BINARY:
        positive = torch.sigmoid(output[:, 0]).numpy()
        return np.column_stack([1.0 - positive, positive])
    if spec.is_classification:
        return torch.softmax(output, dim=1).numpy()
    return output[:, 0].numpy() * spec.target_scale + spec.target_mean

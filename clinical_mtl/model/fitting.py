"""How ``MultiTaskMLP.fit`` trains: the ensemble, each network on its own
early-stopping split, and what is fitted on the rows held out.

Functions of the estimator's parameters and the prepared data; they return what
was learnt and the estimator assigns it (it owns its fitted state).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..exceptions import TaskSpecificationError
from .calibration import fit_calibrator
from .conformal import (
    MIN_NORMALIZED_ROWS,
    NORMALIZED,
    conformal_scores,
    normalized_conformal,
)
from .labels import class_counts, class_weight_vectors, encode_targets, labelled_targets
from .losses import weighting_factory
from .metrics import metrics_table
from .network import build_network
from .preprocessing import STORED_DIGITS, round_significant
from .splitting import holdout_split
from .survival import SURVIVAL, describe_censoring, survival_labels
from .survival_metrics import kaplan_meier_curve
from .tasks import REGRESSION, TaskSpec, decode_outputs
from .training import (
    TaskData,
    TrainingSettings,
    fit_module,
    predict_module,
    resolve_device,
)

LABEL_PERCENTILES = np.arange(5, 96)
"""Percentiles of the training labels a model stores (``label_percentiles_``)."""


@dataclass
class FittedEnsemble:
    """What training the networks gave.

    Attributes
    ----------
    networks : list of MultiHeadNet
        On the CPU, in training order.
    history : list of dict
        Per member and epoch, the training record (``history_``).
    best_epochs, n_epochs : ndarray of int
        Per member.
    held_out : list of (ndarray, MultiHeadNet)
        The positions of the rows each member held out for early stopping,
        with the member (empty without early stopping).
    """

    networks: list
    history: list
    best_epochs: np.ndarray
    n_epochs: np.ndarray
    held_out: list


def label_summaries(labels: pd.DataFrame, specs) -> tuple[dict, dict, dict]:
    """``label_counts_`` (labelled rows, and events per class, or events and
    censored of a survival outcome), ``label_percentiles_``
    (``LABEL_PERCENTILES`` of every regression label) and ``cohort_survival_``
    (the Kaplan-Meier curve of every survival outcome at its cut points), all
    rounded to ``STORED_DIGITS``: summaries of many patients, never one."""
    counts = {spec.name: _label_counts(labels, spec) for spec in specs}
    percentiles = {
        spec.name: round_significant(np.percentile(labels[spec.name].dropna().to_numpy(dtype=float),
                                                   LABEL_PERCENTILES), STORED_DIGITS)
        for spec in specs if spec.kind == REGRESSION
    }
    cohort_survival = {
        spec.name: round_significant(kaplan_meier_curve(*survival_labels(labels, spec.name)[:2],
                                                        spec.cut_points)[0], STORED_DIGITS)
        for spec in specs if spec.kind == SURVIVAL
    }
    return counts, percentiles, cohort_survival


def _label_counts(labels: pd.DataFrame, spec: TaskSpec) -> dict:
    if spec.kind == SURVIVAL:
        return describe_censoring(*survival_labels(labels, spec.name)[:2])
    return {"n_labelled": int(labels[spec.name].notna().sum())} | (
        {"events": class_counts(labels, spec)} if spec.is_classification else {})


def fit_ensemble(model, specs, inputs: np.ndarray, labels: pd.DataFrame, seeds) -> FittedEnsemble:
    """Train ``len(seeds)`` networks with ``model``'s parameters, one seed each."""
    new_weighting = weighting_factory(model.loss_weighting, specs)
    class_weights = class_weight_vectors(specs, labels, model.class_weight)
    device = resolve_device(model.device)
    targets, labelled = encode_targets(labels, specs)
    row_weights = labelled.astype(np.float32)
    for t, weights in enumerate(class_weights):
        if weights is not None:
            row_weights[:, t] *= weights[targets[t]]
    data = TaskData(torch.from_numpy(inputs), [torch.from_numpy(t) for t in targets], torch.from_numpy(row_weights))
    fitted = FittedEnsemble([], [], [], [], [])
    for member, seed in enumerate(seeds):
        network, result, valid_rows = _fit_member(model, specs, data, targets, labelled, new_weighting,
                                                  int(seed), device)
        fitted.networks.append(network)
        if valid_rows is not None:
            fitted.held_out.append((valid_rows, network))
        fitted.history += [{"member": member} | record for record in result.history]
        fitted.best_epochs.append(result.best_epoch)
        fitted.n_epochs.append(result.n_epochs)
    fitted.best_epochs, fitted.n_epochs = np.asarray(fitted.best_epochs), np.asarray(fitted.n_epochs)
    return fitted


def _fit_member(model, specs, data: TaskData, targets, labelled: np.ndarray, new_weighting, seed: int,
                device: torch.device):
    """Train one network on its own early-stopping split.

    Returns the network (on the CPU), what training did and the positions of
    the rows it held out (None without early stopping).
    """
    train, valid, valid_rows = data, None, None
    if model.early_stopping:
        # A survival outcome is stratified on its event indicator, like a class.
        strata = [target[:, 1] if spec.kind == SURVIVAL else target for spec, target in zip(specs, targets)]
        train_rows, valid_rows = holdout_split(
            strata, labelled, [s.kind != REGRESSION for s in specs], model.validation_fraction, seed
        )
        check_every_task_trains(specs, labelled[train_rows])
        train = data.take(torch.from_numpy(train_rows))
        valid = data.take(torch.from_numpy(valid_rows)).to(device)
    network = build_network(
        data.X.shape[1], model.hidden_layer_sizes, [s.n_outputs for s in specs], model.dropout, seed
    ).to(device)
    settings = TrainingSettings(
        learning_rate=model.learning_rate,
        weight_decay=model.weight_decay,
        batch_size=model.batch_size,
        max_epochs=model.max_epochs,
        patience=model.patience,
        verbose=model.verbose,
    )
    result = fit_module(network, new_weighting().to(device), [s.name for s in specs], [s.kind for s in specs],
                        train.to(device), valid, settings, seed)
    return network.cpu(), result, valid_rows


def fit_held_out(model, specs, ensemble: FittedEnsemble, inputs: torch.Tensor, labels: pd.DataFrame,
                 seed: int) -> tuple[dict, dict, dict, pd.DataFrame | None]:
    """The recalibration (``calibrators_``), the conformal scores and scales
    (``conformal_scores_``, ``interval_scales_``) and the ``validation_metrics_``,
    fitted with ``model``'s parameters on the early-stopping rows, out of bag
    (``seed`` splits them for normalised intervals)."""
    calibration, interval_method = model.calibration, model.interval_method
    calibrators, scores, scales = {}, {}, {}
    if not ensemble.held_out:
        return calibrators, scores, scales, None
    seen, outputs = out_of_bag_outputs(specs, inputs, ensemble.held_out)
    held_labels = labels.iloc[seen]
    outcomes = []
    for spec, output in zip(specs, outputs):
        present, y_true = labelled_targets(held_labels, spec)
        output = output[present]
        if spec.kind == REGRESSION and interval_method == NORMALIZED and len(y_true) >= MIN_NORMALIZED_ROWS:
            held_inputs = inputs[torch.from_numpy(seen[present])].numpy()
            scales[spec.name], scores[spec.name] = normalized_conformal(held_inputs, y_true, output, seed)
        elif spec.kind == REGRESSION:
            scores[spec.name] = conformal_scores(y_true, output)
        elif spec.is_classification and calibration is not None:
            calibrator = fit_calibrator(calibration, output, y_true)
            if calibrator is not None:
                calibrators[spec.name] = calibrator
                output = calibrator.transform(output)
        outcomes.append((spec, y_true, output))
    return calibrators, scores, scales, metrics_table(outcomes)


def out_of_bag_outputs(specs, inputs: torch.Tensor, held_out: list) -> tuple[np.ndarray, list[np.ndarray]]:
    """Outputs of the early-stopping rows, each row predicted only by the members
    that held it out (never by one that trained on it), before recalibration.

    Returns the positions of the rows some member held out and, per outcome,
    their decoded outputs (probabilities or values in units) averaged over
    those members.
    """
    n_rows = len(inputs)
    sums: list[np.ndarray | None] = [None] * len(specs)
    counts = np.zeros(n_rows)
    for rows, network in held_out:
        raw = predict_module(network, inputs[torch.from_numpy(rows)])
        counts[rows] += 1
        for t, spec in enumerate(specs):
            decoded = decode_outputs(spec, raw[t].double().numpy()[None])
            if sums[t] is None:
                sums[t] = np.zeros((n_rows, *decoded.shape[1:]))
            sums[t][rows] += decoded
    seen = np.flatnonzero(counts > 0)
    return seen, [total[seen] / counts[seen].reshape(-1, *[1] * (total.ndim - 1)) for total in sums]


def check_every_task_trains(specs: list[TaskSpec], labelled_train: np.ndarray) -> None:
    """Refuse a split that leaves an outcome without a labelled training row."""
    empty = [spec.name for t, spec in enumerate(specs) if not labelled_train[:, t].any()]
    if empty:
        raise TaskSpecificationError(
            f"Outcomes {empty} have no labelled row left for training after the "
            "early-stopping split; provide more labels or set early_stopping=False."
        )


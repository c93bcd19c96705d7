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
from .early_stopping import PER_OUTCOME, kept_other_epochs
from .hooks import TrainingProgress, has_progress_listeners, notify_progress
from .labels import class_counts, class_weight_vectors, encode_targets, labelled_targets
from .metrics import metrics_table
from .network import build_network, head_layers, split_by_outcome
from .preprocessing import STORED_DIGITS, round_significant
from .splitting import holdout_split
from .stacked_training import covers, fit_stacked
from .survival import (
    AUTO_HEAD,
    COX_HEAD,
    COX_LOSS,
    INTERVAL_HEAD,
    MIXED_HEAD,
    PROPORTIONAL_HEAD,
    SURVIVAL,
    cohort_curve_times,
    describe_censoring,
    fit_interval_biases,
    survival_labels,
    survival_loss,
)
from .survival_metrics import kaplan_meier_curve
from .tasks import REGRESSION, TaskSpec, decode_outputs
from .training import (
    TaskData,
    TrainingSettings,
    auto_batch,
    fit_module,
    predict_module,
    resolve_device,
)
from .weighting import GRADIENT_BASED, weighting_factory

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
    outcome_epochs : ndarray of int, shape (n_members, n_outcomes)
        Per member and outcome, the epoch whose weights the outcome keeps
        (its own with per-outcome stopping, else the member's best epoch).
    held_out : list of (ndarray, MultiHeadNet)
        The positions of the rows each member held out for early stopping,
        with the member (empty without early stopping).
    """

    networks: list
    history: list
    best_epochs: np.ndarray
    n_epochs: np.ndarray
    held_out: list
    outcome_epochs: np.ndarray | None = None


def label_summaries(labels: pd.DataFrame, specs) -> tuple[dict, dict, dict, dict]:
    """``label_counts_`` (labelled rows, and events per class, or events and
    censored of a survival outcome), ``label_percentiles_``
    (``LABEL_PERCENTILES`` of every regression label), ``cohort_survival_``
    (the Kaplan-Meier curve of every survival outcome) and
    ``cohort_survival_times_`` (its times: ``cohort_curve_times``), all
    rounded to ``STORED_DIGITS``: summaries of many patients, never one."""
    counts = {spec.name: _label_counts(labels, spec) for spec in specs}
    percentiles = {
        spec.name: round_significant(np.percentile(labels[spec.name].dropna().to_numpy(dtype=float),
                                                   LABEL_PERCENTILES), STORED_DIGITS)
        for spec in specs if spec.kind == REGRESSION
    }
    survival = [spec for spec in specs if spec.kind == SURVIVAL]
    times = {spec.name: cohort_curve_times(spec.cut_points) for spec in survival}
    cohort_survival = {
        spec.name: round_significant(kaplan_meier_curve(*survival_labels(labels, spec.name)[:2],
                                                        times[spec.name])[0], STORED_DIGITS)
        for spec in survival
    }
    return counts, percentiles, cohort_survival, times


def _label_counts(labels: pd.DataFrame, spec: TaskSpec) -> dict:
    if spec.kind == SURVIVAL:
        return describe_censoring(*survival_labels(labels, spec.name)[:2])
    return {"n_labelled": int(labels[spec.name].notna().sum())} | (
        {"events": class_counts(labels, spec)} if spec.is_classification else {})


SURVIVAL_HEADS = (INTERVAL_HEAD, PROPORTIONAL_HEAD, COX_HEAD)  # in the order a tie is broken


def fit_survival_heads(model, specs, inputs: np.ndarray, labels: pd.DataFrame,
                       seeds) -> tuple[FittedEnsemble, str, dict[str, float]]:
    """Train the ensemble with ``model.survival_head``; ``"auto"`` trains it with each head and keeps the one
    whose survival outcomes have the lower held-out loss.

    The loss of a head is, per network, the sum over survival outcomes of the
    early-stopping rows' negative log-likelihood of the intervals
    (``survival_loss``) at the weights the network keeps, averaged over
    networks (``held_out_loss``). Every ensemble uses the same seeds, so the
    same early-stopping rows and batch orders: the comparison is paired.
    Without a survival outcome or without early stopping there is nothing to
    choose by, and ``"auto"`` means ``"interval"``.

    Returns
    -------
    ensemble : FittedEnsemble
    survival_head : str
        The head the survival outcomes got.
    losses : dict of str to float
        Per head tried by ``"auto"``, its held-out loss (empty otherwise).
    """
    survival = [spec.name for spec in specs if spec.kind == SURVIVAL]
    if model.survival_head != AUTO_HEAD or not survival or not model.early_stopping:
        head = INTERVAL_HEAD if model.survival_head == AUTO_HEAD else model.survival_head
        return fit_ensemble(model, specs, inputs, labels, seeds, head), head, {}
    fitted = {head: fit_ensemble(model, specs, inputs, labels, seeds, head) for head in SURVIVAL_HEADS}
    losses = {head: held_out_loss(ensemble, specs, inputs, labels, head) for head, ensemble in fitted.items()}
    chosen = min(SURVIVAL_HEADS, key=losses.get)
    return fitted[chosen], chosen, losses


@torch.no_grad()
def held_out_loss(ensemble: FittedEnsemble, specs, inputs: np.ndarray, labels: pd.DataFrame,
                  survival_head: str) -> float:
    """Mean over networks of the summed interval likelihood losses of the survival outcomes on each
    network's early-stopping rows.

    For the interval and proportional heads these are the losses the
    history recorded at each network's best epoch. The cox head's history
    holds partial likelihoods, which no other head's loss can be compared
    with; its loss is the intervals' one, with the biases fitted to the
    network's training rows alone (``fit_interval_biases``), so that the
    early-stopping rows stay unseen as they are for the other heads.
    """
    outcomes = [spec.name for spec in specs if spec.kind == SURVIVAL]
    if survival_head != COX_HEAD:
        history = pd.DataFrame(ensemble.history)
        best = history[history["epoch"] == history["member"].map(dict(enumerate(ensemble.best_epochs)))]
        return float(best[[f"valid_loss/{name}" for name in outcomes]].sum(axis=1).mean())
    targets, labelled = encode_targets(labels, specs)
    survival = [t for t, spec in enumerate(specs) if spec.kind == SURVIVAL]
    losses = []
    for valid_rows, network in ensemble.held_out:
        held_out = np.zeros(len(inputs), dtype=bool)
        held_out[valid_rows] = True
        outputs = predict_module(network, torch.from_numpy(inputs))
        total = 0.0
        for t in survival:
            bias = head_layers(network.heads[t])[1].bias
            effect, target = outputs[t][:, 0] - bias[0], torch.from_numpy(targets[t])
            train, valid = (torch.from_numpy(labelled[:, t] & rows) for rows in (~held_out, held_out))
            biases = fit_interval_biases(effect[train], target[train], len(bias)).to(effect.dtype)
            total += float(survival_loss(effect[valid, None] + biases, target[valid]).mean())
        losses.append(total)
    return float(np.mean(losses))


def fit_ensemble(model, specs, inputs: np.ndarray, labels: pd.DataFrame, seeds,
                 survival_head: str = INTERVAL_HEAD) -> FittedEnsemble:
    """Train ``len(seeds)`` networks with ``model``'s parameters, one seed each, survival outcomes
    with ``survival_head`` ("interval", "proportional", "cox" or "mixed": ``member_heads``)."""
    new_weighting = weighting_factory(model.loss_weighting, specs)
    class_weights = class_weight_vectors(specs, labels, model.class_weight)
    device = resolve_device(model.device)
    targets, labelled = encode_targets(labels, specs)
    row_weights = labelled.astype(np.float32)
    for t, weights in enumerate(class_weights):
        if weights is not None:
            row_weights[:, t] *= weights[targets[t]]
    data = TaskData(torch.from_numpy(inputs), [torch.from_numpy(t) for t in targets], torch.from_numpy(row_weights))
    seeds = [int(seed) for seed in seeds]
    heads = member_heads(survival_head, len(seeds))
    splits = [_member_split(model, specs, targets, labelled, seed) for seed in seeds]
    settings = training_settings(model, specs, n_train=len(splits[0][0]))
    networks = [_build_member(model, specs, inputs.shape[1], seed, head).to(device) for seed, head in zip(seeds, heads)]
    reports = ([_progress_reporter(model, specs, member, len(seeds)) for member in range(len(seeds))]
               if has_progress_listeners() else None)
    kinds = [[COX_LOSS if s.kind == SURVIVAL and head == COX_HEAD else s.kind for s in specs] for head in heads]
    weightings = [new_weighting().to(device) for _ in seeds]
    names = [s.name for s in specs]
    if len(seeds) > 1 and covers(settings, model.loss_weighting):
        # one loss kind per task, or per member where a mixed survival head's networks differ
        task_kinds = [own[0] if len(set(own)) == 1 else own for own in zip(*kinds)]
        results = fit_stacked(
            networks, model.dropout, weightings, names, task_kinds, data.to(device),
            [torch.from_numpy(train) for train, _ in splits],
            [torch.from_numpy(valid) for _, valid in splits] if model.early_stopping else None,
            settings, seeds, reports)
    else:
        results = [_fit_apart(network, weighting, names, own, data, split, settings, seed, device,
                              None if reports is None else reports[member])
                   for member, (network, weighting, own, split, seed)
                   in enumerate(zip(networks, weightings, kinds, splits, seeds))]
    kept = np.asarray([_kept_epochs(result, len(specs)) for result in results], dtype=int)
    # Split every member alike, as saving needs, once any outcome keeps other weights than its member's best.
    if kept_other_epochs(kept, [result.best_epoch for result in results]):
        networks = [split_by_outcome(network, result.outcome_states, model.dropout)
                    for network, result in zip(networks, results)]
    fitted = FittedEnsemble([], [], [], [], [])
    for member, (network, result, (_, valid_rows)) in enumerate(zip(networks, results, splits)):
        fitted.networks.append(_fit_cox_baselines(network.cpu(), kinds[member], data))
        if valid_rows is not None:
            fitted.held_out.append((valid_rows, network))
        fitted.history += [{"member": member} | record for record in result.history]
        fitted.best_epochs.append(result.best_epoch)
        fitted.n_epochs.append(result.n_epochs)
    fitted.best_epochs, fitted.n_epochs = np.asarray(fitted.best_epochs), np.asarray(fitted.n_epochs)
    fitted.outcome_epochs = kept
    return fitted


def member_heads(survival_head: str, n_members: int) -> list[str]:
    """Each network's survival head: ``survival_head``, or for "mixed" the interval head on the first,
    third, ... network and the cox head on the others (one network: the interval head)."""
    if survival_head != MIXED_HEAD:
        return [survival_head] * n_members
    return [(INTERVAL_HEAD, COX_HEAD)[member % 2] for member in range(n_members)]


@torch.no_grad()
def _fit_cox_baselines(network, kinds, data: TaskData):
    """``network`` with the interval biases of each survival outcome trained by Cox's partial likelihood
    (which leaves biases alone) fitted by maximum likelihood on every labelled row of the fit, its risk
    scores held fixed (``fit_interval_biases``)."""
    for t, kind in enumerate(kinds):
        if kind != COX_LOSS:
            continue
        rows = data.weights[:, t] > 0
        output = head_layers(network.heads[t])[1]
        effect = predict_module(network, data.X[rows])[t][:, 0] - output.bias[0]
        output.bias.copy_(fit_interval_biases(effect, data.targets[t][rows], output.out_features))
    return network


def _kept_epochs(result, n_outcomes: int) -> list[int]:
    """The epoch whose weights each outcome of a trained network keeps: its own best with per-outcome
    stopping, the joint objective's for an outcome not watched alone (or without per-outcome stopping)."""
    if result.outcome_states is None:
        return [result.best_epoch] * n_outcomes
    return [epoch if state is not None else result.best_epoch
            for epoch, state in zip(result.outcome_epochs, result.outcome_states)]


def _progress_reporter(model, specs, member: int, n_members: int):
    """The ``on_epoch`` callback of one network: tells the progress listeners (see ``hooks``)."""
    outcomes = tuple(spec.name for spec in specs)

    def report(record: dict, best_epoch: int, best_loss: float | None, done: bool = False) -> None:
        notify_progress(model, TrainingProgress(
            outcomes, member, n_members, record["epoch"], model.max_epochs, record["train_loss"],
            record.get("valid_loss"), best_loss, best_epoch, done))

    return report


def head_hidden_sizes(setting, specs) -> list[tuple[int, ...]]:
    """Per outcome, the widths of its head's own hidden layers.

    Parameters
    ----------
    setting : tuple of int or dict of str to tuple of int
        ``head_hidden_layer_sizes``: the same layers for every head, or per
        outcome (an outcome left out gets none).
    specs : sequence of TaskSpec

    Raises
    ------
    TaskSpecificationError
        If a mapping names an unknown outcome or a width is not a positive integer.
    """
    names = [spec.name for spec in specs]
    if isinstance(setting, dict):
        unknown = sorted(map(str, set(setting) - set(names)))
        if unknown:
            raise TaskSpecificationError(
                f"head_hidden_layer_sizes names {unknown}, which are not outcomes; the outcomes are {names}.")
        sizes = [tuple(setting.get(name, ())) for name in names]
    else:
        sizes = [tuple(setting)] * len(names)
    if not all(isinstance(w, (int, np.integer)) and not isinstance(w, bool) and w > 0 for layers in sizes for w in layers):
        raise TaskSpecificationError(
            f"head_hidden_layer_sizes must give positive integer widths, got {setting!r}.")
    return [tuple(int(w) for w in layers) for layers in sizes]


def training_settings(model, specs, n_train: int) -> TrainingSettings:
    """The ``TrainingSettings`` of ``model``'s parameters, checked against its outcomes,
    for ``n_train`` training rows (what ``batch_size="auto"`` reads).

    Raises
    ------
    TaskSpecificationError
        If ``head_weight_decay`` names an unknown outcome or gives a negative or
        non-finite decay, alternate training is combined with a weighting that
        needs every task's gradient in one step, or soft sharing with an
        option that needs a shared trunk.
    """
    soft = model.sharing == "soft"
    if soft and (model.loss_weighting in GRADIENT_BASED or model.self_supervision > 0 or not model.hidden_layer_sizes):
        raise TaskSpecificationError(
            "sharing='soft' gives every outcome a trunk of its own, tied by a penalty: it needs hidden_layer_sizes, "
            "and there is no shared layer for loss_weighting='gradnorm'/'pcgrad' or self_supervision to act on.")
    if model.training == "alternate" and model.loss_weighting in GRADIENT_BASED:
        raise TaskSpecificationError(
            f"training='alternate' optimises one outcome per step, so loss_weighting="
            f"{model.loss_weighting!r} has no gradients to balance; use 'equal', 'uncertainty', 'dwa' or a dict.")
    names = [spec.name for spec in specs]
    decay = model.head_weight_decay
    if isinstance(decay, dict):
        unknown = sorted(map(str, set(decay) - set(names)))
        if unknown:
            raise TaskSpecificationError(
                f"head_weight_decay names {unknown}, which are not outcomes; the outcomes are {names}.")
        decay = tuple(decay.get(name, model.weight_decay) for name in names)
    elif decay is not None:
        decay = (decay,) * len(names)
    if decay is not None and not all(np.isfinite(d) and d >= 0 for d in decay):
        raise TaskSpecificationError(f"head_weight_decay values must be finite and >= 0, got {model.head_weight_decay}.")
    batch_size, learning_rate = auto_batch(n_train, model.batch_size, model.learning_rate)
    return TrainingSettings(
        learning_rate=learning_rate,
        weight_decay=model.weight_decay,
        batch_size=batch_size,
        max_epochs=model.max_epochs,
        patience=model.patience,
        verbose=model.verbose,
        training=model.training,
        head_weight_decay=None if decay is None else tuple(float(d) for d in decay),
        self_supervision=float(model.self_supervision),
        tied_layers=len(model.hidden_layer_sizes) if soft else 0,
        sharing_strength=float(model.sharing_strength),
        per_outcome_stopping=model.early_stopping == PER_OUTCOME,
    )


def _member_split(model, specs, targets, labelled: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
    """One network's training rows and early-stopping rows (None without early stopping)."""
    if not model.early_stopping:
        return np.arange(len(labelled)), None
    # A survival outcome is stratified on its event indicator, like a class.
    strata = [target[:, 1] if spec.kind == SURVIVAL else target for spec, target in zip(specs, targets)]
    train_rows, valid_rows = holdout_split(
        strata, labelled, [s.kind != REGRESSION for s in specs], model.validation_fraction, seed
    )
    check_every_task_trains(specs, labelled[train_rows])
    return train_rows, valid_rows


def _fit_apart(network, weighting, names, kinds, data: TaskData, split, settings: TrainingSettings, seed: int,
               device: torch.device, report=None):
    """Train one network alone on its split (``fit_module``), then tell ``report`` it is done."""
    train, valid = split
    result = fit_module(network, weighting, names, kinds, data.take(torch.from_numpy(train)).to(device),
                        data.take(torch.from_numpy(valid)).to(device) if valid is not None else None,
                        settings, seed, on_epoch=report)
    if report is not None and result.history:
        best = result.history[result.best_epoch - 1].get("valid_loss")
        report(result.history[-1], result.best_epoch if valid is not None else 0, best, done=True)
    return result


def _build_member(model, specs, n_inputs: int, seed: int, survival_head: str):
    """One untrained network of ``model``'s architecture, its weights drawn from ``seed``."""
    trunk, heads = tuple(model.hidden_layer_sizes), head_hidden_sizes(model.head_hidden_layer_sizes, specs)
    if model.sharing == "soft":  # one trunk per outcome: the trunk's layers become each head's first layers
        trunk, heads = (), [trunk + own for own in heads]
    tied = [spec.kind == SURVIVAL and survival_head in (PROPORTIONAL_HEAD, COX_HEAD) for spec in specs]
    return build_network(n_inputs, trunk, [s.n_outputs for s in specs], model.dropout, seed, heads, tied)


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


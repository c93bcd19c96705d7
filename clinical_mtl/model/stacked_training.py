"""Training an ensemble's members together: one batched step for all of them.

Each member keeps what ``fit_module`` gives it alone: its own training and
early-stopping rows, its own batch order (the same permutations), its own
task weighting, early stopping and history. Only the arithmetic is shared:
the members' weights are stacked (``StackedMultiHeadNet``) and every step
runs all of them in a few batched matrix products, which on a CPU costs
little more than one small network's step. A member that has stopped early
keeps being computed (dropping it would cost a copy of every weight) but its
best weights are kept aside and put back at the end.

One difference remains, on purpose: AdamW steps a stacked weight as a
whole, so in a batch where one member has no label for a task (rare at the
default batch sizes unless labels are very scarce) that member's head for
the task gets a zero gradient and still takes AdamW's momentum and decay
step, where alone it would not move. The gradient itself is exactly zero, as
alone.

Used by ``fitting.fit_ensemble`` for every setting it covers (``covers``);
the others train the members one at a time with ``fit_module``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ..exceptions import TrainingDivergedError
from .early_stopping import OutcomeStopping, keeps_training
from .losses import FixedWeighting, TaskWeighting, row_losses
from .network import MultiHeadNet
from .optimizer import decoupled_adamw
from .relatedness import RELATEDNESS_EVERY, measurement_rows
from .stacked_network import StackedMultiHeadNet
from .training import (
    ALTERNATE,
    TaskData,
    TrainingResult,
    TrainingSettings,
    epoch_record,
    task_gradient_cosines,
)
from .weighting import GRADIENT_BASED


def covers(settings: TrainingSettings, loss_weighting) -> bool:
    """Whether ``fit_stacked`` trains members with these settings (else ``fit_module`` does).

    Not: weightings that act on per-task gradients and self-supervision (their
    extra modules are per network), nor alternate training, where every step
    leaves the other tasks' heads without a gradient and so unmoved, which a
    stacked weight shared with members stepping another task cannot do.
    """
    return (loss_weighting not in GRADIENT_BASED and settings.self_supervision == 0
            and settings.training != ALTERNATE)


class _MemberRows:
    """Per member, positions of its rows in the full data, padded to one length.

    ``rows`` is (n_members, longest); ``valid`` is 1 for a real row and 0 for
    padding (a copy of the member's first row), which therefore weighs 0 in
    every loss, exactly like an unlabelled row.
    """

    def __init__(self, positions: Sequence[Tensor], device: torch.device) -> None:
        longest = max(len(p) for p in positions)
        self.lengths = [len(p) for p in positions]
        self.rows = torch.stack([torch.cat([p, p[:1].expand(longest - len(p))]) for p in positions]).to(device)
        self.valid = (torch.arange(longest)[None, :] < torch.tensor(self.lengths)[:, None]).float().to(device)

    def shuffled(self, generators: Sequence[torch.Generator]) -> tuple[Tensor, Tensor]:
        """Each member's rows in its own random order (``randperm`` of its
        generator, as ``fit_module`` draws it), padding last."""
        order = torch.stack([
            torch.cat([torch.randperm(n, generator=g), torch.arange(n, self.rows.shape[1])])
            for n, g in zip(self.lengths, generators)
        ]).to(self.rows.device)
        return self.rows.gather(1, order), self.valid.gather(1, order)


def _member_data(data: TaskData, rows: Tensor, row_valid: Tensor) -> tuple[Tensor, list[Tensor], Tensor]:
    """Inputs, targets and row weights of each member's ``rows`` (n_members, n): padding weighs 0."""
    gathered = data.take(rows.reshape(-1))  # index_select of flat rows: faster than indexing with 2-d rows

    def by_member(t: Tensor) -> Tensor:
        return t.view(*rows.shape, *t.shape[1:])

    return (by_member(gathered.X), [by_member(t) for t in gathered.targets],
            by_member(gathered.weights) * row_valid[..., None])


def member_losses(outputs: Sequence[Tensor], targets: Sequence[Tensor], weights: Tensor,
                  task_kinds: Sequence[str], rows: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Every member's weighted mean loss of every task on its own rows.

    Parameters
    ----------
    outputs : list of Tensor of shape (n_members, n, width)
    targets : list of Tensor of shape (n_members, n) or (n_members, n, 3)
    weights : Tensor of shape (n_members, n, n_tasks)
        Row weights, 0 for unlabelled rows and padding.
    rows : Tensor of shape (n_members, 1), optional
        Each member's real rows: every loss is then its weighted sum over
        them (``TaskWeighting.batch_mean``) instead of over its labelled rows.

    Returns
    -------
    losses : Tensor of shape (n_members, n_tasks)
        0 where a member had no labelled row for a task.
    weight_totals : Tensor of shape (n_members, n_tasks)
    """
    totals = weights.sum(dim=1)
    per_row = torch.stack([_task_row_losses(out, target, kind, weights[..., t])
                           for t, (out, target, kind) in enumerate(zip(outputs, targets, task_kinds))], dim=2)
    return (per_row * weights).sum(dim=1) / (totals if rows is None else rows).clamp_min(1e-30), totals


def _task_row_losses(output: Tensor, target: Tensor, kind, weight: Tensor) -> Tensor:
    """Every member's row losses of one task: ``row_losses`` of its kind, or of each member's own kind
    where ``kind`` gives one per member (a mixed survival head), each kind on its members at once."""
    if isinstance(kind, str):
        return row_losses(output, target, kind, weight)
    groups, back = _kind_groups(kind, output.device)
    parts = [row_losses(output[members], target[members], own, weight[members]) for own, members in groups]
    return torch.cat(parts)[back]


@functools.cache  # the same few tuples in every step of a fit: index tensors built once, not per step
def _kind_groups(kind: tuple, device: torch.device) -> tuple[list[tuple[str, Tensor]], Tensor]:
    """Per loss kind in ``kind``, the members that have it; and the permutation that puts the
    concatenated groups back in member order."""
    groups = [(own, [m for m, member_kind in enumerate(kind) if member_kind == own]) for own in dict.fromkeys(kind)]
    order = torch.tensor([m for _, members in groups for m in members], device=device)
    return [(own, torch.tensor(members, device=device)) for own, members in groups], torch.argsort(order)


def _member_kinds(task_kinds, m: int) -> list[str]:
    """Member ``m``'s loss kind of every task (``fit_stacked``'s ``task_kinds``)."""
    return [kind if isinstance(kind, str) else kind[m] for kind in task_kinds]


def fit_stacked(
    members: Sequence[MultiHeadNet],
    dropout: float,
    weightings: Sequence[TaskWeighting],
    task_names: Sequence[str],
    task_kinds: Sequence[str],
    data: TaskData,
    train_rows: Sequence[Tensor],
    valid_rows: Sequence[Tensor] | None,
    settings: TrainingSettings,
    seeds: Sequence[int],
    on_epoch: Sequence[Callable] | None = None,
) -> list[TrainingResult]:
    """Train ``members`` and their ``weightings`` in place, all in one batched pass.

    What each member ends with is what ``fit_module`` would give it on
    ``data.take(train_rows[m])`` and ``data.take(valid_rows[m])`` with seed
    ``seeds[m]``: the same batches, losses, early stopping and history (the
    same weights without dropout, up to float rounding; dropout masks are
    drawn differently).

    Parameters
    ----------
    members : sequence of MultiHeadNet
        Initialised, same architecture, on ``data``'s device.
    dropout : float
        Their dropout probability.
    weightings : sequence of TaskWeighting
        One per member, not gradient-based (see ``covers``).
    task_names : sequence of str
    task_kinds : sequence of str or of tuple of str
        Per task its loss kind, or a tuple with each member's (a mixed
        survival head's networks train with different losses).
    data : TaskData
        Every row, on the members' device.
    train_rows, valid_rows : sequence of Tensor of int64
        Per member, positions in ``data`` of its training and early-stopping
        rows (``valid_rows`` None: no early stopping).
    settings : TrainingSettings
    seeds : sequence of int
        Per member, seeds its batch order; the first also seeds dropout.
        The global random state is restored.
    on_epoch : sequence of callable, optional
        Per member, called like ``fit_module``'s ``on_epoch`` after each of
        its epochs, then once more with ``done=True`` and its last record
        when it stops.

    Returns
    -------
    list of TrainingResult
        One per member.
    """
    device = data.X.device
    n_members = len(members)
    data = data.for_training(task_kinds)
    # on the members' device; one output weight for all heads unless each has its own decay
    stacked = StackedMultiHeadNet(members, dropout, combine_heads=settings.head_weight_decay is None)
    optimizer = _stacked_optimizer(stacked, weightings, settings, device)
    generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds]
    train = _MemberRows(train_rows, device)
    valid = None  # the early-stopping rows, gathered once
    if valid_rows is not None:
        held_out = _MemberRows(valid_rows, device)
        valid = _member_data(data, held_out.rows, held_out.valid)
    measured = None
    if len(members[0].trunk) and len(task_kinds) > 1:
        measured = [data.take(rows[torch.from_numpy(measurement_rows(len(rows), int(seed))).to(rows.device)])
                    for rows, seed in zip(train_rows, seeds)]
    results = [TrainingResult() for _ in members]
    active = [True] * n_members
    per_outcome = settings.per_outcome_stopping and valid is not None
    best = [_Best(OutcomeStopping.of_validation_rows(valid[2][m]) if per_outcome else None) for m in range(n_members)]
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(int(seeds[0]))
        for epoch in range(1, settings.max_epochs + 1):
            train_losses = _train_epoch(stacked, weightings, task_kinds, data, train, optimizer, settings.batch_size,
                                        generators, active, settings)
            valid_losses = _evaluate(stacked, task_kinds, valid) if valid is not None else None
            for m in (m for m in range(n_members) if active[m]):
                record = epoch_record(epoch, task_names, train_losses[m], weightings[m])
                weightings[m].end_epoch(train_losses[m])
                if measured is not None and (epoch - 1) % RELATEDNESS_EVERY == 0:
                    network = stacked.copy_to(m, members[m])
                    record |= task_gradient_cosines(network, task_names, _member_kinds(task_kinds, m), measured[m],
                                                    list(network.trunk.parameters()))
                results[m].history.append(record)
                if valid_losses is not None:
                    active[m] = _early_stopping(m, record, valid_losses, stacked, weightings[m], best[m], task_names,
                                                settings)
                report = None if on_epoch is None else on_epoch[m]
                if report is not None:
                    report(record, best[m].epoch, best[m].objective if valid is not None else None)
                    if not active[m]:
                        report(record, best[m].epoch, best[m].objective, done=True)
            if not any(active):
                break
    for m, result in enumerate(results):
        result.n_epochs = len(result.history)
        result.best_epoch = best[m].epoch if best[m].state is not None else result.n_epochs
        if best[m].outcomes is not None:
            result.outcome_epochs = best[m].outcomes.epochs
            result.outcome_states = [None if state is None else _as_network_state(stacked, m, state, members[m])
                                     for state in best[m].outcomes.states]
        if best[m].state is not None:
            stacked.load_member_state(m, best[m].state)
            weightings[m].load_state_dict(best[m].weighting_state)
        if active[m] and on_epoch is not None and result.history:  # ran to max_epochs
            on_epoch[m](result.history[-1], best[m].epoch, best[m].objective if valid is not None else None,
                        done=True)
        stacked.copy_to(m, members[m])
    return results


class _Best:
    """A member's best epoch so far, its validation objective and weights (and per outcome, with
    per-outcome stopping)."""

    def __init__(self, outcomes: OutcomeStopping | None = None) -> None:
        self.epoch, self.objective, self.state, self.weighting_state = 0, math.inf, None, None
        self.outcomes = outcomes


def _as_network_state(stacked: StackedMultiHeadNet, m: int, state, network: MultiHeadNet) -> dict:
    """Member ``m``'s weights ``state`` (``member_state``) as ``network``'s ``state_dict``."""
    stacked.load_member_state(m, state)
    return {key: value.detach().clone() for key, value in stacked.copy_to(m, network).state_dict().items()}


def _early_stopping(m: int, record: dict, valid_losses, stacked: StackedMultiHeadNet, weighting: TaskWeighting,
                    best: _Best, task_names, settings: TrainingSettings) -> bool:
    """Record member ``m``'s validation losses, keep its weights if best so far;
    whether it trains on (``fit_module``'s rule)."""
    losses, present = valid_losses
    objective = weighting.validation_objective(
        [losses[m, t] if present[m][t] else None for t in range(len(task_names))]).item()
    record["valid_loss"] = objective
    values = [losses[m, t].item() if present[m][t] else None for t in range(len(task_names))]
    for name, value in zip(task_names, values):
        record[f"valid_loss/{name}"] = math.nan if value is None else value
    if settings.verbose:
        print(f"member {m}  epoch {record['epoch']:4d}  train {record['train_loss']:.4f}  valid {objective:.4f}")
    improved = objective < best.objective
    if improved:
        best.epoch, best.objective = record["epoch"], objective
        best.state, best.weighting_state = stacked.member_state(m), _weighting_state(weighting)
    if best.outcomes is not None:  # an epoch that improved the joint objective is already snapshotted
        best.outcomes.update(record["epoch"], values, lambda: best.state if improved else stacked.member_state(m))
    return keeps_training(record["epoch"], best.epoch, settings.patience)


def _train_epoch(stacked: StackedMultiHeadNet, weightings, task_kinds, data: TaskData, train: _MemberRows,
                 optimizer, batch_size: int, generators, active: list[bool],
                 settings: TrainingSettings) -> list[list[float]]:
    """One pass of every member over its rows; per member, each task's mean loss (NaN if absent).

    Like ``training.train_epoch`` member by member: a batch where a member
    has no label adds nothing to its loss, and a non-finite loss of a member
    still training raises ``TrainingDivergedError``. With soft sharing, each
    member still training adds its penalty in every batch of its own rows,
    labelled or not.
    """
    stacked.train()
    rows, row_valid = train.shuffled(generators)
    X, targets, weights = _member_data(data, rows, row_valid)
    # Fixed weights (the default "equal", label share) combine all members' losses in one product, without a sync.
    fixed = (torch.stack([w.weights for w in weightings])
             if all(isinstance(w, FixedWeighting) for w in weightings) else None)
    training = torch.tensor(active, device=rows.device)[:, None]
    loss_sums = torch.zeros(len(weightings), len(task_kinds), device=rows.device)
    weight_sums = torch.zeros_like(loss_sums)
    batch_mean = weightings[0].batch_mean
    for start in range(0, rows.shape[1], batch_size):
        batch = slice(start, start + batch_size)
        outputs = stacked(X[:, batch])
        real_rows = row_valid[:, batch].sum(dim=1, keepdim=True) if batch_mean else None
        losses, totals = member_losses(outputs, [target[:, batch] for target in targets], weights[:, batch],
                                       task_kinds, real_rows)
        if fixed is not None:
            stepped = (totals > 0) & training
            loss, steps = (torch.where(stepped, losses * fixed, 0.0).sum(), ()) if stepped.any() else (None, ())
        else:
            loss, steps = _combine(weightings, losses, totals, active)
        if settings.tied_layers:
            own_rows = (row_valid[:, start] > 0) & training[:, 0]  # padding comes last, in batches of its own
            if own_rows.any():
                penalties = stacked.soft_sharing_penalty(settings.tied_layers)
                penalty = settings.sharing_strength * (penalties * own_rows).sum()
                loss = penalty if loss is None else loss + penalty
        if loss is not None:
            if not torch.isfinite(loss):
                raise TrainingDivergedError(
                    f"The training loss became {loss.item()} in a batch (task losses of the members "
                    f"{losses.detach().tolist()}); lower learning_rate or check the targets for extreme values.")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.lean_step()
            for weighting, stepped_losses in steps:
                weighting.after_step(stepped_losses)
        loss_sums.addcmul_(losses.detach(), totals if real_rows is None else real_rows)
        weight_sums += totals
    return (loss_sums / weight_sums).tolist()


def _combine(weightings, losses: Tensor, totals: Tensor, active: list[bool]):
    """The step's objective, each member's weighting applied to its own task
    losses; and per member stepped, its weighting and the losses it saw (None
    when no member has a label)."""
    present = (totals > 0).tolist()
    terms, steps = [], []
    for m, weighting in enumerate(weightings):
        if not active[m] or not any(present[m]):
            continue
        stepped = [losses[m, t] if present[m][t] else None for t in range(losses.shape[1])]
        terms.append(weighting(stepped))
        steps.append((weighting, stepped))
    return (torch.stack(terms).sum(), steps) if terms else (None, ())


@torch.no_grad()
def _evaluate(stacked: StackedMultiHeadNet, task_kinds, valid: tuple[Tensor, list[Tensor], Tensor]):
    """Every member's mean loss of every task over its early-stopping rows (``_member_data``), and which it has."""
    stacked.eval()
    X, targets, weights = valid
    losses, totals = member_losses(stacked(X), targets, weights, task_kinds)
    return losses, (totals > 0).tolist()


def _stacked_optimizer(stacked: StackedMultiHeadNet, weightings, settings: TrainingSettings,
                       device: torch.device) -> torch.optim.Optimizer:
    """``training``'s optimiser for the stacked weights (the biases, stacked, are 3-d too)."""
    heads = stacked.head_parameters() if settings.head_weight_decay is not None else None
    others = list(stacked.biases) + [p for w in weightings for p in w.parameters()]
    return decoupled_adamw(stacked.weights, others, settings, device, heads)


def _weighting_state(weighting: TaskWeighting) -> dict:
    return {key: value.detach().clone() for key, value in weighting.state_dict().items()}

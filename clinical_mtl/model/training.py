"""The training loop: batches, optimiser, early stopping and history.

Data live as tensors in memory. Each epoch draws one permutation and walks
contiguous slices of the permuted tensors, which costs far less per batch
than a ``DataLoader``. Nothing here imports pandas or scikit-learn.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

import torch
from torch import Tensor, nn

from ..exceptions import TrainingDivergedError
from .early_stopping import OutcomeStopping, keeps_training
from .losses import TaskWeighting, masked_task_loss
from .network import soft_sharing_penalty
from .optimizer import LeanAdamW, decoupled_adamw
from .relatedness import RELATEDNESS_EVERY, gradient_cosines, measurement_rows
from .self_supervision import MaskedFeatureReconstruction
from .tasks import BINARY

INFERENCE_BATCH_SIZE = 4096
JOINT, ALTERNATE = "joint", "alternate"
LARGE_TRAINING_SET = 1024
"""Training rows from which ``batch_size="auto"`` takes large batches (see ``auto_batch``)."""


def auto_batch(n_train: int, batch_size="auto", learning_rate="auto") -> tuple[int, float]:
    """The batch size and learning rate that ``"auto"`` stands for, for ``n_train`` training rows.

    128 rows at 2e-3 from ``LARGE_TRAINING_SET`` rows up, else 32 at 1e-3
    (a rate 1e-3 x sqrt(batch / 32) when only the batch size is given).
    Large batches cost an ensemble trained together little more than one
    network (5x to 10x faster fits at 4,000-6,300 patients, the same
    accuracy on six cohorts); small tables keep at least 32 steps per epoch.

    Examples
    --------
    >>> auto_batch(300), auto_batch(5000), auto_batch(5000, 512)
    ((32, 0.001), (128, 0.002), (512, 0.004))
    """
    if batch_size == "auto":
        batch_size = 128 if n_train >= LARGE_TRAINING_SET else 32
    if learning_rate == "auto":
        learning_rate = round(1e-3 * math.sqrt(batch_size / 32), 6)
    return int(batch_size), float(learning_rate)


@dataclass
class TaskData:
    """Inputs, targets and row weights of a set of patients, as tensors.

    Parameters
    ----------
    X : Tensor of shape (n, n_features), float32
    targets : list of Tensor of shape (n,)
        Per task: int64 class indices or float32 standardised values.
    weights : Tensor of shape (n, n_tasks), float32
        0 where a row has no label for a task, else its (class) weight.
    """

    X: Tensor
    targets: list[Tensor]
    weights: Tensor

    def __len__(self) -> int:
        return self.X.shape[0]

    def take(self, index: Tensor) -> TaskData:
        """The rows at ``index``, in that order."""
        # index_select gathers rows about 4x faster than advanced indexing on the CPU.
        rows = partial(torch.index_select, dim=0, index=index)
        return TaskData(rows(self.X), [rows(t) for t in self.targets], rows(self.weights))

    def for_training(self, task_kinds: Sequence[str]) -> TaskData:
        """Row-major tensors (every epoch gathers whole rows) and binary targets as
        floats, as their loss takes them; copies only where needed."""
        targets = [t.float() if kind == BINARY else t for t, kind in zip(self.targets, task_kinds)]
        return TaskData(self.X.contiguous(), [t.contiguous() for t in targets], self.weights.contiguous())

    def to(self, device: torch.device) -> TaskData:
        """A copy on ``device``."""
        return TaskData(
            self.X.to(device), [t.to(device) for t in self.targets], self.weights.to(device)
        )


@dataclass(frozen=True)
class TrainingSettings:
    """Optimisation settings of ``fit_module``.

    The first six have no default: the caller (the estimator) gives each. The
    multi-task options default to plain joint training.

    Attributes
    ----------
    training : {"joint", "alternate"}
        Every step on the weighted sum of the task losses, or each step on one
        task's loss, the tasks present in the batch taken in rotation.
    head_weight_decay : tuple of float or None
        Per task, the weight decay of its head's matrices (None: ``weight_decay``).
    self_supervision : float
        Weight of the masked-feature reconstruction loss on the trunk (0: off).
    tied_layers, sharing_strength : int, float
        Soft parameter sharing: the first ``tied_layers`` hidden layers of
        every head are pulled together by ``sharing_strength`` times
        ``soft_sharing_penalty`` (0: none).
    per_outcome_stopping : bool
        Early stopping per outcome (see ``OutcomeStopping``) rather than on
        the joint validation objective.
    """

    learning_rate: float
    weight_decay: float
    batch_size: int
    max_epochs: int
    patience: int
    verbose: int
    training: str = JOINT
    head_weight_decay: tuple | None = None
    self_supervision: float = 0.0
    tied_layers: int = 0
    sharing_strength: float = 0.0
    per_outcome_stopping: bool = False


@dataclass
class TrainingResult:
    """What a call of ``fit_module`` did.

    Attributes
    ----------
    history : list of dict
        One record per epoch: ``epoch``, ``train_loss``, ``valid_loss`` (with a
        validation set), and per task ``train_loss/<task>``,
        ``valid_loss/<task>``, ``weight/<task>`` (and ``sigma/<task>`` for
        uncertainty weighting); every ``RELATEDNESS_EVERY`` epochs from the
        first, ``grad_cosine/<task>/<other task>`` (see
        :mod:`clinical_mtl.model.relatedness`).
    best_epoch : int
        Epoch (from 1) whose weights the module holds on return.
    n_epochs : int
        Epochs run.
    outcome_epochs, outcome_states : list or None
        With per-outcome stopping, per task the epoch of its lowest validation
        loss and the module's ``state_dict`` then (0 and None for a task
        without validation labels); else None.
    """

    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    n_epochs: int = 0
    outcome_epochs: list[int] | None = None
    outcome_states: list[dict | None] | None = None


def fit_module(
    module: nn.Module,
    weighting: TaskWeighting,
    task_names: Sequence[str],
    task_kinds: Sequence[str],
    train: TaskData,
    valid: TaskData | None,
    settings: TrainingSettings,
    seed: int,
    on_epoch: Callable[[dict, int, float | None], None] | None = None,
) -> TrainingResult:
    """Train ``module`` and ``weighting`` in place.

    With a validation set, training stops once the validation objective has
    not improved for ``settings.patience`` epochs and the weights of the best
    epoch are restored; without one, it runs ``settings.max_epochs`` epochs.

    Parameters
    ----------
    module : nn.Module
        Returns one output tensor per task.
    weighting : TaskWeighting
        Combines the task losses; its parameters (if any) are trained too.
    task_names, task_kinds : sequence of str
        Per task, its name (for the history) and kind (for its loss).
    train, valid : TaskData
        Training rows, and validation rows or None, on the module's device.
    settings : TrainingSettings
    seed : int
        Seeds the batch order and dropout; the global random state is restored.
    on_epoch : callable, default=None
        Called after every epoch with the epoch's history record, the best
        epoch so far and its validation objective (0 and None without a
        validation set).

    Returns
    -------
    TrainingResult
    """
    device = train.X.device
    train = train.for_training(task_kinds)
    shared = list(module.trunk.parameters()) if hasattr(module, "trunk") else []
    reconstruction = None
    if settings.self_supervision > 0:
        reconstruction = MaskedFeatureReconstruction.for_module(module, train.X.shape[1], seed).to(device)
    optimizer = _make_optimizer(module, weighting, settings, device, reconstruction)
    generator = torch.Generator().manual_seed(seed)
    rotation = Rotation(len(task_kinds)) if settings.training == ALTERNATE else None
    auxiliary = _auxiliary_loss(module, settings, reconstruction)
    measured = (train.take(torch.from_numpy(measurement_rows(len(train), seed)).to(device))
                if shared and len(task_kinds) > 1 else None)
    result = TrainingResult()
    best_objective, best_state = math.inf, None
    outcomes = None
    if settings.per_outcome_stopping and valid is not None:
        outcomes = OutcomeStopping.of_validation_rows(valid.weights)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for epoch in range(1, settings.max_epochs + 1):
            train_losses = train_epoch(
                module, weighting, task_kinds, train, optimizer, settings.batch_size, generator,
                shared=shared, rotation=rotation, auxiliary=auxiliary,
            )
            record = epoch_record(epoch, task_names, train_losses, weighting)
            weighting.end_epoch(train_losses)
            if measured is not None and (epoch - 1) % RELATEDNESS_EVERY == 0:
                record |= task_gradient_cosines(module, task_names, task_kinds, measured, shared)
            if valid is None:
                result.history.append(record)
                if on_epoch is not None:
                    on_epoch(record, 0, None)
                continue
            valid_losses = evaluate_losses(module, task_kinds, valid)
            objective = weighting.validation_objective(valid_losses).item()
            record["valid_loss"] = objective
            values = [None if loss is None else loss.item() for loss in valid_losses]
            for name, value in zip(task_names, values):
                record[f"valid_loss/{name}"] = math.nan if value is None else value
            result.history.append(record)
            if settings.verbose:
                print(f"epoch {epoch:4d}  train {record['train_loss']:.4f}  valid {objective:.4f}")
            improved = objective < best_objective
            if improved:
                best_objective, result.best_epoch = objective, epoch
                best_state = _snapshot(module, weighting)
            if outcomes is not None:  # an epoch that improved the joint objective is already snapshotted
                outcomes.update(epoch, values, lambda: best_state[0] if improved else _state(module))
            if on_epoch is not None:
                on_epoch(record, result.best_epoch, best_objective)
            if not keeps_training(epoch, result.best_epoch, settings.patience):
                break
    result.n_epochs = len(result.history)
    if best_state is None:
        result.best_epoch = result.n_epochs
    else:
        module.load_state_dict(best_state[0])
        weighting.load_state_dict(best_state[1])
    if outcomes is not None:
        result.outcome_epochs, result.outcome_states = outcomes.epochs, outcomes.states
    return result


def train_epoch(
    module: nn.Module,
    weighting: TaskWeighting,
    task_kinds: Sequence[str],
    data: TaskData,
    optimizer: LeanAdamW,
    batch_size: int,
    generator: torch.Generator,
    *,
    shared: Sequence[Tensor] = (),
    rotation: Rotation | None = None,
    auxiliary: Callable[[Tensor], Tensor] | None = None,
) -> list[float]:
    """One pass over ``data`` in a random order; returns each task's mean loss.

    A task with no labelled row in the whole epoch gets NaN. With a
    ``rotation`` each step optimises one task's loss (alternate training);
    every task's loss is still computed and reported. With an ``auxiliary``
    loss (a function of the batch's inputs: self-supervision, the soft-sharing
    penalty), every step adds it, and batches without any label step too.

    Raises
    ------
    TrainingDivergedError
        If a batch loss is NaN or infinite; the optimiser never sees it.
    """
    module.train()
    order = torch.randperm(len(data), generator=generator).to(data.X.device)
    shuffled = data.take(order)
    loss_sums = torch.zeros(len(task_kinds), device=data.X.device)
    weight_sums = torch.zeros(len(task_kinds), device=data.X.device)
    # An absent task adds 0 loss times its 0 weight: exactly 0, even once another task's sum is inf.
    absent = loss_sums.new_zeros(())
    for start in range(0, len(data), batch_size):
        stop = start + batch_size
        batch_weights = shuffled.weights[start:stop]
        weight_total = batch_weights.sum(dim=0)
        present = (weight_total > 0).tolist()
        # each task's mean over its labelled rows, or with ``batch_mean`` its sum over the batch's rows
        denominators = (weight_total.new_full(weight_total.shape, len(batch_weights)) if weighting.batch_mean
                        else weight_total)
        batch_inputs = shuffled.X[start:stop]
        outputs = module(batch_inputs)
        losses = [
            masked_task_loss(outputs[t], shuffled.targets[t][start:stop], batch_weights[:, t], kind, denominators[t])
            if present[t]
            else None
            for t, kind in enumerate(task_kinds)
        ]
        if not any(present) and auxiliary is None:
            continue
        stepped = losses
        if rotation is not None and any(present):
            chosen = rotation.choose(present)
            stepped = [loss if t == chosen else None for t, loss in enumerate(losses)]
        loss = weighting(stepped) if any(present) else absent
        if auxiliary is not None:
            loss = loss + auxiliary(batch_inputs)
        if not torch.isfinite(loss):
            raise TrainingDivergedError(
                f"The training loss became {loss.item()} in a batch (task losses "
                f"{[None if l is None else l.item() for l in losses]}); lower learning_rate "
                "or check the targets for extreme values."
            )
        optimizer.zero_grad(set_to_none=True)
        weighting.backward(loss, stepped, shared)
        optimizer.lean_step()
        weighting.after_step(stepped)
        detached = torch.stack([l.detach() if l is not None else absent for l in losses])
        loss_sums += detached * denominators
        weight_sums += weight_total
    return (loss_sums / weight_sums).tolist()


@torch.no_grad()
def evaluate_losses(
    module: nn.Module, task_kinds: Sequence[str], data: TaskData
) -> list[Tensor | None]:
    """Each task's mean loss over the labelled rows of ``data`` (None if it has none)."""
    module.eval()
    outputs = predict_module(module, data.X)
    return [
        masked_task_loss(outputs[t], data.targets[t], data.weights[:, t], kind)
        if data.weights[:, t].sum() > 0
        else None
        for t, kind in enumerate(task_kinds)
    ]


@torch.inference_mode()
def predict_module(
    module: nn.Module, X: Tensor, batch_size: int = INFERENCE_BATCH_SIZE
) -> list[Tensor]:
    """Forward ``X`` in evaluation mode, in batches; returns one tensor per head.

    Rows are the second-to-last dimension of every output, so ensembles that
    stack their members first are batched alike.
    """
    module.eval()
    if len(X) <= batch_size:
        return list(module(X))
    chunks = [module(X[start : start + batch_size]) for start in range(0, len(X), batch_size)]
    return [torch.cat(parts, dim=-2) for parts in zip(*chunks)]


def resolve_device(device: str) -> torch.device:
    """The torch device named by ``device``; a clear error if it is not usable here."""
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"device={device!r} is not a torch device: {error}") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} was asked for, but torch finds no CUDA device here; use device='cpu'."
        )
    return resolved


def _make_optimizer(
    module: nn.Module, weighting: TaskWeighting, settings: TrainingSettings, device: torch.device,
    reconstruction: nn.Module | None = None,
) -> torch.optim.Optimizer:
    """``decoupled_adamw`` over the module's (and reconstruction's) weight matrices and the rest."""
    parts = [module] + ([reconstruction] if reconstruction is not None else [])
    parameters = [p for part in parts for p in part.parameters()]
    heads = [[p for p in head.parameters() if p.ndim > 1] for head in module.heads]
    others = [p for p in parameters if p.ndim <= 1] + list(weighting.parameters())
    return decoupled_adamw([p for p in parameters if p.ndim > 1], others, settings, device, heads)


class Rotation:
    """Alternate training's schedule: the tasks in turn, skipping those absent from a batch.

    Examples
    --------
    >>> rotation = Rotation(3)
    >>> [rotation.choose(present) for present in ([1, 1, 1], [1, 1, 1], [1, 0, 0], [1, 1, 1])]
    [0, 1, 0, 1]
    """

    def __init__(self, n_tasks: int) -> None:
        self.n_tasks, self.upcoming = n_tasks, 0

    def choose(self, present: Sequence[bool]) -> int:
        """The next task in turn that has a label in the batch (one must)."""
        for offset in range(self.n_tasks):
            task = (self.upcoming + offset) % self.n_tasks
            if present[task]:
                self.upcoming = task + 1
                return task
        raise ValueError("no task is present in the batch")


def _auxiliary_loss(module: nn.Module, settings: TrainingSettings,
                    reconstruction: MaskedFeatureReconstruction | None) -> Callable[[Tensor], Tensor] | None:
    """The terms every step adds besides the task losses, as one function of the batch inputs."""
    terms = []
    if reconstruction is not None:
        terms.append(lambda x: settings.self_supervision * reconstruction.loss(module.trunk, x))
    if settings.tied_layers:
        terms.append(lambda x: settings.sharing_strength * soft_sharing_penalty(module, settings.tied_layers))
    return (lambda x: sum(term(x) for term in terms)) if terms else None


def task_gradient_cosines(module: nn.Module, names, kinds, data: TaskData, shared) -> dict[str, float]:
    """``gradient_cosines`` on ``data`` with dropout off; the module's mode and
    gradients are left as they were.

    Parameters
    ----------
    module : nn.Module
    names, kinds : sequence of str
        Per task.
    data : TaskData
        The measurement rows (``relatedness.measurement_rows``).
    shared : sequence of Tensor
        The trunk's parameters.

    Returns
    -------
    dict of str to float
        ``cosine_key(a, b)`` -> cosine, for every pair of tasks with labels in ``data``.
    """
    was_training = module.training
    module.eval()
    outputs = module(data.X)
    losses = [masked_task_loss(outputs[t], data.targets[t], data.weights[:, t], kind)
              if data.weights[:, t].sum() > 0 else None for t, kind in enumerate(kinds)]
    cosines = gradient_cosines(losses, shared, names)
    module.train(was_training)
    return cosines


def epoch_record(
    epoch: int, task_names: Sequence[str], train_losses: list[float], weighting: TaskWeighting
) -> dict:
    """One epoch's history record: ``epoch``, ``train_loss`` (the sum over the
    tasks with labels), ``train_loss/<task>`` and the weighting's current
    per-task quantities (``weight/<task>``, ...)."""
    record: dict = {"epoch": epoch}
    observed = [loss for loss in train_losses if not math.isnan(loss)]
    record["train_loss"] = float(sum(observed))
    for name, loss in zip(task_names, train_losses):
        record[f"train_loss/{name}"] = loss
    for quantity, values in weighting.report().items():
        for name, value in zip(task_names, values):
            record[f"{quantity}/{name}"] = value
    return record


def _snapshot(module: nn.Module, weighting: TaskWeighting) -> tuple[dict, dict]:
    return _state(module), _state(weighting)


def _state(part: nn.Module) -> dict:
    return {key: value.detach().clone() for key, value in part.state_dict().items()}

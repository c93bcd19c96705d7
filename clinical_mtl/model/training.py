"""The training loop: batches, optimiser, early stopping and history.

Data live as tensors in memory. Each epoch draws one permutation and walks
contiguous slices of the permuted tensors, which costs far less per batch
than a ``DataLoader``. Nothing here imports pandas or scikit-learn.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..exceptions import TrainingDivergedError
from .losses import TaskWeighting, masked_task_loss

INFERENCE_BATCH_SIZE = 4096


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
        return TaskData(self.X[index], [t[index] for t in self.targets], self.weights[index])

    def to(self, device: torch.device) -> TaskData:
        """A copy on ``device``."""
        return TaskData(
            self.X.to(device), [t.to(device) for t in self.targets], self.weights.to(device)
        )


@dataclass(frozen=True)
class TrainingSettings:
    """Optimisation settings of ``fit_module``; no defaults, the caller (the estimator) gives each."""

    learning_rate: float
    weight_decay: float
    batch_size: int
    max_epochs: int
    patience: int
    verbose: int


@dataclass
class TrainingResult:
    """What a call of ``fit_module`` did.

    Attributes
    ----------
    history : list of dict
        One record per epoch: ``epoch``, ``train_loss``, ``valid_loss`` (with a
        validation set), and per task ``train_loss/<task>``,
        ``valid_loss/<task>``, ``weight/<task>`` (and ``sigma/<task>`` for
        uncertainty weighting).
    best_epoch : int
        Epoch (from 1) whose weights the module holds on return.
    n_epochs : int
        Epochs run.
    """

    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    n_epochs: int = 0


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
    optimizer = _make_optimizer(module, weighting, settings, device)
    generator = torch.Generator().manual_seed(seed)
    result = TrainingResult()
    best_objective, best_state = math.inf, None
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for epoch in range(1, settings.max_epochs + 1):
            train_losses = train_epoch(
                module, weighting, task_kinds, train, optimizer, settings.batch_size, generator
            )
            record = _epoch_record(epoch, task_names, train_losses, weighting)
            if valid is None:
                result.history.append(record)
                if on_epoch is not None:
                    on_epoch(record, 0, None)
                continue
            valid_losses = evaluate_losses(module, task_kinds, valid)
            objective = weighting.validation_objective(valid_losses).item()
            record["valid_loss"] = objective
            for name, loss in zip(task_names, valid_losses):
                record[f"valid_loss/{name}"] = loss.item() if loss is not None else math.nan
            result.history.append(record)
            if settings.verbose:
                print(f"epoch {epoch:4d}  train {record['train_loss']:.4f}  valid {objective:.4f}")
            improved = objective < best_objective
            if improved:
                best_objective, result.best_epoch = objective, epoch
                best_state = _snapshot(module, weighting)
            if on_epoch is not None:
                on_epoch(record, result.best_epoch, best_objective)
            if not improved and epoch - result.best_epoch >= settings.patience:
                break
    result.n_epochs = len(result.history)
    if best_state is None:
        result.best_epoch = result.n_epochs
    else:
        module.load_state_dict(best_state[0])
        weighting.load_state_dict(best_state[1])
    return result


def train_epoch(
    module: nn.Module,
    weighting: TaskWeighting,
    task_kinds: Sequence[str],
    data: TaskData,
    optimizer: torch.optim.Optimizer,
    batch_size: int,
    generator: torch.Generator,
) -> list[float]:
    """One pass over ``data`` in a random order; returns each task's mean loss.

    A task with no labelled row in the whole epoch gets NaN.

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
        outputs = module(shuffled.X[start:stop])
        losses = [
            masked_task_loss(outputs[t], shuffled.targets[t][start:stop], batch_weights[:, t], kind)
            if present[t]
            else None
            for t, kind in enumerate(task_kinds)
        ]
        if not any(present):
            continue
        loss = weighting(losses)
        if not torch.isfinite(loss):
            raise TrainingDivergedError(
                f"The training loss became {loss.item()} in a batch (task losses "
                f"{[None if l is None else l.item() for l in losses]}); lower learning_rate "
                "or check the targets for extreme values."
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        detached = torch.stack([l.detach() if l is not None else absent for l in losses])
        loss_sums += detached * weight_total
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
    module: nn.Module, weighting: TaskWeighting, settings: TrainingSettings, device: torch.device
) -> torch.optim.Optimizer:
    """AdamW with weight decay on weight matrices only, never on biases or task weights.

    The fused kernel on CPU and CUDA: one step for all parameters, about 3.4x
    faster on the CPU than the per-parameter loop for small networks.
    """
    matrices = [p for p in module.parameters() if p.ndim > 1]
    others = [p for p in module.parameters() if p.ndim <= 1] + list(weighting.parameters())
    groups = [
        {"params": matrices, "weight_decay": settings.weight_decay},
        {"params": others, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=settings.learning_rate, fused=device.type in ("cpu", "cuda"))


def _epoch_record(
    epoch: int, task_names: Sequence[str], train_losses: list[float], weighting: TaskWeighting
) -> dict:
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
    return (
        {key: value.detach().clone() for key, value in module.state_dict().items()},
        {key: value.detach().clone() for key, value in weighting.state_dict().items()},
    )

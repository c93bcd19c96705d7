"""Masked per-task losses and the static strategies that weight tasks against each
other (equal, fixed, uncertainty); the dynamic ones and the factory that reads
``loss_weighting`` are in :mod:`clinical_mtl.model.weighting`.

Every task loss is a weighted mean over the rows labelled for that task:
``sum(w_i * l_i) / sum(w_i)``, where ``w_i`` is 0 for an unlabelled row and
otherwise 1 (or the class weight of the row's label). An unlabelled row thus
contributes exactly zero to the loss and to its gradient, and a sparse task is
not down-weighted by the rows it lacks. A task with no labelled row in a batch
has no loss at all (``None``): it adds nothing and moves none of its own
parameters.

With ``loss_weighting="label_share"`` (``LabelShareWeighting``) a task's
training loss is instead ``sum(w_i * l_i)`` divided by all the rows of the
batch: each task is weighted by the share of the batch labelled for it, so
every labelled row moves the shared layers as much, whichever outcome it
belongs to, and a sparse task no longer weighs as much as a full one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .survival import COX_LOSS, SURVIVAL, cox_loss, survival_loss
from .tasks import BINARY, MULTICLASS, REGRESSION

EQUAL = "equal"
UNCERTAINTY = "uncertainty"
LABEL_SHARE = "label_share"


def masked_task_loss(output: Tensor, target: Tensor, weight: Tensor, kind: str, total: Tensor | None = None) -> Tensor:
    """Weighted mean loss of one task over its labelled rows.

    Parameters
    ----------
    output : Tensor of shape (n, 1), (n, n_classes) or (n, n_intervals)
        Head output: logit(s), the standardised regression value, or hazard
        logits.
    target : Tensor of shape (n,) or (n, 2)
        Class index (int64), standardised value (float), or (intervals
        survived, event) (int64, survival); any finite value where the row
        is unlabelled.
    weight : Tensor of shape (n,)
        0 for unlabelled rows, else the row's weight. Must not sum to 0.
    kind : {"binary", "multiclass", "regression", "survival"}
        Binary cross-entropy on one logit, cross-entropy on a softmax,
        squared error, or the logistic-hazard negative log-likelihood (see
        :mod:`clinical_mtl.model.survival`).
    total : Tensor, optional
        ``weight.sum()``, where the caller has it already.

    Returns
    -------
    Tensor
        Scalar loss.
    """
    return (row_losses(output, target, kind, weight) * weight).sum() / (weight.sum() if total is None else total)


def row_losses(output: Tensor, target: Tensor, kind: str, weight: Tensor | None = None) -> Tensor:
    """Each row's unweighted loss of one task (see ``masked_task_loss``).

    Parameters
    ----------
    output : Tensor of shape (..., n, width)
    target : Tensor of shape (..., n) or (..., n, 3)
        Leading dimensions (an ensemble's members) as in ``output``.
    kind : str
        A task kind, or ``COX_LOSS`` (a survival outcome of ``survival_head="cox"``).
    weight : Tensor of shape (..., n), optional
        The rows' weights; needed by ``COX_LOSS`` alone, whose row terms
        depend on the other rows at risk.

    Returns
    -------
    Tensor of shape (..., n)
    """
    if kind == BINARY:
        return F.binary_cross_entropy_with_logits(output.squeeze(-1), target.to(output.dtype), reduction="none")
    if kind == MULTICLASS:  # classes second, as cross_entropy wants them
        return F.cross_entropy(output.movedim(-1, 1) if output.ndim > 2 else output, target, reduction="none")
    if kind == REGRESSION:
        return F.mse_loss(output.squeeze(-1), target, reduction="none")
    if kind == SURVIVAL:
        return survival_loss(output, target)
    if kind == COX_LOSS:
        return cox_loss(output, target, weight)
    raise ValueError(f"Unknown task kind {kind!r}.")


class TaskWeighting(nn.Module):
    """Combine per-task losses into the training objective.

    ``batch_mean``: whether the training loops give it each task's loss
    divided by the batch's rows rather than by the task's labelled rows.
    """

    batch_mean = False

    def forward(self, losses: Sequence[Tensor | None]) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def validation_objective(self, losses: Sequence[Tensor | None]) -> Tensor:
        """The quantity early stopping minimises, comparable across epochs."""
        return self(losses)

    def report(self) -> dict[str, list[float]]:
        """Current per-task weights (and any other learned quantity) for the history."""
        raise NotImplementedError  # pragma: no cover - abstract

    def backward(self, total: Tensor, losses: Sequence[Tensor | None], shared: Sequence[Tensor]) -> None:
        """Set the gradients of one step from its objective ``total`` (``self(losses)``
        plus any auxiliary term); ``shared`` are the trunk's parameters. Strategies
        that act on per-task gradients (PCGrad, GradNorm) override it."""
        total.backward()

    def after_step(self, losses: Sequence[Tensor | None]) -> None:
        """Called after each optimiser step with that step's task losses."""

    def end_epoch(self, epoch_losses: Sequence[float]) -> None:
        """Called after each epoch with every task's mean training loss (NaN if absent)."""


class FixedWeighting(TaskWeighting):
    """A fixed weight per task: ``sum_t w_t * L_t`` over the tasks present.

    Parameters
    ----------
    weights : sequence of float
        One non-negative weight per task (all 1 for ``loss_weighting="equal"``).
    """

    def __init__(self, weights: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("weights", torch.as_tensor(list(weights), dtype=torch.float32))

    def forward(self, losses: Sequence[Tensor | None]) -> Tensor:
        # Python scalars and plain additions: a third of the operations of indexing, stacking and summing.
        terms = [loss if weight == 1.0 else weight * loss
                 for weight, loss in zip(self.weights.tolist(), losses) if loss is not None]
        return sum(terms[1:], terms[0])

    def report(self) -> dict[str, list[float]]:
        return {"weight": self.weights.tolist()}


class LabelShareWeighting(FixedWeighting):
    """Every task weighted by the share of the batch's rows labelled for it.

    The training loops divide each task's weighted loss sum by the batch's
    rows (``batch_mean``), which is the task's mean loss over its labelled
    rows times their share of the batch. Early stopping still watches the
    plain sum of the tasks' mean validation losses: every outcome counts
    alike there, however sparse its labels.

    Parameters
    ----------
    n_tasks : int
    """

    batch_mean = True

    def __init__(self, n_tasks: int) -> None:
        super().__init__([1.0] * n_tasks)


class UncertaintyWeighting(TaskWeighting):
    """Learned homoscedastic-uncertainty weights (Kendall, Gal and Cipolla, 2018).

    With ``s_t = log sigma_t^2`` learned per task, the objective is
    ``sum_t c_t * exp(-s_t) * L_t + s_t / 2`` over the tasks present in the
    batch, with ``c_t = 1`` for a classification loss (``L / sigma^2``) and
    ``c_t = 1/2`` for a squared-error regression loss (``L / (2 sigma^2)``);
    ``s_t / 2`` is ``log sigma_t``. Each ``s_t`` is a parameter of its own, so
    a task absent from a batch leaves its gradient unset and the optimiser
    does not move it.

    Parameters
    ----------
    is_regression : sequence of bool
        Per task, whether its loss is a squared error.
    """

    def __init__(self, is_regression: Sequence[bool]) -> None:
        super().__init__()
        self.log_variances = nn.ParameterList(nn.Parameter(torch.zeros(())) for _ in is_regression)
        self.register_buffer(
            "factors", torch.tensor([0.5 if reg else 1.0 for reg in is_regression])
        )

    def forward(self, losses: Sequence[Tensor | None]) -> Tensor:
        terms = [
            self.factors[t] * torch.exp(-self.log_variances[t]) * loss + 0.5 * self.log_variances[t]
            for t, loss in enumerate(losses)
            if loss is not None
        ]
        return torch.stack(terms).sum()

    def validation_objective(self, losses: Sequence[Tensor | None]) -> Tensor:
        return torch.stack([loss for loss in losses if loss is not None]).sum()

    def report(self) -> dict[str, list[float]]:
        log_var = torch.stack(list(self.log_variances)).detach()
        return {
            "weight": (self.factors * torch.exp(-log_var)).tolist(),
            "sigma": torch.exp(0.5 * log_var).tolist(),
        }

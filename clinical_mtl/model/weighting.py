"""Dynamic task weighting: Dynamic Weight Average, GradNorm and PCGrad, and the
factory that turns a ``loss_weighting`` setting into a weighting.

The static strategies (equal, fixed, uncertainty) live in
:mod:`clinical_mtl.model.losses`; these add what changes during training:

- ``"dwa"``, Dynamic Weight Average (Liu, Johns and Davison 2019): once per
  epoch, ``w_t = K exp(r_t / T) / sum_i exp(r_i / T)`` with ``r_t`` the ratio of
  task ``t``'s last two epoch losses and ``T = 2``: a task whose loss falls
  slowly gets more weight.
- ``"gradnorm"`` (Chen et al. 2018): learned weights whose gradient pulls each
  task's gradient norm on the last shared layer, ``G_t = w_t ||grad L_t||``,
  towards ``mean(G) * (L_t / L_t(0) / mean)^alpha`` (``alpha = 1.5``); weights
  renormalised to sum to ``K`` after every step.
- ``"pcgrad"``, gradient surgery (Yu et al. 2020): per task gradients on the
  shared trunk; where two conflict (negative inner product) one is projected
  onto the normal plane of the other before they are summed. Heads keep their
  own task's gradient.

A task absent from a batch adds nothing, and no strategy moves its weight in
that step. Because the weights change during training, early stopping watches
the unweighted sum of the validation losses.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from numbers import Real

import numpy as np
import torch
from torch import Tensor, nn

from ..exceptions import TaskSpecificationError
from .losses import (EQUAL, LABEL_SHARE, UNCERTAINTY, FixedWeighting, LabelShareWeighting, TaskWeighting,
                     UncertaintyWeighting)
from .tasks import REGRESSION, TaskSpec

DWA = "dwa"
GRADNORM = "gradnorm"
PCGRAD = "pcgrad"
GRADIENT_BASED = (GRADNORM, PCGRAD)
"""Strategies that need every task's gradient in one step (not with alternate training)."""

DWA_TEMPERATURE = 2.0
GRADNORM_ALPHA = 1.5


class _UnweightedValidation(TaskWeighting):
    """Early stopping on the plain sum of the task losses: weights that move during
    training would otherwise make epochs incomparable."""

    def validation_objective(self, losses: Sequence[Tensor | None]) -> Tensor:
        return torch.stack([loss for loss in losses if loss is not None]).sum()


class DynamicWeightAverage(_UnweightedValidation):
    """Dynamic Weight Average (Liu, Johns and Davison 2019).

    Parameters
    ----------
    n_tasks : int
    temperature : float, default=2.0
        ``T``: larger values flatten the weights towards 1.

    Examples
    --------
    >>> dwa = DynamicWeightAverage(2)
    >>> dwa.end_epoch([1.0, 1.0]); dwa.end_epoch([0.5, 1.0])
    >>> [round(w, 3) for w in dwa.report()["weight"]]
    [0.876, 1.124]
    """

    def __init__(self, n_tasks: int, temperature: float = DWA_TEMPERATURE) -> None:
        super().__init__()
        self.temperature = temperature
        self.register_buffer("weights", torch.ones(n_tasks))
        self.register_buffer("previous", torch.full((2, n_tasks), math.nan))

    def forward(self, losses: Sequence[Tensor | None]) -> Tensor:
        return torch.stack([self.weights[t] * loss for t, loss in enumerate(losses) if loss is not None]).sum()

    def end_epoch(self, epoch_losses: Sequence[float]) -> None:
        """Set next epoch's weights from this epoch's and the last epoch's mean losses.

        A task without a loss in either epoch (NaN) keeps its weight; the others
        share their total weight by the DWA rule.
        """
        self.previous[0] = self.previous[1].clone()
        self.previous[1] = torch.as_tensor(list(epoch_losses), dtype=self.previous.dtype)
        ratio = self.previous[1] / self.previous[0]
        known = torch.isfinite(ratio)
        if known.any():
            shares = torch.softmax(ratio[known] / self.temperature, dim=0)
            self.weights[known] = int(known.sum()) * shares

    def report(self) -> dict[str, list[float]]:
        return {"weight": self.weights.tolist()}


class GradNorm(_UnweightedValidation):
    """GradNorm (Chen, Badrinarayanan, Lee and Rabinovich 2018).

    Parameters
    ----------
    n_tasks : int
    alpha : float, default=1.5
        Strength of the pull towards equal training rates.

    Notes
    -----
    One extra backward pass per task and step (the gradient norms on the last
    shared layer). Each weight is a parameter of its own, so a task absent from
    a batch has no gradient and the optimiser leaves it alone; renormalisation
    rescales only the weights of the tasks present, to keep the sum at ``K``.
    Without a shared trunk there is nothing to balance and the weights stay 1.
    """

    def __init__(self, n_tasks: int, alpha: float = GRADNORM_ALPHA) -> None:
        super().__init__()
        self.alpha = alpha
        self.task_weights = nn.ParameterList(nn.Parameter(torch.ones(())) for _ in range(n_tasks))
        self.register_buffer("initial_losses", torch.full((n_tasks,), math.nan))

    def forward(self, losses: Sequence[Tensor | None]) -> Tensor:
        return torch.stack([self.task_weights[t] * loss for t, loss in enumerate(losses) if loss is not None]).sum()

    def backward(self, total: Tensor, losses: Sequence[Tensor | None], shared: Sequence[Tensor]) -> None:
        present = [t for t, loss in enumerate(losses) if loss is not None]
        layer = [p for p in shared if p.ndim > 1][-1:] if shared else []
        norms = [torch.linalg.vector_norm(torch.autograd.grad(losses[t], layer, retain_graph=True)[0])
                 for t in present] if layer else []
        total.backward()
        if not norms:
            for t in present:
                self.task_weights[t].grad = None
            return
        with torch.no_grad():
            for t in present:
                if math.isnan(self.initial_losses[t]):
                    self.initial_losses[t] = losses[t].detach()
            weights = torch.stack([self.task_weights[t].detach() for t in present])
            scaled = weights * torch.stack(norms)  # G_t
            rates = torch.stack([losses[t].detach() / self.initial_losses[t] for t in present])
            target = scaled.mean() * (rates / rates.mean()) ** self.alpha
            # d/dw_t of sum |G_t - target_t| with the target held constant, as in the paper.
            for t, sign, norm in zip(present, torch.sign(scaled - target), norms):
                self.task_weights[t].grad = sign * norm

    @torch.no_grad()
    def after_step(self, losses: Sequence[Tensor | None]) -> None:
        present = [t for t, loss in enumerate(losses) if loss is not None]
        if not present:
            return
        absent_total = sum(float(self.task_weights[t]) for t in range(len(losses)) if t not in present)
        for t in present:
            self.task_weights[t].clamp_(min=1e-3)
        present_total = sum(float(self.task_weights[t]) for t in present)
        budget = len(losses) - absent_total
        if budget > 0:
            for t in present:
                self.task_weights[t].mul_(budget / present_total)

    def report(self) -> dict[str, list[float]]:
        return {"weight": [float(w.detach()) for w in self.task_weights]}


class PCGrad(_UnweightedValidation):
    """Projecting conflicting gradients (Yu et al. 2020) on the shared trunk.

    Parameters
    ----------
    n_tasks : int

    Notes
    -----
    Each task's gradient is projected against the others in an order drawn
    from a generator seeded once (so a fit is reproducible). One extra
    backward pass per task and step.
    """

    def __init__(self, n_tasks: int) -> None:
        super().__init__()
        self.register_buffer("weights", torch.ones(n_tasks))
        self.generator = torch.Generator().manual_seed(0)

    def forward(self, losses: Sequence[Tensor | None]) -> Tensor:
        return torch.stack([loss for loss in losses if loss is not None]).sum()

    def backward(self, total: Tensor, losses: Sequence[Tensor | None], shared: Sequence[Tensor]) -> None:
        present = [loss for loss in losses if loss is not None]
        if len(present) < 2 or not shared:
            total.backward()
            return
        gradients = torch.stack([torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, shared, retain_graph=True)])
                                 for loss in present])
        total.backward()  # heads (and anything outside the task losses) keep their own gradients
        correction = project_conflicts(gradients, self.generator).sum(dim=0) - gradients.sum(dim=0)
        offset = 0
        for parameter in shared:
            size = parameter.numel()
            parameter.grad += correction[offset : offset + size].view_as(parameter)
            offset += size

    def report(self) -> dict[str, list[float]]:
        return {"weight": self.weights.tolist()}


def project_conflicts(gradients: Tensor, generator: torch.Generator) -> Tensor:
    """PCGrad's surgery: each row of ``gradients`` (one task each) projected, in a
    random order, off every other row it conflicts with.

    Parameters
    ----------
    gradients : Tensor of shape (n_tasks, n_parameters)
    generator : torch.Generator
        Draws each task's order of the others.

    Returns
    -------
    Tensor of shape (n_tasks, n_parameters)

    Examples
    --------
    >>> g = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])
    >>> project_conflicts(g, torch.Generator().manual_seed(0))
    tensor([[0.5000, 0.5000],
            [0.0000, 1.0000]])
    """
    projected = gradients.clone()
    for i in range(len(gradients)):
        for j in torch.randperm(len(gradients), generator=generator).tolist():
            if j == i:
                continue
            inner = projected[i] @ gradients[j]
            if inner < 0:
                projected[i] -= inner / (gradients[j] @ gradients[j]) * gradients[j]
    return projected


def weighting_factory(
    loss_weighting: str | Mapping[str, float], specs: Sequence[TaskSpec]
) -> Callable[[], TaskWeighting]:
    """Check a ``loss_weighting`` setting and return a maker of fresh weightings.

    Parameters
    ----------
    loss_weighting : {"equal", "label_share", "uncertainty", "dwa", "gradnorm", "pcgrad"} or mapping of str to float
        Equal weights, weights by the share of each batch labelled for the
        outcome, learned uncertainty weights, a dynamic strategy (see this
        module), or one fixed non-negative weight per outcome.
    specs : sequence of TaskSpec
        The outcomes.

    Returns
    -------
    callable
        Returns a new, untrained ``TaskWeighting`` at each call (one per network).

    Raises
    ------
    TaskSpecificationError
        If a mapping does not give exactly one finite non-negative weight per
        outcome, or gives only zeros.
    """
    names = [spec.name for spec in specs]
    makers = {
        EQUAL: lambda: FixedWeighting([1.0] * len(specs)),
        LABEL_SHARE: lambda: LabelShareWeighting(len(specs)),
        UNCERTAINTY: lambda: UncertaintyWeighting([spec.kind == REGRESSION for spec in specs]),
        DWA: lambda: DynamicWeightAverage(len(specs)),
        GRADNORM: lambda: GradNorm(len(specs)),
        PCGRAD: lambda: PCGrad(len(specs)),
    }
    if isinstance(loss_weighting, str):
        return makers[loss_weighting]
    if set(loss_weighting) != set(names):
        raise TaskSpecificationError(
            f"loss_weighting gives weights for {sorted(map(str, loss_weighting))} but the "
            f"outcomes are {names}; pass one weight per outcome or one of {sorted(makers)}."
        )
    values = [loss_weighting[name] for name in names]
    if not all(isinstance(v, Real) and np.isfinite(v) and v >= 0 for v in values) or not any(values):
        raise TaskSpecificationError(
            "loss_weighting values must be finite, non-negative and not all 0, "
            f"got {dict(loss_weighting)}."
        )
    return lambda: FixedWeighting([float(v) for v in values])

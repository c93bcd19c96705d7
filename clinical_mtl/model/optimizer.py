"""The optimiser of every network: AdamW, decay on weight matrices only, fused kernel, lean steps.

Nothing here imports pandas or scikit-learn.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:  # pragma: no cover
    from .training import TrainingSettings


def decoupled_adamw(matrices: Sequence[Tensor], others: Sequence[Tensor], settings: TrainingSettings,
                    device: torch.device, heads: Sequence[Sequence[Tensor]] | None = None) -> torch.optim.Optimizer:
    """AdamW with weight decay on weight matrices only, never on biases or task weights;
    with ``head_weight_decay``, each head's matrices at their task's own decay.

    The fused kernel on CPU and CUDA: one step for all parameters, about 3.4x
    faster on the CPU than the per-parameter loop for small networks, stepped
    by ``LeanAdamW``.

    Parameters
    ----------
    matrices : sequence of Tensor
        Every weight matrix, the heads' included.
    others : sequence of Tensor
        Biases, task weights: no decay.
    settings : TrainingSettings
    device : torch.device
    heads : sequence of sequence of Tensor, optional
        Per task, its head's matrices (read only with ``settings.head_weight_decay``).
    """
    head_groups = []
    if settings.head_weight_decay is not None:
        head_groups = [{"params": list(params), "weight_decay": decay}
                       for params, decay in zip(heads, settings.head_weight_decay)]
    in_heads = {id(p) for group in head_groups for p in group["params"]}
    groups = [
        {"params": [p for p in matrices if id(p) not in in_heads], "weight_decay": settings.weight_decay},
        *head_groups,
        {"params": list(others), "weight_decay": 0.0},
    ]
    return LeanAdamW(groups, lr=settings.learning_rate, fused=device.type in ("cpu", "cuda"))


class LeanAdamW(torch.optim.AdamW):
    """``torch.optim.AdamW`` with ``lean_step``: its fused step without torch's per-step bookkeeping.

    With ``fused=True``, ``AdamW.step`` spends about 0.15 ms per step on two
    CPU cores in its profiler record, hooks, state checks and grouping of
    tensors by device: several times the fused kernel's own time on a small
    network. ``lean_step`` keeps, per parameter group, the lists of
    parameters and their state once torch's ``step`` has created it, and
    then only increments the step counts and calls the same kernel
    (``torch._fused_adamw_``) on the same tensors, as ``AdamW.step`` does: the
    update is identical. Kept as our own code because torch offers no lighter
    public entry to its fused step. Any other case (not fused, amsgrad, a
    tensor learning rate, a parameter without a gradient in this step, a
    torch without the kernel, a GPU, where this was neither measured nor
    tested) runs ``AdamW.step``.

    Examples
    --------
    >>> layer = torch.nn.Linear(3, 2)
    >>> optimizer = LeanAdamW(layer.parameters(), lr=0.1, fused=True)
    >>> for _ in range(3):
    ...     optimizer.zero_grad()
    ...     layer(torch.ones(4, 3)).sum().backward()
    ...     optimizer.lean_step()
    >>> [int(state["step"]) for state in optimizer.state.values()]
    [3, 3]
    """

    _KERNEL = getattr(torch, "_fused_adamw_", None)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._plan = None
        # Settings and devices stay as built: decided once, not re-checked at every step.
        self._leanable = self._KERNEL is not None and all(
            group["fused"] and not (group["amsgrad"] or group["differentiable"] or group["capturable"])
            and isinstance(group["lr"], float) and all(isinstance(b, float) for b in group["betas"])
            and all(p.device.type == "cpu" for p in group["params"])
            for group in self.param_groups)

    def load_state_dict(self, state_dict) -> None:
        """``AdamW.load_state_dict``; the kept lists are made again from the new state."""
        super().load_state_dict(state_dict)
        self._plan = None

    def zero_grad(self, set_to_none: bool = True) -> None:
        """``Optimizer.zero_grad``; setting the gradients to None (the default) without torch's
        per-call wrapping, about 0.07 ms: 4% of a default ensemble fit's time."""
        if not set_to_none:
            super().zero_grad(set_to_none=False)
            return
        for group in self.param_groups:
            for parameter in group["params"]:
                parameter.grad = None

    @torch.no_grad()
    def lean_step(self) -> None:
        """One AdamW update of every parameter, as ``step()`` (see the class docstring)."""
        plan = self._plan if self._plan is not None or not self._leanable else self._make_plan()
        if plan is None:
            self.step()
            return
        grads = [[p.grad for p in params] for _, params, _, _, _ in plan]
        if any(grad is None for group_grads in grads for grad in group_grads):
            self.step()
            return
        for (group, params, exp_avgs, exp_avg_sqs, steps), group_grads in zip(plan, grads):
            torch._foreach_add_(steps, 1)
            beta1, beta2 = group["betas"]
            self._KERNEL(params, group_grads, exp_avgs, exp_avg_sqs, [], steps, amsgrad=False, lr=group["lr"],
                         beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"],
                         maximize=group["maximize"])

    def _make_plan(self) -> list | None:
        """Per non-empty group, its parameters and state lists; None while some state is missing."""
        if any(p not in self.state for group in self.param_groups for p in group["params"]):
            return None
        plan = []
        for group in self.param_groups:
            if group["params"]:
                states = [self.state[p] for p in group["params"]]
                plan.append((group, list(group["params"]), [state["exp_avg"] for state in states],
                             [state["exp_avg_sq"] for state in states], [state["step"] for state in states]))
        self._plan = plan
        return plan

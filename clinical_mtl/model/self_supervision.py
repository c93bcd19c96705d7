"""Self-supervised learning from every patient: masked-feature reconstruction.

With ``self_supervision > 0`` each training step also hides a random
``MASK_RATE`` of the input cells of the batch (set to 0, the training mean of
a standardised column, or "absent" for an indicator or a category) and asks a
linear decoder on the trunk to restore them (squared error on the hidden cells
only), in the spirit of VIME (Yoon et al. 2020) and masked autoencoders.
Every training row counts, including patients without any label, so the trunk
learns the structure of the whole cohort where labels are scarce. The decoder
serves training only: it is dropped afterwards, so prediction, explanations
and the saved model are those of the network alone.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

MASK_RATE = 0.3


class MaskedFeatureReconstruction(nn.Module):
    """A decoder from the trunk's last hidden layer back to the inputs.

    Parameters
    ----------
    width : int
        Width of the trunk's output.
    n_features : int
        Width of the inputs.
    mask_rate : float, default=0.3
        Share of input cells hidden at each step.
    """

    def __init__(self, width: int, n_features: int, mask_rate: float = MASK_RATE) -> None:
        super().__init__()
        self.mask_rate = mask_rate
        self.decoder = nn.Linear(width, n_features)

    @classmethod
    def for_module(cls, module: nn.Module, n_features: int, seed: int) -> MaskedFeatureReconstruction:
        """A decoder for ``module``'s trunk, its initial weights set by ``seed`` alone.

        Raises
        ------
        ValueError
            If the module has no hidden layer: there is no trunk to train.
        """
        linears = [layer for layer in module.trunk if isinstance(layer, nn.Linear)]
        if not linears:
            raise ValueError("self_supervision needs a shared trunk; hidden_layer_sizes is empty.")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return cls(linears[-1].out_features, n_features)

    def loss(self, trunk: nn.Module, x: Tensor) -> Tensor:
        """Mean squared reconstruction error of the masked cells of ``x``."""
        mask = torch.rand(x.shape, device=x.device) < self.mask_rate
        restored = self.decoder(trunk(x.masked_fill(mask, 0.0)))
        hidden = mask.to(x.dtype)
        return (((restored - x) ** 2) * hidden).sum() / hidden.sum().clamp(min=1.0)

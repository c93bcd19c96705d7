"""The network: a shared MLP trunk and one linear head per outcome.

Plain PyTorch; nothing here knows about pandas or scikit-learn.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn


class MultiHeadNet(nn.Module):
    """Shared fully connected trunk with one output head per task.

    Parameters
    ----------
    n_features : int
        Width of the input (the preprocessed feature matrix).
    hidden_layer_sizes : sequence of int
        Widths of the trunk's hidden layers, each followed by ReLU and dropout.
        Empty means no trunk: every head is then a model of the inputs.
    head_sizes : sequence of int
        Number of outputs of each head, in task order.
    dropout : float
        Dropout probability after every hidden layer.
    head_hidden_layer_sizes : sequence of sequence of int, optional
        Per head, the widths of its own hidden layers (task-specific layers,
        ReLU and dropout like the trunk's) before its output layer. A head
        without any is one ``nn.Linear``; one with some is an ``nn.Sequential``
        (see ``head_layers``).
    tied_heads : sequence of bool, optional
        Per head, whether its outputs share one effect of the inputs and
        differ only by their biases: the rows of its output weight are made
        equal and kept so while training (``tie_rows``). A survival head
        tied this way is a proportional-odds hazard model.

    Examples
    --------
    >>> net = MultiHeadNet(5, (8,), head_sizes=(1, 3), dropout=0.0, head_hidden_layer_sizes=((), (4,)))
    >>> [out.shape for out in net(torch.zeros(2, 5))]
    [torch.Size([2, 1]), torch.Size([2, 3])]
    """

    def __init__(
        self,
        n_features: int,
        hidden_layer_sizes: Sequence[int],
        head_sizes: Sequence[int],
        dropout: float = 0.0,
        head_hidden_layer_sizes: Sequence[Sequence[int]] | None = None,
        tied_heads: Sequence[bool] | None = None,
    ) -> None:
        super().__init__()
        self.trunk = _perceptron(n_features, hidden_layer_sizes, dropout)
        width = hidden_layer_sizes[-1] if len(hidden_layer_sizes) else n_features
        head_hidden = head_hidden_layer_sizes or [()] * len(head_sizes)
        self.heads = nn.ModuleList(
            nn.Linear(width, size) if not hidden else
            nn.Sequential(*_perceptron(width, hidden, dropout), nn.Linear(hidden[-1], size))
            for size, hidden in zip(head_sizes, head_hidden)
        )
        self.tied_heads = tuple(bool(t) for t in tied_heads) if tied_heads else (False,) * len(head_sizes)
        for head, tied in zip(self.heads, self.tied_heads):
            if tied:
                output = head_layers(head)[1]
                tie_rows(output.weight, [(0, output.out_features)])

    def train(self, mode: bool = True) -> MultiHeadNet:
        """Set training mode; the ReLUs work in place while training, as torch's usual ReLU otherwise.

        A Linear's backward needs its input, not its output, so a ReLU may
        overwrite it: that spares a fresh activation tensor per layer and step
        (about 4% of a training step's CPU time at batches of 128 to 1,024).
        Out of training mode the ReLUs leave their input alone, as tools that
        hook them (``shap.DeepExplainer``) expect.
        """
        super().train(mode)
        for module in self.modules():
            if isinstance(module, nn.ReLU):
                module.inplace = mode
        return self

    def forward(self, x: Tensor) -> list[Tensor]:
        """Return the raw output of every head (logits or standardised values)."""
        shared = self.trunk(x)
        return [head(shared) for head in self.heads]


def _perceptron(width: int, hidden_layer_sizes: Sequence[int], dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for size in hidden_layer_sizes:
        layers += [nn.Linear(width, size), nn.ReLU(inplace=True)]  # in place while training: MultiHeadNet.train
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = size
    return nn.Sequential(*layers)


def tie_rows(weight: nn.Parameter, blocks: Sequence[tuple[int, int]], members: Sequence[int] | None = None) -> None:
    """Make the rows ``start:stop`` of each block of an output layer's weight
    equal (to the block's first row) and keep them equal while training.

    Rows are the second-to-last dimension: a layer's ``(out, in)`` weight or a
    stacked ``(n_members, out, in)`` one. Every row of a block then gets the
    block's mean gradient, so AdamW, which acts element by element, moves
    them alike: they stay equal exactly, as one shared row would, and the
    layer stays an ``nn.Linear`` for saving, stacking and explanations.
    ``members`` (a stacked weight only) ties the rows of those members
    alone; by default every member's.

    Examples
    --------
    >>> layer = nn.Linear(3, 4)
    >>> tie_rows(layer.weight, [(1, 4)])
    >>> layer(torch.randn(5, 3)).sum().backward()
    >>> bool((layer.weight.grad[1:] == layer.weight.grad[1]).all()), bool((layer.weight[1:] == layer.weight[1]).all())
    (True, True)
    """
    own = ... if members is None else list(members)  # a stacked weight: only these members' rows
    with torch.no_grad():
        for start, stop in blocks:
            weight[own, start:stop, :] = weight[own, start : start + 1, :]

    def share_gradient(grad: Tensor) -> Tensor:
        grad = grad.clone()
        for start, stop in blocks:
            grad[own, start:stop, :] = grad[own, start:stop, :].mean(dim=-2, keepdim=True)
        return grad

    weight.register_hook(share_gradient)


def head_layers(head: nn.Module) -> tuple[list[nn.Linear], nn.Linear]:
    """A head's hidden linear layers (each followed by ReLU) and its output layer.

    Examples
    --------
    >>> hidden, output = head_layers(MultiHeadNet(5, (8,), (2,), head_hidden_layer_sizes=((4,),)).heads[0])
    >>> [layer.out_features for layer in hidden], output.out_features
    ([4], 2)
    """
    if isinstance(head, nn.Linear):
        return [], head
    linears = [layer for layer in head if isinstance(layer, nn.Linear)]
    return linears[:-1], linears[-1]


def soft_sharing_penalty(module: MultiHeadNet, tied_layers: int) -> Tensor:
    """Soft parameter sharing's tie: the squared distance of every head's first
    ``tied_layers`` hidden layers (weights and biases) from their mean over heads.

    Up to a factor of the number of heads, this is the sum over pairs of heads of
    the squared distance between corresponding weights (Duong et al. 2015).

    Examples
    --------
    >>> net = MultiHeadNet(3, (), (1, 1), head_hidden_layer_sizes=((2,), (2,)))
    >>> net.heads[1].load_state_dict(net.heads[0].state_dict())
    <All keys matched successfully>
    >>> float(soft_sharing_penalty(net, 1).detach())
    0.0
    """
    terms = []
    for depth in range(tied_layers):
        layers = [head_layers(head)[0][depth] for head in module.heads]
        for name in ("weight", "bias"):
            stacked = torch.stack([getattr(layer, name) for layer in layers])
            terms.append(((stacked - stacked.mean(dim=0)) ** 2).sum())
    return torch.stack(terms).sum()


class MultiHeadEnsemble(nn.Module):
    """Several ``MultiHeadNet`` members trained apart and used together.

    Parameters
    ----------
    members : sequence of MultiHeadNet
        Networks with the same input width and heads.

    Examples
    --------
    >>> ensemble = MultiHeadEnsemble([MultiHeadNet(5, (8,), (1, 3)) for _ in range(4)])
    >>> [out.shape for out in ensemble(torch.zeros(2, 5))]
    [torch.Size([4, 2, 1]), torch.Size([4, 2, 3])]
    """

    def __init__(self, members: Sequence[MultiHeadNet]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: Tensor) -> list[Tensor]:
        """Return every head's raw outputs stacked over members: (n_members, n, width)."""
        per_member = [member(x) for member in self.members]
        return [torch.stack(outputs) for outputs in zip(*per_member)]

    @torch.inference_mode()
    def predict_feature_major(self, x_t: Tensor, batch_size: int = 2048) -> list[Tensor]:
        """Inference on inputs laid out feature by feature: ``x_t`` of shape (n_inputs, n).

        All members are computed together: their first layers as one matrix
        product, deeper layers and heads as batched products, each on
        ``batch_size`` patients at a time (2,048 keeps the hidden layer in
        cache: 1.7M rows/s here against 1.0M at 16,384). Same values as
        ``forward(x_t.T)`` up to float rounding, several times faster.

        Every batch is a fresh tensor of exactly ``batch_size`` patients (the
        last one padded with copies of its last patient, dropped afterwards):
        the products' blocking and rounding follow their shapes, so this keeps
        a patient's outputs bit for bit the same however many come with it.

        Returns
        -------
        list of Tensor of shape (n_members, n, width)
            One per head.
        """
        self.eval()
        n_members = len(self.members)
        linears = [[layer for layer in m.trunk if isinstance(layer, nn.Linear)] for m in self.members]
        stacked = [
            (torch.stack([layers[depth].weight for layers in linears]),
             torch.stack([layers[depth].bias for layers in linears])[:, :, None])
            for depth in range(len(linears[0]))
        ]
        # Every head of a member in one matrix: one product reads the hidden layer once.
        # Heads with layers of their own first take their hidden layers, head by head.
        split = [[head_layers(head) for head in m.heads] for m in self.members]
        head_hidden = [
            [(torch.stack([layers[h][0][depth].weight for layers in split]),
              torch.stack([layers[h][0][depth].bias for layers in split])[:, :, None])
             for depth in range(len(split[0][h][0]))]
            for h in range(len(split[0]))
        ]
        outputs_of = [[layers[h][1] for layers in split] for h in range(len(split[0]))]
        widths = [out[0].out_features for out in outputs_of]
        head_outputs = [(torch.stack([o.weight for o in out]), torch.stack([o.bias for o in out])[:, :, None])
                        for out in outputs_of]
        if not any(head_hidden):
            head_weight = torch.stack([torch.cat([out[m].weight for out in outputs_of]) for m in range(n_members)])
            head_bias = torch.stack([torch.cat([out[m].bias for out in outputs_of])
                                     for m in range(n_members)])[:, :, None]
        outputs: list[Tensor] = []
        n = x_t.shape[1]
        for start in range(0, n, batch_size):
            part = x_t[:, start : start + batch_size]
            columns = x_t.new_empty((x_t.shape[0], batch_size))
            columns[:, : part.shape[1]] = part
            columns[:, part.shape[1] :] = part[:, -1:]
            if stacked:
                weight, bias = stacked[0]  # (members, width, inputs): one product for all members
                hidden = torch.addmm(bias.reshape(-1, 1), weight.reshape(-1, weight.shape[2]), columns).relu_()
                hidden = hidden.view(n_members, weight.shape[1], -1)
                for weight, bias in stacked[1:]:
                    hidden = torch.baddbmm(bias, weight, hidden).relu_()
            else:
                hidden = columns.expand(n_members, *columns.shape)
            if not any(head_hidden):
                outputs.append(torch.baddbmm(head_bias, head_weight, hidden))
                continue
            per_head = []
            for layers, (out_weight, out_bias) in zip(head_hidden, head_outputs):
                own = hidden
                for weight, bias in layers:
                    own = torch.baddbmm(bias, weight, own).relu_()
                per_head.append(torch.baddbmm(out_bias, out_weight, own))
            outputs.append(torch.cat(per_head, dim=1))
        stacked_outputs = torch.cat(outputs, dim=2)[:, :, :n].transpose(1, 2)  # (members, n, all head widths)
        return list(torch.split(stacked_outputs, widths, dim=2))


def build_network(
    n_features: int,
    hidden_layer_sizes: Sequence[int],
    head_sizes: Sequence[int],
    dropout: float,
    seed: int,
    head_hidden_layer_sizes: Sequence[Sequence[int]] | None = None,
    tied_heads: Sequence[bool] | None = None,
) -> MultiHeadNet:
    """Build a ``MultiHeadNet`` whose initial weights depend only on ``seed``.

    The global torch random state is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MultiHeadNet(n_features, hidden_layer_sizes, head_sizes, dropout, head_hidden_layer_sizes, tied_heads)


def split_by_outcome(network: MultiHeadNet, states: Sequence[dict | None], dropout: float) -> MultiHeadNet:
    """A network with no shared trunk whose head ``t`` is ``network``'s trunk and head ``t`` as they
    were in ``states[t]`` (a ``state_dict`` of ``network``; None: as ``network`` is now).

    What per-outcome early stopping leaves: each outcome with the weights of its own best epoch. The
    trunk's layers become each head's first hidden layers, the layout of soft sharing, so predicting,
    explaining and saving need nothing new.

    Examples
    --------
    >>> net = MultiHeadNet(3, (4,), head_sizes=(1, 2))
    >>> split = split_by_outcome(net, [None, None], dropout=0.0)
    >>> x = torch.randn(5, 3)
    >>> len(split.trunk), all(torch.equal(a, b) for a, b in zip(net(x), split(x)))
    (0, True)
    """
    trunk = [layer.out_features for layer in network.trunk if isinstance(layer, nn.Linear)]
    heads = [head_layers(head) for head in network.heads]
    n_features = network_linears(network)[0].in_features
    split = MultiHeadNet(n_features, (), [output.out_features for _, output in heads], dropout,
                         [(*trunk, *(layer.out_features for layer in hidden)) for hidden, _ in heads],
                         network.tied_heads)
    source = copy.deepcopy(network)
    with torch.no_grad():
        for t, (head, state) in enumerate(zip(split.heads, states)):
            source.load_state_dict(state if state is not None else network.state_dict())
            hidden, output = head_layers(source.heads[t])
            layers = [layer for layer in source.trunk if isinstance(layer, nn.Linear)] + hidden + [output]
            own_hidden, own_output = head_layers(head)
            for target, layer in zip([*own_hidden, own_output], layers, strict=True):
                target.weight.copy_(layer.weight)
                target.bias.copy_(layer.bias)
    return split


def network_linears(network: MultiHeadNet) -> list[nn.Linear]:
    """Every linear layer of ``network``: the trunk's, then each head's own and its output layer."""
    trunk = [layer for layer in network.trunk if isinstance(layer, nn.Linear)]
    heads = [layer for head in network.heads for layer in (*head_layers(head)[0], head_layers(head)[1])]
    return trunk + heads

import torch

from clinical_mtl.model.network import MultiHeadNet, build_network


def test_heads_share_the_trunk():
    net = MultiHeadNet(5, (16, 8), head_sizes=(1, 3, 1), dropout=0.2)
    outputs = net(torch.zeros(4, 5))
    assert [tuple(out.shape) for out in outputs] == [(4, 1), (4, 3), (4, 1)]
    assert all(head.in_features == 8 for head in net.heads)


def test_no_hidden_layers_gives_linear_heads():
    net = MultiHeadNet(5, (), head_sizes=(2,))
    assert len(net.trunk) == 0 and net.heads[0].in_features == 5


def test_build_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = build_network(4, (8,), [1], 0.1, seed=7)
    assert torch.equal(state, torch.get_rng_state())
    second = build_network(4, (8,), [1], 0.1, seed=7)
    other = build_network(4, (8,), [1], 0.1, seed=8)
    for a, b, c in zip(first.parameters(), second.parameters(), other.parameters()):
        assert torch.equal(a, b)
        assert not torch.equal(a, c)


def _relu_outputs_share_inputs(net, x):
    """Per ReLU of ``net``, whether a forward pass wrote its output over its input."""
    shared, handles = [], []
    for module in net.modules():
        if isinstance(module, torch.nn.ReLU):
            handles.append(module.register_forward_hook(
                lambda _, inputs, output: shared.append(output.data_ptr() == inputs[0].data_ptr())))
    net(x)
    for handle in handles:
        handle.remove()
    return shared


def test_relus_work_in_place_only_while_training_and_leave_gradients_alone():
    net = MultiHeadNet(5, (16, 8), head_sizes=(1, 3), head_hidden_layer_sizes=((4,), ()))
    x = torch.randn(32, 5)
    assert _relu_outputs_share_inputs(net.train(), x) == [True] * 3
    assert _relu_outputs_share_inputs(net.eval(), x) == [False] * 3

    reference = MultiHeadNet(5, (16, 8), head_sizes=(1, 3), head_hidden_layer_sizes=((4,), ()))
    reference.load_state_dict(net.state_dict())
    reference.train()
    for module in reference.modules():
        if isinstance(module, torch.nn.ReLU):
            module.inplace = False  # torch's usual ReLU, as a hand-written network has it
    grads = []
    for model in (net.train(), reference):
        model.zero_grad()
        sum(out.square().sum() for out in model(x)).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for ours, usual in zip(*grads):
        assert torch.equal(ours, usual)

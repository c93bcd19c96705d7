import pytest
import torch

from clinical_mtl.model.network import MultiHeadEnsemble, MultiHeadNet, build_network


def test_heads_share_the_trunk():
    net = MultiHeadNet(5, (16, 8), head_sizes=(1, 3, 1), dropout=0.2)
    outputs = net(torch.zeros(4, 5))
    assert [tuple(out.shape) for out in outputs] == [(4, 1), (4, 3), (4, 1)]
    assert all(head.in_features == 8 for head in net.heads)


def test_no_hidden_layers_gives_linear_heads():
    net = MultiHeadNet(5, (), head_sizes=(2,))
    assert len(net.trunk) == 0 and net.heads[0].in_features == 5


def test_dropout_acts_after_every_hidden_layer_while_training_only():
    net = MultiHeadNet(5, (16, 8), head_sizes=(1,), dropout=0.5)
    x = torch.randn(6, 5)
    torch.manual_seed(0)
    with torch.no_grad():
        assert not torch.equal(net.train()(x)[0], net.eval()(x)[0])
    # without a dropout setting there is none while training, and no layer for it: the weights keep their
    # names (trunk.0, trunk.2) in model files
    plain = MultiHeadNet(5, (16,), head_sizes=(1, 3), head_hidden_layer_sizes=((4,), ()))
    with torch.no_grad():
        for mine, theirs in zip(plain.train()(x), plain.eval()(x), strict=True):
            assert torch.equal(mine, theirs)
    assert list(MultiHeadNet(5, (16, 8), head_sizes=(1,)).state_dict())[:4] == [
        "trunk.0.weight", "trunk.0.bias", "trunk.2.weight", "trunk.2.bias"]


def test_a_new_network_is_in_training_mode_with_its_relus_in_place():
    net = MultiHeadNet(5, (16, 8), head_sizes=(1,))
    relus = [module for module in net.modules() if isinstance(module, torch.nn.ReLU)]
    assert net.training and len(relus) == 2 and all(relu.inplace for relu in relus)
    net.eval()
    assert not any(relu.inplace for relu in relus)


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


@pytest.mark.parametrize("n_members", [1, 3])
@pytest.mark.parametrize("trunk, head_hidden", [((8, 6), None), ((), None), ((8,), [(4,), ()])])
def test_feature_major_prediction_equals_each_members_forward(n_members, trunk, head_hidden):
    members = [build_network(5, trunk, [1, 3], 0.0, seed, head_hidden) for seed in range(n_members)]
    ensemble = MultiHeadEnsemble(members)
    x = torch.randn(7, 5)
    with torch.no_grad():
        outputs = ensemble.predict_feature_major(x.T.contiguous(), batch_size=4)
        for m, member in enumerate(members):
            for mine, theirs in zip(outputs, member.eval()(x), strict=True):
                torch.testing.assert_close(mine[m], theirs)

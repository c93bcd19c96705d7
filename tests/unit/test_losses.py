import math

import pytest
import torch

from clinical_mtl.losses import FixedWeighting, UncertaintyWeighting, masked_task_loss
from clinical_mtl.network import build_network


def test_loss_is_the_mean_over_labelled_rows_only():
    output = torch.tensor([[0.5], [2.0], [-1.0], [3.0]])
    target = torch.tensor([1.0, 0.0, 0.0, 1.0])
    weight = torch.tensor([1.0, 0.0, 1.0, 0.0])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.tensor([0.5, -1.0]), torch.tensor([1.0, 0.0])
    )
    assert masked_task_loss(output, target, weight, "binary").item() == pytest.approx(expected.item())


def test_multiclass_and_regression_losses():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 2.0]])
    cls = masked_task_loss(logits, torch.tensor([0, 1]), torch.tensor([1.0, 1.0]), "multiclass")
    expected = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1]))
    assert cls.item() == pytest.approx(expected.item())
    reg = masked_task_loss(torch.tensor([[1.0], [5.0]]), torch.tensor([0.0, 0.0]), torch.tensor([1.0, 0.0]), "regression")
    assert reg.item() == pytest.approx(1.0)


def test_class_weights_give_a_weighted_mean():
    output = torch.tensor([[0.0], [0.0]])
    target = torch.tensor([1.0, 0.0])
    weight = torch.tensor([3.0, 1.0])
    assert masked_task_loss(output, target, weight, "binary").item() == pytest.approx(math.log(2))


def _task_gradient(X, target, weight, kind="binary"):
    net = build_network(X.shape[1], (8,), [1], 0.0, seed=0)
    loss = masked_task_loss(net(X)[0], target, weight, kind)
    loss.backward()
    return torch.cat([p.grad.flatten() for p in net.parameters()])


@pytest.mark.parametrize("kind", ["binary", "regression"])
def test_an_unlabelled_row_has_no_influence_on_the_task_gradient(kind):
    generator = torch.Generator().manual_seed(0)
    X = torch.randn(6, 4, generator=generator)
    target = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 0.0])
    weight = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0, 1.0])  # row 3 unlabelled
    reference = _task_gradient(X, target, weight, kind)
    changed_X, changed_target = X.clone(), target.clone()
    changed_X[3] = 1e3
    changed_target[3] = 1.0
    assert torch.equal(reference, _task_gradient(changed_X, changed_target, weight, kind))
    # Whereas a labelled row does move the gradient.
    changed_X[1] = 1e3
    assert not torch.equal(reference, _task_gradient(changed_X, target, weight, kind))


def test_fixed_weighting_sums_present_tasks():
    weighting = FixedWeighting([2.0, 1.0, 0.5])
    total = weighting([torch.tensor(1.0), None, torch.tensor(4.0)])
    assert total.item() == pytest.approx(4.0)
    assert weighting.report() == {"weight": [2.0, 1.0, 0.5]}


def test_uncertainty_weighting_follows_kendall_gal_cipolla():
    weighting = UncertaintyWeighting([False, True])
    with torch.no_grad():
        weighting.log_variances[0].fill_(math.log(4.0))  # sigma = 2
        weighting.log_variances[1].fill_(math.log(0.25))  # sigma = 0.5
    total = weighting([torch.tensor(2.0), torch.tensor(3.0)])
    expected = 2.0 / 4.0 + math.log(2.0) + 3.0 / (2 * 0.25) + math.log(0.5)
    assert total.item() == pytest.approx(expected)
    report = weighting.report()
    assert report["sigma"] == pytest.approx([2.0, 0.5])
    assert report["weight"] == pytest.approx([0.25, 2.0])


def test_a_task_absent_from_the_batch_does_not_move_its_sigma():
    weighting = UncertaintyWeighting([False, True])
    optimizer = torch.optim.AdamW(weighting.parameters(), lr=0.1, weight_decay=0.0)
    for present_second in (True, False, False):
        optimizer.zero_grad(set_to_none=True)
        before = [p.detach().clone() for p in weighting.log_variances]
        losses = [torch.tensor(2.0), torch.tensor(3.0) if present_second else None]
        weighting(losses).backward()
        optimizer.step()
        after = [p.detach() for p in weighting.log_variances]
        assert not torch.equal(before[0], after[0])
        assert torch.equal(before[1], after[1]) != present_second

import math

import pytest
import torch

from clinical_mtl.exceptions import TaskSpecificationError
from clinical_mtl.model.losses import FixedWeighting, UncertaintyWeighting, masked_task_loss
from clinical_mtl.model.network import build_network
from clinical_mtl.model.tasks import TaskSpec
from clinical_mtl.model.weighting import weighting_factory


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


def _uncertainty_weighting(is_regression, sigmas):
    """An ``UncertaintyWeighting`` whose sigma_t are set by hand (``s_t = log sigma_t^2``)."""
    weighting = UncertaintyWeighting(is_regression)
    with torch.no_grad():
        for parameter, sigma in zip(weighting.log_variances, sigmas):
            parameter.fill_(2 * math.log(sigma))
    return weighting


@pytest.mark.parametrize(
    ("is_regression", "sigmas", "losses"),
    [
        ([False], [1.5], [0.8]),
        ([True], [3.0], [2.5]),
        ([False, True, False], [1.5, 3.0, 0.7], [0.8, 2.5, 1.3]),
        ([True, False, True], [0.4, 2.2, 1.7], [1.1, 0.3, None]),
    ],
)
def test_uncertainty_objective_and_its_sigma_gradient_match_the_formula(is_regression, sigmas, losses):
    """L / sigma^2 + log sigma (classification), L / (2 sigma^2) + log sigma (regression).

    The sigmas are asymmetric, so their log terms do not cancel; an absent task
    (None) adds neither its loss nor its log sigma.
    """
    weighting = _uncertainty_weighting(is_regression, sigmas)
    total = weighting([None if loss is None else torch.tensor(loss) for loss in losses])
    expected = sum(
        loss / ((2 if reg else 1) * sigma**2) + math.log(sigma)
        for reg, sigma, loss in zip(is_regression, sigmas, losses)
        if loss is not None
    )
    assert total.item() == pytest.approx(expected, rel=1e-6)
    total.backward()
    for reg, sigma, loss, s in zip(is_regression, sigmas, losses, weighting.log_variances):
        if loss is None:
            assert s.grad is None
            continue
        # d/d(log sigma) of c L exp(-2 log sigma) + log sigma is 1 - 2 c L / sigma^2, with
        # c = 1/2 for regression; the parameter s = 2 log sigma gets half of it.
        c = 0.5 if reg else 1.0
        d_log_sigma = 1 - 2 * c * loss / sigma**2
        assert s.grad.item() == pytest.approx(d_log_sigma / 2, rel=1e-6)


@pytest.mark.parametrize("is_regression", [False, True])
def test_uncertainty_sigma_gradient_vanishes_where_sigma_squared_matches_the_loss(is_regression):
    """The stationary point of the objective in sigma: sigma^2 = L (regression), 2 L (classification)."""
    loss = 0.37
    sigma = math.sqrt(loss if is_regression else 2 * loss)
    weighting = _uncertainty_weighting([is_regression], [sigma])
    weighting([torch.tensor(loss)]).backward()
    assert abs(weighting.log_variances[0].grad.item()) < 1e-6
    for factor in (0.8, 1.25):  # below the optimum sigma the objective falls with sigma, above it rises
        weighting = _uncertainty_weighting([is_regression], [sigma * factor])
        weighting([torch.tensor(loss)]).backward()
        assert math.copysign(1, weighting.log_variances[0].grad.item()) == math.copysign(1, factor - 1)


SPECS = [TaskSpec("diagnosis", "binary", (0, 1)), TaskSpec("stage", "multiclass", (1, 2, 3)),
         TaskSpec("bilirubin", "regression")]


def test_equal_weighting_gives_every_outcome_weight_one():
    weighting = weighting_factory("equal", SPECS)()
    assert weighting.report() == {"weight": [1.0, 1.0, 1.0]}
    assert weighting([torch.tensor(0.5), None, torch.tensor(2.0)]).item() == pytest.approx(2.5)


def test_a_zero_weight_is_accepted_and_silences_its_outcome():
    weighting = weighting_factory({"diagnosis": 0.0, "stage": 2.0, "bilirubin": 0.5}, SPECS)()
    assert weighting.report() == {"weight": [0.0, 2.0, 0.5]}
    assert weighting([torch.tensor(7.0), torch.tensor(1.0), torch.tensor(4.0)]).item() == pytest.approx(4.0)
    with pytest.raises(TaskSpecificationError, match="non-negative"):
        weighting_factory({"diagnosis": -0.5, "stage": 2.0, "bilirubin": 0.5}, SPECS)

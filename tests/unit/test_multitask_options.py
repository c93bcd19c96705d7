"""The multi-task toolbox in the training loop: label-share and dynamic weighting (DWA, GradNorm,
PCGrad), alternate training, per-head weight decay, self-supervision and the
gradient cosines, each against an independent computation."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from clinical_mtl import MultiTaskMLP
from clinical_mtl.exceptions import TaskSpecificationError
from clinical_mtl.model.fitting import head_hidden_sizes, training_settings
from clinical_mtl.model.losses import (
    FixedWeighting,
    LabelShareWeighting,
    masked_task_loss,
    row_losses,
)
from clinical_mtl.model.network import build_network, soft_sharing_penalty
from clinical_mtl.model.relatedness import (
    ALIGNED,
    CONFLICTING,
    cosine_key,
    describe_relatedness,
    gradient_cosines,
    reading,
    relatedness_table,
)
from clinical_mtl.model.self_supervision import MaskedFeatureReconstruction
from clinical_mtl.model.tasks import infer_tasks
from clinical_mtl.model.training import Rotation, TaskData, TrainingSettings, fit_module
from clinical_mtl.model.weighting import (
    DynamicWeightAverage,
    GradNorm,
    PCGrad,
    project_conflicts,
    weighting_factory,
)

SETTINGS = {"learning_rate": 0.01, "weight_decay": 0.0, "batch_size": 8, "max_epochs": 3, "patience": 10,
            "verbose": 0}
KINDS = ["binary", "regression"]


def two_tasks(n=40, seed=0):
    generator = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 3, generator=generator)
    weights = torch.ones(n, 2)
    weights[::4, 1] = 0.0
    return TaskData(X, [(X[:, 0] > 0).long(), 2 * X[:, 1]], weights)


def fit(data, weighting=None, seed=0, **settings):
    net = build_network(3, (16,), [1, 1], 0.0, seed=seed)
    result = fit_module(net, weighting or FixedWeighting([1.0, 1.0]), ["cls", "value"], KINDS, data, None,
                        TrainingSettings(**(SETTINGS | settings)), seed=seed)
    return net, result


def task_losses(net, data):
    outputs = net(data.X)
    return [masked_task_loss(outputs[t], data.targets[t], data.weights[:, t], kind) for t, kind in enumerate(KINDS)]


# Label share ---------------------------------------------------------------------------

class RecordingLabelShare(LabelShareWeighting):
    """Keeps the task losses of every step it combines."""

    def __init__(self, n_tasks):
        super().__init__(n_tasks)
        self.seen = []

    def forward(self, losses):
        self.seen.append([None if loss is None else loss.item() for loss in losses])
        return super().forward(losses)


def test_label_share_divides_each_tasks_loss_by_every_row_of_the_batch():
    data = two_tasks()  # the regression outcome lacks a quarter of its labels
    net = build_network(3, (16,), [1, 1], 0.0, seed=0)
    with torch.no_grad():
        outputs = net(data.X)
    sums = [(row_losses(outputs[t], data.targets[t].float() if kind == "binary" else data.targets[t], kind)
             * data.weights[:, t]).sum().item() for t, kind in enumerate(KINDS)]
    weighting = RecordingLabelShare(2)
    result = fit_module(net, weighting, ["cls", "value"], KINDS, data, None,
                        TrainingSettings(**(SETTINGS | {"batch_size": len(data), "max_epochs": 1})), seed=0)
    n_labelled = data.weights.sum(dim=0).tolist()
    assert n_labelled == [40.0, 30.0]
    # The step saw each task's sum over all 40 rows of the batch: the regression weighs 30/40 of its mean.
    assert weighting.seen == [[pytest.approx(total / 40, rel=1e-5) for total in sums]]
    # The history still reports each task's mean over its own labelled rows.
    record = result.history[0]
    assert [record["train_loss/cls"], record["train_loss/value"]] == pytest.approx(
        [total / n for total, n in zip(sums, n_labelled)], rel=1e-5)
    # Early stopping watches the plain sum of the tasks' mean losses, as with equal weights.
    losses = [torch.tensor(0.5), torch.tensor(2.0)]
    assert weighting.validation_objective(losses).item() == pytest.approx(2.5)


def test_label_share_and_equal_weights_train_alike_where_every_row_has_every_label():
    data = two_tasks()
    data.weights[:] = 1.0
    shared, _ = fit(data, LabelShareWeighting(2), max_epochs=2)
    equal, _ = fit(data, FixedWeighting([1.0, 1.0]), max_epochs=2)
    for p, q in zip(shared.parameters(), equal.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


# Dynamic Weight Average -----------------------------------------------------------------

def test_dwa_weights_follow_the_ratio_of_the_last_two_epoch_losses():
    dwa = DynamicWeightAverage(3)
    dwa.end_epoch([2.0, 1.0, 4.0])
    assert dwa.report()["weight"] == [1.0, 1.0, 1.0]  # one epoch: no ratio yet
    dwa.end_epoch([1.0, 0.9, 4.4])
    ratios = np.array([0.5, 0.9, 1.1])
    expected = 3 * np.exp(ratios / 2) / np.exp(ratios / 2).sum()
    assert dwa.report()["weight"] == pytest.approx(expected.tolist(), rel=1e-6)
    total = dwa([torch.tensor(1.0), None, torch.tensor(2.0)])
    assert total.item() == pytest.approx(expected[0] + 2 * expected[2], rel=1e-6)


def test_dwa_keeps_the_weight_of_a_task_absent_from_an_epoch():
    dwa = DynamicWeightAverage(3)
    dwa.end_epoch([1.0, 1.0, 1.0])
    dwa.end_epoch([0.5, 1.0, 2.0])
    before = dwa.report()["weight"]
    dwa.end_epoch([0.25, math.nan, 2.0])
    after = dwa.report()["weight"]
    assert after[1] == before[1]
    ratios = np.array([0.5, 1.0])
    assert [after[0], after[2]] == pytest.approx((2 * np.exp(ratios / 2) / np.exp(ratios / 2).sum()).tolist())


def test_dynamic_weightings_stop_early_on_the_unweighted_validation_loss():
    for weighting in (DynamicWeightAverage(2), GradNorm(2), PCGrad(2)):
        losses = [torch.tensor(0.3), torch.tensor(0.5)]
        assert weighting.validation_objective(losses).item() == pytest.approx(0.8)


# GradNorm ---------------------------------------------------------------------------

@pytest.mark.parametrize("trunk, weights, initial", [((16,), (0.5, 1.5), (2.0, 0.5)),
                                                     ((16, 8), (0.5, 1.5), (2.0, 0.5)),
                                                     ((16,), (0.2, 1.8), (0.5, 2.0)),
                                                     ((16,), (1.8, 0.2), (0.5, 2.0))])
def test_gradnorm_moves_each_weight_by_the_gradient_of_its_norm_gap(trunk, weights, initial):
    data = two_tasks()
    net = build_network(3, trunk, [1, 1], 0.0, seed=0)
    gradnorm = GradNorm(2)
    with torch.no_grad():
        for w, value in zip(gradnorm.task_weights, weights):
            w.fill_(value)
        gradnorm.initial_losses.copy_(torch.tensor(initial))
    losses = task_losses(net, data)
    last = [layer for layer in net.trunk if isinstance(layer, torch.nn.Linear)][-1].weight  # the last shared layer
    norms = [torch.autograd.grad(loss, last, retain_graph=True)[0].norm().item() for loss in losses]
    scaled = np.array(weights) * np.array(norms)
    rates = np.array([losses[0].item() / initial[0], losses[1].item() / initial[1]])
    target = scaled.mean() * (rates / rates.mean()) ** 1.5
    expected = np.sign(scaled - target) * np.array(norms)
    gradnorm.backward(gradnorm(losses), losses, list(net.trunk.parameters()))
    assert [w.grad.item() for w in gradnorm.task_weights] == pytest.approx(expected.tolist(), rel=1e-5)
    # The network's gradient is that of sum w_t L_t.
    reference = build_network(3, trunk, [1, 1], 0.0, seed=0)
    ref_losses = task_losses(reference, data)
    (weights[0] * ref_losses[0] + weights[1] * ref_losses[1]).backward()
    for p, q in zip(net.parameters(), reference.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-6)


def test_gradnorm_renormalises_only_the_tasks_present():
    gradnorm = GradNorm(3)
    with torch.no_grad():
        for w, value in zip(gradnorm.task_weights, (2.0, 0.4, 1.0)):
            w.fill_(value)
    gradnorm.after_step([torch.tensor(1.0), None, torch.tensor(1.0)])
    weights = gradnorm.report()["weight"]
    assert weights[1] == pytest.approx(0.4)
    assert sum(weights) == pytest.approx(3.0)
    assert weights[0] / weights[2] == pytest.approx(2.0)


def test_gradnorm_rescales_the_present_tasks_to_what_the_absent_ones_leave_of_the_total():
    gradnorm = GradNorm(2)
    with torch.no_grad():
        gradnorm.task_weights[0].fill_(1.4)  # absent
        gradnorm.task_weights[1].fill_(0.9)  # present, moved by a step: the total is no longer 2
    gradnorm.after_step([None, torch.tensor(1.0)])
    assert gradnorm.report()["weight"] == pytest.approx([1.4, 0.6])


def test_gradnorm_never_moves_the_weight_of_an_absent_task_in_training():
    data = two_tasks()
    data.weights[:, 1] = 0.0
    gradnorm = GradNorm(2)
    fit(data, gradnorm, max_epochs=2)
    assert gradnorm.report()["weight"][1] == 1.0
    assert gradnorm.task_weights[1].grad is None


# PCGrad -----------------------------------------------------------------------------

def test_project_conflicts_matches_the_projection_rule():
    g = torch.tensor([[1.0, 0.0, 1.0], [-1.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
    projected = project_conflicts(g, torch.Generator().manual_seed(3))
    # Only tasks 0 and 1 conflict (inner product -1); task 2 agrees with both.
    expected = g.clone()
    expected[0] = g[0] - (-1.0 / 2.0) * g[1]
    expected[1] = g[1] - (-1.0 / 2.0) * g[0]
    assert torch.allclose(projected, expected)
    agreeing = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    assert torch.equal(project_conflicts(agreeing, torch.Generator()), agreeing)


def test_project_conflicts_leaves_gradients_that_agree_even_slightly_or_are_zero():
    g = torch.tensor([[1.0, 0.0], [0.5, 3.0]])  # inner product 0.5: no conflict
    assert torch.equal(project_conflicts(g, torch.Generator().manual_seed(0)), g)
    g = torch.tensor([[1.0, 2.0], [0.0, 0.0], [3.0, -1.0]])  # a task whose loss does not move the trunk
    assert torch.equal(project_conflicts(g, torch.Generator().manual_seed(0)), g)


def test_pcgrad_without_a_shared_layer_sums_the_task_gradients():
    data = two_tasks()
    net, reference = build_network(3, (), [1, 1], 0.0, seed=0), build_network(3, (), [1, 1], 0.0, seed=0)
    losses, pcgrad = task_losses(net, data), PCGrad(2)
    pcgrad.backward(pcgrad(losses), losses, list(net.trunk.parameters()))
    sum(task_losses(reference, data)).backward()
    for p, q in zip(net.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad)


def test_the_uncertainty_weighting_halves_only_the_regression_outcomes_losses():
    specs = infer_tasks(pd.DataFrame({"sick": [0, 1, 1, 0], "score": [0.5, 1.5, 2.0, 3.0]}))
    weighting = weighting_factory("uncertainty", specs)()
    kinds = {spec.name: spec.kind for spec in specs}
    assert kinds == {"sick": "binary", "score": "regression"}
    assert weighting.report()["weight"] == [1.0, 0.5]  # L / sigma^2 and L / (2 sigma^2) at sigma 1


def test_pcgrad_writes_the_projected_sum_on_the_trunk_and_plain_gradients_on_the_heads():
    data = two_tasks()
    net = build_network(3, (16,), [1, 1], 0.0, seed=0)
    shared = list(net.trunk.parameters())
    losses = task_losses(net, data)
    per_task = torch.stack([torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, shared, retain_graph=True)])
                            for loss in losses])
    expected = project_conflicts(per_task, torch.Generator().manual_seed(0)).sum(dim=0)
    head_gradients = [torch.autograd.grad(loss, list(net.heads[t].parameters()), retain_graph=True)
                      for t, loss in enumerate(losses)]
    pcgrad = PCGrad(2)
    pcgrad.backward(pcgrad(losses), losses, shared)
    assert torch.allclose(torch.cat([p.grad.reshape(-1) for p in shared]), expected, atol=1e-6)
    for head, gradients in zip(net.heads, head_gradients):
        for p, g in zip(head.parameters(), gradients):
            assert torch.allclose(p.grad, g, atol=1e-6)


@pytest.mark.parametrize("make", [lambda: PCGrad(2), lambda: GradNorm(2), lambda: DynamicWeightAverage(2),
                                  lambda: LabelShareWeighting(2)])
def test_an_unlabelled_rows_target_never_changes_a_dynamic_fit(make):
    data = two_tasks()
    first, _ = fit(data, make(), max_epochs=2)
    changed = two_tasks()
    unlabelled = changed.weights[:, 1] == 0
    changed.targets[1][unlabelled] = 1e3
    second, _ = fit(changed, make(), max_epochs=2)
    for p, q in zip(first.parameters(), second.parameters()):
        assert torch.equal(p, q)


# Alternate training --------------------------------------------------------------------

def test_rotation_takes_the_tasks_in_turn_and_skips_absent_ones():
    rotation = Rotation(3)
    picks = [rotation.choose(present) for present in
             ([1, 1, 1], [1, 1, 1], [1, 1, 1], [0, 1, 1], [1, 0, 1], [1, 1, 0])]
    assert picks == [0, 1, 2, 1, 2, 0]


def test_alternate_training_moves_one_head_per_step():
    data = two_tasks()
    before = build_network(3, (16,), [1, 1], 0.0, seed=0)
    after, result = fit(data, training="alternate", max_epochs=1, batch_size=len(data))
    assert not torch.equal(before.trunk[0].weight, after.trunk[0].weight)
    assert not torch.equal(before.heads[0].weight, after.heads[0].weight)  # step 1: the first task
    assert torch.equal(before.heads[1].weight, after.heads[1].weight)
    assert torch.equal(before.heads[1].bias, after.heads[1].bias)
    # Both tasks' losses are still reported.
    assert math.isfinite(result.history[0]["train_loss/value"])


def test_alternate_training_gives_each_task_its_share_of_steps():
    data = two_tasks(n=64)
    before = build_network(3, (16,), [1, 1], 0.0, seed=0)
    after, _ = fit(data, training="alternate", max_epochs=1, batch_size=16)  # 4 steps: 0, 1, 0, 1
    assert not torch.equal(before.heads[1].weight, after.heads[1].weight)


# Per-head weight decay -------------------------------------------------------------------

def test_head_weight_decay_shrinks_only_its_own_head():
    data = two_tasks()
    initial = build_network(3, (16,), [1, 1], 0.0, seed=0)
    plain, _ = fit(data, max_epochs=1, batch_size=len(data), head_weight_decay=(0.0, 0.0))
    decayed, _ = fit(data, max_epochs=1, batch_size=len(data), head_weight_decay=(0.0, 5.0))
    # AdamW's decoupled decay after one step: p - lr * decay * p, on top of the same Adam update.
    expected = plain.heads[1].weight - 0.01 * 5.0 * initial.heads[1].weight
    assert torch.allclose(decayed.heads[1].weight, expected, atol=1e-7)
    assert torch.equal(plain.heads[0].weight, decayed.heads[0].weight)
    assert torch.equal(plain.trunk[0].weight, decayed.trunk[0].weight)
    assert torch.equal(plain.heads[1].bias, decayed.heads[1].bias)


def test_head_hidden_widths_must_be_positive_integers():

    specs = infer_tasks(pd.DataFrame({"a": [0, 1, 0], "b": [0.5, 1.5, 2.5]}))
    assert head_hidden_sizes((1, np.int64(3)), specs) == [(1, 3), (1, 3)]
    assert head_hidden_sizes({"b": (2,)}, specs) == [(), (2,)]
    for bad in [(0,), (-2,), (True,), (2.5,), {"a": (4, 0)}]:
        with pytest.raises(TaskSpecificationError, match="must give positive integer widths"):
            head_hidden_sizes(bad, specs)


def test_head_weight_decay_takes_zero_and_refuses_negative_or_infinite_values():

    specs = infer_tasks(pd.DataFrame({"a": [0, 1, 0], "b": [0.5, 1.5, 2.5]}))
    assert training_settings(MultiTaskMLP(head_weight_decay=0.0), specs, 100).head_weight_decay == (0.0, 0.0)
    mapped = MultiTaskMLP(weight_decay=0.02, head_weight_decay={"b": 0.0})
    assert training_settings(mapped, specs, 100).head_weight_decay == (0.02, 0.0)
    for bad in (-0.1, math.inf, {"a": -1.0}, {"b": math.inf}):
        with pytest.raises(TaskSpecificationError, match="must be finite and >= 0"):
            training_settings(MultiTaskMLP(head_weight_decay=bad), specs, 100)


# Self-supervision ------------------------------------------------------------------------

def test_reconstruction_loss_is_the_mean_squared_error_of_the_masked_cells():
    net = build_network(4, (8,), [1], 0.0, seed=0)
    reconstruction = MaskedFeatureReconstruction.for_module(net, 4, seed=1)
    x = torch.randn(10, 4, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(5)
    loss = reconstruction.loss(net.trunk, x)
    torch.manual_seed(5)
    mask = torch.rand(x.shape) < 0.3
    restored = reconstruction.decoder(net.trunk(torch.where(mask, torch.zeros_like(x), x)))
    expected = ((restored - x)[mask] ** 2).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_reconstruction_loss_over_a_single_hidden_cell_is_its_squared_error():
    net = build_network(1, (3,), [1], 0.0, seed=0)
    reconstruction = MaskedFeatureReconstruction(3, 1, mask_rate=1.0)  # every cell hidden: here, one
    x = torch.tensor([[2.0]])
    restored = reconstruction.decoder(net.trunk(torch.zeros_like(x)))
    assert reconstruction.loss(net.trunk, x).item() == pytest.approx(((restored - x) ** 2).item(), rel=1e-6)
    nothing_hidden = MaskedFeatureReconstruction(3, 1, mask_rate=0.0)
    assert nothing_hidden.loss(net.trunk, x).item() == 0.0


def test_self_supervision_trains_the_trunk_on_patients_without_labels():
    data = two_tasks()
    data.weights[:] = 0.0  # nobody labelled
    before = build_network(3, (16,), [1, 1], 0.0, seed=0)
    unsupervised, _ = fit(data, max_epochs=1)
    assert all(torch.equal(p, q) for p, q in zip(before.parameters(), unsupervised.parameters()))
    supervised_by_itself, _ = fit(data, max_epochs=1, self_supervision=1.0)
    assert not torch.equal(before.trunk[0].weight, supervised_by_itself.trunk[0].weight)
    assert torch.equal(before.heads[0].weight, supervised_by_itself.heads[0].weight)


def test_self_supervision_needs_a_trunk():
    net = build_network(3, (), [1, 1], 0.0, seed=0)
    with pytest.raises(ValueError, match="needs a shared trunk"):
        MaskedFeatureReconstruction.for_module(net, 3, seed=0)


# Task relatedness ------------------------------------------------------------------------

def test_gradient_cosines_equal_the_cosine_of_the_flattened_trunk_gradients():
    data = two_tasks()
    net = build_network(3, (16,), [1, 1], 0.0, seed=0)
    shared = list(net.trunk.parameters())
    losses = task_losses(net, data)
    g = [torch.cat([x.reshape(-1) for x in torch.autograd.grad(loss, shared, retain_graph=True)]).double()
         for loss in losses]
    expected = (g[0] @ g[1] / (g[0].norm() * g[1].norm())).item()
    assert gradient_cosines(losses, shared, ["cls", "value"]) == {
        cosine_key("cls", "value"): pytest.approx(expected, abs=1e-5)}
    assert gradient_cosines([losses[0], None], shared, ["cls", "value"]) == {}


def test_tasks_competing_for_a_narrow_trunk_read_as_conflicting():
    """One hidden unit, two outcomes driven by different columns: each pulls the
    unit towards its own column and away from the other's."""
    X = torch.randn(300, 3, generator=torch.Generator().manual_seed(100))
    data = TaskData(X, [X[:, 0], X[:, 1]], torch.ones(300, 2))
    history = []
    for member in range(4):
        net = build_network(3, (1,), [1, 1], 0.0, seed=member)
        result = fit_module(net, FixedWeighting([1.0, 1.0]), ["first", "second"], ["regression"] * 2, data, None,
                            TrainingSettings(**(SETTINGS | {"max_epochs": 11})), seed=member)
        history += [{"member": member} | record for record in result.history]
    table = relatedness_table(history)
    assert table[["outcome", "other", "reading"]].values.tolist() == [["first", "second", "conflicting"]]
    assert table["n_measurements"].tolist() == [8]  # epochs 1 and 11 of 4 networks
    assert describe_relatedness(table)[0].startswith("first and second conflict in the shared layers")


def test_the_reading_stops_at_each_networks_best_epoch():
    history = [
        {"member": 0, "epoch": 1, "valid_loss": 1.0, "grad_cosine/x/y": 0.5},
        {"member": 0, "epoch": 11, "valid_loss": 0.5, "grad_cosine/x/y": 0.3},
        {"member": 0, "epoch": 21, "valid_loss": 0.7, "grad_cosine/x/y": -0.9},  # past the best epoch
    ]
    row = relatedness_table(history).iloc[0]
    assert (row.mean_cosine, row.n_measurements, row.reading) == (pytest.approx(0.4), 2, "aligned")


def test_relatedness_table_averages_members_per_epoch():
    history = [
        {"member": 0, "epoch": 1, "grad_cosine/x/y": -0.4},
        {"member": 1, "epoch": 1, "grad_cosine/x/y": 0.0},
        {"member": 0, "epoch": 11, "grad_cosine/x/y": 0.1},
        {"member": 1, "epoch": 11, "grad_cosine/x/y": 0.3},
    ]
    row = relatedness_table(history).iloc[0]
    assert (row.first_epochs, row.last_epochs) == (pytest.approx(-0.2), pytest.approx(0.2))
    assert row.mean_cosine == pytest.approx(0.0)
    assert row.conflicting_share == pytest.approx(0.25)
    assert row.reading == "independent"
    assert relatedness_table([{"member": 0, "epoch": 1}]).empty
    assert isinstance(relatedness_table([]), pd.DataFrame)


def test_relatedness_table_reads_outcome_names_that_hold_a_slash():
    history = [{"member": 0, "epoch": 1, "train_loss/dx/a": 0.5, "train_loss/score": 0.2,
                cosine_key("dx/a", "score"): 0.4}]
    assert relatedness_table(history)[["outcome", "other"]].values.tolist() == [["dx/a", "score"]]
    unnamed = [{"member": 0, "epoch": 1, "grad_cosine/dx/a/score": 0.4}]  # no train_loss keys: split at the first /
    assert relatedness_table(unnamed)[["outcome", "other"]].values.tolist() == [["dx", "a/score"]]


def test_relatedness_table_of_a_fitted_model_names_its_outcomes(regression_and_binary_with_slash):
    model = regression_and_binary_with_slash
    assert relatedness_table(model.history_)[["outcome", "other"]].values.tolist() == [["dx/a", "score"]]


@pytest.fixture(scope="module")
def regression_and_binary_with_slash():

    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(60, 2)), columns=["a", "b"])
    Y = pd.DataFrame({"dx/a": (X["a"] > 0).astype(int), "score": X["b"] + rng.normal(size=60)})
    return MultiTaskMLP(hidden_layer_sizes=(4,), max_epochs=1, ensemble_size=1, early_stopping=False,
                        random_state=0).fit(X, Y)


def test_relatedness_table_rounds_to_three_decimals_and_reads_the_unrounded_mean():
    history = [{"member": 0, "epoch": 1, "grad_cosine/x/y": 0.12345},
               {"member": 0, "epoch": 11, "grad_cosine/x/y": -0.4},
               {"member": 0, "epoch": 21, "grad_cosine/x/y": 0.77755}]
    row = relatedness_table(history).iloc[0]
    assert (row.mean_cosine, row.first_epochs, row.last_epochs) == (0.167, 0.123, 0.778)
    assert row.conflicting_share == 0.333
    nearly_aligned = [{"member": 0, "epoch": 1, "grad_cosine/x/y": 0.1004}]  # rounds to 0.1, reads above it
    assert relatedness_table(nearly_aligned)[["mean_cosine", "reading"]].values.tolist() == [[0.1, "aligned"]]


def test_a_mean_cosine_at_a_threshold_reads_as_independent():
    assert [reading(ALIGNED), reading(CONFLICTING)] == ["independent", "independent"]
    assert [reading(np.nextafter(ALIGNED, 1)), reading(np.nextafter(CONFLICTING, -1))] == ["aligned", "conflicting"]
    assert reading(math.nan) == "independent"


# Soft sharing -------------------------------------------------------------------------------

def test_soft_sharing_penalty_is_the_pairwise_squared_distance_over_the_number_of_heads():
    net = build_network(4, (), (1, 2, 1), 0.0, seed=0, head_hidden_layer_sizes=((5, 3), (5, 3), (5, 3)))
    firsts = [[layer.requires_grad_(False) for layer in head if isinstance(layer, torch.nn.Linear)][:2]
              for head in net.heads]
    pairwise = 0.0
    for a in range(3):
        for b in range(a + 1, 3):
            for depth in range(2):
                for name in ("weight", "bias"):
                    pairwise += float(((getattr(firsts[a][depth], name) - getattr(firsts[b][depth], name)) ** 2).sum())
    assert float(soft_sharing_penalty(net, 2)) == pytest.approx(pairwise / 3, rel=1e-5)
    only_first = sum(float(((getattr(firsts[a][0], n) - getattr(firsts[b][0], n)) ** 2).sum())
                     for a in range(3) for b in range(a + 1, 3) for n in ("weight", "bias"))
    assert float(soft_sharing_penalty(net, 1)) == pytest.approx(only_first / 3, rel=1e-5)


def test_soft_sharing_pulls_the_trunks_together_in_training():
    data = two_tasks()
    def trunks_apart(strength):
        net = build_network(3, (), (1, 1), 0.0, seed=0, head_hidden_layer_sizes=((16,), (16,)))
        fit_module(net, FixedWeighting([1.0, 1.0]), ["cls", "value"], KINDS, data, None,
                   TrainingSettings(**(SETTINGS | {"max_epochs": 20, "tied_layers": 1,
                                                   "sharing_strength": strength})), seed=0)
        return float(soft_sharing_penalty(net, 1).detach())
    assert trunks_apart(5.0) < 0.2 * trunks_apart(0.0)

"""Training an ensemble's members together (``fit_stacked``) is training each alone
(``fit_module``): same batches, losses, early stopping, history and, without
dropout, the same weights up to float rounding."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from clinical_mtl import MultiTaskMLP
from clinical_mtl.exceptions import TrainingDivergedError
from clinical_mtl.model import fitting, stacked_training
from clinical_mtl.model.losses import (
    FixedWeighting,
    LabelShareWeighting,
    UncertaintyWeighting,
)
from clinical_mtl.model.network import (
    MultiHeadNet,
    build_network,
    network_linears,
    soft_sharing_penalty,
)
from clinical_mtl.model.stacked_network import StackedMultiHeadNet, dropout
from clinical_mtl.model.stacked_training import fit_stacked, member_losses
from clinical_mtl.model.survival import COX_LOSS
from clinical_mtl.model.training import TaskData, TrainingSettings, fit_module
from clinical_mtl.model.weighting import DynamicWeightAverage

KINDS = ["binary", "regression", "survival", "multiclass"]
NAMES = ["cls", "value", "death", "stage"]
N_INTERVALS = 4
SEEDS = [3, 11, 29]


def cohort(n=230, seed=0):
    """Three tasks with a third of the regression and survival labels missing; the
    binary task labelled everywhere, so every batch steps every member."""
    generator = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 4, generator=generator)
    cls = (X[:, 0] + 0.5 * torch.randn(n, generator=generator) > 0).long()
    value = 2 * X[:, 1] + torch.randn(n, generator=generator)
    survived = torch.randint(0, N_INTERVALS + 1, (n,), generator=generator)
    event = (torch.rand(n, generator=generator) < 0.6).long() * (survived < N_INTERVALS).long()
    time_rank = torch.randint(0, 60, (n,), generator=generator)  # of 230 rows: many tied times
    stage = torch.bucketize(X[:, 2] + X[:, 3], torch.tensor([-0.5, 0.5]))
    weights = torch.ones(n, 4)
    weights[::3, 1] = 0.0
    weights[1::3, 2] = 0.0
    weights[2::5, 3] = 0.0
    return TaskData(X, [cls, value, torch.stack([survived, event, time_rank], dim=1), stage], weights)


def member_rows(n, seed):
    """A member's own training and early-stopping rows. Sizes differ between
    members (so the shorter ones are padded), but every last batch keeps 12
    or more rows: a member whose batch lacks a task's labels is the one case
    where training together differs (see ``stacked_training``)."""
    order = np.random.default_rng(seed).permutation(n)
    n_valid = 40 + SEEDS.index(seed)
    return torch.from_numpy(order[n_valid:]), torch.from_numpy(order[:n_valid])


def settings(**changes):
    base = {"learning_rate": 0.01, "weight_decay": 0.01, "batch_size": 16, "max_epochs": 60, "patience": 4,
            "verbose": 0}
    return TrainingSettings(**(base | changes))


def networks(head_hidden=None, tied=None, trunk=(8,), member_tied=None):
    tied = member_tied or [tied] * len(SEEDS)
    return [build_network(4, trunk, [1, 1, N_INTERVALS, 3], 0.0, seed, head_hidden, own)
            for seed, own in zip(SEEDS, tied)]


def fit_together(nets, data, train_rows, valid_rows, train_settings, seeds=SEEDS, **kwargs):
    """``fit_stacked`` of ``nets`` without dropout, every task weighted 1."""
    n_tasks = len(data.targets)
    return fit_stacked(nets, 0.0, [FixedWeighting([1.0] * n_tasks) for _ in seeds], NAMES[:n_tasks],
                       KINDS[:n_tasks], data, train_rows, valid_rows, train_settings, seeds, **kwargs)


CASES = {
    "equal weights": dict(weighting=lambda: FixedWeighting([1.0] * 4)),
    "fixed weights, head layers, head decay": dict(
        weighting=lambda: FixedWeighting([2.0, 0.5, 1.0, 1.5]), head_hidden=[(5,), (), (3, 2), ()],
        head_weight_decay=(0.0, 0.1, 0.05, 0.01)),
    "uncertainty weights": dict(weighting=lambda: UncertaintyWeighting([False, True, False, False])),
    "label-share weights": dict(weighting=lambda: LabelShareWeighting(4)),
    "dynamic weight average": dict(weighting=lambda: DynamicWeightAverage(4)),
    "proportional survival head": dict(weighting=lambda: FixedWeighting([1.0] * 4), tied=[False, False, True, False]),
    "proportional survival head, head decay": dict(
        weighting=lambda: FixedWeighting([1.0] * 4), tied=[False, False, True, False],
        head_weight_decay=(0.0, 0.1, 0.05, 0.01)),
    "cox survival head": dict(weighting=lambda: FixedWeighting([1.0] * 4), tied=[False, False, True, False],
                              kinds=["binary", "regression", COX_LOSS, "multiclass"]),
    "cox survival head, uncertainty weights, per-outcome stopping": dict(
        weighting=lambda: UncertaintyWeighting([False, True, False, False]), tied=[False, False, True, False],
        kinds=["binary", "regression", COX_LOSS, "multiclass"], per_outcome_stopping=True),
    "mixed survival head: members with different survival losses": dict(
        weighting=lambda: FixedWeighting([1.0] * 4), member_tied=[None, [False, False, True, False], None],
        kinds=["binary", "regression", ("survival", COX_LOSS, "survival"), "multiclass"]),
    "per-outcome stopping": dict(weighting=lambda: FixedWeighting([1.0] * 4), per_outcome_stopping=True),
    "soft sharing": dict(weighting=lambda: FixedWeighting([1.0] * 4), trunk=(), head_hidden=[(8,)] * 4,
                         tied_layers=1, sharing_strength=0.5),
    "soft sharing, uncertainty weights": dict(weighting=lambda: UncertaintyWeighting([False, True, False, False]),
                                              trunk=(), head_hidden=[(8, 4)] * 4, tied_layers=2,
                                              sharing_strength=0.5),
}
SETTINGS_KEYS = ("head_weight_decay", "per_outcome_stopping", "tied_layers", "sharing_strength")


@pytest.mark.parametrize("case", CASES)
def test_members_trained_together_match_members_trained_apart(case):
    config = CASES[case]
    data = cohort()
    rows = [member_rows(len(data), seed) for seed in SEEDS]
    train_settings = settings(**{k: v for k, v in config.items() if k in SETTINGS_KEYS})
    architecture = (config.get("head_hidden"), config.get("tied"), config.get("trunk", (8,)), config.get("member_tied"))
    apart = networks(*architecture)
    apart_weightings = [config["weighting"]() for _ in SEEDS]
    kinds = config.get("kinds", KINDS)
    expected = [fit_module(net, w, NAMES, stacked_training._member_kinds(kinds, m), data.take(train), data.take(valid),
                           train_settings, seed)
                for m, (net, w, (train, valid), seed) in enumerate(zip(apart, apart_weightings, rows, SEEDS))]
    together = networks(*architecture)
    weightings = [config["weighting"]() for _ in SEEDS]
    results = fit_stacked(together, 0.0, weightings, NAMES, kinds, data, [r[0] for r in rows],
                          [r[1] for r in rows], train_settings, SEEDS)
    # The members stop at different epochs: the ones that stop first keep their best weights.
    assert len({result.n_epochs for result in expected}) > 1
    for m, (mine, theirs, net, reference, w, w_ref) in enumerate(zip(results, expected, together, apart, weightings,
                                                                     apart_weightings)):
        assert (mine.best_epoch, mine.n_epochs) == (theirs.best_epoch, theirs.n_epochs)
        assert [set(r) for r in mine.history] == [set(r) for r in theirs.history]
        for record, other in zip(mine.history, theirs.history):
            for key, value in other.items():
                assert record[key] == pytest.approx(value, rel=1e-4, abs=1e-6, nan_ok=True), key
        # Cox's likelihood is flat in its head's biases: their gradient is float noise, which Adam scales
        # to full steps; fitting.fit_ensemble refits them after training (fit_interval_biases).
        untrained = {"heads.2.bias"} if COX_LOSS in stacked_training._member_kinds(kinds, m) else set()
        for (key, p), q in zip(net.state_dict().items(), reference.state_dict().values()):
            if key not in untrained:
                torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)
        for p, q in zip(w.state_dict().values(), w_ref.state_dict().values()):
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, equal_nan=True)
        assert mine.outcome_epochs == theirs.outcome_epochs
        assert (mine.outcome_states is None) == (not config.get("per_outcome_stopping"))
        for state, reference_state in zip(mine.outcome_states or [], theirs.outcome_states or []):
            assert (state is None) == (reference_state is None)
            if state is None:  # fewer than MIN_VALIDATION_LABELS labelled rows: the joint objective's weights
                continue
            assert state.keys() == reference_state.keys()
            for key in state.keys() - untrained:
                torch.testing.assert_close(state[key], reference_state[key], rtol=1e-4, atol=1e-5)
    if config.get("per_outcome_stopping"):  # outcomes watched alone and outcomes following the joint objective
        assert {state is None for result in results for state in result.outcome_states} == {True, False}


def test_without_early_stopping_every_member_runs_every_epoch_on_all_its_rows():
    data = cohort()
    rows = [torch.arange(len(data))] * len(SEEDS)
    expected = []
    for net, seed in zip(networks(), SEEDS):
        expected.append(fit_module(net, FixedWeighting([1.0] * 4), NAMES, KINDS, data, None, settings(max_epochs=5),
                                   seed))
    together = networks()
    results = fit_stacked(together, 0.0, [FixedWeighting([1.0] * 4) for _ in SEEDS], NAMES, KINDS, data, rows, None,
                          settings(max_epochs=5), SEEDS)
    assert [r.n_epochs for r in results] == [r.best_epoch for r in results] == [5] * len(SEEDS)
    for mine, theirs in zip(results, expected):
        assert [r["train_loss"] for r in mine.history] == pytest.approx([r["train_loss"] for r in theirs.history],
                                                                        rel=1e-4)
        assert all("valid_loss" not in record for record in mine.history)


def two_task_cohort():
    data = cohort()
    return TaskData(data.X, data.targets[:2], data.weights[:, :2].contiguous())


@pytest.mark.parametrize("n_members, n_tasks", [(1, 4), (3, 2)])
def test_one_member_or_two_tasks_train_together_as_apart(n_members, n_tasks):
    data = cohort() if n_tasks == 4 else two_task_cohort()
    names, kinds, seeds = NAMES[:n_tasks], KINDS[:n_tasks], SEEDS[:n_members]
    rows = [member_rows(len(data), seed) for seed in seeds]

    def nets():
        return [build_network(4, (8,), [1, 1, N_INTERVALS, 3][:n_tasks], 0.0, seed) for seed in seeds]

    apart, together = nets(), nets()
    expected = [fit_module(net, FixedWeighting([1.0] * n_tasks), names, kinds, data.take(train), data.take(valid),
                           settings(), seed) for net, (train, valid), seed in zip(apart, rows, seeds)]
    results = fit_together(together, data, [r[0] for r in rows], [r[1] for r in rows], settings(), seeds)
    for mine, theirs, net, reference in zip(results, expected, together, apart, strict=True):
        assert (mine.best_epoch, mine.n_epochs) == (theirs.best_epoch, theirs.n_epochs)
        assert [set(r) for r in mine.history] == [set(r) for r in theirs.history]
        assert any(key.startswith("grad_cosine/") for key in mine.history[0])  # relatedness, for two tasks too
        for p, q in zip(net.state_dict().values(), reference.state_dict().values()):
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)


def test_a_members_training_depends_on_its_own_seed_dropout_included():
    data = cohort()
    results = []
    for seeds in ([3, 11, 29], [3, 12, 30]):
        rows = [member_rows(len(data), seed) for seed in SEEDS]  # the same rows; only the seeds change
        nets = [build_network(4, (16,), [1, 1, N_INTERVALS, 3], 0.3, seed) for seed in SEEDS]
        fit_stacked(nets, 0.3, [FixedWeighting([1.0] * 4) for _ in SEEDS], NAMES, KINDS, data,
                    [r[0] for r in rows], [r[1] for r in rows], settings(max_epochs=6), seeds)
        results.append(nets)
    first, second = results
    for p, q in zip(first[0].state_dict().values(), second[0].state_dict().values()):
        assert torch.equal(p, q)  # seeds[0] seeds member 0's batches and every member's dropout
    assert not torch.equal(first[1].trunk[0].weight, second[1].trunk[0].weight)


@pytest.mark.parametrize("validation", [True, False])
@pytest.mark.parametrize("max_epochs", [60, 3])
def test_progress_reports_each_epoch_then_once_done(validation, max_epochs):
    data = cohort()
    rows = [member_rows(len(data), seed) for seed in SEEDS]
    calls = [[] for _ in SEEDS]

    def recorder(m):
        def report(record, best_epoch, best_loss, done=False):
            calls[m].append((record["epoch"], best_epoch, best_loss, done))
        return report

    results = fit_together(networks(), data, [r[0] for r in rows], [r[1] for r in rows] if validation else None,
                           settings(max_epochs=max_epochs), on_epoch=[recorder(m) for m in range(len(SEEDS))])
    for member_calls, result in zip(calls, results, strict=True):
        n = result.n_epochs
        assert [call[0] for call in member_calls] == [*range(1, n + 1), n]
        assert [call[3] for call in member_calls] == [False] * n + [True]
        if not validation:
            assert {call[1:3] for call in member_calls} == {(0, None)}
            continue
        losses = [record["valid_loss"] for record in result.history]
        for epoch, best_epoch, best_loss, _ in member_calls[:-1]:  # the best so far
            assert best_loss == min(losses[:epoch]) and best_epoch == 1 + losses.index(best_loss)
        assert member_calls[-1][1:3] == (result.best_epoch, losses[result.best_epoch - 1])
    if max_epochs == 3:
        assert [result.n_epochs for result in results] == [3] * len(SEEDS)


def test_training_stops_once_every_member_has_stopped(monkeypatch):
    data = cohort()
    rows = [member_rows(len(data), seed) for seed in SEEDS]
    epochs = []
    original = stacked_training._train_epoch
    monkeypatch.setattr(stacked_training, "_train_epoch", lambda *args: epochs.append(1) or original(*args))
    results = fit_together(networks(), data, [r[0] for r in rows], [r[1] for r in rows], settings(max_epochs=500))
    assert len(epochs) == max(result.n_epochs for result in results) < 500


def test_a_flat_validation_loss_keeps_the_first_epoch_and_stops_after_patience():
    data = cohort()
    rows = [member_rows(len(data), seed) for seed in SEEDS]
    frozen = settings(learning_rate=0.0, weight_decay=0.0, patience=3)
    alone = fit_module(networks()[0], FixedWeighting([1.0] * 4), NAMES, KINDS, data.take(rows[0][0]),
                       data.take(rows[0][1]), frozen, SEEDS[0])
    together = fit_together(networks(), data, [r[0] for r in rows], [r[1] for r in rows], frozen)
    for result in (alone, *together):
        assert len({record["valid_loss"] for record in result.history}) == 1
        assert (result.best_epoch, result.n_epochs) == (1, 4)


def test_member_losses_are_weighted_means_whatever_the_weights_scale():
    outputs = [torch.tensor([[[0.0], [2.0]], [[1.0], [5.0]]])]
    targets = [torch.tensor([[1.0, 3.0], [0.0, 5.0]])]
    weights = torch.tensor([[[0.25], [0.0]], [[0.1], [0.3]]])  # member totals below 1
    losses, totals = member_losses(outputs, targets, weights, ["regression"])
    torch.testing.assert_close(totals, torch.tensor([[0.25], [0.4]]))
    torch.testing.assert_close(losses, torch.tensor([[1.0], [0.1 * 1.0 / 0.4]]))


def test_each_member_steps_its_own_weighting_on_its_labelled_tasks_only():
    weightings = [UncertaintyWeighting([False, True]) for _ in range(4)]
    losses = torch.tensor([[0.5, 2.0], [0.7, 1.5], [0.9, 3.0], [0.4, 0.6]], requires_grad=True)
    totals = torch.tensor([[3.0, 0.5], [2.0, 0.0], [0.0, 0.0], [1.0, 4.0]])  # fractional, missing, none at all
    active = [True, True, True, False]  # the last member has stopped
    objective, steps = stacked_training._combine(weightings, losses, totals, active)
    assert [weighting for weighting, _ in steps] == weightings[:2]
    assert [[None if loss is None else loss.item() for loss in stepped] for _, stepped in steps] == [
        [0.5, 2.0], [pytest.approx(0.7), None]]
    expected = weightings[0]([losses[0, 0], losses[0, 1]]) + weightings[1]([losses[1, 0], None])
    torch.testing.assert_close(objective, expected)
    objective.backward()
    assert torch.equal(losses.grad[2:], torch.zeros(2, 2)) and losses.grad[1, 1] == 0


@pytest.mark.parametrize("soft, uncertainty", [(False, False), (True, False), (False, True)])
def test_a_member_gets_no_gradient_in_batches_of_its_padding(monkeypatch, soft, uncertainty):
    """Padding comes last: in the batches past a member's rows its slices of every gradient are 0 (no
    labels there, and soft sharing's penalty only in batches of its own rows), and its own task
    weighting does not move."""
    data = cohort()
    rows = [torch.arange(0, 200), torch.arange(0, 150), torch.arange(30, 230)]  # the second: 50 rows short
    weightings = [UncertaintyWeighting([False, True, False, False]) if uncertainty else FixedWeighting([1.0] * 4)
                  for _ in SEEDS]
    grads, moved, made = [], [], stacked_training.decoupled_adamw

    def recording_adamw(weights, *args, **kwargs):
        optimizer = made(weights, *args, **kwargs)
        step = optimizer.lean_step

        def lean_step():
            grads.append([weight.grad[1].clone() for weight in weights])
            before = [p.detach().clone() for p in weightings[1].parameters()]
            step()
            moved.append(any(not torch.equal(p, q) for p, q in zip(weightings[1].parameters(), before)))

        optimizer.lean_step = lean_step
        return optimizer

    monkeypatch.setattr(stacked_training, "decoupled_adamw", recording_adamw)
    changes = {"tied_layers": 1, "sharing_strength": 0.5} if soft else {}
    nets = networks(head_hidden=[(8,)] * 4 if soft else None, trunk=() if soft else (8,))
    fit_stacked(nets, 0.0, weightings, NAMES, KINDS, data, rows, None,
                settings(max_epochs=2, batch_size=20, **changes), SEEDS)
    per_epoch = 200 // 20
    assert len(grads) == 2 * per_epoch  # every batch steps (the other members have rows in each)
    for step, (member_grads, weighting_moved) in enumerate(zip(grads, moved)):
        padding_only = (step % per_epoch) * 20 >= 150
        assert all(torch.count_nonzero(grad) == 0 for grad in member_grads) == padding_only, step
        assert weighting_moved == (uncertainty and not padding_only), step


def test_batches_without_any_label_step_no_member():
    data = cohort()
    labelled = torch.arange(len(data)) % 5 == 0  # one row in five labelled for every task, the others for none:
    data.weights[:] = labelled[:, None].float()  # a batch has every task's labels or none (see stacked_training)
    rows, seeds = [torch.arange(len(data))] * len(SEEDS), [7] * len(SEEDS)  # every member: the same batches
    apart, together = networks(), networks()
    for net in apart:
        fit_module(net, FixedWeighting([1.0] * 4), NAMES, KINDS, data, None, settings(max_epochs=3, batch_size=4), 7)
    fit_together(together, data, rows, None, settings(max_epochs=3, batch_size=4), seeds)
    for net, reference in zip(together, apart, strict=True):
        for p, q in zip(net.state_dict().values(), reference.state_dict().values()):
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("labelled_rows", [0, 1])
def test_a_tasks_validation_loss_is_over_its_labelled_rows_however_few_as_apart(labelled_rows):
    data = cohort()
    valid = torch.arange(0, 150, 3)  # every third row: no label for the regression task
    valid = torch.cat([valid, torch.tensor([1])]) if labelled_rows else valid  # row 1 has one
    train = [torch.arange(2, 230, 3)] * len(SEEDS)
    expected = fit_module(networks()[0], FixedWeighting([1.0] * 4), NAMES, KINDS, data.take(train[0]),
                          data.take(valid), settings(max_epochs=3), SEEDS[0])
    results = fit_together(networks(), data, train, [valid] * len(SEEDS), settings(max_epochs=3))
    for result in (expected, *results):
        assert all(math.isnan(record["valid_loss/value"]) != bool(labelled_rows) for record in result.history)
        assert all(not math.isnan(record["valid_loss/cls"]) for record in result.history)
    for key in ("valid_loss", "valid_loss/value"):
        assert [r[key] for r in results[0].history] == pytest.approx([r[key] for r in expected.history], rel=1e-4,
                                                                     nan_ok=True)


def test_a_diverging_member_stops_training_with_a_clear_error():
    data = cohort()
    data.targets[1][5] = 1e30  # a labelled regression target that overflows the squared error
    rows = [torch.arange(len(data))] * 2
    with pytest.raises(TrainingDivergedError, match="lower learning_rate"):
        fit_stacked(networks()[:2], 0.0, [FixedWeighting([1.0] * 4) for _ in range(2)], NAMES, KINDS, data, rows,
                    None, settings(max_epochs=2), SEEDS[:2])


@pytest.mark.parametrize("head_hidden, combine_heads", [([(), (5,)], True), ([(), ()], True), ([(), ()], False)])
def test_stacked_network_computes_each_member_and_writes_it_back(head_hidden, combine_heads):
    members = [build_network(4, (8, 6), [1, 3], 0.0, seed, head_hidden) for seed in SEEDS]
    stacked = StackedMultiHeadNet(members, dropout=0.0, combine_heads=combine_heads)
    assert len(list(stacked.parameters())) == 2 * (2 + (1 if combine_heads and not any(head_hidden) else
                                                        2 + sum(map(len, head_hidden))))
    x = torch.randn(len(SEEDS), 7, 4)
    outputs = stacked(x)
    for m, member in enumerate(members):
        for mine, theirs in zip(outputs, member(x[m])):
            torch.testing.assert_close(mine[m], theirs)
    with torch.no_grad():
        for parameter in stacked.parameters():
            parameter.mul_(2.0)
    copy = stacked.copy_to(1, build_network(4, (8, 6), [1, 3], 0.0, 0, head_hidden))
    for p, q in zip(copy.state_dict().values(), members[1].state_dict().values()):
        torch.testing.assert_close(p, 2 * q)


@pytest.mark.parametrize("combine_heads", [True, False])
def test_stacked_gradients_are_each_members_own_when_members_tie_different_heads(combine_heads):
    # a mixed survival head: some members tie their survival head's output rows, others do not
    patterns = [[False, True], [False, False], [False, True]]
    members = [build_network(4, (8, 6), [3, 4], 0.0, seed, None, tied) for seed, tied in zip(SEEDS, patterns)]
    stacked = StackedMultiHeadNet(members, dropout=0.0, combine_heads=combine_heads)
    x, target = torch.randn(len(SEEDS), 9, 4), torch.randn(len(SEEDS), 9, 7)
    (torch.cat(stacked(x), dim=2) - target).pow(2).sum().backward()
    for m, member in enumerate(members):
        (torch.cat(member(x[m]), dim=1) - target[m]).pow(2).sum().backward()
        linears = [layer.weight.grad for layer in network_linears(member)]
        own = linears[:2] + ([torch.cat(linears[2:])] if combine_heads else linears[2:])
        for grad, expected in zip(stacked.weights, own, strict=True):
            torch.testing.assert_close(grad.grad[m], expected)
    survival_rows = stacked.weights[-1].grad[:, -4:] if combine_heads else stacked.weights[-1].grad
    assert torch.equal(survival_rows[0, 0], survival_rows[0, 3])  # tied: one shared gradient
    assert not torch.equal(survival_rows[1, 0], survival_rows[1, 3])  # the untied member's rows move apart


def test_stacked_dropout_acts_only_while_training_and_draws_nothing_at_zero():
    members = [build_network(4, (64,), [1, 3], 0.0, seed) for seed in SEEDS]
    x = torch.randn(len(SEEDS), 50, 4)
    stacked = StackedMultiHeadNet(members, dropout=0.5).eval()
    for m, member in enumerate(members):  # evaluation: every member's own deterministic outputs
        for mine, theirs in zip(stacked(x), member(x[m]), strict=True):
            torch.testing.assert_close(mine[m], theirs)
    stacked = StackedMultiHeadNet(members, dropout=0.0).train()
    state = torch.random.get_rng_state()
    outputs = stacked(x)
    assert torch.equal(torch.random.get_rng_state(), state)  # no mask drawn for dropout 0
    for mine, theirs in zip(outputs, stacked.eval()(x), strict=True):
        assert torch.equal(mine, theirs)


def test_a_stack_of_one_network_computes_it_and_holds_its_output_layers_as_one_weight_by_default():
    member = build_network(4, (8, 6), [1, 3], 0.0, 5)
    stacked = StackedMultiHeadNet([member], dropout=0.0)
    assert [tuple(w.shape) for w in stacked.weights] == [(1, 8, 4), (1, 6, 8), (1, 4, 6)]
    x = torch.randn(1, 7, 4)
    for mine, theirs in zip(stacked(x), member(x[0]), strict=True):
        torch.testing.assert_close(mine[0], theirs)


def test_dropout_draws_a_different_mask_for_every_member():
    members = [MultiHeadNet(4, (64,), (1,)) for _ in range(2)]
    members[1].load_state_dict(members[0].state_dict())
    stacked = StackedMultiHeadNet(members, dropout=0.5).train()
    out = stacked(torch.ones(2, 3, 4))[0]
    assert not torch.equal(out[0], out[1])


def pbc_like(n=240, seed=0):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"age": rng.normal(50, 10, n), "bili": rng.lognormal(0, 1, n)})
    Y = pd.DataFrame({"sick": (X["bili"] + rng.normal(0, 1, n) > 1.5).astype(float),
                      "score": X["age"] / 10 + rng.normal(0, 1, n)})
    Y.loc[::4, "score"] = np.nan
    return X, Y


def test_the_estimator_fits_with_dropout_just_below_one():
    # dropout within 1/131,072 of 1 rounded to 1 in the stacked members' 16-bit masks: a division by zero
    X, Y = pbc_like()
    model = MultiTaskMLP(dropout=0.999999, max_epochs=2, random_state=0).fit(X, Y)
    assert np.isfinite(model.predict(X).to_numpy(dtype=float)).all()


@pytest.mark.parametrize("params, together", [
    ({}, True),
    ({"loss_weighting": "uncertainty", "head_hidden_layer_sizes": (4,)}, True),
    ({"sharing": "soft"}, True),
    ({"training": "alternate"}, False),
    ({"loss_weighting": "gradnorm"}, False),
    ({"self_supervision": 0.5}, False),
    ({"ensemble_size": 1}, False),
])
def test_the_estimator_trains_members_together_where_it_can(monkeypatch, params, together):
    calls = {"stacked": 0, "apart": 0}
    stacked, apart = fitting.fit_stacked, fitting.fit_module

    def spy_stacked(*args, **kwargs):
        calls["stacked"] += 1
        return stacked(*args, **kwargs)

    def spy_apart(*args, **kwargs):
        calls["apart"] += 1
        return apart(*args, **kwargs)

    monkeypatch.setattr(fitting, "fit_stacked", spy_stacked)
    monkeypatch.setattr(fitting, "fit_module", spy_apart)
    X, Y = pbc_like()
    model = MultiTaskMLP(**({"ensemble_size": 3, "max_epochs": 5, "random_state": 0} | params)).fit(X, Y)
    expected = {"stacked": 1, "apart": 0} if together else {"stacked": 0, "apart": model.ensemble_size}
    assert calls == expected
    assert len(model.best_epoch_) == model.ensemble_size and np.all(model.best_epoch_ >= 1)
    histories = pd.DataFrame(model.history_)
    assert sorted(histories["member"].unique()) == list(range(model.ensemble_size))
    assert not math.isnan(histories["valid_loss"].iloc[-1])


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_dropout_drops_each_element_independently_with_probability_p(p):
    torch.manual_seed(0)
    out = dropout(torch.ones(400_000), p)
    dropped = (out == 0).float()
    assert abs(dropped.mean().item() - p) < 0.005
    assert abs(out.mean().item() - 1.0) < 0.01  # inverted dropout keeps the expected activation
    # neighbours (which share a 64-bit draw) are uncorrelated
    pairs = dropped.view(-1, 2)
    assert abs((pairs[:, 0] * pairs[:, 1]).mean().item() - p * p) < 0.005
    torch.manual_seed(0)
    assert torch.equal(dropout(torch.ones(400_000), p), out)
    x = torch.randn(3, 5, requires_grad=True)
    torch.manual_seed(1)
    dropout(x, p).sum().backward()
    torch.manual_seed(1)
    torch.testing.assert_close(x.grad, dropout(torch.ones(3, 5), p))  # the gradient is the mask


@pytest.mark.parametrize("p", [1 / 65536, 0.3, 32768.4 / 65536, 65535 / 65536, 0.999999])
def test_dropout_resolves_probabilities_to_one_in_65536_and_keeps_the_expected_activation_exactly(p):
    torch.manual_seed(0)
    n = 65536 * 200
    out = dropout(torch.ones(n), p)
    kept = out[out != 0]
    assert kept.unique().numel() == 1
    # the kept elements' scale is 1 / (1 - q) for the drop probability q actually used: q is p to 1/65,536
    q = 1 - 1 / kept[0].item()
    assert q * 65536 == pytest.approx(round(q * 65536), abs=1e-3)
    assert abs(q - min(p, 65535 / 65536)) <= 1 / 131072
    # and elements are kept with probability 1 - q (Poisson counts: 200 expected at the extremes, sd 14)
    expected = n * (1 - q)
    assert abs(len(kept) - expected) < 5 * max(expected * q, 1) ** 0.5


@pytest.mark.parametrize("n", [3, 4, 5, 6, 300])
def test_dropout_draws_one_64_bit_number_for_every_three_elements(n):
    torch.manual_seed(0)
    dropout(torch.ones(n), 0.3)
    after = torch.empty(2, dtype=torch.int64).random_()
    torch.manual_seed(0)
    torch.empty(math.ceil(n / 3), dtype=torch.int64).random_()
    assert torch.equal(after, torch.empty(2, dtype=torch.int64).random_())


@pytest.mark.parametrize("n_rows, params, expected", [
    (300, {}, (32, 1e-3)),           # small table: 32 steps an epoch or more
    (1400, {}, (128, 2e-3)),         # 1,400 x 0.85 = 1,190 training rows >= 1,024
    (1400, {"batch_size": 64}, (64, round(1e-3 * 2 ** 0.5, 6))),
    (1400, {"learning_rate": 0.01}, (128, 0.01)),
    (300, {"batch_size": 16, "learning_rate": 0.02}, (16, 0.02)),
])
def test_auto_batch_size_and_learning_rate_follow_the_training_rows(monkeypatch, n_rows, params, expected):
    seen = []
    original = fitting.fit_stacked

    def spy(*args, **kwargs):
        seen.append(args[8])  # the TrainingSettings
        return original(*args, **kwargs)

    monkeypatch.setattr(fitting, "fit_stacked", spy)
    X, Y = pbc_like(n_rows)
    model = MultiTaskMLP(**({"ensemble_size": 2, "max_epochs": 1, "random_state": 0} | params)).fit(X, Y)
    (settings_used,) = seen
    assert (settings_used.batch_size, settings_used.learning_rate) == pytest.approx(expected)
    assert model.get_params()["batch_size"] == params.get("batch_size", "auto")  # the parameter is kept as given


@pytest.mark.parametrize("params", [{"batch_size": "large"}, {"learning_rate": "fast"}, {"batch_size": 0}])
def test_other_batch_sizes_and_learning_rates_are_refused_before_training(params):
    X, Y = pbc_like()
    with pytest.raises(ValueError, match=next(iter(params))):
        MultiTaskMLP(**params).fit(X, Y)


@pytest.mark.parametrize("tied_layers", [1, 2])
@pytest.mark.parametrize("trunk", [(), (4,)])
def test_stacked_soft_sharing_penalty_is_every_members_own(tied_layers, trunk):
    members = [build_network(4, trunk, [1, 3, 2], 0.0, seed, [(6, 5)] * 3) for seed in SEEDS]
    stacked = StackedMultiHeadNet(members, 0.0)
    expected = [float(soft_sharing_penalty(member, tied_layers).detach()) for member in members]
    assert stacked.soft_sharing_penalty(tied_layers).tolist() == pytest.approx(expected, rel=1e-5)
    assert len(set(expected)) == len(SEEDS)  # each member's own weights, not one penalty for all

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
from clinical_mtl.model import fitting
from clinical_mtl.model.losses import FixedWeighting, LabelShareWeighting, UncertaintyWeighting
from clinical_mtl.model.network import MultiHeadNet, build_network, soft_sharing_penalty
from clinical_mtl.model.stacked_network import StackedMultiHeadNet, dropout
from clinical_mtl.model.stacked_training import fit_stacked
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


def networks(head_hidden=None, tied=None, trunk=(8,)):
    return [build_network(4, trunk, [1, 1, N_INTERVALS, 3], 0.0, seed, head_hidden, tied) for seed in SEEDS]


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
    apart = networks(config.get("head_hidden"), config.get("tied"), config.get("trunk", (8,)))
    apart_weightings = [config["weighting"]() for _ in SEEDS]
    kinds = config.get("kinds", KINDS)
    expected = [fit_module(net, w, NAMES, kinds, data.take(train), data.take(valid), train_settings, seed)
                for net, w, (train, valid), seed in zip(apart, apart_weightings, rows, SEEDS)]
    together = networks(config.get("head_hidden"), config.get("tied"), config.get("trunk", (8,)))
    weightings = [config["weighting"]() for _ in SEEDS]
    results = fit_stacked(together, 0.0, weightings, NAMES, kinds, data, [r[0] for r in rows],
                          [r[1] for r in rows], train_settings, SEEDS)
    # The members stop at different epochs: the ones that stop first keep their best weights.
    assert len({result.n_epochs for result in expected}) > 1
    for mine, theirs, net, reference, w, w_ref in zip(results, expected, together, apart, weightings,
                                                      apart_weightings):
        assert (mine.best_epoch, mine.n_epochs) == (theirs.best_epoch, theirs.n_epochs)
        assert [set(r) for r in mine.history] == [set(r) for r in theirs.history]
        for record, other in zip(mine.history, theirs.history):
            for key, value in other.items():
                assert record[key] == pytest.approx(value, rel=1e-4, abs=1e-6, nan_ok=True), key
        # Cox's likelihood is flat in its head's biases: their gradient is float noise, which Adam scales
        # to full steps; fitting.fit_ensemble refits them after training (fit_interval_biases).
        untrained = {"heads.2.bias"} if COX_LOSS in kinds else set()
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
def test_stacked_soft_sharing_penalty_is_every_members_own(tied_layers):
    members = [build_network(4, (), [1, 3, 2], 0.0, seed, [(6, 5)] * 3) for seed in SEEDS]
    stacked = StackedMultiHeadNet(members, 0.0)
    expected = [float(soft_sharing_penalty(member, tied_layers)) for member in members]
    assert stacked.soft_sharing_penalty(tied_layers).tolist() == pytest.approx(expected, rel=1e-5)
    assert len(set(expected)) == len(SEEDS)  # each member's own weights, not one penalty for all

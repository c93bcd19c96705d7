"""``survival_head="cox"``: Cox's partial likelihood in a batch, and the interval baselines fitted after it."""

import numpy as np
import pandas as pd
import pytest
import torch
from lifelines import CoxPHFitter
from sksurv.metrics import concordance_index_censored

from clinical_mtl import MultiTaskMLP
from clinical_mtl.model.fitting import FittedEnsemble, held_out_loss
from clinical_mtl.model.losses import masked_task_loss
from clinical_mtl.model.network import build_network
from clinical_mtl.model.survival import (
    COX_LOSS,
    cox_loss,
    encode_survival,
    fit_interval_biases,
    survival_loss,
)
from clinical_mtl.model.tasks import TaskSpec


def _breslow_by_hand(risk, time, event, weight):
    """Each row's term, summing over every other row: event_i (log sum_{t_j >= t_i, w_j > 0} w_j e^r_j - r_i)."""
    terms = []
    for i in range(len(risk)):
        at_risk = (time >= time[i]) & (weight > 0)
        terms.append(event[i] * (np.log(np.sum(weight[at_risk] * np.exp(risk[at_risk]))) - risk[i]))
    return np.array(terms)


def test_the_loss_is_breslows_partial_likelihood_over_the_labelled_rows_at_risk():
    rng = np.random.default_rng(0)
    n_members, n = 3, 40
    time = np.round(rng.exponential(10.0, size=(n_members, n)))  # rounded: tied times
    event = (rng.random((n_members, n)) < 0.6).astype(float)
    weight = np.where(rng.random((n_members, n)) < 0.2, 0.0, rng.choice([1.0, 2.0], size=(n_members, n)))
    risk = rng.normal(size=(n_members, n))
    time[weight == 0] = np.nan  # unlabelled: no time at all
    target = np.stack([encode_survival(t, np.where(w > 0, e, np.nan), (5.0, 10.0, 50.0))
                       for t, e, w in zip(time, event, weight)])
    logits = torch.tensor(risk)[..., None].expand(n_members, n, 3) + torch.tensor([0.3, -1.0, 2.0])
    got = cox_loss(logits, torch.from_numpy(target), torch.tensor(weight)).numpy()
    for member in range(n_members):
        labelled = weight[member] > 0
        expected = _breslow_by_hand(risk[member], np.nan_to_num(time[member], nan=-1.0), event[member],
                                    weight[member])
        np.testing.assert_allclose(got[member][labelled], expected[labelled], rtol=1e-10, atol=1e-12)
        assert np.all(np.isfinite(got[member]))


def test_the_loss_at_lifelines_estimates_is_minus_its_partial_log_likelihood():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(120, 3))
    time = rng.exponential(np.exp(-X @ np.array([0.8, -0.5, 0.0])))  # continuous: no ties
    event = (rng.random(120) < 0.7).astype(float)
    frame = pd.DataFrame(X, columns=["a", "b", "c"]).assign(T=time, E=event)
    fitter = CoxPHFitter(penalizer=0.0).fit(frame, duration_col="T", event_col="E")
    risk = torch.tensor(X @ fitter.params_.to_numpy())[:, None]
    target = torch.from_numpy(encode_survival(time, event, (time.max(),)))  # no event past the last cut
    total = cox_loss(risk, target, torch.ones(120)).sum().item()
    assert total == pytest.approx(-fitter.log_likelihood_, rel=1e-9)


def test_an_unlabelled_row_has_no_influence_on_the_cox_gradient():
    generator = torch.Generator().manual_seed(0)
    X = torch.randn(8, 4, generator=generator)
    time = np.array([3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0])
    event = np.array([1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0])
    target = torch.from_numpy(encode_survival(time, event, (2.0, 5.0, 9.0)))
    weight = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0])  # row 3 unlabelled

    def gradient(inputs, targets):
        net = build_network(4, (8,), [3], 0.0, seed=0, tied_heads=[True])
        masked_task_loss(net(inputs)[0], targets, weight, COX_LOSS).backward()
        return torch.cat([p.grad.flatten() for p in net.parameters()])

    reference = gradient(X, target)
    changed_X, changed_target = X.clone(), target.clone()
    changed_X[3], changed_target[3] = 1e3, torch.tensor([0, 1, 7])  # an event after every other row
    assert torch.equal(reference, gradient(changed_X, changed_target))
    changed_X[4] = 1e3  # whereas a labelled row censored at 5 sits in the risk sets of 3 events and moves it
    assert not torch.equal(reference, gradient(changed_X, target))


def test_the_fitted_biases_maximise_the_interval_likelihood_given_the_risk_scores():
    rng = np.random.default_rng(2)
    time, event = rng.exponential(5.0, 300), (rng.random(300) < 0.6).astype(float)
    cuts = (2.0, 4.0, 7.0, 12.0)
    target = torch.from_numpy(encode_survival(time, event, cuts))
    effect = torch.tensor(rng.normal(size=300))
    biases = fit_interval_biases(effect, target, len(cuts)).requires_grad_()
    nll = survival_loss(biases[None, :] + effect[:, None], target).sum()
    (gradient,) = torch.autograd.grad(nll, biases)
    assert gradient.abs().max().item() < 1e-6
    for shift in (-0.05, 0.05):  # and a strict minimum
        moved = survival_loss(biases.detach()[None, :] + shift + effect[:, None], target).sum()
        assert moved.item() > nll.item()


def test_row_weights_below_one_scale_a_rows_share_of_the_risk_sets():
    time = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    event = np.array([1.0, 1.0, 0.0, 1.0, 1.0])
    weight = np.array([0.5, 0.25, 1.0, 0.75, 2.0])
    risk = np.array([0.2, -0.4, 1.1, 0.3, -0.8])
    target = torch.from_numpy(encode_survival(time, event, (10.0,)))
    got = cox_loss(torch.tensor(risk)[:, None], target, torch.tensor(weight)).numpy()
    np.testing.assert_allclose(got, _breslow_by_hand(risk, time, event, weight), rtol=1e-12)


@pytest.mark.parametrize("effect, survived, event", [
    ([4.0, -2.0], [0, 1], [1, 0]),  # two rows: the interval's curvature is far below 1
    (np.linspace(1.5, 2.5, 40), [0] * 36 + [1] * 4, [1] * 36 + [0] * 4),  # a hazard near 0.9
])
def test_the_fitted_biases_solve_the_likelihood_equations_where_newton_steps_are_hard(effect, survived, event):
    target = torch.tensor(np.column_stack([survived, event, np.zeros(len(event))]), dtype=torch.int64)
    effect = torch.tensor(effect, dtype=torch.float64)
    biases = fit_interval_biases(effect, target, 1).requires_grad_()
    (gradient,) = torch.autograd.grad(survival_loss(biases[None, :] + effect[:, None], target).sum(), biases)
    assert gradient.abs().max().item() < 1e-9


def test_the_cox_head_learns_the_order_of_times_within_an_interval():
    """With one interval and every patient's event in it, the interval likelihood says nothing about
    who died first; Cox's partial likelihood ranks patients by exactly that."""
    rng = np.random.default_rng(3)
    X = pd.DataFrame({"x": rng.normal(size=400), "noise": rng.normal(size=400)})
    Y = pd.DataFrame({"death_time": np.exp(-X["x"] + 0.1 * rng.normal(size=400)) * 100, "death_event": 1})
    concordance = {}
    for head in ("cox", "proportional"):
        model = MultiTaskMLP(hidden_layer_sizes=(8,), ensemble_size=1, survival_intervals=1, max_epochs=40,
                             random_state=0, survival_head=head).fit(X, Y)
        risk = model.predict_survival_function(X, times=[50.0])["death"][:, 0]  # survival: lower is riskier
        concordance[head] = concordance_index_censored(np.ones(400, bool), Y["death_time"], -risk)[0]
    assert concordance["cox"] > 0.9 and concordance["proportional"] < 0.7, concordance


def test_auto_scores_the_cox_head_with_biases_fitted_to_each_networks_training_rows_alone():
    """"auto" compares the heads by the intervals' likelihood on each network's early-stopping rows. The
    cox head's biases are refitted for it on the network's training rows only. With the risk score
    zeroed, those biases give the training rows' discrete hazards (events over patients at risk, per
    interval), and the loss is their likelihood on the early-stopping rows, averaged over networks."""
    rng = np.random.default_rng(1)
    n, cuts = 240, (100.0, 250.0, 500.0)
    time = rng.uniform(1.0, 600.0, n)
    event = (rng.random(n) < 0.5).astype(float)
    time[:12], event[:12] = np.nan, np.nan  # unlabelled
    labels = pd.DataFrame({"diag": rng.integers(0, 2, n).astype(float), "death_time": time, "death_event": event})
    specs = [TaskSpec("diag", "binary", (0.0, 1.0)), TaskSpec("death", "survival", cut_points=cuts)]
    inputs = rng.normal(size=(n, 5)).astype(np.float32)
    held_out = []
    for seed in (0, 1):
        network = build_network(5, (4,), [1, 3], 0.0, seed, tied_heads=[False, True])
        with torch.no_grad():
            network.heads[1].weight.zero_()
            network.heads[1].bias.fill_(0.7)  # the biases refitted on every labelled row: replaced
        held_out.append((np.sort(rng.choice(n, 60, replace=False)), network))
    ensemble = FittedEnsemble([network for _, network in held_out], [], np.ones(2, int), np.ones(2, int), held_out)

    target = encode_survival(time, event, cuts)
    survived, died, labelled = target[:, 0], target[:, 1], ~np.isnan(time)

    def by_hand(fitted_on):
        losses = []
        for rows, _ in held_out:
            valid = np.isin(np.arange(n), rows) & labelled
            fit = labelled & ~np.isin(np.arange(n), rows) if fitted_on == "training rows" else labelled
            last = np.minimum(survived, 2)
            deaths = np.array([np.sum(fit & (last == j) & (died == 1)) for j in range(3)])
            hazard = deaths / (np.array([np.sum(fit & (survived > j)) for j in range(3)]) + deaths)
            row = [-np.log(1 - hazard[: survived[i]]).sum() - died[i] * np.log(hazard[last[i]])
                   for i in np.flatnonzero(valid)]
            losses.append(np.mean(row))
        return np.mean(losses)

    loss = held_out_loss(ensemble, specs, inputs, labels, "cox")
    assert loss == pytest.approx(by_hand("training rows"), rel=1e-6)
    assert abs(by_hand("every labelled row") - by_hand("training rows")) > 1e-3  # so the test tells them apart

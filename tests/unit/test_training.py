import math

import numpy as np
import pytest
import torch

from clinical_mtl.exceptions import TrainingDivergedError
from clinical_mtl.model.early_stopping import MIN_VALIDATION_LABELS, OutcomeStopping
from clinical_mtl.model.losses import FixedWeighting
from clinical_mtl.model import optimizer as optimizer_module
from clinical_mtl.model.network import build_network
from clinical_mtl.model.training import (
    TaskData,
    TrainingSettings,
    evaluate_losses,
    fit_module,
    predict_module,
    resolve_device,
)

SETTINGS = {"learning_rate": 0.01, "weight_decay": 0.0, "batch_size": 8, "max_epochs": 100, "patience": 10,
            "verbose": 0}


def separable(n=40, seed=0):
    generator = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 3, generator=generator)
    cls = (X[:, 0] > 0).long()
    value = 2 * X[:, 1]
    weights = torch.ones(n, 2)
    weights[::4, 1] = 0.0  # a quarter of the regression labels missing
    return TaskData(X, [cls, value], weights)


def train(data, valid=None, seed=0, **settings):
    net = build_network(3, (16,), [1, 1], 0.0, seed=seed)
    weighting = FixedWeighting([1.0, 1.0])
    result = fit_module(
        net, weighting, ["cls", "value"], ["binary", "regression"], data, valid,
        TrainingSettings(**(SETTINGS | settings)), seed=seed,
    )
    return net, result


def test_one_step_changes_the_weights():
    data = separable()
    before = build_network(3, (16,), [1, 1], 0.0, seed=0)
    after, _ = train(data, max_epochs=1, batch_size=len(data))
    assert any(not torch.equal(a, b) for a, b in zip(before.parameters(), after.parameters()))


def test_loss_falls_on_separable_rows():
    _, result = train(separable(), max_epochs=60)
    first, last = result.history[0], result.history[-1]
    assert last["train_loss/cls"] < 0.3 * first["train_loss/cls"]
    assert last["train_loss/value"] < 0.3 * first["train_loss/value"]


def test_same_seed_same_weights_and_global_rng_untouched():
    torch.manual_seed(1)
    state = torch.get_rng_state()
    first, _ = train(separable(), max_epochs=3)
    assert torch.equal(state, torch.get_rng_state())
    second, _ = train(separable(), max_epochs=3)
    for a, b in zip(first.parameters(), second.parameters()):
        assert torch.equal(a, b)


def test_early_stopping_restores_the_best_epoch():
    data, valid = separable(40, seed=0), separable(40, seed=1)
    net, result = train(data, valid, max_epochs=200, patience=5, learning_rate=0.05)
    losses = [record["valid_loss"] for record in result.history]
    assert result.n_epochs < 200
    assert result.best_epoch == 1 + losses.index(min(losses))
    assert result.n_epochs == result.best_epoch + 5
    restored = sum(loss.item() for loss in evaluate_losses(net, ["binary", "regression"], valid))
    assert restored == pytest.approx(min(losses), rel=1e-5)


def test_history_records_per_task_losses_and_weights():
    _, result = train(separable(), separable(seed=1), max_epochs=2, patience=5)
    assert set(result.history[0]) == {
        "epoch", "train_loss", "valid_loss",
        "train_loss/cls", "train_loss/value", "valid_loss/cls", "valid_loss/value",
        "weight/cls", "weight/value", "grad_cosine/cls/value",
    }
    # The gradient cosines are measured on the first epoch and every RELATEDNESS_EVERY after it.
    assert set(result.history[1]) == set(result.history[0]) - {"grad_cosine/cls/value"}


def test_task_unlabelled_in_every_row_records_nan_and_trains_the_rest():
    data = separable()
    data.weights[:, 1] = 0.0
    _, result = train(data, max_epochs=2)
    assert math.isnan(result.history[-1]["train_loss/value"])
    assert math.isfinite(result.history[-1]["train_loss"])


def test_divergence_is_an_error_before_the_optimiser_step():
    data = separable()
    data.targets[1][:] = 1e30
    with pytest.raises(TrainingDivergedError, match="lower learning_rate"):
        train(data, max_epochs=1)


def test_predict_module_batches_give_the_same_outputs():
    net = build_network(3, (16,), [1, 2], 0.0, seed=0)
    X = torch.randn(50, 3)
    whole = predict_module(net, X, batch_size=100)
    batched = predict_module(net, X, batch_size=7)
    for a, b in zip(whole, batched):
        torch.testing.assert_close(a, b)


def test_sigma_of_a_task_never_present_stays_put_with_the_fused_optimiser():
    from clinical_mtl.model.losses import UncertaintyWeighting

    data = separable()
    data.weights[:, 1] = 0.0
    net = build_network(3, (16,), [1, 1], 0.0, seed=0)
    weighting = UncertaintyWeighting([False, True])
    fit_module(net, weighting, ["cls", "value"], ["binary", "regression"], data, None,
               TrainingSettings(**(SETTINGS | {"learning_rate": 0.05, "weight_decay": 0.1, "max_epochs": 3})),
               seed=0)
    assert weighting.log_variances[1].item() == 0.0
    assert weighting.log_variances[0].item() != 0.0


NAMES, KINDS = ["cls", "value"], ["binary", "regression"]


def _fit(net, weighting, data, valid=None, names=NAMES, kinds=KINDS, **settings):
    return fit_module(net, weighting, names, kinds, data, valid, TrainingSettings(**(SETTINGS | settings)), seed=0)


def _row_losses(logit, label, value, target):
    """Per-row binary cross-entropy log(1 + e^z) - y z and squared error, in float64."""
    logit, label, value, target = (np.asarray(a, dtype=np.float64) for a in (logit, label, value, target))
    return np.logaddexp(0.0, logit) - label * logit, (value - target) ** 2


def _weighted_means(net, data):
    """Each task's weighted mean loss over its labelled rows, by hand."""
    with torch.no_grad():
        logit, value = (out[:, 0].numpy() for out in net(data.X))
    cross_entropy, squared = _row_losses(logit, data.targets[0], value, data.targets[1])
    weights = data.weights.numpy().astype(np.float64)
    return [np.average(cross_entropy, weights=weights[:, 0]), np.average(squared, weights=weights[:, 1])]


@pytest.mark.parametrize("batch_size", [1, 8, 64])
def test_recorded_train_loss_is_each_tasks_weighted_mean_over_every_labelled_row(batch_size):
    """With a learning rate of 0 the network is the same in every batch, so an epoch's loss of a task is
    its weighted mean over all its labelled rows: one-row batches, uneven ones or one for all, rows
    without any label in between (they end no epoch)."""
    data = separable(42)
    data.weights[:, 0] = torch.where(data.targets[0] == 1, 2.0, 1.0)  # class weights
    data.weights[5:12] = 0.0  # rows without any label
    net, result = train(data, learning_rate=0.0, max_epochs=1, batch_size=batch_size)
    expected = _weighted_means(net, data)
    record = result.history[0]
    assert record["train_loss/cls"] == pytest.approx(expected[0], rel=1e-5)
    assert record["train_loss/value"] == pytest.approx(expected[1], rel=1e-5)
    assert record["train_loss"] == pytest.approx(sum(expected), rel=1e-5)


def test_a_task_labelled_in_a_single_row_trains_and_records_that_rows_loss():
    data = separable()
    data.weights[:, 1] = 0.0
    data.weights[3, 1] = 1.0
    net, result = train(data, learning_rate=0.0, max_epochs=1)
    with torch.no_grad():
        value = net(data.X[3:4])[1][0, 0].item()
    assert result.history[0]["train_loss/value"] == pytest.approx((value - data.targets[1][3].item()) ** 2, rel=1e-5)
    trained, _ = train(data, max_epochs=1)
    start = build_network(3, (16,), [1, 1], 0.0, seed=0)
    assert not torch.equal(trained.heads[1].bias, start.heads[1].bias)


def test_a_tasks_train_loss_stays_its_mean_when_another_tasks_loss_sum_overflows_float32():
    """Squared errors near 1.2e37 sum to about 1e38 in a batch of 8 (finite) but overflow float32 over
    the ten batches of an epoch; the other task, absent from most batches, must still record its own
    mean, not NaN."""
    data = separable(80)
    huge = TaskData(data.X, [torch.full((80,), 3.5e18), data.targets[0]], torch.zeros(80, 2))
    huge.weights[:, 0] = 1.0
    huge.weights[[2, 9], 1] = 1.0
    net = build_network(3, (16,), [1, 1], 0.0, seed=0)
    result = _fit(net, FixedWeighting([1.0, 1.0]), huge, names=["value", "cls"], kinds=["regression", "binary"],
                  learning_rate=0.0, max_epochs=1)
    with torch.no_grad():
        logit = net(huge.X[[2, 9]])[1][:, 0]
    cross_entropy, _ = _row_losses(logit, huge.targets[1][[2, 9]], 0.0, 0.0)
    assert result.history[0]["train_loss/cls"] == pytest.approx(cross_entropy.mean(), rel=1e-5)


def test_a_validation_loss_that_never_improves_stops_after_patience_epochs_on_the_last_weights():
    """Validation targets of 1e20 make the validation loss infinite (beyond float32) in every epoch, so
    it never improves on the start: training stops after `patience` epochs and keeps the last weights."""
    data, valid = separable(), separable(seed=1)
    valid.targets[1][:], valid.weights[:, 1] = 1e20, 1.0
    net, result = train(data, valid, max_epochs=20, patience=3)
    assert all(math.isinf(record["valid_loss"]) for record in result.history)
    assert result.n_epochs == 3
    assert result.best_epoch == 3
    last, _ = train(data, max_epochs=3)
    for a, b in zip(net.parameters(), last.parameters()):
        assert torch.equal(a, b)


def test_an_equal_validation_loss_is_no_improvement():
    """With a learning rate of 0 every epoch has the same validation loss: the first one stays the best
    and training stops `patience` epochs after it."""
    _, result = train(separable(), separable(seed=1), learning_rate=0.0, max_epochs=20, patience=3)
    assert len({record["valid_loss"] for record in result.history}) == 1
    assert result.best_epoch == 1
    assert result.n_epochs == 4


def test_a_head_and_its_sigma_move_only_in_the_batches_where_their_task_is_labelled():
    """Without a trunk the value head sees nothing but its own loss, so rows unlabelled for it must leave
    it (and its sigma) where two epochs on its one labelled row alone put it: AdamW's momentum and
    weight decay do not touch it in the other batches."""
    from clinical_mtl.model.losses import UncertaintyWeighting

    data = separable(10)
    data.weights[:, 1] = 0.0
    data.weights[4, 1] = 1.0

    def value_head_and_sigma(rows):
        net, weighting = build_network(3, (), [1, 1], 0.0, seed=0), UncertaintyWeighting([False, True])
        _fit(net, weighting, rows, learning_rate=0.05, weight_decay=0.1, batch_size=1, max_epochs=2)
        return [*net.heads[1].parameters(), weighting.log_variances[1]]

    start = [*build_network(3, (), [1, 1], 0.0, seed=0).heads[1].parameters(), torch.zeros(())]
    padded, alone = value_head_and_sigma(data), value_head_and_sigma(data.take(torch.tensor([4])))
    for first, a, b in zip(start, padded, alone):
        assert not torch.equal(first, b)
        torch.testing.assert_close(a, b)


def test_evaluate_losses_is_none_without_a_label_and_the_rows_loss_with_one():
    net = build_network(3, (16,), [1, 1], 0.0, seed=0)
    data = separable()
    data.weights[:] = 0.0
    data.weights[7, 0] = 1.0
    cls, value = evaluate_losses(net, KINDS, data)
    assert value is None
    with torch.no_grad():
        logit = net(data.X[7:8])[0][:, 0]
    cross_entropy, _ = _row_losses(logit, data.targets[0][7:8], 0.0, 0.0)
    assert cls.item() == pytest.approx(cross_entropy[0], rel=1e-5)


@pytest.mark.skipif(torch.cuda.is_available(), reason="torch finds a CUDA device here, so device='cuda' is usable")
def test_cuda_without_a_cuda_device_is_a_clear_value_error():
    with pytest.raises(ValueError, match="finds no CUDA device"):
        resolve_device("cuda")


@pytest.mark.parametrize("available", [False, True])
def test_cuda_is_resolved_only_where_torch_finds_a_cuda_device(monkeypatch, available):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    assert resolve_device("cpu") == torch.device("cpu")
    if available:
        assert resolve_device("cuda:0") == torch.device("cuda", 0)
    else:
        with pytest.raises(ValueError, match="finds no CUDA device"):
            resolve_device("cuda:0")


def test_weight_decay_shrinks_weight_matrices_only_never_biases_or_sigmas():
    """AdamW's decoupled decay: after one step, a weight matrix trained with decay wd is the one trained
    without it less lr * wd times its start; every bias and sigma is trained, alike with or without decay."""
    from clinical_mtl.model.losses import UncertaintyWeighting

    data, lr, wd = separable(), 0.01, 0.5

    def one_step(weight_decay):
        net, weighting = build_network(3, (16,), [1, 1], 0.0, seed=0), UncertaintyWeighting([False, True])
        _fit(net, weighting, data, learning_rate=lr, weight_decay=weight_decay, batch_size=len(data), max_epochs=1)
        return [*net.parameters(), *weighting.log_variances]

    start = [*build_network(3, (16,), [1, 1], 0.0, seed=0).parameters(), torch.zeros(()), torch.zeros(())]
    for first, plain, decayed in zip(start, one_step(0.0), one_step(wd)):
        assert not torch.equal(plain, first)
        if first.ndim > 1:
            torch.testing.assert_close(decayed, plain - lr * wd * first)
        else:
            assert torch.equal(decayed, plain)


def test_the_optimiser_is_the_fused_adamw_on_the_cpu(monkeypatch):
    """The fused AdamW kernel, documented in ``decoupled_adamw``: about 3.4x faster per step on the CPU
    than the per-parameter loop for the tests' (64, 32) network, with the same maths up to rounding."""
    made = []
    lean = optimizer_module.LeanAdamW

    def recorded(*args, **kwargs):
        made.append(kwargs)
        return lean(*args, **kwargs)

    monkeypatch.setattr(optimizer_module, "LeanAdamW", recorded)
    train(separable(), max_epochs=1)
    assert [kwargs.get("fused") for kwargs in made] == [True]


@pytest.mark.parametrize("options", [{"amsgrad": True, "fused": True}, {"fused": False}])
def test_lean_steps_are_torchs_own_step_where_the_fused_kernel_alone_would_differ(options):
    """AMSGrad keeps the largest second moment and an unfused AdamW runs another kernel: there
    ``lean_step`` is ``AdamW.step``, exactly, with gradients that shrink (so AMSGrad's maximum matters)."""
    nets = [build_network(4, (8,), [1, 2], 0.0, seed=0) for _ in range(2)]
    settings = {"lr": 0.05, "weight_decay": 0.1} | options
    optimisers = [torch.optim.AdamW(nets[0].parameters(), **settings),
                  optimizer_module.LeanAdamW(nets[1].parameters(), **settings)]
    generator = torch.Generator().manual_seed(0)
    for step in range(8):
        x = torch.randn(16, 4, generator=generator)
        for net, optimiser in zip(nets, optimisers):
            optimiser.zero_grad(set_to_none=True)
            (sum(output.sum() for output in net(x)) / (step + 1) ** 2).backward()
            getattr(optimiser, "lean_step", optimiser.step)()
    for torchs, lean in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
        assert torch.equal(torchs, lean)


def test_weight_decay_shrinks_the_weight_matrices_and_leaves_biases_and_task_weights_alone():
    net = build_network(4, (8,), [1, 2], 0.0, seed=0)
    matrices = [p for p in net.parameters() if p.ndim > 1]
    others = [p for p in net.parameters() if p.ndim == 1] + [torch.nn.Parameter(torch.ones(()))]
    before = [p.detach().clone() for p in (*matrices, *others)]
    settings = TrainingSettings(learning_rate=0.1, weight_decay=0.5, batch_size=8, max_epochs=1, patience=1,
                                verbose=0)
    optimizer = optimizer_module.decoupled_adamw(matrices, others, settings, torch.device("cpu"))
    for p in (*matrices, *others):
        p.grad = torch.zeros_like(p)  # no gradient: only the decoupled decay moves a weight
    optimizer.lean_step()
    for p, old in zip((*matrices, *others), before):
        torch.testing.assert_close(p.detach(), old * (1 - 0.1 * 0.5) if p.ndim > 1 else old)


def test_lean_steps_equal_torchs_fused_adamw_steps_even_when_a_head_has_no_gradient():
    """``LeanAdamW.lean_step`` calls torch's fused kernel itself: after steps with every parameter
    stepped and steps where one head has no gradient (torch's own step then), the weights and the
    optimiser state are exactly those of ``torch.optim.AdamW(fused=True)``."""
    torch.manual_seed(0)
    nets = [build_network(4, (8,), [1, 2], 0.0, seed=0) for _ in range(2)]
    settings = dict(lr=0.05, weight_decay=0.1, fused=True)
    optimisers = [torch.optim.AdamW(nets[0].parameters(), **settings),
                  optimizer_module.LeanAdamW(nets[1].parameters(), **settings)]
    torchs_steps, torchs_step = [], optimisers[1].step
    optimisers[1].step = lambda: torchs_steps.append(step) or torchs_step()
    for step in range(12):
        x = torch.randn(16, 4)
        for net, optimiser in zip(nets, optimisers):
            optimiser.zero_grad(set_to_none=True)
            first, second = net(x)
            (first.sum() + (second.pow(2).sum() if step % 4 else 0.0)).backward()
            getattr(optimiser, "lean_step", optimiser.step)()
    assert nets[1].heads[1].weight.grad is not None
    for torchs, lean in zip(nets[0].parameters(), nets[1].parameters()):
        assert torch.equal(torchs, lean)
    for torchs, lean in zip(optimisers[0].state.values(), optimisers[1].state.values()):
        assert all(torch.equal(torchs[key], lean[key]) for key in ("step", "exp_avg", "exp_avg_sq"))
    assert int(optimisers[1].state[nets[1].heads[1].weight]["step"]) == 9
    # torch's step: creating the state (steps 0 and 1, the head's first gradient) and the head's absences
    assert torchs_steps == [0, 1, 4, 8]
    optimisers[1].zero_grad()
    assert all(parameter.grad is None for parameter in nets[1].parameters())
    nets[1](x)[0].sum().backward()
    optimisers[1].zero_grad(set_to_none=False)
    assert torch.equal(nets[1].trunk[0].weight.grad, torch.zeros(8, 4)) and nets[1].heads[1].weight.grad is None


def test_per_outcome_stopping_keeps_each_outcomes_best_epoch_and_stops_with_the_joint_objective():
    """Each outcome keeps the weights of the epoch of its own lowest validation loss among those trained
    (the joint best stays in the module); training stops, as with joint early stopping, once the joint
    objective has gone `patience` epochs without improving."""
    data, valid = separable(40, seed=0), separable(40, seed=1)
    valid.targets[1][:] = valid.targets[1] + 3 * torch.randn(40, generator=torch.Generator().manual_seed(2))
    net = build_network(3, (16,), [1, 1], 0.0, seed=0)
    states = {}
    result = fit_module(
        net, FixedWeighting([1.0, 1.0]), ["cls", "value"], ["binary", "regression"], data, valid,
        TrainingSettings(**(SETTINGS | {"patience": 5, "learning_rate": 0.05, "per_outcome_stopping": True})),
        seed=0, on_epoch=lambda record, *_: states.setdefault(
            record["epoch"], {key: value.clone() for key, value in net.state_dict().items()}),
    )
    history = [record for record in result.history]
    best = [1 + int(np.argmin([record[f"valid_loss/{name}"] for record in history])) for name in ("cls", "value")]
    assert result.outcome_epochs == best
    assert best[0] != best[1]  # the case this is about: the outcomes peak at different epochs
    joint = [record["valid_loss"] for record in history]
    assert result.n_epochs == 1 + joint.index(min(joint)) + 5 < SETTINGS["max_epochs"]
    for epoch, state in zip(best, result.outcome_states):
        assert state.keys() == states[epoch].keys()
        assert all(torch.equal(state[key], states[epoch][key]) for key in state)
    assert result.best_epoch == 1 + joint.index(min(joint))
    assert all(torch.equal(value, states[result.best_epoch][key]) for key, value in net.state_dict().items())


def test_per_outcome_stopping_leaves_an_outcome_with_few_validation_labels_to_the_joint_objective():
    """An outcome with fewer than MIN_VALIDATION_LABELS labelled validation rows is not watched alone: it
    keeps the joint best weights; training stops with the joint objective."""
    data, valid = separable(40, seed=0), separable(40, seed=1)
    valid.weights[MIN_VALIDATION_LABELS - 1:, 1] = 0.0
    net = build_network(3, (16,), [1, 1], 0.0, seed=0)
    result = fit_module(
        net, FixedWeighting([1.0, 1.0]), ["cls", "value"], ["binary", "regression"], data, valid,
        TrainingSettings(**(SETTINGS | {"patience": 5, "learning_rate": 0.05, "per_outcome_stopping": True})),
        seed=0,
    )
    history = [record for record in result.history]
    best_cls = 1 + int(np.argmin([record["valid_loss/cls"] for record in history]))
    joint = [record["valid_loss"] for record in history]
    assert result.best_epoch == 1 + joint.index(min(joint))
    assert result.outcome_epochs == [best_cls, 0]
    assert result.outcome_states[0] is not None and result.outcome_states[1] is None
    assert best_cls != result.best_epoch  # the case this is about: the watched outcome peaks at another epoch
    assert result.n_epochs == result.best_epoch + 5 < SETTINGS["max_epochs"]


def test_an_outcome_whose_validation_loss_ties_keeps_its_first_best_epoch():
    stopping = OutcomeStopping([MIN_VALIDATION_LABELS, MIN_VALIDATION_LABELS])
    snapshots = []
    for epoch, losses in enumerate([(0.5, 0.9), (0.5, 0.8), (0.6, 0.8)], start=1):
        stopping.update(epoch, losses, lambda epoch=epoch: snapshots.append(epoch) or {"epoch": epoch})
    assert stopping.epochs == [1, 2] and stopping.losses == [0.5, 0.8]
    assert stopping.states == [{"epoch": 1}, {"epoch": 2}] and snapshots == [1, 2]  # one snapshot per improvement


def test_per_outcome_stopping_without_a_validation_set_runs_every_epoch():
    _, result = train(separable(), max_epochs=7, per_outcome_stopping=True)
    assert result.n_epochs == 7
    assert result.outcome_epochs is None and result.outcome_states is None


def test_training_data_is_row_major_with_float_binary_targets_and_equal_values():
    """``fit_module`` gathers whole rows every epoch: a column-major input (the preprocessor's
    layout) becomes row-major once, binary targets become the floats their loss takes, and
    nothing else changes; ``take`` gives the rows in the order asked."""
    X = torch.from_numpy(np.asfortranarray(np.arange(12, dtype=np.float32).reshape(4, 3)))
    data = TaskData(X, [torch.tensor([0, 1, 1, 0]), torch.tensor([0, 2, 1, 0])], torch.ones(4, 2))
    ready = data.for_training(["binary", "multiclass"])
    assert not X.is_contiguous() and ready.X.is_contiguous() and torch.equal(ready.X, X)
    assert ready.targets[0].dtype == torch.float32 and torch.equal(ready.targets[0], data.targets[0].float())
    assert ready.targets[1] is data.targets[1]
    taken = ready.take(torch.tensor([3, 0, 2]))
    assert torch.equal(taken.X, X[[3, 0, 2]]) and torch.equal(taken.targets[1], torch.tensor([0, 0, 1]))

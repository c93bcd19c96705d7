import math

import pytest
import torch

from clinical_mtl.exceptions import TrainingDivergedError
from clinical_mtl.losses import FixedWeighting
from clinical_mtl.network import build_network
from clinical_mtl.training import TaskData, TrainingSettings, fit_module, predict_module, evaluate_losses


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
        TrainingSettings(**({"learning_rate": 0.01, "batch_size": 8} | settings)), seed=seed,
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
        "weight/cls", "weight/value",
    }


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
    from clinical_mtl.losses import UncertaintyWeighting

    data = separable()
    data.weights[:, 1] = 0.0
    net = build_network(3, (16,), [1, 1], 0.0, seed=0)
    weighting = UncertaintyWeighting([False, True])
    fit_module(net, weighting, ["cls", "value"], ["binary", "regression"], data, None,
               TrainingSettings(learning_rate=0.05, weight_decay=0.1, batch_size=8, max_epochs=3), seed=0)
    assert weighting.log_variances[1].item() == 0.0
    assert weighting.log_variances[0].item() != 0.0

"""A survival outcome end to end in the estimator: curves, medians, flat columns, evaluation, saving."""

import numpy as np
import pandas as pd
import pytest
import torch

from clinical_mtl import MultiTaskMLP
from clinical_mtl.data.persistence import load_model, save_model
from clinical_mtl.datasets import load_pbc, make_synthetic_cohort
from clinical_mtl.model import fitting
from clinical_mtl.model.fitting import fit_ensemble, member_heads
from clinical_mtl.model.labels import encode_targets
from clinical_mtl.model.network import head_layers
from clinical_mtl.model.outputs import flat_predictions
from clinical_mtl.model.stacked_training import fit_stacked as stacked
from clinical_mtl.model.survival import survival_loss
from clinical_mtl.reporting.model_card import build_model_card, survival_head_text

pytestmark = pytest.mark.integration

HORIZONS = (365.0, 1826.0, 3652.0)


@pytest.fixture(scope="module")
def pbc_survival():
    X, Y = load_pbc()
    model = MultiTaskMLP(hidden_layer_sizes=(32,), ensemble_size=2, max_epochs=60, random_state=0,
                         survival_horizons=list(HORIZONS)).fit(X, Y)
    return model, X, Y


def test_curves_are_probabilities_that_never_rise_and_medians_sit_where_they_cross_one_half(pbc_survival):
    model, X, _ = pbc_survival
    (spec,) = [spec for spec in model.task_specs_ if spec.kind == "survival"]
    assert model.tasks_ == {"cirrhosis": "binary", "death": "survival"} and spec.horizons == HORIZONS
    default = model.predict_survival_function(X)["death"]
    assert default.shape == (len(X), len(spec.cut_points))
    times = np.linspace(0, 6000, 61)
    curves = model.predict_survival_function(X, times)["death"]
    assert np.all((curves >= 0) & (curves <= 1)) and np.all(np.diff(curves, axis=1) <= 1e-12)
    np.testing.assert_allclose(curves[:, 0], 1.0)
    median = model.predict(X)["death"].to_numpy()
    known = ~np.isnan(median)
    assert 0 < known.sum() < len(X)  # some medians lie beyond the follow-up the model learnt from
    at_median = np.array([model.predict_survival_function(X.iloc[[i]], [median[i]])["death"][0, 0]
                          for i in np.flatnonzero(known)[:20]])
    np.testing.assert_allclose(at_median, 0.5, atol=1e-9)
    assert np.all(default[~known, -1] > 0.5)


def test_flat_columns_give_the_event_probability_by_each_horizon(pbc_survival):
    model, X, _ = pbc_survival
    flat = flat_predictions(model, X.head(50), top_k=2)
    curves = model.predict_survival_function(X.head(50), HORIZONS)["death"]
    for k, label in enumerate(("365", "1826", "3652")):
        np.testing.assert_allclose(flat[f"death_event_prob_{label}"], 1 - curves[:, k], rtol=1e-12)
    np.testing.assert_array_equal(flat["death_pred"], model.predict(X.head(50))["death"])
    assert (flat["death_median_beyond_follow_up"] == flat["death_pred"].isna()).all()
    explanation = model.explain(X.head(50))["death"].values[:, :, 1]  # the middle horizon
    top = np.abs(explanation).argmax(axis=1)
    assert flat["death_top1_feature"].tolist() == [X.columns[i] for i in top]


def test_evaluation_ranks_patients_and_accounts_for_censoring(pbc_survival):
    model, X, Y = pbc_survival
    table = model.evaluate(X, Y, n_bootstrap=30, random_state=0)
    row = table.loc["death"]
    assert (row["n_labelled"], row["events"], row["censored"]) == (418, 161, 257)
    assert 0.75 < row["harrell_c"] <= 1 and 0.7 < row["uno_c"] <= 1 and 0 < row["ibs"] < 0.25
    assert row["harrell_c_lower"] <= row["harrell_c"] <= row["harrell_c_upper"]
    assert {"auc_at_365", "auc_at_1826", "calibration_at_3652"} <= set(table.columns)
    assert 1000 < row["median_follow_up"] < 3500  # reverse Kaplan-Meier, days
    # Ranking by the model beats ranking by chance on the patients it did not see in early stopping.
    assert model.validation_metrics_.loc["death", "harrell_c"] > 0.7


def test_a_saved_model_predicts_the_same_curves(tmp_path, pbc_survival):
    model, X, _ = pbc_survival
    loaded = load_model(save_model(model, tmp_path / "model"))
    assert loaded.task_specs_ == model.task_specs_
    np.testing.assert_array_equal(loaded.predict_survival_function(X, [100, 2000])["death"],
                                  model.predict_survival_function(X, [100, 2000])["death"])



def test_censored_patients_teach_the_model():
    """Keeping censored patients (instead of leaving them unlabelled) moves the curves up: without them
    every labelled patient dies, and the model believes it."""
    X, Y, truth = make_synthetic_cohort(600, random_state=1, survival=True, return_truth=True,
                                        label_missing_rate=0.0)
    settings = {"hidden_layer_sizes": (16,), "ensemble_size": 1, "max_epochs": 160, "random_state": 0}
    labels = Y[["death_time", "death_event"]]
    full = MultiTaskMLP(**settings).fit(X, labels)
    deaths_only = labels.where(labels["death_event"] == 1)
    naive = MultiTaskMLP(**settings).fit(X, deaths_only)
    horizon = [1000.0]
    true = truth.survival["death"](horizon)[:, 0].mean()
    with_censored = full.predict_survival_function(X, horizon)["death"][:, 0].mean()
    without = naive.predict_survival_function(X, horizon)["death"][:, 0].mean()
    assert abs(with_censored - true) < 0.08 and without < true - 0.15, (with_censored, without, true)



def _hazard_log_odds(curves: np.ndarray) -> np.ndarray:
    """Each interval's discrete hazard 1 - S_j / S_(j-1), on the log-odds scale."""
    before = np.hstack([np.ones((len(curves), 1)), curves[:, :-1]])
    hazard = 1.0 - curves / before
    return np.log(hazard / (1.0 - hazard))


@pytest.mark.parametrize("survival_head", ["proportional", "cox", "interval"])
def test_a_proportional_head_keeps_each_patients_hazard_odds_ratio_over_follow_up(survival_head):
    """``survival_head="proportional"``: logit h_j(x) = a_j + eta(x), so between two patients the
    difference of hazard log-odds is the same in every interval; ``"interval"`` lets it change."""
    X, Y = load_pbc()
    model = MultiTaskMLP(hidden_layer_sizes=(16,), ensemble_size=1, max_epochs=40, random_state=0,
                         survival_head=survival_head).fit(X, Y)
    log_odds = _hazard_log_odds(model.predict_survival_function(X.head(40))["death"])
    spread = np.ptp(log_odds - log_odds[:1], axis=1)  # over intervals, each patient against the first
    if survival_head != "interval":
        assert spread.max() < 1e-3, spread.max()
    else:
        assert np.median(spread) > 0.05, np.median(spread)


@pytest.mark.parametrize("params", [{}, {"head_weight_decay": 0.05}, {"head_hidden_layer_sizes": (4,)},
                                    {"loss_weighting": "pcgrad"}, {"sharing": "soft"}])
def test_every_network_of_a_proportional_head_shares_one_effect_across_intervals(params, tmp_path):
    """However the networks train (together, apart, with head layers or soft sharing), the survival
    head's output rows stay equal, and the other heads' rows are left alone."""
    X, Y = load_pbc()
    model = MultiTaskMLP(hidden_layer_sizes=(16,), ensemble_size=3, max_epochs=15, random_state=0,
                         survival_head="proportional", **params).fit(X, Y)
    death = [spec.name for spec in model.task_specs_].index("death")
    for member in model.module_.members:
        weight = head_layers(member.heads[death])[1].weight
        assert weight.shape[0] > 1 and bool((weight == weight[0]).all())
    loaded = load_model(save_model(model, tmp_path / "model"))
    assert loaded.get_params()["survival_head"] == "proportional"
    np.testing.assert_array_equal(loaded.predict_survival_function(X.head(5))["death"],
                                  model.predict_survival_function(X.head(5))["death"])



def test_a_cox_heads_baselines_are_the_likeliest_given_each_networks_risk_scores(tmp_path):
    """``survival_head="cox"``: the networks learn one effect across intervals from Cox's partial
    likelihood; each interval's bias then maximises the logistic-hazard likelihood of the training rows
    with that effect held fixed (a zero gradient), and the model explains, saves, loads and describes itself."""
    X, Y = load_pbc()
    model = MultiTaskMLP(hidden_layer_sizes=(16,), ensemble_size=3, max_epochs=30, random_state=0,
                         survival_head="cox").fit(X, Y)
    assert model.survival_head_ == "cox" and model.survival_head_losses_ == {}
    death = [spec.name for spec in model.task_specs_].index("death")
    for member in model.module_.members:
        output = head_layers(member.heads[death])[1]
        assert bool((output.weight == output.weight[0]).all())
    assert_biases_maximise_the_labelled_rows_likelihood(model, X, Y, "death")
    loaded = load_model(save_model(model, tmp_path / "model"))
    assert loaded.get_params()["survival_head"] == "cox" and loaded.survival_head_ == "cox"
    np.testing.assert_array_equal(loaded.predict_survival_function(X.head(5))["death"],
                                  model.predict_survival_function(X.head(5))["death"])
    explained = model.explain(X.head(30))["death"]  # exact, as for every head
    curves = model.predict_survival_function(X.head(30), model.task_specs_[death].horizons)["death"]
    assert np.abs(explained.base_values + explained.values.sum(axis=1) - (1 - curves)).max() < 1e-4
    assert survival_head_text(model).endswith("(one risk score per patient, trained by Cox's partial likelihood; the "
                                              "intervals' baseline hazards then fitted to the training rows).")


def test_a_cox_heads_baselines_are_fitted_on_the_rows_labelled_for_the_outcome_alone():
    X, Y = make_synthetic_cohort(300, random_state=2, survival=True)
    Y = Y[["diagnosis", "death_time", "death_event"]].copy()
    Y.loc[Y.index[::3], ["death_time", "death_event"]] = np.nan  # a third without the survival label
    model = MultiTaskMLP(hidden_layer_sizes=(8,), ensemble_size=2, max_epochs=10, random_state=0,
                         survival_head="cox").fit(X, Y)
    assert_biases_maximise_the_labelled_rows_likelihood(model, X, Y, "death")


def assert_biases_maximise_the_labelled_rows_likelihood(model, X, Y, outcome):
    """Every network's interval biases of ``outcome`` give a zero likelihood gradient on its labelled rows,
    small against the gradient after shifting every logit by 0.1."""
    t = [spec.name for spec in model.task_specs_].index(outcome)
    targets, labelled = encode_targets(Y, model.task_specs_)
    rows = labelled[:, t]
    inputs = torch.from_numpy(model.preprocessor_.transform(X))[rows]
    target = torch.from_numpy(targets[t])[rows]
    for member in model.module_.members:
        output = head_layers(member.heads[t])[1]
        logits = member.eval()(inputs)[t]
        (gradient,) = torch.autograd.grad(survival_loss(logits, target).sum(), output.bias, retain_graph=True)
        (moved,) = torch.autograd.grad(survival_loss(logits + 0.1, target).sum(), output.bias)
        assert gradient.abs().max() < 1e-3 * moved.abs().max(), (gradient, moved)


def test_a_survival_outcomes_early_stopping_rows_are_stratified_on_its_events(monkeypatch):
    X, Y = make_synthetic_cohort(300, random_state=4, survival=True)
    Y = Y[["death_time", "death_event"]]
    held_out, original = [], fitting.holdout_split

    def spy(*args, **kwargs):
        train, valid = original(*args, **kwargs)
        held_out.append(valid)
        return train, valid

    monkeypatch.setattr(fitting, "holdout_split", spy)
    MultiTaskMLP(hidden_layer_sizes=(4,), ensemble_size=5, max_epochs=1, random_state=0).fit(X, Y)
    event = Y["death_event"].to_numpy()
    strata = {"events": event == 1, "censored": event == 0, "unlabelled": np.isnan(event)}
    assert len(held_out) == 5 and all(rows.sum() > 50 for rows in strata.values())
    for valid in held_out:
        share = len(valid) / len(Y)
        for rows in strata.values():
            assert abs(rows[valid].sum() - share * rows.sum()) <= 1


AUTO = {"hidden_layer_sizes": (16,), "ensemble_size": 2, "max_epochs": 30, "random_state": 3}


@pytest.fixture(scope="module")
def auto_head():
    X, Y = load_pbc()
    return MultiTaskMLP(survival_head="auto", **AUTO).fit(X, Y), X, Y


def test_auto_keeps_the_head_with_the_lower_held_out_survival_loss(auto_head):
    """"auto" is the three heads fitted with the same seeds, and the one whose death loss on the
    early-stopping rows (at each network's best epoch, mean over networks) is lower; the cox head's
    loss is the intervals' likelihood too (``test_cox_head`` checks how it is computed)."""
    model, X, Y = auto_head
    assert set(model.survival_head_losses_) == {"interval", "proportional", "cox"}
    assert model.survival_head_ == min(model.survival_head_losses_, key=model.survival_head_losses_.get)
    for head in ("interval", "proportional", "cox"):
        alone = MultiTaskMLP(survival_head=head, **AUTO).fit(X, Y)
        history = pd.DataFrame(alone.history_)
        best = history[history["epoch"] == history["member"].map(dict(enumerate(alone.best_epoch_)))]
        if head != "cox":  # the cox head's history holds partial likelihoods
            assert model.survival_head_losses_[head] == pytest.approx(best["valid_loss/death"].mean(), rel=1e-12)
        if head == model.survival_head_:
            np.testing.assert_array_equal(model.predict_survival_function(X.head(20))["death"],
                                          alone.predict_survival_function(X.head(20))["death"])
            assert alone.survival_head_ == head and alone.survival_head_losses_ == {}


def test_auto_has_nothing_to_choose_by_without_a_survival_outcome_or_held_out_rows():
    X, Y = load_pbc()
    no_survival = MultiTaskMLP(survival_head="auto", **AUTO).fit(X, Y[["cirrhosis"]])
    no_held_out = MultiTaskMLP(survival_head="auto", early_stopping=False, **AUTO).fit(X, Y)
    for model in (no_survival, no_held_out):
        assert (model.survival_head_, model.survival_head_losses_) == ("interval", {})


def test_the_chosen_head_is_saved_and_older_models_read_as_interval_heads(auto_head, tmp_path):
    model, X, _ = auto_head
    loaded = load_model(save_model(model, tmp_path / "model"))
    assert (loaded.survival_head_, loaded.survival_head_losses_) == (model.survival_head_, model.survival_head_losses_)
    state, weights = model.fitted_state()
    del state["fitted"]["survival_head"], state["fitted"]["survival_head_losses"]
    older = MultiTaskMLP.from_fitted_state(model.get_params(), state, weights)
    assert (older.survival_head_, older.survival_head_losses_) == ("interval", {})



def test_the_card_and_the_tracked_run_say_which_head_was_chosen_and_by_what(auto_head, tmp_path, monkeypatch):
    import mlflow

    from clinical_mtl.tracking import log_fit

    model, X, Y = auto_head
    card = build_model_card(model, X, Y, X, Y, single_task=False, n_bootstrap=0)
    losses = model.survival_head_losses_
    cuts = next(spec.cut_points for spec in model.task_specs_ if spec.name == "death")
    listed = ", ".join(f"{c:,.0f}" for c in cuts[:-1]) + f" and {cuts[-1]:,.0f}"  # days: no decimals
    trained = (" (one risk score per patient, trained by Cox's partial likelihood; the intervals' baseline "
               "hazards then fitted to the training rows)" if model.survival_head_ == "cox" else "")
    sentence = (f"Survival outcomes have the {model.survival_head_} head, chosen by the early-stopping rows' loss "
                f"(interval {losses['interval']:.4f}, proportional {losses['proportional']:.4f}, cox "
                f"{losses['cox']:.4f}): a discrete-time logistic hazard on intervals of follow-up cut at quantiles "
                f"of the training event times (death on {len(cuts)}, ending at {listed}){trained}.")
    assert sentence in card.to_markdown() and sentence.replace("'", "&#39;") in card.to_html()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = mlflow.get_run(log_fit(model, X, Y, log_models=False, log_explanations=False))
    assert run.data.tags["clinical_mtl.survival_head"] == model.survival_head_
    for head in ("interval", "proportional", "cox"):
        assert run.data.metrics[f"survival_head_loss.{head}"] == pytest.approx(losses[head])
    plain = build_model_card(MultiTaskMLP(**AUTO).fit(X, Y[["cirrhosis"]]), X, Y[["cirrhosis"]], X, Y[["cirrhosis"]],
                             single_task=False, n_bootstrap=0)
    assert "Survival outcomes have" not in plain.to_markdown()


def test_predict_survival_function_refuses_models_without_survival_and_bad_times(pbc_survival):
    model, X, Y = pbc_survival
    with pytest.raises(ValueError, match="times must be finite and non-negative"):
        model.predict_survival_function(X.head(2), [-1.0])
    plain = MultiTaskMLP(hidden_layer_sizes=(4,), ensemble_size=1, max_epochs=2, random_state=0)
    plain.fit(X, Y[["cirrhosis"]])
    with pytest.raises(ValueError, match="needs a survival outcome"):
        plain.predict_survival_function(X.head(2))
    assert isinstance(model.predict(X.head(3)), pd.DataFrame)


def test_a_mixed_ensemble_is_the_interval_and_cox_networks_of_its_seeds(tmp_path, monkeypatch):
    """``survival_head="mixed"``: in one stacked loop, the first, third, ... networks train as the interval
    head trains them from their seeds and the others as the cox head does (without dropout, whose masks
    a stacked loop draws for all its networks at once: up to float rounding); the model explains, saves,
    loads and describes itself."""
    X, Y = load_pbc()
    model = MultiTaskMLP(hidden_layer_sizes=(16,), ensemble_size=4, max_epochs=15, random_state=0, dropout=0.0,
                         survival_head="mixed").fit(X, Y)
    assert model.survival_head_ == "mixed" and model.survival_head_losses_ == {}
    death = [spec.name for spec in model.task_specs_].index("death")
    for member, network in enumerate(model.module_.members):
        weight = head_layers(network.heads[death])[1].weight  # one effect for all intervals: cox networks only
        assert bool((weight == weight[0]).all()) == (member % 2 == 1)
    loops = []
    monkeypatch.setattr(fitting, "fit_stacked", lambda networks, *args: loops.append(len(networks)) or stacked(
        networks, *args))
    inputs, seeds = model.preprocessor_.transform(X), [5, 6, 7, 8]
    mixed = fit_ensemble(model, model.task_specs_, inputs, Y, seeds, "mixed")
    apart = [fit_ensemble(model, model.task_specs_, inputs, Y, seeds[first::2], head)
             for first, head in enumerate(("interval", "cox"))]
    assert loops == [4, 2, 2]  # the mixed ensemble in one loop
    for member, network in enumerate(mixed.networks):
        alone = apart[member % 2]
        for (name, value), twin in zip(network.state_dict().items(), alone.networks[member // 2].state_dict().values()):
            torch.testing.assert_close(value, twin, rtol=1e-4, atol=1e-5, msg=f"{member} {name}")
        assert mixed.best_epochs[member] == alone.best_epochs[member // 2]
    assert member_heads("mixed", 1) == ["interval"] and member_heads("cox", 2) == ["cox", "cox"]
    loaded = load_model(save_model(model, tmp_path / "model"))
    assert loaded.get_params()["survival_head"] == "mixed" and loaded.survival_head_ == "mixed"
    np.testing.assert_array_equal(loaded.predict_survival_function(X.head(5))["death"],
                                  model.predict_survival_function(X.head(5))["death"])
    explained = model.explain(X.head(30))["death"]
    curves = model.predict_survival_function(X.head(30), model.task_specs_[death].horizons)["death"]
    assert np.abs(explained.base_values + explained.values.sum(axis=1) - (1 - curves)).max() < 1e-4
    assert survival_head_text(model).endswith(
        "; the ensemble's networks alternate between the interval head (an effect of the shared layers per interval) "
        "and the cox head (one risk score per patient, trained by Cox's partial likelihood; the intervals' baseline "
        "hazards then fitted to the training rows).")


@pytest.mark.parametrize("params", [{"training": "alternate"}, {"early_stopping": "per_outcome"},
                                    {"sharing": "soft"}, {"loss_weighting": "gradnorm"}])
def test_a_mixed_ensemble_keeps_each_networks_head_however_the_networks_train(params):
    """Stacked or one after another, split by outcome or not: the cox networks keep one effect for all
    intervals and the interval networks one per interval."""
    X, Y = load_pbc()
    model = MultiTaskMLP(hidden_layer_sizes=(16,), ensemble_size=3, max_epochs=15, random_state=0,
                         survival_head="mixed", **params).fit(X, Y)
    death = [spec.name for spec in model.task_specs_].index("death")
    for member, network in enumerate(model.module_.members):
        weight = head_layers(network.heads[death])[1].weight
        assert bool((weight == weight[0]).all()) == (member % 2 == 1)
    assert np.all(np.diff(model.predict_survival_function(X.head(5))["death"], axis=1) <= 0)

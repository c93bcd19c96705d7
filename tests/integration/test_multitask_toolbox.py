"""The multi-task options through the estimator: every option fits a diagnosis and a
survival outcome, is a scikit-learn parameter, survives the pickle-free format and
reports its weights and the task relatedness in ``history_``."""

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone

from clinical_mtl import MultiTaskMLP
from clinical_mtl.data.persistence import load_model, save_model
from clinical_mtl.datasets import load_pbc
from clinical_mtl.exceptions import TaskSpecificationError
from clinical_mtl.model import describe_relatedness, relatedness_table

FAST = {"max_epochs": 12, "ensemble_size": 2, "patience": 5, "random_state": 0}
OPTIONS = [
    {"loss_weighting": "label_share"},
    {"loss_weighting": "dwa"},
    {"loss_weighting": "gradnorm"},
    {"loss_weighting": "pcgrad"},
    {"training": "alternate"},
    {"training": "alternate", "loss_weighting": "uncertainty"},
    {"head_weight_decay": {"cirrhosis": 0.5}},
    {"self_supervision": 0.5},
    {"head_hidden_layer_sizes": (8,)},
    {"head_hidden_layer_sizes": {"death": (8, 4)}},
    {"sharing": "soft"},
    {"sharing": "soft", "sharing_strength": 1.0, "head_hidden_layer_sizes": (4,)},
    {"early_stopping": "per_outcome"},
    {"early_stopping": "per_outcome", "sharing": "soft"},
]


@pytest.fixture(scope="module")
def pbc():
    return load_pbc()


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_every_option_fits_a_diagnosis_and_a_survival_outcome(pbc, options, tmp_path):
    X, Y = pbc
    model = MultiTaskMLP(**FAST, **options).fit(X, Y)
    proba = model.predict_proba(X)["cirrhosis"]
    curves = model.predict_survival_function(X, [365, 1826])["death"]
    assert np.isfinite(proba).all() and np.isfinite(curves).all()
    history = pd.DataFrame(model.history_)
    assert {"weight/cirrhosis", "weight/death"} <= set(history.columns)
    if options.get("sharing") != "soft":  # soft sharing shares no layer to measure on
        assert history["grad_cosine/cirrhosis/death"].notna().any()
    # A scikit-learn parameter that the pickle-free format keeps.
    assert clone(model).get_params() == model.get_params()
    save_model(model, tmp_path / "model")
    loaded = load_model(tmp_path / "model")
    assert {key: loaded.get_params()[key] for key in options} == options
    np.testing.assert_array_equal(loaded.predict_proba(X)["cirrhosis"], proba)


def test_dynamic_weights_change_per_epoch_and_are_recorded(pbc):
    X, Y = pbc
    model = MultiTaskMLP(**FAST, loss_weighting="dwa").fit(X, Y)
    weights = pd.DataFrame(model.history_).query("member == 0")[["weight/cirrhosis", "weight/death"]]
    assert (weights.iloc[:2] == 1.0).all().all()  # no ratio before the third epoch
    assert weights.iloc[2:].nunique().min() > 1
    np.testing.assert_allclose(weights.sum(axis=1), 2.0, rtol=1e-6)


def test_soft_sharing_gives_every_outcome_its_own_trunk_pulled_together(pbc):
    X, Y = pbc
    loose = MultiTaskMLP(**FAST, sharing="soft", sharing_strength=0.0).fit(X, Y)
    tied = MultiTaskMLP(**FAST, sharing="soft", sharing_strength=10.0).fit(X, Y)

    def distance(model):
        first = [head[0].weight.detach() for head in model.module_.members[0].heads]
        return float((first[0] - first[1]).norm())

    assert all(len(head) >= 3 for head in tied.module_.members[0].heads)  # (64,) per outcome, then its output
    assert distance(tied) < 0.5 * distance(loose)
    assert "grad_cosine/cirrhosis/death" not in pd.DataFrame(tied.history_)  # nothing is shared


def test_self_supervision_leaves_no_decoder_in_the_model(pbc):
    X, Y = pbc
    plain = MultiTaskMLP(**FAST, early_stopping=True).fit(X, Y)  # one trunk in both: the same layout
    supervised = MultiTaskMLP(**FAST, early_stopping=True, self_supervision=1.0).fit(X, Y)
    assert supervised.module_.state_dict().keys() == plain.module_.state_dict().keys()
    assert not np.array_equal(supervised.predict_proba(X)["cirrhosis"], plain.predict_proba(X)["cirrhosis"])


def test_the_relatedness_of_pbc_outcomes_is_read_in_words(pbc):
    X, Y = pbc
    model = MultiTaskMLP(**FAST).fit(X, Y)
    table = relatedness_table(model.history_)
    assert table[["outcome", "other"]].values.tolist() == [["cirrhosis", "death"]]
    assert -1 <= table["mean_cosine"].iloc[0] <= 1
    words = describe_relatedness(table)
    assert len(words) == 1 and words[0].startswith("cirrhosis and death ")


@pytest.mark.parametrize(("options", "message"), [
    ({"training": "alternate", "loss_weighting": "pcgrad"}, "has no gradients to balance"),
    ({"head_weight_decay": {"cirrhosis": 0.1, "stage": 0.1}}, r"names \['stage'\], which are not outcomes"),
    ({"head_weight_decay": {"cirrhosis": float("nan")}}, "must be finite"),
    ({"sharing": "soft", "loss_weighting": "pcgrad"}, "no shared layer"),
    ({"sharing": "soft", "self_supervision": 0.5}, "no shared layer"),
    ({"sharing": "soft", "hidden_layer_sizes": ()}, "needs hidden_layer_sizes"),
])
def test_bad_combinations_are_refused_with_the_reason(pbc, options, message):
    X, Y = pbc
    with pytest.raises(TaskSpecificationError, match=message):
        MultiTaskMLP(**FAST, **options).fit(X, Y)


def test_self_supervision_without_a_trunk_is_refused(pbc):
    X, Y = pbc
    with pytest.raises(ValueError, match="needs a shared trunk"):
        MultiTaskMLP(**FAST, hidden_layer_sizes=(), self_supervision=0.5).fit(X, Y)


def test_unknown_option_values_are_refused_by_parameter_validation(pbc):
    X, Y = pbc
    with pytest.raises(ValueError, match="training"):
        MultiTaskMLP(training="sometimes").fit(X, Y)
    with pytest.raises(ValueError, match="loss_weighting"):
        MultiTaskMLP(loss_weighting="gradsurgery").fit(X, Y)


def test_task_specific_layers_predict_and_explain_exactly(pbc):
    X, Y = pbc
    model = MultiTaskMLP(**FAST, head_hidden_layer_sizes={"death": (8, 4)}, early_stopping=True).fit(X, Y)
    heads = model.module_.members[0].heads  # on one shared trunk (per-outcome stopping may split it)
    assert isinstance(heads[0], torch.nn.Linear) and len(heads[1]) >= 5  # two hidden layers, then the output
    inputs = torch.from_numpy(np.ascontiguousarray(model.preprocessor_.transform(model.feature_frame(X))))
    fast = model.module_.predict_feature_major(inputs.T.contiguous())
    with torch.no_grad():
        plain = model.module_.eval()(inputs)
    for f, p in zip(fast, plain):
        torch.testing.assert_close(f, p, atol=1e-5, rtol=1e-5)
    explained = model.explain(X.head(40))
    curves = model.predict_survival_function(X.head(40), model.task_specs_[1].horizons)["death"]
    death = explained["death"]
    assert np.abs(death.base_values + death.values.sum(axis=1) - (1 - curves)).max() < 1e-4
    cirrhosis = explained["cirrhosis"]
    assert np.abs(cirrhosis.base_values + cirrhosis.values.sum(axis=1)
                  - model.predict_proba(X.head(40))["cirrhosis"][:, 1]).max() < 1e-4
    # A patient's prediction does not depend on who else is in the batch.
    np.testing.assert_array_equal(model.predict_proba(X.iloc[[7]])["cirrhosis"],
                                  model.predict_proba(X)["cirrhosis"][[7]])


def test_head_layers_for_an_unknown_outcome_are_refused(pbc):
    X, Y = pbc
    with pytest.raises(TaskSpecificationError, match=r"head_hidden_layer_sizes names \['stage'\]"):
        MultiTaskMLP(**FAST, head_hidden_layer_sizes={"stage": (4,)}).fit(X, Y)


def test_per_outcome_stopping_gives_each_outcome_its_best_epochs_trunk(pbc, tmp_path):
    """On PBC the diagnosis and death peak at different epochs: each outcome gets the trunk of its own
    best epoch (the soft-sharing layout), which explains exactly and survives the pickle-free format."""
    X, Y = pbc
    model = MultiTaskMLP(random_state=0, ensemble_size=2, early_stopping="per_outcome").fit(X, Y)
    history = pd.DataFrame(model.history_)
    peaks = history.groupby("member").agg(
        cirrhosis=("valid_loss/cirrhosis", "idxmin"), death=("valid_loss/death", "idxmin"))
    assert (peaks["cirrhosis"] != peaks["death"]).any()
    epochs = history.loc[peaks.to_numpy().ravel(), "epoch"].to_numpy().reshape(-1, 2)
    np.testing.assert_array_equal(model.outcome_best_epoch_, epochs)  # both watched: each its own best
    for member in model.module_.members:
        assert len(member.trunk) == 0
        hidden = [[layer.out_features for layer in head if isinstance(layer, torch.nn.Linear)][:-1]
                  for head in member.heads]
        assert hidden == [list(model.hidden_layer_sizes)] * 2
    explanation = model.explain(X.iloc[:20])["cirrhosis"]
    np.testing.assert_allclose(explanation.base_values + explanation.values.sum(axis=1),
                               model.predict_proba(X.iloc[:20])["cirrhosis"][:, 1], atol=1e-4, rtol=0)
    save_model(model, tmp_path / "model")
    loaded = load_model(tmp_path / "model")
    np.testing.assert_array_equal(loaded.predict_proba(X)["cirrhosis"], model.predict_proba(X)["cirrhosis"])
    np.testing.assert_array_equal(loaded.outcome_best_epoch_, model.outcome_best_epoch_)
    state, weights = model.fitted_state()
    del state["fitted"]["outcome_best_epoch"]  # what a model saved before per-outcome stopping holds
    older = MultiTaskMLP.from_fitted_state(model.get_params(), state, weights)
    assert older.outcome_best_epoch_ is None
    np.testing.assert_array_equal(older.predict_proba(X)["cirrhosis"], model.predict_proba(X)["cirrhosis"])
    np.testing.assert_array_equal(loaded.predict_survival_function(X, [365])["death"],
                                  model.predict_survival_function(X, [365])["death"])


def test_per_outcome_stopping_leaves_a_scarcely_labelled_outcome_the_joint_best_weights(pbc):
    """With a fifth of the cirrhosis labels (about 12 per member's validation rows, under
    MIN_VALIDATION_LABELS) the diagnosis keeps the joint objective's best weights, exactly as with joint
    early stopping, while death, watched alone, keeps its own best epoch's trunk."""
    X, Y = pbc
    Y = Y.copy()
    Y.loc[np.random.default_rng(0).random(len(Y)) > 0.2, "cirrhosis"] = np.nan
    joint = MultiTaskMLP(random_state=0, ensemble_size=2, early_stopping=True).fit(X, Y)
    own = MultiTaskMLP(random_state=0, ensemble_size=2, early_stopping="per_outcome").fit(X, Y)
    np.testing.assert_array_equal(own.best_epoch_, joint.best_epoch_)
    history = pd.DataFrame(own.history_)
    death_best = history.loc[history.groupby("member")["valid_loss/death"].idxmin(), "epoch"].to_numpy()
    assert (death_best != own.best_epoch_).any()  # the case this is about: death peaks at another epoch
    np.testing.assert_array_equal(own.outcome_best_epoch_, np.column_stack([own.best_epoch_, death_best]))
    np.testing.assert_array_equal(joint.outcome_best_epoch_, np.column_stack([joint.best_epoch_] * 2))
    assert all(len(member.trunk) == 0 for member in own.module_.members)
    np.testing.assert_allclose(own.predict_proba(X)["cirrhosis"], joint.predict_proba(X)["cirrhosis"],
                               rtol=0, atol=1e-6)
    assert not np.allclose(own.predict_survival_function(X, [365])["death"],
                           joint.predict_survival_function(X, [365])["death"])


def test_per_outcome_stopping_of_a_single_outcome_is_early_stopping():
    X, Y = load_pbc()
    labels = Y[["cirrhosis"]]
    joint = MultiTaskMLP(random_state=0, ensemble_size=2, early_stopping=True).fit(X, labels)
    own = MultiTaskMLP(random_state=0, ensemble_size=2, early_stopping="per_outcome").fit(X, labels)
    np.testing.assert_array_equal(own.n_iter_, joint.n_iter_)
    np.testing.assert_array_equal(own.predict_proba(X)["cirrhosis"], joint.predict_proba(X)["cirrhosis"])

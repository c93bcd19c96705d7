"""SHAP explanations: exact sums, original features, faithful rankings, shap's own plots."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import shap  # noqa: E402
import torch  # noqa: E402
from scipy.special import logit  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from clinical_mtl import MultiTaskMLP  # noqa: E402
from clinical_mtl.data.persistence import load_model, save_model  # noqa: E402
from clinical_mtl.datasets import load_pbc, make_synthetic_cohort  # noqa: E402
from clinical_mtl.evaluation.figures import save_beeswarm_plots
from clinical_mtl.model.explanation import (
    MIN_CLUSTER_SIZE,
    Background,
    _deeplift,
    global_importance,
    summarise_background,
)
from clinical_mtl.model.feature_codec import RawFeatureCodec
from clinical_mtl.model.outputs import top_contributions  # noqa: E402


@pytest.fixture(scope="module")
def pbc_model():
    X, Y = load_pbc()
    return MultiTaskMLP(random_state=0).fit(X, Y), X, Y


@pytest.fixture(scope="module")
def synthetic_model():
    X, Y = make_synthetic_cohort(2000, random_state=1)
    return MultiTaskMLP(random_state=0).fit(X, Y), X, Y


def _explained_output(model, X, name):
    if model.tasks_[name] == "survival":  # the probability of the event by each horizon
        spec = next(spec for spec in model.task_specs_ if spec.name == name)
        return 1 - model.predict_survival_function(X, spec.horizons)[name]
    proba = model.predict_proba(X)
    if name not in proba:
        return model.predict(X)[name].to_numpy()
    return proba[name][:, 1] if proba[name].shape[1] == 2 else proba[name]


@pytest.mark.parametrize("fixture", ["pbc_model", "synthetic_model"])
def test_base_plus_contributions_equals_the_output(fixture, request):
    model, X, _ = request.getfixturevalue(fixture)
    explanations = model.explain(X)
    assert set(explanations) == set(model.tasks_)
    for name, explanation in explanations.items():
        total = explanation.base_values + explanation.values.sum(axis=1)
        np.testing.assert_allclose(total, _explained_output(model, X, name), atol=1e-4, rtol=0)
        assert explanation.base_values.shape[0] == len(X)  # one base value per row


def test_log_odds_explanations_add_up_to_log_odds(synthetic_model):
    model, X, _ = synthetic_model
    explanations = model.explain(X.head(300), outcomes=["diagnosis", "subtype"], output="log_odds")
    proba = model.predict_proba(X.head(300))
    for name, explanation in explanations.items():
        total = explanation.base_values + explanation.values.sum(axis=1)
        expected = logit(proba[name][:, 1]) if name == "diagnosis" else logit(proba[name])
        np.testing.assert_allclose(total, expected, atol=1e-4, rtol=0)


def test_explanations_speak_of_the_original_columns(pbc_model):
    model, X, _ = pbc_model
    patients = X.iloc[[0, 320, 200]]  # patient 321 took no part in the trial: trt and labs missing
    explanation = model.explain(patients)["cirrhosis"]
    assert explanation.feature_names == list(X.columns)
    assert explanation.values.shape == (3, 16)
    assert explanation.output_names == "cirrhosis=1"
    trt = list(X.columns).index("trt")
    sex = list(X.columns).index("sex")
    assert explanation.display_data[0, trt] == "D-penicillamine"
    assert explanation.display_data[1, trt] is None
    assert explanation.display_data[1, sex] in ("f", "m")
    assert explanation.data[0, list(X.columns).index("bili")] == X.iloc[0]["bili"]
    assert explanation.display_data[0, list(X.columns).index("ascites")] is True


def test_multiclass_has_one_set_per_class(synthetic_model):
    model, X, _ = synthetic_model
    explanation = model.explain(X.head(5), outcomes=["subtype"])["subtype"]
    assert explanation.values.shape == (5, X.shape[1], 3)
    assert list(explanation.output_names) == ["subtype=A", "subtype=B", "subtype=C"]
    # Probability attributions of the classes balance out: they sum to 0 across classes.
    np.testing.assert_allclose(explanation.values.sum(axis=2), 0.0, atol=1e-5)


def test_grouping_sums_one_hot_and_indicator_columns_exactly():
    """For a linear head, DeepLIFT is w * (x - r): check the grouped values by hand."""
    rng = np.random.default_rng(0)
    X = pd.DataFrame({
        "lab": np.where(rng.random(200) < 0.2, np.nan, rng.normal(5, 1, 200)),
        "arm": pd.Categorical(rng.choice(["a", "b", "c"], 200)),
        "age": rng.normal(60, 10, 200),
    })
    y = pd.DataFrame({"value": X["age"] * 0.1 + rng.normal(size=200)})
    model = MultiTaskMLP(hidden_layer_sizes=(), ensemble_size=1, max_epochs=20, random_state=0).fit(X, y)
    explanation = model.explain(X.head(4))["value"]
    inputs = model.preprocessor_.transform(X.head(4))
    head = model.module_.members[0].heads[0]
    weights = head.weight.detach().numpy()[0]
    background = model.explanation_background_
    reference = background.weights @ background.points
    scale = model.task_specs_[0].target_scale
    for feature, columns in model.preprocessor_.feature_groups_.items():
        expected = scale * (inputs[:, columns] - reference[columns]) @ weights[columns]
        np.testing.assert_allclose(explanation[:, feature].values, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.filterwarnings("ignore:__array_wrap__ must accept context:DeprecationWarning")
def test_deeplift_matches_shap_deep_explainer(pbc_model):
    """The batched rescale rule computes what shap.DeepExplainer computes, per network and head."""
    model, X, _ = pbc_model
    member = model.module_.members[0].eval()
    inputs = torch.from_numpy(model.preprocessor_.transform(X.head(8)))
    points = torch.from_numpy(model.explanation_background_.points)

    trunk = [layer for layer in member.trunk if not isinstance(layer, torch.nn.Dropout)]
    ours, _, _ = _deeplift(member, inputs, points)
    for index in range(2):
        head = torch.nn.Sequential(*trunk, member.heads[index])  # one network, one output
        reference = shap.DeepExplainer(head, points).shap_values(inputs, check_additivity=True)
        np.testing.assert_allclose(ours[index].mean(dim=1)[:, 0].numpy(), reference[..., 0], atol=1e-5)


def test_agrees_with_a_model_agnostic_reference(pbc_model):
    """Per patient, our feature ranking and PermutationExplainer's over the whole pipeline
    (raw columns in) agree: mean Spearman >= 0.85 and top-3 overlap >= 0.75."""
    model, X, _ = pbc_model
    encoder = RawFeatureCodec(model)
    rng = np.random.default_rng(0)
    background = encoder.encode(X.iloc[rng.choice(len(X), 100, replace=False)])
    patients = X.iloc[rng.choice(len(X), 20, replace=False)]
    explained = model.explain(patients)
    death = next(spec for spec in model.task_specs_ if spec.name == "death")
    horizon = death.horizons[1]  # the middle one, as reports and top contributions show
    ours = {"cirrhosis": explained["cirrhosis"].values, "death": explained["death"].values[:, :, 1]}
    outputs = {
        "cirrhosis": lambda codes: model.predict_proba(encoder.decode(codes))["cirrhosis"][:, 1],
        "death": lambda codes: 1 - model.predict_survival_function(encoder.decode(codes), [horizon])["death"][:, 0],
    }
    # Permutations of the reference: one (33 evaluations) ranks the binary head's contributions well; the
    # survival head's are smaller and closer together, and one permutation ranks them little better than
    # its own noise (mean Spearman 0.78 at 33 evaluations, 0.87 at 1,000, 0.86 at 2,000).
    evaluations = {"cirrhosis": 33, "death": 1000}
    for name, function in outputs.items():
        masker = shap.maskers.Independent(background, max_samples=100)
        reference = shap.PermutationExplainer(function, masker, seed=0)(
            encoder.encode(patients), max_evals=evaluations[name], silent=True)
        rho = [spearmanr(np.abs(a), np.abs(b))[0] for a, b in zip(ours[name], reference.values)]
        top3 = [len(set(np.argsort(-np.abs(a))[:3]) & set(np.argsort(-np.abs(b))[:3])) / 3
                for a, b in zip(ours[name], reference.values)]
        assert np.mean(rho) >= 0.85, (name, np.mean(rho))
        assert np.mean(top3) >= 0.75, (name, np.mean(top3))


def test_known_drivers_come_first(synthetic_model):
    from clinical_mtl.datasets._synthetic import DRIVERS

    model, X, _ = synthetic_model
    importance = global_importance(model.explain(X.head(1000)))
    per_outcome = {
        "diagnosis": importance["diagnosis"],
        "subtype": importance[["subtype=A", "subtype=B", "subtype=C"]].sum(axis=1),
        "prognosis": importance["prognosis"],
    }
    for outcome, drivers in DRIVERS.items():
        top = per_outcome[outcome].sort_values(ascending=False).index[: len(drivers)]
        assert set(top) == set(drivers), (outcome, list(top))


def test_shap_plots_draw_from_the_explanations(synthetic_model, tmp_path):
    model, X, _ = synthetic_model
    explanations = model.explain(X.head(200))
    for draw in (
        lambda: shap.plots.waterfall(explanations["diagnosis"][0], show=False),
        lambda: shap.plots.waterfall(explanations["subtype"][0, :, 2], show=False),
        lambda: shap.plots.bar(explanations["prognosis"], show=False),
        lambda: shap.plots.beeswarm(explanations["diagnosis"], show=False),
    ):
        plt.close("all")
        draw()
        figure = plt.gcf()
        assert figure.axes and any(axis.has_data() for axis in figure.axes)
    plt.close("all")
    written = save_beeswarm_plots(explanations, tmp_path)
    assert [path.name for path in written] == [
        "beeswarm_diagnosis=1.png", "beeswarm_subtype=A.png", "beeswarm_subtype=B.png",
        "beeswarm_subtype=C.png", "beeswarm_prognosis.png",
    ]
    assert all(path.stat().st_size > 10_000 for path in written)


def test_background_is_a_summary_stored_with_the_model(pbc_model, tmp_path):
    model, X, _ = pbc_model
    background = model.explanation_background_
    assert 1 < len(background.points) <= 20
    assert background.weights.sum() == pytest.approx(1.0)
    assert (background.weights * len(X) >= MIN_CLUSTER_SIZE - 1e-9).all()  # no centre from < 5 patients
    inputs = model.preprocessor_.transform(X)
    distances = ((inputs[:, None, :] - background.points[None]) ** 2).sum(axis=2)
    assert distances.min() > 1e-6  # no background point is a patient's row
    loaded = load_model(save_model(model, tmp_path))
    np.testing.assert_array_equal(loaded.explain(X.head(10))["cirrhosis"].values,
                                  model.explain(X.head(10))["cirrhosis"].values)


def test_summarise_background_folds_small_clusters():
    rng = np.random.default_rng(0)
    inputs = np.vstack([rng.normal(0, 1, (200, 3)), [[50.0, 50.0, 50.0]]]).astype(np.float32)
    background = summarise_background(inputs, seed=0)
    sizes = np.round(background.weights * len(inputs))
    assert sizes.min() >= MIN_CLUSTER_SIZE
    assert isinstance(Background.from_dict(background.to_dict()), Background)


def test_top_contributions(pbc_model):
    model, X, _ = pbc_model
    table = top_contributions(model, X.head(5), top_k=3)
    assert table.index.equals(X.head(5).index)
    explanation = model.explain(X.head(5))["cirrhosis"]
    first = explanation.values[0]
    assert table.loc[X.index[0], "cirrhosis_top1_feature"] == X.columns[np.argmax(np.abs(first))]
    assert table.loc[X.index[0], "cirrhosis_top1_contribution"] == pytest.approx(first[np.argmax(np.abs(first))])
    assert list(table.columns[:2]) == ["cirrhosis_top1_feature", "cirrhosis_top1_contribution"]
    magnitudes = table[[f"cirrhosis_top{j}_contribution" for j in (1, 2, 3)]].abs().to_numpy()
    assert (np.diff(magnitudes, axis=1) <= 0).all()


def test_bad_arguments(pbc_model):
    model, X, _ = pbc_model
    with pytest.raises(ValueError, match=r"outcomes \['relapse'\] are not outcomes"):
        model.explain(X.head(2), outcomes=["relapse"])
    with pytest.raises(ValueError, match="output must be"):
        model.explain(X.head(2), output="odds")

"""Recalibrated probabilities and split-conformal intervals on the synthetic cohort, whose
true probabilities are known."""

import copy

import numpy as np
import pandas as pd
import pytest
from scipy.special import logit

from clinical_mtl import MultiTaskMLP
from clinical_mtl.data.persistence import load_model, save_model
from clinical_mtl.datasets import make_synthetic_cohort
from clinical_mtl.model.calibration import IsotonicCalibration, TemperatureScaling
from clinical_mtl.model.labels import labelled_targets
from clinical_mtl.model.metrics import calibration_target, expected_calibration_error
from clinical_mtl.model.outputs import flat_predictions, output_columns

# Few epochs: the networks stop short of fitting the outcomes, so their probabilities are
# too modest (under-confident), the miscalibration that recalibration has to repair.
SHORT = dict(ensemble_size=3, batch_size=256, learning_rate=1e-3, hidden_layer_sizes=(32,), max_epochs=10,
             random_state=0)


@pytest.fixture(scope="module")
def cohort():
    X, Y = make_synthetic_cohort(3000, random_state=10)
    X_test, Y_test, truth = make_synthetic_cohort(20000, random_state=20, label_missing_rate=0.0, return_truth=True)
    return X, Y, X_test, Y_test, truth


@pytest.fixture(scope="module")
def fitted(cohort):
    X, Y, *_ = cohort
    return {method: MultiTaskMLP(calibration=method, **SHORT).fit(X, Y) for method in ("temperature", "isotonic")}


def _uncalibrated(model):
    raw = copy.copy(model)
    raw.calibrators_ = {}
    return raw


def _gap_to_truth(proba, true_proba, n_bins=10):
    """Binned calibration error measured against the true probabilities instead of the
    drawn labels: sum over bins of |predicted - true risk|, weighted by the bins' sizes."""
    predicted, _ = calibration_target(np.zeros(len(proba), dtype=int), proba)
    if proba.shape[1] == 2:
        true_risk = true_proba[:, 1]
    else:
        true_risk = true_proba[np.arange(len(proba)), proba.argmax(axis=1)]
    bins = np.minimum((predicted * n_bins).astype(int), n_bins - 1)
    gaps = np.bincount(bins, predicted - true_risk, n_bins)
    return float(np.abs(gaps).sum() / len(proba))


@pytest.mark.parametrize("method", ["temperature", "isotonic"])
def test_recalibration_lowers_calibration_error_on_new_patients(fitted, cohort, method):
    model = fitted[method]
    *_, X_test, Y_test, truth = cohort
    kind = {"temperature": TemperatureScaling, "isotonic": IsotonicCalibration}[method]
    assert set(model.calibrators_) == {"diagnosis", "subtype"}
    assert all(isinstance(calibrator, kind) for calibrator in model.calibrators_.values())
    after, before = model.predict_proba(X_test), _uncalibrated(model).predict_proba(X_test)
    for name in ("diagnosis", "subtype"):
        _, y = labelled_targets(Y_test, model.task_specs_[list(model.tasks_).index(name)])
        ece_before, ece_after = (expected_calibration_error(y, p[name]) for p in (before, after))
        assert ece_after < 0.6 * ece_before, (name, ece_before, ece_after)
        assert ece_after < 0.05, (name, ece_after)
        gap_before, gap_after = (_gap_to_truth(p[name], truth.probabilities[name]) for p in (before, after))
        assert gap_after < 0.6 * gap_before, (name, gap_before, gap_after)


def test_under_confident_networks_get_a_temperature_below_1(fitted):
    temperatures = {name: c.temperature for name, c in fitted["temperature"].calibrators_.items()}
    assert all(t < 0.9 for t in temperatures.values()), temperatures


def test_predictions_classes_and_scores_use_the_recalibrated_probabilities(fitted, cohort):
    model = fitted["isotonic"]  # isotonic maps can change the most probable class
    *_, X_test, Y_test, _ = cohort
    proba = model.predict_proba(X_test.head(500))
    predicted = model.predict(X_test.head(500))
    for name in ("diagnosis", "subtype"):
        np.testing.assert_allclose(proba[name].sum(axis=1), 1.0)
        assert (predicted[name].to_numpy() == model.classes_[name][proba[name].argmax(axis=1)]).all()
    flat = flat_predictions(model, X_test.head(500))
    np.testing.assert_array_equal(flat["subtype_proba_B"].to_numpy(), proba["subtype"][:, 1])
    assert model.score(X_test, Y_test) > _uncalibrated(model).score(X_test, Y_test)


@pytest.mark.parametrize("method", ["temperature", "isotonic"])
def test_explanations_add_up_to_the_recalibrated_probabilities(fitted, cohort, method):
    model = fitted[method]
    patients = cohort[2].head(200)
    explanations = model.explain(patients, outcomes=["diagnosis", "subtype"])
    proba = model.predict_proba(patients)
    for name, expected in (("diagnosis", proba["diagnosis"][:, 1]), ("subtype", proba["subtype"])):
        explanation = explanations[name]
        total = explanation.base_values + explanation.values.sum(axis=1)
        np.testing.assert_allclose(total, expected, atol=1e-4, rtol=0)
    np.testing.assert_allclose(explanations["subtype"].values.sum(axis=2), 0.0, atol=1e-6)
    if method == "temperature":  # finite probabilities: the log-odds add up too
        log_odds = model.explain(patients, outcomes=["diagnosis"], output="log_odds")["diagnosis"]
        total = log_odds.base_values + log_odds.values.sum(axis=1)
        np.testing.assert_allclose(total, logit(proba["diagnosis"][:, 1]), atol=1e-3, rtol=0)


def test_the_90_percent_interval_covers_90_percent_of_new_patients(fitted, cohort):
    model = fitted["temperature"]
    *_, X_test, Y_test, _ = cohort
    intervals = model.predict_interval(X_test, coverage=0.9)
    y = Y_test["prognosis"].to_numpy()
    covered = (intervals["prognosis_lower"] <= y) & (y <= intervals["prognosis_upper"])
    assert 0.87 <= covered.mean() <= 0.93, covered.mean()
    wide = model.predict_interval(X_test, coverage=0.5)
    covered = (wide["prognosis_lower"] <= y) & (y <= wide["prognosis_upper"])
    assert 0.46 <= covered.mean() <= 0.54, covered.mean()


def test_predict_interval_brackets_the_prediction(fitted, cohort):
    model = fitted["temperature"]
    patients = cohort[2].iloc[[5, 3, 8]]
    intervals = model.predict_interval(patients)
    assert intervals.columns.tolist() == ["prognosis_lower", "prognosis_upper"]
    pd.testing.assert_index_equal(intervals.index, patients.index)
    predicted = model.predict(patients)["prognosis"]
    half_width = (intervals["prognosis_upper"] - intervals["prognosis_lower"]) / 2
    np.testing.assert_allclose(intervals["prognosis_lower"] + half_width, predicted)
    # Normalised (the default): half the labelled held-out rows fit the scale, the other half are scored.
    scores, n_labelled = model.conformal_scores_["prognosis"], model.validation_metrics_.loc["prognosis", "n_labelled"]
    assert np.all(np.diff(scores) >= 0) and len(scores) == n_labelled - n_labelled // 2
    scale = model.interval_scales_["prognosis"].scale(model.transform_inputs(patients)[1])
    np.testing.assert_allclose(half_width, scores[int(np.ceil((len(scores) + 1) * 0.9)) - 1] * scale)
    assert (model.predict_interval(patients, 0.95)["prognosis_upper"] > intervals["prognosis_upper"]).all()
    flat = flat_predictions(model, patients)
    pd.testing.assert_frame_equal(flat[["prognosis_lower", "prognosis_upper"]], intervals)
    assert flat.columns.tolist() == [column.name for column in output_columns(model)]
    narrow = flat_predictions(model, patients, coverage=0.5)
    assert (narrow["prognosis_upper"] < flat["prognosis_upper"]).all()


def _heteroscedastic(n, seed):
    """The synthetic cohort with prognosis noise of standard deviation 0.5 exp(0.6 z), z the
    standardised log CRP (0 where CRP is missing): each patient's true noise is known."""
    X, Y, truth = make_synthetic_cohort(n, random_state=seed, return_truth=True)
    log_crp = np.log(X["crp"].to_numpy(float))
    sd = 0.5 * np.exp(0.6 * np.nan_to_num((log_crp - np.nanmean(log_crp)) / np.nanstd(log_crp)))
    noisy = truth.expected_values["prognosis"] + sd * np.random.default_rng(seed).standard_normal(n)
    Y["prognosis"] = np.where(Y["prognosis"].isna(), np.nan, noisy)
    return X, Y, sd


@pytest.fixture(scope="module")
def heteroscedastic():
    X, Y, _ = _heteroscedastic(3000, 30)
    X_test, Y_test, sd = _heteroscedastic(20000, 40)
    models = {method: MultiTaskMLP(interval_method=method, **SHORT).fit(X, Y) for method in ("normalized", "absolute")}
    return models, X_test, Y_test["prognosis"].to_numpy(), sd


def test_normalized_intervals_cover_90_percent_and_widen_where_the_error_is_larger(heteroscedastic):
    models, X_test, y, sd = heteroscedastic
    labelled = ~np.isnan(y)
    covered, widths, errors = {}, {}, {}
    for method, model in models.items():
        intervals = model.predict_interval(X_test[labelled], coverage=0.9)
        lower, upper = intervals["prognosis_lower"].to_numpy(), intervals["prognosis_upper"].to_numpy()
        covered[method] = (lower <= y[labelled]) & (y[labelled] <= upper)
        widths[method] = upper - lower
        errors[method] = np.abs(y[labelled] - model.predict(X_test[labelled])["prognosis"].to_numpy())
    np.testing.assert_array_equal(errors["normalized"], errors["absolute"])  # same networks, same predictions
    for method in models:
        assert 0.87 <= covered[method].mean() <= 0.93, (method, covered[method].mean())
    assert np.ptp(widths["absolute"]) < 1e-9 * widths["absolute"].mean()
    assert np.percentile(widths["normalized"], 90) > 1.5 * np.percentile(widths["normalized"], 10)
    assert np.corrcoef(widths["normalized"], errors["normalized"])[0, 1] > 0.25
    assert np.corrcoef(widths["normalized"], sd[labelled])[0, 1] > 0.6
    noisiest = sd[labelled] >= np.quantile(sd[labelled], 0.8)  # one width falls short where the noise is
    assert covered["absolute"][noisiest].mean() < 0.8
    assert covered["normalized"][noisiest].mean() > 0.85


def test_absolute_intervals_have_one_width_from_every_held_out_residual(heteroscedastic):
    model = heteroscedastic[0]["absolute"]
    scores, n_labelled = model.conformal_scores_["prognosis"], model.validation_metrics_.loc["prognosis", "n_labelled"]
    assert model.interval_scales_ == {} and len(scores) == n_labelled
    half_widths = model.interval_half_widths(0.9)
    assert half_widths == {"prognosis": scores[int(np.ceil((len(scores) + 1) * 0.9)) - 1]}


def test_a_model_saved_before_interval_method_keeps_one_width(heteroscedastic):
    model, X_test = heteroscedastic[0]["absolute"], heteroscedastic[1].head(50)
    state, weights = model.fitted_state()
    del state["fitted"]["interval_scales"]  # what older versions wrote
    params = {name: value for name, value in model.get_params().items() if name != "interval_method"}
    restored = MultiTaskMLP.from_fitted_state(params, state, weights)
    assert restored.interval_scales_ == {}
    pd.testing.assert_frame_equal(restored.predict_interval(X_test), model.predict_interval(X_test))
    with pytest.raises(ValueError, match="differ from patient to patient"):
        heteroscedastic[0]["normalized"].interval_half_widths(0.9)


def test_saved_model_recalibrates_and_predicts_intervals_exactly(fitted, cohort, tmp_path):
    patients = cohort[2].head(300)
    for method, model in fitted.items():
        loaded = load_model(save_model(model, tmp_path / method))
        assert loaded.get_params() == model.get_params()
        for name, proba in model.predict_proba(patients).items():
            np.testing.assert_array_equal(loaded.predict_proba(patients)[name], proba)
        pd.testing.assert_frame_equal(loaded.predict_interval(patients, 0.8), model.predict_interval(patients, 0.8))
        np.testing.assert_array_equal(loaded.conformal_scores_["prognosis"], model.conformal_scores_["prognosis"])
        assert loaded.interval_scales_["prognosis"].to_dict() == model.interval_scales_["prognosis"].to_dict()


@pytest.fixture(scope="module")
def small():
    return make_synthetic_cohort(300, random_state=3)


@pytest.fixture(scope="module")
def tiny(small):
    X, Y = small
    return MultiTaskMLP(ensemble_size=1, max_epochs=2, random_state=0).fit(X, Y)


@pytest.mark.parametrize("validation_fraction", [0.15, 0.5])  # 0.5: enough held-out rows to normalise
def test_same_seed_same_recalibration_and_intervals(small, validation_fraction):
    X, Y = small
    params = dict(ensemble_size=2, max_epochs=3, batch_size=64, random_state=7, validation_fraction=validation_fraction)
    first, second = MultiTaskMLP(**params).fit(X, Y), MultiTaskMLP(**params).fit(X, Y)
    assert first.calibrators_ == second.calibrators_
    assert bool(first.interval_scales_) == (validation_fraction == 0.5)
    assert {name: scale.to_dict() for name, scale in first.interval_scales_.items()} == {
        name: scale.to_dict() for name, scale in second.interval_scales_.items()}
    np.testing.assert_array_equal(first.conformal_scores_["prognosis"], second.conformal_scores_["prognosis"])
    pd.testing.assert_frame_equal(first.predict_interval(X), second.predict_interval(X))


def test_without_early_stopping_nothing_is_recalibrated_and_intervals_are_refused(small):
    X, Y = small
    params = dict(ensemble_size=1, max_epochs=3, batch_size=64, random_state=0)
    model = MultiTaskMLP(early_stopping=False, **params).fit(X, Y)
    assert model.calibrators_ == {} and model.conformal_scores_ == {} and model.validation_metrics_ is None
    with pytest.raises(ValueError, match="early_stopping=False"):
        model.predict_interval(X)
    assert "prognosis_lower" not in flat_predictions(model, X.head(2))
    assert [column.name for column in output_columns(model)] == flat_predictions(model, X.head(2)).columns.tolist()

    off = MultiTaskMLP(calibration=None, **params).fit(X, Y)
    assert off.calibrators_ == {}
    assert set(off.predict_interval(X.head(2)).columns) == {"prognosis_lower", "prognosis_upper"}


@pytest.mark.parametrize("coverage", [0, 1, 1.2, -0.5, "90%", None])
def test_predict_interval_refuses_a_coverage_outside_0_1(small, tiny, coverage):
    with pytest.raises(ValueError, match="coverage must be a number strictly between 0 and 1"):
        tiny.predict_interval(small[0], coverage=coverage)
    with pytest.raises(ValueError, match="coverage must be a number strictly between 0 and 1"):
        flat_predictions(tiny, small[0], coverage=coverage)


def test_predict_interval_needs_a_regression_outcome(small):
    X, Y = small
    model = MultiTaskMLP(ensemble_size=1, max_epochs=2, random_state=0).fit(X, Y[["diagnosis"]])
    with pytest.raises(ValueError, match="needs a regression outcome"):
        model.predict_interval(X)


def test_calibration_parameter_is_validated(small):
    X, Y = small
    with pytest.raises(ValueError, match="calibration"):
        MultiTaskMLP(calibration="platt", max_epochs=1).fit(X, Y)

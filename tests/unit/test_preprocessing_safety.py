"""Issue 12: nothing lost (a valid value never stops predict), nothing overwritten (no prediction
from a number the network cannot represent), nothing leaked (no patient's value in a model)."""

import json
import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from clinical_mtl import MultiTaskMLP
from clinical_mtl.data.persistence import save_model
from clinical_mtl.data.schema import FeatureSpec, schema_for_model, schema_from_model
from clinical_mtl.datasets import make_synthetic_cohort
from clinical_mtl.exceptions import InputDataError
from clinical_mtl.model.outputs import flat_predictions
from clinical_mtl.model.preprocessing import ClinicalPreprocessor, NumericEncoding
from clinical_mtl.reporting.content import _imputed_text
from clinical_mtl.tracking import synthetic_input_example

SMALL = dict(hidden_layer_sizes=(8,), max_epochs=20, ensemble_size=1, random_state=0)


@pytest.fixture(scope="module")
def nodes_model():
    """A model whose ``nodes`` count is positive in every training row, so auto-transformed."""
    rng = np.random.default_rng(0)
    n = 200
    X = pd.DataFrame({
        "nodes": rng.poisson(np.exp(rng.normal(1.0, 0.8, n))) + 1.0,  # counts, >= 1 in training
        "albumin": rng.normal(3.5, 0.4, n),
    }, index=pd.Index([f"p{i}" for i in range(n)], name="patient"))
    Y = pd.DataFrame({"event": (X["nodes"] + rng.normal(0, 2, n) > 4).astype(int),
                      "score": X["albumin"] + rng.normal(0, 0.2, n)}, index=X.index)
    model = MultiTaskMLP(**SMALL).fit(X, Y)
    return model, X


# -- A: a legitimate value never stops predict ----------------------------------------------------

def test_a_zero_in_a_column_positive_in_training_is_predicted(nodes_model):
    model, X = nodes_model
    assert X["nodes"].min() >= 1 and model.preprocessor_.log_columns_ == ["nodes"]
    new = pd.DataFrame({"nodes": [0.0, -1.0, 3.0, np.nan], "albumin": 3.5}, index=["a", "b", "c", "d"])
    predicted = model.predict(new)
    assert predicted.index.tolist() == ["a", "b", "c", "d"]
    assert np.isfinite(predicted["score"]).all()
    inputs = model.preprocessor_.transform(new)[:, model.preprocessor_.feature_groups_["nodes"][0]]
    assert np.isfinite(inputs).all() and inputs[1] < inputs[0] < inputs[2]  # monotone through 0
    # Batch scoring does not require it positive either: a 0 passes the model's schema.
    schema = schema_for_model(schema_from_model(model, "patient"), model)
    assert not any(feature.positive for feature in schema.features)
    result = schema.validate(new.reset_index(names="patient"))
    assert len(result.valid) == 4 and len(result.rejected) == 0


def test_the_transform_is_asinh_of_x_over_a_low_quantile(nodes_model):
    model, X = nodes_model
    encoding = model.preprocessor_.encodings_[0]
    expected_s = float(f"{np.percentile(X['nodes'], 5):.3g}")
    assert encoding.log_scale == expected_s
    assert model.preprocessor_.get_feature_names_out()[0] == f"asinh(nodes/{expected_s:g})"
    values = np.array([0.0, 2.0, 40.0])
    np.testing.assert_allclose(encoding.transformed(values), np.arcsinh(values / expected_s))


def test_old_states_keep_the_plain_log():
    """A preprocessor stored before the asinh transform: ``"log": true`` and no scale."""
    state = {"log_transform": "auto", "feature_kinds": {"bili": "numeric"}, "encodings": [
        {"type": "numeric", "name": "bili", "log": True, "median": math.log(1.4), "mean": 0.2, "scale": 0.8,
         "indicator_mean": None, "indicator_scale": None}]}
    pre = ClinicalPreprocessor.from_dict(json.loads(json.dumps(state)))
    assert pre.get_feature_names_out().tolist() == ["log(bili)"] and pre.log_columns_ == ["bili"]
    out = pre.transform(pd.DataFrame({"bili": [1.0, 5.0, np.nan]}))
    np.testing.assert_allclose(out[:, 0], (np.log([1.0, 5.0, 1.4]) - 0.2) / 0.8, rtol=1e-6)
    with pytest.raises(InputDataError, match=r"Column 'bili' is log-transformed.*rows 'x', 'z'"):
        pre.transform(pd.DataFrame({"bili": [0.0, 1.0, -2.0]}, index=["x", "y", "z"]))
    assert pre.encodings_[0].to_units(pre.encodings_[0].median) == pytest.approx(1.4, rel=1e-12)

    class OldModel:
        preprocessor_ = pre
        tasks_ = {"score": "regression"}

    schema = schema_for_model(schema_from_model(OldModel(), "id"), OldModel())
    assert schema.features[0].positive and schema.features[0].describe_rule() == "a positive number"
    assert ClinicalPreprocessor.from_dict(pre.to_dict()).encodings_ == pre.encodings_


def test_one_inverse_gives_the_median_in_units(nodes_model):
    model, X = nodes_model
    for encoding in model.preprocessor_.encodings_:
        expected = float(f"{np.median(X[encoding.name]):.3g}")  # the median, to 3 significant digits
        assert encoding.to_units(encoding.median) == pytest.approx(expected, rel=1e-12)
    example = synthetic_input_example(model)
    assert example.loc[0, "nodes"] == float(f"{np.median(X['nodes']):.3g}")
    text = _imputed_text(model.preprocessor_.encodings_[0], FeatureSpec("nodes", "numeric", unit="count"))
    assert text == f"missing: imputed with the training median, {float(f'{np.median(X.nodes):.3g}'):g} count"


# -- B: no prediction from a number the network cannot represent ----------------------------------

def test_a_value_beyond_float32_is_an_error_naming_column_and_rows(nodes_model):
    model, _ = nodes_model
    new = pd.DataFrame({"nodes": 3.0, "albumin": [3.5, 1e300, 3.1, -1e20]}, index=["a", "b", "c", "d"])
    with pytest.raises(InputDataError) as error:
        model.predict(new)
    message = str(error.value)
    assert "'albumin'" in message and "rows 'b', 'd'" in message
    assert "1e+300" not in message and "1e+20" not in message and "3.5" not in message
    # Far, but representable: within 1e15 training standard deviations.
    encoding = model.preprocessor_.encodings_[1]
    far = encoding.mean + 1e14 * encoding.scale
    assert np.isfinite(model.predict(new.assign(albumin=far))["score"]).all()
    # The asinh column takes any finite number.
    assert np.isfinite(model.predict(new.assign(albumin=3.5, nodes=[1e300, -1e300, 0.0, 1e-300]))["score"]).all()


def test_the_model_schema_rejects_unrepresentable_rows_with_the_rule(nodes_model):
    model, _ = nodes_model
    encoding = model.preprocessor_.encodings_[1]
    schema = schema_for_model(schema_from_model(model, "patient"), model)
    albumin = next(feature for feature in schema.features if feature.name == "albumin")
    assert albumin.min == pytest.approx(encoding.mean - 1e15 * encoding.scale, rel=1e-5)
    assert albumin.max == pytest.approx(encoding.mean + 1e15 * encoding.scale, rel=1e-5)
    table = pd.DataFrame({"patient": ["a", "b", "c"], "nodes": 3.0, "albumin": [3.5, 1e300, np.nan]})
    result = schema.validate(table)
    assert result.valid["patient"].tolist() == ["a", "c"]
    assert len(result.rejected) == 1 and f"albumin <= {albumin.max:g}" in result.rejected.to_string()
    assert np.isfinite(model.predict(result.valid[["nodes", "albumin"]])["score"]).all()
    # A range of the schema's own that is narrower stays as it is.
    narrow = schema_from_model(model, "patient")
    narrow = replace(narrow, features=tuple(
        FeatureSpec(f.name, f.type, min=1.0, max=6.0) if f.name == "albumin" else f for f in narrow.features))
    kept = next(f for f in schema_for_model(narrow, model).features if f.name == "albumin")
    assert (kept.min, kept.max) == (1.0, 6.0)


def test_no_class_or_value_from_a_non_finite_output(nodes_model):
    model, _ = nodes_model
    encoding = model.preprocessor_.encodings_[1]
    new = pd.DataFrame({"nodes": 3.0, "albumin": [3.5, encoding.mean + 1e14 * encoding.scale, 3.0]},
                       index=["a", "b", "c"])
    first = model.module_.members[0].trunk[0]
    original = first.weight.detach().clone()
    try:
        with torch.no_grad():  # weights that overflow float32 on row 'b' (1e14 * 1e25) but not on the others
            first.weight.mul_(1e25)
        for predict in (model.predict, model.predict_proba, lambda X: flat_predictions(model, X)):
            with pytest.raises(InputDataError, match=r"not finite for row 'b'"):
                predict(new)
        assert np.isfinite(model.predict(new.iloc[[0, 2]])["score"]).all()
    finally:
        with torch.no_grad():
            first.weight.copy_(original)


# -- C: no patient value in a model ---------------------------------------------------------------

def _stored_numbers(data) -> list[float]:
    if isinstance(data, dict):
        return [number for value in data.values() for number in _stored_numbers(value)]
    if isinstance(data, list):
        return [number for value in data for number in _stored_numbers(value)]
    if isinstance(data, (int, float)) and not isinstance(data, bool):
        return [float(data)]
    return []


def _stored_medians(config: dict) -> list[float]:
    """The imputation medians of ``model.json``, in the columns' units."""
    return [float(NumericEncoding(**{key: value for key, value in entry.items() if key != "type"})
                  .to_units(entry["median"]))
            for entry in config["preprocessor"]["encodings"] if entry["type"] == "numeric"]


def _patient_values_in(config: dict, patient_values: set) -> set:
    """Stored numbers equal to a patient's value; medians mapped back to units, equal up to
    the rounding of the inverse transform (1e-12)."""
    found = set(_stored_numbers(config)) & patient_values
    known = np.sort(np.fromiter(patient_values, dtype=float))
    for median in _stored_medians(config):
        nearest = known[np.clip(np.searchsorted(known, median), 1, len(known) - 1) - np.array([1, 0])]
        found |= set(nearest[np.isclose(nearest, median, rtol=1e-12, atol=0)].tolist())
    return found


@pytest.fixture(scope="module")
def saved_synthetic(tmp_path_factory):
    X, Y = make_synthetic_cohort(301, random_state=0)  # odd counts: a median can be one patient's value
    # The cohort's values are rounded like measurements; a relative jitter makes them continuous,
    # so that an equal stored number is a patient's value, not a coincidence on a decimal grid.
    rng = np.random.default_rng(1)
    for frame in (X, Y):
        for name in frame.columns:
            if frame[name].dtype.kind == "f":
                frame[name] = frame[name] + rng.uniform(-1e-4, 1e-4, len(frame)) * frame[name].std()
    model = MultiTaskMLP(hidden_layer_sizes=(8,), max_epochs=30, ensemble_size=2, random_state=0).fit(X, Y)
    folder = save_model(model, tmp_path_factory.mktemp("leak") / "model")
    config = json.loads((folder / "model.json").read_text())
    values = [X[name].to_numpy(float) for name in X.columns if X[name].dtype.kind == "f"]
    values += [Y[name].to_numpy(float) for name in Y.columns if Y[name].dtype.kind == "f"]
    patient_values = set()
    for column in values:  # values of one patient only: those single one out
        unique, counts = np.unique(column[np.isfinite(column)], return_counts=True)
        patient_values |= set(unique[counts == 1].tolist())
    return model, config, patient_values, X, Y


def test_model_json_holds_no_training_value(saved_synthetic):
    model, config, patient_values, X, Y = saved_synthetic
    assert len(patient_values) > 2500  # 10 continuous features and 1 regression label, some missing
    assert _patient_values_in(config, patient_values) == set()
    for median in _stored_medians(config):  # on the documented grid: 3 significant digits
        assert median == pytest.approx(float(f"{median:.3g}"), rel=1e-12, abs=1e-300)
    labels = Y["prognosis"].dropna().to_numpy(float)
    percentiles = config["fitted"]["label_percentiles"]["prognosis"]
    assert len(percentiles) == 91 and labels.min() < percentiles[0] and percentiles[-1] < labels.max()
    np.testing.assert_allclose(percentiles, np.percentile(labels, np.arange(5, 96)), rtol=5e-3)
    assert percentiles == [float(f"{p:.3g}") for p in percentiles]


def test_the_leak_check_finds_a_planted_value(saved_synthetic):
    model, config, patient_values, X, Y = saved_synthetic
    planted = json.loads(json.dumps(config))
    label = float(Y["prognosis"].dropna().iloc[7])
    assert label in patient_values
    planted["fitted"]["label_percentiles"]["prognosis"][3] = label
    assert _patient_values_in(planted, patient_values) == {label}
    # A median stored after the log-like transform is found once mapped back to units.
    planted = json.loads(json.dumps(config))
    entry = next(e for e in planted["preprocessor"]["encodings"] if e["type"] == "numeric" and e["log"])
    value = float(X[entry["name"]].dropna().iloc[0])
    encoding = NumericEncoding(**{key: value for key, value in entry.items() if key != "type"})
    entry["median"] = float(encoding.transformed(np.float64(value)))
    assert _patient_values_in(planted, patient_values) == {value}


def test_the_log_scale_is_no_patient_value():
    values = np.exp(np.random.default_rng(3).normal(size=21))
    pre = ClinicalPreprocessor(log_transform=["x"]).fit(pd.DataFrame({"x": values}))
    second_smallest = np.sort(values)[1]  # the 5th percentile of 21 values: index 0.05 * 20 = 1, exactly
    assert np.percentile(values, 5) == second_smallest
    assert pre.encodings_[0].log_scale == float(f"{second_smallest:.3g}") != second_smallest
    assert set(_stored_numbers(pre.to_dict())) & set(values.tolist()) == set()


def test_a_standardised_value_of_exactly_max_abs_input_is_represented():
    """Within 1e15 of 0 includes 1e15 itself; only the rows beyond it are named."""
    pre = ClinicalPreprocessor(log_transform=None).fit(pd.DataFrame({"x": [-1.0, 1.0]}))  # mean 0, std 1
    out = pre.transform(pd.DataFrame({"x": [1e15, -1e15, 0.5]}))
    np.testing.assert_array_equal(out[:, 0], np.float32([1e15, -1e15, 0.5]))
    new = pd.DataFrame({"x": [1e15, 2e15, -1e15, -3e15]}, index=["at", "beyond", "at_negative", "beyond_negative"])
    with pytest.raises(InputDataError, match=r"Column 'x' .* in rows 'beyond', 'beyond_negative'; check"):
        pre.transform(new)


def test_the_representable_range_of_asinh_with_a_scale_below_1_keeps_x_over_s_finite():
    """With s < 1, x / s overflows float64 for |x| beyond about float64-max * s: that is the
    range's edge (a little inside), on both sides; values within it are transformed."""
    values = np.array([0.02, 0.05, 0.1, 0.3, 1.0, 2.0, 5.0, 20.0])
    pre = ClinicalPreprocessor(log_transform=["x"]).fit(pd.DataFrame({"x": values}))
    s = float(f"{np.percentile(values, 5):.3g}")  # 0.02 + 0.35 * 0.03 = 0.0305
    encoding = pre.encodings_[0]
    assert encoding.log_scale == s == 0.0305
    edge = np.finfo(np.float64).max * s
    low, high = encoding.representable_range()
    assert high == pytest.approx(edge, rel=1e-5) and high <= edge
    assert low == -high
    assert np.isfinite(pre.transform(pd.DataFrame({"x": [low, high]}))).all()
    with pytest.raises(InputDataError, match=r"rows 0, 1"):
        pre.transform(pd.DataFrame({"x": [1.01 * edge, -1.01 * edge, 3.0]}))


def test_the_representable_range_of_asinh_with_a_scale_of_1_is_unbounded():
    """With s = 1, x / s is finite for every finite x and asinh keeps it near 710 at most:
    every finite value is representable, so the range has no bound (None, None)."""
    values = np.r_[1.0, 1.0, np.arange(2.0, 21.0)]  # 21 values: the 5th percentile is the 2nd smallest, 1
    pre = ClinicalPreprocessor(log_transform=["x"]).fit(pd.DataFrame({"x": values}))
    assert pre.encodings_[0].log_scale == np.percentile(values, 5) == 1.0
    assert pre.encodings_[0].representable_range() == (None, None)
    largest = np.finfo(np.float64).max
    assert np.isfinite(pre.transform(pd.DataFrame({"x": [-largest, largest, 0.0]}))).all()

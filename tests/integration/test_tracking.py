"""MLflow tracking: autolog, the pyfunc model, no pickles, the registry."""

import json
import os
import subprocess
import sys

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.types.schema import AnyType

from clinical_mtl import MultiTaskMLP, tracking
from clinical_mtl.datasets import load_pbc
from clinical_mtl.model.outputs import flat_predictions
from clinical_mtl.model.survival import horizon_label

pytestmark = pytest.mark.integration

SMALL = {"hidden_layer_sizes": (16,), "max_epochs": 15, "ensemble_size": 2, "random_state": 0}


@pytest.fixture
def store(tmp_path, monkeypatch):
    """An empty SQLite tracking store in a temporary working directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    yield tmp_path
    while mlflow.active_run():
        mlflow.end_run()
    tracking.autolog(disable=True)


def pbc_three_kinds():
    """PBC with a regression outcome beside its classification and survival ones (log days to death
    among the patients who died), so that every kind of output, intervals included, goes through MLflow."""
    X, Y = load_pbc()
    return X, Y.assign(log_survival_days=np.log(Y["death_time"]).where(Y["death_event"] == 1))


def prediction_columns(model) -> list[str]:
    """The flat prediction columns of a model fitted on ``pbc_three_kinds``, in order."""
    death = next(spec for spec in model.task_specs_ if spec.name == "death")
    return [
        "cirrhosis_pred", "cirrhosis_proba_0", "cirrhosis_proba_1",
        "death_pred", "death_median_beyond_follow_up",
        *(f"death_event_prob_{horizon_label(horizon)}" for horizon in death.horizons),
        "log_survival_days_pred", "log_survival_days_lower", "log_survival_days_upper",
    ]


@pytest.fixture
def tracked(store):
    """A PBC fit under autolog: (model, X, Y, run)."""
    X, Y = pbc_three_kinds()
    tracking.autolog()
    model = MultiTaskMLP(**SMALL).fit(X, Y)
    tracking.autolog(disable=True)
    return model, X, Y, mlflow.last_active_run()


def test_autolog_logs_params_data_curves_metrics_time_and_model(tracked):
    model, X, Y, run = tracked
    client = mlflow.MlflowClient()
    assert run.data.params["dropout"] == str(model.dropout)
    assert set(model.get_params()) <= set(run.data.params)
    metrics = run.data.metrics
    assert metrics["data.n_rows"] == 418 and metrics["data.n_features"] == 16
    assert metrics["data.cirrhosis.n_labelled"] == 412
    assert metrics["data.cirrhosis.events.1"] == 144
    assert metrics["training_seconds"] > 0
    assert metrics["valid.cirrhosis.auroc"] == pytest.approx(model.validation_metrics_.loc["cirrhosis", "auroc"])
    assert "valid.log_survival_days.rmse" in metrics
    assert metrics["valid.death.harrell_c"] == pytest.approx(model.validation_metrics_.loc["death", "harrell_c"])
    assert (metrics["data.death.events"], metrics["data.death.censored"]) == (161, 257)
    curve = client.get_metric_history(run.info.run_id, "member_1/valid_loss/log_survival_days")
    assert [m.step for m in curve] == list(range(1, model.n_iter_[1] + 1))
    assert len(client.get_metric_history(run.info.run_id, "member_0/weight/cirrhosis")) == model.n_iter_[0]
    summary = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/training_data.json")
    assert summary["outcomes"]["cirrhosis"] == {"kind": "binary", "n_labelled": 412, "events": {"0": 268, "1": 144}}
    assert summary["outcomes"]["death"] == {"kind": "survival", "n_labelled": 418, "events": 161, "censored": 257}
    assert summary["features"]["chol"]["missing_fraction"] == pytest.approx(134 / 418, abs=1e-4)
    explanation_files = [f.path for f in mlflow.artifacts.list_artifacts(run_id=run.info.run_id,
                                                                          artifact_path="explanations")]
    death = next(spec for spec in model.task_specs_ if spec.name == "death")
    assert explanation_files == sorted([
        "explanations/beeswarm_cirrhosis=1.png", "explanations/beeswarm_log_survival_days.png",
        *(f"explanations/beeswarm_death_event_by_{horizon:g}.png" for horizon in death.horizons),
        "explanations/global_importance.csv",
    ])
    model_uri = run.data.tags["clinical_mtl.model_uri"]
    info = mlflow.models.get_model_info(model_uri)
    assert info.signature.inputs.input_names() == list(X.columns)
    # Optional and of any type: the model checks its input with the cohort schema (MLflow's check quotes rows).
    assert all(isinstance(spec.type, AnyType) and not spec.required for spec in info.signature.inputs.inputs)
    assert info.signature.outputs.input_names() == prediction_columns(model)
    assert {param.name: param.default for param in info.signature.params.params} == {
        "top_k": 0, "interval_coverage": 0.9
    }


def test_no_patient_row_is_stored(tracked):
    model, X, Y, run = tracked
    model_uri = run.data.tags["clinical_mtl.model_uri"]
    folder = mlflow.artifacts.download_artifacts(model_uri)
    example = pd.read_json(f"{folder}/input_example.json", orient="split")
    reference = example.iloc[0]
    equal = pd.DataFrame({c: X[c].astype(object).eq(reference[c]) for c in example.columns})
    matches = equal.fillna(False).astype(bool).sum(axis=1)
    assert matches.max() < len(example.columns) // 2  # the example is not (close to) any patient
    config = json.loads(open(f"{folder}/artifacts/clinical_mtl_model/model.json").read())
    assert len(json.dumps(config)) < 60_000  # parameters and summaries, not a copy of the cohort
    run_files = mlflow.artifacts.list_artifacts(run_id=run.info.run_id)
    assert [f.path for f in run_files] == ["explanations", "training_data.json"]
    importance = pd.read_csv(mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="explanations/global_importance.csv"), index_col=0)
    assert sorted(importance.index) == sorted(X.columns)  # one aggregate row per feature


def test_fresh_process_loads_without_pickles_and_predicts_identically(tracked, tmp_path):
    model, X, Y, run = tracked
    model_uri = run.data.tags["clinical_mtl.model_uri"]
    inputs = tracking.to_pyfunc_input(model, X)
    inputs.to_parquet(tmp_path / "inputs.parquet")
    script = (
        "import sys, mlflow, pandas as pd\n"
        "model = mlflow.pyfunc.load_model(sys.argv[1])\n"
        "model.predict(pd.read_parquet(sys.argv[2])).to_parquet(sys.argv[3])\n"
    )
    env = {**__import__("os").environ, "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false"}
    subprocess.run([sys.executable, "-c", script, model_uri, str(tmp_path / "inputs.parquet"),
                    str(tmp_path / "out.parquet")], check=True, env=env, cwd=tmp_path.parent)
    fresh = pd.read_parquet(tmp_path / "out.parquet")
    pd.testing.assert_frame_equal(fresh, flat_predictions(model, X), check_exact=True)


class _RunsCodeWhenUnpickled:
    """A model whose pickle runs code when it is loaded (it makes a folder), as a malicious model's would."""

    def __init__(self, marker: str):
        self.marker = marker

    def predict(self, X):
        return X

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


_LOAD_WITH_AND_WITHOUT_PICKLES = """
import json, os, sys, mlflow
model_uri, marker = sys.argv[1:]
outcome = {}
for allowed in ("false", "true"):
    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = allowed
    try:
        mlflow.pyfunc.load_model(model_uri)
        outcome[allowed] = {"error": None}
    except Exception as error:
        outcome[allowed] = {"error": str(error)}
    outcome[allowed]["payload_ran"] = os.path.exists(marker)
print(json.dumps(outcome))
"""


def test_the_pickle_setting_refuses_a_pickled_flavour_that_would_run_code(store):
    # The negative control of the test above: the setting it loads under does stop pickles.
    marker = store / "payload-ran"
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(_RunsCodeWhenUnpickled(str(marker)), name="pickled",
                                        serialization_format="cloudpickle", pip_requirements=[])
    done = subprocess.run([sys.executable, "-c", _LOAD_WITH_AND_WITHOUT_PICKLES, info.model_uri, str(marker)],
                          cwd=store.parent, capture_output=True, text=True, check=True)
    outcome = json.loads(done.stdout.splitlines()[-1])
    assert ("Deserializing this model is disallowed because 'MLFLOW_ALLOW_PICKLE_DESERIALIZATION' is not set to "
            "'true'.") in str(outcome["false"]["error"])
    assert not outcome["false"]["payload_ran"]
    # The payload is real: allowed, the same load runs it.
    assert outcome["true"]["payload_ran"]


def test_native_model_loads_back(tracked):
    model, X, Y, run = tracked
    native = tracking.load_native_model(run.data.tags["clinical_mtl.model_uri"])
    assert isinstance(native, MultiTaskMLP)
    pd.testing.assert_frame_equal(native.predict(X), model.predict(X))
    assert native.get_params() == model.get_params()
    pd.testing.assert_frame_equal(native.validation_metrics_, model.validation_metrics_)


def test_registry_alias_and_load_by_alias(tracked):
    model, X, Y, run = tracked
    version = tracking.register_model(run.data.tags["clinical_mtl.model_uri"], "pbc_mtl", alias="champion")
    assert str(version.version) == "1"
    loaded = mlflow.pyfunc.load_model("models:/pbc_mtl@champion")
    np.testing.assert_array_equal(
        loaded.predict(tracking.to_pyfunc_input(model, X.head(20)))["log_survival_days_pred"],
        model.predict(X.head(20))["log_survival_days"],
    )
    np.testing.assert_array_equal(  # the median time to death: NaN where the curve stays above 0.5
        loaded.predict(tracking.to_pyfunc_input(model, X.head(20)))["death_pred"], model.predict(X.head(20))["death"])
    assert str(mlflow.MlflowClient().get_model_version_by_alias("pbc_mtl", "champion").version) == "1"


def test_fit_in_an_active_run_logs_there_and_a_second_fit_nests(store):
    X, Y = load_pbc()
    tracking.autolog(log_models=False)
    with mlflow.start_run() as parent:
        MultiTaskMLP(**SMALL).fit(X, Y)
        MultiTaskMLP(**(SMALL | {"dropout": 0.1})).fit(X, Y)
    client = mlflow.MlflowClient()
    assert client.get_run(parent.info.run_id).data.params["dropout"] == "0.3"
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert [child.data.params["dropout"] for child in children] == ["0.1"]


def test_failed_fit_ends_its_run_as_failed(store):
    X, Y = load_pbc()
    tracking.autolog()
    with pytest.raises(ValueError, match="only one class"):
        MultiTaskMLP(**SMALL).fit(X, Y.assign(cirrhosis=1))
    assert mlflow.active_run() is None
    assert mlflow.last_active_run().info.status == "FAILED"


def test_autolog_off_logs_nothing(store):
    X, Y = load_pbc()
    tracking.autolog()
    tracking.autolog(disable=True)
    MultiTaskMLP(**SMALL).fit(X, Y)
    assert mlflow.search_runs(search_all_experiments=True).empty


def test_pyfunc_input_errors_name_columns_not_values(tracked):
    model, X, Y, run = tracked
    bad = X.head(3).copy()
    bad["bili"] = ["high", "low", "normal"]
    with pytest.raises(ValueError, match=r"Column 'bili' must hold numbers") as error:
        tracking.to_pyfunc_input(model, bad)
    assert "high" not in str(error.value)
    with pytest.raises(ValueError, match=r"lacks the model's feature columns \['bili'\]"):
        tracking.to_pyfunc_input(model, X.drop(columns="bili"))


def test_pyfunc_returns_top_k_contributions(tracked):
    model, X, Y, run = tracked
    with mlflow.start_run():
        info = tracking.log_model(model, explain_top_k=2)
    loaded = mlflow.pyfunc.load_model(info.model_uri)
    inputs = tracking.to_pyfunc_input(model, X.head(6))
    with_default = loaded.predict(inputs)
    assert with_default.columns.tolist() == info.signature.outputs.input_names()
    assert {"log_survival_days_top2_contribution", "death_top2_contribution"} <= set(with_default)
    explanation = model.explain(X.head(6))["cirrhosis"]
    top = np.abs(explanation.values).argmax(axis=1)
    assert with_default["cirrhosis_top1_feature"].tolist() == [X.columns[i] for i in top]
    plain = loaded.predict(inputs, params={"top_k": 0})
    assert plain.columns.tolist() == prediction_columns(model)
    wider = loaded.predict(inputs, params={"top_k": 0, "interval_coverage": 0.95})
    pd.testing.assert_frame_equal(wider.reset_index(drop=True),
                                  flat_predictions(model, X.head(6), coverage=0.95).reset_index(drop=True))
    assert (wider["log_survival_days_upper"] >= plain["log_survival_days_upper"]).all()

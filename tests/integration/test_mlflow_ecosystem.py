"""The MLflow model as MLflow's own tools use it: the estimator's tables straight into the registered
model, ``mlflow.models.evaluate`` per outcome, runs named after data and model with the fit inside them,
and the training data recorded as a dataset input (digest, types and counts only)."""

from contextlib import nullcontext
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from sentinels import Sentinel, SentinelSearch, capture, describe
from sklearn import metrics as sk

from clinical_mtl import MultiTaskMLP, tracking
from clinical_mtl.data.schema import load_schema
from clinical_mtl.datasets import load_pbc
from clinical_mtl.exceptions import InputDataError
from clinical_mtl.model.hooks import add_fit_listener, remove_fit_listener
from clinical_mtl.model.outputs import flat_predictions
from clinical_mtl.pipelines import load_pipeline, run_train
from clinical_mtl.tracking.serving import RequestRejected

pytestmark = pytest.mark.integration

FAST = {"hidden_layer_sizes": (8,), "max_epochs": 8, "ensemble_size": 1, "random_state": 0}
PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"
NAME = "pbc_eco"


def pbc_three_kinds():
    """PBC with a regression outcome (log days to death among the patients who died) beside cirrhosis
    (binary) and death (survival)."""
    X, Y = load_pbc()
    return X, Y.assign(log_survival_days=np.log(Y["death_time"]).where(Y["death_event"] == 1))


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """A small PBC model logged with the PBC cohort schema and registered as ``pbc_eco@champion`` in a
    fresh SQLite store."""
    store = tmp_path_factory.mktemp("mlflow-eco")
    X, Y = pbc_three_kinds()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(store)
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store / 'mlflow.db'}")
        patch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        model = MultiTaskMLP(**FAST).fit(X, Y)
        with mlflow.start_run():
            info = tracking.log_model(model, schema=load_schema(PIPELINES.parent / "data_schemas" / "pbc.yaml"))
        tracking.register_model(info.model_uri, NAME, alias="champion")
        yield {"model": model, "X": X, "Y": Y, "store": store}
        while mlflow.active_run():
            mlflow.end_run()


@pytest.fixture
def store(registered, monkeypatch):
    monkeypatch.chdir(registered["store"])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{registered['store'] / 'mlflow.db'}")
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    yield registered["store"]
    while mlflow.active_run():
        mlflow.end_run()
    tracking.autolog(disable=True)


# -- the estimator's tables go straight in ---------------------------------------------------------------


def _tables(X: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """load_pbc's frame (category, nullable boolean) and the other forms the estimator takes."""
    assert isinstance(X["sex"].dtype, pd.CategoricalDtype) and X["ascites"].dtype == "boolean"
    return {
        "load_pbc": X,
        "pandas nullable": X.convert_dtypes(),
        "pyarrow": X.convert_dtypes(dtype_backend="pyarrow"),
        "string": X.astype({"sex": "string", "trt": "string"}),
        "object": X.astype(object),
    }


def test_the_registered_model_takes_the_estimators_tables_directly(registered, store):
    model, X = registered["model"], registered["X"]
    loaded = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    expected = flat_predictions(model, X)
    for form, table in _tables(X).items():
        assert table.dtypes.astype(str).tolist() != X.dtypes.astype(str).tolist() or form == "load_pbc"
        pd.testing.assert_frame_equal(loaded.predict(table), expected, check_exact=True, obj=form)
    # Whole numbers in a nullable integer column are the same numbers.
    whole = X.assign(age=X["age"].round())
    pd.testing.assert_frame_equal(loaded.predict(whole.astype({"age": "Int64"})), flat_predictions(model, whole),
                                  check_exact=True)


def test_errors_on_such_tables_name_columns_and_rows_not_values(registered, store):
    X = registered["X"].head(6)
    loaded = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    age, sex = Sentinel("age", 500.12345), Sentinel("sex", "Zqxv-sentinel")
    bad_sex = X.assign(sex=X["sex"].cat.add_categories([sex.value]))
    bad_sex.iloc[2, bad_sex.columns.get_loc("sex")] = sex.value
    bad_age = X.convert_dtypes(dtype_backend="pyarrow")
    bad_age.iloc[4, bad_age.columns.get_loc("age")] = age.value
    search = SentinelSearch([age, sex])
    for table, column, row in ((bad_sex, "sex", 2), (bad_age, "age", 4)):
        with capture() as output, pytest.raises(RequestRejected) as error:
            loaded.predict(table)
        message = str(error.value)
        assert f"column '{column}'" in message and f"(row(s) {row})" in message and "\n" not in message
        hits = search.in_exception(error.value, "the error") + search.in_captured(output, "the output")
        assert not hits, describe(hits)


# -- mlflow.models.evaluate per outcome ------------------------------------------------------------------


def test_evaluate_outcome_scores_a_binary_outcome_as_scikit_learn_does(registered, store):
    model, X, Y = registered["model"], registered["X"], registered["Y"]
    with mlflow.start_run() as run:
        result = tracking.evaluate_outcome(f"models:/{NAME}@champion", X.join(Y), "cirrhosis")
    labelled = Y["cirrhosis"].notna().to_numpy()
    y = Y["cirrhosis"][labelled].astype(int).to_numpy()
    view = model.for_outcome("cirrhosis")
    label, probability = view.predict(X[labelled]), view.predict_proba(X[labelled])[:, 1]
    expected = {
        "accuracy_score": sk.accuracy_score(y, label), "precision_score": sk.precision_score(y, label),
        "recall_score": sk.recall_score(y, label), "f1_score": sk.f1_score(y, label),
        "roc_auc": sk.roc_auc_score(y, probability), "log_loss": sk.log_loss(y, probability),
        "brier_score": sk.brier_score_loss(y, probability),
    }
    assert result.metrics["example_count"] == labelled.sum() == 412
    assert result.metrics["true_positives"] == ((label == 1) & (y == 1)).sum()
    for name, value in expected.items():
        assert result.metrics[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name
    assert mlflow.get_run(run.info.run_id).data.metrics["roc_auc"] == pytest.approx(expected["roc_auc"])


def test_evaluate_outcome_scores_a_regression_outcome_as_scikit_learn_does(registered, store):
    model, X, Y = registered["model"], registered["X"], registered["Y"]
    with mlflow.start_run():
        result = tracking.evaluate_outcome(f"models:/{NAME}@champion", X.join(Y), "log_survival_days")
    labelled = Y["log_survival_days"].notna().to_numpy()
    y = Y["log_survival_days"][labelled].to_numpy()
    predicted = model.for_outcome("log_survival_days").predict(X[labelled])
    expected = {
        "example_count": 161, "mean_squared_error": sk.mean_squared_error(y, predicted),
        "root_mean_squared_error": sk.root_mean_squared_error(y, predicted),
        "mean_absolute_error": sk.mean_absolute_error(y, predicted), "r2_score": sk.r2_score(y, predicted),
        "max_error": sk.max_error(y, predicted),
    }
    for name, value in expected.items():
        assert result.metrics[name] == pytest.approx(value, rel=1e-9), name


@pytest.mark.filterwarnings("ignore:Hint. Inferred schema contains integer:UserWarning")  # MLflow's, on its dataset
def test_mlflows_own_evaluate_takes_the_model_uri_per_outcome(registered, store):
    """The documented direct calls: ``predictions=`` for a regression outcome, ``model_config`` for a
    classification one (MLflow's classifier takes one column of labels); MLflow's SHAP step off."""
    model, X, Y = registered["model"], registered["X"], registered["Y"]
    off = {"log_model_explainability": False}
    regression = X.join(Y[["log_survival_days"]]).dropna(subset=["log_survival_days"])
    cirrhosis = X.join(Y[["cirrhosis"]].dropna().astype(int), how="inner")
    with mlflow.start_run():
        by_column = mlflow.models.evaluate(f"models:/{NAME}@champion", regression, targets="log_survival_days",
                                           model_type="regressor", predictions="log_survival_days_pred",
                                           evaluator_config=off)
        by_config = mlflow.models.evaluate(f"models:/{NAME}@champion", cirrhosis, targets="cirrhosis",
                                           model_type="classifier", model_config={"outcome": "cirrhosis"},
                                           evaluator_config=off)
    predicted = model.for_outcome("log_survival_days").predict(regression[X.columns])
    assert by_column.metrics["mean_absolute_error"] == pytest.approx(
        sk.mean_absolute_error(regression["log_survival_days"], predicted), rel=1e-9)
    label = model.for_outcome("cirrhosis").predict(cirrhosis[X.columns])
    assert by_config.metrics["accuracy_score"] == pytest.approx(sk.accuracy_score(cirrhosis["cirrhosis"], label))
    assert by_config.metrics["f1_score"] == pytest.approx(sk.f1_score(cirrhosis["cirrhosis"], label))


def test_evaluate_outcome_refuses_survival_and_unknown_outcomes_clearly(registered, store):
    X, Y = registered["X"], registered["Y"]
    with mlflow.start_run():
        with pytest.raises(InputDataError, match=r"'death' is a survival outcome.*MultiTaskMLP\.evaluate"):
            tracking.evaluate_outcome(f"models:/{NAME}@champion", X.join(Y), "death")
        with pytest.raises(InputDataError, match=r"no outcome 'stage'; its outcomes are \['cirrhosis', 'death'"):
            tracking.evaluate_outcome(f"models:/{NAME}@champion", X.join(Y), "stage")
        recoded = X.join(Y.replace({"cirrhosis": {1: 7}})).head(20)
        sevens = int((recoded["cirrhosis"] == 7).sum())
        with pytest.raises(InputDataError, match=rf"Column 'cirrhosis' holds {sevens} label\(s\) that are not cl"):
            tracking.evaluate_outcome(f"models:/{NAME}@champion", recoded, "cirrhosis")
    with pytest.raises(InputDataError, match=r"model_config names the outcome 'stage'"):
        mlflow.pyfunc.load_model(f"models:/{NAME}@champion", model_config={"outcome": "stage"})


# -- runs: named, the fit inside, the data as an input ---------------------------------------------------


def _fit_runs():
    """A fit listener recording the active run's id while each fit trains."""
    seen = []

    def listener(model, X, y):
        active = mlflow.active_run()
        seen.append(None if active is None else active.info.run_id)
        return nullcontext()

    return seen, listener


def test_autolog_runs_are_named_and_record_the_training_data_as_an_input(store):
    X, Y = load_pbc()
    tracking.autolog(log_models=False)
    MultiTaskMLP(**FAST).fit(X, Y)
    run = mlflow.last_active_run()
    assert run.info.run_name == "pbc · MultiTaskMLP(cirrhosis, death)"
    assert run.info.end_time - run.info.start_time >= 1000 * run.data.metrics["training_seconds"]
    [recorded] = run.inputs.dataset_inputs
    assert [(tag.key, tag.value) for tag in recorded.tags] == [("mlflow.data.context", "training")]
    dataset = recorded.dataset
    assert dataset.name == "pbc" and len(dataset.digest) >= 8
    assert yaml.safe_load(dataset.profile) == {"num_rows": 418, "num_elements": 418 * (16 + 3)}
    columns = [column["name"] for column in yaml.safe_load(dataset.schema)["mlflow_colspec"]]
    assert columns == list(X.columns) + list(Y.columns)
    # Without a dataset name, the run is named after the model alone.
    MultiTaskMLP(**FAST).fit(X.select_dtypes("number").to_numpy(), Y["cirrhosis"].fillna(0).astype(int).to_numpy())
    assert mlflow.last_active_run().info.run_name == "MultiTaskMLP(y)"


def test_the_training_pipeline_fits_inside_its_named_run(store):
    config = yaml.safe_load((PIPELINES / "pbc_train.yaml").read_text())
    config.update(schema=str((PIPELINES / config["schema"]).resolve()), model=dict(FAST, hidden_layer_sizes=[8]),
                  tracking={"experiment": "eco_pipeline"}, outputs={},
                  model_card={"n_bootstrap": 0, "single_task_comparison": False})
    path = store / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    seen, listener = _fit_runs()
    add_fit_listener(listener)
    try:
        train = run_train(load_pipeline(path))
    finally:
        remove_fit_listener(listener)
    run = mlflow.get_run(train.run_id)
    assert seen == [train.run_id]  # the fit trained inside the run
    assert run.info.run_name == "pbc · MultiTaskMLP(cirrhosis, death)" and run.info.status == "FINISHED"
    [recorded] = run.inputs.dataset_inputs
    assert recorded.dataset.name == "pbc"
    assert yaml.safe_load(recorded.dataset.profile)["num_rows"] == run.data.metrics["data.n_rows"] < 418
    assert mlflow.active_run() is None


def test_a_failed_pipeline_fit_fails_its_run(store):
    config = yaml.safe_load((PIPELINES / "pbc_train.yaml").read_text())
    config.update(schema=str((PIPELINES / config["schema"]).resolve()),
                  model=dict(FAST, hidden_layer_sizes=[8], max_epochs=0),
                  tracking={"experiment": "eco_failed", "run_name": "mine"}, outputs={})
    path = store / "failing.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError):
        run_train(load_pipeline(path))
    assert mlflow.active_run() is None
    [run] = mlflow.search_runs(experiment_names=["eco_failed"], output_format="list")
    assert run.info.status == "FAILED" and run.info.run_name == "mine"

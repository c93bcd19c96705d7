"""No patient value leaks: sentinel patients are looked for in everything the package writes, logs,
prints, raises and answers (see tests/sentinels.py).

``PATIENT`` is trained on (the smallest bilirubin and the smallest prognosis label of the cohort, so
that a stored extreme would give it away, and an unremarkable age), then scored, reported on and
served. ``REJECTED`` is never trained on: scored, reported on and served, it is rejected for its
smoking category. Where a value is expected by design (the id in the scores and on the index, the
value that broke a rule in the rejects file), each test says so and looks for everything else.
"""

import json
import logging
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
import warnings
from contextlib import contextmanager

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from sentinels import (
    Sentinel,
    SentinelPatient,
    SentinelSearch,
    capture,
    describe,
    plant,
)

from clinical_mtl import MultiTaskMLP, tracking
from clinical_mtl.cli import main
from clinical_mtl.data.persistence import save_model
from clinical_mtl.datasets import make_synthetic_cohort, synthetic_schema
from clinical_mtl.exceptions import SchemaError
from clinical_mtl.reporting import write_reports
from clinical_mtl.reporting.build import MANIFEST
from clinical_mtl.reporting.content import page_file_name
from clinical_mtl.scoring import load_model_for_scoring, score_files
from clinical_mtl.tracking.serving import create_app

pytestmark = pytest.mark.integration

PATIENT = SentinelPatient(987654321, {"age": 77.12345, "bilirubin": 0.0612345}, {"prognosis": 0.987654})
REJECTED = SentinelPatient(918273645, {"age": 66.54321, "crp": 2.468135, "smoking": "Zqxv-sentinel"})
REGISTERED = "leak_check"
ID = "patient_id"


@pytest.fixture(scope="module")
def empty_database(tmp_path_factory):
    """An MLflow SQLite database with its tables made: copies of it start a store without the migrations."""
    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    mlflow.MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


def new_store(folder, empty_database, patch) -> None:
    """An empty tracking store in ``folder``, the working directory, set as the tracking URI."""
    shutil.copy(empty_database, folder / "mlflow.db")
    patch.chdir(folder)
    patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
    patch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, empty_database):
    """One small fit on a cohort holding ``PATIENT``, tracked, logged and registered as the training
    pipeline does it, with what it printed and logged; and the model saved with its schema."""
    store = tmp_path_factory.mktemp("mlflow-store")
    X, Y = plant(*make_synthetic_cohort(200, random_state=0), PATIENT)
    assert X["bilirubin"].idxmin() == PATIENT.id and Y["prognosis"].idxmin() == PATIENT.id
    schema = synthetic_schema()
    with pytest.MonkeyPatch.context() as patch:
        new_store(store, empty_database, patch)
        with capture() as fit_output:
            experiment = mlflow.create_experiment("leaks", artifact_location=str(store / "artifacts"))
            with mlflow.start_run(experiment_id=experiment) as run:
                model = MultiTaskMLP(tasks=schema.tasks, hidden_layer_sizes=(8,), max_epochs=10, ensemble_size=1,
                                     random_state=0).fit(X, Y)
                tracking.log_fit(model, X, Y, training_seconds=1.0, schema=schema,
                                 registered_model_name=REGISTERED)
        model_dir = save_model(model, tmp_path_factory.mktemp("saved") / "model", schema=schema)
        yield {"store": store, "run_id": run.info.run_id, "fit_output": fit_output, "model": model,
               "model_dir": model_dir, "schema": schema}


def patients_file(folder, n=12):
    """``n`` patients to score or report on, with ids from 1: ``PATIENT`` first, ``REJECTED`` second."""
    X, _ = make_synthetic_cohort(n, random_state=1, feature_missing_rate=0.0)
    X.index = pd.RangeIndex(1, n + 1, name=ID)
    X, _ = plant(X, None, PATIENT, row=0)
    X, _ = plant(X, None, REJECTED, row=1)
    others = SentinelSearch(PATIENT.sentinels(include_id=False) + REJECTED.sentinels(include_id=False))
    assert not others.in_text(X.iloc[2:].to_csv(), "the other patients"), "another patient looks like a sentinel"
    path = folder / "patients.csv"
    X.reset_index().to_csv(path, index=False)
    return path


def everything():
    return PATIENT.sentinels() + REJECTED.sentinels()


# -- the helper is not blind ------------------------------------------------------------------------


def test_the_search_finds_a_sentinel_in_every_kind_of_place(tmp_path, empty_database, monkeypatch, caplog, capsys):
    number, patient_id, text = Sentinel("number", 77.12345), Sentinel("id", 987654321), Sentinel("text", "Zqxv-s")
    search = SentinelSearch([number, patient_id, text])
    (tmp_path / "note.txt").write_text("age was 77.12 years")  # 4 significant digits
    np.array([1.0, 77.12345, 2.0]).tofile(tmp_path / "raw.f64")  # an .npy body: float64, no text
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    blob = len(header).to_bytes(8, "little") + header + np.array([0.5, 77.12345], dtype=np.float32).tobytes()
    (tmp_path / "weights.safetensors").write_bytes(blob)  # float32, as safetensors lays it out
    torch.save({"ids": torch.tensor([987654321], dtype=torch.int64)}, tmp_path / "state.pt")  # int64 in a zip
    pd.DataFrame({"x": ["a", "Zqxv-s"]}).to_parquet(tmp_path / "table.parquet", compression="zstd")
    found = {(hit.place, hit.sentinel) for hit in search.in_folder(tmp_path, "folder")}
    assert found >= {("folder/note.txt", "number"), ("folder/raw.f64", "number"),
                     ("folder/weights.safetensors", "number"), ("folder/state.pt", "id"),
                     ("folder/state.pt!state/data/0", "id"), ("folder/table.parquet (Parquet values)", "text")}

    store = tmp_path / "store"
    store.mkdir()
    new_store(store, empty_database, monkeypatch)
    experiment = mlflow.create_experiment("control", artifact_location=str(store / "artifacts"))
    with mlflow.start_run(experiment_id=experiment) as run:
        mlflow.log_param("note", "P-987654321")
        mlflow.set_tag("free_text", "smoking Zqxv-s")
        mlflow.log_metric("loss", 77.12345, step=3)
        mlflow.log_metric("loss", 0.5, step=4)  # the sentinel only in the history
        mlflow.log_text("7.712345e+01", "nested/deep/value.txt")
    places = {hit.place: hit.sentinel for hit in search.in_mlflow_run(run.info.run_id)}
    run_place = f"MLflow run {run.info.run_id}"
    assert places == {f"{run_place} param 'note'": "id", f"{run_place} tag 'free_text'": "text",
                      f"{run_place} metric 'loss'": "number", f"{run_place} metric 'loss' values": "number",
                      f"{run_place} artifact/nested/deep/value.txt": "number"}

    caplog.set_level(logging.DEBUG)
    logging.getLogger("clinical_mtl.anywhere").debug("row %s", {"id": 987654321})
    print("bilirubin 77.123")
    error = ValueError("could not convert")
    error.__cause__ = KeyError("Zqxv-s")
    assert [hit.place for hit in search.in_log_records(caplog.records)] == ["log record clinical_mtl.anywhere:DEBUG"]
    assert [hit.sentinel for hit in search.in_text(capsys.readouterr().out, "console")] == ["number"]
    assert [hit.place for hit in search.in_exception(error)] == ["exception (KeyError)"]
    with capture() as captured:  # as the module-scoped fixtures record
        print("P-987654321")
        logging.getLogger("clinical_mtl.anywhere").debug("age %.4g", 77.12345)
        warnings.warn("category Zqxv-s", UserWarning)
    assert sorted(hit.place for hit in search.in_captured(captured, "fit")) == [
        "fit console", "fit log record clinical_mtl.anywhere:DEBUG", "fit warning UserWarning"]

    async def app(scope, receive, send):  # an answer quoting the request
        await send({"type": "http.response.start", "status": 400, "headers": [(b"x-row", b"987654321")]})
        await send({"type": "http.response.body", "body": b'{"message": "bad value 77.12345"}'})

    with served(app) as port:
        status, headers, body = post(port, b"{}")
    hits = search.in_http(status, headers, body, "answer")
    assert [(hit.place, hit.sentinel) for hit in hits] == [("answer headers", "id"), ("answer body", "number")]


def test_the_search_ignores_other_numbers_and_text():
    search = SentinelSearch([Sentinel("number", 77.12345), Sentinel("id", 987654321), Sentinel("text", "Zqxv-s")])
    near_misses = ("987654321.5 177.12345 77.123451 0.77123 77.15 987654320 19876543210 P-98765432 Zqxv-t zqxv-s "
                   "7.71e+05")
    assert search.in_text(near_misses, "text") == []
    assert search.in_bytes(np.array([77.1234, 987654320.0]).tobytes(), "bytes") == []
    # A page's SVG geometry is pixels, not values; its labels and other attributes are searched.
    assert search.in_html('<rect x="77.12" width="77.1"/>', "page") == []
    assert len(search.in_html('<text x="1">age 77.1</text><a title="Zqxv-s">', "page")) == 2


# -- training, tracking and the saved model ----------------------------------------------------------


def test_a_tracked_fit_stores_no_patient_value_in_mlflow(tracked):
    search = SentinelSearch(PATIENT.sentinels())
    hits = search.in_mlflow_run(tracked["run_id"])
    hits += search.in_mlflow_model(f"models:/{REGISTERED}/1")
    hits += search.in_folder(tracked["store"], "the tracking store")  # the database and every artifact
    hits += search.in_captured(tracked["fit_output"], "the fit")
    assert not hits, describe(hits)
    # What was searched: the run's artifacts, the logged model and the registered version exist.
    run = mlflow.MlflowClient().get_run(tracked["run_id"])
    assert {"training_data.json", "cohort_schema.yaml"} <= {f.path for f in mlflow.artifacts.list_artifacts(
        run_id=tracked["run_id"])}
    assert run.data.params and run.data.metrics
    [training_data] = run.inputs.dataset_inputs  # mlflow.log_input: digest, types and counts
    assert json.loads(training_data.dataset.profile)["num_rows"] == 200
    model_files = {f.path for f in mlflow.artifacts.list_artifacts(f"models:/{REGISTERED}/1/artifacts")}
    assert "artifacts/clinical_mtl_model" in model_files


def test_mlflow_evaluate_per_outcome_stores_no_patient_value(tracked, monkeypatch):
    monkeypatch.chdir(tracked["store"])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tracked['store'] / 'mlflow.db'}")
    X, Y = plant(*make_synthetic_cohort(200, random_state=0), PATIENT)
    experiment = mlflow.get_experiment_by_name("leaks").experiment_id
    with capture() as output, mlflow.start_run(experiment_id=experiment) as run:
        results = {outcome: tracking.evaluate_outcome(f"models:/{REGISTERED}/1", X.join(Y), outcome)
                   for outcome in ("diagnosis", "subtype", "prognosis")}
    search = SentinelSearch(PATIENT.sentinels())
    hits = search.in_mlflow_run(run.info.run_id) + search.in_captured(output, "the evaluation")
    assert not hits, describe(hits)
    # What was searched: the metrics, MLflow's plots and the evaluation data's records exist.
    assert {"roc_auc", "f1_score", "mean_absolute_error"} <= set(mlflow.get_run(run.info.run_id).data.metrics)
    assert results["diagnosis"].metrics["example_count"] == Y["diagnosis"].notna().sum()
    assert "confusion_matrix.png" in {f.path for f in mlflow.artifacts.list_artifacts(run_id=run.info.run_id)}
    assert len(mlflow.get_run(run.info.run_id).inputs.dataset_inputs) == 3


def test_a_saved_model_folder_holds_no_patient_value(tracked):
    hits = SentinelSearch(PATIENT.sentinels()).in_folder(tracked["model_dir"], "the saved model")
    assert not hits, describe(hits)


# -- batch scoring --------------------------------------------------------------------------------


def test_batch_scoring_writes_a_patients_values_only_where_expected(tracked, tmp_path, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    source = patients_file(tmp_path)
    output = tmp_path / "scores.parquet"
    status = main(["score", "--model", str(tracked["model_dir"]), "--input", str(source), "--output", str(output),
                   "--explain"])
    assert status == 0
    console = capsys.readouterr()
    rejects = pd.read_parquet(tmp_path / "scores.rejects.parquet")
    assert rejects[ID].tolist() == [str(REJECTED.id)] and "column 'smoking'" in rejects["reasons"][0]
    assert pd.read_parquet(output)[ID].tolist()[0] == PATIENT.id
    search = SentinelSearch(everything())
    hits = search.in_text(console.out + console.err, "the console")
    hits += search.in_log_records(caplog.records)
    hits += search.in_file(tmp_path / "scores.summary.json")
    # The scores hold the scored patients' ids; nothing of a patient's values, nothing of a rejected row.
    hits += SentinelSearch(PATIENT.sentinels(include_id=False) + REJECTED.sentinels()).in_file(output)
    # The rejects file quotes the rejected row's id and the value that broke the rule, nothing else.
    hits += SentinelSearch(PATIENT.sentinels() + REJECTED.sentinels(only=("age", "crp"))).in_file(
        tmp_path / "scores.rejects.parquet")
    assert not hits, describe(hits)


def test_scoring_errors_quote_no_patient_value(tracked, tmp_path):
    source = patients_file(tmp_path)
    table = pd.read_csv(source)
    table.drop(columns="age").to_csv(source, index=False)
    loaded = load_model_for_scoring(str(tracked["model_dir"]))
    with pytest.raises(SchemaError, match="age") as error:
        score_files(loaded, source, tmp_path / "scores.csv")
    hits = SentinelSearch(everything()).in_exception(error.value, "the error")
    assert not hits, describe(hits)


# -- reports ----------------------------------------------------------------------------------------


def test_a_patients_values_are_on_its_own_page_only(tracked, tmp_path, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    source = patients_file(tmp_path)
    out = tmp_path / "pages"
    assert main(["report", "--model", str(tracked["model_dir"]), "--input", str(source), "--output", str(out)]) == 0
    console = capsys.readouterr()
    own_page = f"patients/{page_file_name(PATIENT.id)}"
    assert (out / own_page).exists() and not (out / "patients" / page_file_name(REJECTED.id)).exists()
    search = SentinelSearch(everything())
    hits = search.in_text(console.out + console.err, "the console") + search.in_log_records(caplog.records)
    # Its page shows the patient's id and values.
    assert {hit.sentinel for hit in SentinelSearch(PATIENT.sentinels()).in_file(out / own_page)} == {
        sentinel.name for sentinel in PATIENT.sentinels(only=("id", "age", "bilirubin"))}
    # The index links to the page (the id, in its file name in the manifest too) and lists the rejected
    # row with its id and reason (which quotes the smoking value); nothing else of a patient is anywhere.
    by_design = {"index.html": PATIENT.sentinels(include_id=False) + REJECTED.sentinels(only=("age", "crp")),
                 MANIFEST: PATIENT.sentinels(include_id=False) + REJECTED.sentinels(),
                 "rejected.csv": PATIENT.sentinels() + REJECTED.sentinels(only=("age", "crp")),
                 own_page: REJECTED.sentinels()}
    for path in sorted(out.rglob("*")):
        relative = path.relative_to(out).as_posix()
        search = SentinelSearch(by_design.get(relative, everything()))
        if path.suffix == ".html":
            hits += search.in_html(path.read_text(), f"the report {relative}")
        elif path.is_file():
            hits += search.in_file(path, f"the report {relative}")
    assert not hits, describe(hits)
    index = (out / "index.html").read_text()
    assert str(REJECTED.id) in index and "column &#39;smoking&#39;" in index  # the rejected row is listed


def test_report_errors_quote_no_patient_id(tracked, tmp_path):
    source = patients_file(tmp_path)
    loaded = load_model_for_scoring(str(tracked["model_dir"]))
    scores = pd.DataFrame({ID: [PATIENT.id, PATIENT.id], "run_id": [None, None],
                           "diagnosis_top1_feature": ["age", "age"]})
    scores.to_parquet(tmp_path / "scores.parquet")
    with pytest.raises(ValueError, match="repeats the id of an earlier row") as error:
        write_reports(loaded, source, tmp_path / "pages", scores=tmp_path / "scores.parquet")
    hits = SentinelSearch(everything()).in_exception(error.value, "the error")
    assert not hits, describe(hits)


# -- serving ------------------------------------------------------------------------------------------


def test_served_answers_and_server_logs_hold_no_patient_value(tracked, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    table = pd.read_csv(patients_file(tmp_path))
    rows = tracking.to_pyfunc_input(tracked["model"], table.drop(columns=ID).iloc[[0, 2, 3]].astype(
        {"sex": "category", "smoking": "category"})).reset_index(drop=True)
    good = rows.assign(**{ID: [PATIENT.id, 3, 4]})
    bad = pd.concat([good, table.iloc[[1]]], ignore_index=True)[good.columns]  # REJECTED, as it came
    index = [f"row-{PATIENT.id}", "row-3", "row-4"]
    requests = {
        "valid rows": split_body(good, index),
        "a rejected row": split_body(bad, None),
        "a missing column": split_body(good.drop(columns="age"), index),
        "not JSON": b'{"dataframe_split": {"columns": ["patient_id"], "data": [[' + str(PATIENT.id).encode(),
        "not UTF-8": b'{"x": "\xff' + str(REJECTED.id).encode() + b'"}',
        "CSV": good.to_csv(index=False).encode(),
    }
    with served(create_app(f"models:/{REGISTERED}/1")) as port:
        answers = {name: post(port, body, "text/csv" if name == "CSV" else "application/json")
                   for name, body in requests.items()}
    statuses = {name: answer[0] for name, answer in answers.items()}
    assert statuses == {"valid rows": 200, "a rejected row": 400, "a missing column": 400, "not JSON": 400,
                        "not UTF-8": 400, "CSV": 415}
    assert len(json.loads(answers["valid rows"][2])["predictions"]) == 3
    assert "column 'smoking'" in json.loads(answers["a rejected row"][2])["message"]
    search = SentinelSearch(everything())
    hits = search.in_log_records(caplog.records, "the server log")
    for name, (status, headers, body) in answers.items():
        hits += search.in_http(status, headers, body, f"the answer to {name}")
    assert not hits, describe(hits)


def split_body(frame: pd.DataFrame, index) -> bytes:
    split = json.loads(frame.to_json(orient="split", index=False))
    if index is not None:
        split["index"] = index
    return json.dumps({"dataframe_split": split}).encode()


@contextmanager
def served(app):
    """``app`` served by uvicorn in a thread of this process (its logs reach ``caplog``); yields the port."""
    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="debug", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "the server did not start"
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def post(port: int, body: bytes, content_type: str = "application/json") -> tuple[int, dict, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                     headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()

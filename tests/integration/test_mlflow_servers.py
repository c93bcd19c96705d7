"""Real MLflow processes: a tracking server and a model server, stopped by their PIDs."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from clinical_mtl import MultiTaskMLP, tracking
from clinical_mtl.datasets import load_pbc
from clinical_mtl.outputs import flat_predictions

pytestmark = pytest.mark.integration
MLFLOW = str(Path(sys.executable).with_name("mlflow"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(process: subprocess.Popen, url: str, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout} s:\n{log.read_text()[-3000:]}")


def stop(process: subprocess.Popen) -> None:
    """SIGTERM to the server's own PID, then make sure nothing of it is left."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # children, if any outlived their parent
        except ProcessLookupError:
            pass


def start(command: list[str], env: dict, log: Path) -> subprocess.Popen:
    with open(log, "w") as handle:
        return subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                start_new_session=True)


@pytest.fixture
def server_env(tmp_path):
    return {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}


def test_tracking_server_round_trip(tmp_path, monkeypatch, server_env):
    port = free_port()
    log = tmp_path / "server.log"
    server = start(
        [MLFLOW, "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "artifacts"), "-h", "127.0.0.1", "-p", str(port),
         "--workers", "1"],
        server_env, log,
    )
    try:
        wait_until_up(server, f"http://127.0.0.1:{port}/health", log)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
        monkeypatch.chdir(tmp_path)
        X, Y = load_pbc()
        tracking.autolog()
        try:
            model = MultiTaskMLP(hidden_layer_sizes=(16,), max_epochs=10, ensemble_size=1,
                                 random_state=0).fit(X, Y)
        finally:
            tracking.autolog(disable=True)
        run_id = mlflow.last_active_run().info.run_id
        run = mlflow.MlflowClient().get_run(run_id)  # read back from the server
        assert run.data.params["max_epochs"] == "10"
        assert run.data.metrics["data.cirrhosis.n_labelled"] == 412
        history = mlflow.MlflowClient().get_metric_history(run_id, "member_0/train_loss/cirrhosis")
        assert len(history) == model.n_iter_[0]
        assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
        loaded = mlflow.pyfunc.load_model(run.data.tags["clinical_mtl.model_uri"])
        pd.testing.assert_frame_equal(loaded.predict(tracking.to_pyfunc_input(model, X)), flat_predictions(model, X))
        assert any((tmp_path / "artifacts").rglob("weights.pt"))  # stored under the server's root
    finally:
        stop(server)
    assert server.returncode is not None


def test_models_serve_answers_like_in_process(tmp_path, monkeypatch, server_env):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    X, Y = load_pbc()
    model = MultiTaskMLP(hidden_layer_sizes=(16,), max_epochs=10, ensemble_size=2, random_state=0).fit(X, Y)
    with mlflow.start_run():
        info = tracking.log_model(model)
    tracking.register_model(info.model_uri, "pbc_serving", alias="champion")

    port = free_port()
    log = tmp_path / "serve.log"
    server = start(
        [MLFLOW, "models", "serve", "-m", "models:/pbc_serving@champion", "--env-manager", "local",
         "-h", "127.0.0.1", "-p", str(port)],
        server_env | {"MLFLOW_TRACKING_URI": uri}, log,
    )
    try:
        wait_until_up(server, f"http://127.0.0.1:{port}/ping", log)
        batch = X.iloc[100:140]  # patients 101-140: missing laboratory values, both sexes
        assert batch.isna().any().any() and batch["sex"].nunique() == 2
        inputs = tracking.to_pyfunc_input(model, batch)
        body = {"dataframe_split": json.loads(inputs.to_json(orient="split", index=False))}
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            served = pd.DataFrame(json.loads(response.read())["predictions"])
    finally:
        stop(server)
    expected = flat_predictions(model, batch).reset_index(drop=True)
    assert served.columns.tolist() == expected.columns.tolist()
    np.testing.assert_array_equal(served["cirrhosis_pred"], expected["cirrhosis_pred"])
    for column in ("cirrhosis_proba_1", "log_survival_days_pred"):
        np.testing.assert_allclose(served[column], expected[column], rtol=1e-12)

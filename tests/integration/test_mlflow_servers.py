"""Real MLflow processes: a tracking server and a model server, stopped by their PIDs."""

import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from clinical_mtl import MultiTaskMLP, tracking
from clinical_mtl.datasets import load_pbc
from clinical_mtl.model.outputs import flat_predictions

pytestmark = pytest.mark.integration
MLFLOW = str(Path(sys.executable).with_name("mlflow"))


def free_port() -> int:
    """A port free now: another process may take it before a server binds it (see :func:`serve`)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PortTaken(AssertionError):
    """The server could not bind its port: another process took it after ``free_port`` found it free."""


def wait_until_up(process: subprocess.Popen, url: str, log: Path, timeout: float = 120,
                  announced: str | None = None) -> None:
    """Wait until ``url`` answers 200 and, if given, the server's log holds ``announced``.

    ``announced`` is the line in which the server says it listens on the port: until
    then an answer may come from another process holding the port.

    Raises
    ------
    PortTaken
        If the server exits because its port is in use.
    AssertionError
        If it exits otherwise, or is not up within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            text = log.read_text()
            kind = PortTaken if "address already in use" in text.lower() else AssertionError
            raise kind(f"server exited with {process.returncode}:\n{text[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200 and (announced is None or announced in log.read_text()):
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout} s:\n{log.read_text()[-3000:]}")


def serve(command: Callable[[int], list[str]], env: dict, log: Path, path: str,
          attempts: int = 3) -> tuple[subprocess.Popen, int]:
    """Start ``command(port)`` on a free port and wait until it answers ``path``; on another port
    if the port was taken between ``free_port`` and the server binding it (pytest-xdist runs
    servers side by side).

    The server is up once it answers and its log announces (uvicorn's line) that it listens on
    that port, so that another process holding the port is never taken for it.

    Returns
    -------
    (Popen, int)
        The server, stopped with :func:`stop`, and its port.
    """
    for _ in range(attempts):
        port = free_port()
        process = start(command(port), env, log)
        try:
            wait_until_up(process, f"http://127.0.0.1:{port}{path}", log,
                          announced=f"running on http://127.0.0.1:{port} ")
            return process, port
        except PortTaken:
            stop(process)
        except BaseException:
            stop(process)
            raise
    raise AssertionError(f"no port stayed free in {attempts} attempts:\n{log.read_text()[-3000:]}")


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


class _AnswersEverything(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"not ours")

    def log_message(self, *args):
        pass


def test_a_port_taken_before_the_server_binds_it_is_given_up_for_another(tmp_path, monkeypatch):
    """The race of pytest-xdist, forced: the first port found free is taken, by a server that
    answers every request, before ours binds it."""
    holder = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _AnswersEverything)
    threading.Thread(target=holder.serve_forever, daemon=True).start()
    taken = holder.server_address[1]
    found, really_free = iter([taken]), free_port
    monkeypatch.setattr(sys.modules[__name__], "free_port", lambda: next(found, None) or really_free())
    (tmp_path / "app.py").write_text(textwrap.dedent("""
        async def app(scope, receive, send):
            if scope["type"] == "http":
                await send({"type": "http.response.start", "status": 200, "headers": []})
                await send({"type": "http.response.body", "body": b"ours"})
    """))
    try:
        server, port = serve(lambda port: [sys.executable, "-m", "uvicorn", "--app-dir", str(tmp_path),
                                           "--host", "127.0.0.1", "--port", str(port), "app:app"],
                             dict(os.environ), tmp_path / "app.log", "/health")
        try:
            assert port != taken
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as response:
                assert response.read() == b"ours"
        finally:
            stop(server)
    finally:
        holder.shutdown()
        holder.server_close()


@pytest.fixture
def server_env(tmp_path):
    return {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}


def test_tracking_server_round_trip(tmp_path, monkeypatch, server_env):
    server, port = serve(
        lambda port: [MLFLOW, "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
                      "--artifacts-destination", str(tmp_path / "artifacts"), "-h", "127.0.0.1", "-p", str(port),
                      "--workers", "1"],
        server_env, tmp_path / "server.log", "/health",
    )
    try:
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

    server, port = serve(
        lambda port: [MLFLOW, "models", "serve", "-m", "models:/pbc_serving@champion", "--env-manager", "local",
                      "-h", "127.0.0.1", "-p", str(port)],
        server_env | {"MLFLOW_TRACKING_URI": uri}, tmp_path / "serve.log", "/ping",
    )
    try:
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
    np.testing.assert_array_equal(served["death_median_beyond_follow_up"], expected["death_median_beyond_follow_up"])
    for column in ("cirrhosis_proba_1", "death_pred", *(c for c in expected if "_event_prob_" in c)):
        np.testing.assert_allclose(served[column].astype(float), expected[column], rtol=1e-12)  # NaN: beyond

import mlflow
import pytest

from clinical_mtl.cli import main


def _rows(out: str) -> dict:
    return {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}


def test_demo_prints_metrics_tracks_and_registers(tmp_path, monkeypatch, capsys):
    """With nothing configured, the demo tracks to ./mlflow.db and registers pbc_mtl@champion."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["demo", "--test-size", "0.3", "--random-state", "1"]) == 0
    out = capsys.readouterr().out
    assert "Held-out metrics (30% of patients)" in out
    rows = _rows(out)
    assert rows["cirrhosis"][1] == "binary" and rows["log_survival_days"][1] == "regression"
    assert 0.5 < float(rows["cirrhosis"][3]) <= 1.0
    assert (tmp_path / "mlflow.db").exists()
    assert "Registered as models:/pbc_mtl@champion (version 1)" in out
    assert f"mlflow ui --backend-store-uri sqlite:///{tmp_path}/mlflow.db" in out
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    version = mlflow.MlflowClient().get_model_version_by_alias("pbc_mtl", "champion")
    run = mlflow.get_run(version.run_id)
    assert run.data.metrics["test.cirrhosis.auroc"] == pytest.approx(float(rows["cirrhosis"][3]), abs=5e-4)
    assert run.data.metrics["data.n_rows"] < 418  # the training split only


def test_demo_without_tracking(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--no-track"]) == 0
    assert "Tracked in MLflow" not in capsys.readouterr().out
    assert not (tmp_path / "mlflow.db").exists()


def test_bad_option_is_a_usage_error(capsys):
    assert main(["demo", "--test-size", "2"]) == 2
    assert "Invalid value for '--test-size'" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--help"], ["demo", "--help"]])
def test_help(argv, capsys):
    assert main(argv) == 0
    assert "Usage: clinical-mtl" in capsys.readouterr().out

"""The command line: pipelines (train on PBC, register, batch-score) and ``clinical-mtl score``."""

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml

from clinical_mtl.cli import main
from clinical_mtl.outputs import flat_predictions
from clinical_mtl.tracking import load_native_model

PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"


def _pipeline_copy(name: str, folder: Path, **changes) -> Path:
    """A bundled pipeline with its relative paths read from ``pipelines/`` and outputs moved to ``folder``."""
    config = yaml.safe_load((PIPELINES / name).read_text())
    for key in ("schema", "input"):
        if key in config:
            config[key] = str((PIPELINES / config[key]).resolve())
    config.update(changes)
    path = folder / name
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The README's main job, run in a fresh folder: train on PBC (tracked, registered), then score."""
    folder = tmp_path_factory.mktemp("main_job")
    outputs = {"model_dir": str(folder / "pbc_model"), "metrics": str(folder / "metrics.csv"),
               "patients": str(folder / "patients.csv")}
    train = _pipeline_copy("pbc_train.yaml", folder, outputs=outputs)
    score = _pipeline_copy("pbc_score.yaml", folder, input=str(folder / "patients.csv"),
                           output=str(folder / "scores.parquet"), rejects=str(folder / "rejects.parquet"))
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        train_status = main(["run", str(train)])
        score_status = main(["run", str(score)])
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder}/mlflow.db")
        champion = mlflow.MlflowClient().get_model_version_by_alias("pbc_mtl", "champion")
        run = mlflow.get_run(champion.run_id)
        model = load_native_model("models:/pbc_mtl@champion")
    return {"folder": folder, "status": (train_status, score_status), "champion": champion, "run": run,
            "model": model}


def test_main_job_trains_tracks_registers_and_scores(trained, capfd):
    folder = trained["folder"]
    assert trained["status"] == (0, 0)
    metrics = pd.read_csv(folder / "metrics.csv", index_col=0)
    assert set(metrics.index) == {"cirrhosis", "log_survival_days"}
    assert 0.6 < metrics.loc["cirrhosis", "auroc"] <= 1.0
    assert (folder / "mlflow.db").exists() and str(trained["champion"].version) == "1"
    assert trained["run"].data.metrics["test.cirrhosis.auroc"] == pytest.approx(metrics.loc["cirrhosis", "auroc"])
    assert trained["run"].data.metrics["data.n_rows"] < 418  # the training split only

    scores = pd.read_parquet(folder / "scores.parquet")
    summary = json.loads((folder / "scores.summary.json").read_text())
    assert summary["rows_in"] == summary["rows_scored"] == len(scores) == 418 and summary["rows_rejected"] == 0
    assert len(pd.read_parquet(folder / "rejects.parquet")) == 0
    assert (scores["model_name"] == "pbc_mtl").all() and (scores["model_version"] == "1").all()
    assert (scores["run_id"] == trained["champion"].run_id).all()
    assert scores["id"].is_unique and scores["row_number"].tolist() == list(range(418))

    patients = pd.read_csv(folder / "patients.csv").set_index("id")
    expected = flat_predictions(trained["model"], patients, top_k=3)
    for name in expected.columns:
        if expected[name].dtype.kind == "f":
            np.testing.assert_allclose(scores[name], expected[name], rtol=1e-5, atol=1e-6)
        else:
            assert scores[name].astype(str).tolist() == expected[name].astype(str).tolist(), name
    assert {"cirrhosis_top3_feature", "log_survival_days_top1_contribution"} <= set(scores.columns)


def test_score_command_reports_rejects(trained, tmp_path, capsys):
    patients = pd.read_csv(trained["folder"] / "patients.csv").head(20)
    patients["bili"] = patients["bili"].astype(object)
    patients.loc[4, "bili"] = "high"
    patients.loc[9, "sex"] = "x"
    patients.to_csv(tmp_path / "patients.csv", index=False)
    status = main(["score", "--model", str(trained["folder"] / "pbc_model"), "--input", str(tmp_path / "patients.csv"),
                   "--output", str(tmp_path / "scores.csv")])
    out = capsys.readouterr().out
    assert status == 0
    assert "Scored 18 of 20 rows, rejected 2" in out
    assert len(pd.read_csv(tmp_path / "scores.csv")) == 18
    rejects = pd.read_csv(tmp_path / "scores.rejects.csv")
    assert rejects["row_number"].tolist() == [4, 9]
    assert "column 'bili' value 'high'" in rejects["reasons"][0] and "column 'sex'" in rejects["reasons"][1]


def test_score_command_error_is_clear_and_leaves_no_output(trained, tmp_path, capsys):
    pd.DataFrame({"id": [1, 2]}).to_csv(tmp_path / "ids_only.csv", index=False)
    status = main(["score", "--model", str(trained["folder"] / "pbc_model"), "--input", str(tmp_path / "ids_only.csv"),
                   "--output", str(tmp_path / "scores.parquet")])
    assert status == 1
    assert "ids_only.csv lacks the required column(s)" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [tmp_path / "ids_only.csv"]


def test_bad_pipeline_kind(tmp_path, capsys):
    (tmp_path / "p.yaml").write_text("kind: deploy\n")
    assert main(["run", str(tmp_path / "p.yaml")]) == 1
    assert "'kind' must be 'train' or 'score'" in capsys.readouterr().err


def test_bad_option_is_a_usage_error(capsys):
    assert main(["score", "--model", "m", "--input", "does-not-exist.csv", "--output", "o.parquet"]) == 2
    assert "does-not-exist.csv" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["score", "--help"]])
def test_help(argv, capsys):
    assert main(argv) == 0
    assert "Usage: clinical-mtl" in capsys.readouterr().out

"""The command line: pipelines (train on PBC, register, batch-score), ``clinical-mtl score``, process settings."""

import gc
import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from clinical_mtl.cli import main
from clinical_mtl.model.outputs import flat_predictions
from clinical_mtl.reporting.content import page_file_name
from clinical_mtl.tracking import load_native_model

PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"


def _pipeline_copy(name: str, folder: Path, **changes) -> Path:
    """A bundled pipeline with its relative paths read from ``pipelines/`` and outputs moved to ``folder``."""
    config = yaml.safe_load((PIPELINES / name).read_text())
    for key in ("schema", "input", "scores"):
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
               "patients": str(folder / "patients.csv"), "model_card": str(folder / "pbc_model_card.md"),
               "training_ids": str(folder / "training_ids.csv")}
    train = _pipeline_copy("pbc_train.yaml", folder, outputs=outputs)
    score = _pipeline_copy("pbc_score.yaml", folder, input=str(folder / "patients.csv"),
                           output=str(folder / "scores.parquet"), rejects=str(folder / "rejects.parquet"))
    report = _pipeline_copy("pbc_report.yaml", folder, input=str(folder / "patients.csv"),
                            scores=str(folder / "scores.parquet"), output=str(folder / "pbc_reports"),
                            training_ids=str(folder / "training_ids.csv"))
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        train_status = main(["run", str(train)])
        score_status = main(["run", str(score)])
        report_status = main(["run", str(report)])
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder}/mlflow.db")
        champion = mlflow.MlflowClient().get_model_version_by_alias("pbc_mtl", "champion")
        run = mlflow.get_run(champion.run_id)
        model = load_native_model("models:/pbc_mtl@champion")
    return {"folder": folder, "status": (train_status, score_status, report_status), "champion": champion, "run": run,
            "model": model}


def test_main_job_trains_tracks_registers_and_scores(trained, capfd):
    folder = trained["folder"]
    assert trained["status"] == (0, 0, 0)
    metrics = pd.read_csv(folder / "metrics.csv", index_col=0)
    assert set(metrics.index) == {"cirrhosis", "death"}
    assert 0.6 < metrics.loc["cirrhosis", "auroc"] <= 1.0 and 0.6 < metrics.loc["death", "harrell_c"] <= 1.0
    assert metrics.loc["death", "n_labelled"] + metrics.loc["cirrhosis", "n_labelled"] > 200  # censored kept
    assert (folder / "mlflow.db").exists() and str(trained["champion"].version) == "1"
    assert trained["run"].data.metrics["test.cirrhosis.auroc"] == pytest.approx(metrics.loc["cirrhosis", "auroc"])
    assert trained["run"].data.metrics["test.death.harrell_c"] == pytest.approx(metrics.loc["death", "harrell_c"])
    assert trained["run"].data.metrics["data.n_rows"] < 418  # the training split only

    scores = pd.read_parquet(folder / "scores.parquet")
    summary = json.loads((folder / "scores.summary.json").read_text())
    assert summary["rows_in"] == summary["rows_scored"] == len(scores) == 418 and summary["rows_rejected"] == 0
    assert len(pd.read_parquet(folder / "rejects.parquet")) == 0
    assert (scores["model_name"] == "pbc_mtl").all() and (scores["model_version"] == "1").all()
    assert (scores["run_id"] == trained["champion"].run_id).all()
    assert scores["id"].is_unique and scores["row_number"].tolist() == list(range(418))

    patients = pd.read_csv(folder / "patients.csv").set_index("id")
    expected = flat_predictions(trained["model"], patients, top_k=6)
    for name in expected.columns:
        if expected[name].dtype.kind == "f":
            np.testing.assert_allclose(scores[name], expected[name], rtol=1e-5, atol=1e-6)
        else:
            assert scores[name].astype(str).tolist() == expected[name].astype(str).tolist(), name
    assert {"cirrhosis_top3_feature", "death_top1_contribution", "death_event_prob_1826",
            "death_median_beyond_follow_up"} <= set(scores.columns)


def test_main_job_writes_and_logs_the_model_card(trained, monkeypatch):
    folder = trained["folder"]
    monkeypatch.chdir(folder)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder}/mlflow.db")
    markdown = (folder / "pbc_model_card.md").read_text()
    html = (folder / "pbc_model_card.html").read_text()
    for section in ("Intended use", "Training data", "Model settings", "Performance on held-out patients",
                    "Calibration", "Subgroups", "Negative transfer", "Known limits"):
        assert f"## {section}" in markdown and section in html
    assert "| cirrhosis | age_band | 50-65 |" in markdown and "| death | sex | f |" in markdown
    assert "Research demonstration on the Mayo Clinic PBC cohort" in markdown
    assert (folder / "pbc_model_card_files" / "reliability_cirrhosis.png").exists()
    assert (folder / "pbc_model_card_files" / "reliability_death.png").exists()  # predicted against Kaplan-Meier
    metrics = pd.read_csv(folder / "metrics.csv", index_col=0)
    assert metrics.loc["cirrhosis", "auroc_lower"] <= metrics.loc["cirrhosis", "auroc"] <= metrics.loc[
        "cirrhosis", "auroc_upper"]
    logged = {f.path for f in mlflow.artifacts.list_artifacts(run_id=trained["champion"].run_id,
                                                              artifact_path="model_card")}
    assert {"model_card/model_card.md", "model_card/model_card.html"} <= logged


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
    assert "'kind' must be 'train', 'score' or 'report'" in capsys.readouterr().err


def test_main_job_ends_with_a_page_per_scored_patient(trained):
    folder = trained["folder"] / "pbc_reports"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["rows_in"] == summary["pages"] == 418 and summary["rows_rejected"] == 0
    assert summary["model"]["name"] == "pbc_mtl" and summary["model"]["run_id"] == trained["champion"].run_id
    pages = list((folder / "patients").glob("*.html"))
    index = (folder / "index.html").read_text()
    assert len(pages) == 418 and all(f'href="patients/{page.name}"' in index for page in pages)
    scores = pd.read_parquet(trained["folder"] / "scores.parquet").set_index("id")  # CSV ids as the schema's integers
    page = next(p for p in pages if p.name.startswith("patient-1-")).read_text()
    # The page shows the scored file's probability and its largest contribution, in words.
    probability, top = scores.loc[1, ["cirrhosis_proba_1", "cirrhosis_top1_contribution"]]
    word = "likely" if probability > 0.5 else "unlikely"
    assert f"Cirrhosis (histologic stage 4): {word} ({probability:.0%})" in page
    assert f"the probability of cirrhosis (histologic stage 4) by {abs(top):.2f}." in page
    assert "version 1" in page and "Research demonstration on the Mayo Clinic PBC cohort" in page
    # The training split's ids, written by the train pipeline beside its outputs, mark those patients' pages.
    from sklearn.model_selection import train_test_split

    from clinical_mtl.datasets import load_pbc

    X, Y = load_pbc()
    train_ids, _ = train_test_split(X.index, test_size=0.25, random_state=0, stratify=Y["cirrhosis"].astype(
        "string").fillna("unlabelled"))
    written_ids = pd.read_csv(trained["folder"] / "training_ids.csv")
    assert list(written_ids.columns) == ["id"] and sorted(written_ids["id"]) == sorted(train_ids)
    marked = {p.name for p in pages if "This patient was in the training data" in p.read_text()}
    assert len(marked) == len(train_ids) == 313
    assert marked == {page_file_name(i) for i in train_ids}
    assert "313 of these patients were in the training data" in index
    assert str(trained["folder"]) not in index  # file names only on a page meant to be shared


def test_report_command_lists_rows_it_cannot_report(trained, tmp_path, capsys):
    patients = pd.read_csv(trained["folder"] / "patients.csv").head(5)
    patients.loc[2, "sex"] = "x"
    patients.to_csv(tmp_path / "patients.csv", index=False)
    status = main(["report", "--model", str(trained["folder"] / "pbc_model"), "--input", str(tmp_path / "patients.csv"),
                   "--output", str(tmp_path / "pages")])
    assert status == 0
    assert "Wrote 4 patient pages for 5 rows (1 not reported" in capsys.readouterr().out
    rejected = pd.read_csv(tmp_path / "pages" / "rejected.csv")
    assert rejected["row_number"].tolist() == [2] and "column 'sex' value 'x'" in rejected["reasons"][0]
    assert "column &#39;sex&#39; value &#39;x&#39;" in (tmp_path / "pages" / "index.html").read_text()
    assert len(list((tmp_path / "pages" / "patients").iterdir())) == 4


def test_bad_option_is_a_usage_error(capsys):
    assert main(["score", "--model", "m", "--input", "does-not-exist.csv", "--output", "o.parquet"]) == 2
    assert "does-not-exist.csv" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["score", "--help"]])
def test_help(argv, capsys):
    assert main(argv) == 0
    assert "Usage: clinical-mtl" in capsys.readouterr().out


@pytest.fixture
def process_state(monkeypatch, small_schema_model, tmp_path):
    """Scoring of 20 synthetic patients one row a chunk, recording torch's threads and gc's frozen-object count
    while it runs (when it hands free memory back, after its 16th chunk), under 3 torch threads."""
    from clinical_mtl.datasets import make_synthetic_cohort
    from clinical_mtl.scoring import local as scoring

    make_synthetic_cohort(20, random_state=0)[0].reset_index().to_csv(tmp_path / "patients.csv", index=False)
    seen = []
    release = scoring.release_free_memory
    probe = [[]]  # probe[0]: an object the gc tracks, made after any freeze of the caller's

    def recording_release():
        unfrozen = any(o is probe[0] for o in gc.get_objects())  # (frozen objects are in no generation)
        seen.append((torch.get_num_threads(), gc.get_freeze_count(), unfrozen))
        return release()

    monkeypatch.setattr(scoring, "release_free_memory", recording_release)
    threads = torch.get_num_threads()
    torch.set_num_threads(3)
    yield {"model": str(small_schema_model), "input": tmp_path / "patients.csv", "seen": seen, "probe": probe}
    torch.set_num_threads(threads)
    gc.unfreeze()


def test_score_files_leaves_the_callers_process_settings_alone(process_state, tmp_path):
    from clinical_mtl.scoring import load_model_for_scoring, score_files

    loaded = load_model_for_scoring(process_state["model"])
    gc.freeze()  # the caller's own choice, which scoring must neither add to nor undo
    frozen = gc.get_freeze_count()
    process_state["probe"][0] = []  # made after the caller's freeze: frozen only if scoring freezes
    summary = score_files(loaded, process_state["input"], tmp_path / "scores.parquet", chunk_size=1)
    assert summary.rows_scored == 20
    (threads, during, probe_unfrozen), = process_state["seen"]
    assert threads == 3 and probe_unfrozen  # nothing new frozen
    # Frozen objects that die leave the count (it may fall a little), but the caller's stay frozen.
    assert torch.get_num_threads() == 3 and 0.9 * frozen <= gc.get_freeze_count() <= frozen


def test_the_score_runner_tunes_the_process_while_it_scores(process_state, tmp_path):
    from clinical_mtl.config import ScoreConfig
    from clinical_mtl.pipelines import run_score

    gc.unfreeze()
    config = ScoreConfig(model=process_state["model"], input=process_state["input"],
                         output=tmp_path / "scores.parquet", chunk_size=1)
    assert run_score(config).rows_scored == 20
    (threads, frozen, probe_unfrozen), = process_state["seen"]
    assert threads == 2 and frozen > 0 and not probe_unfrozen  # a core left to the reader; no gc scans of the model
    assert (torch.get_num_threads(), gc.get_freeze_count()) == (3, 0)  # and both given back

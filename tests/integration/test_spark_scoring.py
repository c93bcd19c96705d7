"""The Spark engine gives the local engine's output, on a local[2] session."""

import json
from pathlib import Path

import pandas as pd
import pytest
from saved_models import save_schema_model

from clinical_mtl.config import ScoreConfig
from clinical_mtl.datasets import make_synthetic_cohort
from clinical_mtl.exceptions import InputFileError, SchemaError
from clinical_mtl.pipelines import run_score
from clinical_mtl.scoring import load_model_for_scoring, score_files
from clinical_mtl.scoring.spark import score_files_with_spark, spark_session


@pytest.fixture(scope="module")
def spark():
    session = spark_session("local[2]")
    session.conf.set("spark.sql.shuffle.partitions", "4")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_schema_model(tmp_path_factory.mktemp("model") / "synthetic_mtl", 300, random_state=1,
                             hidden_layer_sizes=(16,), max_epochs=15, ensemble_size=2)


@pytest.fixture(scope="module")
def input_folder(tmp_path_factory):
    """Two Parquet files of patients: good rows, bad values, and ids repeated within and across files."""
    X, _ = make_synthetic_cohort(400, random_state=7)
    frame = X.reset_index()
    frame["sex"] = frame["sex"].astype(object).where(frame["sex"].notna(), None)
    frame["smoking"] = frame["smoking"].astype(object).where(frame["smoking"].notna(), None)
    frame.loc[3, "age"] = 250.0                      # out of range
    frame.loc[10, "sex"] = "unknown"                 # unknown category
    frame.loc[20, "patient_id"] = frame.loc[5, "patient_id"]     # repeated id, same file
    frame.loc[350, "patient_id"] = frame.loc[6, "patient_id"]    # repeated id, next file
    frame.loc[351, "patient_id"] = frame.loc[7, "patient_id"]    # repeated id and out of range
    frame.loc[351, "age"] = -1.0
    folder = tmp_path_factory.mktemp("patients")
    frame.iloc[:300].to_parquet(folder / "part_a.parquet", index=False, row_group_size=128)
    frame.iloc[300:].to_parquet(folder / "part_b.parquet", index=False)
    return folder


def _table(path) -> pd.DataFrame:
    """A written table with text as plain objects and None for missing text: the local engine writes
    labels and model columns dictionary-encoded, Spark as plain strings."""
    frame = pd.read_parquet(path)
    for name in frame.columns:
        if isinstance(frame[name].dtype, pd.CategoricalDtype) or frame[name].dtype == object:
            frame[name] = frame[name].astype(object).where(frame[name].notna(), None)
    return frame


def test_spark_output_equals_local_output(spark, model_dir, input_folder, tmp_path):
    loaded = load_model_for_scoring(str(model_dir))
    local = score_files(loaded, input_folder, tmp_path / "local.parquet", chunk_size=64, progress=False)
    distributed = score_files_with_spark(loaded, input_folder, tmp_path / "spark.parquet", spark=spark)

    assert (distributed.rows_in, distributed.rows_scored, distributed.rows_rejected) == (
        local.rows_in, local.rows_scored, local.rows_rejected) == (400, 395, 5)
    assert distributed.engine == "spark"
    written = json.loads((tmp_path / "spark.summary.json").read_text())
    assert written["rows_scored"] == 395 and written["engine"] == "spark"

    expected, actual = _table(tmp_path / "local.parquet"), _table(tmp_path / "spark.parquet")
    assert actual.columns.tolist() == expected.columns.tolist()
    assert actual["row_number"].is_monotonic_increasing
    assert actual["scored_at"].dt.tz is not None and expected["scored_at"].dt.tz is not None
    pd.testing.assert_frame_equal(actual.drop(columns="scored_at"), expected.drop(columns="scored_at"),
                                  check_dtype=False, check_exact=False, rtol=1e-6, atol=1e-7)

    expected_rejects, actual_rejects = (_table(tmp_path / "local.rejects.parquet"),
                                        _table(tmp_path / "spark.rejects.parquet"))
    pd.testing.assert_frame_equal(actual_rejects, expected_rejects, check_dtype=False)
    assert actual_rejects["row_number"].tolist() == [3, 10, 20, 350, 351]
    assert [Path(name).name for name in actual_rejects["source_file"]] == ["part_a.parquet"] * 3 + [
        "part_b.parquet"] * 2
    assert actual_rejects["n_problems"].tolist() == [1, 1, 1, 1, 2]
    assert "duplicate id" in actual_rejects["reasons"].iloc[3]
    assert "age" in actual_rejects["reasons"].iloc[4] and "duplicate id" in actual_rejects["reasons"].iloc[4]


def test_spark_engine_from_a_pipeline_with_explanations(spark, model_dir, input_folder, tmp_path):
    config = ScoreConfig(model=str(model_dir), input=input_folder / "part_b.parquet",
                         output=tmp_path / "scores.parquet", top_k=2, engine="spark")
    summary = run_score(config)
    local = score_files(load_model_for_scoring(str(model_dir)), input_folder / "part_b.parquet",
                        tmp_path / "local.parquet", top_k=2, progress=False)
    assert (summary.rows_in, summary.rows_scored, summary.rows_rejected) == (100, 99, 1)  # the age of -1
    assert (local.rows_scored, local.rows_rejected) == (99, 1)
    scores, expected = _table(tmp_path / "scores.parquet"), _table(tmp_path / "local.parquet")
    contributions = [name for name in expected.columns if "_top" in name]
    assert len(contributions) == 3 * 2 * 2  # 3 outcomes, top 2, feature and contribution
    pd.testing.assert_frame_equal(scores.drop(columns="scored_at"), expected.drop(columns="scored_at"),
                                  check_dtype=False, check_exact=False, rtol=1e-5, atol=1e-6)


def test_spark_engine_errors_leave_no_output(spark, model_dir, input_folder, tmp_path):
    loaded = load_model_for_scoring(str(model_dir))
    lacking = pd.read_parquet(input_folder / "part_b.parquet").drop(columns=["age"])
    lacking.to_parquet(tmp_path / "lacking.parquet", index=False)
    with pytest.raises(SchemaError, match=r"lacking.parquet.*'age'"):
        score_files_with_spark(loaded, tmp_path / "lacking.parquet", tmp_path / "out.parquet", spark=spark)
    (tmp_path / "notes.csv").write_text("patient_id\n1\n")
    with pytest.raises(InputFileError, match="Parquet only"):
        score_files_with_spark(loaded, tmp_path / "notes.csv", tmp_path / "out.parquet", spark=spark)
    data = (input_folder / "part_b.parquet").read_bytes()
    (tmp_path / "truncated.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputFileError, match="truncated.parquet"):
        score_files_with_spark(loaded, tmp_path / "truncated.parquet", tmp_path / "out.parquet", spark=spark)
    assert not list(tmp_path.glob("out*"))
    assert not list(tmp_path.glob(".out*"))

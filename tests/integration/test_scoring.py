"""Batch scoring of files: every row scored or rejected, predictions as the model's, atomic outputs."""

import errno
import hashlib
import json
import os
import re
import signal
import tempfile
from dataclasses import replace
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from blocking_runner import blocked_cli

from clinical_mtl import MultiTaskMLP
from clinical_mtl.data.id_register import IdRegister
from clinical_mtl.data.persistence import save_model
from clinical_mtl.data.schema import ROW_NUMBER
from clinical_mtl.data.writing import AtomicTableWriter
from clinical_mtl.datasets import make_synthetic_cohort, synthetic_schema
from clinical_mtl.exceptions import InputFileError, OutputPathError, RowAccountingError, SchemaError
from clinical_mtl.model.outputs import (
    TOP_CONTRIBUTION,
    TOP_FEATURE,
    output_columns,
    top_contributions,
)
from clinical_mtl.scoring import load_model_for_scoring, score_files
from clinical_mtl.scoring import local as scoring

pytestmark = pytest.mark.integration

ID = "patient_id"
REQUIRED = ("age", "sex")  # made non-nullable here: the synthetic schema allows every feature to be missing
FEATURES = synthetic_schema().feature_names
N_ROWS = 40
FIRST_ID = 1000

# Row -> the (column, rule) of each problem, in the order the reasons name them (column order).
PROBLEMS = {
    3: [("crp", "expected a number")],
    4: [(ID, "duplicate id (an earlier row has it)")],  # repeats row 1: same chunk of 7
    5: [("age", "expected 18 <= age <= 110")],
    8: [("smoking", "expected one of never, former, current")],
    11: [("age", "a value is required")],
    13: [(ID, "a value is required")],
    15: [(ID, "duplicate id (an earlier row has it)")],  # repeats row 2: a later chunk
    20: [(ID, "duplicate id (an earlier row has it)"), ("bmi", "expected 10 <= bmi <= 60")],  # repeats row 0
    22: [(ID, "duplicate id (an earlier row has it)")],  # repeats rejected row 5: its id was used
    25: [("sex", "a value is required")],
    27: [("age", "expected 18 <= age <= 110"), ("smoking", "expected one of never, former, current")],
}
GOOD = [row for row in range(N_ROWS) if row not in PROBLEMS]


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """A small model trained with the (stricter) synthetic schema, saved with it and loaded for scoring."""
    schema = synthetic_schema()
    schema = replace(schema, features=tuple(
        replace(f, nullable=False) if f.name in REQUIRED else f for f in schema.features))
    X, Y = make_synthetic_cohort(300, random_state=0)
    model = MultiTaskMLP(hidden_layer_sizes=(16,), max_epochs=20, ensemble_size=2, random_state=0,
                         tasks=schema.tasks).fit(X, Y)
    folder = save_model(model, tmp_path_factory.mktemp("models") / "synthetic-mlp", schema=schema)
    return load_model_for_scoring(str(folder))


@pytest.fixture(scope="module")
def patients():
    """(clean features, table as a file holds it): good rows mixed with every kind of bad row."""
    X, _ = make_synthetic_cohort(N_ROWS, random_state=7, feature_missing_rate=0.0)
    clean = X.reset_index(drop=True)
    clean.loc[30, "bmi"] = np.nan  # missing but allowed: scored
    clean.loc[31, "smoking"] = np.nan
    table = clean.astype({"sex": object, "smoking": object})
    numbers = {name: float for name in FEATURES if name not in ("sex", "smoking")}
    table = table.where(table.notna(), None).astype(numbers)
    table.insert(0, ID, pd.array(np.arange(FIRST_ID, FIRST_ID + N_ROWS), dtype="Int64"))
    table["crp"] = [repr(value) for value in table["crp"]]  # numbers as text: parsed by the schema
    table.loc[3, "crp"] = "abc"
    table.loc[4, ID] = table.loc[1, ID]
    table.loc[5, "age"] = 500.0
    table.loc[8, "smoking"] = "sometimes"
    table.loc[11, "age"] = np.nan
    table.loc[13, ID] = pd.NA
    table.loc[15, ID] = table.loc[2, ID]
    table.loc[20, ID] = table.loc[0, ID]
    table.loc[20, "bmi"] = 99.0
    table.loc[22, ID] = table.loc[5, ID]
    table.loc[25, "sex"] = None
    table.loc[27, "age"] = 10.0
    table.loc[27, "smoking"] = "daily"
    return clean, table


def write(table, path):
    if path.suffix == ".csv":
        table.to_csv(path, index=False)
    else:
        table.to_parquet(path, index=False)
    return path


def read(path):
    return pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)


def check_predictions(loaded, output, features):
    """The output's predictions are the model's own ``predict``/``predict_proba`` of ``features``."""
    model = loaded.model
    predicted, probabilities = model.predict(features), model.predict_proba(features)
    for spec in model.task_specs_:
        if spec.is_classification:
            assert output[f"{spec.name}_pred"].astype(str).tolist() == predicted[spec.name].astype(str).tolist()
            for k, label in enumerate(spec.classes):
                np.testing.assert_allclose(output[f"{spec.name}_proba_{label}"].to_numpy(),
                                           probabilities[spec.name][:, k], rtol=0, atol=1e-6)
        else:
            np.testing.assert_allclose(output[f"{spec.name}_pred"].to_numpy(), predicted[spec.name].to_numpy(),
                                       rtol=0, atol=1e-6)
            if spec.name in model.conformal_scores_:  # the 90% prediction interval
                intervals = model.predict_interval(features)
                for side in ("lower", "upper"):
                    np.testing.assert_allclose(output[f"{spec.name}_{side}"].to_numpy(),
                                               intervals[f"{spec.name}_{side}"].to_numpy(), rtol=0, atol=1e-6)
            else:
                assert f"{spec.name}_lower" not in output


def check_reasons(rejects, first_row=0):
    assert rejects[ROW_NUMBER].tolist() == [row + first_row for row in PROBLEMS]
    for row, n_problems, reasons in zip(PROBLEMS, rejects["n_problems"], rejects["reasons"]):
        parts = reasons.split("; ")
        assert n_problems == len(parts) == len(PROBLEMS[row])
        for part, (column, rule) in zip(parts, PROBLEMS[row]):
            assert part.startswith(f"column '{column}' value ") and part.endswith(f": {rule}"), (row, part)


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_every_row_is_scored_or_rejected_with_its_reasons(tmp_path, loaded, patients, suffix):
    clean, table = patients
    source = write(table, tmp_path / f"patients{suffix}")
    output = tmp_path / "out" / "scores.parquet"

    summary = score_files(loaded, source, output, chunk_size=7)

    scored, rejects = read(output), read(tmp_path / "out" / "scores.rejects.parquet")
    assert (summary.rows_in, summary.rows_scored, summary.rows_rejected) == (N_ROWS, len(GOOD), len(PROBLEMS))
    assert (len(scored), len(rejects)) == (len(GOOD), len(PROBLEMS))
    assert sorted(scored[ROW_NUMBER].tolist() + rejects[ROW_NUMBER].tolist()) == list(range(N_ROWS))
    assert scored[ROW_NUMBER].tolist() == GOOD  # input order kept
    assert scored[ID].is_unique
    assert scored[ID].astype(int).tolist() == [FIRST_ID + row for row in GOOD]
    check_reasons(rejects)
    assert set(rejects["source_file"]) == {str(source)}
    expected_ids = [None if pd.isna(v) else str(v) for v in table.loc[list(PROBLEMS), ID]]
    assert rejects[ID].tolist() == expected_ids
    assert "'abc'" in rejects.loc[rejects[ROW_NUMBER] == 3, "reasons"].item()
    assert "'sometimes'" in rejects.loc[rejects[ROW_NUMBER] == 8, "reasons"].item()
    check_predictions(loaded, scored, clean.loc[GOOD])


def test_results_do_not_depend_on_the_chunk_size(tmp_path, loaded, patients):
    _, table = patients
    source = write(table, tmp_path / "patients.parquet")
    results = []
    for chunk_size in (3, 7, 16, 1000):
        output = tmp_path / f"out{chunk_size}.parquet"
        score_files(loaded, source, output, chunk_size=chunk_size)
        scored = pq.read_table(output).drop_columns(["scored_at"])
        rejects = pq.read_table(tmp_path / f"out{chunk_size}.rejects.parquet")
        results.append((scored, rejects))
    for scored, rejects in results[1:]:
        assert scored.schema == results[0][0].schema
        for name in scored.column_names:
            first = results[0][0][name]
            if pa.types.is_floating(first.type):
                np.testing.assert_allclose(scored[name].to_numpy(), first.to_numpy(), rtol=0, atol=1e-6)
            else:
                assert scored[name].to_pylist() == first.to_pylist(), name
        assert rejects.equals(results[0][1])


def test_parquet_row_groups_shorter_than_a_chunk_keep_predictions_exact(tmp_path, loaded):
    """Chunks cut at row-group boundaries are shorter than chunk_size; each must still keep its own inputs."""
    X, _ = make_synthetic_cohort(600, random_state=11, feature_missing_rate=0.0)
    source = tmp_path / "groups.parquet"
    pq.write_table(pa.Table.from_pandas(X.reset_index(), preserve_index=False), source, row_group_size=10)
    score_files(loaded, source, tmp_path / "out.parquet", chunk_size=7)
    check_predictions(loaded, pd.read_parquet(tmp_path / "out.parquet"), X)


def test_integer_ids_keep_their_type_when_a_chunk_has_a_missing_id(tmp_path, loaded):
    X, _ = make_synthetic_cohort(30, random_state=2, feature_missing_rate=0.0)
    table = pa.Table.from_pandas(X.reset_index(), preserve_index=False).replace_schema_metadata(None)
    ids = [2**53 + i for i in range(30)]  # not exact as float64
    ids[20] = None
    table = table.set_column(0, ID, pa.array(ids, pa.int64()))
    pq.write_table(table, tmp_path / "ids.parquet")
    for chunk_size in (7, 100):
        output = tmp_path / f"out{chunk_size}.parquet"
        summary = score_files(loaded, tmp_path / "ids.parquet", output, chunk_size=chunk_size)
        assert summary.rows_rejected == 1
        scored = pq.read_table(output)
        assert scored.schema.field(ID).type == pa.int64()
        assert scored[ID].to_pylist() == ids[:20] + ids[21:]


def test_a_chunk_without_any_id_is_rejected_and_the_run_goes_on(tmp_path, loaded):
    X, _ = make_synthetic_cohort(20, random_state=2, feature_missing_rate=0.0)
    table = X.reset_index()
    table[ID] = pd.array([f"P{i}" for i in range(20)], dtype=object)
    table.loc[:6, ID] = None  # the whole first chunk
    table.loc[15, ID] = "P8"
    source = write(table, tmp_path / "ids.csv")
    text_ids = replace(loaded, schema=replace(loaded.schema, id_type="string"))
    summary = score_files(text_ids, source, tmp_path / "out.parquet", chunk_size=7)
    assert (summary.rows_scored, summary.rows_rejected) == (12, 8)
    scored = pd.read_parquet(tmp_path / "out.parquet")
    assert scored[ID].tolist() == [f"P{i}" for i in range(7, 20) if i != 15]
    rejects = pd.read_parquet(tmp_path / "out.rejects.parquet")
    assert rejects[ROW_NUMBER].tolist() == [0, 1, 2, 3, 4, 5, 6, 15]


def test_the_summary_is_written_beside_the_output(tmp_path, loaded, patients):
    _, table = patients
    source = write(table, tmp_path / "patients.parquet")
    before = datetime.now(timezone.utc)
    summary = score_files(loaded, source, tmp_path / "out" / "scores.parquet", chunk_size=7)
    written = json.loads((tmp_path / "out" / "scores.summary.json").read_text())
    assert written == json.loads(json.dumps(summary.to_dict(), default=str))
    assert (written["rows_in"], written["rows_scored"], written["rows_rejected"]) == (N_ROWS, len(GOOD), len(PROBLEMS))
    assert written["seconds"] > 0
    assert written["rows_per_second"] == round(N_ROWS / written["seconds"])  # whole rows per second
    assert written["input_files"] == [str(source)]
    assert written["output"] == str(tmp_path / "out" / "scores.parquet")
    assert written["rejects"] == str(tmp_path / "out" / "scores.rejects.parquet")
    assert written["model"] == {"name": "synthetic-mlp", "version": None, "run_id": None,
                                "reference": loaded.reference}
    assert before <= datetime.fromisoformat(written["started_at"]) <= datetime.now(timezone.utc)
    assert set(written["seconds_by_step"]) >= {"read", "validate", "predict", "write"}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "scores.parquet", "scores.rejects.parquet", "scores.summary.json"]


def test_a_folder_is_scored_as_one_input(tmp_path, loaded, patients):
    clean, table = patients
    folder = tmp_path / "in"
    folder.mkdir()
    parts = [table.iloc[:9], table.iloc[9:24], table.iloc[24:]]  # names sort in this order
    files = [write(part, folder / f"part{k}.parquet") for k, part in enumerate(parts)]
    (folder / "notes.txt").write_text("not an input")
    output = tmp_path / "scores.parquet"

    summary = score_files(loaded, folder, output, chunk_size=7)

    assert summary.input_files == [str(f) for f in files]
    assert (summary.rows_in, summary.rows_scored, summary.rows_rejected) == (N_ROWS, len(GOOD), len(PROBLEMS))
    scored, rejects = pd.read_parquet(output), pd.read_parquet(tmp_path / "scores.rejects.parquet")
    assert scored[ROW_NUMBER].tolist() == GOOD  # counted across files
    check_reasons(rejects)  # the repeats of rows 0 and 2 (file 0) in file 1 are caught
    file_of = {row: files[0 if row < 9 else 1 if row < 24 else 2] for row in PROBLEMS}
    assert rejects["source_file"].tolist() == [str(file_of[row]) for row in PROBLEMS]
    check_predictions(loaded, scored, clean.loc[GOOD])


def test_csv_output(tmp_path, loaded, patients):
    clean, table = patients
    source = write(table, tmp_path / "patients.csv")
    summary = score_files(loaded, source, tmp_path / "scores.csv", chunk_size=7)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "patients.csv", "scores.csv", "scores.rejects.csv", "scores.summary.json"]
    scored, rejects = pd.read_csv(tmp_path / "scores.csv"), pd.read_csv(tmp_path / "scores.rejects.csv")
    assert summary.rows_scored == len(scored) == len(GOOD)
    assert scored[ROW_NUMBER].tolist() == GOOD
    assert scored[ID].tolist() == [FIRST_ID + row for row in GOOD]
    assert scored["subtype_pred"].isin(["A", "B", "C"]).all()
    assert scored["model_name"].eq("synthetic-mlp").all()
    check_reasons(rejects)
    check_predictions(loaded, scored, clean.loc[GOOD])


def test_top_k_adds_the_largest_contributions(tmp_path, loaded, patients):
    clean, table = patients
    source = write(table, tmp_path / "patients.parquet")
    score_files(loaded, source, tmp_path / "scores.parquet", top_k=2, chunk_size=7)
    scored = pd.read_parquet(tmp_path / "scores.parquet")
    columns = [(c.name, c.dtype) for c in output_columns(loaded.model, 2) if c.part in (TOP_FEATURE, TOP_CONTRIBUTION)]
    assert len(columns) == 3 * 2 * 2
    assert all(name in scored.columns for name, _ in columns)
    expected = top_contributions(loaded.model, clean.loc[GOOD], 2)
    for name, kind in columns:
        if kind == "string":
            assert scored[name].isin(FEATURES).all(), name
            assert scored[name].tolist() == expected[name].tolist(), name
        else:
            assert np.isfinite(scored[name]).all()
            np.testing.assert_allclose(scored[name].to_numpy(), expected[name].to_numpy(), rtol=0, atol=1e-6)
    for outcome in loaded.model.tasks_:
        first, second = scored[f"{outcome}_top1_contribution"].abs(), scored[f"{outcome}_top2_contribution"].abs()
        assert (first >= second).all()
        assert (scored[f"{outcome}_top1_feature"] != scored[f"{outcome}_top2_feature"]).all()


def test_the_model_is_named_in_every_row(tmp_path, loaded, patients):
    _, table = patients
    before = datetime.now(timezone.utc)
    score_files(loaded, write(table, tmp_path / "patients.parquet"), tmp_path / "scores.parquet")
    scored = pq.read_table(tmp_path / "scores.parquet")
    assert scored.column_names[:2] == [ROW_NUMBER, ID]
    assert scored.column_names[-4:] == ["model_name", "model_version", "run_id", "scored_at"]
    assert set(scored["model_name"].to_pylist()) == {"synthetic-mlp"}
    assert set(scored["model_version"].to_pylist()) == {None}
    assert set(scored["run_id"].to_pylist()) == {None}
    assert scored.schema.field("scored_at").type == pa.timestamp("us", tz="UTC")
    stamps = set(scored["scored_at"].to_pylist())
    assert len(stamps) == 1
    assert before.replace(microsecond=0) <= stamps.pop() <= datetime.now(timezone.utc)


def test_two_runs_give_the_same_output_but_for_scored_at(tmp_path, loaded, patients):
    _, table = patients
    source = write(table, tmp_path / "patients.parquet")
    for run in ("one", "two"):
        score_files(loaded, source, tmp_path / run / "scores.parquet", top_k=1, chunk_size=7)
    one, two = (pq.read_table(tmp_path / run / "scores.parquet") for run in ("one", "two"))
    assert one["scored_at"] != two["scored_at"]
    assert one.drop_columns(["scored_at"]).equals(two.drop_columns(["scored_at"]))
    assert pq.read_table(tmp_path / "one" / "scores.rejects.parquet").equals(
        pq.read_table(tmp_path / "two" / "scores.rejects.parquet"))


# -- inputs that cannot be scored leave nothing behind ---------------------------------------


def empty_parquet(loaded, folder):
    table = make_synthetic_cohort(5, random_state=0)[0].reset_index().iloc[:0]
    return write(table, folder / "empty.parquet")


def header_only_csv(loaded, folder):
    path = folder / "empty.csv"
    path.write_text(",".join([ID, *FEATURES]) + "\n")
    return path


def zero_byte_csv(loaded, folder):
    path = folder / "nothing.csv"
    path.write_bytes(b"")
    return path


def lacking_a_column(loaded, folder):
    table = make_synthetic_cohort(20, random_state=0)[0].reset_index().drop(columns=["crp", "smoking"])
    return write(table, folder / "lacking.parquet")


def lacking_a_column_csv(loaded, folder):
    table = make_synthetic_cohort(20, random_state=0)[0].reset_index().drop(columns=[ID])
    return write(table, folder / "lacking.csv")


def truncated_parquet(loaded, folder):
    path = write(make_synthetic_cohort(500, random_state=0)[0].reset_index(), folder / "cut.parquet")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize("make_input, error, message", [
    (empty_parquet, InputFileError, r"Input file .*empty.parquet has no rows"),
    (header_only_csv, InputFileError, r"Input file .*empty.csv has no rows"),
    (zero_byte_csv, InputFileError, r"Input file .*nothing.csv has no header line naming its columns"),
    (lacking_a_column, SchemaError, r"Input file .*lacking.parquet lacks the required column\(s\) \['crp', 'smoking'\]"),
    (lacking_a_column_csv, SchemaError, r"Input file .*lacking.csv lacks the required column\(s\) \['patient_id'\]"),
    (truncated_parquet, InputFileError, r"Cannot read .*cut.parquet"),
])
def test_an_unusable_input_is_a_typed_error_and_leaves_nothing(tmp_path, loaded, make_input, error, message):
    source = make_input(loaded, tmp_path)
    destination = tmp_path / "out"
    with pytest.raises(error, match=message):
        score_files(loaded, source, destination / "scores.parquet", chunk_size=7)
    assert not destination.exists() or list(destination.iterdir()) == []


@pytest.mark.parametrize("make_input", [empty_parquet, truncated_parquet, lacking_a_column])
def test_a_bad_file_after_good_ones_in_a_folder_leaves_nothing(tmp_path, loaded, patients, make_input):
    """Writing has begun when the bad file is reached: the partial outputs are removed."""
    folder = tmp_path / "in"
    folder.mkdir()
    write(patients[1], folder / "a_good.parquet")
    bad = make_input(loaded, tmp_path)
    bad.rename(folder / f"b_bad{bad.suffix}")
    destination = tmp_path / "out"
    with pytest.raises((InputFileError, SchemaError), match="b_bad"):  # unreadable, or lacking a column
        score_files(loaded, folder, destination / "scores.parquet", chunk_size=7)
    assert list(destination.iterdir()) == []


def test_inputs_that_are_not_there_or_not_tables(tmp_path, loaded):
    with pytest.raises(InputFileError, match="does not exist"):
        score_files(loaded, tmp_path / "nowhere.parquet", tmp_path / "out.parquet")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputFileError, match=r"is not a \.csv or \.parquet file"):
        score_files(loaded, tmp_path / "notes.txt", tmp_path / "out.parquet")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputFileError, match="holds no .csv or .parquet file"):
        score_files(loaded, tmp_path / "empty", tmp_path / "out.parquet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "notes.txt"]


@pytest.mark.parametrize("options, message", [
    ({"chunk_size": 0}, "chunk_size must be at least 1, got 0"),
    ({"top_k": -1}, "top_k must be 0 or more, got -1"),
])
def test_bad_options_are_refused_before_reading(tmp_path, loaded, patients, options, message):
    source = write(patients[1], tmp_path / "patients.parquet")
    with pytest.raises(ValueError, match=message):
        score_files(loaded, source, tmp_path / "out" / "scores.parquet", **options)
    assert not (tmp_path / "out").exists()


def test_a_model_saved_without_a_schema_is_scored_with_its_own_columns(tmp_path, loaded):
    folder = save_model(loaded.model, tmp_path / "bare")
    bare = load_model_for_scoring(str(folder), id_column="record")
    assert bare.schema.cohort == "model" and bare.schema.id_column == "record"
    X, _ = make_synthetic_cohort(12, random_state=4)
    table = X.reset_index(drop=True)
    table.insert(0, "record", [f"r{i}" for i in range(12)])
    table["smoking"] = table["smoking"].cat.add_categories(["sometimes"])
    table.loc[2, "smoking"] = "sometimes"  # any category: the model has no list of them
    table.loc[5, "age"] = 500.0  # no range either
    table.loc[7, "hemoglobin"] = np.inf  # but only finite numbers
    table.loc[9, "crp"] = 0.0  # 0 and negative values where the model takes asinh, a log-like transform
    table.loc[10, "bilirubin"] = -1.0
    table.loc[11, "albumin"] = 1e300  # but only values the network can represent
    summary = score_files(bare, write(table, tmp_path / "patients.parquet"), tmp_path / "scores.parquet")
    assert (summary.rows_scored, summary.rows_rejected) == (10, 2)
    rejects = pd.read_parquet(tmp_path / "scores.rejects.parquet")
    assert loaded.model.preprocessor_.log_columns_ == ["crp", "bilirubin"]
    for reason, rule in zip(rejects["reasons"], ["hemoglobin' value inf", "albumin' value 1e\\+300"]):
        # The range of values the network can represent (within 1e15 training standard deviations).
        name = rule.split("'")[0]
        assert re.fullmatch(rf"column '{rule}: expected -[0-9.]+e\+1[4-6] <= {name} <= [0-9.]+e\+1[4-6]", reason)
    scored = pd.read_parquet(tmp_path / "scores.parquet")
    assert scored["record"].tolist() == [f"r{i}" for i in range(12) if i not in (7, 11)]
    check_predictions(bare, scored, table.drop(index=[7, 11]).drop(columns="record"))
    default = load_model_for_scoring(str(folder))  # the id column is "id" unless told
    with pytest.raises(SchemaError, match=r"patients.parquet lacks the required column\(s\) \['id'\]"):
        score_files(default, tmp_path / "patients.parquet", tmp_path / "again.parquet")


def score_args(loaded, source, output):
    return ["score", "--model", loaded.reference, "--input", source, "--output", output, "--chunk-size", 7]


def test_a_killed_run_leaves_no_output(tmp_path, loaded, patients):
    source = write(patients[1], tmp_path / "patients.parquet")  # 40 rows: 6 chunks of 7
    destination = tmp_path / "out"
    with blocked_cli(score_args(loaded, source, destination / "scores.parquet"), tmp_path / "ready") as process:
        process.send_signal(signal.SIGKILL)  # the first chunk is written: nothing can clean up after this
        process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL  # killed, not finished
    left = sorted(p.name for p in destination.iterdir())
    assert [name.split("-")[0] for name in left] == [".scores.parquet.partial", ".scores.rejects.parquet.partial"]


# -- committing: the output is renamed last, so that whoever sees it can trust what is beside it ---


def visible_files(folder):
    """Digest of each file of ``folder`` that a user sees (not the hidden ``.partial`` ones)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in folder.iterdir() if not p.name.startswith(".")}


@pytest.fixture
def renames(monkeypatch):
    """Each move of a ``.partial`` file into place while the test runs: (its destination's name, the
    visible files of the destination's folder just before). A kill at that instant would leave those."""
    moves = []
    replace = os.replace

    def recorded(source, destination, **kwargs):
        if ".partial" in Path(source).name:
            moves.append((Path(destination).name, visible_files(Path(destination).parent)))
        return replace(source, destination, **kwargs)

    monkeypatch.setattr(os, "replace", recorded)  # AtomicTableWriter's and pathlib's renames alike
    return moves


@pytest.mark.parametrize("earlier_run", [False, True], ids=["new folder", "over an earlier run"])
def test_the_output_appears_only_once_its_rejects_and_summary_are_in_place(tmp_path, loaded, patients, renames,
                                                                           earlier_run):
    _, table = patients
    output = tmp_path / "out" / "scores.parquet"
    if earlier_run:  # its three files are replaced; its output must not be seen beside the new summary
        score_files(loaded, write(table, tmp_path / "earlier.parquet"), output, chunk_size=7)
        renames.clear()

    score_files(loaded, write(table.iloc[:20], tmp_path / "patients.parquet"), output, chunk_size=7)

    assert [name for name, _ in renames] == ["scores.rejects.parquet", "scores.summary.json", "scores.parquet"]
    assert [name for name, before in renames if "scores.parquet" in before] == []  # no output seen before these moves
    final = visible_files(output.parent)
    assert sorted(final) == ["scores.parquet", "scores.rejects.parquet", "scores.summary.json"]
    # Just before the output appears, the rejects and the summary beside it are this run's, complete.
    assert renames[-1][1] == {name: digest for name, digest in final.items() if name != "scores.parquet"}
    summary = json.loads((output.parent / "scores.summary.json").read_text())
    assert (summary["rows_in"], summary["rows_rejected"]) == (20, len([row for row in PROBLEMS if row < 20]))


@pytest.mark.parametrize("failing", ["scores.rejects.parquet", "scores.summary.json", "scores.parquet"])
def test_a_failed_move_into_place_leaves_no_file_and_names_it_in_one_line(tmp_path, loaded, patients, monkeypatch,
                                                                          failing):
    replace = os.replace

    def full_disk_for(source, destination, **kwargs):
        if Path(destination).name == failing:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return replace(source, destination, **kwargs)

    monkeypatch.setattr(os, "replace", full_disk_for)
    destination = tmp_path / "out"
    expected = f"Cannot write {destination / failing}: {os.strerror(errno.ENOSPC)}."
    with pytest.raises(OutputPathError, match=f"^{re.escape(expected)}$"):
        score_files(loaded, write(patients[1], tmp_path / "patients.parquet"), destination / "scores.parquet",
                    chunk_size=7)
    assert list(destination.iterdir()) == []  # neither the files moved before it nor any .partial file


# -- row accounting: rows read = rows written, checked apart from the rows handed along ---------


def lose_a_row_on_writing(monkeypatch):
    write_rows = AtomicTableWriter.write

    def losing(self, rows):
        write_rows(self, rows[1:] if self.path.name == "scores.parquet" and self.rows == 0 else rows)

    monkeypatch.setattr(AtomicTableWriter, "write", losing)


def lose_a_row_on_reading(monkeypatch):
    read_chunks = scoring.iter_chunks

    def losing(*args, **kwargs):
        for k, chunk in enumerate(read_chunks(*args, **kwargs)):
            yield chunk.iloc[1:] if k == 0 else chunk

    monkeypatch.setattr(scoring, "iter_chunks", losing)


@pytest.mark.parametrize("lose_a_row, counts", [
    # Row 0 is a good row: 29 scored rows less one, the 11 rejected rows all written.
    (lose_a_row_on_writing, "40 rows read but 28 scored and 11 rejected rows written"),
    (lose_a_row_on_reading, "39 rows read (the Parquet footers count 40) but 28 scored and 11 rejected rows written"),
], ids=["writing", "reading"])
def test_a_lost_row_fails_the_run_in_one_line_and_commits_nothing(tmp_path, loaded, patients, monkeypatch,
                                                                  lose_a_row, counts):
    assert (N_ROWS, len(GOOD), len(PROBLEMS)) == (40, 29, 11)
    lose_a_row(monkeypatch)
    destination = tmp_path / "out"
    with pytest.raises(RowAccountingError) as error:  # a ClinicalMTLError: one line on the console
        score_files(loaded, write(patients[1], tmp_path / "patients.parquet"), destination / "scores.parquet",
                    chunk_size=7)
    assert str(error.value) == f"Row accounting failed, a bug in clinical-mtl: {counts}; no output was committed."
    assert list(destination.iterdir()) == []


# -- the register of ids seen: exact, in bounded memory, its temporary files deleted ----------


@pytest.fixture
def temporary_files(monkeypatch):
    """The anonymous temporary files opened while the test runs."""
    opened = []
    make = tempfile.TemporaryFile

    def recorded(*args, **kwargs):
        opened.append(make(*args, **kwargs))
        return opened[-1]

    monkeypatch.setattr(tempfile, "TemporaryFile", recorded)
    return opened


def random_id_chunks(kind, seed, n_chunks=300):
    """Chunks of 0 to 40 ids drawn from a small pool (repeats within and across chunks), ~10% missing."""
    rng = np.random.default_rng(seed)
    int64 = np.iinfo(np.int64)
    pool = np.concatenate([np.arange(2_000), rng.integers(int64.min, int64.max, 1_000)])
    for _ in range(n_chunks):
        size = rng.integers(0, 41)
        if kind == "int":  # negative and large ones too: ordered as unsigned keys
            ids = pd.Series(pd.array(rng.choice(pool, size), dtype="Int64"))
        elif kind == "float":
            ids = pd.Series(rng.integers(0, 3_000, size).astype(float))
        else:
            ids = pd.Series([f"P-{value}" for value in rng.choice(pool, size)], dtype=object)
        ids[rng.random(size) < 0.1] = None
        yield ids


@pytest.mark.parametrize("kind", ["int", "float", "str"])
def test_the_id_register_spilling_to_disk_marks_exactly_the_ids_of_earlier_chunks(kind, temporary_files):
    seen = set()
    with IdRegister(memory_budget=16, block_size=4) as register:
        for ids in random_id_chunks(kind, seed=len(kind)):
            values = [None if pd.isna(value) else value for value in ids]
            assert register.seen_before(ids).tolist() == [value is not None and value in seen for value in values]
            assert register.ids_in_memory <= 16
            seen.update(value for value in values if value is not None)
        merged_away = [file for file in temporary_files if file.closed]
        assert len(seen) > 1_000 and merged_away  # many spills, and runs merged on disk
    assert all(file.closed for file in temporary_files)


def test_the_id_register_leaves_repeats_within_a_chunk_to_the_schema():
    with IdRegister(memory_budget=1, block_size=2) as register:
        assert register.seen_before(pd.Series([1.0, 1.0, np.nan, np.nan])).tolist() == [False] * 4
        assert register.seen_before(pd.Series([np.nan, 2.0, 1.0, 2.0])).tolist() == [False, False, True, False]
        assert register.seen_before(pd.Series([2, 3, 1])).tolist() == [True, False, True]


@pytest.fixture
def small_register(monkeypatch, temporary_files):
    """score_files with an id register spilling every few ids: the temporary files it opens."""
    monkeypatch.setattr(scoring, "IdRegister", partial(IdRegister, memory_budget=4, block_size=2))
    return temporary_files


def test_ids_spilled_to_disk_reject_the_same_rows_and_their_files_are_deleted(tmp_path, loaded, patients,
                                                                              small_register):
    folder = tmp_path / "in"
    folder.mkdir()
    write(patients[1], folder / "a.parquet")
    write(patients[1], folder / "b.parquet")  # each id of b repeats one of a

    summary = score_files(loaded, folder, tmp_path / "scores.parquet", chunk_size=7)

    rejects = read(tmp_path / "scores.rejects.parquet")
    check_reasons(rejects.iloc[:len(PROBLEMS)])
    assert summary.rows_rejected == len(PROBLEMS) + N_ROWS
    repeats = rejects.iloc[len(PROBLEMS):]
    assert (repeats["reasons"].str.contains("duplicate id") == repeats[ID].notna()).all()
    assert small_register and all(file.closed for file in small_register)


def test_the_id_register_files_are_deleted_when_a_run_fails(tmp_path, loaded, patients, small_register):
    folder = tmp_path / "in"
    folder.mkdir()
    write(patients[1], folder / "a_good.parquet")
    truncated_parquet(loaded, tmp_path).rename(folder / "b_bad.parquet")
    with pytest.raises(InputFileError, match="b_bad"):
        score_files(loaded, folder, tmp_path / "scores.parquet", chunk_size=7)
    assert small_register and all(file.closed for file in small_register)


def test_the_id_register_fills_its_memory_budget_before_spilling_to_disk(temporary_files):
    with IdRegister(memory_budget=4, block_size=2) as register:
        register.seen_before(pd.Series([1, 2]))
        register.seen_before(pd.Series([3, 4]))
        assert register.ids_in_memory == 4 and not temporary_files  # exactly the budget: all in memory
        assert register.seen_before(pd.Series([5, 1])).tolist() == [False, True]
        assert register.ids_in_memory == 1 and len(temporary_files) == 1  # beyond it: the 4 written as one run


@pytest.fixture
def block_reads(temporary_files, monkeypatch):
    """The ids read back by each read of an id register's temporary files (8 bytes an id)."""
    reads = []
    make = tempfile.TemporaryFile  # the recording one of ``temporary_files``

    def counted(*args, **kwargs):
        file = make(*args, **kwargs)
        read_into = file.readinto
        file.readinto = lambda buffer: reads.append(read_into(buffer) // 8) or reads[-1] * 8
        return file

    monkeypatch.setattr(tempfile, "TemporaryFile", counted)
    return reads


def test_the_default_id_register_holds_2_18_ids_in_memory_and_reads_2_16_at_a_time(temporary_files, block_reads):
    first = pd.Series(np.arange(2**18))
    with IdRegister() as register:
        assert not register.seen_before(first).any()
        assert register.ids_in_memory == 2**18 and not temporary_files
        assert register.seen_before(pd.Series([-1])).tolist() == [False]  # one more: the 2**18 go to disk
        assert register.ids_in_memory == 1 and len(temporary_files) == 1
        assert register.seen_before(first).all()
    assert block_reads == [2**16] * 4  # every block of the run holds an id looked up


@pytest.mark.parametrize("every, expected", [(None, 0), (4, None)])
def test_free_memory_goes_back_only_as_often_as_asked(monkeypatch, tmp_path, loaded, patients, every, expected):
    """The library call's one touch of the process (``malloc_trim``) is the caller's to set, or to turn off."""
    calls = []
    monkeypatch.setattr(scoring, "release_free_memory", lambda: calls.append(1) or True)
    source = write(patients[1], tmp_path / "patients.parquet")
    summary = score_files(loaded, source, tmp_path / "scores.parquet", chunk_size=3, release_memory_every=every)
    n_chunks = -(-N_ROWS // 3)
    assert len(calls) == (n_chunks // 4 if expected is None else expected)
    assert summary.rows_in == N_ROWS

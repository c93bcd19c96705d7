"""The command line against hostile inputs: nothing lost, nothing overwritten, nothing leaked.

Each case runs ``clinical-mtl`` as a user would and checks its exit status, a one-line message
naming the file or rule at fault, that rows in = rows scored + rows rejected, that the user's files
are untouched, and that no planted patient value (an id, a measurement) reaches the console.
"""

import hashlib
import json
import os
import signal
from dataclasses import replace

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from blocking_runner import blocked_cli

from clinical_mtl import MultiTaskMLP
from clinical_mtl.cli import main
from clinical_mtl.data.persistence import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    load_model,
    save_model,
)
from clinical_mtl.datasets import make_synthetic_cohort, synthetic_schema
from clinical_mtl.exceptions import ModelLoadError

pytestmark = pytest.mark.integration

ID = "patient_id"
SENTINEL_ID = 987654321
SENTINEL_AGE = 77.12345  # a value only the sentinel patient has
SENTINELS = (str(SENTINEL_ID), "77.12345")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """One small fit saved twice: with integer ids (the synthetic schema) and with text ids."""
    folder = tmp_path_factory.mktemp("hostile-models")
    X, Y = make_synthetic_cohort(300, random_state=0)
    schema = synthetic_schema()
    model = MultiTaskMLP(hidden_layer_sizes=(8,), max_epochs=10, ensemble_size=1, random_state=0,
                         tasks=schema.tasks).fit(X, Y)
    return {"integer": save_model(model, folder / "integer-ids", schema=schema),
            "string": save_model(model, folder / "text-ids", schema=replace(schema, id_type="string")),
            "model": model}


def patients(n: int, seed: int = 1) -> pd.DataFrame:
    """``n`` synthetic patients with integer ids from 1, the sentinel patient first."""
    X, _ = make_synthetic_cohort(n, random_state=seed, feature_missing_rate=0.0)
    table = X.reset_index(drop=True)
    table.insert(0, ID, np.arange(1, n + 1))
    table.loc[0, ID] = SENTINEL_ID
    table.loc[0, "age"] = SENTINEL_AGE
    return table


def run_cli(args, capsys) -> tuple[int, str]:
    status = main([str(arg) for arg in args])
    captured = capsys.readouterr()
    console = captured.out + captured.err
    for sentinel in SENTINELS:
        assert sentinel not in console, f"a patient value reached the console: {console!r}"
    assert "Traceback" not in console
    return status, console


def error_line(console: str) -> str:
    lines = [line for line in console.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), console
    return lines[0]


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(folder) -> dict:
    return {str(p.relative_to(folder)): digest(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def summary_of(output) -> dict:
    return json.loads(output.with_name(f"{output.stem}.summary.json").read_text())


# -- never delete or overwrite what the user owns ------------------------------------------------


def test_report_refuses_a_folder_it_did_not_write(models, tmp_path, capsys):
    user = tmp_path / "thesis"
    (user / "sub").mkdir(parents=True)
    patients(20).to_csv(user / "patients.csv", index=False)
    (user / "sub" / "thesis.docx").write_bytes(b"years of work")
    before = tree(user)
    other = tmp_path / "patients.csv"
    patients(20).to_csv(other, index=False)
    for source in (user / "patients.csv", other):  # the input inside it, or elsewhere
        status, console = run_cli(["report", "--model", models["integer"], "--input", source, "--output", user],
                                  capsys)
        assert status == 1
        assert str(user) in error_line(console) and ("not written by clinical-mtl report" in console
                                                     or "holds the input" in console)
        assert tree(user) == before


def test_report_replaces_its_own_folder_but_not_files_added_to_it(models, tmp_path, capsys):
    source, out = tmp_path / "patients.csv", tmp_path / "pages"
    patients(10).to_csv(source, index=False)
    args = ["report", "--model", models["integer"], "--input", source, "--output", out]
    assert run_cli(args, capsys)[0] == 0
    assert run_cli(args, capsys)[0] == 0  # its own folder: replaced
    (out / "notes.txt").write_text("mine")
    before = tree(out)
    status, console = run_cli(args, capsys)
    assert status == 1 and "1 file(s) that clinical-mtl report did not write" in error_line(console)
    assert tree(out) == before


def score_args(models, source, output, *extra):
    return ["score", "--model", models["integer"], "--input", source, "--output", output, *extra]


@pytest.mark.parametrize("case", ["output is input", "rejects is output", "output in input folder",
                                  "summary is rejects", "output not ours"])
def test_score_refuses_outputs_that_would_overwrite_before_reading(models, tmp_path, capsys, case):
    folder = tmp_path / "in"
    folder.mkdir()
    source = folder / "patients.csv"
    patients(10).to_csv(source, index=False)
    user_file = tmp_path / "user.parquet"
    user_file.write_bytes(b"the user's own file")
    args, expected = {
        "output is input": (score_args(models, source, source), "is the input itself"),
        "rejects is output": (score_args(models, source, tmp_path / "o.csv", "--rejects", tmp_path / "o.csv"),
                              "are the same file"),
        "output in input folder": (score_args(models, folder, folder / "scores.csv"), "inside the input folder"),
        "summary is rejects": (score_args(models, source, tmp_path / "o.csv", "--rejects",
                                          tmp_path / "o.summary.json"), "are the same file"),
        "output not ours": (score_args(models, source, user_file), "was not written by clinical-mtl"),
    }[case]
    before = tree(tmp_path)
    status, console = run_cli(args, capsys)
    assert status == 1 and expected in error_line(console)
    assert tree(tmp_path) == before  # nothing written, nothing removed


def test_score_replaces_its_own_output_on_a_rerun(models, tmp_path, capsys):
    source, output = tmp_path / "patients.csv", tmp_path / "scores.csv"
    patients(10).to_csv(source, index=False)
    assert run_cli(score_args(models, source, output), capsys)[0] == 0
    assert run_cli(score_args(models, source, output), capsys)[0] == 0
    assert summary_of(output)["rows_scored"] == 10


def test_sigterm_leaves_no_partial_file(models, tmp_path):
    source, output = tmp_path / "patients.csv", tmp_path / "out" / "scores.parquet"
    patients(50).to_csv(source, index=False)
    args = score_args(models, source, output, "--chunk-size", 7)
    with blocked_cli(args, tmp_path / "ready", after_writes=1) as process:  # the first chunk is written
        assert [p.name for p in output.parent.iterdir() if ".partial" in p.name]  # mid-run: partial files exist
        process.send_signal(signal.SIGTERM)
        console = process.communicate(timeout=60)[0]
    assert process.returncode == 128 + signal.SIGTERM
    assert sorted(p.name for p in output.parent.iterdir()) == []  # no partial file, no output
    assert "Traceback" not in console and str(SENTINEL_ID) not in console


# -- one patient id, one row ---------------------------------------------------------------------


def test_the_same_id_from_parquet_and_csv_is_one_patient(models, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    table = patients(12)
    table.iloc[:6].to_parquet(folder / "a.parquet", index=False)  # ids as integers
    later = table.iloc[6:].copy()
    later[ID] = later[ID].astype(str)
    later.loc[9, ID] = "6"  # the id of row 5, as text
    later.loc[10, ID] = " 6.0 "
    later.to_csv(folder / "b.csv", index=False)
    output = tmp_path / "scores.parquet"
    status, _ = run_cli(score_args(models, folder, output), capsys)
    assert status == 0
    rejects = pd.read_parquet(tmp_path / "scores.rejects.parquet")
    assert rejects["row_number"].tolist() == [9, 10]
    assert rejects["reasons"].str.contains("duplicate id").all()
    assert pq.read_schema(output).field(ID).type == "int64"


def test_text_after_integer_ids_is_rejected_by_rule_not_a_crash(models, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    table = patients(8)
    table.iloc[:4].to_parquet(folder / "a.parquet", index=False)
    later = table.iloc[4:].astype({ID: object})
    later.loc[5, ID] = "MRN-12"
    later.to_csv(folder / "b.csv", index=False)
    status, console = run_cli(score_args(models, folder, tmp_path / "scores.parquet"), capsys)
    assert status == 0 and "Scored 7 of 8 rows, rejected 1" in console
    rejects = pd.read_parquet(tmp_path / "scores.rejects.parquet")
    assert rejects["reasons"].tolist() == ["column 'patient_id' value 'MRN-12': expected a whole number as the id"]


def test_float_ids_give_the_same_result_whatever_the_chunk_size(models, tmp_path, capsys):
    table = patients(30)
    table[ID] = table[ID].astype(float)
    table.loc[3, ID] = 2.5  # not a whole number: rejected
    table.loc[[10, 20], ID] = table.loc[1, ID]  # repeats
    source = tmp_path / "patients.parquet"
    table.to_parquet(source, index=False)
    results = []
    for chunk_size in (1, 3, 7, 1000):
        output = tmp_path / f"scores-{chunk_size}.parquet"
        assert run_cli(score_args(models, source, output, "--chunk-size", chunk_size), capsys)[0] == 0
        scored = pd.read_parquet(output).drop(columns="scored_at")
        rejects = pd.read_parquet(output.with_name(f"{output.stem}.rejects.parquet"))
        results.append((scored, rejects))
    for scored, rejects in results[1:]:
        pd.testing.assert_frame_equal(scored, results[0][0])
        pd.testing.assert_frame_equal(rejects, results[0][1])
    assert results[0][1]["row_number"].tolist() == [3, 10, 20]


# -- one bad row costs one row -------------------------------------------------------------------


def test_a_malformed_csv_line_costs_its_row_only(models, tmp_path, capsys):
    n = 100_000  # about 10 MB: more than one block of the reader
    source = tmp_path / "patients.csv"
    table = patients(n)
    table.to_csv(source, index=False)
    n_fields = len(table.columns)
    lines = source.read_bytes().split(b"\n")
    lines[1] += b",surplus"  # the sentinel patient's row (line 2) gets an extra field
    lines[70_001] = lines[70_001].replace(b",", b",\xff", 1)  # a byte that is not UTF-8 (line 70,002)
    source.write_bytes(b"\n".join(lines))
    output = tmp_path / "scores.csv"
    status, console = run_cli(score_args(models, source, output), capsys)
    assert status == 0 and f"Scored {n - 2:,} of {n:,} rows, rejected 2" in console
    rejects = pd.read_csv(tmp_path / "scores.rejects.csv")
    assert rejects["row_number"].tolist() == [0, 70_000]
    assert rejects["reasons"].tolist() == [
        f"line 2 cannot be read: {n_fields + 1} fields where the header has {n_fields}",
        "line 70002 cannot be read: bytes that are not UTF-8 text",
    ]
    scored = pd.read_csv(output)
    assert scored["row_number"].tolist() == [row for row in range(n) if row not in (0, 70_000)]
    assert scored[ID].tolist() == [row + 1 for row in range(n) if row not in (0, 70_000)]


# -- formula-safe CSV ----------------------------------------------------------------------------


def test_csv_outputs_neutralise_formulas(models, tmp_path, capsys):
    table = patients(6).astype({ID: object, "smoking": object})
    table.loc[:4, ID] = ["=HYPERLINK(\"http://x\")", "+1", "-2", "@SUM(A1)", "ok"]
    table.loc[2, "smoking"] = "=cmd"  # not a category: rejected, quoted in its reason
    source = tmp_path / "patients.csv"
    table.to_csv(source, index=False)
    args = ["score", "--model", models["string"], "--input", source, "--output", tmp_path / "scores.csv"]
    assert run_cli(args, capsys)[0] == 0
    report = ["report", "--model", models["string"], "--input", source, "--output", tmp_path / "pages"]
    assert run_cli(report, capsys)[0] == 0
    for written in (tmp_path / "scores.csv", tmp_path / "scores.rejects.csv", tmp_path / "pages" / "rejected.csv"):
        frame = pd.read_csv(written, dtype=str, keep_default_na=False)
        text = [cell for cell in frame.to_numpy().ravel() if pd.isna(pd.to_numeric(cell, errors="coerce"))]
        assert text and not [cell for cell in text if cell[:1] in ("=", "+", "-", "@", "\t", "\r")], written
    scored = pd.read_csv(tmp_path / "scores.csv", dtype=str)
    assert scored[ID].tolist() == ["'=HYPERLINK(\"http://x\")", "'+1", "'@SUM(A1)", "ok", "6"]
    for rejects in (tmp_path / "scores.rejects.csv", tmp_path / "pages" / "rejected.csv"):
        assert pd.read_csv(rejects, dtype=str)[ID].tolist() == ["'-2"]  # a text id, though it looks like a number


# -- errors are one line and name the file -------------------------------------------------------


def test_an_unwritable_output_is_one_line_naming_it(models, tmp_path, capsys):
    source = tmp_path / "patients.csv"
    patients(5).to_csv(source, index=False)
    (tmp_path / "a-file").write_text("")
    output = tmp_path / "a-file" / "scores.parquet"  # its folder cannot be made
    status, console = run_cli(score_args(models, source, output), capsys)
    line = error_line(console)
    assert status == 1 and f"Cannot write {output}" in line and ".partial" not in line


def test_an_unknown_registered_model_is_one_line_and_creates_no_database(models, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    source = tmp_path / "patients.csv"
    patients(5).to_csv(source, index=False)
    args = ["score", "--model", "models:/no_such_model@champion", "--input", source, "--output", "scores.csv"]
    status, console = run_cli(args, capsys)
    assert status == 1 and "models:/no_such_model@champion" in error_line(console)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["patients.csv"]


def damaged(models, tmp_path, how):
    folder = tmp_path / "model"
    folder.mkdir()
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        (folder / name).write_bytes((models["integer"] / name).read_bytes())
    config = folder / CONFIG_FILE
    if how == "no model.json":
        config.unlink()
    elif how == "truncated model.json":
        config.write_text(config.read_text()[:500])
    elif how == "schema removed":
        data = json.loads(config.read_text())
        data["cohort_schema"] = None
        config.write_text(json.dumps(data))
    elif how == "a range widened":
        config.write_text(config.read_text().replace('"max": 110', '"max": 1000'))
    elif how == "weights swapped":
        other = MultiTaskMLP(hidden_layer_sizes=(8,), max_epochs=2, ensemble_size=1, random_state=1)
        X, Y = make_synthetic_cohort(100, random_state=3)
        torch.save(other.fit(X, Y).module_.state_dict(), folder / WEIGHTS_FILE)
    return folder


@pytest.mark.parametrize("how, expected", [
    ("no model.json", "holds no model.json"),
    ("truncated model.json", "cannot be read as JSON"),
    ("schema removed", "was changed after the model was saved"),
    ("a range widened", "was changed after the model was saved"),
    ("weights swapped", "is not the weights file saved with"),
])
def test_a_damaged_or_tampered_model_is_refused_in_one_line(models, tmp_path, capsys, how, expected):
    folder = damaged(models, tmp_path, how)
    source = tmp_path / "patients.csv"
    patients(5).to_csv(source, index=False)
    status, console = run_cli(score_args({"integer": folder}, source, tmp_path / "scores.csv"), capsys)
    line = error_line(console)
    assert status == 1 and expected in line and str(folder) in line
    assert not (tmp_path / "scores.csv").exists()


def test_an_intact_copy_loads(models, tmp_path):
    folder = damaged(models, tmp_path, "none")
    X, _ = make_synthetic_cohort(20, random_state=5)
    pd.testing.assert_frame_equal(load_model(folder).predict(X), models["model"].predict(X))


def test_a_pickle_payload_with_recomputed_digests_is_still_refused(models, tmp_path):
    folder = damaged(models, tmp_path, "none")

    class Payload:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    torch.save({"weights": Payload()}, folder / WEIGHTS_FILE)
    config = json.loads((folder / CONFIG_FILE).read_text())
    config["integrity"]["weights_sha256"] = digest(folder / WEIGHTS_FILE)
    content = {key: value for key, value in config.items() if key != "integrity"}
    config["integrity"]["config_sha256"] = hashlib.sha256(
        json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    (folder / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="holds something other than tensors"):
        load_model(folder)
    assert not (tmp_path / "pwned").exists()

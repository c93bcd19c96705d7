"""Report row accounting: rows read = pages + rejected rows written, counted apart from the rows handed along."""

import hashlib
import shutil

import numpy as np
import pytest

from clinical_mtl.datasets import make_synthetic_cohort
from clinical_mtl.exceptions import RowAccountingError
from clinical_mtl.reporting import build, write_reports
from clinical_mtl.scoring import load_model_for_scoring
from clinical_mtl.scoring import local as scoring

pytestmark = pytest.mark.integration

N_ROWS = 40
OUT_OF_RANGE = (5, 17)  # bmi 500: outside the schema's range
REPEATS = {30: 3}  # row 30 repeats the id of row 3
N_REJECTED = len(OUT_OF_RANGE) + len(REPEATS)
N_PAGES = N_ROWS - N_REJECTED


@pytest.fixture(scope="module")
def loaded(small_schema_model):
    return load_model_for_scoring(str(small_schema_model))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A Parquet file of N_ROWS patients, N_REJECTED of them rejected by the schema."""
    X, _ = make_synthetic_cohort(N_ROWS, random_state=7)
    patients = X.reset_index()
    patients["patient_id"] = np.arange(1000, 1000 + N_ROWS)
    patients.loc[list(OUT_OF_RANGE), "bmi"] = 500.0
    for row, earlier in REPEATS.items():
        patients.loc[row, "patient_id"] = patients.loc[earlier, "patient_id"]
    path = tmp_path_factory.mktemp("inputs") / "patients.parquet"
    patients.to_parquet(path, index=False)
    return path


@pytest.fixture(scope="module")
def earlier_report(loaded, inputs, tmp_path_factory):
    """A complete report folder of an earlier run: a failed run must leave it as it was."""
    folder = tmp_path_factory.mktemp("earlier") / "out"
    summary = write_reports(loaded, inputs, folder)
    assert (summary.rows_in, summary.pages, summary.rows_rejected) == (N_ROWS, N_PAGES, N_REJECTED)
    return folder


def digests(folder):
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def lose_a_page(monkeypatch):
    make_reports = build.build_patient_reports
    monkeypatch.setattr(build, "build_patient_reports", lambda *args, **kwargs: make_reports(*args, **kwargs)[1:])


def lose_a_rejected_row_on_writing(monkeypatch):
    safe_frame = build.formula_safe_frame  # what rejected.csv is written from
    monkeypatch.setattr(build, "formula_safe_frame", lambda frame: safe_frame(frame).iloc[1:])


def lose_a_row_on_reading(monkeypatch):
    read_chunks = scoring.iter_chunks

    def losing(*args, **kwargs):
        for k, chunk in enumerate(read_chunks(*args, **kwargs)):
            yield chunk.iloc[1:] if k == 0 else chunk  # row 0: a good row

    monkeypatch.setattr(scoring, "iter_chunks", losing)


@pytest.mark.parametrize("lose_a_row, counts", [
    (lose_a_page, f"{N_ROWS} rows read but {N_PAGES - 1} patient pages and {N_REJECTED} rejected rows written"),
    (lose_a_rejected_row_on_writing,
     f"{N_ROWS} rows read but {N_PAGES} patient pages and {N_REJECTED - 1} rejected rows written"),
    (lose_a_row_on_reading, f"{N_ROWS - 1} rows read (the Parquet footers count {N_ROWS}) but {N_PAGES - 1} patient "
                            f"pages and {N_REJECTED} rejected rows written"),
], ids=["page", "rejected_row", "reading"])
def test_a_lost_row_fails_the_report_in_one_line_and_commits_nothing(loaded, inputs, earlier_report, tmp_path,
                                                                     monkeypatch, lose_a_row, counts):
    destination = tmp_path / "out"
    shutil.copytree(earlier_report, destination)
    before = digests(destination)
    lose_a_row(monkeypatch)
    with pytest.raises(RowAccountingError) as error:  # a ClinicalMTLError: one line on the console
        write_reports(loaded, inputs, destination, chunk_size=7)
    assert str(error.value) == f"Row accounting failed, a bug in clinical-mtl: {counts}; no report was committed."
    assert digests(destination) == before  # the earlier report, neither replaced nor touched
    assert [path.name for path in tmp_path.iterdir()] == ["out"]  # no staging folder left beside it

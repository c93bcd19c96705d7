"""``clinical-mtl report``: patients in, one HTML page per patient and an index out.

Every input row is accounted for: it gets a page, or it is listed on the
index page (and in ``rejected.csv``) with the reason it has none (the rows the
reader yields, and the Parquet footers' counts, against the pages and rejected
rows written; a difference is a bug and fails the run). The folder
is written beside its destination and renamed into place when complete, so
a report folder is never half written. It carries a manifest of the files it
wrote (``MANIFEST``); an existing folder is replaced only when it is empty or
holds exactly the files of its manifest, so a folder of the user's (or a
report folder the user added files to) is never deleted.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from .. import __version__
from ..data.batch_io import count_rows, list_input_files
from ..data.id_register import IdRegister
from ..data.run_summary import REPORT, RunSummary, check_row_accounting
from ..data.schema import ROW_NUMBER, CohortSchema
from ..data.writing import formula_safe_frame
from ..exceptions import InputDataError, OutputPathError
from ..model.conformal import DEFAULT_COVERAGE
from ..scoring import LoadedModel
from ..scoring.arrow_output import reject_rows
from ..scoring.local import DEFAULT_CHUNK_SIZE, validated_chunks
from .content import DEFAULT_REPORT_TOP_K, build_patient_reports, model_facts
from .rendering import DEFAULT_INTENDED_USE, DEFAULT_LIMITS, template_environment

PATIENTS_FOLDER = "patients"
PDF_FOLDER = "pdf"
MANIFEST = ".clinical-mtl-report.json"


def write_reports(loaded: LoadedModel, inputs: str | Path, output: str | Path, *, scores: str | Path | None = None,
                  training_ids: str | Path | None = None,
                  top_k: int = DEFAULT_REPORT_TOP_K, coverage: float = DEFAULT_COVERAGE,
                  intended_use: str = DEFAULT_INTENDED_USE,
                  limits: str = DEFAULT_LIMITS, pdf: bool = False,
                  chunk_size: int = DEFAULT_CHUNK_SIZE) -> RunSummary:
    """Write a page per patient, and an index of them, into the folder ``output``.

    Parameters
    ----------
    loaded : LoadedModel
        From :func:`clinical_mtl.scoring.load_model_for_scoring`.
    inputs : str or Path
        Patient rows: a CSV or Parquet file, or a folder of them, validated
        against the model's cohort schema.
    output : str or Path
        The report folder (replaced when the new one is complete):
        ``index.html``, ``patients/<page>.html``, ``rejected.csv``,
        ``summary.json`` and, with ``pdf``, ``pdf/<page>.pdf``.
    scores : str or Path, default=None
        A file written by ``clinical-mtl score --explain`` for these
        patients: its predictions and contributions are shown instead of
        being computed; a patient without a row in it is not reported.
    training_ids : str or Path, default=None
        A CSV or Parquet file of the ids of the patients the model was
        trained on (the ``training_ids`` output of a training pipeline):
        their pages and the index say so (their predictions are optimistic).
        Without it, the index says that training patients are not marked.
        Read here only: nothing of it is stored in the model or the report
        beyond the marks.
    top_k : int, default=6
        Contributions shown per outcome (ignored with ``scores``, whose
        contributions are shown).
    coverage : float, default=0.9
        Coverage of the regression outcomes' prediction intervals.
    intended_use, limits : str
        The statement of intended use and limits printed on every page.
    pdf : bool, default=False
        Also print every page to PDF with headless Chromium (needs the
        ``browser`` extra and Chromium; see :mod:`clinical_mtl.reporting.browser`).
    chunk_size : int, default=65536
        Rows read and validated at a time.

    Returns
    -------
    RunSummary
        ``engine="report"``: ``rows_scored`` (also ``pages``) counts the
        pages, ``rows_rejected`` the rows listed instead; also written as
        ``summary.json`` in the folder.
    """
    clock = time.perf_counter()
    output = Path(output)
    check_report_folder(output, inputs)  # before anything is read
    files = list_input_files(inputs)
    summary = RunSummary(engine=REPORT, input_files=[str(path) for path in files], output=str(output),
                         rejects=str(output / "rejected.csv"), model=loaded.identity(),
                         started_at=datetime.now(timezone.utc).isoformat())
    footer_rows = [count_rows(path) for path in files]  # None for CSV
    patients, rejected = _read_patients(loaded, files, chunk_size, summary)  # counts rows_in; times read, validate
    score_rows = None
    if scores is not None:
        with summary.timed("match_scores"):
            patients, score_rows, unscored = _match_scores(loaded, patients, Path(scores))
            rejected = (pd.concat([rejected, unscored]).sort_values(ROW_NUMBER, kind="stable") if len(unscored)
                        else rejected)
    known = read_training_ids(Path(training_ids), loaded.schema) if training_ids is not None else None
    with summary.timed("predict_and_explain"):
        reports = build_patient_reports(loaded, patients, top_k=top_k, coverage=coverage, scores=score_rows,
                                        training_ids=known)
    facts = model_facts(loaded)
    environment = template_environment()
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    except OSError as error:
        raise OutputPathError(f"Cannot write the report folder {output}: {error.strerror}.") from None
    try:
        with summary.timed("render_and_write"):
            _write_pages(staging, environment, reports, rejected, loaded, files,
                         {"model": facts, "intended_use": intended_use, "limits": limits, "version": __version__})
            # What the folder holds, counted apart from the rows handed along; rows_in as the reader yielded them.
            n_pages, n_rejected = _rows_written(staging)
            check_row_accounting(summary.rows_in, {"patient pages": n_pages, "rejected rows": n_rejected},
                                 None if None in footer_rows else sum(footer_rows), output="report")
            summary.rows_scored, summary.rows_rejected = n_pages, n_rejected
        if pdf:
            with summary.timed("pdf"):
                summary.pdfs = _print_pdfs(staging, reports)
        summary.seconds = time.perf_counter() - clock
        summary.rows_per_second = summary.rows_in / summary.seconds if summary.seconds else 0.0
        (staging / "summary.json").write_text(json.dumps(summary.to_dict(), indent=1))
        written = sorted(str(path.relative_to(staging)) for path in staging.rglob("*") if path.is_file())
        (staging / MANIFEST).write_text(json.dumps({"written_by": f"clinical-mtl {__version__}", "files": written}))
        _replace_folder(staging, output, inputs)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return summary


def _write_pages(staging: Path, environment, reports: list, rejected: pd.DataFrame, loaded: LoadedModel,
                 files: list[Path], common: dict) -> None:
    """Every patient's page, the index and ``rejected.csv``, into the folder ``staging``."""
    (staging / PATIENTS_FOLDER).mkdir()
    page = environment.get_template("patient.html.j2")
    for report in reports:
        (staging / PATIENTS_FOLDER / report.file_name).write_text(page.render(report=report, **common),
                                                                  encoding="utf-8")
    rejected_rows = rejected.rename(columns={loaded.schema.id_column: "patient_id"})
    index = environment.get_template("index.html.j2").render(
        pages=reports, rejected=rejected_rows.to_dict(orient="records"),
        outcome_names=[spec.name for spec in loaded.model.task_specs_],
        outcome_titles=[outcome.title for outcome in reports[0].outcomes] if reports else [],
        n_training=None if not reports or reports[0].in_training is None else sum(r.in_training for r in reports),
        source=", ".join(path.name for path in files), **common)  # file names only: the page may be shared
    (staging / "index.html").write_text(index, encoding="utf-8")
    formula_safe_frame(rejected).to_csv(staging / "rejected.csv", index=False)


def _read_patients(loaded: LoadedModel, files: list[Path], chunk_size: int,
                   summary: RunSummary) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The valid rows (with ``row_number``) and the rejected rows with reasons; ``summary`` counts
    the rows as the reader yielded them (``rows_in``) and times reading and validating them."""
    valid, rejected = [], []
    with IdRegister() as ids:
        for path, _, valid_rows, rejected_rows in validated_chunks(files, loaded.schema, chunk_size, summary, ids):
            valid.append(valid_rows)
            rejected.append(reject_rows(rejected_rows, loaded.schema.id_column, path))
    return pd.concat(valid), pd.concat(rejected, ignore_index=True)


def read_training_ids(path: Path, schema: CohortSchema) -> set[str]:
    """The training ids of a CSV or Parquet file, in the schema's id form (``canonical_ids``), as text.

    The file has the schema's id column, or a single column.

    Raises
    ------
    InputDataError
        If the file cannot be read or has neither column.
    """
    try:
        table = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, dtype=str,
                                                                                    keep_default_na=False)
    except (OSError, ValueError) as error:
        raise InputDataError(f"Cannot read the training ids file {path}: {type(error).__name__}.") from None
    id_column = schema.id_column
    if id_column not in table.columns and len(table.columns) != 1:
        raise InputDataError(f"{path}: expected the column {id_column!r} (or a single column) of training ids, "
                             f"found {len(table.columns)} columns without it.")
    ids = table[id_column if id_column in table.columns else table.columns[0]]
    if path.suffix != ".parquet":  # the training pipeline writes CSV formula-safe: '=1 was the id =1
        ids = ids.str.replace(r"^'([=+\-@\t\r])", r"\1", regex=True)
    ids, _ = schema.canonical_ids(ids)
    return {str(value) for value in ids.dropna()}


def _rows_written(folder: Path) -> tuple[int, int]:
    """The patient pages in ``folder`` and the rows its ``rejected.csv`` holds, read back."""
    pages = sum(1 for path in (folder / PATIENTS_FOLDER).iterdir() if path.is_file())
    rejected = pd.read_csv(folder / "rejected.csv", dtype=str, keep_default_na=False)
    return pages, len(rejected)


def _match_scores(loaded: LoadedModel, patients: pd.DataFrame, path: Path):
    """The patients found in the scores file, their score rows (aligned), and the others as rejects."""
    id_column = loaded.schema.id_column
    scores = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    missing = [column for column in (id_column, "run_id") if column not in scores.columns]
    contribution_columns = [c for c in scores.columns if c.endswith("_top1_feature")]
    if missing or not contribution_columns:
        raise InputDataError(f"{path}: expected a file written by 'clinical-mtl score --explain' (with columns "
                         f"{id_column!r}, 'run_id' and <outcome>_top<j>_feature), missing "
                         f"{missing or ['<outcome>_top1_feature']}.")
    runs = set(scores["run_id"].dropna().astype(str))
    if loaded.run_id is not None and runs - {loaded.run_id}:
        raise InputDataError(f"{path} was scored by the model of run(s) {sorted(runs)}, not by {loaded.reference} "
                         f"(run {loaded.run_id}); report with the model that scored it.")
    keys = scores[id_column].astype(str)
    if keys.duplicated().any():  # named by row, not by id: ids are patient data
        row = int(keys.duplicated().to_numpy().argmax())
        raise InputDataError(f"{path}: row {row} repeats the id of an earlier row; a scores file has one row per id.")
    positions = pd.Index(keys).get_indexer(patients[id_column].astype(str))
    found = positions >= 0
    unscored = patients.loc[~found, [ROW_NUMBER, id_column]].assign(
        source_file=str(path), n_problems=1, reasons=f"no row for this id in the scores file {path.name}")
    unscored[id_column] = unscored[id_column].astype(str)
    return patients[found], scores.iloc[positions[found]].reset_index(drop=True), unscored


def _print_pdfs(folder: Path, reports: list) -> int:
    from .browser import print_pdfs

    pages = [folder / PATIENTS_FOLDER / report.file_name for report in reports]
    (folder / PDF_FOLDER).mkdir()
    return print_pdfs(pages, folder / PDF_FOLDER)


def check_report_folder(output: Path, inputs: str | Path) -> None:
    """Refuse a report folder that is not ours to replace, or that holds the input.

    Raises
    ------
    OutputPathError
        If ``output`` is a file, holds the input, or is a non-empty folder
        with files that no earlier report wrote (none, or not all, listed in
        its ``MANIFEST``).
    """
    if not output.exists():
        return
    if not output.is_dir():
        raise OutputPathError(f"The report folder {output} is a file; name a folder.")
    source = Path(inputs).resolve()
    if source == output.resolve() or output.resolve() in source.parents:
        raise OutputPathError(f"The report folder {output} holds the input {inputs}; it would be replaced. "
                              "Write the report elsewhere.")
    present = {str(path.relative_to(output)) for path in output.rglob("*") if path.is_file() or path.is_symlink()}
    if not present:
        return
    try:
        listed = set(json.loads((output / MANIFEST).read_text())["files"]) | {MANIFEST}
    except (OSError, ValueError, KeyError, TypeError):
        raise OutputPathError(f"The folder {output} exists and was not written by clinical-mtl report (no "
                              f"{MANIFEST}); choose a new or empty folder.") from None
    if present - listed:
        raise OutputPathError(f"The report folder {output} holds {len(present - listed)} file(s) that clinical-mtl "
                              "report did not write; move them out or choose a new folder.")


def _replace_folder(staging: Path, output: Path, inputs: str | Path) -> None:
    """Move the finished folder into place, then delete the one it replaces (if still ours)."""
    # Not batch_io.AtomicPath: that replaces one file in one os.replace; a folder cannot be renamed over
    # a non-empty one, so this swap moves the old folder aside, the new one in, and deletes the old.
    check_report_folder(output, inputs)
    old = None
    if output.exists():
        old = output.with_name(f".{output.name}.old-{time.time_ns()}")
        output.rename(old)
    staging.rename(output)
    if old is not None:
        shutil.rmtree(old)

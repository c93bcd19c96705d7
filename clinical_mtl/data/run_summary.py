"""What a run did, step by step and row by row, and the check that no row was lost."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

from ..exceptions import RowAccountingError

LOCAL, SPARK, REPORT = "local", "spark", "report"
"""The runs a :class:`RunSummary` describes: scoring on the local or the Spark engine, and reports."""


@dataclass
class RunSummary:
    """What a run did: rows read, scored and rejected, and where the time went.

    The one summary of the package's batch runs: the local scoring engine
    (``clinical_mtl.scoring.score_files``), the Spark engine and reports
    (``clinical_mtl.reporting.write_reports``) fill it, and it is written as
    JSON (:meth:`to_dict`) beside a scoring run's output
    (``<output stem>.summary.json``) and into a report folder (``summary.json``).

    Attributes
    ----------
    rows_in : int
        Rows as the reader yielded them.
    rows_scored : int
        Rows with a prediction (in a report, with a page).
    rows_rejected : int
        Rows refused, each with its reasons.
    seconds, rows_per_second : float
        The run's duration and its rows in per second.
    seconds_by_step : dict of str to float
        Seconds per step (``read``, ``validate``, ``predict``, ...).
    input_files : list of str
    output, rejects : str
        Where the results and the rejected rows were written (a report: its
        folder and its ``rejected.csv``).
    model : dict
        The model's identity (``LoadedModel.identity``).
    started_at : str
        When the run started (ISO 8601, UTC).
    engine : str
        ``"local"`` or ``"spark"`` (scoring), or ``"report"``.
    pdfs : int
        PDF files printed, one per page (reports only).
    """

    rows_in: int = 0
    rows_scored: int = 0
    rows_rejected: int = 0
    seconds: float = 0.0
    rows_per_second: float = 0.0
    seconds_by_step: dict = field(default_factory=dict)
    input_files: list = field(default_factory=list)
    output: str = ""
    rejects: str = ""
    model: dict = field(default_factory=dict)
    started_at: str = ""
    engine: str = LOCAL
    pdfs: int = 0

    @property
    def pages(self) -> int:
        """A report's patient pages: its rows scored."""
        return self.rows_scored

    @property
    def pages_per_second(self) -> float:
        """A report's pages written per second."""
        return self.rows_scored / self.seconds if self.seconds else 0.0

    @contextmanager
    def timed(self, step: str) -> Iterator[None]:
        """Add the seconds the block takes to ``seconds_by_step[step]``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds_by_step[step] = self.seconds_by_step.get(step, 0.0) + time.perf_counter() - start

    def to_dict(self) -> dict:
        """Plain data, as written to the JSON summary: counts as integers, seconds to 4 significant
        digits, and rates in whole rows (pages) per second of those seconds."""
        data = asdict(self)
        seconds = _significant(self.seconds)
        rate = round(self.rows_in / seconds) if seconds else 0
        data |= {"rows_in": int(self.rows_in), "rows_scored": int(self.rows_scored),
                 "rows_rejected": int(self.rows_rejected), "seconds": seconds, "rows_per_second": rate,
                 "seconds_by_step": {step: _significant(s) for step, s in self.seconds_by_step.items()}}
        if self.engine == REPORT:  # the names a report's summary.json has always had
            data |= {"pages": int(self.pages), "pdfs": int(self.pdfs),
                     "pages_per_second": round(self.pages / seconds) if seconds else 0}
        else:
            del data["pdfs"]
        return data


def _significant(value: float, digits: int = 4) -> float:
    """``value`` to ``digits`` significant digits: 0.0001235, 12.35, 1235.0."""
    return float(f"{value:.{digits}g}")


def check_row_accounting(rows_in: int, written: Mapping[str, int], rows_in_footers: int | None = None,
                         output: str = "output") -> None:
    """Fail a run if a row was lost or duplicated between reading and writing: a bug, never the input's fault.

    Parameters
    ----------
    rows_in : int
        The rows as the reader yielded them.
    written : mapping of str to int
        What the outputs hold, counted apart from the rows handed along: a
        name (``"scored"``, ``"rejected rows"``) to its count; they must add
        up to ``rows_in``.
    rows_in_footers : int, default=None
        The rows that the inputs' Parquet footers count, when every input is
        Parquet (a reader that loses a row is caught too).
    output : str, default="output"
        What the run would have committed, for the message.

    Raises
    ------
    RowAccountingError
        One line of counts (no patient value) when they disagree.
    """
    footers_agree = rows_in_footers in (None, rows_in)
    if footers_agree and rows_in == sum(written.values()):
        return
    footers = "" if footers_agree else f" (the Parquet footers count {rows_in_footers:,})"
    counts = " and ".join(f"{count:,} {name}" for name, count in written.items())
    raise RowAccountingError(f"Row accounting failed, a bug in clinical-mtl: {rows_in:,} rows read{footers} but "
                             f"{counts} written; no {output} was committed.")

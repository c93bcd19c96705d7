"""What the command line prints: figures, per-outcome metric tables, run summaries (training progress:
tests/integration/test_terminal.py)."""

import io
import math
import re

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from clinical_mtl.console import figure, metrics_tables, with_interval
from clinical_mtl.data.run_summary import RunSummary


@pytest.mark.parametrize(("value", "expected"), [
    (0.84213, "0.842"), (2.0444, "2.044"), (-0.0512, "-0.051"), (36.0, "36.0"), (95.34, "95.3"),
    (2241.0, "2,241"), (123456.7, "123,457"), (math.nan, "–"),
])
def test_figures_read_with_sensible_rounding(value, expected):
    assert figure(value) == expected


def test_an_interval_takes_its_estimates_precision():
    assert with_interval(0.835, 0.7512, 0.9049) == "0.835 (0.751–0.905)"
    assert with_interval(95.34, 82.06, 110.44) == "95.3 (82.1–110.4)"
    assert with_interval(0.5, math.nan, math.nan) == "0.500"


def _render(renderable, width=200) -> str:
    console = Console(file=io.StringIO(), width=width, highlight=False)
    console.print(renderable)
    return console.file.getvalue()


def test_metrics_print_one_table_per_outcome_with_counts_as_integers():
    metrics = pd.DataFrame({
        "kind": ["binary", "regression"], "n_labelled": [103.0, 88.0], "events": [36.0, np.nan],
        "auroc": [0.84213, np.nan], "auroc_lower": [0.77612, np.nan], "auroc_upper": [0.92531, np.nan],
        "rmse": [np.nan, 12.345], "rmse_lower": [np.nan, 10.01], "rmse_upper": [np.nan, 15.49],
    }, index=pd.Index(["cirrhosis", "albumin"], name="outcome"))
    text = _render(metrics_tables(metrics))
    lines = [line.rstrip() for line in text.splitlines()]
    assert "cirrhosis (binary): 103 labelled, 36 events" in lines
    assert "albumin (regression): 88 labelled" in lines  # no events for a regression outcome
    assert re.search(r"^AUROC +0\.842 \(0\.776–0\.925\)$", text, re.M)
    assert re.search(r"^RMSE +12\.3 \(10\.0–15\.5\)$", text, re.M)
    assert "36.0" not in text and "103.0" not in text and "nan" not in text.lower()
    assert lines.index("albumin (regression): 88 labelled") > lines.index("cirrhosis (binary): 103 labelled, 36 events")
    assert text.count("AUROC") == 1 and text.count("RMSE") == 1  # each outcome shows only its own metrics
    assert max(map(len, lines)) <= 60


def test_an_outcome_too_few_to_estimate_shows_its_reason_and_no_figure():
    metrics = pd.DataFrame({
        "kind": ["binary"], "n_labelled": [6.0], "events": [3.0], "estimable": [False],
        "note": ["too few to estimate: 3 patients in the minority class (fewer than 10)"],
        "auroc": [np.nan], "auroc_lower": [np.nan], "auroc_upper": [np.nan],
    }, index=pd.Index(["cirrhosis"], name="outcome"))
    text = _render(metrics_tables(metrics))
    assert "too few to estimate: 3 patients in the minority class" in " ".join(text.split())
    assert "AUROC" not in text and "False" not in text and "nan" not in text.lower()


def test_the_json_summary_is_rounded_with_counts_as_integers():
    summary = RunSummary(rows_in=np.int64(1000), rows_scored=np.int64(990), rows_rejected=10, seconds=1.2345678,
                         rows_per_second=1000 / 1.2345678, seconds_by_step={"read": 0.000123456, "predict": 12.34567})
    data = summary.to_dict()
    assert data["seconds"] == 1.235 and data["rows_per_second"] == 810  # 1000 / 1.235 = 809.7
    assert data["seconds_by_step"] == {"read": 0.0001235, "predict": 12.35}
    assert [type(data[k]) for k in ("rows_in", "rows_scored", "rows_rejected", "rows_per_second")] == [int] * 4
    report = RunSummary(rows_in=5, rows_scored=4, seconds=0.5, engine="report", pdfs=np.int64(4)).to_dict()
    assert (report["pages"], report["pages_per_second"], report["pdfs"]) == (4, 8, 4)
    assert type(report["pdfs"]) is int

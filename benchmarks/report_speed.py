"""Patient report speed: 1,000 PBC patient pages with explanations, in pages per second.

MultiTaskMLP with its defaults (5 networks, calibrated, with prediction intervals) is trained on
the bundled PBC cohort; 1,000 patients are drawn from PBC rows with replacement (new ids) and
written as CSV. Measured in this process, three times each:

- from raw rows: read and validate, predict, explain (every feature of every outcome), lay out
  the charts, render and write 1,000 pages and the index (``write_reports``);
- from a scored file: the same pages from a ``clinical-mtl score --explain --top-k 6`` output
  of the same patients (predictions and contributions read, not computed).

Target: at least 50 pages per second on this 2-core machine. The run also saves a screenshot
of one page (headless Chromium) for the README; the model was trained on every PBC patient, so that
page is marked as a training patient's. Run ``python benchmarks/report_speed.py``; results go to
``reports/report_speed.md``. ``--screenshot-only`` trains the same model and refreshes the screenshot
alone.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from clinical_mtl import MultiTaskMLP
from clinical_mtl.data.persistence import save_model
from clinical_mtl.data.schema import SCHEMAS, load_schema
from clinical_mtl.datasets import load_pbc
from clinical_mtl.reporting import write_reports
from clinical_mtl.reporting.browser import chromium
from clinical_mtl.reporting.content import page_file_name
from clinical_mtl.scoring import load_model_for_scoring, score_files

REPORTS = Path(__file__).resolve().parents[1] / "reports"
N_PAGES = 1_000
REPEATS = 3
TARGET = 50
SCREENSHOT_PATIENT = 56  # a PBC patient with outcomes on both sides of the cohort's average


def main(screenshot_only: bool = False) -> None:
    torch.set_num_threads(2)
    X, Y = load_pbc()
    schema = load_schema(SCHEMAS / "pbc.yaml")
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        start = time.perf_counter()
        model = MultiTaskMLP(tasks=schema.tasks, random_state=0).fit(X, Y)
        fit_seconds = time.perf_counter() - start
        save_model(model, work / "model", schema=schema)
        loaded = load_model_for_scoring(str(work / "model"))
        rows = np.random.default_rng(0).integers(0, len(X), N_PAGES)
        patients = X.iloc[rows].reset_index(drop=True).rename_axis("id").reset_index()
        patients["id"] = np.arange(1, N_PAGES + 1)
        patients.to_csv(work / "patients.csv", index=False)
        X.index.to_frame(index=False).to_csv(work / "training_ids.csv", index=False)  # every PBC patient
        X.loc[[SCREENSHOT_PATIENT]].reset_index().to_csv(work / "one.csv", index=False)
        if screenshot_only:
            write_reports(loaded, work / "one.csv", work / "one", training_ids=work / "training_ids.csv")
            screenshot(work / "one" / "patients" / page_file_name(SCREENSHOT_PATIENT), REPORTS / "patient_report.png")
            return
        score_files(loaded, work / "patients.csv", work / "scores.parquet", top_k=6, progress=False)

        raw = [write_reports(loaded, work / "patients.csv", work / "raw") for _ in range(REPEATS)]
        scored = [write_reports(loaded, work / "patients.csv", work / "scored", scores=work / "scores.parquet")
                  for _ in range(REPEATS)]
        pdf_start = time.perf_counter()
        write_reports(loaded, work / "one.csv", work / "one", pdf=True, training_ids=work / "training_ids.csv")
        pdf_seconds = time.perf_counter() - pdf_start
        screenshot(work / "one" / "patients" / page_file_name(SCREENSHOT_PATIENT), REPORTS / "patient_report.png")
        page_kb = statistics.mean(p.stat().st_size for p in (work / "raw" / "patients").iterdir()) / 1024
    write_report(raw, scored, fit_seconds, pdf_seconds, page_kb, matplotlib_chart_ms(), len(schema.features))


def matplotlib_chart_ms(n_charts: int = 50) -> float:
    """Milliseconds to draw a 7-bar horizontal waterfall with matplotlib and save it as SVG: the
    alternative to the template-drawn SVG."""
    import io

    from matplotlib.figure import Figure

    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(n_charts):
        changes = rng.normal(0, 0.1, 7)
        starts = 0.3 + np.concatenate([[0], np.cumsum(changes)[:-1]])
        figure = Figure(figsize=(6.4, 2.6))
        axes = figure.add_subplot()
        axes.barh(np.arange(7), changes, left=starts, color=np.where(changes > 0, "#b2182b", "#2166ac"))
        axes.set_yticks(np.arange(7), [f"feature {k} = {v:.2f}" for k, v in enumerate(changes)])
        figure.savefig(io.StringIO(), format="svg")
    return (time.perf_counter() - start) / n_charts * 1000


def screenshot(page: Path, destination: Path) -> None:
    with chromium() as browser:
        tab = browser.new_page()
        tab.set_viewport_size({"width": 1000, "height": 800})
        tab.goto(page.as_uri())
        tab.screenshot(path=str(destination), full_page=True)


def write_report(raw: list, scored: list, fit_seconds: float, pdf_seconds: float, page_kb: float,
                 matplotlib_ms: float, n_features: int) -> None:
    def row(name: str, runs: list) -> str:
        best = max(runs, key=lambda s: s.pages_per_second)
        rates = ", ".join(f"{s.pages_per_second:,.0f}" for s in runs)
        split = ", ".join(f"{step} {seconds:.2f} s" for step, seconds in best.seconds_by_step.items())
        return f"| {name} | {best.pages:,} | {best.seconds:.2f} | {best.pages_per_second:,.0f} | {rates} | {split} |"

    slowest = min(s.pages_per_second for s in raw + scored)
    lines = [
        "# Patient report speed",
        "",
        f"Generated by `benchmarks/report_speed.py`: MultiTaskMLP defaults (5 networks) trained on PBC "
        f"({fit_seconds:.1f} s); {N_PAGES:,} PBC patients drawn with replacement; each page shows both outcomes "
        "(probability or value with its 90% interval, cohort standing, waterfall chart of the 6 largest SHAP "
        f"contributions and the rest, the same in words) and the patient's {n_features} values with units, reference ranges "
        f"and flags; pages are self-contained HTML (inline SVG and CSS), {page_kb:.1f} KB each; 2 cores.",
        "",
        "| source | pages | seconds (best run) | pages per second (best run) | pages per second, each run | "
        "time split (best run) |",
        "|---|---|---|---|---|---|",
        row("raw patient rows (predict and explain on the fly)", raw),
        row("a `clinical-mtl score --explain --top-k 6` file", scored),
        "",
        f"Target: >= {TARGET} pages per second: {'met' if slowest >= TARGET else 'NOT met'} (slowest run "
        f"{slowest:,.0f}).",
        "",
        f"PDF (optional, headless Chromium through Playwright): one patient page with its index, {pdf_seconds:.1f} s "
        "including starting the browser.",
        "",
        "Charts are inline SVG laid out in Python and drawn by the page template. The same 7-bar chart drawn "
        f"with matplotlib and saved as SVG took {matplotlib_ms:.1f} ms here, so two charts per page would cap "
        f"pages at about {1000 / (2 * matplotlib_ms):,.0f} per second before any other work.",
        "",
        "![A patient page](patient_report.png)",
        "",
    ]
    (REPORTS / "report_speed.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    import sys

    main(screenshot_only="--screenshot-only" in sys.argv[1:])

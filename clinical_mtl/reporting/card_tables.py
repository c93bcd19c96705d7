"""Model-card tables: the evaluation's numbers as rows of text, ready for the card's templates.

Figures get 3 decimals, counts thousands separators, a metric with an interval
"0.835 (0.751 to 0.905)"; a row too few to estimate shows its counts and the
reason instead of any figure; NaN shows as "–".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..model.metric_tables import TOO_FEW
from ..model.metrics import HEADLINE_METRICS
from ..model.relatedness import describe_relatedness
from ..model.survival import SURVIVAL
from ..model.tasks import REGRESSION

# Thresholds of the decision-curve table (the figure shows the whole 5% to 50% range).
CARD_THRESHOLDS = (0.05, 0.1, 0.2, 0.3, 0.5)

_LABELS = {
    "auroc": "AUROC", "brier": "Brier", "ece": "ECE", "log_loss": "Log loss", "accuracy": "Accuracy",
    "calibration_slope": "Calibration slope", "calibration_intercept": "Calibration intercept",
    "rmse": "RMSE", "mae": "MAE", "r2": "R²",
    "harrell_c": "Harrell's C", "uno_c": "Uno's C", "ibs": "Integrated Brier", "median_follow_up": "Median follow-up",
}
_KEY_LABELS = {"outcome": "Outcome", "group": "Group", "value": "Subgroup"}
_TABLE_METRICS = {
    "classification": ("auroc", "brier", "ece", "log_loss", "accuracy", "calibration_slope", "calibration_intercept"),
    "regression": ("rmse", "mae", "r2"),
    "survival": ("harrell_c", "uno_c", "ibs", "median_follow_up"),  # then every auc_at_<h>, calibration_at_<h>
}


@dataclass
class Span:
    """A cell spanning several columns: a row's reason in place of its figures."""

    text: str
    columns: int

    def __str__(self) -> str:
        return self.text


@dataclass
class Table:
    """A table ready to render: column headers and rows of text (a ``Span`` covers several columns)."""

    columns: list[str]
    rows: list[list[str]]


def _number(value, digits: int = 3) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def _count(value) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{int(value):,}"


def _with_interval(row: pd.Series, metric: str) -> str:
    text = _number(row.get(metric))
    lower, upper = row.get(f"{metric}_lower", np.nan), row.get(f"{metric}_upper", np.nan)
    if pd.notna(lower) and pd.notna(upper):
        text += f" ({_number(lower)} to {_number(upper)})"
    return text


def _family(kind: str) -> str:
    return kind if kind in (REGRESSION, SURVIVAL) else "classification"


def _metric_label(metric: str) -> str:
    """``auc_at_365`` -> "AUC by 365", ``calibration_at_365`` -> "Calibration error by 365"."""
    name, _, horizon = metric.partition("_at_")
    if not horizon:
        return _LABELS[metric]
    return f"{'AUC' if name == 'auc' else 'Calibration error'} by {horizon.replace('p', '.')}"


def metric_tables(table: pd.DataFrame) -> dict[str, Table]:
    """One table per family of outcomes (classification, regression, survival), with intervals.

    A row too few to estimate shows its counts and, instead of any figure, the
    reason; other notes (percentile or missing intervals) go in a last column.
    """
    tables = {}
    for family, metrics in _TABLE_METRICS.items():
        rows = table[table["kind"].map(_family) == family]
        if rows.empty:
            continue
        if family == SURVIVAL:
            metrics = (*metrics, *(c for c in rows.columns if "_at_" in c and rows[c].notna().any()))
        keys = list(rows.index.names)
        columns = [_KEY_LABELS[name] for name in keys] + ["Labelled"] + (["Events"] if family != "regression" else [])
        columns += [_metric_label(m) for m in metrics]
        body, notes = [], []
        for key, row in rows.iterrows():
            cells = [str(part) for part in (key if isinstance(key, tuple) else (key,))]
            cells.append(_count(row["n_labelled"]))
            if family != "regression":
                cells.append(_count(row["events"]))
            note = row.get("note", "")
            note = note if isinstance(note, str) else ""
            if not row.get("estimable", True):
                reason, _, note = note.partition("; ")
                cells.append(Span(reason or TOO_FEW, len(metrics)))
            else:
                cells += [_with_interval(row, m) if m in HEADLINE_METRICS[family]
                          else _number(row[m], 0) if m == "median_follow_up" else _number(row[m]) for m in metrics]
            body.append(cells)
            notes.append(note)
        if any(notes):
            columns.append("Note")
            body = [cells + [note] for cells, note in zip(body, notes)]
        tables[family] = Table(columns, body)
    return tables


def decision_table(curves: pd.DataFrame, thresholds=CARD_THRESHOLDS) -> Table | None:
    """Net benefit of the model, treat all and treat none at a few thresholds, per outcome and class."""
    if curves.empty:
        return None
    body = []
    for (outcome, label), rows in curves.groupby(["outcome", "class"], sort=False):
        prevalence = rows["events"].iloc[0] / rows["n"].iloc[0]
        for pt in thresholds:
            at = rows[np.isclose(rows["threshold"], pt)]
            if at.empty:
                continue
            model, treat_all = at["model"].iloc[0], at["treat_all"].iloc[0]
            best = max(treat_all, 0.0)
            body.append([str(outcome), f"{label} ({prevalence:.0%})", f"{pt:.0%}", _number(model),
                         _number(treat_all), _number(0.0), f"{model - best:+.3f}"])
    return Table(["Outcome", "Class (prevalence)", "Threshold", "Model", "Treat all", "Treat none",
                  "Model minus best of the two"], body)


def calibration_table(table: pd.DataFrame) -> Table | None:
    rows = table[table["kind"].map(_family) == "classification"]
    if rows.empty:
        return None
    return Table(
        ["Outcome", "ECE", "Calibration slope (ideal 1)", "Calibration intercept (ideal 0)", "Brier"],
        [[str(outcome), _with_interval(row, "ece"), _number(row["calibration_slope"]),
          _number(row["calibration_intercept"]), _with_interval(row, "brier")] for outcome, row in rows.iterrows()],
    )


def transfer_table(table: pd.DataFrame) -> Table:
    body = []
    for outcome, row in table.iterrows():
        better = "higher" if row["higher_is_better"] else "lower"
        interval = (f" ({_number(row['delta_lower'])} to {_number(row['delta_upper'])})"
                    if pd.notna(row["delta_lower"]) else "")
        delta = f"{row['delta']:+.3f}" if np.isfinite(row["delta"]) else "–"
        body.append([str(outcome), f"{_metric_label(row['metric'])} ({better} is better)", _count(row["n_test"]),
                     _number(row["multi_task"]), _number(row["single_task"]),
                     f"{delta}{interval}", str(row["verdict"])])
    return Table(["Outcome", "Metric", "Test rows", "Multi-task", "Single-task", "Difference", "Verdict"], body)


def relatedness_card_table(table: pd.DataFrame) -> Table:
    """The outcomes' gradient cosines on the shared trunk, with their reading in words."""
    words = describe_relatedness(table)
    body = [[f"{row.outcome} and {row.other}", f"{row.mean_cosine:+.2f}", f"{row.conflicting_share:.0%}",
             _count(row.n_measurements), sentence]
            for row, sentence in zip(table.itertuples(), words)]
    return Table(["Outcomes", "Mean gradient cosine", "Opposed in", "Measurements", "Reading"], body)


def outcome_table(summary: dict) -> Table:
    n_rows = summary["n_rows"]
    body = []
    for name, outcome in summary["outcomes"].items():
        labelled = outcome["n_labelled"]
        events = outcome.get("events", {})
        if isinstance(events, dict):
            balance = "; ".join(f"{label}: {count:,} ({count / labelled:.0%})" for label, count in events.items())
        else:  # a survival outcome: observed events and censored patients
            balance = f"events: {events:,} ({events / labelled:.0%}); censored: {outcome['censored']:,}"
        body.append([name, outcome["kind"], f"{labelled:,} ({labelled / n_rows:.0%})", balance or "–"])
    return Table(["Outcome", "Kind", "Labelled rows", "Class balance"], body)


def feature_table(summary: dict) -> Table:
    return Table(
        ["Feature", "Kind", "Missing"],
        [[name, feature["kind"], f"{feature['missing_fraction']:.1%}"]
         for name, feature in summary["features"].items()],
    )


def text(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{key}: {item}" for key, item in value.items())
    return str(value)

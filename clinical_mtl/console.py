"""What the command line shows a person: held-out metrics as tables, and training progress on a terminal.

Rendering only, with `rich`; the numbers come from the model and the
pipelines, and training progress from the model's progress listeners
(:mod:`clinical_mtl.model.hooks`), so the library below stays free of console code.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import pandas as pd
from rich import box
from rich.console import Console, Group
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from .model.hooks import TrainingProgress, add_progress_listener, remove_progress_listener

MAX_WIDTH = 100
"""The most columns the command line's tables take, however wide the terminal."""

COUNTS = ("n_labelled", "events", "censored")
LABELS = {
    "auroc": "AUROC", "log_loss": "log loss", "brier": "Brier score", "accuracy": "accuracy",
    "ece": "calibration error (ECE)", "calibration_slope": "calibration slope",
    "calibration_intercept": "calibration intercept", "rmse": "RMSE", "mae": "MAE", "r2": "R²",
    "median_follow_up": "median follow-up", "harrell_c": "Harrell's C", "uno_c": "Uno's C",
    "ibs": "integrated Brier score", "auc": "time-dependent AUC", "calibration": "calibration",
}


def stdout_console() -> Console:
    """A console on standard output, at most :data:`MAX_WIDTH` columns wide."""
    console = Console(highlight=False)
    console.width = min(console.width, MAX_WIDTH)
    return console


def figure(value: float, decimals: int | None = None) -> str:
    """A metric as a person reads it: 3 decimals below 10 (0.842, 2.044), 3 significant
    digits up to 100 (12.3), whole numbers with separators above (2,241); ``decimals`` overrides.

    >>> figure(0.84213), figure(36.0), figure(2241.0), figure(float("nan"))
    ('0.842', '36.0', '2,241', '–')
    """
    if value is None or math.isnan(value):
        return "–"
    return f"{value:,.{_decimals(value) if decimals is None else decimals}f}"


def _decimals(value: float) -> int:
    size = abs(value)
    return 0 if size >= 100 else 1 if size >= 10 else 3


def with_interval(value: float, lower: float, upper: float) -> str:
    """An estimate and its interval, at the estimate's precision: ``0.835 (0.751–0.905)``."""
    if lower is None or upper is None or math.isnan(lower) or math.isnan(upper):
        return figure(value)
    decimals = _decimals(value) if not math.isnan(value) else 3
    return f"{figure(value, decimals)} ({figure(lower, decimals)}–{figure(upper, decimals)})"


def metrics_tables(metrics: pd.DataFrame, confidence: float = 0.95) -> Group:
    """One table per outcome of an ``evaluate`` table: its counts in the title, one row per metric
    that applies (with its bootstrap interval where there is one).

    Parameters
    ----------
    metrics : DataFrame
        ``MultiTaskMLP.evaluate``'s table, indexed by outcome.
    confidence : float, default=0.95
        Coverage of the table's intervals, for the heading.

    Returns
    -------
    rich.console.Group
        Print it with a rich ``Console``.
    """
    tables = []
    for outcome, row in metrics.iterrows():
        counts = [f"{int(row[name]):,} {name.replace('n_', '')}" for name in COUNTS
                  if name in row and pd.notna(row[name])]
        title = f"{outcome} ({row['kind']})" if "kind" in row else str(outcome)
        table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
        table.add_column("metric")
        table.add_column(f"value ({confidence:.0%} interval)", justify="right")
        note = row.get("note")
        if isinstance(note, str) and note:  # too few to estimate, or why an interval is missing
            table.add_row("note", note)
        for name, value in row.items():
            if (name in COUNTS or name in ("kind", "note", "estimable") or name.endswith(("_lower", "_upper"))
                    or pd.isna(value)):
                continue
            table.add_row(_label(str(name)), with_interval(float(value), float(row.get(f"{name}_lower", math.nan)),
                                                           float(row.get(f"{name}_upper", math.nan))))
        tables += [Text(title + (": " + ", ".join(counts) if counts else ""), style="bold"), table, Text("")]
    return Group(*tables)


def _label(name: str) -> str:
    """``auc_at_365`` reads ``time-dependent AUC at 365``; other names by :data:`LABELS`."""
    metric, at, horizon = name.partition("_at_")
    if at:
        return f"{LABELS.get(metric, metric)} at {horizon.replace('p', '.')}"
    return LABELS.get(name, name.replace("_", " "))


@contextmanager
def training_progress(console: Console | None = None) -> Iterator[None]:
    """Show every fit's networks, epochs and best validation loss while the block runs, on a terminal.

    Nothing is shown when ``console`` (default: standard error) is not a
    terminal, so piped and logged output stays quiet. Each network ends with
    one line: its epochs and its best validation loss.

    Parameters
    ----------
    console : rich.console.Console, default=None
        Where to draw; standard error by default.
    """
    console = console or Console(stderr=True)
    if not console.is_terminal or console.is_dumb_terminal:
        yield
        return
    columns = (TextColumn("{task.description}"), BarColumn(bar_width=20),
               TextColumn("epoch {task.completed:.0f}/{task.total:.0f}"), TextColumn("{task.fields[best]}"),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        display = _ProgressDisplay(progress)
        add_progress_listener(display)
        try:
            yield
        finally:
            remove_progress_listener(display)


class _ProgressDisplay:
    """A progress listener drawing one bar per network in training (an ensemble's
    networks may train together), and a line for each one done."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self.bars: dict[int, object] = {}

    def __call__(self, model, step: TrainingProgress) -> None:
        description = f"network {step.network + 1}/{step.n_networks}"
        best = ("" if step.best_valid_loss is None else
                f"best validation loss {step.best_valid_loss:.4g} (epoch {step.best_epoch})")
        if step.network == 0 and step.epoch == 1 and not step.done:  # a new fit
            self.progress.console.print(f"Training {', '.join(step.outcomes)} ({step.n_networks} networks)",
                                        highlight=False)
        if step.done:
            if step.network in self.bars:
                self.progress.remove_task(self.bars.pop(step.network))
            self.progress.console.print(f"  {description}: {step.epoch} epochs" + (f", {best}" if best else ""),
                                        highlight=False)
            return
        if step.network not in self.bars:
            self.bars[step.network] = self.progress.add_task(description, total=step.max_epochs, best=best)
        self.progress.update(self.bars[step.network], completed=step.epoch, best=best)

"""A survival outcome on a patient's page: the curve and the event probabilities.

The patient's predicted survival curve is drawn against the training cohort's
Kaplan-Meier curve (stored in the model, ``cohort_survival_``). The patient's
is known at the model's cut points (the ends of its follow-up intervals) and
is linear between them, as the model defines it; the cohort's Kaplan-Meier
estimate is sampled at 24 evenly spaced times up to the last cut point
(``cohort_survival_times_``; the cut points for models saved before) and drawn
through them. The template draws what this module lays out. Each event
probability comes with its range over the ensemble's networks: the model's own
uncertainty about that patient.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..model.survival import SURVIVAL, survival_at
from . import formatting as fmt

WIDTH, HEIGHT = 600, 250
PLOT_LEFT, PLOT_RIGHT, PLOT_TOP, AXIS_Y = 56, 580, 14, 200
SURVIVAL_TICKS = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclass(frozen=True)
class Tick:
    """A labelled position on an axis."""

    position: float
    text: str


@dataclass(frozen=True)
class SurvivalChart:
    """Everything the template needs to draw the two curves."""

    title: str
    description: str
    patient_points: str
    cohort_points: str | None
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    x_label: str
    width: int = WIDTH
    height: int = HEIGHT
    plot_left: int = PLOT_LEFT
    plot_right: int = PLOT_RIGHT
    plot_top: int = PLOT_TOP
    axis_y: int = AXIS_Y


def survival_chart(cut_points, patient: np.ndarray, cohort: np.ndarray | None, horizons, *, unit: str,
                   title: str, cohort_times=None) -> SurvivalChart:
    """Lay out a patient's survival curve beside the cohort's.

    Parameters
    ----------
    cut_points : sequence of float
        The times of both curves' values, increasing, > 0.
    patient : ndarray of shape (n_cut_points,)
        The patient's predicted ``S(t)`` there.
    cohort : ndarray or None
        The training cohort's Kaplan-Meier ``S(t)`` at ``cohort_times``; None
        for a model that did not store it (the chart then shows the patient alone).
    horizons : sequence of float
        Times marked on the time axis (the reported horizons).
    unit : str
        Unit of the times.
    title : str
        The chart's accessible title.
    cohort_times : sequence of float, optional
        The times of ``cohort``'s values (default: the cut points, as models
        saved before ``cohort_survival_times_`` kept them).

    Returns
    -------
    SurvivalChart
    """
    times = np.concatenate([[0.0], np.asarray(cut_points, dtype=float)])
    end = float(times[-1])

    def x_of(t: float) -> float:
        return PLOT_LEFT + (PLOT_RIGHT - PLOT_LEFT) * t / end

    def y_of(s: float) -> float:
        return AXIS_Y - (AXIS_Y - PLOT_TOP) * s

    def points(curve: np.ndarray, at: np.ndarray) -> str:
        values = np.concatenate([[1.0], np.asarray(curve, dtype=float)])
        return " ".join(f"{x_of(t):.1f},{y_of(s):.1f}" for t, s in zip(at, values) if np.isfinite(s))

    cohort_at = times if cohort_times is None else np.concatenate([[0.0], np.asarray(cohort_times, dtype=float)])

    horizons = [h for h in horizons if 0 < h <= end]
    x_ticks = [Tick(x_of(0.0), "0")] + [Tick(x_of(h), fmt.number(h)) for h in horizons]
    y_ticks = [Tick(y_of(s), f"{s:.0%}") for s in SURVIVAL_TICKS]
    at_end = f"{fmt.probability(float(patient[-1]))} predicted"
    if cohort is not None and np.isfinite(cohort[-1]):
        at_end += f" against {fmt.probability(float(cohort[-1]))} of the training cohort (Kaplan-Meier)"
    description = f"Probability of being event-free over {fmt.number(end)} {unit}: at the end, {at_end}."
    return SurvivalChart(
        title=title, description=description, patient_points=points(patient, times),
        cohort_points=None if cohort is None else points(cohort, cohort_at), x_ticks=x_ticks, y_ticks=y_ticks,
        x_label=f"time from baseline ({unit})",
    )


@dataclass(frozen=True)
class SurvivalDetails:
    """One survival outcome's curves and event probabilities for a batch of patients."""

    curves: np.ndarray
    lowest: np.ndarray
    highest: np.ndarray
    n_members: int


def survival_details(model, features) -> dict[str, SurvivalDetails]:
    """Per survival outcome: every patient's curve at the cut points (n, J), and
    the lowest and highest event probability by each horizon (n, H) over the
    ensemble's networks."""
    if not any(spec.kind == SURVIVAL for spec in model.task_specs_):
        return {}
    details = {}
    for spec, members in zip(model.task_specs_, model.member_outputs(features)):
        if spec.kind != SURVIVAL:
            continue
        by_horizon = np.stack([1 - survival_at(curves, spec.cut_points, spec.horizons) for curves in members])
        details[spec.name] = SurvivalDetails(members.mean(axis=0), by_horizon.min(axis=0),
                                             by_horizon.max(axis=0), len(members))
    return details


def horizon_rows(horizons, unit: str, probabilities, details: SurvivalDetails, row: int) -> list[tuple[str, ...]]:
    """Table rows of a patient's event probability by each horizon with its range over the networks."""
    rows = []
    for k, (horizon, p) in enumerate(zip(horizons, probabilities)):
        spread = (f"{fmt.percent(details.lowest[row, k])} to {fmt.percent(details.highest[row, k])}"
                  if details.n_members > 1
                  else "one network: no range")
        rows.append((f"{fmt.number(horizon)} {unit}", fmt.probability(float(p)), spread))
    return rows

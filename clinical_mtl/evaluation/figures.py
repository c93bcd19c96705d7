"""Figures of a fitted model: reliability diagrams, decision curves and SHAP beeswarms, drawn with
matplotlib and written to files.

The model's own modules compute numbers only; everything that draws or writes an image lives here."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..model.metrics import (
    ECE_BINS,
    bin_edges,
    calibration_bins,
    calibration_slope_intercept,
    calibration_target,
    expected_calibration_error,
)
from ..model.survival import SURVIVAL, survival_at
from ..model.survival_metrics import horizon_calibration
from ..model.tasks import REGRESSION


def reliability_diagram(
    y_true: np.ndarray,
    proba: np.ndarray,
    *,
    n_bins: int = ECE_BINS,
    strategy: str = "uniform",
    title: str | None = None,
):
    """Draw a reliability diagram: observed frequency against predicted probability.

    One point per non-empty bin (mean predicted probability, observed
    frequency), the diagonal of perfect calibration, and below it the number
    of patients per bin. The legend gives the ECE and, for binary outcomes,
    the calibration slope and intercept (see :mod:`clinical_mtl.model.metrics`).
    Binary outcomes show the positive class, several classes the top label.

    Parameters
    ----------
    y_true : ndarray of shape (n,), int
        Class indices of the labelled rows.
    proba : ndarray of shape (n, n_classes)
        Predicted probabilities.
    n_bins : int, default=10
    strategy : {"uniform", "quantile"}, default="uniform"
        Equal-width or equal-mass bins.
    title : str, default=None

    Returns
    -------
    matplotlib.figure.Figure
        A figure outside pyplot's state (nothing to close); save it with
        ``figure.savefig("diagram.png")`` or ``.svg``.
    """
    from matplotlib.figure import Figure

    predicted, observed = calibration_target(y_true, proba)
    bins = calibration_bins(predicted, n_bins, strategy)
    counts = np.bincount(bins, minlength=n_bins)
    filled = counts > 0
    mean_predicted = np.bincount(bins, predicted, n_bins)[filled] / counts[filled]
    frequency = np.bincount(bins, observed, n_bins)[filled] / counts[filled]

    figure = Figure(figsize=(4.8, 5.2), layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    top.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect calibration")
    slope, intercept = calibration_slope_intercept(y_true, proba)
    label = f"ECE {expected_calibration_error(y_true, proba, n_bins=n_bins, strategy=strategy):.3f}"
    if not np.isnan(slope):
        label += f", slope {slope:.2f}, intercept {intercept:.2f}"
    top.plot(mean_predicted, frequency, marker="o", color="C0", label=label)
    top.set(xlim=(0, 1), ylim=(-0.02, 1.02), ylabel="Observed frequency", title=title)
    top.legend(loc="upper left", fontsize="small")
    edges = bin_edges(predicted, n_bins, strategy)
    bottom.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="C0", alpha=0.5, edgecolor="white")
    what = "positive class" if proba.shape[1] == 2 else "top label"
    bottom.set(xlabel=f"Predicted probability ({what})", ylabel="Patients")
    return figure


def survival_calibration_diagram(spec, y_true: np.ndarray, curves: np.ndarray, *, title: str | None = None):
    """Predicted against Kaplan-Meier observed probability of the event by each horizon.

    One panel per horizon of the survival outcome ``spec``: patients in
    quintiles of predicted risk (fewer groups when small; see
    :func:`clinical_mtl.model.survival_metrics.horizon_calibration`), each
    group's mean predicted probability against its Kaplan-Meier observed one
    with the 95% interval, and the diagonal of perfect calibration.

    Parameters
    ----------
    spec : TaskSpec
        A survival outcome.
    y_true : ndarray of shape (n, 2)
        Follow-up time and event of the labelled rows.
    curves : ndarray of shape (n, J)
        Predicted survival at the outcome's cut points.
    title : str, default=None

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure

    horizons = spec.horizons
    figure = Figure(figsize=(3.4 * len(horizons), 3.8), layout="constrained")
    axes = np.atleast_1d(figure.subplots(1, len(horizons), sharey=True))
    event_probability = 1 - survival_at(curves, spec.cut_points, horizons)
    for k, (axis, horizon) in enumerate(zip(axes, horizons)):
        table = horizon_calibration(y_true[:, 0], y_true[:, 1], event_probability[:, k], horizon)
        axis.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
        error = np.vstack([table["observed"] - table["observed_lower"], table["observed_upper"] - table["observed"]])
        axis.errorbar(table["predicted"], table["observed"], yerr=np.clip(error, 0, None), marker="o", color="C0",
                      capsize=3, linestyle="-")
        axis.set(xlim=(0, 1), ylim=(-0.02, 1.02), xlabel=f"Predicted P(event by {horizon:g})",
                 title=f"by {horizon:g}")
    axes[0].set_ylabel("Observed (Kaplan-Meier)")
    if title:
        figure.suptitle(title)
    return figure


def reliability_diagrams(model, X, y, *, n_bins: int = ECE_BINS, strategy: str = "uniform") -> dict:
    """A reliability diagram per classification outcome (a survival calibration
    diagram per survival outcome), on its labelled rows.

    Parameters
    ----------
    model : MultiTaskMLP
        A fitted model.
    X, y : as for :func:`evaluate_model`
    n_bins : int, default=10
    strategy : {"uniform", "quantile"}, default="uniform"

    Returns
    -------
    dict of str to matplotlib.figure.Figure
        Outcome -> figure (see :func:`reliability_diagram`).
    """
    return {
        spec.name: survival_calibration_diagram(spec, y_true, output, title=spec.name) if spec.kind == SURVIVAL
        else reliability_diagram(y_true, output, n_bins=n_bins, strategy=strategy, title=spec.name)
        for spec, y_true, output in model.labelled_pairs(X, y)
        if spec.kind != REGRESSION and len(y_true)
    }


def decision_curve_figure(curves, *, title: str | None = None):
    """Draw decision curves: net benefit against threshold probability.

    One panel per class analysed (a binary outcome's positive class; each
    class of a multi-class outcome, against the rest), each with the model,
    "treat all" and "treat none" (see :mod:`clinical_mtl.model.decision_curve`).

    Parameters
    ----------
    curves : DataFrame
        The rows of one outcome from
        :func:`clinical_mtl.model.decision_curve.decision_curves`.
    title : str, default=None

    Returns
    -------
    matplotlib.figure.Figure
        Outside pyplot's state.
    """
    from matplotlib.figure import Figure

    classes = list(dict.fromkeys(curves["class"]))
    figure = Figure(figsize=(4.6 * len(classes), 3.8), layout="constrained")
    axes = np.atleast_1d(figure.subplots(1, len(classes), sharey=True))
    for axis, label in zip(axes, classes):
        rows = curves[curves["class"] == label]
        prevalence = rows["events"].iloc[0] / rows["n"].iloc[0]
        axis.plot(rows["threshold"], rows["model"], color="C0", linewidth=2, label="model")
        axis.plot(rows["threshold"], rows["treat_all"], color="C1", linestyle="--", label="treat all")
        axis.plot(rows["threshold"], rows["treat_none"], color="grey", linestyle=":", label="treat none")
        axis.set(xlabel="Threshold probability", xlim=(rows["threshold"].min(), rows["threshold"].max()),
                 ylim=(-0.05, max(prevalence, rows["model"].max()) * 1.1 + 0.01),
                 title=f"{label} (prevalence {prevalence:.0%})" if len(classes) > 1 else None)
        if len(classes) == 1:
            title = f"{title} (prevalence {prevalence:.0%})" if title else f"prevalence {prevalence:.0%}"
        axis.xaxis.set_major_formatter("{x:.0%}")
    axes[0].set_ylabel("Net benefit")
    axes[0].legend(loc="upper right", fontsize="small")
    if title:
        figure.suptitle(title)
    return figure


def decision_curve_figures(curves) -> dict:
    """A decision-curve figure per outcome of
    :func:`clinical_mtl.model.decision_curve.decision_curves` (outcome -> Figure)."""
    return {name: decision_curve_figure(rows, title=f"Decision curve: {name}")
            for name, rows in curves.groupby("outcome", sort=False)}


def save_reliability_diagrams(
    figures: dict, folder: str | Path, *, formats: Sequence[str] = ("png", "svg"), prefix: str = "reliability"
) -> list[Path]:
    """Save the figures of :func:`reliability_diagrams` as ``reliability_<outcome>.<format>``
    in ``folder`` (created); with ``prefix="decision_curve"``, those of
    :func:`decision_curve_figures` as ``decision_curve_<outcome>.<format>``.

    Returns
    -------
    list of Path
        The files written.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, figure in figures.items():
        for extension in formats:
            path = folder / reliability_file_name(name, extension, prefix)
            figure.savefig(path, dpi=100, metadata={"Date": None} if extension == "svg" else None)
            written.append(path)
    return written


def reliability_file_name(outcome: str, extension: str = "png", prefix: str = "reliability") -> str:
    """The file name of an outcome's diagram in :func:`save_reliability_diagrams`
    (``prefix="decision_curve"`` for decision curves)."""
    return f"{prefix}_{_file_name(str(outcome))}.{extension}"


def save_beeswarm_plots(explanations: dict, folder, max_display: int = 12) -> list:
    """Draw one beeswarm image per outcome (per class for multi-class) into ``folder``.

    Parameters
    ----------
    explanations : dict of str to shap.Explanation
    folder : str or Path
        Created if needed.
    max_display : int, default=12

    Returns
    -------
    list of Path
        The PNG files written (``beeswarm_<output>.png``).
    """
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import shap

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, explanation in explanations.items():
        if explanation.values.ndim == 3:
            parts = [(output, explanation[:, :, k]) for k, output in enumerate(explanation.output_names)]
        else:
            parts = [(explanation.output_names, explanation)]
        for output, part in parts:
            plt.figure()
            shap.plots.beeswarm(part, max_display=max_display, show=False)
            plt.title(f"SHAP values: {output}")
            path = folder / f"beeswarm_{_file_name(output)}.png"
            plt.savefig(path, bbox_inches="tight", dpi=100)
            plt.close("all")
            written.append(path)
    return written


def _file_name(text: str) -> str:
    return "".join(character if character.isalnum() or character in "-_=" else "_" for character in text)

"""Model cards: what a fitted model is for, what it learned from and how well it does.

``build_model_card`` gathers, at training time, what a reader needs before
trusting the model, in the spirit of TRIPOD+AI (Collins et al., BMJ 2024) and
Model Cards (Mitchell et al., FAT* 2019): intended use; the training data as
counts (rows, label availability and class balance per outcome, missingness
per feature; never a patient's row); the model's settings; per-outcome test
metrics with bootstrap confidence intervals; calibration (ECE, slope,
intercept and reliability diagrams); decision curves (net benefit against
treating everyone or no one); the same metrics per subgroup, shown as "too few
to estimate" where the rows are too few
(:func:`clinical_mtl.model.metric_tables.too_few_to_estimate`); the
negative-transfer check against single-task twins; and known limits.
``ModelCard`` renders it as Markdown and as a self-contained HTML page
(templates in ``clinical_mtl/reporting/templates``, drawn by
:func:`~clinical_mtl.reporting.rendering.template_environment`) and logs both
to MLflow.
"""

from __future__ import annotations

import base64
import datetime
import io
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .. import __version__
from ..evaluation import evaluate_model
from ..evaluation.figures import (
    decision_curve_figures,
    reliability_diagrams,
    reliability_file_name,
    save_reliability_diagrams,
)
from ..evaluation.negative_transfer import HURT, single_task_comparison
from ..model.decision_curve import decision_curves
from ..model.early_stopping import kept_other_epochs
from ..model.labels import check_label_index
from ..model.metric_tables import MIN_MINORITY_CLASS, MIN_REGRESSION_ROWS, MIN_SURVIVAL_EVENTS
from ..model.relatedness import relatedness_table
from ..model.survival import COX_HEAD, MIXED_HEAD, SURVIVAL
from ..model.tasks import BINARY, REGRESSION
from . import formatting as fmt
from .card_tables import (
    Table,
    calibration_table,
    decision_table,
    feature_table,
    metric_tables,
    outcome_table,
    relatedness_card_table,
    text,
    transfer_table,
)
from .rendering import DEFAULT_INTENDED_USE, template_environment

ARTIFACT_PATH = "model_card"
# Fewer labelled rows or events than these make an estimate too imprecise to lean on (Riley et al.,
# BMJ 2024, and Collins et al., Stat Med 2016, ask for at least 100 events when validating).
MIN_EVENTS = 100
MIN_SUBGROUP_ROWS = 30
REFERENCES = (
    "Collins GS et al. TRIPOD+AI statement: updated guidance for reporting clinical prediction models "
    "that use regression or machine learning methods. BMJ 2024;385:e078378.",
    "Mitchell M et al. Model cards for model reporting. FAT* 2019:220-229.",
    "Van Calster B et al. Calibration: the Achilles heel of predictive analytics. BMC Med 2019;17:230.",
    "Vickers AJ, Elkin EB. Decision curve analysis: a novel method for evaluating prediction models. "
    "Med Decis Making 2006;26:565-574.",
    "Efron B, Tibshirani RJ. An Introduction to the Bootstrap. Chapman & Hall 1993 (ch. 14: BCa intervals).",
)


@dataclass
class ModelCard:
    """The content of a model card; ``to_markdown``, ``to_html`` and ``save`` render it.

    Build it with :func:`build_model_card`.

    Attributes
    ----------
    title : str
    intended_use : str
    limitations : list of str
        Known limits: those given, then those the evaluation found.
    training_data : dict
        Counts only, as :func:`clinical_mtl.tracking.training_data_summary`.
    settings : dict of str to str
        The estimator's parameters.
    training : dict
        Networks trained, epochs run and best epochs.
    metrics : DataFrame
        Test metrics per outcome with intervals (``MultiTaskMLP.evaluate``).
    subgroups : DataFrame or None
        Test metrics per outcome and subgroup.
    transfer : DataFrame or None
        The negative-transfer table of
        :func:`clinical_mtl.evaluation.negative_transfer.single_task_comparison`.
    diagrams : dict of str to matplotlib.figure.Figure
        Reliability diagram per classification outcome, on the test rows.
    n_test : int
        Rows of the test split.
    n_bootstrap, confidence : int, float
        How the intervals were computed.
    created : str
        Date (ISO format).
    decision_curves : DataFrame or None
        Net benefit per classification outcome, class and threshold on the
        test rows (:func:`clinical_mtl.evaluation.decision_curves`).
    decision_figures : dict of str to matplotlib.figure.Figure
        A decision-curve figure per classification outcome.
    relatedness : DataFrame or None
        The outcomes' gradient cosines during training
        (:func:`clinical_mtl.model.relatedness_table`); None for models
        saved before they were measured, empty for a single outcome.
    """

    title: str
    intended_use: str
    limitations: list[str]
    training_data: dict
    settings: dict
    training: dict
    metrics: pd.DataFrame
    subgroups: pd.DataFrame | None
    transfer: pd.DataFrame | None
    diagrams: dict
    n_test: int
    n_bootstrap: int
    confidence: float
    created: str = field(default_factory=lambda: datetime.date.today().isoformat())
    decision_curves: pd.DataFrame | None = None
    decision_figures: dict = field(default_factory=dict)
    relatedness: pd.DataFrame | None = None

    def to_markdown(self, images: str | None = None) -> str:
        """The card as Markdown.

        Parameters
        ----------
        images : str, default=None
            Folder, relative to the Markdown file, holding the reliability
            diagrams as ``reliability_<outcome>.png`` (what :meth:`save`
            writes); None leaves the images out (the tables stay).

        Returns
        -------
        str
        """
        def linked(files):
            return {name: f"{images}/{file}" for name, file in files.items()} if images is not None else {}

        return template_environment(markdown=True).get_template("model_card.md.j2").render(
            self._context(), images=linked(self._image_files()),
            decision_images=linked(self._image_files("decision_curve")),
        )

    def to_html(self) -> str:
        """The card as one self-contained HTML page (diagrams inline as SVG data).

        Returns
        -------
        str
        """
        images = {name: _svg_data(figure) for name, figure in self.diagrams.items()}
        decision_images = {name: _svg_data(figure) for name, figure in self.decision_figures.items()}
        return template_environment().get_template("model_card.html.j2").render(
            self._context(), images=images, decision_images=decision_images)

    def save(self, path: str | Path) -> list[Path]:
        """Write ``<path>`` (Markdown), the same name with ``.html``, and the diagrams
        in ``<stem>_files/``.

        Parameters
        ----------
        path : str or Path
            The Markdown file; its folder is created.

        Returns
        -------
        list of Path
            The files written.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        folder = path.with_name(f"{path.stem}_files")
        written = save_reliability_diagrams(self.diagrams, folder, formats=("png",)) if self.diagrams else []
        if self.decision_figures:
            written += save_reliability_diagrams(self.decision_figures, folder, formats=("png",),
                                                 prefix="decision_curve")
        path.write_text(self.to_markdown(images=folder.name if written else None), encoding="utf-8")
        html = path.with_suffix(".html")
        html.write_text(self.to_html(), encoding="utf-8")
        return [path, html, *written]

    def log_to_mlflow(self, artifact_path: str = ARTIFACT_PATH) -> None:
        """Log the saved card (Markdown, HTML, diagrams) to the active MLflow run
        (or a new one) under ``artifact_path``."""
        import mlflow

        from ..tracking.runs import _active_run

        with _active_run(), tempfile.TemporaryDirectory() as folder:
            self.save(Path(folder) / "model_card.md")
            mlflow.log_artifacts(folder, artifact_path=artifact_path)

    def _image_files(self, prefix: str = "reliability") -> dict[str, str]:
        figures = self.decision_figures if prefix == "decision_curve" else self.diagrams
        return {name: reliability_file_name(name, prefix=prefix) for name in figures}

    def _context(self) -> dict:
        level = f"{self.confidence:.0%}"
        return {
            "card": self,
            "version": __version__,
            "interval": f"{level} bias-corrected and accelerated (BCa) bootstrap intervals "
                        f"({self.n_bootstrap} resamples)" if self.n_bootstrap else "no intervals",
            "rule": {"classification": MIN_MINORITY_CLASS, "survival": MIN_SURVIVAL_EVENTS,
                     "regression": MIN_REGRESSION_ROWS},
            "data": self.training_data,
            "outcome_table": outcome_table(self.training_data),
            "feature_table": feature_table(self.training_data),
            "settings_table": Table(["Parameter", "Value"], [[k, v] for k, v in self.settings.items()]),
            "performance": metric_tables(self.metrics),
            "calibration": calibration_table(self.metrics),
            "subgroup_tables": metric_tables(self.subgroups) if self.subgroups is not None else {},
            "transfer_table": transfer_table(self.transfer) if self.transfer is not None else None,
            "decision_table": decision_table(self.decision_curves) if self.decision_curves is not None else None,
            "relatedness_table": (relatedness_card_table(self.relatedness)
                                  if self.relatedness is not None and not self.relatedness.empty else None),
            "references": REFERENCES,
        }


def build_model_card(
    model,
    X_train,
    Y_train,
    X_test,
    Y_test,
    *,
    groups=None,
    single_task: bool = True,
    metrics: pd.DataFrame | None = None,
    n_bootstrap: int = 200,
    confidence: float = 0.95,
    random_state=None,
    title: str = "Model card",
    intended_use: str = DEFAULT_INTENDED_USE,
    limitations: Sequence[str] = (),
) -> ModelCard:
    """Evaluate a fitted model on a test split and gather its model card.

    Parameters
    ----------
    model : MultiTaskMLP
        Fitted on ``X_train``, ``Y_train``.
    X_train, Y_train : DataFrame or array-like
        The training split; only counts and fractions reach the card.
    X_test, Y_test : DataFrame or array-like
        The held-out split every metric is computed on.
    groups : as ``groups`` of ``MultiTaskMLP.evaluate``, default=None
        Subgroups of the test rows (e.g. ``["sex", band(X_test["age"], [50, 65])]``
        as a DataFrame); None leaves the subgroup section empty.
    single_task : bool, default=True
        Fit the single-task twin of every outcome for the negative-transfer
        table (about one more fit per outcome).
    metrics : DataFrame, default=None
        The test evaluation, if already computed with
        ``model.evaluate(X_test, Y_test, n_bootstrap=...)``.
    n_bootstrap : int, default=200
        Bootstrap resamples for every interval.
    confidence : float, default=0.95
    random_state : int, RandomState instance or None, default=None
        Seeds the resampling.
    title, intended_use : str
    limitations : sequence of str, default=()
        Known limits to state; the card adds those its evaluation finds
        (small test samples or subgroups, miscalibration, negative transfer).

    Returns
    -------
    ModelCard
    """
    from ..tracking import training_data_summary

    check_label_index(X_train, Y_train)
    check_label_index(X_test, Y_test)
    options = {"n_bootstrap": n_bootstrap, "confidence": confidence, "random_state": random_state}
    if metrics is None:
        metrics = evaluate_model(model, X_test, Y_test, **options)
    subgroups = evaluate_model(model, X_test, Y_test, groups, **options) if groups is not None else None
    transfer = (
        single_task_comparison(model, X_train, Y_train, X_test, Y_test, **options) if single_task else None
    )
    curves = decision_curves(model, X_test, Y_test)
    return ModelCard(
        title=title,
        intended_use=" ".join(intended_use.split()),
        limitations=[" ".join(text.split()) for text in limitations] + found_limitations(metrics, subgroups, transfer),
        training_data=training_data_summary(model, X_train, Y_train),
        settings={key: text(value) for key, value in model.get_params().items()},
        training={
            "networks": len(model.n_iter_),
            "epochs": model.n_iter_.tolist(),
            "kept_epochs": kept_epochs_text(model),
            "survival_head": survival_head_text(model),
        },
        metrics=metrics,
        subgroups=subgroups,
        transfer=transfer,
        diagrams=reliability_diagrams(model, X_test, Y_test),
        n_test=len(X_test),
        n_bootstrap=n_bootstrap,
        confidence=confidence,
        decision_curves=curves,
        decision_figures=decision_curve_figures(curves),
        relatedness=relatedness_table(model.history_),
    )


def found_limitations(
    metrics: pd.DataFrame, subgroups: pd.DataFrame | None, transfer: pd.DataFrame | None
) -> list[str]:
    """Limits that the evaluation itself shows: small samples, miscalibration, negative transfer."""
    found = []
    for outcome, row in metrics.iterrows():
        if row["kind"] == REGRESSION:
            count, what = row["n_labelled"], "labelled test rows"
        elif row["kind"] == SURVIVAL:
            count, what = row["events"], "observed events in the test set"
        elif row["kind"] == BINARY:
            count = min(row["events"], row["n_labelled"] - row["events"])
            what = "events (or non-events) in the test set"
        else:
            count, what = row["events"], "test rows in its rarest class"
        if count < MIN_EVENTS:
            found.append(f"{outcome}: only {count:.0f} {what}; with fewer than {MIN_EVENTS} the metrics are "
                         "imprecise (see the interval widths).")
        slope = row.get("calibration_slope", np.nan)
        if np.isfinite(slope) and not 0.8 <= slope <= 1.2:
            found.append(f"{outcome}: calibration slope {slope:.2f} on the test set; predicted risks are "
                         + ("too extreme" if slope < 1 else "too moderate") + ".")
    if subgroups is not None and "estimable" in subgroups:
        hidden = subgroups.index[~subgroups["estimable"].astype(bool)]
        if len(hidden):
            listed = "; ".join(f"{outcome} in {group} = {value}" for outcome, group, value in hidden)
            found.append(f"Subgroups too few to estimate, shown without metrics: {listed}.")
    if subgroups is not None:
        shown = subgroups["estimable"].astype(bool) if "estimable" in subgroups else True
        small = subgroups.index[(subgroups["n_labelled"] < MIN_SUBGROUP_ROWS) & shown]
        if len(small):
            listed = "; ".join(f"{outcome} in {group} = {value}" for outcome, group, value in small)
            found.append(f"Subgroups with fewer than {MIN_SUBGROUP_ROWS} labelled test rows, whose metrics are "
                         f"not reliable: {listed}.")
    if transfer is not None:
        for outcome in transfer.index[transfer["verdict"] == HURT]:
            found.append(f"{outcome}: its single-task twin did better on the test set (negative transfer); "
                         "consider it for this outcome.")
    return found


# -- rendering ------------------------------------------------------------------------------


def _svg_data(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None})
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def kept_epochs_text(model) -> str:
    """The epochs whose weights the networks keep: one list, or one per outcome where per-outcome
    stopping kept each outcome's own best epoch."""
    kept = model.outcome_best_epoch_
    if not kept_other_epochs(kept, model.best_epoch_):
        return f"best epochs, whose weights are kept: {', '.join(map(str, model.best_epoch_.tolist()))}"
    per_outcome = "; ".join(f"{spec.name} {', '.join(map(str, kept[:, t].tolist()))}"
                            for t, spec in enumerate(model.task_specs_))
    return f"each outcome keeps the weights of its own best validation epoch: {per_outcome}"


def survival_head_text(model) -> str | None:
    """What the survival outcomes' head is, under ``survival_head="auto"`` why, and on which intervals
    of follow-up (None without a survival outcome)."""
    survival = [spec for spec in model.task_specs_ if spec.kind == SURVIVAL]
    if not survival:
        return None
    losses = ", ".join(f"{head} {loss:.4f}" for head, loss in model.survival_head_losses_.items())
    why = f", chosen by the early-stopping rows' loss ({losses})" if losses else ""
    intervals = "; ".join(f"{spec.name} on {len(spec.cut_points)}, ending at {_listed(fmt.numbers(*spec.cut_points))}"
                          for spec in survival)
    cox = ("one risk score per patient, trained by Cox's partial likelihood; the intervals' baseline hazards "
           "then fitted to the training rows")
    trained = {COX_HEAD: f" ({cox})", MIXED_HEAD: "; the ensemble's networks alternate between the interval head (an "
               f"effect of the shared layers per interval) and the cox head ({cox})"}.get(model.survival_head_, "")
    return (f"Survival outcomes have the {model.survival_head_} head{why}: a discrete-time logistic hazard on "
            f"intervals of follow-up cut at quantiles of the training event times ({intervals}){trained}.")


def _listed(words: list[str]) -> str:
    """'a, b and c'."""
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"

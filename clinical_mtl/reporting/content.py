"""What a patient's report says, computed for a batch of patients at once.

For every outcome: the prediction in words (a diagnosis "likely (72%)" or
"unlikely (18%)" with the decision threshold stated, the most likely class
with its probability, a value in units with its prediction interval, an
event probability by each time), how the probabilities were calibrated,
where it stands in the training cohort (the base rate, or the percentile of
the observed values), the largest SHAP contributions as a waterfall coloured
by clinical direction and in words (:mod:`.contributions`). For every
feature: the patient's value with its unit, the schema's reference range, and
flags for missing (imputed) and out-of-range values. A patient whose id is
among the training ids given is marked: the model has seen their outcomes.

Everything on a page comes from that patient's own row and from the model
(training-cohort summaries stored at fit time); no other patient's data is
read while a page is built.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..data.schema import CohortSchema, OutcomeSpec
from ..data.schema_entries import DISPLAY_TRANSFORMS
from ..model.calibration import MIN_MINORITY_ROWS, IsotonicCalibration
from ..model.conformal import DEFAULT_COVERAGE
from ..model.features import BOOLEAN, CATEGORICAL
from ..model.fitting import LABEL_PERCENTILES
from ..model.outputs import EVENT_PROB, LOWER, PRED, PROBA, UPPER, column_name
from ..model.preprocessing import NumericEncoding
from ..model.survival import SURVIVAL, headline_horizon, survival_at
from ..model.tasks import BINARY, MULTICLASS, REGRESSION, TaskSpec
from ..scoring.model_source import model_columns
from . import formatting as fmt
from .contributions import Explained, explained_outputs, scale_for, steps_and_sentences
from .survival_page import SurvivalChart, horizon_rows, survival_chart, survival_details
from .waterfall import WaterfallChart, waterfall

DEFAULT_REPORT_TOP_K = 6
"""Contributions shown per outcome on a patient page."""

DECISION_THRESHOLD = 0.5
"""A binary outcome is predicted (``predict``) where its probability is above this: the more probable class."""


@dataclass(frozen=True)
class ModelFacts:
    """What the page says about the model that made its predictions."""

    name: str
    version: str | None
    run_id: str | None
    trained: str | None
    cohort: str
    cohort_description: str
    training_labels: list[str]


@dataclass(frozen=True)
class OutcomeReport:
    """One outcome of one patient."""

    name: str
    title: str
    kind: str
    headline: str
    predicted_label: str | None
    class_probabilities: list[tuple[str, str]]
    uncertainty: str | None
    calibration: str | None
    standing: str
    chart: WaterfallChart
    sentences: list[str]
    survival_chart: SurvivalChart | None = None
    horizon_probabilities: list[tuple[str, str, str]] = field(default_factory=list)
    decision: str | None = None
    summary: str = ""
    sort_key: float | str = 0.0


@dataclass(frozen=True)
class FeatureRow:
    """One of the patient's values as the page lists it."""

    label: str
    value: str
    unit: str
    reference: str
    flag: str
    flag_kind: str


@dataclass(frozen=True)
class PatientReport:
    """Everything on one patient's page."""

    patient_id: str
    file_name: str
    outcomes: list[OutcomeReport]
    features: list[FeatureRow]
    in_training: bool | None = None
    """True for a patient among the training ids, False for one not among them, None when none were given."""


def build_patient_reports(loaded, patients: pd.DataFrame, *, top_k: int = DEFAULT_REPORT_TOP_K,
                          coverage: float = DEFAULT_COVERAGE, scores: pd.DataFrame | None = None,
                          training_ids: set[str] | None = None) -> list[PatientReport]:
    """The content of every patient's page.

    Parameters
    ----------
    loaded : LoadedModel
        The model with its cohort schema and identity
        (:func:`clinical_mtl.scoring.load_model_for_scoring`).
    patients : DataFrame
        Valid patient rows (as ``CohortSchema.validate`` returns them): the id
        column and the model's features.
    top_k : int, default=6
        Contributions shown per outcome; the rest are summed into one bar.
    coverage : float, default=0.9
        Coverage of the prediction intervals of regression outcomes.
    scores : DataFrame, default=None
        Rows of a file written by ``clinical-mtl score --explain``, aligned
        with ``patients``: its predictions and top contributions are shown
        instead of being computed again.
    training_ids : set of str, default=None
        The ids of the patients the model was trained on, in the schema's
        id form (``CohortSchema.canonical_ids``) as text; a patient among
        them is marked on their page. None: not known, nothing is marked.

    Returns
    -------
    list of PatientReport
        In the order of ``patients``.
    """
    model, schema = loaded.model, loaded.schema
    if not len(patients):
        return []
    features = patients[model_columns(model)]
    outputs = _outputs(model, features, scores)
    explained = explained_outputs(model, features, top_k, scores, outputs)
    intervals = _intervals(model, features, coverage)
    survival = survival_details(model, features)
    outcome_specs = {outcome.name: outcome for outcome in schema.outcomes}
    feature_labels = {feature.name: feature.display_name for feature in schema.features}
    units = {feature.name: feature.unit for feature in schema.features}
    value_texts = _value_texts(features, units)
    plain_texts = _value_texts(features, {})
    values = {name: features[name].to_numpy(dtype=object) for name in features.columns}
    ids = patients[schema.id_column].tolist()
    reports = []
    for row, patient_id in enumerate(ids):
        outcomes = [
            _outcome_report(spec, outcome_specs.get(spec.name) or OutcomeSpec(spec.name, spec.kind), model,
                            outputs[spec.name][row], explained[spec.name], row, intervals, coverage,
                            feature_labels, value_texts, survival.get(spec.name))
            for spec in model.task_specs_
        ]
        reports.append(PatientReport(
            patient_id=str(patient_id), file_name=page_file_name(patient_id), outcomes=outcomes,
            features=_feature_rows(values, schema, model, plain_texts, row),
            in_training=None if training_ids is None else str(patient_id) in training_ids,
        ))
    return reports


def model_facts(loaded) -> ModelFacts:
    """The model's name, version, run, training date and training cohort."""
    schema, model = loaded.schema, loaded.model
    labels = [f"{_outcome_title(schema, name)}: {counts['n_labelled']:,} labelled patients"
              for name, counts in model.label_counts_.items()]
    return ModelFacts(
        name=loaded.name or "unregistered model", version=loaded.version, run_id=loaded.run_id,
        trained=(loaded.saved_at or "")[:10] or None, cohort=schema.cohort,
        cohort_description=" ".join(schema.description.split()), training_labels=labels,
    )


def page_file_name(patient_id) -> str:
    """A file name for a patient's page that is safe whatever the id holds, and unique per id."""
    text = str(patient_id)
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-")[:40] or "patient"
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:10]
    return f"patient-{slug}-{digest}.html"


# -- predictions -------------------------------------------------------------------------------

def _outputs(model, features: pd.DataFrame, scores: pd.DataFrame | None) -> dict[str, np.ndarray]:
    """Per outcome: class probabilities (n, n_classes), values (n,) or event
    probabilities by each horizon (n, n_horizons)."""
    if scores is None:  # what predict_proba (classification) and predict (regression) return, in one pass
        _, outputs = model.predict_outputs(features)
        return {spec.name: 1 - survival_at(output, spec.cut_points, spec.horizons) if spec.kind == SURVIVAL
                else output for spec, output in zip(model.task_specs_, outputs)}
    outputs = {}
    for spec in model.task_specs_:
        if spec.kind == SURVIVAL:
            outputs[spec.name] = scores[[column_name(spec.name, EVENT_PROB, label=horizon)
                                         for horizon in spec.horizons]].to_numpy(float)
        elif spec.is_classification:
            outputs[spec.name] = scores[[column_name(spec.name, PROBA, label=label)
                                         for label in spec.classes]].to_numpy(float)
        else:
            outputs[spec.name] = scores[column_name(spec.name, PRED)].to_numpy(float)
    return outputs


def _intervals(model, features: pd.DataFrame, coverage: float) -> pd.DataFrame | None:
    """Prediction intervals of the regression outcomes, when the model has them."""
    regression = [spec.name for spec in model.task_specs_ if spec.kind == REGRESSION]
    if not regression or not all(name in getattr(model, "conformal_scores_", {}) for name in regression):
        return None
    return model.predict_interval(features, coverage=coverage)


# -- one outcome -------------------------------------------------------------------------------

def _outcome_report(spec: TaskSpec, outcome: OutcomeSpec, model, output, explained: Explained, row: int,
                    intervals: pd.DataFrame | None, coverage: float, feature_labels: dict,
                    value_texts: dict, survival=None) -> OutcomeReport:
    title = outcome.display_name
    class_probabilities, uncertainty, predicted_label, calibration, decision = [], None, None, None, None
    curve, horizon_probabilities = None, []
    if spec.is_classification:
        position = int(np.argmax(output))  # as predict chooses: the first of equally probable classes
        predicted = spec.classes[position]
        event = _event_phrase(spec, title, predicted)
        if spec.kind == BINARY:
            positive = _event_phrase(spec, title, spec.classes[1])
            word = "likely" if position == 1 else "unlikely"
            summary = f"{word} ({fmt.percent(output[1])})"
            headline = f"{_event_phrase(spec, title, spec.classes[1], in_sentence=False)}: {summary}"
            decision = (f"Decision threshold {DECISION_THRESHOLD:.0%}: the model calls {positive} likely when its "
                        f"probability is above {DECISION_THRESHOLD:.0%}, unlikely otherwise.")
            sort_key = float(output[1])
        else:
            summary = f"most likely {predicted} ({fmt.percent(output[position])})"
            headline = f"{title}: {summary}"
            decision = "The model predicts the most probable class; the table gives every class's probability."
            class_probabilities = [(str(label), fmt.probability(p)) for label, p in zip(spec.classes, output)]
            sort_key = f"{position:04d} {float(output[position]):.6f}"  # by class, then by its probability
        standing = _base_rate_text(model, spec, predicted if spec.kind == MULTICLASS else spec.classes[1], event)
        predicted_label = str(predicted)
        calibration = _calibration_text(model, spec)
    elif spec.kind == SURVIVAL:
        unit = outcome.unit or "time units"
        middle = headline_horizon(spec)
        summary = f"{fmt.percent(output[middle])} by {fmt.number(spec.horizons[middle])} {unit}"
        headline = (f"Probability of {fmt.in_sentence(title)} by {fmt.number(spec.horizons[middle])} {unit}: "
                    f"{fmt.probability(output[middle])}")
        sort_key = float(output[middle])
        horizon_probabilities = horizon_rows(spec.horizons, unit, output, survival, row)
        if survival.n_members > 1:
            headline += f"; the model's networks range from {horizon_probabilities[middle][2]}"
            uncertainty = (f"Range: the lowest and highest probability among the model's {survival.n_members} "
                           "networks, the model's own uncertainty about this patient.")
        curve = survival_chart(spec.cut_points, survival.curves[row], model.cohort_survival_.get(spec.name),
                               spec.horizons, unit=unit, title=f"{title}: predicted probability of being "
                               "event-free over time, against the training cohort",
                               cohort_times=model.cohort_survival_times_.get(spec.name))
        counts = model.label_counts_[spec.name]
        standing = (f"In the training cohort, {counts['events']:,} of {counts['n_labelled']:,} labelled patients had "
                    f"{fmt.in_sentence(title)} during follow-up ({counts['censored']:,} censored).")
        event = f"{fmt.in_sentence(title)} by {fmt.number(spec.horizons[middle])} {unit}"
    else:
        transform = DISPLAY_TRANSFORMS.get(outcome.display_transform or "", lambda v: v)
        unit = outcome.display_unit if outcome.display_transform else outcome.unit
        value = float(transform(output))
        value_text, uncertainty = _value_and_interval(spec, value, intervals, row, coverage, transform, unit)
        summary = fmt.with_unit(value_text, unit)
        headline = f"Predicted {fmt.in_sentence(title)}: {summary}"
        sort_key = value
        standing = _percentile_text(model, spec, output)
        event = None
    scale = scale_for(spec, outcome, event)
    steps, sentences = steps_and_sentences(explained, row, feature_labels, value_texts, scale)
    chart = waterfall(
        steps, float(explained.base[row]), float(explained.output[row]), axis_label=scale.axis_label,
        limits=scale.limits, title=f"{title}: contributions to the {scale.axis_label}", tick_format=scale.tick_text,
        description=" ".join(sentences), higher_is_worse=outcome.worse_when_higher,
    )
    return OutcomeReport(spec.name, title, spec.kind, headline, predicted_label, class_probabilities,
                         uncertainty, calibration, standing, chart, sentences, curve, horizon_probabilities,
                         decision, summary, sort_key)


def _event_phrase(spec: TaskSpec, title: str, label, *, in_sentence: bool = True) -> str:
    """``title`` for the positive class of a 0/1 outcome, else ``title = label``; in a sentence's case."""
    title = fmt.in_sentence(title) if in_sentence else title
    if spec.kind == BINARY and [str(c) for c in spec.classes] in (["0", "1"], ["False", "True"]):
        return title
    return f"{title} = {label}"


def _base_rate_text(model, spec: TaskSpec, label, event: str) -> str:
    counts = model.label_counts_[spec.name]
    events = counts["events"].get(label, counts["events"].get(str(label), 0))
    rate = events / counts["n_labelled"]
    return (f"Base rate: in the training cohort, {events:,} of {counts['n_labelled']:,} labelled patients "
            f"({rate:.0%}) had {event}.")


def _calibration_text(model, spec: TaskSpec) -> str:
    """What was done to the probabilities after training, as the model's fitted state records it."""
    calibrator = getattr(model, "calibrators_", {}).get(spec.name)
    held_out = _held_out_text(model, spec)
    if calibrator is None:
        if getattr(model, "calibration", None) is None:
            return "Probabilities not recalibrated: the model was trained without recalibration."
        return f"Probabilities not recalibrated: {held_out} could not support a recalibration."
    if isinstance(calibrator, IsotonicCalibration):
        return f"Probabilities recalibrated by isotonic regression, fitted on {held_out}.{_slope_text(model, spec)}"
    if calibrator.too_few_rows:
        rarer = "in the rarer class" if spec.kind == BINARY else "outside the most common class"
        return (f"Probabilities not recalibrated: only {calibrator.minority_rows:,} of the {held_out} were {rarer}, "
                f"fewer than the {MIN_MINORITY_ROWS} a temperature is fitted on, so none was applied."
                f"{_slope_text(model, spec)}")
    if calibrator.temperature == 1.0:  # the likelihood-ratio test kept T = 1 (see model.calibration)
        return (f"Probabilities not recalibrated: a temperature fitted on {held_out} did not differ from 1 at "
                f"the 5% level (likelihood-ratio test), so none was applied.{_slope_text(model, spec)}")
    softer = "softening" if calibrator.temperature > 1 else "sharpening"
    return (f"Probabilities recalibrated by temperature scaling (T = {calibrator.temperature:.2f}, {softer} the "
            f"networks' probabilities), fitted on {held_out}.{_slope_text(model, spec)}")


def _held_out_text(model, spec: TaskSpec) -> str:
    """``<n> held-out training patients``: the early-stopping rows the calibration was fitted on."""
    table = getattr(model, "validation_metrics_", None)
    if table is None or spec.name not in table.index:
        return "held-out training patients"
    return f"{int(table.loc[spec.name, 'n_labelled']):,} held-out training patients"


def _slope_text(model, spec: TaskSpec) -> str:
    """The calibration slope on the held-out rows after recalibration, where it was measured."""
    table = getattr(model, "validation_metrics_", None)
    if table is None or spec.name not in table.index or "calibration_slope" not in table.columns:
        return ""
    slope = float(table.loc[spec.name, "calibration_slope"])
    if not math.isfinite(slope):
        return ""
    return (f" Calibration slope on those patients: {slope:.2f} (1 is ideal); on new patients, see the model "
            "card.")


def _percentile_text(model, spec: TaskSpec, value: float) -> str:
    percentiles = model.label_percentiles_.get(spec.name)
    if percentiles is None:  # a model saved before the training labels' percentiles were recorded
        return "Where this prediction stands in the training cohort is not recorded with this model."
    # Models store the 5th to 95th percentiles (LABEL_PERCENTILES); older ones the 0th to 100th.
    levels = np.arange(101) if len(percentiles) == 101 else LABEL_PERCENTILES
    n = model.label_counts_[spec.name]["n_labelled"]
    cohort = f"of the values observed in the training cohort ({n:,} labelled patients)"
    if levels[0] > 0 and value < percentiles[0]:
        return f"This prediction is below the {fmt.ordinal(int(levels[0]))} percentile {cohort}."
    if levels[-1] < 100 and value > percentiles[-1]:
        return f"This prediction is above the {fmt.ordinal(int(levels[-1]))} percentile {cohort}."
    position = int(round(float(np.interp(value, percentiles, levels))))
    return f"This prediction is at the {fmt.ordinal(position)} percentile {cohort}."


def _value_and_interval(spec: TaskSpec, value: float, intervals: pd.DataFrame | None, row: int,
                        coverage: float, transform, unit: str | None) -> tuple[str, str | None]:
    """The predicted value and its interval's text, rounded alike (one rule for the quantity)."""
    if intervals is None:
        return fmt.number(value), None
    low = float(transform(intervals[column_name(spec.name, LOWER)].iloc[row]))
    high = float(transform(intervals[column_name(spec.name, UPPER)].iloc[row]))
    value_text, low_text, high_text = fmt.numbers(value, low, high)
    return value_text, f"{coverage:.0%} prediction interval: {low_text} to {fmt.with_unit(high_text, unit)}"


# -- the patient's values ----------------------------------------------------------------------

def _value_texts(features: pd.DataFrame, units: dict) -> dict[str, list[str]]:
    """Every feature value of every patient as text, numbers followed by their ``units``."""
    texts = {}
    for name in features.columns:
        column = features[name]
        missing = column.isna().to_numpy()
        if isinstance(column.dtype, pd.CategoricalDtype) or column.dtype == object:
            shown = column.astype(object).astype(str).tolist()
        elif pd.api.types.is_bool_dtype(column.dtype):
            shown = ["yes" if value else "no" for value in column.fillna(False)]
        else:
            shown = [fmt.with_unit(fmt.number(value), units.get(name)) for value in column.to_numpy(float)]
        texts[name] = ["missing" if gone else text for gone, text in zip(missing, shown)]
    return texts


def _feature_rows(values: dict, schema: CohortSchema, model, value_texts: dict, row: int) -> list[FeatureRow]:
    """The table of one patient's values; ``values`` maps each feature to every patient's values."""
    encodings = {encoding.name: encoding for encoding in model.preprocessor_.encodings_}
    rows = []
    for feature in schema.features:
        if feature.name not in values:
            continue
        value = values[feature.name][row]
        reference = ""
        if feature.reference_range is not None:
            low, high = feature.reference_range
            reference = fmt.number_range(low, high)
        flag, kind = "", ""
        if pd.isna(value):
            flag, kind = _imputed_text(encodings.get(feature.name), feature), "missing"
        elif feature.reference_range is not None and float(value) < feature.reference_range[0]:
            flag, kind = "below reference range", "low"
        elif feature.reference_range is not None and float(value) > feature.reference_range[1]:
            flag, kind = "above reference range", "high"
        unit = feature.unit if feature.unit and feature.unit != "none" else ""
        rows.append(FeatureRow(feature.display_name, value_texts[feature.name][row], unit, reference, flag, kind))
    return rows


def _imputed_text(encoding, feature) -> str:
    if isinstance(encoding, NumericEncoding) and feature.type not in (BOOLEAN, CATEGORICAL):
        typical = float(encoding.to_units(encoding.median))
        return f"missing: imputed with the training median, {fmt.with_unit(fmt.number(typical), feature.unit)}"
    return "missing: imputed"


def _outcome_title(schema: CohortSchema, name: str) -> str:
    return next((outcome.display_name for outcome in schema.outcomes if outcome.name == name), name)


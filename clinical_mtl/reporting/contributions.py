"""An outcome's SHAP contributions on a patient page: which are shown, how they read, which way is worse.

The ``top_k`` largest contributions by absolute value are shown, largest
first; the others are summed into one last bar that is drawn apart (an
outline, not a filled bar) and named "N other features together": the sum of
many small contributions can exceed each shown one, but no hidden feature
contributes more than the smallest shown one, and the words say how much the
largest of them did.

Bars are coloured by clinical direction (:attr:`OutcomeSpec.worse_when_higher
<clinical_mtl.data.schema_entries.OutcomeSpec.worse_when_higher>`): towards
worse is warm, towards better cool; an outcome without a known direction gets
neutral greys.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..data.schema import OutcomeSpec
from ..model.explanation import contribution_ranks
from ..model.outputs import TOP_CONTRIBUTION, TOP_FEATURE, column_name
from ..model.survival import SURVIVAL, headline_horizon, headline_horizons
from ..model.tasks import BINARY, MULTICLASS, REGRESSION, TaskSpec
from . import formatting as fmt
from .waterfall import Step


@dataclass(frozen=True)
class Explained:
    """One outcome's explained output for every patient: base, output, top contributions.

    ``largest_hidden`` is, per patient, the largest absolute contribution
    among the features not shown; None where only the shown ones are known
    (a scores file).
    """

    base: np.ndarray
    output: np.ndarray
    top_features: np.ndarray
    top_amounts: np.ndarray
    n_features: int
    largest_hidden: np.ndarray | None


def explained_outputs(model, features: pd.DataFrame, top_k: int, scores: pd.DataFrame | None,
                      outputs: dict) -> dict[str, Explained]:
    """The explained output of every outcome: the positive class (binary), the
    predicted class (multi-class), the value (regression) or the event
    probability by the headline horizon (survival)."""
    n_features = features.shape[1]
    explanations = model.explain(features if scores is None else features.iloc[:1],
                                 horizons=headline_horizons(model.task_specs_))  # explained there alone
    explained = {}
    for spec in model.task_specs_:
        explanation = explanations[spec.name]
        predicted = None
        if spec.kind == MULTICLASS:
            predicted = np.argmax(outputs[spec.name], axis=1)
        elif spec.kind == SURVIVAL:  # the explained horizon, the same for every patient
            predicted = np.full(len(features), headline_horizon(spec))
        chosen = predicted if spec.kind == MULTICLASS else None  # the output explained, where several are
        base = np.asarray(explanation.base_values, dtype=float)
        if scores is not None:  # the background, hence the base value, is the same for every patient
            base = np.repeat(base[:1], len(features), axis=0)
        if chosen is not None:
            base = base[np.arange(len(base)), chosen]
        largest_hidden = None
        if scores is None:
            values = explanation.values
            if chosen is not None:
                values = values[np.arange(len(values)), :, chosen]
            order = contribution_ranks(values, top_k)
            names = np.asarray(explanation.feature_names, dtype=object)[order]
            amounts = np.take_along_axis(values, order, axis=1)
            output = base + values.sum(axis=1)
            hidden = np.abs(values).copy()
            np.put_along_axis(hidden, order, -np.inf, axis=1)
            largest_hidden = hidden.max(axis=1) if order.shape[1] < n_features else None
        else:
            ranks = range(1, 1 + sum(column_name(spec.name, TOP_FEATURE, j) in scores.columns
                                     for j in range(1, n_features + 1)))
            names = scores[[column_name(spec.name, TOP_FEATURE, j) for j in ranks]].to_numpy(dtype=object)
            amounts = scores[[column_name(spec.name, TOP_CONTRIBUTION, j) for j in ranks]].to_numpy(float)
            output = _explained_output(spec, outputs[spec.name], predicted)
        explained[spec.name] = Explained(base, output, names, amounts, n_features, largest_hidden)
    return explained


def _explained_output(spec: TaskSpec, output: np.ndarray, predicted: np.ndarray | None) -> np.ndarray:
    if spec.kind == BINARY:
        return output[:, 1]
    if spec.kind in (MULTICLASS, SURVIVAL):
        return output[np.arange(len(output)), predicted]
    return output


@dataclass(frozen=True)
class Scale:
    """How an outcome's explained output reads, on its chart and in words."""

    axis_label: str
    change_text: Callable[[float], str]
    tick_text: Callable[[list], list]
    limits: tuple[float, float] | None
    effect: Callable[[float], str]
    size_text: Callable[[float], str]


def scale_for(spec: TaskSpec, outcome: OutcomeSpec, event: str | None) -> Scale:
    """The scale of ``outcome``'s explained output: a probability (of ``event``) or a value in units."""
    if spec.kind != REGRESSION:
        return Scale(f"probability of {event}", fmt.signed_change, lambda values: [f"{v:.2f}" for v in values],
                     (0.0, 1.0),
                     lambda a: f"{_direction(a)} the probability of {event} by {abs(a):.2f}",
                     lambda a: f"{abs(a):.2f}")
    quantity = f"predicted {fmt.in_sentence(outcome.display_name)}"
    if outcome.display_transform == "exp":  # contributions add on the log scale: they multiply the value
        return Scale(
            f"{quantity}, {outcome.display_unit or 'value'} (log scale)", lambda a: f"×{np.exp(a):.2f}",
            lambda values: fmt.numbers(*np.exp(values)), None,
            lambda a: f"{_direction(a)} the {quantity} by {abs(np.exp(a) - 1):.0%} (multiplied it by {np.exp(a):.2f})",
            lambda a: f"{abs(np.exp(abs(a)) - 1):.0%}",
        )
    return Scale(fmt.with_unit(quantity, outcome.unit and f"({outcome.unit})"), fmt.signed_change,
                 lambda values: fmt.numbers(*values), None, lambda a: f"{_direction(a)} the {quantity} by {fmt.with_unit(fmt.number(abs(a)), outcome.unit)}",
                 lambda a: fmt.with_unit(fmt.number(abs(a)), outcome.unit))


def _direction(amount: float) -> str:
    return "raised" if amount >= 0 else "lowered"


def steps_and_sentences(explained: Explained, row: int, feature_labels: dict, value_texts: dict,
                        scale: Scale) -> tuple[list[Step], list[str]]:
    """The bars of one patient's waterfall and the same in words, the remainder last."""
    running = float(explained.base[row])
    steps, sentences = [], []
    shown = explained.top_amounts[row]
    for name, amount in zip(explained.top_features[row], shown):
        label, value = feature_labels.get(name, name), value_texts[name][row]
        steps.append(Step(f"{label} = {value}", running, running + amount, scale.change_text(amount)))
        sentences.append(f"{label} {value} {scale.effect(amount)}.")
        running += amount
    rest = float(explained.output[row]) - running
    n_rest = explained.n_features - len(explained.top_features[row])
    if n_rest > 0:
        steps.append(Step(f"{n_rest} other features together", running, running + rest, scale.change_text(rest),
                          rest=True))
        if explained.largest_hidden is not None:
            bound = f"none of them alone by more than {scale.size_text(explained.largest_hidden[row])}"
        else:  # a scores file holds the shown contributions only; the hidden ones are no larger
            bound = f"none of them alone by more than {scale.size_text(np.min(np.abs(shown)))}"
        sentences.append(f"The other {n_rest} features together {scale.effect(rest)}; {bound}.")
    return steps, sentences

"""The survival head: a discrete-time logistic hazard on intervals of follow-up.

Model
-----
A survival outcome ``<name>`` is labelled by two columns of the label table,
``<name>_time`` (follow-up time, > 0, in the cohort's unit) and
``<name>_event`` (1 if the event was observed at that time, 0 if the patient
was censored then; both missing where the patient has no label).

Its head has one logit per interval of follow-up. The intervals are cut at
quantiles of the training event times, ``0 = b_0 < b_1 < ... < b_J`` with
``b_J`` the last of them (``cut_points`` are ``b_1 ... b_J``, rounded to
``STORED_DIGITS`` significant digits as the model stores them), and the logit
``z_j`` gives the hazard ``h_j = sigmoid(z_j)``: the probability of the event
in ``(b_j, b_{j+1}]`` for a patient still event-free at ``b_j``
(Gensheimer and Narasimhan's nnet-survival; pycox's LogisticHazard). Hence

``S(b_k) = prod_{j < k} (1 - h_j)``,

non-increasing by construction, and between cut points ``S`` is interpolated
linearly (a constant event density within an interval); after ``b_J`` it is
held at ``S(b_J)``: the model does not extrapolate beyond the follow-up it
learnt from. For any time ``t`` this is ``S(t) = prod_j (1 - c_j(t) h_j)``
with ``c_j(t) = 1`` for the intervals before ``t``, the fraction of its own
interval elapsed at ``t``, and 0 after (``interpolation_weights``); the
explanations use that form.

Likelihood
----------
A patient with the event in interval ``j`` contributes
``-log(h_j) - sum_{i < j} log(1 - h_i)``; a patient censored in interval ``j``
contributes ``-sum_{i < k} log(1 - h_i)``, where ``k = j + 1`` if the
censoring time is past the middle of the interval and ``j`` otherwise (so a
censored patient is credited with an interval only if observed for most of
it). Every term is a per-row sum: unlabelled rows get weight 0 and minibatches,
task weighting and early stopping work as for every other head. Why this loss
and not only a Cox partial likelihood: the Cox risk set spans the whole
cohort, so a minibatch estimate of it is biased; why not a parametric AFT: it
fixes the shape of every patient's curve. On PBC the logistic hazard tied a
penalised Cox model (``reports/survival_benchmark.md``).

``survival_head="cox"`` keeps this head's form with one effect for all
intervals (``logit h_j = a_j + eta``) but trains ``eta`` by Cox's partial
likelihood within each batch (``cox_loss``; censored rows enter the risk sets
of earlier events), which ranks patients by the order of their times and not
only by the interval of each; the biases ``a_j``, which that likelihood
ignores, are then fitted by maximum likelihood with ``eta`` held fixed
(``fit_interval_biases``). Curves, horizons, explanations and saving are
those of the proportional head.

The default, ``survival_head="mixed"``, gives the ensemble's first, third, ...
networks the interval head and the others the cox head, and averages their
curves like any ensemble's: on held-out folds the cox head ranked patients
better where hazards are proportional and the interval head calibrated
better where they are not, and their mix had the best mean rank of the two
heads alone and a penalised Cox model (``reports/survival_benchmark.md``).

Event times past ``b_J`` (possible for patients the model did not train on)
count as censored at ``b_J``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from ..exceptions import InputDataError, TaskSpecificationError
from .features import describe_rows
from .preprocessing import STORED_DIGITS, round_significant

SURVIVAL = "survival"
INTERVAL_HEAD, PROPORTIONAL_HEAD, AUTO_HEAD, COX_HEAD = "interval", "proportional", "auto", "cox"
"""``survival_head`` values: each interval its own effect, one effect for all, the best of the three, and one
effect for all trained by Cox's partial likelihood."""
MIXED_HEAD = "mixed"
"""``survival_head`` value: an ensemble whose networks alternate between the interval and the cox head."""
COX_LOSS = "survival_cox"
"""The loss kind of a survival outcome with ``survival_head="cox"`` (``cox_loss``)."""
TIME_SUFFIX, EVENT_SUFFIX = "_time", "_event"
DEFAULT_INTERVALS = 4  # fewer, wider intervals: fewer weights per head; best mean rank of 2-20 on held-out folds
COHORT_CURVE_POINTS = 24
"""Evenly spaced times, up to the last cut point, at which the training cohort's Kaplan-Meier curve is kept."""
HORIZON_QUANTILES = (0.25, 0.5, 0.75)
"""Quantiles of the training event times that give the default horizons."""


def label_columns(name: str) -> tuple[str, str]:
    """The label-table columns of a survival outcome: ``<name>_time``, ``<name>_event``."""
    return f"{name}{TIME_SUFFIX}", f"{name}{EVENT_SUFFIX}"


def survival_outcomes(columns) -> list[str]:
    """Outcomes whose ``<name>_time`` and ``<name>_event`` columns are both in ``columns``."""
    present = set(columns)
    return [str(column)[: -len(TIME_SUFFIX)] for column in columns
            if str(column).endswith(TIME_SUFFIX) and label_columns(str(column)[: -len(TIME_SUFFIX)])[1] in present]


def survival_labels(Y: pd.DataFrame, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The checked follow-up times and events of a survival outcome.

    Parameters
    ----------
    Y : DataFrame
        Label table holding ``<name>_time`` and ``<name>_event``.
    name : str
        The outcome.

    Returns
    -------
    time : ndarray of float64, shape (n_samples,)
        NaN where unlabelled.
    event : ndarray of float64, shape (n_samples,)
        1.0 (event) or 0.0 (censored); NaN where unlabelled.
    labelled : ndarray of bool, shape (n_samples,)

    Raises
    ------
    InputDataError
        Naming the outcome and rows: a column missing, a time that is not a
        positive finite number, an event other than 0 or 1, or a time without
        an event (or an event without a time).
    """
    time_column, event_column = label_columns(name)
    absent = [column for column in (time_column, event_column) if column not in Y.columns]
    if absent:
        raise InputDataError(
            f"Survival outcome {name!r} needs the label columns {time_column!r} and {event_column!r}; "
            f"{absent} are missing."
        )
    time, event = _numbers(Y[time_column], name, time_column), _numbers(Y[event_column], name, event_column)
    has_time, has_event = ~np.isnan(time), ~np.isnan(event)
    for lonely, (given, lacking) in ((has_time & ~has_event, (time_column, event_column)),
                                     (has_event & ~has_time, (event_column, time_column))):
        if lonely.any():
            raise InputDataError(
                f"Survival outcome {name!r} has a {given!r} but no {lacking!r} in "
                f"{describe_rows(Y.index, lonely)}; give both or neither."
            )
    labelled = has_time & has_event
    bad_time = labelled & ~(np.isfinite(time) & (time > 0))
    if bad_time.any():
        raise InputDataError(
            f"Survival outcome {name!r}: {time_column!r} must be a positive finite follow-up time; "
            f"it is not in {describe_rows(Y.index, bad_time)}."
        )
    bad_event = labelled & ~np.isin(event, (0.0, 1.0))
    if bad_event.any():
        raise InputDataError(
            f"Survival outcome {name!r}: {event_column!r} must be 1 (event) or 0 (censored); "
            f"it is not in {describe_rows(Y.index, bad_event)}."
        )
    return time, event, labelled


def _numbers(column: pd.Series, name: str, column_name: str) -> np.ndarray:
    try:
        return pd.to_numeric(column.astype(object).where(column.notna(), np.nan), errors="raise").to_numpy(
            dtype=np.float64)
    except (TypeError, ValueError):
        raise InputDataError(
            f"Survival outcome {name!r}: {column_name!r} must hold numbers; it holds {column.dtype} values."
        ) from None


def fit_cut_points(time: np.ndarray, event: np.ndarray, name: str, n_intervals: int = DEFAULT_INTERVALS) -> tuple:
    """Interval ends ``b_1 < ... < b_J`` at quantiles of the event times (module docstring).

    Parameters
    ----------
    time, event : ndarray of shape (n_labelled,)
        Labelled rows only.
    name : str
        The outcome, for errors.
    n_intervals : int
        At most this many intervals (fewer where quantiles coincide).

    Raises
    ------
    TaskSpecificationError
        If the outcome has no event at all.
    """
    event_times = time[event == 1]
    if event_times.size == 0:
        raise TaskSpecificationError(
            f"Survival outcome {name!r} has no event among its {time.size} labelled patients (every one "
            "is censored); a hazard cannot be learnt without events."
        )
    quantiles = np.quantile(event_times, np.linspace(0, 1, n_intervals + 1)[1:])
    cuts = np.unique(round_significant(quantiles, STORED_DIGITS))
    return tuple(float(cut) for cut in cuts[cuts > 0])


def default_horizons(time: np.ndarray, event: np.ndarray) -> tuple:
    """``HORIZON_QUANTILES`` of the event times, to two significant digits."""
    values = np.unique(round_significant(np.quantile(time[event == 1], HORIZON_QUANTILES), 2))
    return tuple(float(value) for value in values[values > 0])


def encode_survival(time: np.ndarray, event: np.ndarray, cut_points) -> np.ndarray:
    """Training targets: per row (intervals survived, event, rank of the time), int64 of shape (n, 3).

    The rank orders the labelled rows' times (equal times, equal ranks) for
    the Cox partial likelihood of ``survival_head="cox"``. Rows with NaN
    (unlabelled) get (0, 0, -1); their weight is 0.
    """
    cuts = np.asarray(cut_points, dtype=np.float64)
    knots = np.concatenate([[0.0], cuts])
    labelled = ~np.isnan(time)
    t = np.where(labelled, time, 1.0)
    interval = np.searchsorted(cuts, t, side="left")  # j of (b_j, b_{j+1}]; J past the last cut
    beyond = interval == len(cuts)
    observed = (event == 1) & labelled & ~beyond
    within = np.minimum(interval, len(cuts) - 1)
    middle = (knots[within] + cuts[within]) / 2
    survived = np.where(observed | beyond, interval, interval + (t >= middle))
    rank = np.full(len(t), -1)
    rank[labelled] = np.unique(t[labelled], return_inverse=True)[1].reshape(-1)
    encoded = np.column_stack([survived, observed, rank]).astype(np.int64)
    encoded[~labelled, :2] = 0
    return encoded


def survival_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Per-row negative log-likelihood of the logistic hazard (module docstring).

    Parameters
    ----------
    logits : Tensor of shape (..., n, J)
    target : Tensor of shape (..., n, 2), int64
        Intervals survived and event, as ``encode_survival`` gives them.

    Returns
    -------
    Tensor of shape (..., n)
    """
    survived, event = target[..., 0], target[..., 1]
    intervals = torch.arange(logits.shape[-1], device=logits.device)
    survived_mask = (intervals < survived[..., None]).to(logits.dtype)
    # -log(1 - sigmoid(z)) = softplus(z); -log(sigmoid(z)) = softplus(-z)
    through = (F.softplus(logits) * survived_mask).sum(dim=-1)
    at_event = logits.gather(-1, survived.clamp(max=logits.shape[-1] - 1)[..., None]).squeeze(-1)
    return through + event.to(logits.dtype) * F.softplus(-at_event)


def cox_loss(logits: Tensor, target: Tensor, weight: Tensor) -> Tensor:
    """Per-row negative log partial likelihood of Cox's model (Breslow's ties) within the batch.

    A row with the event at ``t_i`` contributes ``log sum_j w_j exp(r_j) - r_i``
    over the rows still at risk (``t_j >= t_i``), with ``r`` the first logit (a
    proportional head's logits differ only by their biases, which the partial
    likelihood ignores); censored rows contribute 0 but sit in risk sets, and
    rows of weight 0 (unlabelled, padding) in none. An event past the last
    cut point counts as censored, as in ``survival_loss``. Sorting makes it
    O(n log n) in the batch.

    Parameters
    ----------
    logits : Tensor of shape (..., n, J)
    target : Tensor of shape (..., n, 3), int64
        As ``encode_survival`` gives it: the event and the rank of the time.
    weight : Tensor of shape (..., n)

    Returns
    -------
    Tensor of shape (..., n)
    """
    risk, event = logits[..., 0], target[..., 1].to(logits.dtype)
    key = torch.where(weight > 0, target[..., 2], -1)
    sorted_key, order = torch.sort(key, dim=-1)
    # weight 0: a log weight of -1e4, whose exp(.) underflows to exactly 0 beside any real row
    log_weighted = torch.where(weight > 0, risk + weight.clamp_min(1e-30).log(), -1e4).gather(-1, order)
    at_risk = torch.logcumsumexp(log_weighted.flip(-1), dim=-1).flip(-1)  # log sum over sorted positions >= p
    first = torch.searchsorted(sorted_key.contiguous(), key.contiguous(), side="left")  # where t_j >= t_i begins
    return event * (at_risk.gather(-1, first) - risk)


def fit_interval_biases(effect: Tensor, target: Tensor, n_intervals: int) -> Tensor:
    """The interval logits' biases ``a_j`` that maximise the logistic-hazard likelihood with the
    patients' ``effect`` (their risk scores) held fixed: a proportional head's baseline after the
    Cox partial likelihood, which ignores biases, trained its effect.

    Parameters
    ----------
    effect : Tensor of shape (n,)
    target : Tensor of shape (n, 3)
        Labelled rows only.
    n_intervals : int

    Returns
    -------
    Tensor of shape (n_intervals,), float64
    """
    effect = effect.double()
    survived, event = target[:, 0], target[:, 1].double()
    through = (torch.arange(n_intervals)[None, :] < survived[:, None]).double()
    at_event = F.one_hot(survived.clamp(max=n_intervals - 1), n_intervals).double() * event[:, None]
    biases = torch.zeros(n_intervals, dtype=torch.float64)
    for _ in range(50):  # Newton's method on a convex function of J numbers, separable by interval
        z = biases[None, :] + effect[:, None]
        p = torch.sigmoid(z)
        gradient = (through * p - at_event * (1 - p)).sum(0)
        curvature = ((through + at_event) * p * (1 - p)).sum(0).clamp_min(1e-12)
        step = gradient / curvature
        biases = biases - step
        if step.abs().max() < 1e-10:
            break
    return biases


def decode_survival(raw: np.ndarray) -> np.ndarray:
    """Survival at the cut points, the mean of the members' curves.

    Parameters
    ----------
    raw : ndarray of shape (n_members, n_samples, J)
        Hazard logits.

    Returns
    -------
    ndarray of shape (n_samples, J), float64
        ``S(b_1) ... S(b_J)``.
    """
    log_survival = -np.logaddexp(0.0, raw.astype(np.float64))  # log(1 - sigmoid(z)), stable
    return np.exp(np.cumsum(log_survival, axis=-1)).mean(axis=0)


def interpolation_weights(cut_points, times) -> np.ndarray:
    """``c_j(t)`` of the module docstring, shape (n_times, J): ``S(t) = prod_j (1 - c_j(t) h_j)``."""
    cuts = np.asarray(cut_points, dtype=np.float64)
    knots = np.concatenate([[0.0], cuts])
    t = np.asarray(times, dtype=np.float64)[:, None]
    return np.clip((t - knots[None, :-1]) / np.diff(knots)[None, :], 0.0, 1.0)


def survival_at(curves: np.ndarray, cut_points, times) -> np.ndarray:
    """Survival at ``times`` from survival at the cut points, interpolated linearly.

    Parameters
    ----------
    curves : ndarray of shape (n_samples, J)
        ``S(b_1) ... S(b_J)``.
    cut_points : sequence of float
    times : array-like of shape (n_times,)
        Non-negative times.

    Returns
    -------
    ndarray of shape (n_samples, n_times)
    """
    times = np.asarray(times, dtype=np.float64)
    knots = np.concatenate([[0.0], np.asarray(cut_points, dtype=np.float64)])
    values = np.column_stack([np.ones(len(curves)), curves])
    position = np.clip(np.searchsorted(knots, times, side="right") - 1, 0, len(knots) - 1)
    following = np.minimum(position + 1, len(knots) - 1)
    span = knots[following] - knots[position]
    fraction = np.where(span > 0, (np.clip(times, 0, knots[-1]) - knots[position]) / np.where(span > 0, span, 1), 0)
    return values[:, position] * (1 - fraction) + values[:, following] * fraction


def median_survival(curves: np.ndarray, cut_points) -> tuple[np.ndarray, np.ndarray]:
    """The time at which each curve reaches 0.5, and whether it stays above 0.5.

    Returns
    -------
    median : ndarray of shape (n_samples,)
        NaN where the curve is still above 0.5 at the last cut point (the
        median lies beyond the follow-up the model learnt from; no number is
        made up for it).
    beyond : ndarray of bool, shape (n_samples,)
    """
    knots = np.concatenate([[0.0], np.asarray(cut_points, dtype=np.float64)])
    values = np.column_stack([np.ones(len(curves)), curves])
    beyond = values[:, -1] > 0.5
    first = np.argmax(values <= 0.5, axis=1)  # first knot at or below 0.5 (0 where none)
    rows = np.arange(len(curves))
    before = np.maximum(first - 1, 0)
    upper, lower = values[rows, before], values[rows, first]
    drop = upper - lower
    fraction = np.where(drop > 0, (upper - 0.5) / np.where(drop > 0, drop, 1), 0.0)
    median = knots[before] + fraction * (knots[first] - knots[before])
    return np.where(beyond, np.nan, median), beyond


def restricted_mean(curves: np.ndarray, cut_points) -> np.ndarray:
    """Area under each (interpolated) curve from 0 to the last cut point: the
    restricted mean event-free time, the risk score the concordance uses (minus it)."""
    knots = np.concatenate([[0.0], np.asarray(cut_points, dtype=np.float64)])
    values = np.column_stack([np.ones(len(curves)), curves])
    return ((values[:, 1:] + values[:, :-1]) / 2 * np.diff(knots)).sum(axis=1)


def horizon_label(horizon: float) -> str:
    """A horizon as it appears in column names: ``365`` -> "365", ``182.5`` -> "182p5".

    >>> horizon_label(365.0), horizon_label(182.5)
    ('365', '182p5')
    """
    return f"{horizon:g}".replace(".", "p").replace("+", "")


def headline_horizon(spec) -> int:
    """Position of the horizon that one-number summaries of an outcome speak of:
    the middle one (the second of three, e.g. 5 of 1, 5 and 10 years)."""
    return len(spec.horizons) // 2


def headline_horizons(specs) -> dict:
    """Survival outcome -> its headline horizon alone, as ``explain``'s ``horizons``
    take it: what the one-number summaries (top contributions, patient pages) explain."""
    return {spec.name: (spec.horizons[headline_horizon(spec)],) for spec in specs if spec.kind == SURVIVAL}


def check_horizons(horizons, name: str | None = None, parameter: str = "survival_horizons") -> tuple:
    """Horizons as a sorted tuple of distinct positive floats; a clear error otherwise.

    ``parameter`` (and the outcome ``name``, where given) say which argument the error is about.
    """
    where = parameter if name is None else f"{parameter} for {name!r}"
    try:
        if isinstance(horizons, (str, bytes)):
            raise TypeError
        values = np.asarray(list(horizons), dtype=np.float64)
    except (TypeError, ValueError):
        raise TaskSpecificationError(f"{where} must be a sequence of numbers, got {horizons!r}.") from None
    if values.ndim != 1 or values.size == 0 or not np.all(np.isfinite(values) & (values > 0)):
        raise TaskSpecificationError(f"{where} must be positive finite times, got {list(horizons)}.")
    return tuple(float(v) for v in np.unique(values))


def describe_censoring(time: np.ndarray, event: np.ndarray) -> dict:
    """Counts a model may store: labelled, events, censored."""
    labelled = ~np.isnan(time)
    events = int(np.sum(event[labelled] == 1))
    return {"n_labelled": int(labelled.sum()), "events": events, "censored": int(labelled.sum()) - events}


def cohort_curve_times(cut_points) -> np.ndarray:
    """The ``COHORT_CURVE_POINTS`` times at which ``cohort_survival_`` holds the training Kaplan-Meier curve.

    Evenly spaced up to the last cut point and rounded like it, so they tell
    nothing of any patient; finer than the cut points (4 by default), so a
    patient's page shows the cohort's curve with its shape.

    Examples
    --------
    >>> cohort_curve_times([100.0, 250.0, 400.0, 960.0])[:3].tolist()
    [40.0, 80.0, 120.0]
    """
    end = float(cut_points[-1])
    return round_significant(np.linspace(0.0, end, COHORT_CURVE_POINTS + 1)[1:], STORED_DIGITS)

"""Metrics of censored time-to-event outcomes, as plain functions of numpy arrays.

Conventions
-----------
- ``time`` is the follow-up time (> 0, any unit, e.g. days) and ``event`` is 1 (or
  ``True``) when the event was observed at ``time``, 0 when the patient was censored
  then. Rows whose ``time`` or ``event`` is missing (NaN) are unlabelled and left out,
  so the arrays of a whole cohort can be passed as they are.
- Predictions are survival curves: ``survival[i, k]`` is the predicted probability
  ``S_i(times[k])`` that patient ``i`` is event-free at ``times[k]``, on an increasing
  grid ``times``. ``S(0) = 1`` is assumed at ``t = 0``. Between grid points, and between
  0 and the first grid point, ``S`` is interpolated linearly; it is never extrapolated
  beyond the last grid point (metrics that would need that are NaN).
- *Risk* is "higher means an earlier event": minus the restricted mean survival time
  (RMST, the area under ``S`` from 0 to the last grid time) for the concordance
  indices, the predicted event probability ``1 - S(h)`` at a horizon ``h`` for the
  time-dependent AUC and calibration.
- The model does not keep its training rows, so the censoring distribution used by the
  inverse-probability-of-censoring weights (Uno's C, the Brier score, the AUC) is the
  reverse Kaplan-Meier estimate on the evaluated patients themselves
  (``y_train = y_test`` in scikit-survival's terms).
- Uno's C is truncated at ``tau`` = the 80th percentile of the evaluated patients' event
  times, and the integrated Brier score (IBS) uses 20 equally spaced times between the
  10th and the 80th percentile of those event times: past that, few patients remain at
  risk and the weights become unstable.
- A metric that cannot be estimated (fewer than ``MIN_PATIENTS`` patients, no events,
  fewer than 2 comparable pairs, a horizon outside the follow-up or beyond the
  prediction grid) is NaN; the libraries' warnings are silenced.

scikit-survival and lifelines are imported inside the functions: they are slow to
import and only needed when a survival outcome is evaluated.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from .survival import horizon_label, restricted_mean, survival_at

# Below this many labelled patients every metric of ``survival_metrics`` is NaN.
MIN_PATIENTS = 10
# Risk groups of ``horizon_calibration`` have at least this many patients (when possible).
MIN_GROUP_SIZE = 10
UNO_TAU_PERCENTILE = 80.0
IBS_PERCENTILES = (10.0, 80.0)
IBS_GRID_SIZE = 20


def censoring_summary(time: np.ndarray, event: np.ndarray) -> dict:
    """Counts of events and censorings, and the median follow-up.

    Parameters
    ----------
    time : array-like of shape (n,)
        Follow-up times (> 0); NaN marks an unlabelled row.
    event : array-like of shape (n,)
        1/True for an observed event, 0/False for censoring; NaN marks an unlabelled row.

    Returns
    -------
    dict
        ``n_labelled`` (int), ``events`` (int), ``censored`` (int) and
        ``median_follow_up`` (float): the median of the reverse Kaplan-Meier estimate
        (censoring taken as the event, events as censoring), NaN when that curve never
        falls to 0.5 (e.g. no patient censored) or there are no labelled rows.
    """
    time, event = _check_1d_inputs(time, event)
    summary = {
        "n_labelled": int(time.size),
        "events": int(event.sum()),
        "censored": int((~event).sum()),
        "median_follow_up": float("nan"),
    }
    if time.size and (~event).any():
        from lifelines import KaplanMeierFitter

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            median = KaplanMeierFitter().fit(time, event_observed=~event).median_survival_time_
        if np.isfinite(median):
            summary["median_follow_up"] = float(median)
    return summary


def survival_metrics(
    time: np.ndarray,
    event: np.ndarray,
    survival: np.ndarray,
    times: np.ndarray,
    horizons: Sequence[float] = (),
) -> dict[str, float]:
    """Discrimination, overall accuracy and calibration of predicted survival curves.

    Parameters
    ----------
    time : array-like of shape (n,)
        Follow-up times (> 0); NaN marks an unlabelled row, which is left out.
    event : array-like of shape (n,)
        1/True for an observed event, 0/False for censoring.
    survival : array-like of shape (n, len(times))
        Predicted survival probabilities ``S_i(times[k])``, in [0, 1], non-increasing
        along each row.
    times : array-like of shape (n_times,)
        The increasing, non-negative grid of ``survival``.
    horizons : sequence of float, default=()
        Times at which to compute the time-dependent AUC and calibration.

    Returns
    -------
    dict of str to float
        - ``harrell_c``: Harrell's concordance index (scikit-survival
          ``concordance_index_censored``), risk = minus the RMST up to ``times[-1]``.
        - ``uno_c``: Uno's IPCW concordance index (``concordance_index_ipcw``) with
          ``tau`` = the 80th percentile of the event times, the censoring distribution
          estimated on these patients.
        - ``ibs``: the integrated Brier score (``integrated_brier_score``) on 20 times
          from the 10th to the 80th percentile of the event times (NaN when that range
          is empty, reaches the largest follow-up time or passes ``times[-1]``).
        - ``auc_at_<h>`` for each horizon: the cumulative/dynamic AUC
          (``cumulative_dynamic_auc``) of the predicted event probability ``1 - S(h)``.
        - ``calibration_at_<h>`` for each horizon: the mean absolute difference between
          predicted and Kaplan-Meier observed event probability by ``h`` over the risk
          groups of :func:`horizon_calibration`, weighted by group size.

        ``<h>`` is :func:`horizon_label`. A horizon is evaluated only when it lies in
        ``[min(time), max(time))`` and ``h <= times[-1]``. Metrics that cannot be
        estimated are NaN.
    """
    times = _check_grid(times)
    time, event, survival = _check_survival_inputs(time, event, survival, times)

    horizons = [float(h) for h in horizons]
    nan = float("nan")
    result = {"harrell_c": nan, "uno_c": nan, "ibs": nan}
    for h in horizons:
        result[f"auc_at_{horizon_label(h)}"] = nan
        result[f"calibration_at_{horizon_label(h)}"] = nan
    if len(time) < MIN_PATIENTS or not event.any():
        return result

    from sksurv.metrics import (
        concordance_index_censored,
        concordance_index_ipcw,
        cumulative_dynamic_auc,
        integrated_brier_score,
    )
    from sksurv.util import Surv

    y = Surv.from_arrays(event, time)
    rmst = restricted_mean(survival, times)
    event_times = time[event]

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")

        try:
            c, concordant, discordant, tied_risk, _ = concordance_index_censored(event, time, -rmst)
        except (ValueError, ZeroDivisionError):
            pass  # no comparable pair
        else:
            if concordant + discordant + tied_risk >= 2:
                result["harrell_c"] = float(c)

        tau = float(np.percentile(event_times, UNO_TAU_PERCENTILE))
        try:
            c, concordant, discordant, tied_risk, _ = concordance_index_ipcw(y, y, -rmst, tau=tau)
        except (ValueError, ZeroDivisionError):
            pass  # e.g. no event before tau: nothing comparable
        else:
            if concordant + discordant + tied_risk >= 2 and np.isfinite(c):
                result["uno_c"] = float(c)

        low, high = np.percentile(event_times, IBS_PERCENTILES)
        if low < high < time.max() and high <= times[-1]:
            ibs_grid = np.linspace(low, high, IBS_GRID_SIZE)
            try:
                ibs = integrated_brier_score(y, y, survival_at(survival, times, ibs_grid), ibs_grid)
            except ValueError:
                pass
            else:
                if np.isfinite(ibs):
                    result["ibs"] = float(ibs)

        for h in horizons:
            if not (time.min() <= h < time.max() and h <= times[-1]):
                continue
            risk = 1.0 - survival_at(survival, times, [h])[:, 0]
            cases = int(np.sum((time <= h) & event))
            controls = int(np.sum(time > h))
            if cases * controls >= 2:
                try:
                    auc = cumulative_dynamic_auc(y, y, risk, [h])[0][0]
                except ValueError:
                    pass
                else:
                    if np.isfinite(auc):
                        result[f"auc_at_{horizon_label(h)}"] = float(auc)
            table = horizon_calibration(time, event, risk, h)
            known = table["observed"].notna().to_numpy()
            if known.any():
                gap = np.abs(table["observed"] - table["predicted"]).to_numpy()[known]
                weights = table["n"].to_numpy()[known]
                result[f"calibration_at_{horizon_label(h)}"] = float(np.average(gap, weights=weights))
    return result


def horizon_calibration(
    time: np.ndarray,
    event: np.ndarray,
    event_probability: np.ndarray,
    horizon: float,
    n_groups: int = 5,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Predicted against Kaplan-Meier observed event probability by a horizon, per risk group.

    Patients are sorted by predicted event probability and cut into ``n_groups`` groups
    of (nearly) equal size (ties broken by position); fewer groups are used when there
    would be fewer than ``MIN_GROUP_SIZE`` patients per group (at least one group).

    Parameters
    ----------
    time : array-like of shape (n,)
        Follow-up times (> 0); NaN marks an unlabelled row, which is left out.
    event : array-like of shape (n,)
        1/True for an observed event, 0/False for censoring.
    event_probability : array-like of shape (n,)
        Predicted probability of the event by ``horizon``, ``1 - S(horizon)``.
    horizon : float
        The horizon, in the unit of ``time``.
    n_groups : int, default=5
        The number of risk groups wanted (quintiles).
    alpha : float, default=0.05
        One minus the level of the Kaplan-Meier confidence interval (lifelines'
        log(-log) interval).

    Returns
    -------
    pandas.DataFrame
        One row per risk group, from the lowest predicted risk, with ``n``, ``events``
        (events observed on or before the horizon), ``at_risk`` (patients still followed
        at the horizon), ``predicted`` (mean predicted probability), ``observed``
        (1 - Kaplan-Meier survival at the horizon) and ``observed_lower`` /
        ``observed_upper`` (the confidence interval, as event probabilities).
        ``observed`` and its interval are NaN for a group with no one at risk at the
        horizon, unless its Kaplan-Meier curve has already dropped to 0 (every patient
        followed to the end had the event), where the observed probability is 1.
    """
    if not isinstance(n_groups, (int, np.integer)) or n_groups < 1:
        raise ValueError("n_groups must be a positive integer")
    time, event, probability = _check_1d_inputs(time, event, event_probability)
    if np.any((probability < 0) | (probability > 1) | np.isnan(probability)):
        raise ValueError("event_probability must lie in [0, 1] on the labelled rows")
    horizon = float(horizon)

    columns = ["n", "events", "at_risk", "predicted", "observed", "observed_lower", "observed_upper"]
    n = len(time)
    if n == 0:
        return pd.DataFrame(columns=columns)
    k = int(max(1, min(n_groups, n // MIN_GROUP_SIZE)))
    groups = np.array_split(np.argsort(probability, kind="stable"), k)

    rows = []
    for members in groups:
        t, e = time[members], event[members]
        survival, lower, upper = kaplan_meier_curve(t, e, np.array([horizon]), alpha=alpha)
        rows.append(
            {
                "n": len(members),
                "events": int(np.sum(e & (t <= horizon))),
                "at_risk": int(np.sum(t >= horizon)),
                "predicted": float(probability[members].mean()),
                "observed": 1.0 - survival[0],
                "observed_lower": 1.0 - upper[0],
                "observed_upper": 1.0 - lower[0],
            }
        )
    return pd.DataFrame(rows, columns=columns)


def kaplan_meier_curve(
    time: np.ndarray, event: np.ndarray, times: np.ndarray, alpha: float = 0.05
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The Kaplan-Meier survival curve and its confidence band on given times (lifelines).

    Parameters
    ----------
    time : array-like of shape (n,)
        Follow-up times (> 0); NaN marks an unlabelled row, which is left out.
    event : array-like of shape (n,)
        1/True for an observed event, 0/False for censoring.
    times : array-like of shape (n_times,)
        Where to evaluate the (right-continuous, step) curve.
    alpha : float, default=0.05
        One minus the level of the confidence interval (lifelines' log(-log) interval).

    Returns
    -------
    survival, lower, upper : ndarray of shape (n_times,)
        The estimate and the bounds of its confidence interval. NaN past the largest
        follow-up time when the curve has not dropped to 0 there (the estimate is
        undefined), and everywhere when there are no labelled rows.
    """
    time, event = _check_1d_inputs(time, event)
    times = np.atleast_1d(np.asarray(times, dtype=float))
    if times.ndim != 1:
        raise ValueError("times must be one-dimensional")
    out = np.full((3, times.size), np.nan)
    if time.size == 0:
        return out[0], out[1], out[2]

    from lifelines import KaplanMeierFitter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kmf = KaplanMeierFitter(alpha=alpha).fit(time, event_observed=event)
    index = kmf.survival_function_.index.to_numpy(dtype=float)
    table = np.column_stack(
        [kmf.survival_function_.to_numpy(dtype=float)[:, 0], kmf.confidence_interval_.to_numpy(dtype=float)]
    )
    # lifelines' table starts at t = 0 with S = 1; the curve is a right-continuous step.
    position = np.searchsorted(index, times, side="right") - 1
    defined = (position >= 0) & ((times <= time.max()) | (table[-1, 0] == 0.0))
    out[:, defined] = table[position[defined]].T
    out[:, times < 0] = 1.0
    return out[0], out[1], out[2]


def _labelled_mask(time: np.ndarray, event: np.ndarray) -> np.ndarray:
    return ~(np.isnan(time) | np.isnan(event))


def _check_1d_inputs(time, event, values=None):
    """Labelled rows of ``time`` (float), ``event`` (bool) and optionally ``values``."""
    time = np.asarray(time, dtype=float)
    event = np.asarray(event, dtype=float)
    if time.ndim != 1 or event.shape != time.shape:
        raise ValueError("time and event must be one-dimensional arrays of the same length")
    keep = _labelled_mask(time, event)
    _check_labels(time[keep], event[keep], np.flatnonzero(keep))
    if values is not None:
        values = np.asarray(values, dtype=float)
        if values.shape != time.shape:
            raise ValueError("event_probability must have the same length as time")
        return time[keep], event[keep].astype(bool), values[keep]
    return time[keep], event[keep].astype(bool)


def _check_labels(time: np.ndarray, event: np.ndarray, positions: np.ndarray) -> None:
    bad = np.flatnonzero(~np.isfinite(time) | (time <= 0))
    if bad.size:
        raise ValueError(f"time must be finite and positive (row position {positions[bad[0]]})")
    bad = np.flatnonzero((event != 0) & (event != 1))
    if bad.size:
        raise ValueError(f"event must be 0 or 1 (row position {positions[bad[0]]})")


def _check_grid(times) -> np.ndarray:
    times = np.asarray(times, dtype=float)
    if times.ndim != 1 or times.size == 0:
        raise ValueError("times must be a non-empty one-dimensional grid")
    if not np.all(np.isfinite(times)) or times[0] < 0 or np.any(np.diff(times) <= 0):
        raise ValueError("times must be finite, non-negative and strictly increasing")
    return times


def _check_survival_inputs(time, event, survival, times):
    """Labelled rows of ``time`` (float), ``event`` (bool) and ``survival`` (probabilities on ``times``)."""
    survival = np.asarray(survival, dtype=float)
    if survival.shape != (np.size(time), times.size):
        raise ValueError("survival must have shape (len(time), len(times))")
    keep = _labelled_mask(np.asarray(time, dtype=float), np.asarray(event, dtype=float))
    time, event = _check_1d_inputs(time, event)
    rows = survival[keep]
    bad = np.flatnonzero(~np.all(np.isfinite(rows) & (rows >= 0) & (rows <= 1), axis=1))
    if bad.size:
        raise ValueError(
            f"survival must be probabilities in [0, 1] (row position {np.flatnonzero(keep)[bad[0]]})"
        )
    return time, event, rows

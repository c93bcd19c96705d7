"""Evaluating a fitted model: per-outcome metrics, subgroups, bootstrap intervals, reliability.

``evaluate_model`` (what ``MultiTaskMLP.evaluate`` runs) scores every outcome
on its labelled rows (see :mod:`clinical_mtl.model.metrics`), optionally per
subgroup of patients (sex, age band, site, ...) and with BCa bootstrap
confidence intervals (``scipy.stats.bootstrap``) for the headline metrics:
AUROC, Brier score and expected calibration error for classification, RMSE
and R^2 for regression, Harrell's C and the integrated Brier score for
survival. The bootstrap resamples each outcome's labelled rows (within each
subgroup) with replacement, labels and predictions together; the resamples of
the other kinds are scored a block at a time as matrices of draw counts
(survival outcomes one resample at a time: their metrics rank pairs of
patients). An outcome with too few patients or events on the rows evaluated
(:func:`too_few_to_estimate`) gets counts only: its metrics and intervals are
NaN, ``estimable`` is False and ``note`` says why.
:mod:`clinical_mtl.evaluation.figures` draws what the calibration metrics summarise.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import DegenerateDataWarning, bootstrap
from sklearn.utils import _safe_indexing, check_random_state

from ..exceptions import InputDataError
from .labels import check_label_index
from .metrics import HEADLINE_METRICS, metrics_table, resampled_metrics
from .survival import SURVIVAL
from .survival_metrics import survival_metrics

MISSING_GROUP = "missing"
# The floors of too_few_to_estimate (its docstring says why these numbers).
MIN_MINORITY_CLASS = 10
MIN_SURVIVAL_EVENTS = 10
MIN_REGRESSION_ROWS = 20
TOO_FEW = "too few to estimate"
# Columns kept when an outcome is too few to estimate: counts and follow-up, not model performance.
COUNT_COLUMNS = ("kind", "n_labelled", "events", "censored", "median_follow_up")
# Bootstrap resamples are scored in blocks of at most this many counts (rows x resamples).
_BLOCK_CELLS = 4_000_000
# BCa's acceleration needs a jackknife: n more evaluations of n - 1 rows, O(n^2) work. Above these sizes
# (survival: one evaluation at a time) the percentile interval is given instead, with a note; with that
# many rows the bias BCa corrects is small.
_BCA_MAX_ROWS = 5_000
_BCA_MAX_ROWS_SURVIVAL = 500


def evaluate_model(model, X, y, groups=None, *, n_bootstrap=0, confidence=0.95, random_state=None) -> pd.DataFrame:
    """Metrics of every outcome of a fitted model, overall or per subgroup, with intervals.

    Parameters
    ----------
    model : MultiTaskMLP
        A fitted model.
    X : DataFrame or array-like of shape (n_samples, n_features)
        Raw features.
    y : DataFrame, Series or array-like
        Labels of some or all outcomes, NaN where unlabelled.
    groups : str, list of str, Series, DataFrame or array-like, default=None
        Subgroups to evaluate separately: column names of ``X``, or values
        with one entry per row of ``X`` (a named Series or a 1-d array for
        one grouping variable, a DataFrame for several; pandas objects must
        be indexed like ``X``). Bin continuous variables first, e.g. with
        :func:`band`. Missing values form the subgroup ``"missing"``.
    n_bootstrap : int, default=0
        Bootstrap resamples for the confidence intervals; 0 gives none.
    confidence : float, default=0.95
        Coverage of the intervals.
    random_state : int, RandomState instance or None, default=None
        Seeds the resampling: it draws, in the order evaluated, the seed of a
        ``numpy`` generator for each outcome (and subgroup) with an interval.

    Returns
    -------
    DataFrame
        Without ``groups``, one row per outcome (index ``outcome``); with
        ``groups``, one row per outcome, grouping variable and subgroup
        (index ``outcome``, ``group``, ``value``). Columns: ``kind``,
        ``n_labelled``, ``events`` (labelled rows in the positive class, or
        in the rarest of several classes), the metrics of
        :func:`clinical_mtl.model.metrics.metrics_table`, and with ``n_bootstrap``
        ``<metric>_lower`` and ``<metric>_upper`` for ``auroc``, ``brier``,
        ``ece``, ``rmse``, ``r2`` (and survival's ``harrell_c``, ``ibs``);
        ``estimable`` (False when the rows are too few to estimate, see
        :func:`too_few_to_estimate`: then every metric and interval is NaN and
        only the counts remain) and last ``note`` (why not estimable, or
        which intervals are percentile or missing; "" when nothing to say).
        NaN where a metric does not apply or is undefined.

    Notes
    -----
    The intervals are bias-corrected and accelerated (BCa) bootstrap
    intervals, see :func:`bootstrap_intervals`: the ECE is biased upwards in
    small samples, and the bias correction keeps its interval around the
    estimate (a percentile interval can lie wholly above it). Subgroups with
    few labelled rows or events give wide intervals; read them before the
    point estimates.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}.")
    if n_bootstrap < 0:
        raise ValueError(f"n_bootstrap must be 0 or positive, got {n_bootstrap!r}.")
    check_label_index(X, y)  # before any subgroup slicing, so that the position named is X's
    rng = check_random_state(random_state)
    if groups is None:
        return _outcome_table(model, X, y, n_bootstrap, confidence, rng)
    keys, tables = [], []
    for name, column in group_columns(X, groups).items():
        for value, rows in _subgroup_rows(column):
            keys.append((name, value))
            tables.append(_outcome_table(
                model, _safe_indexing(X, rows), _safe_indexing(y, rows), n_bootstrap, confidence, rng
            ))
    table = pd.concat(tables, keys=keys, names=["group", "value"]).reorder_levels(["outcome", "group", "value"])
    order = {name: position for position, name in enumerate(model.tasks_)}
    positions = [order[name] for name in table.index.get_level_values("outcome")]
    return table.iloc[np.argsort(positions, kind="stable")]


def group_columns(X, groups) -> pd.DataFrame:
    """The grouping variables of ``evaluate_model`` as a DataFrame, one row per row of ``X``.

    Parameters
    ----------
    X : DataFrame or array-like
    groups : str, list of str, Series, DataFrame or array-like

    Returns
    -------
    DataFrame
        Indexed like ``X`` (positions for arrays), one column per grouping variable.
    """
    index = X.index if isinstance(X, pd.DataFrame) else pd.RangeIndex(len(X))
    if isinstance(groups, str) or (isinstance(groups, Sequence) and all(isinstance(g, str) for g in groups)):
        names = [groups] if isinstance(groups, str) else list(groups)
        missing = [name for name in names if not isinstance(X, pd.DataFrame) or name not in X.columns]
        if missing:
            raise InputDataError(
                f"groups names {missing}, which are not columns of X; pass the groups' values instead."
            )
        return X[names]
    if isinstance(groups, (pd.Series, pd.DataFrame)):
        frame = groups.to_frame(groups.name if groups.name is not None else "group") if isinstance(
            groups, pd.Series) else groups
        if len(frame) == len(index) and frame.index.equals(index):
            return frame
        if frame.index.is_unique and set(frame.index) == set(index) and index.is_unique:
            return frame.reindex(index)
        raise InputDataError(
            f"groups is indexed differently from X ({len(frame)} rows against {len(index)}); "
            "index it like X, or pass an array in the order of X's rows."
        )
    array = np.asarray(groups, dtype=object)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2 or len(array) != len(index):
        raise InputDataError(f"groups has shape {array.shape}, but X has {len(index)} rows; pass one value per row.")
    names = ["group"] if array.shape[1] == 1 else [f"group{j}" for j in range(array.shape[1])]
    return pd.DataFrame(array, index=index, columns=names)


def band(values, cuts: Sequence[float], *, name: str | None = None) -> pd.Series:
    """Cut a numeric variable into ordered, labelled bands, e.g. for age subgroups.

    Parameters
    ----------
    values : Series or array-like of shape (n_samples,)
    cuts : sequence of float
        Increasing boundaries; each band includes its lower boundary.
    name : str, default=None
        Name of the result (default: the name of ``values``).

    Returns
    -------
    Series of ordered category
        Labels ``"<c1"``, ``"c1-c2"`` (meaning c1 <= value < c2), ...,
        ``">=ck"``; NaN stays NaN.

    Examples
    --------
    >>> band(pd.Series([45.0, 50.0, 64.9, 70.0], name="age"), [50, 65]).tolist()
    ['<50', '50-65', '50-65', '>=65']
    """
    cuts = [float(c) for c in cuts]
    if not cuts or np.any(np.diff(cuts) <= 0):
        raise ValueError(f"cuts must be a non-empty increasing sequence, got {cuts}.")
    text = [f"{c:g}" for c in cuts]
    labels = [f"<{text[0]}", *(f"{a}-{b}" for a, b in zip(text, text[1:])), f">={text[-1]}"]
    series = values if isinstance(values, pd.Series) else pd.Series(values)
    banded = pd.cut(series.astype(float), [-np.inf, *cuts, np.inf], right=False, labels=labels)
    return banded.rename(name if name is not None else series.name)


def too_few_to_estimate(kind: str, n_labelled: float, events: float) -> str:
    """Why an outcome's metrics on these rows are not shown, or "" when they are.

    The rule (module constants): classification needs at least
    ``MIN_MINORITY_CLASS`` (10) labelled rows in its minority class (binary:
    the rarer of events and non-events; several classes: the rarest class),
    survival at least ``MIN_SURVIVAL_EVENTS`` (10) observed events, regression
    at least ``MIN_REGRESSION_ROWS`` (20) labelled rows.

    Why these numbers: AUROC and the concordance indices compare every minority
    (or event) patient with the others, so with k of them one patient moves the
    estimate by up to 1/k, more than 0.1 below 10, and a logistic calibration fit
    needs about 10 events per parameter (Peduzzi et al., J Clin Epidemiol 1996).
    R^2 divides by the rows' variance, whose relative standard error
    sqrt(2 / (n - 1)) is above 1/3 below 20 rows. These are floors for showing
    a figure at all, not sample sizes for a validation (Riley et al., BMJ 2024,
    ask for 100 events or more; the model card says so separately).

    Parameters
    ----------
    kind : {"binary", "multiclass", "regression", "survival"}
    n_labelled : float
        Labelled rows.
    events : float
        Positive-class rows (binary), rows of the rarest class (several
        classes) or observed events (survival); ignored for regression.

    Returns
    -------
    str
    """
    if kind == "regression":
        count, needed, what = n_labelled, MIN_REGRESSION_ROWS, "labelled rows"
    elif kind == SURVIVAL:
        count, needed, what = events, MIN_SURVIVAL_EVENTS, "events"
    elif kind == "binary":
        count, needed, what = min(events, n_labelled - events), MIN_MINORITY_CLASS, "patients in the minority class"
    else:
        count, needed, what = events, MIN_MINORITY_CLASS, "patients in the rarest class"
    return f"{TOO_FEW}: {count:.0f} {what} (fewer than {needed})" if count < needed else ""


def metric_statistic(spec, y_true: np.ndarray, outputs: Sequence[np.ndarray], metrics: Sequence[str]):
    """The statistic that :func:`bootstrap_intervals` resamples: headline metrics of rows.

    Parameters
    ----------
    spec : TaskSpec
        The outcome (its kind; the cut points of a survival outcome).
    y_true : ndarray
        The outcome's labels on its labelled rows.
    outputs : sequence of one or two ndarray
        Predictions on those rows; with two (e.g. two models), the statistic is
        the difference, first minus second, on the same (paired) rows.
    metrics : sequence of str
        Headline metrics of the outcome's kind.

    Returns
    -------
    statistic : callable
        ``statistic(rows)``, ``rows`` an integer array of row positions (the
        last axis a resample), giving an array of shape ``(len(metrics), ...)``.
    vectorized : bool
        Whether ``statistic`` takes many resamples at once (every kind but
        survival, whose metrics rank the pairs of each resample).
    """
    if spec.kind == SURVIVAL:
        times = np.asarray(spec.cut_points)

        def survival_statistic(rows):
            values = [survival_metrics(y_true[rows, 0], y_true[rows, 1], curves[rows], times, ())
                      for curves in outputs]
            return np.array([values[0][m] - (values[1][m] if len(values) > 1 else 0.0) for m in metrics])

        return survival_statistic, False
    n = len(y_true)

    def statistic(rows, axis=-1):
        rows = np.asarray(rows)
        lead = rows.shape[:-1]
        flat = rows.reshape(-1, rows.shape[-1])
        # Draws as counts per row: every resample of the block scored at once by resampled_metrics.
        offsets = np.arange(len(flat))[:, None] * n
        counts = np.bincount((flat + offsets).ravel(), minlength=len(flat) * n).reshape(len(flat), n)
        values = [resampled_metrics(spec.kind, y_true, output, counts) for output in outputs]
        return np.stack([(values[0][m] - (values[1][m] if len(values) > 1 else 0.0)).reshape(lead) for m in metrics])

    return statistic, True


def bootstrap_intervals(statistic, n: int, metrics: Sequence[str], n_bootstrap: int, confidence: float, rng,
                        *, vectorized: bool = True) -> dict[str, tuple[float, float, str]]:
    """BCa bootstrap intervals of a statistic of ``n`` rows, resampling whole rows.

    ``scipy.stats.bootstrap(method="BCa")`` (Efron and Tibshirani 1993,
    ch. 14) on the row positions, so labels and predictions (and several
    models' predictions) are resampled together. Where BCa is undefined (a
    degenerate jackknife or bootstrap distribution, or undefined resamples)
    the percentile interval of the defined resamples is given instead, with a
    note. An interval that does not contain its estimate (the bootstrap
    distribution lies almost wholly on one side of it, beyond what the
    interval's level can correct) is not given: NaN, with a note. Above
    5,000 rows (500 for a statistic that is not vectorized) the percentile
    interval is given, with a note: BCa's jackknife would cost n more
    evaluations.

    Parameters
    ----------
    statistic : callable
        As :func:`metric_statistic` returns.
    n : int
        Rows.
    metrics : sequence of str
        Names of the statistic's values, in order.
    n_bootstrap : int
        Resamples; 0 gives no intervals (NaN, no note).
    confidence : float
        Level of the intervals.
    rng : RandomState
        Seeds the resampling.
    vectorized : bool, default=True

    Returns
    -------
    dict of str to (float, float, str)
        Per metric: lower and upper bound and a note ("" for BCa).
    """
    none = {metric: (np.nan, np.nan, "") for metric in metrics}
    if n_bootstrap == 0 or n == 0:
        return none
    if n < 2:
        return {metric: (np.nan, np.nan, "no interval: one row") for metric in metrics}
    data = (np.arange(n),)
    estimate = np.asarray(statistic(data[0]), dtype=np.float64)
    limit = _BCA_MAX_ROWS if vectorized else _BCA_MAX_ROWS_SURVIVAL
    method = "BCa" if n <= limit else "percentile"
    with warnings.catch_warnings():
        # Degenerate or undefined cases give NaN bounds, handled below.
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", DegenerateDataWarning)
        result = bootstrap(data, statistic, n_resamples=n_bootstrap, batch=max(1, _BLOCK_CELLS // n),
                           vectorized=vectorized, confidence_level=confidence, method=method,
                           rng=np.random.default_rng(rng.randint(np.iinfo(np.int32).max)))
    lower, upper = (np.atleast_1d(bound) for bound in result.confidence_interval)
    distribution = np.atleast_2d(result.bootstrap_distribution)
    intervals = {}
    for k, metric in enumerate(metrics):
        low, high = float(lower[k]), float(upper[k])
        note = "" if method == "BCa" else f"percentile interval (BCa above {limit:,} rows not computed)"
        if not (np.isfinite(low) and np.isfinite(high)):
            (low, high), note = percentile_interval(distribution[k], confidence), "percentile interval (BCa undefined)"
        if np.isfinite(estimate[k]) and np.isfinite(low) and not low <= estimate[k] <= high:
            low, high, note = np.nan, np.nan, "no interval: bootstrap distribution beyond the estimate"
        intervals[metric] = (low, high, note)
    return intervals


def percentile_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    """Percentile interval of bootstrap values, ignoring NaN (NaN if all are)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return np.nan, np.nan
    tail = 100 * (1 - confidence) / 2
    lower, upper = np.percentile(values, [tail, 100 - tail])
    return float(lower), float(upper)


def interval_columns(with_survival: bool = False) -> list[str]:
    """The ``<metric>_lower``/``<metric>_upper`` columns of ``evaluate_model``, in order
    (those of survival outcomes only ``with_survival``)."""
    families = ["classification", "regression"] + (["survival"] if with_survival else [])
    metrics = [metric for family in families for metric in HEADLINE_METRICS[family]]
    return [f"{metric}_{side}" for metric in metrics for side in ("lower", "upper")]


def headline_metrics(kind: str) -> tuple[str, ...]:
    """The metrics given intervals for an outcome kind."""
    return HEADLINE_METRICS[kind if kind in ("regression", SURVIVAL) else "classification"]


def _outcome_table(model, X, y, n_bootstrap: int, confidence: float, rng) -> pd.DataFrame:
    pairs = list(model.labelled_pairs(X, y))
    table = metrics_table(pairs)
    notes, bounds = {}, {}
    for spec, y_true, output in pairs:
        reason = too_few_to_estimate(spec.kind, table.at[spec.name, "n_labelled"], table.at[spec.name, "events"])
        notes[spec.name] = [reason] if reason else []
        if reason or n_bootstrap == 0:
            continue
        metrics = headline_metrics(spec.kind)
        statistic, vectorized = metric_statistic(spec, y_true, [output], metrics)
        intervals = bootstrap_intervals(statistic, len(y_true), metrics, n_bootstrap, confidence, rng,
                                        vectorized=vectorized)
        row = bounds.setdefault(spec.name, {})
        for metric, (lower, upper, note) in intervals.items():
            row[f"{metric}_lower"], row[f"{metric}_upper"] = lower, upper
            if note:
                notes[spec.name].append(f"{metric}: {note}")
    estimable = pd.Series({name: not (notes.get(name) and notes[name][0].startswith(TOO_FEW))
                           for name in table.index}, dtype=bool)
    table.loc[~estimable.to_numpy(), [c for c in table.columns if c not in COUNT_COLUMNS]] = np.nan
    table.insert(table.columns.get_loc("events") + 1, "estimable", estimable.to_numpy())
    if n_bootstrap:
        with_survival = any(spec.kind == SURVIVAL for spec, _, _ in pairs)
        intervals = pd.DataFrame.from_dict(bounds, orient="index", dtype=float).reindex(
            index=table.index, columns=interval_columns(with_survival))
        table = pd.concat([table, intervals], axis=1)
    table["note"] = ["; ".join(notes.get(name, [])) for name in table.index]
    return table


def _subgroup_rows(column: pd.Series):
    """Yield (subgroup label, row positions) for every observed value, then missing."""
    values = column.to_numpy(dtype=object)
    missing = pd.isna(column).to_numpy()
    if isinstance(column.dtype, pd.CategoricalDtype):
        observed = [c for c in column.cat.categories if (values == c).any()]
    else:
        present = pd.unique(column[~missing])
        try:
            observed = sorted(present)
        except TypeError:
            observed = list(present)
    for value in observed:
        yield value, np.flatnonzero(~missing & (values == value))
    if missing.any():
        yield MISSING_GROUP, np.flatnonzero(missing)


# -- reliability diagrams ---------------------------------------------------------------------



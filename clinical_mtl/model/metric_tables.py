"""Evaluating a fitted model: per-outcome metrics, subgroups, bootstrap intervals, reliability.

``evaluate_model`` (what ``MultiTaskMLP.evaluate`` runs) scores every outcome
on its labelled rows (see :mod:`clinical_mtl.model.metrics`), optionally per
subgroup of patients (sex, age band, site, ...) and with percentile bootstrap
confidence intervals for the headline metrics: AUROC, Brier score and
expected calibration error for classification, RMSE and R^2 for regression,
Harrell's C and the integrated Brier score for survival. The bootstrap
resamples each outcome's labelled rows (within each subgroup) with
replacement, all resamples at once as a matrix of draw counts (survival
outcomes one resample at a time: their metrics rank pairs of patients).
:mod:`clinical_mtl.evaluation.figures` draws what the calibration metrics summarise.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.utils import _safe_indexing, check_random_state

from ..exceptions import InputDataError
from .labels import check_label_index
from .metrics import HEADLINE_METRICS, metrics_table, resampled_metrics
from .survival import SURVIVAL
from .survival_metrics import survival_metrics

MISSING_GROUP = "missing"
# Bootstrap resamples are drawn in blocks of at most this many counts (rows x resamples).
_BLOCK_CELLS = 4_000_000


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
        Coverage of the percentile intervals.
    random_state : int, RandomState instance or None, default=None
        Seeds the resampling.

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
        ``ece``, ``rmse`` and ``r2``. NaN where a metric does not apply or is
        undefined (e.g. AUROC in a subgroup with one class).

    Notes
    -----
    The ECE is biased upwards in small samples, and so is its bootstrap
    distribution: its interval can lie above the point estimate. Subgroups
    with few labelled rows or events give wide intervals; read them before
    the point estimates.
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


def bootstrap_metrics(
    kind: str, y_true: np.ndarray, outputs: Sequence[np.ndarray], n_bootstrap: int, rng
) -> list[dict[str, np.ndarray]]:
    """Headline metrics of the same bootstrap resamples for one or more predictions.

    Parameters
    ----------
    kind : {"binary", "multiclass", "regression"}
    y_true : ndarray of shape (n,)
        One outcome's labels on its labelled rows.
    outputs : sequence of ndarray
        Predictions of that outcome on the same rows, e.g. of two models (the
        resamples are shared, so differences are paired).
    n_bootstrap : int
    rng : RandomState

    Returns
    -------
    list of dict of str to ndarray of shape (n_bootstrap,)
        Per output, every headline metric of every resample.
    """
    n = len(y_true)
    results = [{} for _ in outputs]
    if n == 0 or n_bootstrap == 0:
        return results
    block = max(1, _BLOCK_CELLS // n)
    for start in range(0, n_bootstrap, block):
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=min(block, n_bootstrap - start))
        for result, output in zip(results, outputs):
            for metric, values in resampled_metrics(kind, y_true, output, counts).items():
                result.setdefault(metric, []).append(values)
    return [{metric: np.concatenate(parts) for metric, parts in result.items()} for result in results]


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


def bootstrap_survival(spec, y_true: np.ndarray, outputs: Sequence[np.ndarray], n_bootstrap: int,
                       rng) -> list[dict[str, np.ndarray]]:
    """Headline metrics (Harrell's C, integrated Brier score) of the same bootstrap
    resamples of one survival outcome's labelled rows for one or more predictions
    (survival curves at ``spec.cut_points``), as :func:`bootstrap_metrics` does for
    the other kinds; each resample is scored as a whole cohort (the censoring
    distribution of the IBS re-estimated in each)."""
    n = len(y_true)
    if n == 0 or n_bootstrap == 0:
        return [{} for _ in outputs]
    results = [{metric: np.full(n_bootstrap, np.nan) for metric in HEADLINE_METRICS["survival"]} for _ in outputs]
    times = np.asarray(spec.cut_points)
    for b in range(n_bootstrap):
        rows = rng.randint(n, size=n)
        for result, curves in zip(results, outputs):
            scores = survival_metrics(y_true[rows, 0], y_true[rows, 1], curves[rows], times, ())
            for metric, values in result.items():
                values[b] = scores[metric]
    return results


def _outcome_table(model, X, y, n_bootstrap: int, confidence: float, rng) -> pd.DataFrame:
    pairs = list(model.labelled_pairs(X, y))
    table = metrics_table(pairs)
    if n_bootstrap == 0:
        return table
    bounds = {}
    for spec, y_true, output in pairs:
        name = spec.name
        if spec.kind == SURVIVAL:
            (resampled,) = bootstrap_survival(spec, y_true, [output], n_bootstrap, rng)
        else:
            (resampled,) = bootstrap_metrics(spec.kind, y_true, [output], n_bootstrap, rng)
        row = bounds.setdefault(name, {})
        for metric, values in resampled.items():
            row[f"{metric}_lower"], row[f"{metric}_upper"] = percentile_interval(values, confidence)
    with_survival = any(spec.kind == SURVIVAL for spec, _, _ in pairs)
    intervals = pd.DataFrame.from_dict(bounds, orient="index").reindex(
        index=table.index, columns=interval_columns(with_survival))
    return pd.concat([table, intervals], axis=1)


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



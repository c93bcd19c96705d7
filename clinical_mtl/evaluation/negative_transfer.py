"""Negative-transfer check: did sharing one network help or hurt each outcome?

A multi-task model shares its trunk between outcomes. That usually helps a
small or sparsely labelled outcome, but it can hurt one whose signal the
others drown ("negative transfer"). ``single_task_comparison`` fits the
*single-task twin* of every outcome (the same estimator and settings, trained
on that outcome alone) on the same training rows and compares both on the
same test rows, with paired bootstrap intervals, so that the choice between
one shared model and separate models is made per outcome, on evidence.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils import _safe_indexing, check_random_state
from sklearn.utils.validation import check_is_fitted

from ..model.features import as_frame
from ..model.labels import align_labels, check_label_index
from ..model.metric_tables import TOO_FEW, bootstrap_intervals, metric_statistic, too_few_to_estimate
from ..model.metrics import HEADLINE_METRICS, HIGHER_IS_BETTER, metrics_table
from ..model.survival import SURVIVAL
from ..model.tasks import REGRESSION

HELPED = "sharing helped"
HURT = "sharing hurt"
UNCLEAR = "no clear difference"
NO_INTERVAL = "no interval"


def single_task_comparison(
    model,
    X_train,
    Y_train,
    X_test,
    Y_test,
    *,
    classification_metric: str = "auroc",
    regression_metric: str = "rmse",
    survival_metric: str = "harrell_c",
    n_bootstrap: int = 200,
    confidence: float = 0.95,
    random_state=None,
) -> pd.DataFrame:
    """Compare a multi-task model with the single-task twin of each of its outcomes.

    For every outcome, a clone of ``model`` with the same parameters is
    fitted on that outcome alone: on the rows of ``X_train`` labelled for it,
    with ``tasks`` restricted to it (fixed ``loss_weighting`` and per-outcome
    ``class_weight`` settings are restricted likewise). Both models then
    predict the rows of ``X_test`` labelled for the outcome, and the same
    bootstrap resamples of those rows give an interval for the difference.

    Parameters
    ----------
    model : MultiTaskMLP
        The multi-task model, fitted on ``X_train``, ``Y_train``; an unfitted
        one is fitted here first.
    X_train, Y_train : DataFrame or array-like
        The training split: features and the label table (NaN where unlabelled).
    X_test, Y_test : DataFrame or array-like
        The test split, the same for both models.
    classification_metric : {"auroc", "brier", "ece"}, default="auroc"
        Metric compared for classification outcomes.
    regression_metric : {"rmse", "r2"}, default="rmse"
        Metric compared for regression outcomes.
    survival_metric : {"harrell_c", "ibs"}, default="harrell_c"
        Metric compared for survival outcomes.
    n_bootstrap : int, default=200
        Paired bootstrap resamples of each outcome's labelled test rows; 0
        gives no intervals.
    confidence : float, default=0.95
        Coverage of the intervals.
    random_state : int, RandomState instance or None, default=None
        Seeds the resampling (the twins use ``model.random_state``).

    Returns
    -------
    DataFrame
        One row per outcome (index ``outcome``): ``kind``, ``metric``,
        ``higher_is_better``, ``n_test`` (labelled test rows),
        ``multi_task`` and ``single_task`` (the metric of each model),
        ``delta`` (multi-task minus single-task), ``delta_lower`` and
        ``delta_upper`` (its paired BCa bootstrap interval) and ``verdict``.

    Notes
    -----
    How to read it: the sign of ``delta`` that favours the shared model is
    positive for AUROC and R^2 (higher is better) and negative for Brier
    score, ECE and RMSE (lower is better), as ``higher_is_better`` says. The
    ``verdict`` is "sharing helped" or "sharing hurt" when the whole interval
    lies on one side of 0, and "no clear difference" when it contains 0 (the
    usual result on a small test set: the data cannot tell the two apart).
    An outcome where sharing hurt is a reason to deploy its single-task twin
    instead, or to reweight the outcomes (``loss_weighting``). An outcome
    whose test rows are too few to estimate (see
    :func:`clinical_mtl.model.metric_tables.too_few_to_estimate`) gets NaN
    metrics and the verdict "too few to estimate". Training the twins costs
    about one more fit per outcome.

    A twin learns from its outcome's labelled rows only, as a separate model
    would be trained (and as the twins of ``benchmarks/compare_models.py``
    are); so its preprocessing and early-stopping split are drawn from those
    rows, not from every training row.

    Examples
    --------
    >>> from clinical_mtl import MultiTaskMLP
    >>> from clinical_mtl.datasets import make_synthetic_cohort
    >>> from clinical_mtl.evaluation.negative_transfer import single_task_comparison
    >>> X, Y = make_synthetic_cohort(200, random_state=0)
    >>> model = MultiTaskMLP(hidden_layer_sizes=(8,), max_epochs=5, ensemble_size=1, random_state=0)
    >>> table = single_task_comparison(model, X[:150], Y[:150], X[150:], Y[150:], random_state=0)
    >>> table[["metric", "higher_is_better"]].to_dict("index")["prognosis"]
    {'metric': 'rmse', 'higher_is_better': False}
    """
    metrics = {"classification": classification_metric, "regression": regression_metric,
               "survival": survival_metric}
    for kind, metric in metrics.items():
        if metric not in HEADLINE_METRICS[kind]:
            raise ValueError(f"{kind}_metric must be one of {list(HEADLINE_METRICS[kind])}, got {metric!r}.")
    check_label_index(X_train, Y_train)
    check_label_index(X_test, Y_test)
    try:
        check_is_fitted(model)
    except NotFittedError:
        model = clone(model).fit(X_train, Y_train)
    labels = align_labels(Y_train, as_frame(X_train).index, model.task_specs_,
                          match_index=isinstance(X_train, pd.DataFrame))
    test_labels = align_labels(Y_test, as_frame(X_test).index, model.task_specs_,
                               match_index=isinstance(X_test, pd.DataFrame))
    rng = check_random_state(random_state)
    rows = {}
    for spec, y_true, shared in model.labelled_pairs(X_test, Y_test):
        name = spec.name
        twin = _single_task_twin(model, name)
        columns = list(spec.label_columns)
        train_rows = np.flatnonzero(labels[columns].notna().all(axis=1).to_numpy())
        twin.fit(_safe_indexing(X_train, train_rows), labels.iloc[train_rows][columns])
        ((_, _, alone),) = twin.labelled_pairs(X_test, test_labels[columns])
        family = spec.kind if spec.kind in (REGRESSION, SURVIVAL) else "classification"
        metric = metrics[family]
        tables = [metrics_table([(spec, y_true, output)]).loc[name] for output in (shared, alone)]
        values = [row[metric] for row in tables]
        too_few = too_few_to_estimate(spec.kind, tables[0]["n_labelled"], tables[0]["events"])
        lower = upper = np.nan
        if too_few:
            values = [np.nan, np.nan]
        else:
            statistic, vectorized = metric_statistic(spec, y_true, [shared, alone], [metric])
            ((lower, upper, _),) = bootstrap_intervals(statistic, len(y_true), [metric], n_bootstrap, confidence,
                                                       rng, vectorized=vectorized).values()
        rows[name] = {
            "kind": spec.kind,
            "metric": metric,
            "higher_is_better": HIGHER_IS_BETTER[metric],
            "n_test": len(y_true),
            "multi_task": float(values[0]),
            "single_task": float(values[1]),
            "delta": float(values[0] - values[1]),
            "delta_lower": lower,
            "delta_upper": upper,
            "verdict": TOO_FEW if too_few else _verdict(lower, upper, HIGHER_IS_BETTER[metric]),
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "outcome"
    return table


def _single_task_twin(model, name: str):
    """An unfitted clone of ``model`` that learns outcome ``name`` alone."""
    params = model.get_params()
    weighting = params["loss_weighting"]
    class_weight = params["class_weight"]
    if isinstance(class_weight, dict):
        class_weight = {name: class_weight[name]} if name in class_weight else None
    return clone(model).set_params(
        tasks={name: model.tasks_[name]},
        loss_weighting="equal" if isinstance(weighting, dict) else weighting,
        class_weight=class_weight,
    )


def _verdict(lower: float, upper: float, higher_is_better: bool) -> str:
    if np.isnan(lower) or np.isnan(upper):
        return NO_INTERVAL
    if lower > 0:
        return HELPED if higher_is_better else HURT
    if upper < 0:
        return HURT if higher_is_better else HELPED
    return UNCLEAR

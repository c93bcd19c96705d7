"""Multi-task toolbox benchmark: each multi-task option of MultiTaskMLP against its defaults.

Every method sees the same folds (stratified on the survival event indicator,
``--folds`` x ``--repeats``, seeded by ``--seed``; models by ``seed + fold``).
Each method is the estimator with its defaults and ONE option changed:

- ``defaults``: hard sharing, joint training, equal weights, linear heads, the
  "mixed" survival head.
- ``label share``, ``uncertainty``, ``dwa``, ``gradnorm``, ``pcgrad``: ``loss_weighting``.
- ``alternate``: ``training="alternate"``.
- ``head layers``: ``head_hidden_layer_sizes=(32,)`` (task-specific layers).
- ``head decay``: ``head_weight_decay=0.1`` (ten times the trunk's).
- ``soft sharing``: ``sharing="soft"`` (strength 0.1).
- ``self-supervision``: ``self_supervision=0.5``.
- ``per-outcome stopping``: ``early_stopping="per_outcome"`` (each outcome with
  30 or more labelled validation rows keeps its own best epoch's weights).
- ``single-task``: the defaults fitted on one outcome at a time (the comparison
  that says whether sharing helps at all).

Cohorts: the survival benchmark's (``pbc``, ``synthetic``, ``nwtco``, ``myeloid``:
a survival outcome and a binary diagnosis; ``cancer`` and ``veteran`` have one
outcome and are skipped, since no option here changes a one-outcome model
except head layers and self-supervision) and the synthetic relatedness cohorts
``related+1``, ``related0`` and ``related-1``: ``make_synthetic_cohort``'s
features and survival outcome, with a binary diagnosis whose logit is
``r * eta + sqrt(1 - r^2) * z`` (``eta`` the survival outcome's standardised
true log hazard, ``z`` an independent standardised score of bmi, hemoglobin
and systolic blood pressure, ``r`` the relatedness): the same risk, unrelated
risks, and opposite risks.

Scenarios: ``full`` (every label) and ``20%`` (each outcome's training labels
kept for a random 20% of the training rows, independently per outcome; the test
rows keep every label).

Metrics on the test rows: Harrell's C and the integrated Brier score of the
survival outcome (the survival benchmark's ``Scorer``), AUROC and log loss of
the diagnosis; fit seconds. Mean rank over cohort x scenario x metric.

Run ``python benchmarks/multitask_toolbox.py`` (``--quick``: 3 folds x 1 repeat,
smaller cohorts, ``--ensemble-size 1``) and read ``reports/multitask_toolbox.md``.
Each cohort's fold results are saved when it is done (``reports/multitask_toolbox_partial/``,
summaries of folds, no patient data); ``--resume`` skips the cohorts saved there.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import log_loss, roc_auc_score
from sklearn.model_selection import RepeatedStratifiedKFold

from clinical_mtl import MultiTaskMLP
from clinical_mtl.model import describe_relatedness, relatedness_table
from clinical_mtl.model.relatedness import reading
from compare_models import markdown_table  # sibling scripts
from survival_benchmark import LOADERS, Scorer, _surv

REPORTS = Path(__file__).resolve().parents[1] / "reports"
OPTIONS = {
    "defaults": {},
    "label share": {"loss_weighting": "label_share"},
    "uncertainty": {"loss_weighting": "uncertainty"},
    "dwa": {"loss_weighting": "dwa"},
    "gradnorm": {"loss_weighting": "gradnorm"},
    "pcgrad": {"loss_weighting": "pcgrad"},
    "alternate": {"training": "alternate"},
    "head layers": {"head_hidden_layer_sizes": (32,)},
    "head decay": {"head_weight_decay": 0.1},
    "soft sharing": {"sharing": "soft"},
    "self-supervision": {"self_supervision": 0.5},
    "per-outcome stopping": {"early_stopping": "per_outcome"},
}
SINGLE_TASK = "single-task"
ROUNDING = 1e-12  # mean paired differences this small are float rounding, not a difference
COHORTS = ("pbc", "synthetic", "nwtco", "myeloid", "related+1", "related0", "related-1")
METRICS = {"harrell_c": False, "ibs": True, "auroc": False, "log_loss": True}  # name: lower is better
SCENARIOS = {"full": 1.0, "20%": 0.2}


def related_cohort(relatedness: float):
    """A loader of the synthetic cohort with a diagnosis of the given relatedness to its survival outcome."""

    def load(seed: int, quick: bool):
        X, Y, outcome, _ = LOADERS["synthetic"](seed, quick)
        eta = np.asarray(Y.attrs["truth"].linear_predictor, dtype=float)
        other = sum((X[c] - X[c].mean()) / X[c].std() for c in ("bmi", "hemoglobin", "systolic_bp")).fillna(0.0)
        standard = lambda v: (v - v.mean()) / v.std()  # noqa: E731
        logit = 1.5 * (relatedness * standard(eta) + np.sqrt(1 - relatedness**2) * standard(other.to_numpy()))
        rng = np.random.default_rng(seed + 1)
        Y = Y[[f"{outcome}_time", f"{outcome}_event"]].copy()
        Y["related"] = (rng.random(len(Y)) < 1 / (1 + np.exp(-logit))).astype(float)
        return X, Y, outcome, "related"

    return load


LOADERS = LOADERS | {"related+1": related_cohort(1.0), "related0": related_cohort(0.0),
                     "related-1": related_cohort(-1.0)}


def scarce(Y: pd.DataFrame, outcome: str, diagnosis: str, share: float, seed: int) -> pd.DataFrame:
    """Each outcome's labels kept on a random ``share`` of the rows (independently)."""
    if share >= 1.0:
        return Y
    rng = np.random.default_rng(seed)
    Y = Y.copy()
    for columns in ([f"{outcome}_time", f"{outcome}_event"], [diagnosis]):
        dropped = rng.random(len(Y)) >= share
        Y.loc[dropped, columns] = np.nan
    return Y


def fit_and_score(params: dict, X_train, Y_train, X_test, Y_test, outcome, diagnosis, score, seed):
    """Fit the multi-task model (or each outcome alone with ``params=None``) and score the test rows."""
    start = time.perf_counter()
    tasks = {outcome: "survival", diagnosis: "binary"}
    survival_columns = [f"{outcome}_time", f"{outcome}_event"]
    if params is None:
        survival = MultiTaskMLP(tasks={outcome: "survival"}, random_state=seed, **COMMON)
        survival.fit(X_train, Y_train[survival_columns])
        labelled = Y_train[diagnosis].notna()
        diagnostic = MultiTaskMLP(tasks={diagnosis: "binary"}, random_state=seed, **COMMON)
        diagnostic.fit(X_train[labelled], Y_train.loc[labelled, [diagnosis]])
        models, history = (survival, diagnostic), None
    else:
        model = MultiTaskMLP(tasks=tasks, random_state=seed, **COMMON, **params).fit(
            X_train, Y_train[[*survival_columns, diagnosis]])
        models, history = (model, model), model.history_
    seconds = time.perf_counter() - start
    curves = np.asarray(models[0].predict_survival_function(X_test, score.times)[outcome], dtype=float)
    result = {k: v for k, v in score(curves).items() if k in METRICS}
    labelled = Y_test[diagnosis].notna().to_numpy()
    proba = models[1].predict_proba(X_test[labelled])[diagnosis][:, 1]
    truth = Y_test[diagnosis].to_numpy(dtype=float)[labelled]
    result["auroc"] = roc_auc_score(truth, proba)
    result["log_loss"] = log_loss(truth, proba, labels=[0, 1])
    return result | {"fit_seconds": seconds}, history


COMMON: dict = {}  # parameters every method shares (``--ensemble-size``)


def cross_validate(cohort: str, methods: list[str], folds: int, repeats: int, seed: int, quick: bool):
    X, Y, outcome, diagnosis = LOADERS[cohort](seed, quick)
    event = Y[f"{outcome}_event"].to_numpy(dtype=float)
    splitter = RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
    y_all = _surv(Y, outcome)
    rows, relatedness = [], []
    for fold, (train, test) in enumerate(splitter.split(X, event)):
        score = Scorer(y_all[train], y_all[test])
        for scenario, share in SCENARIOS.items():
            Y_train = scarce(Y.iloc[train], outcome, diagnosis, share, seed + fold)
            for method in methods:
                params = None if method == SINGLE_TASK else OPTIONS[method]
                result, history = fit_and_score(params, X.iloc[train], Y_train, X.iloc[test], Y.iloc[test],
                                                outcome, diagnosis, score, seed + fold)
                rows.append({"cohort": cohort, "scenario": scenario, "fold": fold, "method": method} | result)
                if method == "defaults":
                    table = relatedness_table(history)
                    relatedness.append(table.assign(cohort=cohort, scenario=scenario, fold=fold))
        print(f"  {cohort} fold {fold + 1}/{folds * repeats} done", flush=True)
    return pd.DataFrame(rows), pd.concat(relatedness, ignore_index=True) if relatedness else pd.DataFrame()


def ranks(folds: pd.DataFrame) -> pd.DataFrame:
    """Mean per cohort x scenario x metric x method, and its rank among the methods."""
    long = folds.melt(id_vars=["cohort", "scenario", "fold", "method"], value_vars=list(METRICS), var_name="metric")
    table = long.groupby(["cohort", "scenario", "metric", "method"])["value"].agg(["mean", "std"]).reset_index()
    sign = np.where(table["metric"].map(METRICS), 1, -1)
    # Means equal but for float rounding (the order rows were summed in) are ties.
    key = (sign * table["mean"]).round(12)
    table["rank"] = table.assign(key=key).groupby(["cohort", "scenario", "metric"])["key"].rank()
    return table


def write_report(folds: pd.DataFrame, relatedness: pd.DataFrame, args, minutes: float, path: Path) -> None:
    table = ranks(folds)
    overall = table.groupby("method")["rank"].mean().sort_values()
    by_scenario = table.pivot_table(index="method", columns="scenario", values="rank", aggfunc="mean")
    lines = [
        "# Multi-task toolbox benchmark", "",
        f"Generated by `python benchmarks/multitask_toolbox.py {' '.join(args.argv)}` in {minutes:.1f} minutes "
        f"with {torch.get_num_threads()} torch thread(s) on a 2-core machine: {args.folds}-fold x {args.repeats} repeat(s), ensemble_size "
        f"{COMMON.get('ensemble_size', 5)}, cohorts {', '.join(args.cohorts)}. Each method is the defaults with "
        "one option changed (see the script's docstring).", "",
        "## Mean rank over cohort x scenario x metric (Harrell C, IBS, AUROC, log loss; 1 = best)", "",
        markdown_table(pd.DataFrame({"method": overall.index, "mean rank": overall.round(2).to_numpy(),
                                     **{f"{s} labels": by_scenario.loc[overall.index, s].round(2).to_numpy()
                                        for s in by_scenario.columns}})),
        "",
    ]
    lines += ["## Each option against the defaults, paired over folds", "",
              "Per cohort x scenario x metric, the option's mean difference from the defaults over the same folds;",
              "*better* / *worse*: by more than two standard errors of the paired fold differences. Mean",
              "differences are signed so that positive is better (C and AUROC up, IBS and log loss down).", "",
              markdown_table(against_defaults(folds)), ""]
    for (cohort, scenario), part in table.groupby(["cohort", "scenario"], sort=False):
        wide = part.assign(cell=part["mean"].round(3).astype(str) + " ± " + part["std"].round(3).astype(str)
                           + " (" + part["rank"].astype(str) + ")")
        wide = wide.pivot(index="method", columns="metric", values="cell").reindex(columns=list(METRICS))
        seconds = folds[(folds.cohort == cohort) & (folds.scenario == scenario)].groupby("method")["fit_seconds"]
        wide["fit s"] = seconds.mean().round(1)
        lines += [f"### {cohort}, {scenario} labels", "", markdown_table(wide.reset_index()), ""]
    if not relatedness.empty:
        keys = ["cohort", "scenario", "outcome", "other"]
        summary = relatedness.groupby(keys)[["mean_cosine", "conflicting_share"]].mean().round(3).reset_index()
        summary["reading"] = summary["mean_cosine"].map(reading)
        summary["in words"] = describe_relatedness(summary)
        lines += ["## Task relatedness measured by the defaults (gradient cosines, mean over folds)", "",
                  markdown_table(summary.drop(columns="reading")), ""]
    path.write_text("\n".join(lines))


def against_defaults(folds: pd.DataFrame) -> pd.DataFrame:
    """Per method: cells better / worse than the defaults beyond 2 paired SE, mean signed differences, fit time."""
    rows = []
    defaults = folds[folds["method"] == "defaults"].set_index(["cohort", "scenario", "fold"])
    for method, part in folds[folds["method"] != "defaults"].groupby("method"):
        diffs = part.set_index(["cohort", "scenario", "fold"])[list(METRICS)] - defaults[list(METRICS)]
        diffs = diffs * [-1 if lower else 1 for lower in METRICS.values()]
        cells = diffs.groupby(level=["cohort", "scenario"]).agg(["mean", "sem"]).stack(level=0, future_stack=True)
        cells = cells.dropna(subset=["mean"])
        # A difference of float rounding (identical predictions, metrics summed in another order) is no difference.
        margin = np.maximum(2 * cells["sem"], ROUNDING)
        row = {"method": method, "cells": len(cells), "better": int((cells["mean"] > margin).sum()),
               "worse": int((cells["mean"] < -margin).sum())}
        row |= {f"mean diff {metric}": round(float(diffs[metric].mean()), 4) for metric in METRICS}
        row["median fit s"] = round(float(part["fit_seconds"].median()), 2)
        rows.append(row)
    rows.sort(key=lambda r: -r["better"])
    baseline = {key: "" for key in rows[0]} | {"method": "defaults",
                                               "median fit s": round(float(defaults["fit_seconds"].median()), 2)}
    return pd.DataFrame([*rows, baseline])


def _read_saved(path: Path) -> pd.DataFrame:
    """A saved cohort's table; an empty one (no relatedness without the defaults) as an empty frame."""
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohorts", nargs="+", default=list(COHORTS), choices=list(LOADERS))
    parser.add_argument("--methods", nargs="+", default=[*OPTIONS, SINGLE_TASK], choices=[*OPTIONS, SINGLE_TASK])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ensemble-size", type=int, default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--output", type=Path, default=REPORTS / "multitask_toolbox.md")
    parser.add_argument("--resume", action="store_true",
                        help="reuse the cohorts a cut-short run with the same arguments saved (<output>_partial/)")
    args = parser.parse_args()
    import sys

    args.argv = sys.argv[1:]
    if args.quick:
        args.folds, args.repeats = 3, 1
        args.ensemble_size = args.ensemble_size or 1
    if args.ensemble_size:
        COMMON["ensemble_size"] = args.ensemble_size
    warnings.filterwarnings("ignore")
    start = time.perf_counter()
    folds_path = args.output.with_name(args.output.stem + "_folds.csv")
    # Each cohort's results are saved as soon as it is done, so a run cut short resumes (--resume) where it stopped.
    partial = args.output.with_name(args.output.stem + "_partial")
    partial.mkdir(parents=True, exist_ok=True)
    results = []
    for cohort in args.cohorts:
        saved = [partial / f"{cohort}_{part}.csv" for part in ("folds", "relatedness")]
        if args.resume and all(path.exists() for path in saved):
            results.append(tuple(_read_saved(path) for path in saved))
            print(f"  {cohort}: read from {partial}", flush=True)
            continue
        result = cross_validate(cohort, args.methods, args.folds, args.repeats, args.seed, args.quick)
        for frame, path in zip(result, saved):
            frame.to_csv(path, index=False)
        results.append(result)
    folds = pd.concat([r[0] for r in results], ignore_index=True)
    relatedness = pd.concat([r[1] for r in results], ignore_index=True)
    folds.to_csv(folds_path, index=False)
    write_report(folds, relatedness, args, (time.perf_counter() - start) / 60, args.output)
    print(args.output.read_text())


if __name__ == "__main__":
    main()

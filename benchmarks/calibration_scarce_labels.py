"""Temperature recalibration with scarce labels: the rule before issue 16, today's and none, by cross-validation.

Per fold one ``MultiTaskMLP`` (defaults: an ensemble of 5 networks) is fitted with
``calibration=None``; its networks' probabilities on the rows each held out for early
stopping and on the test rows are kept, and every rule's temperature is fitted on the
former and applied to the ensemble's probabilities of the latter (the networks do not
depend on the rule, so one fit serves all three):

- ``none``: the ensemble's probabilities as they are.
- ``before``: the rule up to this change: the temperature fitted on each held-out row's mean
  over the networks that held it out, used where the likelihood-ratio test rejects T = 1.
- ``now``: :func:`clinical_mtl.model.calibration.fit_calibrator` as ``MultiTaskMLP`` calls it.

Scenarios as in ``benchmarks/compare_models.py``: all labels, and 20% of the outcome's
training labels (test labels untouched). Metrics on the labelled test rows: log loss,
Brier score, expected calibration error; mean ± standard deviation over folds.

Run ``python benchmarks/calibration_scarce_labels.py`` (PBC cirrhosis, 5-fold x 2 repeats, and
the synthetic cohort's diagnosis, 5-fold x 1; about 35 and 30 minutes on 2 busy shared cores);
results go to ``reports/calibration_scarce_labels.md`` and ``..._folds.csv``. ``--dump FOLDER``
keeps each fold's probabilities, so that the report can be rewritten without refitting.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from compare_models import SCARCE_OUTCOME, load
from sklearn.metrics import log_loss
from sklearn.model_selection import RepeatedKFold

import clinical_mtl.model.estimator as estimator_module
from clinical_mtl import MultiTaskMLP
from clinical_mtl.model.calibration import (
    LIKELIHOOD_RATIO_THRESHOLD,
    MIN_MINORITY_ROWS,
    TEMPERATURE,
    TemperatureScaling,
    fit_calibrator,
)
from clinical_mtl.model.labels import encode_targets
from clinical_mtl.model.metrics import classification_metrics
from clinical_mtl.model.tasks import infer_tasks
from clinical_mtl.model.training import predict_module

REPORTS = Path(__file__).resolve().parents[1] / "reports"
RULES = ("none", "before", "now")
METRICS = ("log_loss", "brier", "ece")
DEFAULT_REPEATS = {"pbc": 2, "synthetic": 1}
REUSED: list[str] = []  # folds whose probabilities came from --dump rather than a fit in this run


def fold_probabilities(X_train, Y_train, X_test, Y_test, outcome: str, seed: int) -> dict:
    """Per network, the outcome's positive-class probability on the training rows it held
    out (NaN elsewhere) and on the test rows; the training labels as class indices."""
    captured = {}
    fit_held_out = estimator_module.fit_held_out

    def spy(model, specs, ensemble, inputs, labels, held_out_seed):  # keeps what training gave
        captured.update(ensemble=ensemble, inputs=inputs, specs=specs)
        return fit_held_out(model, specs, ensemble, inputs, labels, held_out_seed)

    estimator_module.fit_held_out = spy
    try:
        model = MultiTaskMLP(random_state=seed, calibration=None).fit(X_train, Y_train)
    finally:
        estimator_module.fit_held_out = fit_held_out
    ensemble, inputs = captured["ensemble"], captured["inputs"]
    t = [spec.name for spec in captured["specs"]].index(outcome)
    held = np.full((len(inputs), len(ensemble.held_out)), np.nan)
    for m, (rows, network) in enumerate(ensemble.held_out):
        held[rows, m] = torch.sigmoid(predict_module(network, inputs[torch.from_numpy(rows)])[t][:, 0]).numpy()
    test_inputs = torch.from_numpy(np.ascontiguousarray(model.transform_inputs(X_test)[1]))
    test = np.column_stack([torch.sigmoid(predict_module(network, test_inputs)[t][:, 0]).numpy()
                            for network in ensemble.networks])
    spec = infer_tasks(Y_train[[outcome]])[0]
    return {"held": held, "test": test, "y_train": _classes(Y_train, outcome, spec),
            "y_test": _classes(Y_test, outcome, spec)}


def _classes(Y: pd.DataFrame, outcome: str, spec) -> np.ndarray:
    """Class indices of the outcome, -1 where unlabelled."""
    labelled = Y[outcome].notna().to_numpy()
    y = np.full(len(Y), -1)
    y[labelled] = encode_targets(Y.loc[labelled, [outcome]], [spec])[0][0]
    return y


def _two_columns(positive: np.ndarray) -> np.ndarray:
    return np.column_stack([1.0 - positive, positive])


def rule_metrics(fold: dict) -> list[dict]:
    """Per rule, the temperature it fits on the held-out rows and the test metrics it gives; with two
    diagnostics, the temperature fitted on the held-out rows without any test, and the one that
    would have fitted the ensemble's test rows best."""
    held, test = fold["held"].astype(np.float64), fold["test"].astype(np.float64)
    rows = (~np.isnan(held)).any(axis=1) & (fold["y_train"] >= 0)
    mean_of_holders, y_held = _two_columns(np.nanmean(held[rows], axis=1)), fold["y_train"][rows]
    calibrators = {
        "none": None,
        "before": _before(mean_of_holders, y_held),
        "now": fit_calibrator(TEMPERATURE, mean_of_holders, y_held),
    }
    labelled = fold["y_test"] >= 0
    proba, y_test = _two_columns(test[labelled].mean(axis=1)), fold["y_test"][labelled]
    diagnostics = {"held_out": int(rows.sum()), "held_out_minority": int(np.bincount(y_held).min()),
                   "untested_t": TemperatureScaling.fit(mean_of_holders, y_held, test=False).temperature,
                   "test_best_t": TemperatureScaling.fit(proba, y_test, test=False).temperature}
    results = []
    for rule, calibrator in calibrators.items():
        output = proba if calibrator is None else calibrator.transform(proba)
        metrics = classification_metrics(y_test, output)
        results.append({"rule": rule, "temperature": 1.0 if calibrator is None else calibrator.temperature}
                       | diagnostics | {name: metrics[name] for name in METRICS})
    return results


def _before(proba: np.ndarray, y: np.ndarray) -> TemperatureScaling:
    """The rule up to this change: the fitted temperature where the likelihood-ratio test rejects T = 1."""
    fitted = TemperatureScaling.fit(proba, y, test=False)
    gain = log_loss(y, proba, labels=[0, 1], normalize=False) - log_loss(
        y, fitted.transform(proba), labels=[0, 1], normalize=False)
    return fitted if 2 * gain >= LIKELIHOOD_RATIO_THRESHOLD else TemperatureScaling(1.0)


def cross_validate(dataset: str, scarce: bool, folds: int, repeats: int, seed: int, dump: Path | None) -> list[dict]:
    X, Y = load(dataset, seed)
    outcome = SCARCE_OUTCOME[dataset]  # the other outcomes are trained alongside, as in compare_models.py
    results = []
    for fold, (train, test) in enumerate(RepeatedKFold(n_splits=folds, n_repeats=repeats,
                                                       random_state=seed).split(X)):
        Y_train = Y.iloc[train].copy()
        if scarce:  # as benchmarks/compare_models.py draws them
            labelled = np.flatnonzero(Y_train[outcome].notna().to_numpy())
            rng = np.random.default_rng(seed + fold)
            drop = rng.choice(labelled, size=round(0.8 * len(labelled)), replace=False)
            Y_train.iloc[drop, Y_train.columns.get_loc(outcome)] = None
        scenario = "20% labels" if scarce else "all labels"
        path = None if dump is None else dump / f"{dataset}_{seed}_{scenario[:3].strip('% ')}_{fold}.npz"
        if path is not None and path.exists():
            probabilities = dict(np.load(path))
            REUSED.append(path.name)
        else:
            probabilities = fold_probabilities(X.iloc[train], Y_train, X.iloc[test], Y.iloc[test], outcome,
                                               seed + fold)
            if path is not None:
                np.savez(path, **probabilities)
        for row in rule_metrics(probabilities):
            results.append({"dataset": dataset, "outcome": outcome, "scenario": scenario, "fold": fold} | row)
        print(f"  {dataset} {scenario} fold {fold + 1}/{folds * repeats} done", flush=True)
    return results


def summarise(results: pd.DataFrame) -> pd.DataFrame:
    """Mean ± standard deviation over folds, by outcome, scenario and rule."""
    grouped = results.groupby(["dataset", "outcome", "scenario", "rule"], sort=False)
    table = grouped[list(METRICS)].agg(lambda v: f"{v.mean():.3f} ± {v.std():.3f}")
    table["folds with T != 1"] = grouped["temperature"].agg(lambda t: f"{int((t != 1.0).sum())}/{len(t)}")
    return table.reset_index()


def diagnostics(results: pd.DataFrame) -> pd.DataFrame:
    """Per outcome and scenario, medians (and ranges) over folds of the held-out rows and of the
    temperatures fitted without a test on them and on the ensemble's test rows."""
    folds = results[results["rule"] == "none"].groupby(["dataset", "outcome", "scenario"], sort=False)

    def spread(v):
        return f"{v.median():.2f} ({v.min():.2f} to {v.max():.2f})"

    return pd.DataFrame({
        "held-out labelled rows": folds["held_out"].median().map("{:.0f}".format),
        "of which in the rarer class": folds["held_out_minority"].agg(
            lambda v: f"{v.median():.0f} ({v.min()} to {v.max()})"),
        "T fitted on them, untested": folds["untested_t"].agg(spread),
        "T best for the ensemble's test rows": folds["test_best_t"].agg(spread),
    }).reset_index()


def applied(results: pd.DataFrame) -> list[str]:
    """The folds where the rule before this change applied a temperature, with the log loss it gave."""
    wide = results.pivot_table(index=["dataset", "scenario", "fold"], columns="rule",
                               values=["temperature", "log_loss"])
    lines = []
    for (dataset, scenario, fold), row in wide.iterrows():
        if row[("temperature", "before")] != 1.0:
            lines.append(f"- {dataset}, {scenario}, fold {fold}: T = {row[('temperature', 'before')]:.2f}, "
                         f"log loss {row[('log_loss', 'before')]:.3f} against {row[('log_loss', 'none')]:.3f} "
                         f"without it; now T = {row[('temperature', 'now')]:.2f}")
    return lines or ["- none"]


def _markdown(table: pd.DataFrame) -> list[str]:
    return ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns),
            *("| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False))]


def write_report(results: pd.DataFrame, folds: str, minutes: float, path: Path) -> None:
    lines = [
        "# Temperature recalibration with scarce labels",
        "",
        (f"Generated by `benchmarks/calibration_scarce_labels.py` ({folds}, {minutes:.0f} minutes"
         f"{f'; {len(REUSED)} folds read from --dump, fitted by an earlier run' if REUSED else ''}). "
         "One `MultiTaskMLP` per fold (defaults, 5 networks, `calibration=None`); each rule's temperature "
         "is fitted on the early-stopping rows and applied to the ensemble's test probabilities. "
         "`before`: the rule up to this change (likelihood-ratio test only); `now`: the estimator's rule "
         f"(no temperature below {MIN_MINORITY_ROWS} held-out rows in the rarer class, then the test); "
         "`none`: no recalibration. Mean ± standard deviation over folds, on the labelled test rows."),
        "",
        *_markdown(summarise(results)),
        "",
        "## Folds where the rule before this change applied a temperature",
        "",
        *applied(results),
        "",
        "## What the held-out rows say",
        "",
        ("Medians over folds (range). The temperatures are diagnostics, fitted without the "
         "likelihood-ratio test: on the held-out rows (each the mean of the networks that held it out), "
         "and, for comparison only, on the test rows the ensemble predicts."),
        "",
        *_markdown(diagnostics(results)),
        "",
    ]
    path.write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["pbc", "synthetic"])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, nargs="+", default=None,
                        help="one value, or one per dataset (default: 2 for PBC, 1 for the synthetic cohort, "
                             "whose fits take about 3x as long)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the folds, the synthetic cohort and the models")
    parser.add_argument("--scenarios", nargs="+", default=["scarce", "full"], choices=["scarce", "full"])
    parser.add_argument("--dump", type=Path, default=None,
                        help="folder keeping each fold's probabilities and labels (reused when present; "
                             "per-patient data: keep it out of the repository)")
    parser.add_argument("--output", type=Path, default=REPORTS / "calibration_scarce_labels.md")
    args = parser.parse_args()
    if args.dump is not None:
        args.dump.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if args.repeats is None:
        repeats = {dataset: DEFAULT_REPEATS.get(dataset, 2) for dataset in args.datasets}
    else:
        counts = args.repeats * len(args.datasets) if len(args.repeats) == 1 else args.repeats
        repeats = dict(zip(args.datasets, counts, strict=True))
    results = pd.DataFrame([row for dataset in args.datasets for scenario in args.scenarios
                            for row in cross_validate(dataset, scenario == "scarce", args.folds, repeats[dataset],
                                                      args.seed, args.dump)])
    results.to_csv(args.output.with_name(args.output.stem + "_folds.csv"), index=False)
    folds = ", ".join(f"{dataset} {args.folds}-fold x {n} repeat{'s' * (n > 1)}" for dataset, n in repeats.items())
    folds += f", seed {args.seed}"
    write_report(results, folds, (time.perf_counter() - start) / 60, args.output)
    print(args.output.read_text())


if __name__ == "__main__":
    main()

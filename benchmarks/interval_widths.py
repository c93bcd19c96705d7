"""Interval widths: patient-adaptive (normalised) against one-width (absolute) split-conformal intervals.

``MultiTaskMLP(interval_method=...)`` is fitted twice per seed with the same
``random_state`` (the networks, so the point predictions, are identical; only
the intervals differ) and its 90% ``predict_interval`` scored on patients it
never saw:

- ``synthetic``: ``make_synthetic_cohort(2000)`` (all three outcomes, 20% of
  labels missing) trained, 20,000 fresh patients scored; the prognosis noise
  has one standard deviation (0.5) for everyone.
- ``synthetic, heteroscedastic``: the same, with the prognosis noise's
  standard deviation ``0.5 exp(0.6 z)``, ``z`` the standardised log CRP, so
  some patients' outcomes are much less predictable than others'.
- ``pbc``: ``load_pbc()``'s cirrhosis with the log of days to death of the
  161 patients who died (the regression outcome of ``compare_models.py``),
  5-fold cross-validation, each patient scored once by the model that did not
  train on them. About 70 of them are held out for early stopping per fit,
  fewer than the 100 that normalised intervals need (``MIN_NORMALIZED_ROWS``),
  so ``normalized`` falls back to ``absolute`` there; ``normalized, any size``
  lifts the minimum to show what it would give.

Per method: coverage (share of intervals holding the true value; 0.90
asked), mean half-width (in log days, and as the factor ``exp(half-width)``
either side), the 10th and 90th percentiles of the half-width, the
correlation of the width with the absolute error, and for the heteroscedastic
cohort the coverage among the 20% of patients with the noisiest outcomes.
Means over ``--seeds`` (default 0 1 2), the range over seeds in brackets.

    python benchmarks/interval_widths.py            # writes reports/interval_widths.md and .csv
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from compare_models import markdown_table  # a sibling script
from sklearn.model_selection import KFold

from clinical_mtl import MultiTaskMLP
from clinical_mtl.datasets import load_pbc, make_synthetic_cohort
from clinical_mtl.model import fitting

REPORTS = Path(__file__).resolve().parent.parent / "reports"
METHODS = ("absolute", "normalized")
COVERAGE = 0.9
ANY_SIZE = "normalized, any size"
ORDER = {"synthetic": 0, "synthetic, heteroscedastic": 1, "pbc": 2}


def fit_any_size(X, Y, seed: int) -> MultiTaskMLP:
    """Normalised intervals without the minimum of labelled held-out rows (an experiment: PBC has fewer)."""
    minimum, fitting.MIN_NORMALIZED_ROWS = fitting.MIN_NORMALIZED_ROWS, 0
    try:
        return MultiTaskMLP(interval_method="normalized", random_state=seed).fit(X, Y)
    finally:
        fitting.MIN_NORMALIZED_ROWS = minimum


def synthetic(n: int, seed: int, heteroscedastic: bool):
    """Features, labels and each patient's true noise standard deviation of the prognosis."""
    X, Y, truth = make_synthetic_cohort(n, random_state=seed, return_truth=True)
    sd = np.full(n, truth.noise_sd["prognosis"])
    if heteroscedastic:
        log_crp = np.log(X["crp"].to_numpy(float))
        z = np.nan_to_num((log_crp - np.nanmean(log_crp)) / np.nanstd(log_crp))  # missing CRP: average noise
        sd = truth.noise_sd["prognosis"] * np.exp(0.6 * z)
        noisy = truth.expected_values["prognosis"] + sd * np.random.default_rng(seed).standard_normal(n)
        Y["prognosis"] = np.where(Y["prognosis"].isna(), np.nan, noisy)
    return X, Y, sd


def interval_rows(model: MultiTaskMLP, X, y: np.ndarray, outcome: str) -> pd.DataFrame:
    intervals = model.predict_interval(X, coverage=COVERAGE)
    lower, upper = intervals[f"{outcome}_lower"].to_numpy(), intervals[f"{outcome}_upper"].to_numpy()
    predicted = (lower + upper) / 2
    return pd.DataFrame({"covered": (lower <= y) & (y <= upper), "half_width": (upper - lower) / 2,
                         "error": np.abs(y - predicted)})


def summary(rows: pd.DataFrame, sd: np.ndarray | None) -> dict:
    half = rows["half_width"].to_numpy()
    result = {
        "coverage": rows["covered"].mean(),
        "mean half-width": half.mean(),
        "factor either side": np.exp(half).mean(),
        "p10 half-width": np.percentile(half, 10),
        "p90 half-width": np.percentile(half, 90),
        # One width (up to the rounding of upper - lower) has no correlation to speak of.
        "corr(width, abs error)": np.corrcoef(half, rows["error"])[0, 1] if np.ptp(half) > 1e-9 * half.mean() else 0.0,
    }
    if sd is not None:
        result["coverage, noisiest 20%"] = rows["covered"].to_numpy()[sd >= np.quantile(sd, 0.8)].mean()
    return result


def run_synthetic(seed: int, heteroscedastic: bool) -> list[dict]:
    X, Y, _ = synthetic(2000, seed, heteroscedastic)
    X_test, Y_test, sd = synthetic(20000, seed + 1000, heteroscedastic)
    labelled = Y_test["prognosis"].notna().to_numpy()
    out = []
    for method in METHODS:
        model = MultiTaskMLP(interval_method=method, random_state=seed).fit(X, Y)
        rows = interval_rows(model, X_test[labelled], Y_test["prognosis"].to_numpy()[labelled], "prognosis")
        out.append({"method": method, **summary(rows, sd[labelled] if heteroscedastic else None)})
    return out


def run_pbc(seed: int) -> list[dict]:
    X, Y = load_pbc()
    Y = Y[["cirrhosis"]].assign(log_survival_days=np.log(Y["death_time"]).where(Y["death_event"] == 1))
    out = []
    for method in (*METHODS, ANY_SIZE):
        parts = []
        for train, test in KFold(5, shuffle=True, random_state=seed).split(X):
            model = fit_any_size(X.iloc[train], Y.iloc[train], seed) if method == ANY_SIZE else MultiTaskMLP(
                interval_method=method, random_state=seed).fit(X.iloc[train], Y.iloc[train])
            labelled = Y["log_survival_days"].iloc[test].notna().to_numpy()
            parts.append(interval_rows(model, X.iloc[test][labelled],
                                       Y["log_survival_days"].iloc[test].to_numpy()[labelled], "log_survival_days"))
        out.append({"method": method, **summary(pd.concat(parts), None)})
    return out


def write_report(results: pd.DataFrame, seeds: list[int], seconds: float, output: Path) -> None:
    def cell(values: pd.Series, digits: int) -> str:
        if values.isna().all():
            return ""
        text = f"{values.mean():.{digits}f}"
        return text + (f" ({values.min():.{digits}f} to {values.max():.{digits}f})" if len(values) > 1 else "")

    metrics = [column for column in results.columns if column not in ("cohort", "method", "seed")]
    table = (results.sort_values("cohort", key=lambda c: c.map(ORDER), kind="stable")
             .groupby(["cohort", "method"], sort=False)[metrics]
             .agg(lambda values: cell(values, 3)).reset_index())
    lines = [
        "# Interval widths: normalised against absolute split-conformal intervals",
        "",
        (f"`python benchmarks/interval_widths.py` ({(__doc__ or '').splitlines()[0].rstrip('.')}). "
         f"90% intervals; seeds {seeds} (every cohort; a later seed may be partial); mean over seeds (range); "
         + (f"{seconds / 60:.0f} minutes on a shared CPU." if np.isfinite(seconds) else "")),
        ("Cohorts and columns are described in the script's docstring. Half-widths are in the outcome's units "
         "(log days); `factor either side` is the mean of `exp(half-width)`: the interval runs from the "
         "prediction divided by it to the prediction times it, in days."),
        "",
        markdown_table(table),
        "",
    ]
    output.write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--cohorts", nargs="+", default=["synthetic", "synthetic, heteroscedastic", "pbc"])
    parser.add_argument("--output", type=Path, default=REPORTS / "interval_widths.md")
    parser.add_argument("--from-csv", type=Path, default=None, help="rewrite the report from saved results")
    args = parser.parse_args()
    if args.from_csv is not None:
        results = pd.read_csv(args.from_csv)
        write_report(results, sorted(results["seed"].unique().tolist()), float("nan"), args.output)
        return
    warnings.simplefilter("ignore")  # convergence warnings of the default settings are not the point here
    started, rows = time.perf_counter(), []
    for seed in args.seeds:  # seed by seed, the report rewritten after each: every cohort has seed 0 first
        for cohort in args.cohorts:
            found = run_pbc(seed) if cohort == "pbc" else run_synthetic(seed, cohort != "synthetic")
            rows += [{"cohort": cohort, "seed": seed, **row} for row in found]
            print(cohort, seed, [(row["method"], round(row["coverage"], 3), round(row["mean half-width"], 3))
                                 for row in found], flush=True)
            done = sorted({row["seed"] for row in rows})
            pd.DataFrame(rows).to_csv(args.output.with_suffix(".csv"), index=False)
            write_report(pd.DataFrame(rows), done, time.perf_counter() - started, args.output)


if __name__ == "__main__":
    main()

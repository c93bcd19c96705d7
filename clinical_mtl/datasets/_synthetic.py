"""A seeded synthetic clinical cohort with known ground truth, of any size.

Two latent factors (think "inflammation" and "frailty") drive eight numeric
clinical measurements (crp, creatinine and bilirubin log-normal, the others
normal) and a smoking status; three outcomes are then drawn from known
functions of the standardised measurements (for the log-normal ones, of their
logarithm):

``diagnosis`` (binary, 0/1)
    logit = -0.6 + 1.4 crp + 1.0 creatinine - 0.8 albumin
    + 0.7 [smoking = current] + 0.6 crp * creatinine
``subtype`` (multi-class, "A", "B", "C"; logits relative to "A")
    B: 1.2 bilirubin - 0.6 hemoglobin;  C: 1.0 bmi + 0.8 age - 0.3
``prognosis`` (regression, log days of survival)
    7 - 0.5 age - 0.45 crp + 0.35 albumin - 0.4 tanh(2 creatinine)
    + Gaussian noise with standard deviation ``PROGNOSIS_NOISE_SD``

With ``survival=True`` a fourth outcome, ``death``, is a time to event with a
known hazard: a Weibull proportional-hazards model,

    h(t | x) = (k / s) (t / s)^(k - 1) exp(eta(x)),
    S(t | x) = exp(-(t / s)^k exp(eta(x))),
    eta(x) = 0.6 age + 0.5 crp - 0.4 albumin + 0.8 max(creatinine, 0)

with shape ``k = WEIBULL_SHAPE`` (1.3, a hazard rising with time) and scale
``s = WEIBULL_SCALE_DAYS`` (4000 days); the log hazard ratio eta uses the same
standardised measurements as above, with a hinge (risk rises with creatinine
only above its median). Censoring is independent of the covariates and of
the event time: administrative end of follow-up at ``FOLLOW_UP_DAYS`` (1825
days, 5 years) and drop-out at a time uniform on (0, ``DROPOUT_MAX_DAYS``)
(9125 days, so about 20% of patients drop out before 5 years).
``death_time`` is the earliest of event, end of follow-up and drop-out, in
days; ``death_event`` is 1 when the event came first. About 40% of patients
have the event (between 35% and 45% for a large cohort). The survival draws
come after every other draw of the generator, so the other columns are
identical with and without ``survival``.

Standardised measurements are clipped to +-3.5, which keeps every value
within the ranges of ``data_schemas/synthetic.yaml``. ``sex`` and the
``noise_*`` measurements drive nothing. Features are missing
completely at random at ``feature_missing_rate``, labels at
``label_missing_rate`` (``death_time`` and ``death_event`` together).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.utils import check_random_state

PROGNOSIS_NOISE_SD = 0.5
STANDARD_LIMIT = 3.5  # standardised measurements are clipped to +-3.5 (clinically plausible values)
OUTCOMES = ("diagnosis", "subtype", "prognosis")
SUBTYPES = ("A", "B", "C")
SMOKING = ("never", "former", "current")

# name: (loading on factor 1, loading on factor 2, centre, spread, decimals, log-normal).
# A measurement is centre + spread * v, or centre * exp(spread * v) when log-normal
# (laboratory values that are positive and right-skewed), where v is standardised.
_MEASUREMENTS = {
    "age": (0.1, 0.6, 62.0, 12.0, 1, False),
    "bmi": (0.3, -0.2, 27.0, 4.5, 1, False),
    "crp": (0.8, 0.1, 8.0, 0.8, 1, True),
    "creatinine": (0.3, 0.5, 1.0, 0.3, 2, True),
    "albumin": (-0.5, -0.4, 3.9, 0.5, 2, False),
    "bilirubin": (0.2, 0.3, 0.8, 0.5, 2, True),
    "hemoglobin": (-0.3, -0.4, 13.5, 1.6, 1, False),
    "systolic_bp": (0.2, 0.3, 132.0, 16.0, 0, False),
}

DRIVERS = {
    "diagnosis": ("crp", "creatinine", "albumin", "smoking"),
    "subtype": ("bilirubin", "bmi", "age", "hemoglobin"),
    "prognosis": ("age", "crp", "creatinine", "albumin"),
}

SURVIVAL_OUTCOME = "death"
SURVIVAL_DRIVERS = ("age", "crp", "creatinine", "albumin")
WEIBULL_SHAPE = 1.3
WEIBULL_SCALE_DAYS = 4000.0
FOLLOW_UP_DAYS = 1825.0  # administrative end of follow-up (5 years)
DROPOUT_MAX_DAYS = 9125.0  # drop-out time uniform on (0, 25 years)


@dataclass(frozen=True)
class WeibullSurvival:
    """The true survival function of a Weibull proportional-hazards outcome.

    ``S(t | x_i) = exp(-(t / scale)^shape * exp(linear_predictor[i]))``.

    Attributes
    ----------
    linear_predictor : ndarray of shape (n_patients,)
        The log hazard ratio eta of every patient.
    shape : float
        Weibull shape k.
    scale : float
        Weibull scale s, in days.
    """

    linear_predictor: np.ndarray
    shape: float = WEIBULL_SHAPE
    scale: float = WEIBULL_SCALE_DAYS

    def __call__(self, times) -> np.ndarray:
        """S(t | x) of every patient at ``times`` (days), shape (n_patients, n_times)."""
        times = np.atleast_1d(np.asarray(times, dtype=float))
        if np.any(times < 0):
            raise ValueError("times must be non-negative.")
        cumulative_hazard = (times[None, :] / self.scale) ** self.shape * np.exp(self.linear_predictor)[:, None]
        return np.exp(-cumulative_hazard)

    def median(self) -> np.ndarray:
        """The true median survival time of every patient, in days."""
        return self.scale * (np.log(2.0) * np.exp(-self.linear_predictor)) ** (1.0 / self.shape)


@dataclass(frozen=True)
class SyntheticTruth:
    """The generating truth behind a synthetic cohort.

    Attributes
    ----------
    probabilities : dict of str to ndarray
        Classification outcome -> true class probabilities, shape (n, n_classes).
    expected_values : dict of str to ndarray
        Regression outcome -> the noise-free value.
    noise_sd : dict of str to float
        Regression outcome -> standard deviation of its Gaussian noise.
    drivers : dict of str to tuple of str
        Outcome -> the features that drive it, strongest first.
    survival : dict of str to WeibullSurvival
        Time-to-event outcome -> its true survival function (a callable:
        ``truth.survival["death"](times)`` is S(t | x), shape (n, n_times)).
        Empty unless the cohort was drawn with ``survival=True``.
    """

    probabilities: dict
    expected_values: dict
    noise_sd: dict
    drivers: dict
    survival: dict = field(default_factory=dict)


def make_synthetic_cohort(
    n_patients: int = 1000,
    *,
    random_state=None,
    n_noise_features: int = 2,
    feature_missing_rate: float = 0.1,
    label_missing_rate: float | Mapping[str, float] = 0.2,
    return_truth: bool = False,
    survival: bool = False,
):
    """Draw a synthetic cohort with numeric and categorical features and three outcomes.

    Parameters
    ----------
    n_patients : int, default=1000
        Rows.
    random_state : int, RandomState instance or None, default=None
        Same seed, same cohort.
    n_noise_features : int, default=2
        Extra numeric measurements ``noise_0, noise_1, ...`` unrelated to any
        outcome (use many to make wide tables).
    feature_missing_rate : float, default=0.1
        Probability that any feature value is missing.
    label_missing_rate : float or dict of str to float, default=0.2
        Probability that a label is missing, for all outcomes or per outcome
        (with ``survival``, the key ``"death"`` sets the rate at which
        ``death_time`` and ``death_event`` are missing together).
    return_truth : bool, default=False
        Also return the :class:`SyntheticTruth`.
    survival : bool, default=False
        Add the time-to-event outcome ``death`` (see the module docstring).
        Every other column is the same as without it.

    Returns
    -------
    X : DataFrame of shape (n_patients, 10 + n_noise_features)
        Indexed by ``patient_id``. Numeric measurements in clinical units,
        ``sex`` and ``smoking`` as categories.
    Y : DataFrame of shape (n_patients, 3), or (n_patients, 5) with ``survival``
        ``diagnosis`` (nullable 0/1), ``subtype`` ("A"/"B"/"C" or missing),
        ``prognosis`` (float, NaN where missing); with ``survival`` also
        ``death_time`` (float days > 0, NaN where missing) and ``death_event``
        (nullable 0/1: 1 death observed, 0 censored).
    truth : SyntheticTruth
        Only when ``return_truth`` is True.

    Examples
    --------
    >>> X, Y = make_synthetic_cohort(5, random_state=0)
    >>> X.shape, list(Y.columns)
    ((5, 12), ['diagnosis', 'subtype', 'prognosis'])
    >>> X, Y, truth = make_synthetic_cohort(5, random_state=0, survival=True, return_truth=True)
    >>> list(Y.columns[3:]), truth.survival["death"]([0.0, 365.0]).shape
    (['death_time', 'death_event'], (5, 2))
    """
    rng = check_random_state(random_state)
    n = int(n_patients)
    factors = rng.standard_normal((n, 2))
    standardised = {}
    for name, (load_1, load_2, *_unused) in _MEASUREMENTS.items():
        unique = np.sqrt(max(1.0 - load_1**2 - load_2**2, 0.05))
        values = factors @ np.array([load_1, load_2]) + unique * rng.standard_normal(n)
        standardised[name] = np.clip(values, -STANDARD_LIMIT, STANDARD_LIMIT)
    smoking_score = 0.8 * factors[:, 0] + 0.6 * rng.standard_normal(n)
    smoking = np.digitize(smoking_score, [-0.3, 0.7])  # 0 never, 1 former, 2 current
    sex = rng.random(n) < 0.5

    v = standardised
    diagnosis_logit = (
        -0.6 + 1.4 * v["crp"] + 1.0 * v["creatinine"] - 0.8 * v["albumin"]
        + 0.7 * (smoking == 2) + 0.6 * v["crp"] * v["creatinine"]
    )
    p_diagnosis = 1.0 / (1.0 + np.exp(-diagnosis_logit))
    subtype_logits = np.column_stack(
        [np.zeros(n), 1.2 * v["bilirubin"] - 0.6 * v["hemoglobin"], 1.0 * v["bmi"] + 0.8 * v["age"] - 0.3]
    )
    p_subtype = np.exp(subtype_logits - subtype_logits.max(axis=1, keepdims=True))
    p_subtype /= p_subtype.sum(axis=1, keepdims=True)
    prognosis_mean = (
        7.0 - 0.5 * v["age"] - 0.45 * v["crp"] + 0.35 * v["albumin"] - 0.4 * np.tanh(2 * v["creatinine"])
    )

    diagnosis = (rng.random(n) < p_diagnosis).astype(np.int64)
    subtype_index = (rng.random((n, 1)) > np.cumsum(p_subtype, axis=1)).sum(axis=1)
    prognosis = prognosis_mean + PROGNOSIS_NOISE_SD * rng.standard_normal(n)

    index = pd.RangeIndex(n, name="patient_id")
    X = pd.DataFrame(index=index)
    for name, (_l1, _l2, centre, spread, decimals, log_normal) in _MEASUREMENTS.items():
        values = centre * np.exp(spread * v[name]) if log_normal else centre + spread * v[name]
        X[name] = np.round(values, decimals)
    for i in range(n_noise_features):
        X[f"noise_{i}"] = np.round(np.clip(rng.standard_normal(n), -STANDARD_LIMIT, STANDARD_LIMIT), 3)
    X["sex"] = pd.Categorical.from_codes(sex.astype(np.int8), categories=["f", "m"])
    X["smoking"] = pd.Categorical.from_codes(smoking.astype(np.int8), categories=list(SMOKING))
    for name in X.columns:
        missing = rng.random(n) < feature_missing_rate
        X.loc[missing, name] = np.nan

    rates = _label_missing_rates(label_missing_rate, survival)
    Y = pd.DataFrame(index=index)
    Y["diagnosis"] = pd.array(diagnosis, dtype="Int64")
    Y["subtype"] = pd.Series(np.asarray(SUBTYPES, dtype=object)[subtype_index], index=index)
    Y["prognosis"] = prognosis
    for name in OUTCOMES:
        missing = rng.random(n) < rates[name]
        Y.loc[missing, name] = np.nan if name == "prognosis" else None

    truth_survival = {}
    if survival:
        # Drawn after everything above, so the other columns do not depend on ``survival``.
        death = WeibullSurvival(
            0.6 * v["age"] + 0.5 * v["crp"] - 0.4 * v["albumin"] + 0.8 * np.maximum(v["creatinine"], 0.0)
        )
        unit_exponential = -np.log(rng.random(n))  # in (0, inf]: every event time is positive
        event_time = death.scale * (unit_exponential * np.exp(-death.linear_predictor)) ** (1.0 / death.shape)
        censor_time = np.minimum(FOLLOW_UP_DAYS, DROPOUT_MAX_DAYS * (1.0 - rng.random(n)))  # in (0, max]
        missing = rng.random(n) < rates[SURVIVAL_OUTCOME]
        Y["death_time"] = np.where(missing, np.nan, np.minimum(event_time, censor_time))
        Y["death_event"] = pd.array(event_time <= censor_time, dtype="Int64")
        Y.loc[missing, "death_event"] = None
        truth_survival[SURVIVAL_OUTCOME] = death

    if not return_truth:
        return X, Y
    drivers = dict(DRIVERS) | ({SURVIVAL_OUTCOME: SURVIVAL_DRIVERS} if survival else {})
    truth = SyntheticTruth(
        probabilities={"diagnosis": np.column_stack([1 - p_diagnosis, p_diagnosis]), "subtype": p_subtype},
        expected_values={"prognosis": prognosis_mean},
        noise_sd={"prognosis": PROGNOSIS_NOISE_SD},
        drivers=drivers,
        survival=truth_survival,
    )
    return X, Y, truth


def _label_missing_rates(rate: float | Mapping[str, float], survival: bool = False) -> dict[str, float]:
    outcomes = OUTCOMES + ((SURVIVAL_OUTCOME,) if survival else ())
    if isinstance(rate, Mapping):
        unknown = set(rate) - set(outcomes)
        if unknown:
            raise ValueError(f"label_missing_rate names unknown outcomes {sorted(unknown)}; "
                             f"the outcomes are {list(outcomes)}.")
        return {name: float(rate.get(name, 0.0)) for name in outcomes}
    return {name: float(rate) for name in outcomes}


def synthetic_schema(n_noise_features: int = 2):
    """The cohort schema of ``make_synthetic_cohort(n_noise_features=...)``.

    ``data_schemas/synthetic.yaml`` describes the default cohort; noise
    measurements beyond those it lists follow the rule of ``noise_0``.

    Returns
    -------
    CohortSchema
    """
    from dataclasses import replace

    from ..data.schema import SCHEMAS, load_schema

    schema = load_schema(SCHEMAS / "synthetic.yaml")
    template = next(feature for feature in schema.features if feature.name == "noise_0")
    measurements = [f for f in schema.features if f.type == "numeric" and not f.name.startswith("noise_")]
    noise = [replace(template, name=f"noise_{i}") for i in range(n_noise_features)]
    categorical = [f for f in schema.features if f.type != "numeric"]
    return replace(schema, features=tuple(measurements + noise + categorical))

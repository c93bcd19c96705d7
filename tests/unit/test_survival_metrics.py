import itertools
import subprocess
import sys
import warnings

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sksurv.metrics import (
    concordance_index_ipcw,
    cumulative_dynamic_auc,
    integrated_brier_score,
)
from sksurv.util import Surv

from clinical_mtl.model.survival_metrics import (
    censoring_summary,
    horizon_calibration,
    horizon_label,
    kaplan_meier_curve,
    survival_metrics,
)

GRID = np.linspace(5.0, 3000.0, 120)

# 12 patients, 7 events, censorings between events, no tied times.
HAND_TIME = np.array([5.0, 8, 12, 20, 25, 31, 40, 44, 52, 60, 71, 90])
HAND_EVENT = np.array([1, 0, 1, 1, 0, 1, 0, 1, 1, 0, 0, 1], dtype=bool)
HAND_RATE = np.array([0.05, 0.02, 0.03, 0.04, 0.01, 0.035, 0.015, 0.02, 0.025, 0.012, 0.03, 0.01])


def exponential_curves(rate, grid=GRID):
    return np.exp(-np.outer(rate, grid))


def exponential_cohort(n, seed=0, base_rate=0.001, censor_max=3000.0):
    """Exponential event times with known hazards, independent uniform censoring."""
    rng = np.random.default_rng(seed)
    rate = base_rate * np.exp(rng.normal(size=n))
    event_time = rng.exponential(1.0 / rate)
    censor_time = rng.uniform(1.0, censor_max, n)
    return np.minimum(event_time, censor_time), event_time <= censor_time, rate


def brute_force_harrell(time, event, risk):
    """Pairs (i, j) with an event for i before time j; ties in risk count one half."""
    concordant = comparable = 0.0
    for i, j in itertools.permutations(range(len(time)), 2):
        if event[i] and time[i] < time[j]:
            comparable += 1
            concordant += 1.0 if risk[i] > risk[j] else 0.5 if risk[i] == risk[j] else 0.0
    return concordant / comparable


def test_horizon_label():
    assert horizon_label(365) == "365"
    assert horizon_label(182.5) == "182p5"
    assert horizon_label(30.0) == "30"
    metrics = survival_metrics(HAND_TIME, HAND_EVENT, exponential_curves(HAND_RATE), GRID, [30, 22.5])
    assert {"auc_at_30", "calibration_at_30", "auc_at_22p5", "calibration_at_22p5"} <= set(metrics)


def test_censoring_summary_by_hand():
    # Reverse KM (censorings at 2, 4, 5 are its "events"): S(2) = 4/5, S(4) = 4/5 * 2/3 = 0.533,
    # S(5) = 0.533 * 1/2 = 0.267, so the median follow-up is 5. The NaN row is unlabelled.
    time = np.array([1.0, 2, 3, 4, 5, 6, np.nan])
    event = np.array([1, 0, 1, 0, 0, 1, np.nan])
    summary = censoring_summary(time, event)
    assert summary == {"n_labelled": 6, "events": 3, "censored": 3, "median_follow_up": 5.0}
    # Without censoring the reverse KM curve never falls: undefined.
    assert np.isnan(censoring_summary([1.0, 2.0, 3.0], [1, 1, 1])["median_follow_up"])


def test_harrell_c_matches_brute_force_pair_count():
    metrics = survival_metrics(HAND_TIME, HAND_EVENT, exponential_curves(HAND_RATE), GRID)
    # A higher constant hazard means a smaller restricted mean survival time, i.e. a higher risk.
    assert metrics["harrell_c"] == pytest.approx(brute_force_harrell(HAND_TIME, HAND_EVENT, HAND_RATE))
    assert 0.3 < metrics["harrell_c"] < 0.9


def test_restricted_mean_survival_time_starts_from_one_at_time_zero():
    # A late-starting grid: the area between t = 0 and the first grid time changes the ranking
    # of curves that cross (S = 1 on [0, 100] then falling to 0 has a larger RMST than a flat 0.6).
    rng = np.random.default_rng(9)
    grid = np.arange(100.0, 401.0, 50.0)
    survival = np.cumprod(rng.uniform(0.4, 1.0, (40, len(grid))), axis=1)
    time = rng.uniform(50.0, 450.0, 40)
    event = rng.random(40) < 0.7
    full_grid = np.r_[0.0, grid]
    full_curves = np.column_stack([np.ones(40), survival])
    rmst = [sum((g1 - g0) * (s0 + s1) / 2 for g0, g1, s0, s1 in zip(full_grid, full_grid[1:], row, row[1:]))
            for row in full_curves]
    expected = brute_force_harrell(time, event, -np.array(rmst))
    assert survival_metrics(time, event, survival, grid)["harrell_c"] == pytest.approx(expected)


def test_perfect_and_reversed_rankings():
    perfect = survival_metrics(HAND_TIME, HAND_EVENT, exponential_curves(1.0 / HAND_TIME), GRID)
    reversed_ = survival_metrics(HAND_TIME, HAND_EVENT, exponential_curves(HAND_TIME / 1e4), GRID)
    assert perfect["harrell_c"] == pytest.approx(1.0)
    assert perfect["uno_c"] == pytest.approx(1.0)
    assert reversed_["harrell_c"] == pytest.approx(0.0)
    assert reversed_["uno_c"] == pytest.approx(0.0)


def test_uno_c_and_ibs_equal_scikit_survival_called_directly():
    time, event, rate = exponential_cohort(400, seed=1)
    survival = exponential_curves(rate)
    metrics = survival_metrics(time, event, survival, GRID)
    y = Surv.from_arrays(event, time)
    tau = np.percentile(time[event], 80)
    assert metrics["uno_c"] == pytest.approx(concordance_index_ipcw(y, y, rate, tau=tau)[0])
    ibs_grid = np.linspace(*np.percentile(time[event], [10, 80]), 20)
    expected_ibs = integrated_brier_score(y, y, np.exp(-np.outer(rate, ibs_grid)), ibs_grid)
    # The curves are linearly interpolated from a 25-day grid: close to exact, not identical.
    assert metrics["ibs"] == pytest.approx(expected_ibs, abs=1e-4)
    # On a coarse grid, S is interpolated linearly per row (from S(0) = 1), as documented.
    coarse = np.array([100.0, 400.0, 900.0, 1600.0, 2500.0])
    coarse_survival = exponential_curves(rate, coarse)
    interpolated = np.array(
        [np.interp(ibs_grid, np.r_[0.0, coarse], np.r_[1.0, row]) for row in coarse_survival]
    )
    assert survival_metrics(time, event, coarse_survival, coarse)["ibs"] == pytest.approx(
        integrated_brier_score(y, y, interpolated, ibs_grid)
    )


def test_ibs_of_true_survival_beats_a_flat_prediction():
    time, event, rate = exponential_cohort(400, seed=2)
    true = survival_metrics(time, event, exponential_curves(rate), GRID)["ibs"]
    flat = survival_metrics(time, event, np.full((len(time), len(GRID)), 0.5), GRID)["ibs"]
    assert true < flat - 0.03
    assert flat == pytest.approx(0.25, abs=0.02)


def test_auc_without_censoring_is_the_roc_auc_of_events_by_the_horizon():
    rng = np.random.default_rng(3)
    rate = 0.002 * np.exp(rng.normal(size=300))
    time = rng.exponential(1.0 / rate)
    event = np.ones(300, dtype=bool)
    horizon = 365.0
    # Noisy predictions; the metric interpolates S(365) linearly between grid points.
    noisy_rate = rate * np.exp(rng.normal(scale=0.5, size=300))
    grid = np.linspace(1.0, 5000.0, 400)
    survival = exponential_curves(noisy_rate, grid)
    metrics = survival_metrics(time, event, survival, grid, [horizon])
    risk = 1 - np.array([np.interp(horizon, grid, row) for row in survival])
    assert metrics["auc_at_365"] == pytest.approx(roc_auc_score(time <= horizon, risk))
    y = Surv.from_arrays(event, time)
    assert metrics["auc_at_365"] == pytest.approx(cumulative_dynamic_auc(y, y, risk, [horizon])[0][0])


def test_horizon_calibration_of_a_well_calibrated_cohort():
    time, event, rate = exponential_cohort(5000, seed=4)
    horizon = 365.0
    predicted = 1 - np.exp(-rate * horizon)
    table = horizon_calibration(time, event, predicted, horizon)
    assert len(table) == 5
    assert table["n"].tolist() == [1000] * 5
    assert np.all(np.diff(table["predicted"]) > 0)
    assert np.all(np.abs(table["observed"] - table["predicted"]) < 0.05)
    assert np.all(table["observed_lower"] < table["observed"])
    assert np.all(table["observed"] < table["observed_upper"])
    assert table["events"].sum() == np.sum(event & (time <= horizon))
    # Doubling the predicted risks is visibly miscalibrated.
    doubled = horizon_calibration(time, event, np.minimum(2 * predicted, 1), horizon)
    assert np.average(np.abs(doubled["observed"] - doubled["predicted"]), weights=doubled["n"]) > 0.05


def test_calibration_metric_is_the_size_weighted_gap_of_the_table():
    time, event, rate = exponential_cohort(603, seed=5)
    survival = exponential_curves(1.5 * rate)
    metrics = survival_metrics(time, event, survival, GRID, [500])
    risk = 1 - np.array([np.interp(500, GRID, row) for row in survival])
    table = horizon_calibration(time, event, risk, 500)
    expected = np.average(np.abs(table["observed"] - table["predicted"]), weights=table["n"])
    assert metrics["calibration_at_500"] == pytest.approx(expected)
    well = survival_metrics(time, event, exponential_curves(rate), GRID, [500])["calibration_at_500"]
    assert well < metrics["calibration_at_500"]


def test_horizon_calibration_kaplan_meier_by_hand():
    time = np.array([1.0, 2, 3, 4, 5, 6])
    event = np.array([1, 0, 1, 0, 0, 1])
    probability = np.full(6, 0.3)
    # KM at 3.5: (5/6) * (3/4) = 0.625.
    row = horizon_calibration(time, event, probability, 3.5).iloc[0]
    assert (row["n"], row["events"], row["at_risk"]) == (6, 2, 3)
    assert row["observed"] == pytest.approx(0.375)
    assert row["observed_lower"] < 0.375 < row["observed_upper"]
    # Past the last time: the curve dropped to 0 at the final event, so everyone had it...
    assert horizon_calibration(time, event, probability, 7.0)["observed"].iloc[0] == 1.0
    # ...but after a final censoring the estimate is undefined.
    censored_last = np.array([1, 0, 1, 0, 0, 0])
    assert np.isnan(horizon_calibration(time, censored_last, probability, 7.0)["observed"].iloc[0])


def test_horizon_calibration_uses_fewer_groups_for_few_patients():
    time, event, rate = exponential_cohort(30, seed=6)
    table = horizon_calibration(time, event, 1 - np.exp(-rate * 365), 365.0)
    assert table["n"].tolist() == [10, 10, 10]


def test_kaplan_meier_curve_by_hand():
    time = np.array([1.0, 2, 3, 4, 5, 6])
    event = np.array([1, 0, 1, 0, 0, 0])
    survival, lower, upper = kaplan_meier_curve(time, event, [0.5, 1.0, 2.5, 3.0, 6.0, 8.0])
    np.testing.assert_allclose(survival[:5], [1.0, 5 / 6, 5 / 6, 5 / 8, 5 / 8])
    assert np.all(lower[1:5] < survival[1:5]) and np.all(survival[1:5] < upper[1:5])
    assert np.isnan(survival[5]) and np.isnan(lower[5]) and np.isnan(upper[5])


def test_no_events_gives_nan_without_warnings():
    time = np.linspace(10.0, 1000.0, 50)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metrics = survival_metrics(time, np.zeros(50), np.full((50, len(GRID)), 0.9), GRID, [365])
    assert set(metrics) == {"harrell_c", "uno_c", "ibs", "auc_at_365", "calibration_at_365"}
    assert all(np.isnan(value) for value in metrics.values())


def test_horizon_beyond_follow_up_and_tiny_cohorts_give_nan():
    time, event, rate = exponential_cohort(200, seed=7, censor_max=1000.0)
    survival = exponential_curves(rate)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metrics = survival_metrics(time, event, survival, GRID, [365, 2000, time.min() / 2])
        tiny = survival_metrics(time[:8], event[:8], survival[:8], GRID, [365])
    assert np.isfinite(metrics["auc_at_365"]) and np.isfinite(metrics["calibration_at_365"])
    assert np.isnan(metrics["auc_at_2000"]) and np.isnan(metrics["calibration_at_2000"])
    before = horizon_label(time.min() / 2)
    assert np.isnan(metrics[f"auc_at_{before}"]) and np.isnan(metrics[f"calibration_at_{before}"])
    assert all(np.isnan(value) for value in tiny.values())
    # A horizon past the prediction grid would need extrapolated curves.
    short_grid = GRID[GRID <= 300]
    beyond_grid = survival_metrics(time, event, survival[:, : len(short_grid)], short_grid, [365])
    assert np.isnan(beyond_grid["auc_at_365"]) and np.isnan(beyond_grid["calibration_at_365"])


def test_unlabelled_rows_are_left_out():
    time, event, rate = exponential_cohort(200, seed=8)
    survival = exponential_curves(rate)
    unlabelled_curve = np.full(len(GRID), np.nan)
    padded = survival_metrics(
        np.r_[time, np.nan], np.r_[event, np.nan], np.vstack([survival, unlabelled_curve]), GRID, [365]
    )
    assert padded == pytest.approx(survival_metrics(time, event, survival, GRID, [365]))


def test_invalid_inputs_name_the_row_position_not_the_value():
    survival = exponential_curves(HAND_RATE)
    bad_time = HAND_TIME.copy()
    bad_time[3] = -7.25
    with pytest.raises(ValueError, match="row position 3") as error:
        survival_metrics(bad_time, HAND_EVENT, survival, GRID)
    assert "7.25" not in str(error.value)
    bad_survival = survival.copy()
    bad_survival[5, 0] = 1.5
    with pytest.raises(ValueError, match="row position 5"):
        survival_metrics(HAND_TIME, HAND_EVENT, bad_survival, GRID)
    with pytest.raises(ValueError, match="shape"):
        survival_metrics(HAND_TIME, HAND_EVENT, survival[:, :-1], GRID)


def test_module_imports_without_loading_the_survival_libraries():
    code = (  # the whole package, which imports this module, loads neither library
        "import sys\n"
        "import clinical_mtl, clinical_mtl.model.survival_metrics\n"
        "assert 'sksurv' not in sys.modules and 'lifelines' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# -- the edges of what each metric needs ------------------------------------------------------------

TEN = np.arange(1.0, 11.0)  # ten patients followed 1 to 10


def ten_patients(events, rate=None, horizons=(), grid=GRID):
    event = np.isin(TEN, events)
    rate = np.linspace(0.05, 0.01, 10) if rate is None else np.asarray(rate)
    return survival_metrics(TEN, event, exponential_curves(rate, grid), grid, horizons)


def test_a_cohort_without_events_has_a_median_follow_up():
    # Every patient censored: the reverse Kaplan-Meier curve is one minus the empirical one.
    assert censoring_summary([1.0, 2, 3, 4, 5], [0, 0, 0, 0, 0])["median_follow_up"] == 3.0


def test_ten_patients_are_enough_and_nine_are_not():
    assert np.isfinite(survival_metrics(HAND_TIME[:10], HAND_EVENT[:10], exponential_curves(HAND_RATE[:10]),
                                        GRID)["harrell_c"])
    assert np.isnan(survival_metrics(HAND_TIME[:9], HAND_EVENT[:9], exponential_curves(HAND_RATE[:9]),
                                     GRID)["harrell_c"])


def test_the_concordance_indices_need_two_comparable_pairs():
    # Events at 8 and 10: the pairs (8, 9) and (8, 10) only, one concordant and one not; Uno's tau
    # (the 80th percentile of the event times, 9.6) keeps both.
    rate = np.full(10, 0.02)
    rate[[7, 8, 9]] = [0.03, 0.01, 0.05]  # the risk of 8 is above 9's and below 10's
    two = ten_patients([8, 10], rate)
    assert two["harrell_c"] == 0.5
    y = Surv.from_arrays(np.isin(TEN, [8, 10]), TEN)
    rmst = -exponential_curves(rate).sum(axis=1)  # any decreasing function of the risk orders alike
    assert two["uno_c"] == pytest.approx(concordance_index_ipcw(y, y, -rmst, tau=9.6)[0]) == 0.5
    rate[9] = rate[7]  # 8 and 10 now tie in risk: one concordant pair and one tied, still two pairs
    tied = ten_patients([8, 10], rate)
    assert tied["harrell_c"] == 0.75 and tied["uno_c"] == pytest.approx(0.75)
    one = ten_patients([9, 10], rate)  # the pair (9, 10) alone
    assert np.isnan(one["harrell_c"]) and np.isnan(one["uno_c"])


def test_the_integrated_brier_score_may_end_at_the_last_grid_time():
    low, high = np.percentile(HAND_TIME[HAND_EVENT], (10, 80))
    grid = np.linspace(1.0, high, 40)
    metrics = survival_metrics(HAND_TIME, HAND_EVENT, exponential_curves(HAND_RATE, grid), grid)
    y = Surv.from_arrays(HAND_EVENT, HAND_TIME)
    ibs_grid = np.linspace(low, high, 20)
    expected = integrated_brier_score(y, y, exponential_curves(HAND_RATE, ibs_grid), ibs_grid)
    assert metrics["ibs"] == pytest.approx(expected, rel=1e-3)  # the curves are interpolated between grid times
    one_time = survival_metrics(np.r_[HAND_TIME, 95.0], np.r_[np.zeros(12, bool), True],
                                exponential_curves(np.r_[HAND_RATE, 0.01]), GRID)
    assert np.isnan(one_time["ibs"])  # a single event time: no range to integrate over
    short = grid[grid < high - 5]  # curves that stop before the range ends are not extended
    assert np.isnan(survival_metrics(HAND_TIME, HAND_EVENT, exponential_curves(HAND_RATE, short), short)["ibs"])


def test_horizons_from_the_first_follow_up_time_up_to_the_last_grid_time():
    events = [1, 4, 6]
    first = ten_patients(events, horizons=[1.0])  # the first patient's event is a case by then
    assert np.isfinite(first["auc_at_1"]) and np.isfinite(first["calibration_at_1"])
    last = ten_patients(events, horizons=[10.0])  # nobody is followed past the last time
    assert np.isnan(last["auc_at_10"]) and np.isnan(last["calibration_at_10"])
    grid = np.linspace(0.5, 7.0, 14)
    at_end = ten_patients(events, horizons=[7.0, 6.8], grid=grid)  # the grid's last time, and just inside it
    assert all(np.isfinite(at_end[f"{metric}_at_{h}"]) for metric in ("auc", "calibration") for h in ("7", "6p8"))
    after_a_skipped_one = ten_patients(events, horizons=[12.0, 5.0])
    assert np.isnan(after_a_skipped_one["auc_at_12"]) and np.isfinite(after_a_skipped_one["auc_at_5"])


def test_the_time_dependent_auc_needs_cases_times_controls_of_two():
    # cases: events on or before the horizon; controls: followed past it
    assert np.isfinite(ten_patients([2], horizons=[8.5])["auc_at_8p5"])  # 1 case x 2 controls
    assert np.isnan(ten_patients([2], horizons=[9.5])["auc_at_9p5"])  # 1 case x 1 control, 7 censored before
    assert np.isnan(ten_patients([2], horizons=[9.0])["auc_at_9"])  # 1 x 1; the patient censored at 9 is no control
    at_the_horizon = ten_patients([8], horizons=[8.0])  # the one case's event is at the horizon itself
    y = Surv.from_arrays(np.isin(TEN, [8]), TEN)
    risk = 1 - np.exp(-np.linspace(0.05, 0.01, 10) * 8.0)
    assert at_the_horizon["auc_at_8"] == pytest.approx(cumulative_dynamic_auc(y, y, risk, [8.0])[0][0])


def test_horizon_calibration_refuses_bad_groups_and_probabilities():
    probability = np.linspace(0.1, 0.9, 12)
    one_group = horizon_calibration(HAND_TIME, HAND_EVENT, probability, 30.0, n_groups=1)
    assert one_group["n"].tolist() == [12]
    for bad in (0, -1, 2.0):
        with pytest.raises(ValueError, match="n_groups must be a positive integer"):
            horizon_calibration(HAND_TIME, HAND_EVENT, probability, 30.0, n_groups=bad)
    for wrong in (-0.1, 1.1, np.nan):
        bad_probability = probability.copy()
        bad_probability[3] = wrong
        with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
            horizon_calibration(HAND_TIME, HAND_EVENT, bad_probability, 30.0)


def test_horizon_calibration_counts_events_at_and_patients_still_followed_at_the_horizon():
    time = np.array([1.0, 2, 3, 4, 5, 6])
    event = np.array([1, 0, 1, 0, 0, 1])
    row = horizon_calibration(time, event, np.full(6, 0.3), 3.0).iloc[0]
    assert (row["events"], row["at_risk"]) == (2, 4)  # the event at 3 is by the horizon; 3 is still followed then
    _, lower, upper = kaplan_meier_curve(time, event, [3.0])
    assert (row["observed_lower"], row["observed_upper"]) == (1 - upper[0], 1 - lower[0])
    edges = horizon_calibration(time, event, np.array([0.0, 1, 0.5, 0.5, 0.2, 1]), 3.0)
    assert edges["predicted"].tolist() == [pytest.approx(3.2 / 6)]  # 0 and 1 are probabilities too


def test_horizon_calibration_of_no_labelled_patient_or_of_one():
    empty = horizon_calibration([np.nan, np.nan], [np.nan, np.nan], [0.2, 0.4], 3.0)
    assert empty.empty and list(empty.columns) == ["n", "events", "at_risk", "predicted", "observed",
                                                   "observed_lower", "observed_upper"]
    one = horizon_calibration([2.0, np.nan], [1, np.nan], [0.2, 0.4], 3.0)
    assert one[["n", "events", "predicted", "observed"]].values.tolist() == [[1, 1, 0.2, 1.0]]


def test_kaplan_meier_curve_before_the_first_event_and_before_time_zero():
    time = np.array([0.25, 0.5, 0.75, 1.0])  # years: the first event before time 1
    event = np.array([1, 0, 1, 0])
    survival, lower, upper = kaplan_meier_curve(time, event, [-1.0, 0.1, 0.6])
    assert (survival[0], lower[0], upper[0]) == (1.0, 1.0, 1.0)  # before follow-up starts
    assert survival[1] == 1.0  # before the first event: 1, not undefined
    assert survival[2] == pytest.approx(0.75) and lower[2] < 0.75 < upper[2]
    single, _, _ = kaplan_meier_curve([2.0], [1], [1.0, 2.0])
    np.testing.assert_array_equal(single, [1.0, 0.0])
    for curve in kaplan_meier_curve([np.nan], [np.nan], [1.0, 2.0]):  # no labelled row
        assert np.isnan(curve).all()


def test_a_row_missing_its_time_or_its_event_is_unlabelled():
    summary = censoring_summary([1.0, np.nan, 3.0, 4.0], [1, 1, np.nan, 0])
    assert (summary["n_labelled"], summary["events"], summary["censored"]) == (2, 1, 1)


def test_inputs_of_the_wrong_shape_or_outside_their_range_are_refused():
    with pytest.raises(ValueError, match="same length"):
        censoring_summary([1.0, 2.0, 3.0], [1, 0])
    with pytest.raises(ValueError, match="same length"):
        censoring_summary(np.ones((2, 2)), np.ones((2, 2)))
    with pytest.raises(ValueError, match="time must be finite and positive"):
        censoring_summary([1.0, 0.0], [1, 0])
    survival = exponential_curves(HAND_RATE)
    for bad in (1.0 + 1e-9, -1e-9):
        outside = survival.copy()
        outside[2, 7] = bad
        with pytest.raises(ValueError, match=r"survival must be probabilities in \[0, 1\] \(row position 2\)"):
            survival_metrics(HAND_TIME, HAND_EVENT, outside, GRID)


@pytest.mark.parametrize("grid", [[], [[1.0, 2.0]], [-1.0, 2.0], [1.0, 1.0, 2.0], [1.0, np.inf]])
def test_a_grid_must_be_finite_non_negative_and_strictly_increasing(grid):
    with pytest.raises(ValueError, match="times must be"):
        survival_metrics(HAND_TIME, HAND_EVENT, np.ones((12, np.size(grid))), grid)


def test_a_grid_may_start_at_zero_and_be_finer_than_one_unit():
    grid = np.arange(0.0, 100.0, 0.5)
    metrics = survival_metrics(HAND_TIME, HAND_EVENT, exponential_curves(HAND_RATE, grid), grid)
    assert metrics["harrell_c"] == pytest.approx(
        survival_metrics(HAND_TIME, HAND_EVENT, exponential_curves(HAND_RATE), GRID)["harrell_c"])


def test_survival_of_exactly_one_and_zero_is_accepted():
    survival = exponential_curves(HAND_RATE)
    survival[:, 0] = 1.0
    survival[0, -5:] = 0.0
    metrics = survival_metrics(HAND_TIME, HAND_EVENT, survival, GRID)
    assert np.isfinite(metrics["harrell_c"])

"""The survival head's maths: intervals, targets, likelihood, curves, medians, tasks and labels."""

import warnings
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from clinical_mtl.exceptions import InputDataError, TaskSpecificationError
from clinical_mtl.model.labels import align_labels, encode_targets
from clinical_mtl.model.losses import masked_task_loss
from clinical_mtl.model.network import build_network
from clinical_mtl.model.survival import (
    COHORT_CURVE_POINTS,
    check_horizons,
    cohort_curve_times,
    decode_survival,
    default_horizons,
    describe_censoring,
    encode_survival,
    fit_cut_points,
    headline_horizon,
    horizon_label,
    interpolation_weights,
    median_survival,
    restricted_mean,
    survival_at,
    survival_loss,
    survival_outcomes,
)
from clinical_mtl.model.tasks import decode_outputs, infer_tasks

CUTS = (10.0, 20.0, 40.0)


def test_targets_count_the_intervals_survived_and_credit_a_censored_interval_past_its_middle():
    time = np.array([5.0, 15.0, 12.0, 18.0, 40.0, 55.0, 55.0, np.nan])
    event = np.array([1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0, np.nan])
    encoded = encode_survival(time, event, CUTS)
    assert encoded.tolist() == [  # intervals survived, event, rank of the time among the labelled rows
        [0, 1, 0],  # event in (0, 10]
        [1, 1, 2],  # event in (10, 20]: survived one interval
        [1, 0, 1],  # censored at 12, before the middle of (10, 20]: not credited with it
        [2, 0, 3],  # censored at 18, past the middle: credited
        [2, 1, 4],  # event at 40, the end of the last interval
        [3, 0, 5],  # censored after the last cut: survived all
        [3, 0, 5],  # an event past the last cut counts as censored there; equal times, equal ranks
        [0, 0, -1],  # unlabelled
    ]


def test_a_censored_time_at_or_past_the_middle_of_its_interval_is_credited_with_it():
    time = np.array([5.0, 4.0, 5.2, 25.0, 30.0])
    encoded = encode_survival(time, np.zeros(5), CUTS)
    assert encoded[:, 0].tolist() == [
        1,  # censored at 5, exactly the middle of (0, 10]: credited
        0,  # censored at 4, before it: not credited
        1,  # censored at 5.2, past it
        2,  # censored at 25 in the last interval (20, 40], before its middle 30: not credited
        3,  # censored at 30, exactly its middle: credited
    ]


def test_the_loss_is_the_discrete_time_likelihood():
    logits = torch.tensor([[0.3, -1.0, 0.5], [0.3, -1.0, 0.5], [2.0, 0.0, -2.0]])
    target = torch.tensor([[1, 1], [2, 0], [3, 0]])
    hazard = torch.sigmoid(logits).double()
    expected = [
        -(torch.log(1 - hazard[0, 0]) + torch.log(hazard[0, 1])),  # survive interval 0, event in 1
        -(torch.log(1 - hazard[1, 0]) + torch.log(1 - hazard[1, 1])),  # survive 0 and 1, then censored
        -torch.log(1 - hazard[2]).sum(),  # survive every interval
    ]
    np.testing.assert_allclose(survival_loss(logits, target).numpy(), torch.stack(expected).numpy(), rtol=1e-6)


def test_an_unlabelled_row_has_no_influence_on_the_survival_gradient():
    generator = torch.Generator().manual_seed(0)
    X = torch.randn(6, 4, generator=generator)
    target = torch.tensor([[1, 1], [2, 0], [0, 1], [3, 0], [2, 1], [1, 0]])
    weight = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0, 1.0])  # row 3 unlabelled

    def gradient(inputs, targets):
        net = build_network(4, (8,), [3], 0.0, seed=0)
        masked_task_loss(net(inputs)[0], targets, weight, "survival").backward()
        return torch.cat([p.grad.flatten() for p in net.parameters()])

    reference = gradient(X, target)
    changed_X, changed_target = X.clone(), target.clone()
    changed_X[3], changed_target[3] = 1e3, torch.tensor([0, 1])
    assert torch.equal(reference, gradient(changed_X, changed_target))
    changed_X[1] = 1e3  # whereas a labelled (censored) row moves it
    assert not torch.equal(reference, gradient(changed_X, target))


def test_curves_are_the_members_mean_non_increasing_and_interpolated_linearly():
    raw = np.random.default_rng(0).normal(size=(3, 5, len(CUTS)))
    curves = decode_survival(raw)
    hazards = 1 / (1 + np.exp(-raw))
    np.testing.assert_allclose(curves, np.cumprod(1 - hazards, axis=-1).mean(axis=0))
    times = np.array([0.0, 5.0, 10.0, 15.0, 30.0, 40.0, 100.0])
    at = survival_at(curves, CUTS, times)
    assert np.all(np.diff(at, axis=1) <= 0) and np.all((at >= 0) & (at <= 1))
    np.testing.assert_allclose(at[:, 0], 1.0)
    np.testing.assert_allclose(at[:, 1], (1 + curves[:, 0]) / 2)  # half-way to the first cut
    np.testing.assert_allclose(at[:, 4], (curves[:, 1] + curves[:, 2]) / 2)
    np.testing.assert_allclose(at[:, 6], curves[:, 2])  # held after the last cut, never extrapolated
    # The product form the explanations use gives the same curve, member by member.
    weights = interpolation_weights(CUTS, times)
    product = np.prod(1 - weights[None, None] * hazards[:, :, None, :], axis=-1).mean(axis=0)
    np.testing.assert_allclose(product, at, atol=1e-12)


def test_median_and_restricted_mean_of_known_curves():
    curves = np.array([[0.8, 0.4, 0.2], [0.9, 0.8, 0.7], [0.5, 0.3, 0.1]])
    median, beyond = median_survival(curves, CUTS)
    np.testing.assert_allclose(median[[0, 2]], [10 + 10 * 0.3 / 0.4, 10.0])
    assert np.isnan(median[1]) and beyond.tolist() == [False, True, False]  # never a made-up number
    np.testing.assert_allclose(restricted_mean(curves[:1], CUTS), [10 * 0.9 + 10 * 0.6 + 20 * 0.3])


def test_cut_points_are_quantiles_of_event_times_and_need_an_event():
    time = np.arange(1.0, 101.0)
    event = (time % 2 == 0).astype(float)
    cuts = fit_cut_points(time, event, "death", 4)
    assert cuts == (26.5, 51.0, 75.5, 100.0)  # quartiles (numpy's linear rule) of the event times 2, 4, ..., 100
    with pytest.raises(TaskSpecificationError, match="'death' has no event among its 100 labelled patients"):
        fit_cut_points(time, np.zeros(100), "death", 4)
    assert (horizon_label(365.0), horizon_label(182.5)) == ("365", "182p5")


def _labels(**columns):
    return pd.DataFrame(columns, index=pd.Index([11, 12, 13, 14, 15, 16], name="id"))


def test_a_time_event_pair_is_a_survival_outcome_with_its_own_censoring():
    Y = _labels(dx=[0, 1, 0, 1, None, 1], death_time=[5.0, 8.0, 3.0, 9.0, 2.0, np.nan],
                death_event=[1, 0, 1, 1, 0, np.nan], relapse_time=[1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
                relapse_event=[0, 1, 1, 0, 0, 1])
    specs = infer_tasks(Y, survival_horizons={"death": [4, 8]})
    assert [(s.name, s.kind) for s in specs] == [("dx", "binary"), ("death", "survival"), ("relapse", "survival")]
    death, relapse = specs[1], specs[2]
    assert death.label_columns == ("death_time", "death_event") and death.horizons == (4.0, 8.0)
    assert death.n_outputs == len(death.cut_points) and death.cut_points[-1] == 9.0
    assert relapse.cut_points[-1] == 6.0 and relapse.horizons == (2.5, 3.0, 4.5)  # quartiles of 2, 3, 6
    targets, labelled = encode_targets(Y, specs)
    assert labelled[:, 1].tolist() == [True] * 5 + [False] and labelled[:, 2].all()
    assert targets[1].shape == (6, 3) and targets[1][:, 1].tolist() == [1, 0, 1, 1, 0, 0]
    assert targets[1][:, 2].tolist() == [2, 3, 1, 4, 0, -1]  # times 5, 8, 3, 9, 2 ranked; unlabelled -1
    assert infer_tasks(Y, {"dx": "binary", "death": "survival", "relapse": "survival"}) == infer_tasks(Y)
    with pytest.raises(TaskSpecificationError, match=r"survival_horizons names \['dx'\]"):
        infer_tasks(Y, survival_horizons={"dx": [1]})


@pytest.mark.parametrize("columns, message", [
    ({"death_time": [5.0, -1.0, 3.0, 2.0, 1.0, 4.0], "death_event": [1, 0, 1, 1, 0, 0]},
     r"'death': 'death_time' must be a positive finite follow-up time; it is not in row 12"),
    ({"death_time": [5.0, 0.0, 3.0, 2.0, 1.0, 4.0], "death_event": [1, 0, 1, 1, 0, 0]},
     r"positive finite follow-up time; it is not in row 12"),
    ({"death_time": [5.0, 6.0, 3.0, 2.0, 1.0, 4.0], "death_event": [1, 2, 1, 1, 0, 0]},
     r"'death': 'death_event' must be 1 \(event\) or 0 \(censored\); it is not in row 12"),
    ({"death_time": [5.0, 6.0, 3.0, np.nan, 1.0, 4.0], "death_event": [1, 0, 1, 1, 0, 0]},
     r"'death' has a 'death_event' but no 'death_time' in row 14"),
    ({"death_time": [5.0, 6.0, 3.0, 2.0, 1.0, 4.0], "death_event": [1, 0, np.nan, 1, 0, 0]},
     r"'death' has a 'death_time' but no 'death_event' in row 13"),
    ({"death_time": [5.0, 6.0, 3.0, 2.0, 1.0, 4.0], "death_event": [0, 0, 0, 0, 0, 0]},
     r"'death' has no event among its 6 labelled patients"),
])
def test_bad_survival_labels_are_errors_naming_the_outcome_and_rows(columns, message):
    with pytest.raises((InputDataError, TaskSpecificationError), match=message) as error:
        infer_tasks(_labels(**columns))
    assert "-1.0" not in str(error.value)  # rows by index, never the values


def test_scoring_labels_must_give_both_columns_of_a_survival_outcome():
    Y = _labels(death_time=[5.0, 8.0, 3.0, 9.0, 2.0, 4.0], death_event=[1, 0, 1, 1, 0, 0])
    specs = infer_tasks(Y)
    assert list(align_labels(Y, Y.index, specs).columns) == ["death_time", "death_event"]
    with pytest.raises(InputDataError, match=r"labels survival outcome 'death' with \['death_time'\] only"):
        align_labels(Y[["death_time"]], Y.index, specs)
    unnamed = align_labels(Y.to_numpy(), Y.index, specs, match_index=False)
    assert list(unnamed.columns) == ["death_time", "death_event"]


def test_decoding_a_survival_head_gives_its_curve_at_the_cut_points():
    Y = _labels(death_time=[5.0, 8.0, 3.0, 9.0, 2.0, 4.0], death_event=[1, 0, 1, 1, 0, 0])
    (spec,) = infer_tasks(Y, survival_intervals=2)
    raw = np.zeros((1, 4, spec.n_outputs))  # every hazard one half
    np.testing.assert_allclose(decode_outputs(spec, raw), np.tile([0.5, 0.25], (4, 1)))


def test_only_a_time_and_event_pair_names_a_survival_outcome():
    assert survival_outcomes(["death_time", "recurrence_time", "recurrence_event", "age", "x_event"]) == ["recurrence"]


def test_follow_up_in_years_keeps_every_cut_point_and_horizon_below_one():
    time = np.arange(1, 101) / 100.0  # 0.01 to 1 year, every one an event
    assert fit_cut_points(time, np.ones(100), "death", 4) == (0.258, 0.505, 0.752, 1.0)
    assert default_horizons(time, np.ones(100)) == (0.26, 0.51, 0.75)  # two significant digits
    days = np.arange(1.0, 1001.0)
    assert default_horizons(days, np.ones(1000)) == (250.0, 500.0, 750.0)  # quartiles 250.75, 500.5, 750.25


def test_curves_interpolate_between_cut_points_less_than_one_unit_apart():
    curves = np.array([[0.8, 0.6, 0.2]])
    at = survival_at(curves, (0.25, 0.5, 1.0), [0.125, 0.375, 0.75, 1.0, 2.0])
    np.testing.assert_allclose(at, [[0.9, 0.7, 0.4, 0.2, 0.2]])


def test_curves_and_medians_past_the_last_cut_point_raise_no_warning():
    curves = np.array([[0.8, 0.6, 0.5], [0.9, 0.8, 0.7]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        at = survival_at(curves, CUTS, [40.0, 100.0])
        median, beyond = median_survival(curves, CUTS)
    np.testing.assert_allclose(at, curves[:, [2, 2]])
    # a curve that reaches exactly 0.5 at the last cut point has its median there; one above 0.5 has none
    assert median[0] == 40.0 and np.isnan(median[1]) and beyond.tolist() == [False, True]


@pytest.mark.parametrize("horizons", [[], [[365.0, 730.0]], [0.0, 365.0], [-30.0], [float("inf")]])
def test_horizons_that_are_not_positive_finite_times_are_errors(horizons):
    with pytest.raises(TaskSpecificationError, match="survival_horizons for 'death' must be"):
        check_horizons(horizons, "death")


def test_the_headline_horizon_is_the_middle_one():
    assert [headline_horizon(SimpleNamespace(horizons=h)) for h in ((1.0,), (1.0, 5.0), (1.0, 5.0, 10.0),
                                                                      (1.0, 2.0, 5.0, 10.0))] == [0, 1, 1, 2]


def test_horizons_in_years_below_one_are_kept_sorted_and_distinct():
    assert check_horizons([1.0, 0.5, 0.25, 0.5]) == (0.25, 0.5, 1.0)


def test_censoring_counts_labelled_patients_events_and_censored_ones():
    time = np.array([1.0, 2.0, np.nan, 3.0, 4.0])
    event = np.array([1.0, 0.0, np.nan, 1.0, 1.0])
    assert describe_censoring(time, event) == {"n_labelled": 4, "events": 3, "censored": 1}


def test_the_cohort_curve_is_kept_at_even_times_up_to_the_last_cut_point():
    times = cohort_curve_times([100.0, 250.0, 400.0, 960.0])
    step = 960.0 / COHORT_CURVE_POINTS
    np.testing.assert_allclose(times, step * np.arange(1, COHORT_CURVE_POINTS + 1))

"""Split-conformal quantiles: the finite-sample rank and its coverage guarantee, absolute and normalised."""

import json
import math

import numpy as np
import pytest

from clinical_mtl.model.conformal import (
    ScaleModel,
    check_coverage,
    conformal_quantile,
    conformal_scores,
    normalized_conformal,
)


def test_conformal_quantile_is_the_finite_sample_rank():
    scores = conformal_scores(np.arange(9.0), np.arange(9.0) + np.arange(1.0, 10.0)[::-1])
    np.testing.assert_array_equal(scores, np.arange(1.0, 10.0))
    assert conformal_quantile(scores, 0.9) == 9.0  # ceil(10 * 0.9) = 9th of 9
    assert conformal_quantile(scores, 0.5) == 5.0
    assert conformal_quantile(scores, 0.7) == 7.0  # 10 * 0.7 is 7.000000000000001 in floating point
    assert conformal_quantile(scores, 0.91) == math.inf
    assert conformal_quantile(np.zeros(0), 0.5) == math.inf


def test_split_conformal_covers_at_least_as_promised():
    rng = np.random.default_rng(3)
    held_out, new = rng.standard_t(4, size=(2000, 200)), rng.standard_t(4, size=(2000, 1))
    widths = np.array([conformal_quantile(np.sort(np.abs(row)), 0.9) for row in held_out])
    covered = np.abs(new[:, 0]) <= widths
    assert 0.89 <= covered.mean() <= 0.915  # guaranteed: 0.9 <= E[coverage] <= 0.9 + 1 / 201


@pytest.mark.parametrize("coverage", [0, 1, 1.5, -0.1, "0.9", True, None, float("nan")])
def test_coverage_must_lie_strictly_between_0_and_1(coverage):
    with pytest.raises(ValueError, match="coverage must be a number strictly between 0 and 1"):
        check_coverage(coverage)


def _heteroscedastic(rng, n, n_inputs=6):
    """Inputs, and residuals whose scale is exp(0.6 x0 - 0.4 x1): known, log-linear in the inputs."""
    inputs = rng.standard_normal((n, n_inputs)).astype(np.float32)
    scale = np.exp(0.6 * inputs[:, 0] - 0.4 * inputs[:, 1])
    return inputs, scale, scale * rng.standard_normal(n)


def test_the_scale_model_recovers_a_log_linear_scale():
    inputs, scale, residuals = _heteroscedastic(np.random.default_rng(0), 4000)
    model = ScaleModel.fit(inputs, residuals)
    np.testing.assert_allclose(model.coefficients, [0.6, -0.4, 0, 0, 0, 0], atol=0.06)
    # E log|N(0, 1)| = -0.635: the intercept carries it, and the ratios of scales are right.
    assert model.intercept == pytest.approx(-0.635, abs=0.06)
    ratio = model.scale(inputs) / scale
    assert ratio.std() / ratio.mean() < 0.1


def test_the_scale_model_shrinks_to_a_constant_where_residuals_do_not_depend_on_inputs():
    rng = np.random.default_rng(1)
    inputs = rng.standard_normal((300, 20)).astype(np.float32)
    scale = ScaleModel.fit(inputs, rng.standard_normal(300)).scale(inputs)
    # The penalty keeps it near-constant: unpenalised least squares varies by about 0.29 here
    # (sqrt(20 / 300) times the 1.11 spread of log|N(0, 1)|), exp(0.6 x0 - 0.4 x1) above by 0.8.
    assert scale.std() / scale.mean() < 0.15


def test_the_scale_is_clipped_to_its_range_and_stored_as_numbers():
    inputs, _, residuals = _heteroscedastic(np.random.default_rng(2), 500)
    model = ScaleModel.fit(inputs, residuals)
    low, high = model.log_range
    fitted = model.log_scale(inputs)
    assert fitted.min() == low and fitted.max() == high
    far = np.zeros((2, inputs.shape[1]), dtype=np.float32)
    far[:, 0] = [-1e4, 1e4]  # far beyond the cohort: the nearest fitted scale, not exp(+-6000)
    np.testing.assert_array_equal(model.log_scale(far), [low, high])
    restored = ScaleModel.from_dict(json.loads(json.dumps(model.to_dict())))
    np.testing.assert_array_equal(restored.scale(inputs), model.scale(inputs))


def test_a_patients_scale_does_not_depend_on_the_rows_beside_it():
    inputs, _, residuals = _heteroscedastic(np.random.default_rng(3), 3000, n_inputs=40)
    model = ScaleModel.fit(inputs, residuals)
    together = model.scale(np.asfortranarray(inputs))
    alone = np.concatenate([model.scale(inputs[i : i + 1]) for i in range(0, 3000, 7)])
    np.testing.assert_array_equal(alone, together[::7])


def test_normalized_scores_come_from_rows_the_scale_never_saw():
    rng = np.random.default_rng(4)
    inputs, _, residuals = _heteroscedastic(rng, 401)
    predictions = rng.standard_normal(401)
    scale, scores = normalized_conformal(inputs, predictions + residuals, predictions, random_state=0)
    assert len(scores) == 201 and np.all(np.diff(scores) >= 0)
    order = np.random.default_rng(0).permutation(401)
    held = order[200:]
    np.testing.assert_allclose(np.sort(np.abs(residuals[held]) / scale.scale(inputs[held])), scores, rtol=1e-12)
    changed = residuals.copy()
    changed[held] *= 50  # the scored rows' labels do not move the scale
    again, _ = normalized_conformal(inputs, predictions + changed, predictions, random_state=0)
    np.testing.assert_array_equal(again.coefficients, scale.coefficients)


def test_normalized_intervals_cover_as_promised_and_follow_the_error():
    rng = np.random.default_rng(5)
    covered, high_scale_covered, absolute_high_covered, correlations = [], [], [], []
    for _ in range(300):
        inputs, _, residuals = _heteroscedastic(rng, 400)
        model, scores = normalized_conformal(inputs, residuals, np.zeros(400), random_state=int(rng.integers(1 << 30)))
        new_inputs, new_scale, new_errors = _heteroscedastic(rng, 200)
        widths = conformal_quantile(scores, 0.9) * model.scale(new_inputs)
        inside = np.abs(new_errors) <= widths
        high = new_scale > np.quantile(new_scale, 0.8)
        covered.append(inside.mean())
        high_scale_covered.append(inside[high].mean())
        absolute_high_covered.append((np.abs(new_errors) <= conformal_quantile(np.sort(np.abs(residuals)), 0.9))[high].mean())
        correlations.append(np.corrcoef(widths, np.abs(new_errors))[0, 1])
    # Exchangeable rows: 0.9 <= E[coverage] <= 0.9 + 1 / 201 (standard error here 0.0013).
    assert 0.896 <= np.mean(covered) <= 0.91
    # Where the errors are largest the absolute interval falls short, the normalised one does not.
    assert np.mean(absolute_high_covered) < 0.8 and np.mean(high_scale_covered) > 0.86
    assert np.mean(correlations) > 0.3

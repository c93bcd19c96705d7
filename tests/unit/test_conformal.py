"""Split-conformal quantiles: the finite-sample rank and its coverage guarantee."""

import math

import numpy as np
import pytest

from clinical_mtl.model.conformal import (
    check_coverage,
    conformal_quantile,
    conformal_scores,
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

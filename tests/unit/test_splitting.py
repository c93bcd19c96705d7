import numpy as np
import pytest

from clinical_mtl.exceptions import InputDataError
from clinical_mtl.model.splitting import holdout_split


def test_split_is_stratified_on_classes_and_label_availability():
    n = 200
    cls = np.array([0] * 150 + [1] * 50)
    labelled = np.ones((n, 2), dtype=bool)
    labelled[::5, 1] = False
    train, valid = holdout_split([cls, np.zeros(n)], labelled, [True, False], 0.2, seed=0)
    assert len(valid) == 40 and len(train) == 160
    assert np.intersect1d(train, valid).size == 0
    assert np.mean(cls[valid]) == pytest.approx(0.25)
    assert np.mean(labelled[valid, 1]) == pytest.approx(0.8)


def test_split_falls_back_when_strata_are_too_small():
    cls = np.array([0] * 9 + [1])  # one row of class 1: cannot stratify on it
    labelled = np.ones((10, 1), dtype=bool)
    train, valid = holdout_split([cls], labelled, [True], 0.3, seed=0)
    assert len(valid) == 3 and len(train) == 7


def test_split_is_reproducible():
    cls = np.arange(100) % 3
    labelled = np.ones((100, 1), dtype=bool)
    first = holdout_split([cls], labelled, [True], 0.2, seed=4)
    second = holdout_split([cls], labelled, [True], 0.2, seed=4)
    assert all(np.array_equal(a, b) for a, b in zip(first, second))


def test_too_few_rows_is_an_error():
    with pytest.raises(InputDataError, match="at least one training and one validation row"):
        holdout_split([np.zeros(1)], np.ones((1, 1), dtype=bool), [False], 0.2, seed=0)

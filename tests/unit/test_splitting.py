import numpy as np
import pytest
from sklearn.model_selection import train_test_split

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


SEEDS = range(6)


def test_the_smallest_splits_have_one_validation_or_one_training_row():
    train, valid = holdout_split([np.zeros(5)], np.ones((5, 1), dtype=bool), [False], 0.2, seed=0)
    assert len(valid) == 1 and len(train) == 4
    train, valid = holdout_split([np.zeros(2)], np.ones((2, 1), dtype=bool), [False], 0.5, seed=0)
    assert len(valid) == 1 and len(train) == 1


def test_unlabelled_rows_are_a_stratum_of_their_own():
    cls = np.array([0] * 100 + [1] * 50 + [0] * 50)  # the last 50 unlabelled (their code is not a class)
    labelled = np.ones((200, 1), dtype=bool)
    labelled[150:] = False
    for seed in SEEDS:
        _, valid = holdout_split([cls], labelled, [True], 0.2, seed=seed)
        assert (np.sum(valid < 100), np.sum((valid >= 100) & (valid < 150)), np.sum(valid >= 150)) == (20, 10, 10)


@pytest.mark.parametrize("sizes, fraction", [
    ([150, 50], 0.2),     # two strata
    ([18, 2], 0.5),       # a stratum of two rows: one on each side
    ([5, 5, 5, 5], 0.2),  # exactly as many validation rows as strata
])
def test_split_stratifies_down_to_two_strata_of_two_rows_and_one_validation_row_each(sizes, fraction):
    cls = np.repeat(np.arange(len(sizes)), sizes)
    labelled = np.ones((len(cls), 1), dtype=bool)
    for seed in SEEDS:
        _, valid = holdout_split([cls], labelled, [True], fraction, seed=seed)
        expected = np.array(sizes) * len(valid) / len(cls)
        assert np.bincount(cls[valid], minlength=len(sizes)).tolist() == expected.tolist()


def test_a_single_stratum_is_a_plain_random_split():
    labelled = np.ones((30, 1), dtype=bool)
    for seed in SEEDS:
        _, valid = holdout_split([np.zeros(30, dtype=int)], labelled, [True], 0.2, seed=seed)
        assert valid.tolist() == sorted(train_test_split(np.arange(30), test_size=6, random_state=seed)[1])


def test_fewer_training_rows_than_strata_falls_back_rather_than_failing():
    cls = np.repeat(np.arange(4), [3, 3, 2, 2])  # four strata; 7 validation rows leave 3 training rows
    train, valid = holdout_split([cls], np.ones((10, 1), dtype=bool), [True], 0.7, seed=0)
    assert len(train) == 3 and len(valid) == 7

import numpy as np
import pandas as pd
import pytest
from scipy.special import softmax
from sklearn.utils.class_weight import compute_class_weight

from clinical_mtl.exceptions import InputDataError, TaskSpecificationError
from clinical_mtl.model.labels import (
    align_labels,
    as_label_frame,
    check_label_index,
    class_weight_vectors,
    encode_targets,
)
from clinical_mtl.model.tasks import TaskSpec, decode_outputs, infer_tasks


def labels(**columns):
    return pd.DataFrame(columns)


def test_kinds_are_inferred_from_labels():
    Y = labels(
        dx=[0, 1, np.nan, 1],
        stage=["a", "b", "c", None],
        flag=[True, False, True, None],
        score=[1, 2, 3, 4],
        days=[1.5, 2.25, np.nan, 7.0],
    )
    specs = infer_tasks(Y)
    assert [(s.name, s.kind) for s in specs] == [
        ("dx", "binary"),
        ("stage", "multiclass"),
        ("flag", "binary"),
        ("score", "multiclass"),
        ("days", "regression"),
    ]
    assert specs[0].classes == (0.0, 1.0)


def test_integers_with_many_values_are_regression():
    Y = labels(los=np.arange(30))
    assert infer_tasks(Y)[0].kind == "regression"


def test_declared_kinds_override_inference():
    Y = labels(score=[1, 2, 3, 4])
    assert infer_tasks(Y, {"score": "regression"})[0].kind == "regression"


def test_regression_targets_are_standardised():
    Y = labels(days=[10.5, 20.5, np.nan, 30.5])
    spec = infer_tasks(Y)[0]
    assert spec.kind == "regression"
    assert spec.target_mean == pytest.approx(20.5)
    targets, labelled = encode_targets(Y, [spec])
    assert labelled[:, 0].tolist() == [True, True, False, True]
    np.testing.assert_allclose(targets[0][labelled[:, 0]], np.array([-1.0, 0.0, 1.0]) * np.sqrt(1.5), rtol=1e-6)
    assert targets[0][2] == 0.0  # unlabelled rows hold a finite placeholder


def test_task_without_labels_is_an_error_naming_it():
    with pytest.raises(TaskSpecificationError, match="Outcome 'death' has no label at all"):
        infer_tasks(labels(dx=[0, 1], death=[np.nan, np.nan]))


def test_single_class_is_an_error_naming_the_task():
    with pytest.raises(TaskSpecificationError, match="Outcome 'dx' has only one class"):
        infer_tasks(labels(dx=[1, 1, np.nan]))


def test_binary_with_three_classes_is_an_error():
    with pytest.raises(TaskSpecificationError, match="declared binary but has 3 classes"):
        infer_tasks(labels(dx=[0, 1, 2]), {"dx": "binary"})


def test_columns_must_match_declared_tasks():
    with pytest.raises(TaskSpecificationError, match=r"in tasks but not in Y: \['death'\].*not in tasks: \['dx2'\]"):
        infer_tasks(labels(dx=[0, 1], dx2=[1, 0]), {"dx": "binary", "death": "binary"})


def test_unknown_task_kind_is_an_error():
    with pytest.raises(TaskSpecificationError, match="unknown kinds"):
        infer_tasks(labels(dx=[0, 1]), {"dx": "ordinal"})


def test_text_regression_labels_are_an_error():
    with pytest.raises(InputDataError, match="Outcome 'days' is a regression outcome"):
        infer_tasks(labels(days=["a", "b"]), {"days": "regression"})


def test_infinite_regression_labels_are_an_error():
    with pytest.raises(InputDataError, match="Outcome 'days' holds infinite values"):
        infer_tasks(labels(days=[1.0, np.inf]))


def test_unknown_class_at_encoding_names_rows():
    spec = infer_tasks(labels(stage=["a", "b"]))[0]
    with pytest.raises(InputDataError, match=r"labels outside its training classes \['a', 'b'\] in row 1"):
        encode_targets(labels(stage=["a", "z"]), [spec])


def test_nullable_labels_keep_their_values():
    Y = labels(dx=pd.array([0, 1, None], dtype="Int64"))
    spec = infer_tasks(Y)[0]
    assert spec.classes == (0, 1)
    assert isinstance(spec.classes[0], (int, np.integer))


def test_label_frame_shapes_and_lengths():
    index = pd.RangeIndex(3)
    assert list(as_label_frame(np.array([0, 1, 0]), index).columns) == ["y"]
    assert list(as_label_frame(np.zeros((3, 2)), index).columns) == ["y0", "y1"]
    with pytest.raises(InputDataError, match="X has 3 rows but Y has 2"):
        as_label_frame(np.zeros(2), index)
    with pytest.raises(InputDataError, match="target y is None"):
        as_label_frame(None, index)


# -- label frames and their index ------------------------------------------------------------------

MISMATCH = (
    "Y's index differs from X's at position {}: Y must list the same patients in the same order as X "
    "(reorder it with Y.loc[X.index] or reset both indexes)."
)


def _ids(*numbers):
    """Patient ids built afresh on each call (equal to, but not the same objects as, another call's)."""
    return [f"patient-{n:04d}" if isinstance(n, int) else n for n in numbers]


def _check_mismatch(X_index, Y_index, position):
    X, Y = pd.DataFrame({"age": np.arange(len(X_index))}, index=X_index), pd.Series(0, index=Y_index)
    with pytest.raises(InputDataError) as info:
        check_label_index(X, Y)
    assert str(info.value) == MISMATCH.format(position)


def test_label_frame_matches_pandas_indexes_by_default():
    reordered = pd.Series([0, 1, 0], index=[2, 1, 0], name="dx")
    with pytest.raises(InputDataError) as info:
        as_label_frame(reordered, pd.RangeIndex(3))
    assert str(info.value) == MISMATCH.format(0)
    by_position = as_label_frame(reordered, pd.RangeIndex(3), match_index=False)
    assert by_position["dx"].tolist() == [0, 1, 0]
    assert by_position.index.equals(pd.RangeIndex(3))


def test_align_labels_matches_pandas_indexes_by_default():
    specs = infer_tasks(labels(dx=[0, 1, 1]))
    reordered = pd.DataFrame({"dx": [1, 1, 0]}, index=[1, 2, 0])
    with pytest.raises(InputDataError) as info:
        align_labels(reordered, pd.RangeIndex(3), specs)
    assert str(info.value) == MISMATCH.format(0)
    assert align_labels(reordered, pd.RangeIndex(3), specs, match_index=False)["dx"].tolist() == [1, 1, 0]


def test_duplicated_outcome_columns_are_an_error():
    with pytest.raises(InputDataError) as info:
        as_label_frame(pd.DataFrame([[0, 1], [1, 0]], columns=["dx", "dx"]), pd.RangeIndex(2))
    assert str(info.value) == "Y has duplicated outcome columns ['dx']."
    with pytest.raises(InputDataError, match=r"duplicated outcome columns \['1'\]"):  # 1 and "1" name one outcome
        as_label_frame(pd.DataFrame([[0, 1], [1, 0]], columns=[1, "1"]), pd.RangeIndex(2))


def test_numbers_in_a_mixed_object_array_keep_their_kind():
    """A 2-d array mixing numbers and text is object-typed; each column is read as what it holds."""
    days = [0.5, 1.5, 4.0, 2.25]
    Y = np.array([[d, s] for d, s in zip(days, ["a", "b", "a", "b"])], dtype=object)
    specs = infer_tasks(as_label_frame(Y, pd.RangeIndex(4)))
    assert [(s.name, s.kind) for s in specs] == [("y0", "regression"), ("y1", "binary")]
    assert specs[0].target_mean == pytest.approx(np.mean(days))
    assert specs[0].target_scale == pytest.approx(np.std(days))


def test_label_index_is_checked_only_for_pandas_pairs_of_one_length():
    X = pd.DataFrame({"age": [50, 60, 70]}, index=_ids(0, 1, 2))
    reordered = pd.Series([1, 0, 1], index=_ids(2, 1, 0))
    check_label_index(X, reordered.to_numpy())  # an array is matched by position
    check_label_index(X.to_numpy(), reordered)  # so is every Y when X is an array
    check_label_index(X, reordered.iloc[:2])  # a length mismatch is an error of its own, raised elsewhere
    with pytest.raises(InputDataError) as info:
        check_label_index(X, reordered)
    assert str(info.value) == MISMATCH.format(0)


@pytest.mark.parametrize(
    "X_index, Y_index, position",
    [
        (pd.Index([0.0, 1.0, 2.0]), pd.Index([0.0, np.nan, 2.0]), 1),  # a missing id is no patient's id
        (pd.Index([0.0, np.nan, 2.0]), pd.Index([0.0, np.nan, 3.0]), 2),  # missing matches missing
        (pd.Index(_ids(0, 1, 2, 3)), pd.Index(_ids(0, 1, 2, 4)), 3),
        (pd.Index(_ids(0, pd.NA, 2, 3)), pd.Index(_ids(0, pd.NA, 2, 4)), 3),  # pd.NA: no elementwise ==
        (pd.Index(_ids(0, 1, 2)), pd.Index(_ids(0, pd.NA, 2)), 1),
        (pd.Index(_ids(0, pd.NA, 2), dtype="string"), pd.Index(_ids(0, 1, 2), dtype="string"), 1),
    ],
)
def test_label_index_mismatch_names_the_first_differing_position(X_index, Y_index, position):
    _check_mismatch(X_index, Y_index, position)


@pytest.mark.parametrize(
    "X_index, Y_index",
    [
        (pd.Index(_ids(0, 1, 2), dtype=object), pd.Index(_ids(0, 1, 2), dtype="string")),
        (pd.Index([7, 8, 9], dtype="int64"), pd.Index([7, 8, 9], dtype="Int64")),
        (pd.CategoricalIndex(_ids(0, 1)), pd.CategoricalIndex(_ids(0, 1), categories=_ids(0, 1, 2))),
    ],
)
def test_equal_ids_in_differently_typed_indexes_match(X_index, Y_index):
    X, Y = pd.DataFrame({"age": np.arange(len(X_index))}, index=X_index), pd.Series(0, index=Y_index)
    assert not Y.index.equals(X.index)  # so the check compares the ids one by one
    check_label_index(X, Y)


# -- task inference and scaling --------------------------------------------------------------------


def test_classification_specs_are_not_scaled():
    spec = infer_tasks(labels(dx=[0, 1, 1]))[0]
    assert (spec.target_mean, spec.target_scale) == (0.0, 1.0)


def test_integers_with_at_most_ten_values_are_classes():
    assert infer_tasks(labels(score=np.arange(10)))[0].classes == tuple(range(10))
    assert infer_tasks(labels(score=np.arange(11)))[0].kind == "regression"


def test_regression_scale_is_the_standard_deviation_also_below_one():
    values = [0.1, 0.2, 0.3]
    Y = labels(days=values)
    spec = infer_tasks(Y)[0]
    assert spec.target_scale == pytest.approx(np.std(values))
    expected = (np.array(values) - np.mean(values)) / np.std(values)  # z-scores
    np.testing.assert_allclose(encode_targets(Y, [spec])[0][0], expected, rtol=1e-6)


def test_constant_regression_target_is_centred_not_scaled():
    Y = labels(days=[5.0, 5.0, np.nan, 5.0])
    spec = infer_tasks(Y, {"days": "regression"})[0]
    assert (spec.target_mean, spec.target_scale) == (5.0, 1.0)  # no division by a zero spread
    assert encode_targets(Y, [spec])[0][0].tolist() == [0.0, 0.0, 0.0, 0.0]


def test_declared_tasks_missing_from_Y_are_an_error():
    with pytest.raises(TaskSpecificationError) as info:
        infer_tasks(labels(dx=[0, 1]), {"dx": "binary", "death": "binary"})
    assert str(info.value) == (
        "The columns of Y do not match `tasks`: outcomes in tasks but not in Y: ['death']. "
        "Pass one Y column per outcome of `tasks` (two, <name>_time and <name>_event, per survival "
        "outcome), or tasks=None to infer them."
    )


def test_Y_columns_missing_from_declared_tasks_are_an_error():
    with pytest.raises(TaskSpecificationError) as info:
        infer_tasks(labels(dx=[0, 1], age=[50.5, 60.5]), {"dx": "binary"})
    assert str(info.value) == (
        "The columns of Y do not match `tasks`: columns of Y not in tasks: ['age']. "
        "Pass one Y column per outcome of `tasks` (two, <name>_time and <name>_event, per survival "
        "outcome), or tasks=None to infer them."
    )


def test_pandas_string_labels_are_classes():
    Y = labels(stage=pd.array(["b", "a", None, "c"], dtype="string"))
    spec = infer_tasks(Y)[0]
    assert (spec.kind, spec.classes) == ("multiclass", ("a", "b", "c"))
    targets, labelled = encode_targets(Y, [spec])
    assert targets[0][labelled[:, 0]].tolist() == [1, 0, 2]


@pytest.mark.parametrize("dtype", ["Float64", "Int64"])
def test_nullable_numbers_are_numbers(dtype):
    values = np.arange(30) * (0.5 if dtype == "Float64" else 1)  # 30 values: too many for classes
    Y = labels(days=pd.array(list(values) + [None], dtype=dtype))
    spec = infer_tasks(Y)[0]
    assert spec.kind == "regression"
    assert (spec.target_mean, spec.target_scale) == (pytest.approx(np.mean(values)), pytest.approx(np.std(values)))


# -- label types -----------------------------------------------------------------------------------


def _mixed_types_message(Y):
    with pytest.raises(InputDataError) as info:
        infer_tasks(Y)
    return str(info.value)


@pytest.mark.parametrize(
    "values, where",
    [
        ([0, 1, None, "x", 1], "the row at position 3 holds text labels, the others number labels"),
        ([0, "x", 1, 1, "y", 0], "the rows at positions 1, 4 hold text labels, the others number labels"),
        (["a", "b", "a", 1, True, "c"],
         "the rows at positions 3, 4 hold boolean, number labels, the others text labels"),
        ([0] * 6 + ["x"] * 5, "the rows at positions 6, 7, 8, 9, 10 hold text labels, the others number labels"),
        ([0] * 7 + ["x"] * 6,
         "the rows at positions 7, 8, 9, 10, 11 and 1 more hold text labels, the others number labels"),
        ([True, False, True, 1], "the row at position 3 holds number labels, the others boolean labels"),
    ],
)
def test_mixed_label_types_name_the_positions_of_the_rarer_types(values, where):
    """Positions count every row, labelled or not; at most five are listed."""
    assert _mixed_types_message(labels(dx=pd.Series(values, dtype=object))) == (
        f"Outcome 'dx' mixes label types: {where}; use one type for its class labels."
    )


# -- class weights ---------------------------------------------------------------------------------


def test_class_weight_dict_weighs_unlisted_classes_one():
    Y = labels(dx=[0, 1, 1, 1, np.nan], stage=["a", "b", "c", "a", "a"])
    specs = infer_tasks(Y)
    dx, stage = class_weight_vectors(specs, Y, {"dx": {1: 3.0}, "stage": "balanced"})
    # scikit-learn's convention for a dict: classes it does not name weigh 1
    np.testing.assert_allclose(dx, compute_class_weight({1: 3.0}, classes=np.array([0, 1]), y=[0, 1, 1, 1]))
    np.testing.assert_allclose(stage, compute_class_weight("balanced", classes=np.array(["a", "b", "c"]),
                                                           y=Y["stage"].to_numpy()))


def test_class_weight_for_an_unknown_class_is_an_error():
    Y = labels(stage=["a", "b", "c", "a"])
    with pytest.raises(TaskSpecificationError) as info:
        class_weight_vectors(infer_tasks(Y), Y, {"stage": {"a": 2.0, "z": 1.0}})
    assert str(info.value) == (
        "class_weight for outcome 'stage' names classes ['z'] that are not among its classes ['a', 'b', 'c']."
    )


def test_encoding_labels_of_another_type_than_the_classes_names_the_rows():
    spec = infer_tasks(labels(stage=["a", "b"]))[0]
    with pytest.raises(InputDataError) as info:
        encode_targets(labels(stage=pd.Series([1, 2], dtype=object)), [spec])  # numbers do not sort among text
    assert str(info.value) == "Outcome 'stage' has labels outside its training classes ['a', 'b'] in rows 0, 1."


# -- decoding network outputs ----------------------------------------------------------------------

STAGE = TaskSpec("stage", "multiclass", ("a", "b", "c"))


def test_multiclass_probabilities_are_the_members_mean_softmax():
    raw = np.array([[[0.0, 1.0, 2.0], [5.0, 0.0, 0.0]], [[3.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])  # 2 members, 2 rows
    np.testing.assert_allclose(decode_outputs(STAGE, raw), softmax(raw, axis=-1).mean(axis=0), rtol=1e-12)


def test_multiclass_decoding_survives_large_logits():
    raw = np.array([[[400.0, 0.0, -400.0], [-1000.0, -1001.0, -1000.0]]])
    np.testing.assert_allclose(decode_outputs(STAGE, raw), softmax(raw[0], axis=-1), rtol=1e-12, atol=1e-300)


def test_float32_multiclass_probabilities_sum_to_one_in_float64():
    raw = (np.random.default_rng(0).normal(size=(3, 200, 3)) * 4).astype(np.float32)
    probabilities = decode_outputs(STAGE, raw)
    assert probabilities.dtype == np.float64
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(probabilities, softmax(raw.astype(np.float64), axis=-1).mean(axis=0), rtol=1e-5)

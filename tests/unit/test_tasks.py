import numpy as np
import pandas as pd
import pytest

from clinical_mtl.exceptions import InputDataError, TaskSpecificationError
from clinical_mtl.tasks import as_label_frame, encode_targets, infer_tasks


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
        infer_tasks(labels(dx=[0, 1]), {"dx": "survival"})


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

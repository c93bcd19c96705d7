"""What an outcome is: its name, kind, classes and target scaling.

An outcome (a task) is one column of the label table. Its kind is

``"binary"``
    Two classes, one logit.
``"multiclass"``
    Two or more classes, one logit per class (softmax).
``"regression"``
    A real value, standardised inside the model and returned in its units.

When kinds are not given they are inferred from the labels: booleans, text
and categories are classification, as are integer-valued numbers with at
most ``MAX_INFERRED_CLASSES`` distinct values; other numbers are regression.
Missing labels (NaN, None, pd.NA) mean "no label for this patient".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Real

import numpy as np
import pandas as pd
from pandas.api import types as ptypes
from scipy.special import expit

from .exceptions import InputDataError, TaskSpecificationError
from .features import describe_rows

BINARY = "binary"
MULTICLASS = "multiclass"
REGRESSION = "regression"
TASK_KINDS = (BINARY, MULTICLASS, REGRESSION)
MAX_INFERRED_CLASSES = 10
# What pandas.api.types.infer_dtype says of label arrays holding one type of value.
_ONE_LABEL_TYPE = {"string", "integer", "floating", "mixed-integer-float", "decimal", "boolean", "empty"}


@dataclass(frozen=True)
class TaskSpec:
    """One outcome as the model learns it.

    Parameters
    ----------
    name : str
        Column of the label table.
    kind : {"binary", "multiclass", "regression"}
        Task kind.
    classes : tuple or None
        Sorted class labels of a classification task, None for regression.
    target_mean, target_scale : float
        Standardisation of a regression target (0 and 1 for classification).
    """

    name: str
    kind: str
    classes: tuple | None = None
    target_mean: float = 0.0
    target_scale: float = 1.0

    @property
    def is_classification(self) -> bool:
        """Whether the task predicts classes."""
        return self.kind != REGRESSION

    @property
    def n_outputs(self) -> int:
        """Width of the network head: 1 logit, one logit per class, or 1 value."""
        return len(self.classes) if self.kind == MULTICLASS else 1


def as_label_frame(Y: object, index: pd.Index, *, match_index: bool = True) -> pd.DataFrame:
    """Return the label table as a DataFrame aligned with the feature rows.

    Labels are matched to feature rows by position, the scikit-learn way.
    When both are indexed (``X`` a DataFrame, ``Y`` a DataFrame or Series),
    their indexes must be equal: a ``Y`` listing the same patients in another
    order, or other patients, is an error rather than labels silently given
    to the wrong patients.

    Parameters
    ----------
    Y : DataFrame, Series or array-like of shape (n_samples,) or (n_samples, n_outcomes)
        Labels. A 1-d input is one outcome named after the Series (or ``"y"``);
        columns of a 2-d array are named ``y0, y1, ...``.
    index : Index
        Index of the feature table; the result is indexed like it.
    match_index : bool, default=True
        Whether ``index`` is the feature table's own index (``X`` was a
        DataFrame), which a pandas ``Y`` must then equal. False when ``X`` was
        an array: its positions are all there is to match.

    Returns
    -------
    DataFrame

    Raises
    ------
    InputDataError
        If ``Y`` is None, has the wrong shape or length, duplicated columns, or
        (with ``match_index``) an index other than ``index``.
    """
    if Y is None:
        raise InputDataError(
            "MultiTaskMLP requires y to be passed, but the target y is None; pass the "
            "label table with one column per outcome."
        )
    if isinstance(Y, pd.DataFrame):
        frame = Y
    elif isinstance(Y, pd.Series):
        frame = Y.to_frame(name=Y.name if isinstance(Y.name, str) else "y")
    else:
        array = np.asarray(Y)
        if array.ndim == 1:
            frame = pd.DataFrame({"y": array})
        elif array.ndim == 2:
            frame = pd.DataFrame(array, columns=[f"y{i}" for i in range(array.shape[1])])
            frame = frame.infer_objects() if array.dtype == object else frame
        else:
            raise InputDataError(f"Y must be 1-d or 2-d, got an array of shape {array.shape}.")
    if len(frame) != len(index):
        raise InputDataError(
            f"X has {len(index)} rows but Y has {len(frame)}; they must describe the "
            "same patients, one row each."
        )
    if frame.shape[1] == 0:
        raise InputDataError("Y has no outcome column.")
    if match_index and isinstance(Y, (pd.DataFrame, pd.Series)):
        _check_same_rows(index, Y.index)
    frame = frame.set_axis(index, axis=0)
    names = [str(column) for column in frame.columns]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise InputDataError(f"Y has duplicated outcome columns {duplicated}.")
    return frame.set_axis(names, axis=1)


def check_label_index(X: object, Y: object) -> None:
    """Check that pandas labels list the patients of pandas features, in their order.

    Nothing is checked unless both ``X`` is a DataFrame and ``Y`` a DataFrame
    or Series (arrays are matched by position), nor when their lengths differ
    (an error of its own, raised where the labels are read).

    Raises
    ------
    InputDataError
        If the indexes differ, naming the first position where they do.
    """
    if isinstance(X, pd.DataFrame) and isinstance(Y, (pd.DataFrame, pd.Series)) and len(X) == len(Y):
        _check_same_rows(X.index, Y.index)


def _check_same_rows(index: pd.Index, label_index: pd.Index) -> None:
    """Raise InputDataError unless ``label_index`` equals the feature rows' ``index``.

    The message names the first position at which they differ, never an id
    (ids are patient data).
    """
    if label_index.equals(index):
        return
    left, right = index.to_numpy(dtype=object), label_index.to_numpy(dtype=object)
    n = min(len(left), len(right))
    try:
        same = np.asarray(left[:n] == right[:n], dtype=bool) | (pd.isna(left[:n]) & pd.isna(right[:n]))
    except (TypeError, ValueError):  # values that do not compare elementwise (pd.NA among them)
        same = np.array([a is b or _equal(a, b) for a, b in zip(left[:n], right[:n])], dtype=bool)
    differing = np.flatnonzero(~same)
    if differing.size == 0 and len(left) == len(right):
        return  # equal labels of differently typed indexes (e.g. categorical and plain)
    position = int(differing[0]) if differing.size else n
    raise InputDataError(
        f"Y's index differs from X's at position {position}: Y must list the same patients in the "
        "same order as X (reorder it with Y.loc[X.index] or reset both indexes)."
    )


def _equal(a: object, b: object) -> bool:
    """``a == b`` as a bool; False where it has no truth value (pd.NA against an id)."""
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False


def infer_tasks(Y: pd.DataFrame, tasks: Mapping[str, str] | None = None) -> list[TaskSpec]:
    """Work out every outcome's kind, classes and target scaling from its labels.

    Parameters
    ----------
    Y : DataFrame
        Label table, one column per outcome, NaN where unlabelled.
    tasks : mapping of str to str, default=None
        Outcome -> kind. When given, its keys must be exactly the columns of ``Y``.

    Returns
    -------
    list of TaskSpec
        In the column order of ``Y``.

    Raises
    ------
    TaskSpecificationError
        If ``tasks`` and ``Y`` disagree on the outcomes, or an outcome has no
        label, a single class, or labels that do not suit its kind.
    """
    if tasks is not None:
        _check_task_mapping(tasks, Y.columns)
    specs = []
    for name in Y.columns:
        labels = _labelled_values(Y[name], name)
        if labels.size == 0:
            raise TaskSpecificationError(
                f"Outcome {name!r} has no label at all; drop the column or provide labels."
            )
        kind = tasks[name] if tasks is not None else _infer_kind(labels)
        specs.append(_make_spec(name, kind, labels))
    return specs


def encode_targets(Y: pd.DataFrame, specs: Sequence[TaskSpec]) -> tuple[list[np.ndarray], np.ndarray]:
    """Encode labels for the network: class indices or standardised values.

    Parameters
    ----------
    Y : DataFrame
        Label table with a column for every spec.
    specs : sequence of TaskSpec
        The outcomes, as learned in fit.

    Returns
    -------
    targets : list of ndarray of shape (n_samples,)
        Per outcome: int64 class indices, or float32 standardised values.
        Unlabelled rows hold 0 so that no NaN can reach a loss.
    labelled : ndarray of shape (n_samples, n_outcomes), dtype bool
        Whether each patient has a label for each outcome.

    Raises
    ------
    InputDataError
        If a label is not one of the outcome's classes, or not a finite number.
    """
    targets, labelled = [], np.zeros((len(Y), len(specs)), dtype=bool)
    for t, spec in enumerate(specs):
        column = Y[spec.name]
        present = column.notna().to_numpy()
        labelled[:, t] = present
        values = _labelled_values(column, spec.name)
        if spec.is_classification:
            encoded = np.zeros(len(Y), dtype=np.int64)
            encoded[present] = _class_indices(values, spec, column.index[present])
        else:
            encoded = np.zeros(len(Y), dtype=np.float32)
            encoded[present] = (_regression_values(values, spec.name, column.index[present])
                                - spec.target_mean) / spec.target_scale
        targets.append(encoded)
    return targets, labelled


def labelled_targets(Y: pd.DataFrame, spec: TaskSpec) -> tuple[np.ndarray, np.ndarray]:
    """Which rows are labelled for ``spec``, and their labels for metrics.

    Returns
    -------
    labelled : ndarray of bool, shape (n_samples,)
    y_true : ndarray
        On labelled rows: class indices (classification) or values in the
        outcome's units (regression).
    """
    targets, labelled = encode_targets(Y[[spec.name]], [spec])
    present = labelled[:, 0]
    if spec.is_classification:
        return present, targets[0][present]
    return present, Y[spec.name].to_numpy(dtype=np.float64, na_value=np.nan)[present]


def class_counts(Y: pd.DataFrame, spec: TaskSpec) -> dict:
    """Number of labelled patients per class of a classification outcome."""
    values = _labelled_values(Y[spec.name], spec.name)
    return {_plain(label): int(np.sum(values == label)) for label in spec.classes}


def _plain(value: object) -> object:
    """A numpy scalar as the matching Python scalar (readable, JSON-ready)."""
    return value.item() if isinstance(value, np.generic) else value


def align_labels(
    Y: object, index: pd.Index, specs: Sequence[TaskSpec], *, match_index: bool = True
) -> pd.DataFrame:
    """The labels of some or all outcomes of a fitted model, for scoring.

    Named labels (a DataFrame or a named Series) must name outcomes of the
    model; unnamed ones (arrays) must have one column per outcome, in order.

    Parameters
    ----------
    Y : DataFrame, Series or array-like
        Labels, NaN where unlabelled.
    index : Index
        Index of the feature rows.
    specs : sequence of TaskSpec
        The model's outcomes.
    match_index : bool, default=True
        Whether a pandas ``Y`` must be indexed like ``index`` (see
        :func:`as_label_frame`); False when the features were an array.

    Returns
    -------
    DataFrame
        Columns named after the model's outcomes.
    """
    labels = as_label_frame(Y, index, match_index=match_index)
    names = [spec.name for spec in specs]
    named = isinstance(Y, pd.DataFrame) or (isinstance(Y, pd.Series) and isinstance(Y.name, str))
    if not named:
        if labels.shape[1] != len(names):
            raise InputDataError(
                f"Y has {labels.shape[1]} unnamed columns but the model has "
                f"{len(names)} outcomes {names}; pass a DataFrame with outcome names."
            )
        return labels.set_axis(names, axis=1)
    unknown = [column for column in labels.columns if column not in names]
    if unknown:
        raise InputDataError(
            f"Y has columns {unknown} that are not outcomes of this model; its outcomes are {names}."
        )
    return labels


def class_weight_vectors(
    specs: Sequence[TaskSpec], Y: pd.DataFrame, class_weight: object
) -> list[np.ndarray | None]:
    """Per outcome, the loss weight of each class index (None where unweighted).

    Parameters
    ----------
    specs : sequence of TaskSpec
    Y : DataFrame
        Training labels ("balanced" weights are computed from them).
    class_weight : "balanced", dict or None
        "balanced" for every classification outcome, or a dict mapping
        outcome names to "balanced" or to a dict of class label -> weight.

    Returns
    -------
    list of ndarray or None
    """
    if class_weight is None:
        return [None] * len(specs)
    classification = [spec.name for spec in specs if spec.is_classification]
    setting = {name: class_weight for name in classification} if isinstance(class_weight, str) else class_weight
    unknown = [name for name in setting if name not in classification]
    if unknown:
        raise TaskSpecificationError(
            f"class_weight names {unknown}, which are not classification outcomes ({classification})."
        )
    weights = []
    for spec in specs:
        choice = setting.get(spec.name)
        if choice is None:
            weights.append(None)
        elif choice == "balanced":
            counts = np.array(list(class_counts(Y, spec).values()), dtype=np.float64)
            weights.append(counts.sum() / (len(counts) * counts))
        elif isinstance(choice, Mapping):
            stray = [label for label in choice if label not in spec.classes]
            if stray:
                raise TaskSpecificationError(
                    f"class_weight for outcome {spec.name!r} names classes {stray} "
                    f"that are not among its classes {list(spec.classes)}."
                )
            weights.append(np.array([float(choice.get(c, 1.0)) for c in spec.classes]))
        else:
            raise TaskSpecificationError(
                f"class_weight for outcome {spec.name!r} must be 'balanced', None or a "
                f"dict of class -> weight, got {choice!r}."
            )
    return weights


def decode_outputs(spec: TaskSpec, raw: np.ndarray) -> np.ndarray:
    """Average the raw head outputs of an ensemble into what the outcome predicts.

    Parameters
    ----------
    spec : TaskSpec
    raw : ndarray of shape (n_members, n_samples, n_outputs)
        Logits or standardised values of every network (float32 or float64;
        the average over networks is taken in float64).

    Returns
    -------
    ndarray
        Class probabilities of shape (n_samples, n_classes), the mean of the
        members' probabilities; or values of shape (n_samples,) in the
        outcome's units, the mean of the members' values.
    """
    if spec.kind == BINARY:
        positive = expit(raw[..., 0]).mean(axis=0, dtype=np.float64)
        return np.column_stack([1.0 - positive, positive])
    if spec.kind == MULTICLASS:
        exponentials = np.exp(raw - raw.max(axis=-1, keepdims=True))
        exponentials /= exponentials.sum(axis=-1, keepdims=True)
        probabilities = exponentials.mean(axis=0, dtype=np.float64)
        return probabilities / probabilities.sum(axis=1, keepdims=True)  # rows sum to 1 in float64
    return raw[..., 0].mean(axis=0, dtype=np.float64) * spec.target_scale + spec.target_mean


def _check_task_mapping(tasks: Mapping[str, str], columns: pd.Index) -> None:
    unknown = {name: kind for name, kind in tasks.items() if kind not in TASK_KINDS}
    if unknown:
        raise TaskSpecificationError(
            f"tasks gives unknown kinds {unknown}; each must be one of {list(TASK_KINDS)}."
        )
    missing = [name for name in tasks if name not in columns]
    extra = [name for name in columns if name not in tasks]
    if missing or extra:
        raise TaskSpecificationError(
            "The columns of Y do not match `tasks`: "
            + "; ".join(
                part
                for part in (
                    f"outcomes in tasks but not in Y: {missing}" if missing else "",
                    f"columns of Y not in tasks: {extra}" if extra else "",
                )
                if part
            )
            + ". Pass one Y column per outcome of `tasks`, or tasks=None to infer them."
        )


def _labelled_values(column: pd.Series, name: str) -> np.ndarray:
    """The non-missing labels of a column as a plain numpy array.

    Categories and text of any dtype (object, pandas ``string``) come back as
    an object array; nullable numbers and booleans as their numpy dtype.
    """
    present = column.notna().to_numpy()
    values = column[present]
    dtype = values.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        values = values.astype(object)
    elif ptypes.is_extension_array_dtype(dtype):
        numpy_dtype = getattr(dtype, "numpy_dtype", None)  # pandas "string" has none
        return values.to_numpy(dtype=object if numpy_dtype is None or numpy_dtype.kind in "OUS" else numpy_dtype)
    elif ptypes.is_complex_dtype(dtype):
        raise InputDataError(f"Outcome {name!r}: Complex data not supported.")
    array = values.to_numpy()
    if array.dtype == object:
        check_one_label_type(array, name, np.flatnonzero(present))
    return array


def _label_type(value: object) -> str:
    """The family of a label: what can be compared with what."""
    if isinstance(value, (bool, np.bool_)):
        return "boolean"
    if isinstance(value, (Real, np.number)):
        return "number"
    if isinstance(value, str):
        return "text"
    return type(value).__name__


def check_one_label_type(values: np.ndarray, name: str, positions: np.ndarray) -> None:
    """Raise InputDataError if the labels of an object column mix numbers, text, ...

    Parameters
    ----------
    values : ndarray of object
        One outcome's non-missing labels.
    name : str
        The outcome.
    positions : ndarray of int
        The row positions of ``values``; the message names those of the rows
        holding the less common types, never their values.
    """
    if ptypes.infer_dtype(values, skipna=False) in _ONE_LABEL_TYPE:
        return
    families = np.array([_label_type(value) for value in values], dtype=object)
    kinds, counts = np.unique(families, return_counts=True)
    if len(kinds) < 2:
        return
    common = kinds[np.argmax(counts)]
    odd = positions[families != common]
    shown = ", ".join(str(position) for position in odd[:5])
    more = f" and {len(odd) - 5} more" if len(odd) > 5 else ""
    others = ", ".join(kind for kind in kinds if kind != common)
    where = f"the row at position {shown} holds" if len(odd) == 1 else f"the rows at positions {shown}{more} hold"
    raise InputDataError(
        f"Outcome {name!r} mixes label types: {where} {others} labels, the others {common} "
        "labels; use one type for its class labels."
    )


def _infer_kind(labels: np.ndarray) -> str:
    n_classes = len(np.unique(labels))
    if labels.dtype.kind in "fiu":
        integral = labels.dtype.kind in "iu" or (
            np.all(np.isfinite(labels)) and np.all(np.mod(labels, 1) == 0)
        )
        if not integral or n_classes > MAX_INFERRED_CLASSES:
            return REGRESSION
    return BINARY if n_classes <= 2 else MULTICLASS


def _make_spec(name: str, kind: str, labels: np.ndarray) -> TaskSpec:
    if kind == REGRESSION:
        values = _regression_values(labels, name, None)
        scale = float(np.std(values))
        return TaskSpec(name, kind, None, float(np.mean(values)), scale if scale > 0 else 1.0)
    classes = _unique_classes(labels, name)
    if len(classes) < 2:
        raise TaskSpecificationError(
            f"Outcome {name!r} has only one class ({classes[0]!r}) among its "
            f"{labels.size} labels; a classifier needs at least two classes, "
            "one class is not learnable."
        )
    if kind == BINARY and len(classes) > 2:
        raise TaskSpecificationError(
            f"Outcome {name!r} is declared binary but has {len(classes)} classes "
            f"{list(classes)}; declare it 'multiclass'."
        )
    return TaskSpec(name, kind, tuple(classes))


def _unique_classes(labels: np.ndarray, name: str) -> np.ndarray:
    if labels.dtype.kind == "f" and not np.all(np.isfinite(labels)):
        raise InputDataError(f"Outcome {name!r} has infinite labels; expected class labels.")
    try:
        return np.unique(labels)
    except TypeError as error:
        raise InputDataError(
            f"Outcome {name!r} mixes label types ({sorted({type(v).__name__ for v in labels})}) "
            "that cannot be ordered; use one type for its class labels."
        ) from error


def _regression_values(labels: np.ndarray, name: str, index: pd.Index | None) -> np.ndarray:
    if labels.dtype.kind not in "fiu":
        raise InputDataError(
            f"Outcome {name!r} is a regression outcome but its labels have dtype "
            f"{labels.dtype}; expected numbers."
        )
    values = labels.astype(np.float64)
    infinite = np.isinf(values)
    if infinite.any():
        where = describe_rows(index, infinite) if index is not None else f"{infinite.sum()} rows"
        raise InputDataError(f"Outcome {name!r} holds infinite values in {where}.")
    return values


def _class_indices(values: np.ndarray, spec: TaskSpec, index: pd.Index) -> np.ndarray:
    classes = np.asarray(spec.classes)
    try:
        positions = np.clip(np.searchsorted(classes, values), 0, len(classes) - 1)
        known = classes[positions] == values
    except TypeError:
        known = np.array([value in spec.classes for value in values], dtype=bool)
        positions = np.array([spec.classes.index(v) if k else 0 for v, k in zip(values, known)])
    if not np.all(known):
        raise InputDataError(
            f"Outcome {spec.name!r} has labels outside its training classes "
            f"{list(spec.classes)} in {describe_rows(index, ~known)}."
        )
    return positions.astype(np.int64)

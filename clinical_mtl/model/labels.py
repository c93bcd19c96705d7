"""Label tables: aligned with the features, checked, and encoded as training targets."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ..exceptions import InputDataError, TaskSpecificationError
from .features import describe_rows
from .survival import SURVIVAL, encode_survival, survival_labels
from .tasks import TaskSpec, labelled_values, regression_values


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
    targets : list of ndarray
        Per outcome: int64 class indices or float32 standardised values of
        shape (n_samples,), or for a survival outcome int64 (intervals
        survived, event, rank of the time) of shape (n_samples, 3) (see
        :func:`clinical_mtl.model.survival.encode_survival`). Unlabelled rows
        hold 0 so that no NaN can reach a loss.
    labelled : ndarray of shape (n_samples, n_outcomes), dtype bool
        Whether each patient has a label for each outcome.

    Raises
    ------
    InputDataError
        If a label is not one of the outcome's classes, or not a finite number.
    """
    targets, labelled = [], np.zeros((len(Y), len(specs)), dtype=bool)
    for t, spec in enumerate(specs):
        if spec.kind == SURVIVAL:
            time, event, labelled[:, t] = survival_labels(Y, spec.name)
            targets.append(encode_survival(time, event, spec.cut_points))
            continue
        column = Y[spec.name]
        present = column.notna().to_numpy()
        labelled[:, t] = present
        values = labelled_values(column, spec.name)
        if spec.is_classification:
            encoded = np.zeros(len(Y), dtype=np.int64)
            encoded[present] = _class_indices(values, spec, column.index[present])
        else:
            encoded = np.zeros(len(Y), dtype=np.float32)
            encoded[present] = (regression_values(values, spec.name, column.index[present])
                                - spec.target_mean) / spec.target_scale
        targets.append(encoded)
    return targets, labelled


def labelled_targets(Y: pd.DataFrame, spec: TaskSpec) -> tuple[np.ndarray, np.ndarray]:
    """Which rows are labelled for ``spec``, and their labels for metrics.

    Returns
    -------
    labelled : ndarray of bool, shape (n_samples,)
    y_true : ndarray
        On labelled rows: class indices (classification), values in the
        outcome's units (regression), or follow-up time and event (1 or 0)
        of shape (n_labelled, 2) (survival).
    """
    if spec.kind == SURVIVAL:
        time, event, present = survival_labels(Y, spec.name)
        return present, np.column_stack([time[present], event[present]])
    targets, labelled = encode_targets(Y[[spec.name]], [spec])
    present = labelled[:, 0]
    if spec.is_classification:
        return present, targets[0][present]
    return present, Y[spec.name].to_numpy(dtype=np.float64, na_value=np.nan)[present]


def class_counts(Y: pd.DataFrame, spec: TaskSpec) -> dict:
    """Number of labelled patients per class of a classification outcome."""
    values = labelled_values(Y[spec.name], spec.name)
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
    columns = [column for spec in specs for column in spec.label_columns]
    named = isinstance(Y, pd.DataFrame) or (isinstance(Y, pd.Series) and isinstance(Y.name, str))
    if not named:
        if labels.shape[1] != len(columns):
            raise InputDataError(
                f"Y has {labels.shape[1]} unnamed columns but the model's outcomes {names} have "
                f"{len(columns)} label columns {columns}; pass a DataFrame with outcome names."
            )
        return labels.set_axis(columns, axis=1)
    unknown = [column for column in labels.columns if column not in columns]
    if unknown:
        raise InputDataError(
            f"Y has columns {unknown} that are not outcomes of this model; its outcomes are {names}"
            + (f" (label columns {columns})." if columns != names else ".")
        )
    for spec in specs:
        given = [column for column in spec.label_columns if column in labels.columns]
        if given and len(given) < len(spec.label_columns):
            raise InputDataError(
                f"Y labels survival outcome {spec.name!r} with {given} only; give both "
                f"{list(spec.label_columns)}."
            )
    return labels


def labelled_outcomes(labels: pd.DataFrame, specs: Sequence[TaskSpec]) -> list[TaskSpec]:
    """The outcomes whose label columns are all in ``labels``."""
    return [spec for spec in specs if all(column in labels.columns for column in spec.label_columns)]


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

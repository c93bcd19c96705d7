"""What an outcome is: its name, kind, classes and target scaling.

An outcome (a task) is one column of the label table. Its kind is

``"binary"``
    Two classes, one logit.
``"multiclass"``
    Two or more classes, one logit per class (softmax).
``"regression"``
    A real value, standardised inside the model and returned in its units
    (a continuous outcome: a score, a laboratory value).
``"survival"``
    A time to an event with censoring, labelled by two columns
    ``<name>_time`` and ``<name>_event``; one logit per interval of follow-up
    (see :mod:`clinical_mtl.model.survival`).

When kinds are not given they are inferred from the labels: a pair of columns
``<name>_time`` and ``<name>_event`` is a survival outcome; booleans, text
and categories are classification, as are integer-valued numbers with at
most ``MAX_INFERRED_CLASSES`` distinct values; other numbers are regression.
Missing labels (NaN, None, pd.NA) mean "no label for this patient".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Real

import numpy as np
import pandas as pd
from pandas.api import types as ptypes
from scipy.special import expit

from ..exceptions import InputDataError, TaskSpecificationError
from .features import describe_rows
from .survival import (
    DEFAULT_INTERVALS,
    SURVIVAL,
    check_horizons,
    decode_survival,
    default_horizons,
    fit_cut_points,
    label_columns,
    survival_labels,
    survival_outcomes,
)

BINARY = "binary"
MULTICLASS = "multiclass"
REGRESSION = "regression"
TASK_KINDS = (BINARY, MULTICLASS, REGRESSION, SURVIVAL)
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
    kind : {"binary", "multiclass", "regression", "survival"}
        Task kind.
    classes : tuple or None
        Sorted class labels of a classification task, None otherwise.
    target_mean, target_scale : float
        Standardisation of a regression target (0 and 1 otherwise).
    cut_points : tuple of float or None
        Ends of the follow-up intervals of a survival outcome, in its time
        unit (see :mod:`clinical_mtl.model.survival`); None otherwise.
    horizons : tuple of float or None
        Times by which a survival outcome's event probabilities are reported.
    """

    name: str
    kind: str
    classes: tuple | None = None
    target_mean: float = 0.0
    target_scale: float = 1.0
    cut_points: tuple | None = None
    horizons: tuple | None = None

    @property
    def is_classification(self) -> bool:
        """Whether the task predicts classes."""
        return self.kind in (BINARY, MULTICLASS)

    @property
    def label_columns(self) -> tuple[str, ...]:
        """The columns of the label table that label this outcome."""
        return label_columns(self.name) if self.kind == SURVIVAL else (self.name,)

    @property
    def n_outputs(self) -> int:
        """Width of the network head: 1 logit, one per class, 1 value, or one per interval."""
        if self.kind == SURVIVAL:
            return len(self.cut_points)
        return len(self.classes) if self.kind == MULTICLASS else 1


def infer_tasks(
    Y: pd.DataFrame,
    tasks: Mapping[str, str] | None = None,
    *,
    survival_intervals: int = DEFAULT_INTERVALS,
    survival_horizons=None,
) -> list[TaskSpec]:
    """Work out every outcome's kind, classes and target scaling from its labels.

    Parameters
    ----------
    Y : DataFrame
        Label table, one column per outcome (two, ``<name>_time`` and
        ``<name>_event``, per survival outcome), NaN where unlabelled.
    tasks : mapping of str to str, default=None
        Outcome -> kind. When given, its keys must be exactly the outcomes of ``Y``.
    survival_intervals : int, default=4
        Follow-up intervals of every survival outcome (at most).
    survival_horizons : sequence of float, dict of str to sequence, or None
        Horizons of the event probabilities, for every survival outcome or
        per outcome; None takes the quartiles of each outcome's training
        event times (two significant digits).

    Returns
    -------
    list of TaskSpec
        In the column order of ``Y`` (a survival outcome where its time column is).

    Raises
    ------
    TaskSpecificationError
        If ``tasks`` and ``Y`` disagree on the outcomes, or an outcome has no
        label, a single class, no event, or labels that do not suit its kind.
    """
    outcomes = outcome_columns(Y.columns, tasks)
    specs = []
    for name, columns in outcomes.items():
        kind = tasks[name] if tasks is not None else None
        if len(columns) == 2:
            specs.append(_survival_spec(Y, name, survival_intervals, _horizons_of(survival_horizons, name)))
            continue
        labels = labelled_values(Y[name], name)
        if labels.size == 0:
            raise TaskSpecificationError(
                f"Outcome {name!r} has no label at all; drop the column or provide labels."
            )
        kind, classes = (kind, None) if kind is not None else _infer_kind(labels, name)
        specs.append(_make_spec(name, kind, labels, classes))
    unknown = sorted(set(survival_horizons) - {s.name for s in specs if s.kind == SURVIVAL}) if isinstance(
        survival_horizons, Mapping) else []
    if unknown:
        raise TaskSpecificationError(
            f"survival_horizons names {unknown}, which are not survival outcomes of Y."
        )
    return specs


def outcome_columns(columns: pd.Index, tasks: Mapping[str, str] | None = None) -> dict[str, tuple[str, ...]]:
    """Outcome -> its label columns, in the order of ``columns``.

    A survival outcome ``<name>`` has the two columns ``<name>_time`` and
    ``<name>_event``: declared in ``tasks``, or (without ``tasks``) inferred
    wherever both columns are present. Every other column is one outcome.

    Raises
    ------
    TaskSpecificationError
        If ``tasks`` and the columns disagree.
    """
    columns = [str(column) for column in columns]
    if tasks is not None:
        _check_task_mapping(tasks, columns)
        survival = [name for name, kind in tasks.items() if kind == SURVIVAL]
    else:
        survival = survival_outcomes(columns)
    paired = {column: name for name in survival for column in label_columns(name)}
    outcomes: dict[str, tuple[str, ...]] = {}
    for column in columns:
        name = paired.get(column, column)
        outcomes.setdefault(name, label_columns(name) if column in paired else (column,))
    return outcomes


def _horizons_of(survival_horizons, name: str):
    if isinstance(survival_horizons, Mapping):
        return survival_horizons.get(name)
    return survival_horizons


def _survival_spec(Y: pd.DataFrame, name: str, n_intervals: int, horizons) -> TaskSpec:
    time, event, labelled = survival_labels(Y, name)
    if not labelled.any():
        raise TaskSpecificationError(
            f"Outcome {name!r} has no label at all; drop its columns or provide labels."
        )
    time, event = time[labelled], event[labelled]
    cuts = fit_cut_points(time, event, name, n_intervals)
    horizons = default_horizons(time, event) if horizons is None else check_horizons(horizons, name)
    return TaskSpec(name, SURVIVAL, cut_points=cuts, horizons=horizons)


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
        members' probabilities; values of shape (n_samples,) in the
        outcome's units, the mean of the members' values; or survival
        probabilities at the cut points, shape (n_samples, J), the mean of the
        members' survival curves.
    """
    if spec.kind == BINARY:
        positive = expit(raw[..., 0]).mean(axis=0, dtype=np.float64)
        return np.column_stack([1.0 - positive, positive])
    if spec.kind == SURVIVAL:
        return decode_survival(raw)
    if spec.kind == MULTICLASS:
        exponentials = np.exp(raw - raw.max(axis=-1, keepdims=True))
        exponentials /= exponentials.sum(axis=-1, keepdims=True)
        probabilities = exponentials.mean(axis=0, dtype=np.float64)
        return probabilities / probabilities.sum(axis=1, keepdims=True)  # rows sum to 1 in float64
    return raw[..., 0].mean(axis=0, dtype=np.float64) * spec.target_scale + spec.target_mean


def _check_task_mapping(tasks: Mapping[str, str], columns: list[str]) -> None:
    unknown = {name: kind for name, kind in tasks.items() if kind not in TASK_KINDS}
    if unknown:
        raise TaskSpecificationError(
            f"tasks gives unknown kinds {unknown}; each must be one of {list(TASK_KINDS)}."
        )
    expected = {column: name for name, kind in tasks.items()
                for column in (label_columns(name) if kind == SURVIVAL else (name,))}
    missing = [column for column in expected if column not in columns]
    extra = [column for column in columns if column not in expected]
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
            + ". Pass one Y column per outcome of `tasks` (two, <name>_time and <name>_event, per survival "
            "outcome), or tasks=None to infer them."
        )


def labelled_values(column: pd.Series, name: str) -> np.ndarray:
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


def _infer_kind(labels: np.ndarray, name: str) -> tuple[str, np.ndarray | None]:
    """The kind of an undeclared outcome, and its classes where it is a classification (found once)."""
    if labels.dtype.kind == "f" and not (np.all(np.isfinite(labels)) and np.all(np.mod(labels, 1) == 0)):
        return REGRESSION, None
    classes = _unique_classes(labels, name)
    if labels.dtype.kind in "fiu" and len(classes) > MAX_INFERRED_CLASSES:
        return REGRESSION, None
    return (BINARY if len(classes) <= 2 else MULTICLASS), classes


def _make_spec(name: str, kind: str, labels: np.ndarray, classes: np.ndarray | None = None) -> TaskSpec:
    if kind == REGRESSION:
        values = regression_values(labels, name, None)
        scale = float(np.std(values))
        return TaskSpec(name, kind, None, float(np.mean(values)), scale if scale > 0 else 1.0)
    classes = _unique_classes(labels, name) if classes is None else classes
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
        # Counted by hashing, sorting only the distinct ones: np.unique sorted 100,000 labels (2% of a fit).
        return np.sort(pd.unique(labels))
    except TypeError as error:
        raise InputDataError(
            f"Outcome {name!r} mixes label types ({sorted({type(v).__name__ for v in labels})}) "
            "that cannot be ordered; use one type for its class labels."
        ) from error


def regression_values(labels: np.ndarray, name: str, index: pd.Index | None) -> np.ndarray:
    """Finite float labels of a regression outcome; an ``InputDataError`` names the bad rows otherwise."""
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



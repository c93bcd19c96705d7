"""Kinds of clinical feature columns and the checks that make a table safe to model.

A feature column is one of three kinds:

``"numeric"``
    Measurements (laboratory values, age, counts). Any integer or float
    dtype, nullable ones included.
``"boolean"``
    Present / absent findings. ``bool`` or pandas ``"boolean"`` dtype.
``"categorical"``
    Labels without order (sex, treatment arm). pandas ``category`` or
    string dtype, or an object column holding text. Categories are matched
    by their text, so ``1`` and ``"1"`` are the same category.

Error messages name the column and the rows at fault, never the values
they hold: feature tables are patient records.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd
from pandas.api import types as ptypes
from scipy import sparse

from .exceptions import InputDataError

NUMERIC = "numeric"
BOOLEAN = "boolean"
CATEGORICAL = "categorical"
FEATURE_KINDS = (NUMERIC, BOOLEAN, CATEGORICAL)

# pandas.api.types.infer_dtype results that hold only numbers or only text.
_NUMBER_INFERENCES = {"integer", "floating", "mixed-integer-float", "decimal", "empty"}
_TEXT_INFERENCES = {"string", "empty"}


def as_frame(X: object) -> pd.DataFrame:
    """Return ``X`` as a DataFrame; arrays get the columns ``x0 ... x{p-1}``.

    Parameters
    ----------
    X : DataFrame or array-like of shape (n_samples, n_features)
        A feature table.

    Returns
    -------
    DataFrame
        ``X`` itself when it is a DataFrame, otherwise a new frame on its values.
    """
    if isinstance(X, pd.DataFrame):
        return X
    if sparse.issparse(X):
        raise TypeError(
            "Sparse input is not supported: clinical_mtl expects a dense feature "
            "table (a pandas DataFrame or a 2-d array); convert it with X.toarray()."
        )
    array = np.asarray(X)
    if array.ndim != 2:
        raise InputDataError(
            f"Expected a 2-d feature table, got an array of shape {array.shape}. "
            "Reshape your data with X.reshape(-1, 1) if it holds one feature or "
            "X.reshape(1, -1) if it holds one patient."
        )
    columns = [f"x{i}" for i in range(array.shape[1])]
    if array.dtype == object:
        return pd.DataFrame(array, columns=columns).infer_objects()
    return pd.DataFrame(array, columns=columns, copy=False)


def infer_feature_kinds(X: pd.DataFrame) -> dict[str, str]:
    """Infer the kind of every column of a training table.

    Parameters
    ----------
    X : DataFrame
        Training features.

    Returns
    -------
    dict of str to str
        Column name -> ``"numeric"``, ``"boolean"`` or ``"categorical"``.

    Raises
    ------
    InputDataError
        Listing every column that cannot be read as numbers, booleans or
        categories (mixed text and numbers, dates, complex numbers...).
    """
    kinds, problems = {}, []
    for name in X.columns:
        try:
            kinds[name] = _infer_kind(X[name], name)
        except InputDataError as error:
            problems.append(str(error))
    if problems:
        raise InputDataError("\n".join(problems))
    empty = [name for name in X.columns if len(X) and not X[name].notna().any()]
    if empty:
        warnings.warn(
            f"Columns {empty} have no observed value in the training data; they are "
            "kept so that the model accepts them, but they cannot inform it.",
            UserWarning,
            stacklevel=3,
        )
    return kinds


def prepare_features(X: pd.DataFrame, kinds: Mapping[str, str]) -> dict[str, np.ndarray]:
    """Check ``X`` against the feature kinds and return its columns ready to preprocess.

    Numeric and boolean columns come back as float64 arrays with NaN for
    missing; categorical columns as ``pandas.Categorical`` with text
    categories (missing values have code -1). ``X`` is not modified.

    Parameters
    ----------
    X : DataFrame
        Features holding at least the columns of ``kinds``.
    kinds : mapping of str to str
        Column name -> feature kind, as learned in fit.

    Returns
    -------
    dict of str to ndarray or pandas.Categorical
        The columns of ``kinds``, in that order.

    Raises
    ------
    InputDataError
        Listing every column whose values do not fit its kind, or that holds
        infinite values, with the rows concerned.
    """
    columns, problems = {}, []
    for name, kind in kinds.items():
        try:
            columns[name] = _CONVERTERS[kind](X[name], name)
        except InputDataError as error:
            problems.append(str(error))
    if problems:
        raise InputDataError("\n".join(problems))
    return columns


def describe_rows(index: pd.Index, where: np.ndarray, limit: int = 5) -> str:
    """Name the rows of ``index`` where ``where`` is true, at most ``limit`` of them."""
    labels = index[np.flatnonzero(where)]
    shown = ", ".join(repr(label) for label in labels[:limit])
    more = f" and {len(labels) - limit} more" if len(labels) > limit else ""
    noun = "row" if len(labels) == 1 else "rows"
    return f"{noun} {shown}{more}"


def _infer_kind(column: pd.Series, name: str) -> str:
    dtype = column.dtype
    if ptypes.is_bool_dtype(dtype):
        return BOOLEAN
    if isinstance(dtype, pd.CategoricalDtype):
        return CATEGORICAL
    if ptypes.is_complex_dtype(dtype):
        raise InputDataError(f"Column {name!r}: Complex data not supported.")
    if ptypes.is_numeric_dtype(dtype):
        return NUMERIC
    if ptypes.is_string_dtype(dtype) and dtype != object:
        return CATEGORICAL
    if dtype == object:
        inferred = ptypes.infer_dtype(column, skipna=True)
        if inferred in _TEXT_INFERENCES:
            return CATEGORICAL
        if inferred == "boolean":
            return BOOLEAN
        if inferred in _NUMBER_INFERENCES:
            return NUMERIC
        raise InputDataError(_mixed_object_message(column, name))
    raise InputDataError(
        f"Column {name!r} has dtype {dtype}; expected numbers, booleans or "
        "categories. Convert it (for example dates into ages or durations) first."
    )


def _mixed_object_message(column: pd.Series, name: str) -> str:
    present = column.notna().to_numpy()
    types = column[present].map(lambda value: type(value).__name__)
    counts = types.value_counts()
    rare = types.to_numpy() == counts.index[-1]
    found = ", ".join(f"{count} {kind}" for kind, count in counts.items())
    return (
        f"Column {name!r} cannot be read as numbers or categories: it mixes value "
        f"types ({found}); the least common type is in "
        f"{describe_rows(column.index[present], rare)}. Expected only numbers, "
        "only booleans or only text in one column."
    )


def _to_numeric(column: pd.Series, name: str) -> np.ndarray:
    dtype = column.dtype
    if ptypes.is_complex_dtype(dtype):
        raise InputDataError(f"Column {name!r}: Complex data not supported.")
    if ptypes.is_bool_dtype(dtype) or ptypes.is_numeric_dtype(dtype):
        values = _float_values(column)
    elif dtype == object and ptypes.infer_dtype(column, skipna=True) in (
        _NUMBER_INFERENCES | {"boolean"}
    ):
        values = _float_values(column)
    else:
        raise InputDataError(
            f"Column {name!r} must hold numbers, but has dtype {dtype} "
            f"({ptypes.infer_dtype(column, skipna=True)} values)."
        )
    infinite = np.isinf(values)
    if infinite.any():
        raise InputDataError(
            f"Column {name!r} holds infinite values in "
            f"{describe_rows(column.index, infinite)}; expected finite numbers or "
            "NaN for missing."
        )
    return values


def _to_boolean(column: pd.Series, name: str) -> np.ndarray:
    if ptypes.is_bool_dtype(column.dtype):
        return _float_values(column)
    values = _to_numeric(column, name)
    invalid = ~(np.isnan(values) | (values == 0) | (values == 1))
    if invalid.any():
        raise InputDataError(
            f"Column {name!r} is a boolean feature: expected True/False or 0/1, "
            f"found other values in {describe_rows(column.index, invalid)}."
        )
    return values


def _to_categorical(column: pd.Series, name: str) -> pd.Categorical:
    dtype = column.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        values = column.array
        if all(isinstance(category, str) for category in dtype.categories):
            return values
        return values.rename_categories([str(category) for category in dtype.categories])
    present = column.notna().to_numpy()
    if not present.any():
        return pd.Categorical(np.full(len(column), np.nan, dtype=object))
    if ptypes.is_string_dtype(dtype) or (
        dtype == object and ptypes.infer_dtype(column, skipna=True) in _TEXT_INFERENCES
    ):
        return pd.Categorical(column.to_numpy(dtype=object, na_value=np.nan))
    raise InputDataError(
        f"Column {name!r} is a categorical feature: expected text or a pandas "
        f"category dtype, found {dtype} ({ptypes.infer_dtype(column, skipna=True)} "
        f"values) in {describe_rows(column.index, present)}."
    )


def _float_values(column: pd.Series) -> np.ndarray:
    if column.dtype == np.float64:
        return column.to_numpy()  # already NaN for missing: no copy
    return column.to_numpy(dtype=np.float64, na_value=np.nan)


_CONVERTERS: dict[str, Callable[[pd.Series, str], np.ndarray]] = {
    NUMERIC: _to_numeric,
    BOOLEAN: _to_boolean,
    CATEGORICAL: _to_categorical,
}

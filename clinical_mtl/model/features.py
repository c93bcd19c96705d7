"""Kinds of clinical feature columns, how their values are read, and the checks that make a table safe to model.

A feature column is one of three kinds. At fit, a column's kind is inferred
from its dtype (:func:`infer_feature_kinds`):

``"numeric"``
    Measurements (laboratory values, age, counts): integer or float dtypes,
    nullable ones included, or an object column holding numbers.
``"boolean"``
    Present / absent findings: ``bool`` or pandas ``"boolean"`` dtype, or an
    object column holding True / False.
``"categorical"``
    Labels without order (sex, treatment arm): pandas ``category`` or string
    dtype, or an object column holding text.

Once the kinds are known (learned at fit, or given by a cohort schema), every
value is read by one set of rules, whatever holds it (a CSV's text, a Parquet
column, a pandas object column): :func:`parse_feature`, which both the
estimator (:func:`prepare_features`) and the cohort schema
(``CohortSchema.validate``) use, so that a value either path accepts the other
accepts too, and reads the same.

Missing, for every kind
    None, NaN, ``pd.NA`` (a CSV's empty cells and NA markers are read as
    missing by the reader).
Numeric
    Numbers of any real dtype; True / False as 1 / 0; text that reads as a
    number (``"1.5"``, ``" 2 "``, ``"1e3"``). Refused: other text (``"high"``,
    ``""``, ``"nan"``), dates, complex numbers, containers. Infinite values
    are read, then refused by both paths (the schema's range rule, the
    estimator's finiteness check).
Boolean
    True / False; numbers equal to 1 or 0; the text ``"true"`` / ``"false"``
    in any case, or text that reads as the number 1 or 0 (``"1"``,
    ``"0.0"``), surrounding spaces ignored. Refused: anything else
    (``2``, ``0.5``, ``"yes"``, ``"maybe"``).
Categorical
    Text, as given; numbers as their text, a whole number without decimals,
    so that ``1``, ``1.0`` and ``"1"`` are one category (a CSV's ``"1"`` and a
    Parquet file's ``1`` agree); True / False as ``"True"`` / ``"False"``; a
    ``category`` dtype's categories by the same rules. Refused: dates,
    complex numbers, containers. (Which categories are allowed is the
    schema's rule; the estimator treats a category unseen at fit as none of
    the known ones.)

Error messages name the column and the rows at fault, never the values
they hold: feature tables are patient records.
"""

from __future__ import annotations

import decimal
import numbers
import warnings
from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pandas.api import types as ptypes
from scipy import sparse

from ..exceptions import InputDataError

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
        Listing every column with values that cannot be read as its kind
        (see :func:`parse_feature`), or that holds infinite values, with the
        rows concerned.
    """
    columns, problems = {}, []
    for name, kind in kinds.items():
        values, unreadable = parse_feature(X[name], kind)
        problem = _column_problem(X[name], name, kind, values, unreadable)
        if problem is None:
            columns[name] = values
        else:
            problems.append(problem)
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


def parse_feature(column: pd.Series, kind: str) -> tuple[np.ndarray | pd.Categorical, np.ndarray]:
    """Read every value of ``column`` as a feature of ``kind``, by the rules of the module docstring.

    The one reading of feature values: the estimator (:func:`prepare_features`)
    and the cohort schema (``CohortSchema.validate``) both call it, so that a
    value is accepted, refused and read alike whichever path it takes.

    Parameters
    ----------
    column : Series
        The values, of any dtype.
    kind : str
        ``"numeric"``, ``"boolean"`` or ``"categorical"``.

    Returns
    -------
    values : ndarray or pandas.Categorical
        Numbers and booleans as float64 (booleans as 1.0 / 0.0) with NaN for
        missing; categories as a ``pandas.Categorical`` of text (missing:
        code -1). Values that cannot be read are missing here. A float64
        column comes back without a copy; infinite numbers are kept (the
        callers refuse them, each with its own message).
    unreadable : ndarray of bool
        Where a value is present but cannot be read as ``kind``.

    Examples
    --------
    >>> values, unreadable = parse_feature(pd.Series(["1.5", " 2 ", None, "high"]), NUMERIC)
    >>> values.tolist()[:3], unreadable.tolist()
    ([1.5, 2.0, nan], [False, False, False, True])
    >>> parse_feature(pd.Series(["TRUE", 0, 1.0]), BOOLEAN)[0].tolist()
    [1.0, 0.0, 1.0]
    >>> list(parse_feature(pd.Series([1.0, "1", 2]), CATEGORICAL)[0])
    ['1', '1', '2']
    """
    return _PARSERS[kind](column)


def _unreadable_message(name: str, kind: str) -> str:
    expected = {
        NUMERIC: "must hold numbers (or text that reads as a number)",
        BOOLEAN: "is a boolean feature: expected True/False or 0/1 (or their text)",
        CATEGORICAL: "is a categorical feature: expected text, numbers or a pandas category dtype",
    }[kind]
    return f"Column {name!r} {expected}, found other values in"


def _column_problem(column: pd.Series, name: str, kind: str, values, unreadable: np.ndarray) -> str | None:
    """What :func:`prepare_features` refuses in one column (None when it is fine)."""
    if unreadable.any():
        return f"{_unreadable_message(name, kind)} {describe_rows(column.index, unreadable)}."
    if kind == NUMERIC:
        infinite = np.isinf(values)
        if infinite.any():
            return (f"Column {name!r} holds infinite values in {describe_rows(column.index, infinite)}; "
                    "expected finite numbers or NaN for missing.")
    return None


def _no_problem(n: int) -> np.ndarray:
    return np.zeros(n, dtype=bool)


def _is_real_dtype(dtype) -> bool:
    """Booleans and real numbers (nullable dtypes included): read as floats at C speed."""
    return ptypes.is_bool_dtype(dtype) or (ptypes.is_numeric_dtype(dtype) and not ptypes.is_complex_dtype(dtype))


def _as_objects(column: pd.Series) -> pd.Series:
    """The values as Python objects, None for missing."""
    return column.astype(object).where(column.notna(), None)


_ARROW_NUMBER_SOURCES = (pa.types.is_string, pa.types.is_large_string, pa.types.is_boolean, pa.types.is_integer,
                         pa.types.is_floating, pa.types.is_decimal, pa.types.is_null)


def _arrow_numbers(objects: pd.Series) -> np.ndarray | None:
    """Every value as a float64 by one Arrow cast, or None if one of them is not a plain number or
    number text (the caller then reads them one by one)."""
    try:
        array = pa.array(objects, from_pandas=True)
        if not any(is_type(array.type) for is_type in _ARROW_NUMBER_SOURCES):
            return None
        return pc.cast(array, pa.float64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        return None


def _number_or_text(value: object) -> object:
    """A value as ``pandas.to_numeric`` should see it: numbers as floats, text stripped, others not numbers."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (bool, np.bool_, numbers.Real, decimal.Decimal)):
        try:
            return float(value)
        except (OverflowError, ValueError):
            return _NOT_A_NUMBER
    return _NOT_A_NUMBER


_NOT_A_NUMBER = "not a number"


def _parse_numbers(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    dtype = column.dtype
    if dtype == np.float64:
        return column.to_numpy(), _no_problem(len(column))  # already NaN for missing: no copy
    if _is_real_dtype(dtype):
        return column.to_numpy(dtype=np.float64, na_value=np.nan), _no_problem(len(column))
    objects = _as_objects(column)
    values = _arrow_numbers(objects)  # the common case: text of numbers (a CSV), at C speed
    if values is None:
        values = pd.to_numeric(objects.map(_number_or_text), errors="coerce").to_numpy(dtype=np.float64)
    # A present value that reads as NaN is no number: text that is not one, or the text "nan".
    return values, column.notna().to_numpy() & np.isnan(values)


_BOOLEAN_WORDS = {"true": 1.0, "false": 0.0}


def _boolean_word(value: object) -> float:
    return _BOOLEAN_WORDS.get(value.strip().lower(), np.nan) if isinstance(value, str) else np.nan


def _parse_booleans(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    dtype = column.dtype
    if ptypes.is_bool_dtype(dtype):
        return column.to_numpy(dtype=np.float64, na_value=np.nan), _no_problem(len(column))
    if _is_real_dtype(dtype):
        values = column.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        objects = _as_objects(column)
        words = objects.map(_boolean_word).to_numpy(dtype=np.float64)
        is_word = ~np.isnan(words)
        values = words if is_word.all() else np.where(is_word, words, _parse_numbers(objects.where(~is_word))[0])
    readable = (values == 0) | (values == 1)
    return np.where(readable, values, np.nan), column.notna().to_numpy() & ~readable


def _category_text(value: object) -> object:
    """A category's text: text as given, a whole number without decimals (1.0 reads "1"), other
    numbers and booleans as their text; ``_NOT_A_CATEGORY`` for anything else (dates, containers)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, decimal.Decimal):
        value = float(value)
    if isinstance(value, numbers.Real):
        if isinstance(value, numbers.Integral):
            return str(int(value))
        return str(int(value)) if np.isfinite(value) and float(value).is_integer() else str(value)
    return _NOT_A_CATEGORY


_NOT_A_CATEGORY = object()


def _parse_categories(column: pd.Series) -> tuple[pd.Categorical, np.ndarray]:
    dtype = column.dtype
    if isinstance(dtype, pd.CategoricalDtype) and all(isinstance(c, str) for c in dtype.categories):
        return column.array, _no_problem(len(column))  # already text: no copy
    present = column.notna().to_numpy()
    if not present.any():  # (an all-missing column is read as floats)
        return pd.Categorical(np.full(len(column), np.nan, dtype=object)), _no_problem(len(column))
    if (dtype != object and ptypes.is_string_dtype(dtype)) or (
        dtype == object and ptypes.infer_dtype(column, skipna=True) in _TEXT_INFERENCES
    ):
        return pd.Categorical(column.to_numpy(dtype=object, na_value=np.nan)), _no_problem(len(column))
    texts = _as_objects(column).map(_category_text).to_numpy(dtype=object)
    unreadable = np.fromiter((text is _NOT_A_CATEGORY for text in texts), dtype=bool, count=len(texts))
    texts[unreadable] = None
    return pd.Categorical(texts), unreadable


_PARSERS: dict[str, Callable[[pd.Series], tuple]] = {
    NUMERIC: _parse_numbers,
    BOOLEAN: _parse_booleans,
    CATEGORICAL: _parse_categories,
}

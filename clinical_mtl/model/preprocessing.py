"""The transformer from raw clinical columns to the network's input matrix.

Right-skewed positive measurements (most laboratory values) are first given a
log-like transform, ``asinh(x / s)``: about ``log(2 x / s)`` over the training
range, but defined, monotone and finite for every real ``x`` (a 0 lymph-node
count at predict time included). Numeric and boolean features are then imputed
with their training median, get a missing-value indicator when they had missing
values in training, and are standardised (the indicator too). Categorical features are
one-hot encoded, with "missing" as a category of its own when it occurred in
training; a category never seen in training encodes as all zeros. Every learned
quantity comes from ``fit``.

The fitted state is plain data (numbers and strings, see ``to_dict``), so a
model can be stored and loaded without pickles, and ``transform`` is a few
vectorised numpy operations. ``feature_groups_`` maps every source column to the
output columns it produced, which is how explanations are carried back to
clinical variables.

No stored number is one patient's value: the imputation medians and the scales
``s`` are rounded to ``STORED_DIGITS`` (3) significant digits in the column's
units (a median of an odd number of values, or a percentile, is one patient's
exact value). Every standardised input must lie within ``MAX_ABS_INPUT``
(1e15) of 0, which keeps the float32 arithmetic of the network finite; a value
further out (a unit error such as albumin 1e300) is an error naming the column
and the rows.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from ..exceptions import InputDataError
from .features import (
    CATEGORICAL,
    NUMERIC,
    describe_rows,
    infer_feature_kinds,
    prepare_features,
)

SKEWNESS_THRESHOLD = 1.0
MISSING_CATEGORY = "<missing>"
STORED_DIGITS = 3
"""Significant digits of the medians, scales and label percentiles a model stores."""
MAX_ABS_INPUT = 1e15
"""Largest absolute standardised value the network is given (float32 reaches 3.4e38)."""
LOG_SCALE_PERCENTILE = 5
"""Percentile of a column's non-zero absolute training values that sets ``s`` in ``asinh(x / s)``."""
_SCHEMA_MARGIN = 1 - 1e-6  # schema bounds a little inside MAX_ABS_INPUT: float rounding never lets one through


def round_significant(values, digits: int = STORED_DIGITS):
    """Round to ``digits`` significant digits (a float, or an ndarray for an array).

    Examples
    --------
    >>> round_significant(0.012345), round_significant([1234.5, 0.0]).tolist()
    (0.0123, [1230.0, 0.0])
    """
    rounded = np.asarray([float(f"{value:.{digits - 1}e}") for value in np.ravel(values)])
    return float(rounded[0]) if np.ndim(values) == 0 else rounded.reshape(np.shape(values))


@dataclass(frozen=True)
class NumericEncoding:
    """How one numeric or boolean column is encoded: ``(t(x, imputed) - mean) / scale``,
    followed by a standardised missing indicator when ``indicator_scale`` is set.

    ``t`` is the identity without ``log``; ``asinh(x / log_scale)`` with ``log``
    and a ``log_scale``; the natural logarithm with ``log`` and no ``log_scale``
    (models stored before the asinh transform; such a column must be positive).
    ``median`` is the imputed value after ``t``: ``to_units(median)`` in units.
    """

    name: str
    log: bool
    median: float
    mean: float
    scale: float
    indicator_mean: float | None = None
    indicator_scale: float | None = None
    log_scale: float | None = None

    @property
    def width(self) -> int:
        return 1 if self.indicator_scale is None else 2

    @property
    def positive_only(self) -> bool:
        """Whether the column takes only positive values (the plain log of old models)."""
        return self.log and self.log_scale is None

    @property
    def output_name(self) -> str:
        """Name of the scaled value's output column: ``bili``, ``asinh(bili/0.42)`` or ``log(bili)``."""
        if not self.log:
            return str(self.name)
        return f"log({self.name})" if self.log_scale is None else f"asinh({self.name}/{self.log_scale:g})"

    def transformed(self, values: np.ndarray) -> np.ndarray:
        """``t(values)``: values in units (float64, NaN for missing) before standardising."""
        if not self.log:
            return values
        if self.log_scale is None:
            return np.log(values)
        with np.errstate(over="ignore"):  # |x / s| beyond float64: inf, caught as unrepresentable
            return np.arcsinh(values / self.log_scale)

    def to_units(self, value):
        """The inverse of ``transformed``: a transformed value (``median``, say) in the column's units."""
        if not self.log:
            return value
        with np.errstate(over="ignore"):
            return np.exp(value) if self.log_scale is None else self.log_scale * np.sinh(value)

    def representable_range(self) -> tuple[float | None, float | None]:
        """Lowest and highest values in units whose standardised value is within
        ``MAX_ABS_INPUT`` (a little inside it), None where any finite value is."""
        reach = _SCHEMA_MARGIN * MAX_ABS_INPUT * self.scale
        low, high = (float(self.to_units(end)) for end in (self.mean - reach, self.mean + reach))
        if self.log and self.log_scale is not None and self.log_scale < 1:
            limit = _SCHEMA_MARGIN * np.finfo(np.float64).max * self.log_scale  # x / s must stay finite
            low, high = max(low, -limit), min(high, limit)
        if self.positive_only:
            low = None  # "above 0" is the rule of a log column
        return tuple(bound if bound is not None and np.isfinite(bound) else None for bound in (low, high))


@dataclass(frozen=True)
class CategoricalEncoding:
    """How one categorical column is one-hot encoded: one column per training
    category, plus one for "missing" when it occurred in training."""

    name: str
    categories: tuple[str, ...]
    missing_column: bool

    @property
    def width(self) -> int:
        return len(self.categories) + int(self.missing_column)


class ClinicalPreprocessor(TransformerMixin, BaseEstimator):
    """Log-like transform, impute, flag, scale and one-hot encode a raw clinical table.

    Parameters
    ----------
    log_transform : "auto", list of str or None, default="auto"
        Numeric columns to replace by ``asinh(x / s)`` before scaling, where
        ``s`` is the ``LOG_SCALE_PERCENTILE`` (5th) percentile of the column's
        non-zero absolute training values, rounded to 3 significant digits
        (1 for a column without one). Over the training range this is
        ``log(x) + log(2 / s)`` give or take a few percent (exactly so for
        ``x >> s``), so that after standardising it acts like the natural
        logarithm, yet it is monotone and finite on the whole real line: a 0
        or a negative value at predict time is a valid input, never an error.
        "auto" picks every numeric column whose training values are all
        positive, take more than two distinct values and have a sample
        skewness above ``SKEWNESS_THRESHOLD`` (1.0): the right-skewed
        laboratory values whose effects are closer to multiplicative. A list
        gets the same transform, whatever the sign of its columns' values.
        None transforms nothing. (A model stored before this transform keeps
        its plain logarithm, and its positive-only columns.)

    Attributes
    ----------
    feature_kinds_ : dict of str to str
        Source column -> ``"numeric"``, ``"boolean"`` or ``"categorical"``.
    encodings_ : list of NumericEncoding or CategoricalEncoding
        The learned encoding of every source column, in column order.
    log_columns_ : list of str
        Columns given the log-like transform (output name ``asinh(<column>/<s>)``).
    feature_groups_ : dict of str to ndarray of int
        Source column -> indices of the output columns derived from it (its
        scaled value and missing indicator, or its one-hot columns).
    n_features_out_ : int
        Width of the transformed matrix.

    Examples
    --------
    >>> import pandas as pd
    >>> X = pd.DataFrame({"bili": [1.2, None, 3.0], "sex": ["f", "m", None]})
    >>> pre = ClinicalPreprocessor(log_transform=["bili"]).fit(X)
    >>> pre.get_feature_names_out().tolist()
    ['asinh(bili/1.29)', 'bili_missing', 'sex=f', 'sex=m', 'sex=<missing>']
    >>> {name: idx.tolist() for name, idx in pre.feature_groups_.items()}
    {'bili': [0, 1], 'sex': [2, 3, 4]}
    """

    def __init__(self, log_transform="auto"):
        self.log_transform = log_transform

    def fit(self, X: pd.DataFrame, y: object = None) -> ClinicalPreprocessor:
        """Learn feature kinds, log-like columns, imputation values, scales and categories.

        Parameters
        ----------
        X : DataFrame of shape (n_samples, n_features)
            Raw training features.
        y : None
            Ignored.

        Returns
        -------
        self : ClinicalPreprocessor
        """
        kinds = infer_feature_kinds(X)
        columns = prepare_features(X, kinds)
        log_columns = self._choose_log_columns(kinds, columns)
        encodings = []
        for name, kind in kinds.items():
            if kind == CATEGORICAL:
                encodings.append(_fit_categorical(name, columns[name]))
            else:
                encodings.append(_fit_numeric(name, columns[name], name in log_columns))
        self._set_state(kinds, encodings)
        return self

    def transform(self, X: pd.DataFrame, out: np.ndarray | None = None) -> np.ndarray:
        """Transform raw features into the float32 network input.

        Parameters
        ----------
        X : DataFrame of shape (n_samples, n_features)
            Raw features with the training columns.
        out : ndarray, default=None
            A float32 array of at least ``(n_features_out_, n_samples)`` to
            write into (its transpose is returned): reusing one buffer across
            calls spares the kernel zeroing fresh memory every time.

        Returns
        -------
        ndarray of shape (n_samples, n_features_out_), dtype float32
            Column-major (each output column contiguous): it is filled column by
            column, and the network's inference reads it feature by feature.
            ``np.ascontiguousarray`` gives a row-major copy.

        Raises
        ------
        InputDataError
            Naming the column and the rows where a standardised value is beyond
            ``MAX_ABS_INPUT`` (a value the network cannot represent), or where
            a positive-only column of a model stored before the asinh transform
            holds a value <= 0.
        """
        check_is_fitted(self)
        columns = prepare_features(X, self.feature_kinds_)
        if out is None:
            out = np.empty((len(X), self.n_features_out_), dtype=np.float32, order="F")
        else:
            out = out[: self.n_features_out_, : len(X)].T
        for encoding, start in zip(self.encodings_, self._starts):
            values = columns[encoding.name]
            if isinstance(encoding, CategoricalEncoding):
                _one_hot(values, encoding, out[:, start : start + encoding.width])
                continue
            if encoding.positive_only:
                _check_positive(values, encoding.name, X.index)
            values = encoding.transformed(values)
            missing = np.isnan(values)
            standardised = np.where(missing, encoding.median, values)  # float64: exact centring
            standardised -= encoding.mean
            standardised /= encoding.scale
            _check_representable(standardised, encoding.name, X.index)
            out[:, start] = standardised
            if encoding.indicator_scale is not None:
                indicator = out[:, start + 1]
                indicator[:] = missing
                indicator -= np.float32(encoding.indicator_mean)
                indicator /= np.float32(encoding.indicator_scale)
        return out

    def get_feature_names_out(self, input_features: object = None) -> np.ndarray:
        """Names of the output columns (``asinh(bili/0.42)``, ``bili_missing``, ``sex=f`` ...).

        Parameters
        ----------
        input_features : None
            Ignored; present for scikit-learn compatibility.

        Returns
        -------
        ndarray of str
        """
        check_is_fitted(self)
        names = []
        for encoding in self.encodings_:
            if isinstance(encoding, CategoricalEncoding):
                names += [f"{encoding.name}={category}" for category in encoding.categories]
                names += [f"{encoding.name}={MISSING_CATEGORY}"] if encoding.missing_column else []
            else:
                names.append(encoding.output_name)
                names += [f"{encoding.name}_missing"] if encoding.indicator_scale is not None else []
        return np.asarray(names, dtype=object)

    def to_dict(self) -> dict:
        """The fitted state as plain JSON-ready data (see ``from_dict``)."""
        check_is_fitted(self)
        return {
            "log_transform": self.log_transform,
            "feature_kinds": dict(self.feature_kinds_),
            "encodings": [
                {"type": "categorical" if isinstance(e, CategoricalEncoding) else "numeric"} | asdict(e)
                for e in self.encodings_
            ],
        }

    @classmethod
    def from_dict(cls, state: dict) -> ClinicalPreprocessor:
        """Rebuild a fitted preprocessor from ``to_dict`` output.

        Parameters
        ----------
        state : dict
            As returned by ``to_dict`` (for example read back from JSON). A
            numeric entry without ``log_scale`` (stored before the asinh
            transform) keeps its plain logarithm when ``log`` is true.

        Returns
        -------
        ClinicalPreprocessor
        """
        encodings = []
        for entry in state["encodings"]:
            fields = {key: value for key, value in entry.items() if key != "type"}
            if entry["type"] == "categorical":
                fields["categories"] = tuple(fields["categories"])
                encodings.append(CategoricalEncoding(**fields))
            else:
                encodings.append(NumericEncoding(**fields))
        preprocessor = cls(log_transform=state["log_transform"])
        preprocessor._set_state(dict(state["feature_kinds"]), encodings)
        return preprocessor

    def _set_state(self, kinds: dict[str, str], encodings: list) -> None:
        self.feature_kinds_ = kinds
        self.encodings_ = encodings
        self.log_columns_ = [e.name for e in encodings if isinstance(e, NumericEncoding) and e.log]
        widths = [encoding.width for encoding in encodings]
        self._starts = np.concatenate([[0], np.cumsum(widths)[:-1]]).astype(int).tolist()
        self.n_features_out_ = int(sum(widths))
        self.feature_groups_ = {
            encoding.name: np.arange(start, start + encoding.width)
            for encoding, start in zip(encodings, self._starts)
        }

    def _choose_log_columns(self, kinds: dict, columns: dict) -> list[str]:
        numeric = [name for name, kind in kinds.items() if kind == NUMERIC]
        if self.log_transform is None:
            return []
        if isinstance(self.log_transform, str):
            if self.log_transform != "auto":
                raise ValueError(
                    f"log_transform must be 'auto', a list of column names or None, got {self.log_transform!r}."
                )
            return [name for name in numeric if _is_right_skewed_positive(columns[name])]
        chosen = list(self.log_transform)
        not_numeric = [name for name in chosen if name not in numeric]
        if not_numeric:
            raise ValueError(f"log_transform names {not_numeric}, which are not numeric feature columns.")
        return chosen


def _fit_numeric(name: str, values: np.ndarray, log: bool) -> NumericEncoding:
    missing = np.isnan(values)
    observed = values[~missing]
    # Medians and scales in units, rounded: neither is then one patient's exact value.
    median = round_significant(np.median(observed)) if len(observed) else 0.0
    log_scale = _log_scale(observed) if log else None
    transform = NumericEncoding(name, log, 0.0, 0.0, 1.0, log_scale=log_scale).transformed
    median = float(transform(np.float64(median)))
    imputed = np.where(missing, median, transform(values))
    indicator = {}
    if missing.any():
        rate = float(missing.mean())
        indicator = {"indicator_mean": rate, "indicator_scale": _scale(np.sqrt(rate * (1 - rate)))}
    return NumericEncoding(name, log, median, float(imputed.mean()), _scale(imputed.std()), **indicator,
                           log_scale=log_scale)


def _log_scale(observed: np.ndarray) -> float:
    """``s`` of ``asinh(x / s)``: a low percentile of the non-zero absolute values, rounded."""
    magnitudes = np.abs(observed[observed != 0])
    if not len(magnitudes):
        return 1.0
    return round_significant(np.percentile(magnitudes, LOG_SCALE_PERCENTILE)) or 1.0


def _fit_categorical(name: str, values: pd.Categorical) -> CategoricalEncoding:
    observed = values.categories[np.unique(values.codes[values.codes >= 0])]
    return CategoricalEncoding(name, tuple(sorted(observed)), bool((values.codes < 0).any()))


def _one_hot(values: pd.Categorical, encoding: CategoricalEncoding, out: np.ndarray) -> None:
    codes = values.set_categories(list(encoding.categories)).codes  # unseen categories get -1
    out[:] = 0.0
    known = codes >= 0
    out[np.flatnonzero(known), codes[known]] = 1.0
    if encoding.missing_column:
        out[values.codes < 0, len(encoding.categories)] = 1.0


def _scale(std: float) -> float:
    """A standard deviation usable as a divisor (1 for constant columns, as scikit-learn does:
    below 10 machine epsilons, the rule of its ``_handle_zeros_in_scale``)."""
    return float(std) if std >= 10 * np.finfo(np.float64).eps else 1.0


def _is_right_skewed_positive(values: np.ndarray) -> bool:
    observed = pd.Series(values[~np.isnan(values)])
    return bool(observed.nunique() > 2 and (observed > 0).all() and observed.skew() > SKEWNESS_THRESHOLD)


def _check_positive(values: np.ndarray, name: str, index: pd.Index) -> None:
    bad = values <= 0  # NaN compares False: missing values are allowed
    if bad.any():
        raise InputDataError(
            f"Column {name!r} is log-transformed by the model, so it must hold positive values "
            f"(or NaN for missing); found values <= 0 in {describe_rows(index, bad)}."
        )


def _check_representable(standardised: np.ndarray, name: str, index: pd.Index) -> None:
    # Two reductions and no temporary array in the common case; inf fails too (NaN cannot occur).
    if len(standardised) and standardised.min() >= -MAX_ABS_INPUT and standardised.max() <= MAX_ABS_INPUT:
        return
    bad = ~(np.abs(standardised) <= MAX_ABS_INPUT)
    raise InputDataError(
        f"Column {name!r} holds values too far from its training values for the network to represent "
        f"(more than {MAX_ABS_INPUT:g} training standard deviations from the training mean) in "
        f"{describe_rows(index, bad)}; check the units."
    )

"""The transformer from raw clinical columns to the network's input matrix.

Right-skewed positive measurements (most laboratory values) are first
log-transformed. Numeric and boolean features are then imputed with their
training median, get a missing-value indicator when they had missing values in
training, and are standardised (the indicator too). Categorical features are
one-hot encoded, with "missing" as a category of its own when it occurred in
training; a category never seen in training encodes as all zeros. Every learned
quantity comes from ``fit``.

The fitted state is plain data (numbers and strings, see ``to_dict``), so a
model can be stored and loaded without pickles, and ``transform`` is a few
vectorised numpy operations. ``feature_groups_`` maps every source column to the
output columns it produced, which is how explanations are carried back to
clinical variables.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from .exceptions import InputDataError
from .features import CATEGORICAL, NUMERIC, describe_rows, infer_feature_kinds, prepare_features

SKEWNESS_THRESHOLD = 1.0
MISSING_CATEGORY = "<missing>"


@dataclass(frozen=True)
class NumericEncoding:
    """How one numeric or boolean column is encoded: ``((log x or x, imputed) - mean) / scale``,
    followed by a standardised missing indicator when ``indicator_scale`` is set."""

    name: str
    log: bool
    median: float
    mean: float
    scale: float
    indicator_mean: float | None = None
    indicator_scale: float | None = None

    @property
    def width(self) -> int:
        return 1 if self.indicator_scale is None else 2


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
    """Log-transform, impute, flag, scale and one-hot encode a raw clinical table.

    Parameters
    ----------
    log_transform : "auto", list of str or None, default="auto"
        Numeric columns to replace by their natural logarithm before scaling.
        "auto" picks every numeric column whose training values are all
        positive, take more than two distinct values and have a sample
        skewness above ``SKEWNESS_THRESHOLD`` (1.0): the right-skewed
        laboratory values whose effects are closer to multiplicative. None
        transforms nothing. A log-transformed column must hold positive values
        (or NaN) at predict time; anything else is an error naming the rows.

    Attributes
    ----------
    feature_kinds_ : dict of str to str
        Source column -> ``"numeric"``, ``"boolean"`` or ``"categorical"``.
    encodings_ : list of NumericEncoding or CategoricalEncoding
        The learned encoding of every source column, in column order.
    log_columns_ : list of str
        Columns log-transformed.
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
    ['log(bili)', 'bili_missing', 'sex=f', 'sex=m', 'sex=<missing>']
    >>> {name: idx.tolist() for name, idx in pre.feature_groups_.items()}
    {'bili': [0, 1], 'sex': [2, 3, 4]}
    """

    def __init__(self, log_transform="auto"):
        self.log_transform = log_transform

    def fit(self, X: pd.DataFrame, y: object = None) -> ClinicalPreprocessor:
        """Learn feature kinds, log columns, imputation values, scales and categories.

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
        log_columns = self._choose_log_columns(kinds, columns, X.index)
        encodings = []
        for name, kind in kinds.items():
            if kind == CATEGORICAL:
                encodings.append(_fit_categorical(name, columns[name]))
            else:
                values = np.log(columns[name]) if name in log_columns else columns[name]
                encodings.append(_fit_numeric(name, values, name in log_columns))
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
            if encoding.log:
                _check_positive(values, encoding.name, X.index, "")
                values = np.log(values)
            missing = np.isnan(values)
            standardised = np.where(missing, encoding.median, values)  # float64: exact centring
            standardised -= encoding.mean
            standardised /= encoding.scale
            out[:, start] = standardised
            if encoding.indicator_scale is not None:
                indicator = out[:, start + 1]
                indicator[:] = missing
                indicator -= np.float32(encoding.indicator_mean)
                indicator /= np.float32(encoding.indicator_scale)
        return out

    def get_feature_names_out(self, input_features: object = None) -> np.ndarray:
        """Names of the output columns (``log(bili)``, ``bili_missing``, ``sex=f`` ...).

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
                names.append(f"log({encoding.name})" if encoding.log else encoding.name)
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
            As returned by ``to_dict`` (for example read back from JSON).

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

    def _choose_log_columns(self, kinds: dict, columns: dict, index: pd.Index) -> list[str]:
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
        for name in chosen:
            _check_positive(columns[name], name, index, "in the training data")
        return chosen


def _fit_numeric(name: str, values: np.ndarray, log: bool) -> NumericEncoding:
    missing = np.isnan(values)
    median = float(np.median(values[~missing])) if (~missing).any() else 0.0
    imputed = np.where(missing, median, values)
    indicator = {}
    if missing.any():
        rate = float(missing.mean())
        indicator = {"indicator_mean": rate, "indicator_scale": _scale(np.sqrt(rate * (1 - rate)))}
    return NumericEncoding(name, log, median, float(imputed.mean()), _scale(imputed.std()), **indicator)


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
    """A standard deviation usable as a divisor (1 for constant columns, as scikit-learn does)."""
    return float(std) if std > 10 * np.finfo(np.float64).eps else 1.0


def _is_right_skewed_positive(values: np.ndarray) -> bool:
    observed = pd.Series(values[~np.isnan(values)])
    return bool(observed.nunique() > 2 and (observed > 0).all() and observed.skew() > SKEWNESS_THRESHOLD)


def _check_positive(values: np.ndarray, name: str, index: pd.Index, where: str) -> None:
    bad = values <= 0  # NaN compares False: missing values are allowed
    if bad.any():
        raise InputDataError(
            f"Column {name!r} is log-transformed by the model, so it must hold positive values "
            f"(or NaN for missing){' ' + where if where else ''}; found values <= 0 in "
            f"{describe_rows(index, bad)}."
        )

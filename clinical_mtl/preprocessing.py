"""The transformer from raw clinical columns to the network's input matrix.

Numeric and boolean features are imputed with their training median, get a
missing-value indicator when they had missing values in training, and are
standardised. Categorical features are one-hot encoded, with "missing" as a
category of its own when it occurred in training; a category never seen in
training encodes as all zeros. Every learned quantity comes from ``fit``.

``feature_groups_`` maps every source column to the output columns it
produced, which is how explanations are carried back to clinical variables.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.utils.validation import check_is_fitted

from .features import CATEGORICAL, infer_feature_kinds, prepare_features


class ClinicalPreprocessor(TransformerMixin, BaseEstimator):
    """Impute, flag, scale and one-hot encode a raw clinical table.

    Attributes
    ----------
    feature_kinds_ : dict of str to str
        Source column -> ``"numeric"``, ``"boolean"`` or ``"categorical"``.
    column_transformer_ : sklearn.compose.ColumnTransformer
        The fitted scikit-learn transformer doing the work.
    feature_groups_ : dict of str to ndarray of int
        Source column -> indices of the output columns derived from it (its
        scaled value and missing indicator, or its one-hot columns).
    n_features_out_ : int
        Width of the transformed matrix.

    Examples
    --------
    >>> import pandas as pd
    >>> X = pd.DataFrame({"bili": [1.2, None, 3.0], "sex": ["f", "m", None]})
    >>> pre = ClinicalPreprocessor().fit(X)
    >>> pre.get_feature_names_out().tolist()
    ['bili', 'bili_missing', 'sex=f', 'sex=m', 'sex=nan']
    >>> {name: idx.tolist() for name, idx in pre.feature_groups_.items()}
    {'bili': [0, 1], 'sex': [2, 3, 4]}
    """

    def fit(self, X: pd.DataFrame, y: object = None) -> ClinicalPreprocessor:
        """Learn feature kinds, imputation values, scales and categories.

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
        self.feature_kinds_ = infer_feature_kinds(X)
        prepared = prepare_features(X, self.feature_kinds_)
        numeric = [name for name, kind in self.feature_kinds_.items() if kind != CATEGORICAL]
        categorical = [name for name, kind in self.feature_kinds_.items() if kind == CATEGORICAL]
        numeric_steps = Pipeline(
            [
                ("impute", SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True)),
                ("scale", StandardScaler()),
            ]
        )
        one_hot = OneHotEncoder(handle_unknown="ignore", sparse_output=False, dtype=np.float32)
        self.column_transformer_ = ColumnTransformer(
            [("numeric", numeric_steps, numeric), ("categorical", one_hot, categorical)],
            sparse_threshold=0.0,
        ).fit(prepared)
        self.feature_groups_, self._feature_names_out = self._describe_outputs(numeric, categorical)
        self.n_features_out_ = len(self._feature_names_out)
        return self

    def transform(self, X: pd.DataFrame) -> np.ndarray:
        """Transform raw features into the float32 network input.

        Parameters
        ----------
        X : DataFrame of shape (n_samples, n_features)
            Raw features with the training columns.

        Returns
        -------
        ndarray of shape (n_samples, n_features_out_), dtype float32
        """
        check_is_fitted(self)
        prepared = prepare_features(X, self.feature_kinds_)
        return np.asarray(self.column_transformer_.transform(prepared), dtype=np.float32)

    def get_feature_names_out(self, input_features: object = None) -> np.ndarray:
        """Names of the output columns (``bili``, ``bili_missing``, ``sex=f`` ...).

        Parameters
        ----------
        input_features : None
            Ignored; present for scikit-learn compatibility.

        Returns
        -------
        ndarray of str
        """
        check_is_fitted(self)
        return np.asarray(self._feature_names_out, dtype=object)

    def _describe_outputs(
        self, numeric: list[str], categorical: list[str]
    ) -> tuple[dict[str, np.ndarray], list[str]]:
        """Map output columns back to source columns from the fitted steps."""
        slices = self.column_transformer_.output_indices_
        groups: dict[str, list[int]] = {name: [] for name in self.feature_kinds_}
        names: dict[int, str] = {}
        start = slices["numeric"].start
        for offset, name in enumerate(numeric):
            groups[name].append(start + offset)
            names[start + offset] = name
        if numeric:
            indicator = self.column_transformer_.named_transformers_["numeric"]["impute"].indicator_
            flagged = indicator.features_ if indicator is not None else []
            for offset, feature_index in enumerate(flagged):
                name = numeric[feature_index]
                groups[name].append(start + len(numeric) + offset)
                names[start + len(numeric) + offset] = f"{name}_missing"
        if categorical:
            position = slices["categorical"].start
            encoder = self.column_transformer_.named_transformers_["categorical"]
            for name, categories in zip(categorical, encoder.categories_):
                for category in categories:
                    groups[name].append(position)
                    names[position] = f"{name}={category}"
                    position += 1
        ordered = [names[i] for i in range(len(names))]
        return {name: np.asarray(idx, dtype=np.intp) for name, idx in groups.items()}, ordered

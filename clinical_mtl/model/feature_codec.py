"""Raw clinical columns <-> a numeric matrix, for model-agnostic explainers."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .features import BOOLEAN, prepare_features
from .preprocessing import CategoricalEncoding


class RawFeatureCodec:
    """Raw clinical columns <-> a numeric matrix, for model-agnostic explainers.

    shap's KernelExplainer and PermutationExplainer perturb numeric matrices;
    this codec lets them drive the whole pipeline (raw columns in): numeric
    columns as they are, booleans as 0/1, categories as their index among the
    training categories, NaN for missing.

    Parameters
    ----------
    model : MultiTaskMLP
        A fitted model (its column kinds and categories are used).

    Examples
    --------
    >>> from clinical_mtl import MultiTaskMLP
    >>> from clinical_mtl.datasets import make_synthetic_cohort
    >>> X, Y = make_synthetic_cohort(100, random_state=0)
    >>> model = MultiTaskMLP(max_epochs=3, ensemble_size=1, random_state=0).fit(X, Y)
    >>> codec = RawFeatureCodec(model)
    >>> codes = codec.encode(X.head(3))
    >>> codes.shape
    (3, 12)
    >>> bool(np.allclose(codec.encode(codec.decode(codes)), codes, equal_nan=True))
    True
    >>> f = lambda codes: model.predict_proba(codec.decode(codes))["diagnosis"][:, 1]
    >>> # shap.PermutationExplainer(f, shap.maskers.Independent(codec.encode(X)))(codes)
    """

    def __init__(self, model):
        self.kinds = dict(model.preprocessor_.feature_kinds_)
        self.columns = list(model.feature_names_in_) if hasattr(model, "feature_names_in_") else list(self.kinds)
        self.categories = {
            e.name: list(e.categories) for e in model.preprocessor_.encodings_ if isinstance(e, CategoricalEncoding)
        }

    def encode(self, frame: pd.DataFrame) -> np.ndarray:
        """Raw table -> float matrix."""
        columns = prepare_features(frame.set_axis(list(self.kinds), axis=1), self.kinds)
        out = np.empty((len(frame), len(columns)))
        for j, (name, values) in enumerate(columns.items()):
            if name in self.categories:
                codes = values.set_categories(self.categories[name]).codes
                out[:, j] = np.where(values.codes < 0, np.nan, codes)
            else:
                out[:, j] = values
        return out

    def decode(self, codes: np.ndarray) -> pd.DataFrame:
        """Float matrix -> raw table with the model's columns and kinds."""
        columns = {}
        for j, (name, kind) in enumerate(self.kinds.items()):
            values = codes[:, j]
            if name in self.categories:
                labels = np.asarray(self.categories[name], dtype=object)
                picked = labels[np.clip(np.nan_to_num(values), 0, len(labels) - 1).astype(int)]
                columns[name] = pd.Categorical(np.where(np.isnan(values), None, picked), categories=labels)
            elif kind == BOOLEAN:
                columns[name] = pd.array(np.where(np.isnan(values), None, values == 1), dtype="boolean")
            else:
                columns[name] = values
        return pd.DataFrame(columns).set_axis(self.columns, axis=1)

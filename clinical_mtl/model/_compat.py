"""The one place that imports scikit-learn's private helpers.

Parameter validation (``Interval``, ``StrOptions``, ``_fit_context``) is not
public API in scikit-learn; if it moves, only this module changes.
"""

from sklearn.base import _fit_context as fit_context
from sklearn.utils._param_validation import Interval, StrOptions

__all__ = ["Interval", "StrOptions", "fit_context"]

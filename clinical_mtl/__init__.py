"""clinical_mtl: one neural network, several clinical outcomes, each with its reasons.

The public entry point is :class:`MultiTaskMLP`, a scikit-learn estimator with
a shared PyTorch trunk and one head per outcome. Cohorts live in
:mod:`clinical_mtl.datasets`.
"""

from .estimator import MultiTaskMLP

__version__ = "0.1.0"

__all__ = ["MultiTaskMLP", "__version__"]

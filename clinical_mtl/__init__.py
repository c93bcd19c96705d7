"""clinical_mtl: one neural network, several clinical outcomes, each with its reasons.

The public entry point is :class:`MultiTaskMLP`, a scikit-learn estimator with
a shared PyTorch trunk and one head per outcome. Cohorts live in
:mod:`clinical_mtl.datasets`.
"""

__version__ = "0.1.0"

from .model import MultiTaskMLP

__all__ = ["MultiTaskMLP", "__version__"]

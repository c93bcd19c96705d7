"""clinical_mtl: one neural network, several clinical outcomes, each with its reasons.

The public entry point is :class:`MultiTaskMLP`, a scikit-learn estimator with
a shared PyTorch trunk and one head per outcome; ``model.for_outcome(name)``,
:func:`outcome_scorer` and :func:`mean_outcome_scorer` bring scikit-learn's
scorers, displays and searches to one outcome at a time. Cohorts live in
:mod:`clinical_mtl.datasets`.
"""

__version__ = "0.1.0"

from .model import MultiTaskMLP, mean_outcome_scorer, outcome_scorer

__all__ = ["MultiTaskMLP", "__version__", "mean_outcome_scorer", "outcome_scorer"]

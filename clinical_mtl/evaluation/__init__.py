"""How well a fitted model works: metric tables with bootstrap intervals and subgroups
(from :mod:`clinical_mtl.model.metric_tables`), single-task twins (negative transfer)
and figures (reliability diagrams, SHAP beeswarms)."""

from ..model.metric_tables import band, bootstrap_metrics, evaluate_model, group_columns
from .figures import (
    reliability_diagram,
    reliability_diagrams,
    save_beeswarm_plots,
    save_reliability_diagrams,
)
from .negative_transfer import single_task_comparison

__all__ = [
    "band",
    "bootstrap_metrics",
    "evaluate_model",
    "group_columns",
    "reliability_diagram",
    "reliability_diagrams",
    "save_beeswarm_plots",
    "save_reliability_diagrams",
    "single_task_comparison",
]

"""How well a fitted model works: metric tables with bootstrap intervals and subgroups
(from :mod:`clinical_mtl.model.metric_tables`), decision curves (from
:mod:`clinical_mtl.model.decision_curve`), single-task twins (negative transfer)
and figures (reliability diagrams, decision curves, SHAP beeswarms)."""

from ..model.decision_curve import decision_curves, net_benefit
from ..model.metric_tables import band, bootstrap_intervals, evaluate_model, group_columns, too_few_to_estimate
from .figures import (
    decision_curve_figures,
    reliability_diagram,
    reliability_diagrams,
    save_beeswarm_plots,
    save_reliability_diagrams,
)
from .negative_transfer import single_task_comparison

__all__ = [
    "band",
    "bootstrap_intervals",
    "decision_curve_figures",
    "decision_curves",
    "evaluate_model",
    "group_columns",
    "net_benefit",
    "reliability_diagram",
    "reliability_diagrams",
    "save_beeswarm_plots",
    "save_reliability_diagrams",
    "single_task_comparison",
    "too_few_to_estimate",
]

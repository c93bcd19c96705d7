"""The estimator and its maths: tasks and labels, features and preprocessing, the network,
losses and training, recalibration, conformal intervals, metrics and their tables,
explanations and the flat output spec. No files, no MLflow, no plots."""

from .estimator import MultiTaskMLP
from .explanation import (
    Background,
    contribution_ranks,
    explain_model,
    global_importance,
)
from .feature_codec import RawFeatureCodec
from .decision_curve import decision_curves
from .metric_tables import band, bootstrap_intervals, evaluate_model, group_columns, too_few_to_estimate
from .metrics import metrics_table
from .outcome_view import OutcomeView
from .outputs import (
    OutputColumn,
    column_name,
    flat_predictions,
    output_columns,
    top_contributions,
)
from .preprocessing import ClinicalPreprocessor
from .relatedness import describe_relatedness, relatedness_table
from .scorers import mean_outcome_scorer, outcome_scorer
from .tasks import BINARY, MULTICLASS, REGRESSION, TaskSpec, infer_tasks

__all__ = [
    "BINARY",
    "Background",
    "ClinicalPreprocessor",
    "MULTICLASS",
    "MultiTaskMLP",
    "OutcomeView",
    "OutputColumn",
    "REGRESSION",
    "RawFeatureCodec",
    "TaskSpec",
    "band",
    "bootstrap_intervals",
    "column_name",
    "contribution_ranks",
    "decision_curves",
    "describe_relatedness",
    "evaluate_model",
    "explain_model",
    "flat_predictions",
    "global_importance",
    "group_columns",
    "infer_tasks",
    "mean_outcome_scorer",
    "metrics_table",
    "outcome_scorer",
    "output_columns",
    "relatedness_table",
    "too_few_to_estimate",
    "top_contributions",
]

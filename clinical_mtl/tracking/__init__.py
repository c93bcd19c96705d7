"""MLflow: every fit tracked (``autolog``, ``log_fit``), the model as a pickle-free pyfunc,
the registry, and the guard in front of MLflow's scoring server (:mod:`.serving`).

``mlflow`` is imported inside the functions, so ``import clinical_mtl`` stays fast."""

from .pyfunc import (
    MODEL_ARTIFACT,
    log_model,
    model_signature,
    save_pyfunc_model,
    synthetic_input_example,
    to_pyfunc_input,
)
from .registry import download_model, load_native_model, model_identity, register_model
from .runs import autolog, log_fit, log_metrics_table, training_data_summary

__all__ = [
    "MODEL_ARTIFACT",
    "autolog",
    "download_model",
    "load_native_model",
    "log_fit",
    "log_metrics_table",
    "log_model",
    "model_identity",
    "model_signature",
    "register_model",
    "save_pyfunc_model",
    "synthetic_input_example",
    "to_pyfunc_input",
    "training_data_summary",
]

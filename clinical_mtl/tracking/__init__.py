"""MLflow: every fit tracked (``autolog``, ``log_fit``), the model as a pickle-free pyfunc,
the registry, ``mlflow.models.evaluate`` per outcome (``evaluate_outcome``), and the guard in
front of MLflow's scoring server (:mod:`.serving`).

``mlflow`` is imported inside the functions, so ``import clinical_mtl`` stays fast."""

from .evaluation import evaluate_outcome
from .pyfunc import (
    MODEL_ARTIFACT,
    log_model,
    model_signature,
    save_pyfunc_model,
    synthetic_input_example,
    to_pyfunc_input,
)
from .registry import download_model, load_native_model, model_identity, register_model
from .runs import (
    autolog,
    dataset_name,
    log_fit,
    log_metrics_table,
    log_training_data,
    run_name,
    training_data_summary,
)

__all__ = [
    "MODEL_ARTIFACT",
    "autolog",
    "dataset_name",
    "download_model",
    "evaluate_outcome",
    "load_native_model",
    "log_fit",
    "log_metrics_table",
    "log_model",
    "log_training_data",
    "model_identity",
    "model_signature",
    "register_model",
    "run_name",
    "save_pyfunc_model",
    "synthetic_input_example",
    "to_pyfunc_input",
    "training_data_summary",
]

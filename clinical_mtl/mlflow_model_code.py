"""The clinical_mtl MLflow model, defined as code (MLflow "models from code").

``clinical_mtl.tracking.log_model`` logs this file as the model's
``python_model``: MLflow stores the file itself, not a pickle of an object,
and runs it when the model is loaded. ``load_context`` then reads the saved
model folder (JSON plus a weights-only ``state_dict``, see
``clinical_mtl.persistence``), so loading executes only this file and the
installed clinical_mtl package.
"""

import mlflow
import pandas as pd

from clinical_mtl.conformal import DEFAULT_COVERAGE
from clinical_mtl.outputs import flat_predictions
from clinical_mtl.persistence import load_model


class ClinicalMTLModel(mlflow.pyfunc.PythonModel):
    """Predict every outcome as flat columns (``<outcome>_pred``, ``<outcome>_proba_<class>``,
    ``<outcome>_lower`` and ``<outcome>_upper`` at the ``interval_coverage`` parameter, default
    0.9), with the ``top_k`` largest SHAP contributions per outcome when the ``top_k`` parameter
    (default: as logged) is positive."""

    def load_context(self, context):
        self.model = load_model(context.artifacts["model"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        params = params or {}
        top_k = int(params.get("top_k", 0))
        coverage = float(params.get("interval_coverage", DEFAULT_COVERAGE))
        return flat_predictions(self.model, model_input, top_k=top_k, coverage=coverage)


mlflow.models.set_model(ClinicalMTLModel())

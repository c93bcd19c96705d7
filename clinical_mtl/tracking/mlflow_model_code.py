"""The clinical_mtl MLflow model, defined as code (MLflow "models from code").

``clinical_mtl.tracking.log_model`` logs this file as the model's
``python_model``: MLflow stores the file itself, not a pickle of an object,
and runs it when the model is loaded. ``load_context`` then reads the saved
model folder (JSON plus a weights-only ``state_dict``, see
``clinical_mtl.data.persistence``), so loading executes only this file and the
installed clinical_mtl package.

``predict`` checks every request with the cohort schema stored with the model
before predicting, and answers anything wrong with a values-free
``clinical_mtl.tracking.serving.RequestRejected`` (HTTP 400 from ``mlflow models
serve``); see ``clinical_mtl.tracking.serving``.

Loaded with ``model_config={"outcome": name}`` (``mlflow.pyfunc.load_model`` or
``mlflow.models.evaluate``), ``predict`` returns that outcome's ``<outcome>_pred``
alone, as a Series: the one column of predictions MLflow's classifier evaluator takes.
"""

import mlflow
import pandas as pd

from clinical_mtl.data.persistence import load_saved_model
from clinical_mtl.data.schema import schema_for_model, schema_from_model
from clinical_mtl.exceptions import InputDataError, one_line
from clinical_mtl.model.conformal import DEFAULT_COVERAGE
from clinical_mtl.model.outputs import flat_predictions
from clinical_mtl.tracking import serving


class ClinicalMTLModel(mlflow.pyfunc.PythonModel):
    """Predict every outcome as flat columns (``<outcome>_pred``, ``<outcome>_proba_<class>``,
    ``<outcome>_lower`` and ``<outcome>_upper`` at the ``interval_coverage`` parameter, default
    0.9), with the ``top_k`` largest SHAP contributions per outcome when the ``top_k`` parameter
    (default: as logged) is positive. Rows are checked with the model's cohort schema first."""

    def load_context(self, context):
        self.model, stored, _ = load_saved_model(context.artifacts["model"])
        self.schema = schema_for_model(stored or schema_from_model(self.model, "id"), self.model)
        self.outcome = (context.model_config or {}).get("outcome")
        if self.outcome is not None and self.outcome not in self.model.tasks_:
            raise InputDataError(f"model_config names the outcome '{self.outcome}'; the model's outcomes are "
                                 f"{list(self.model.tasks_)}.")

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        params = params or {}
        try:
            top_k, coverage = serving.check_params(params.get("top_k", 0),
                                                   params.get("interval_coverage", DEFAULT_COVERAGE))
            max_rows = serving.max_rows_per_request() if serving.in_serving_environment() else None
            features = serving.validate_request(self.schema, model_input, max_rows=max_rows)
            predictions = serving.check_outputs(
                flat_predictions(self.model, features, top_k=top_k, coverage=coverage))
            return predictions if self.outcome is None else predictions[f"{self.outcome}_pred"]
        except serving.RequestRejected:
            raise
        except InputDataError as error:
            raise serving.RequestRejected(one_line(error)) from None
        except Exception as error:  # a bug: no stack trace (nor an exception's text) goes to the client
            raise serving.unexpected_error(error) from None


mlflow.models.set_model(ClinicalMTLModel())

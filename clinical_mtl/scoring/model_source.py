"""The model a scoring run uses: a saved folder or an MLflow URI, with its cohort schema and identity."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..data.schema import CohortSchema, schema_for_model, schema_from_model
from ..exceptions import ModelLoadError
from ..model.estimator import MultiTaskMLP

MLFLOW_SCHEMES = ("models:/", "runs:/")


@dataclass
class LoadedModel:
    """A model ready for scoring, with what identifies it.

    Attributes
    ----------
    model : MultiTaskMLP
    schema : CohortSchema
        The cohort schema stored with the model (or one derived from the
        model's columns when it was trained without one).
    name, version, run_id : str or None
        Registered name and version, and the MLflow run that trained it.
    reference : str
        How it was referred to (path or MLflow URI).
    saved_at : str or None
        When the model was saved after training (ISO 8601, UTC).
    """

    model: MultiTaskMLP
    schema: CohortSchema
    name: str | None
    version: str | None
    run_id: str | None
    reference: str
    saved_at: str | None = None

    def identity(self) -> dict:
        """Name, version, run id and reference, as the scoring summary records them."""
        return {"name": self.name, "version": self.version, "run_id": self.run_id, "reference": self.reference}


def load_model_for_scoring(reference: str, id_column: str | None = None) -> LoadedModel:
    """Load a model from a saved folder, ``runs:/<run>/model`` or ``models:/<name>@<alias>``.

    Parameters
    ----------
    reference : str
        A folder written by ``persistence.save_model``, or an MLflow model URI.
    id_column : str, default=None
        Id column for models stored without a cohort schema (default "id").

    Returns
    -------
    LoadedModel
    """
    from ..data.persistence import load_saved_model

    if not reference.startswith(MLFLOW_SCHEMES):
        model, schema, info = load_saved_model(reference)
        name, version, run_id = Path(reference).name, None, None
    else:
        model, schema, info, (name, version, run_id) = _load_from_mlflow(reference)
    schema = schema_for_model(schema or schema_from_model(model, id_column or "id"), model)
    schema.validator()  # built now (it imports pandera), not while scoring
    return LoadedModel(model, schema, name, version, run_id, reference, info["saved_at"])


def _load_from_mlflow(reference: str):
    """Model, schema, save information and identity of an MLflow model URI; ``ModelLoadError`` if MLflow
    has none."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from ..data.persistence import load_saved_model
    from ..tracking.registry import download_model, model_identity

    tracking_uri = mlflow.get_tracking_uri()
    # models:/ names are resolved by the model registry (MLFLOW_REGISTRY_URI, by default the tracking store).
    uri, store = (mlflow.get_registry_uri(), "model registry") if reference.startswith("models:/") else (
        tracking_uri, "tracking store")
    for needed, name in {tracking_uri: "tracking store", uri: store}.items():
        if needed.startswith("sqlite:///") and not Path(needed[len("sqlite:///"):]).exists():  # MLflow would create it
            raise ModelLoadError(f"Cannot load {reference}: the MLflow {name} {needed} does not exist (no such "
                                 "database file); set MLFLOW_TRACKING_URI to the one that holds the model.")
    try:
        identity = model_identity(reference)
        with download_model(reference) as folder:
            return (*load_saved_model(folder), identity)
    except MlflowException as error:
        reason = str(error.message).strip().splitlines()[0] if str(error.message).strip() else type(error).__name__
        raise ModelLoadError(f"Cannot load {reference} from the MLflow {store} at {uri}: {reason}") from None


def model_columns(model: MultiTaskMLP) -> list[str]:
    """The feature columns of the model's input, by name, in its order."""
    return list(model.feature_names_in_) if hasattr(model, "feature_names_in_") else list(model.preprocessor_.feature_kinds_)

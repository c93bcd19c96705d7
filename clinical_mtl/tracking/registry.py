"""Models in the MLflow registry: registered, resolved, downloaded and loaded natively."""

from __future__ import annotations

import tempfile
from contextlib import contextmanager
from pathlib import Path

from ..data.persistence import load_model
from ..model.estimator import MultiTaskMLP


def load_native_model(model_uri: str) -> MultiTaskMLP:
    """Load the ``MultiTaskMLP`` behind a logged model (``runs:/...``, ``models:/...``).

    Parameters
    ----------
    model_uri : str
        Any MLflow model URI of a model logged by :func:`log_model`.

    Returns
    -------
    MultiTaskMLP
    """
    with download_model(model_uri) as folder:
        return load_model(folder)


@contextmanager
def download_model(model_uri: str):
    """Download a logged model; yields the folder of its ``model.json`` and weights
    (deleted on exit)."""
    import mlflow

    with tempfile.TemporaryDirectory() as folder:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=folder))
        yield local / "artifacts" / "clinical_mtl_model"


def model_identity(model_uri: str) -> tuple[str | None, str | None, str | None]:
    """Registered name, version and training run id of an MLflow model URI.

    ``models:/<name>@<alias>`` and ``models:/<name>/<version>`` give all three,
    ``runs:/<run>/...`` the run only, ``models:/<model id>`` its run.
    """
    import mlflow

    client = mlflow.MlflowClient()
    if model_uri.startswith("runs:/"):
        return None, None, model_uri.split("/")[1]
    if model_uri.startswith("models:/"):
        target = model_uri[len("models:/"):]
        if "@" in target:
            name, alias = target.split("@", 1)
            version = client.get_model_version_by_alias(name, alias)
            return name, str(version.version), version.run_id
        if "/" in target:
            name, number = target.split("/", 1)
            version = client.get_model_version(name, number)
            return name, str(version.version), version.run_id
        logged = client.get_logged_model(target)
        return logged.name, None, logged.source_run_id
    return None, None, None


def register_model(model_uri: str, name: str, *, alias: str | None = None):
    """Register a logged model and optionally point an alias (e.g. "champion") at it.

    Parameters
    ----------
    model_uri : str
        URI of the logged model.
    name : str
        Registered model name.
    alias : str, default=None
        Alias to set on the new version.

    Returns
    -------
    mlflow.entities.model_registry.ModelVersion
    """
    import mlflow

    version = mlflow.register_model(model_uri, name)
    if alias is not None:
        mlflow.MlflowClient().set_registered_model_alias(name, alias, version.version)
    return version

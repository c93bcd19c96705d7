"""Saving and loading a fitted ``MultiTaskMLP`` without pickles.

A saved model is a folder of two files:

``model.json``
    The estimator's parameters, its fitted state (task kinds, classes,
    target scaling, label counts, training history, the recalibration of
    classification outcomes and the conformal residuals of regression
    outcomes), the fitted
    preprocessing (medians, means, scales, categories: numbers and strings
    only) and the network's architecture. Plain JSON: reading it runs no code.
``weights.pt``
    The networks' ``state_dict``: tensors only, read back with
    ``torch.load(..., weights_only=True)``, which refuses anything but
    tensors and plain containers.

``model.json`` also holds the SHA-256 digests of ``weights.pt`` and of its own
content (``integrity``), checked on every load: a model whose weights were
swapped or whose ``model.json`` was edited (its cohort schema removed, say,
which would turn range checks off) is refused with a ``ModelLoadError``.
They detect changes, not a forger who recomputes them: keep model folders
where only their owners can write.

Nothing is pickled. A ``random_state`` given as a ``RandomState`` instance
is not stored (the loaded model reports ``random_state=None``); it only
matters for refitting.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..exceptions import ModelLoadError
from ..model.estimator import MultiTaskMLP
from ..model.fitted_state import from_json_ready, to_json_ready
from .schema import CohortSchema
from .writing import AtomicPath

FORMAT_VERSION = 3
READABLE_FORMAT_VERSIONS = (3,)  # 2 added the recalibration and conformal residuals, 3 the digests
INTEGRITY_KEY = "integrity"
CONFIG_FILE = "model.json"
WEIGHTS_FILE = "weights.pt"


def save_model(model: MultiTaskMLP, path: str | Path, *, schema: CohortSchema | None = None) -> Path:
    """Write a fitted model to the folder ``path`` (created if needed).

    Parameters
    ----------
    model : MultiTaskMLP
        A fitted estimator.
    path : str or Path
        Destination folder.
    schema : CohortSchema, default=None
        The cohort schema the model was trained with, stored beside it (read
        back with ``load_schema_of``).

    Returns
    -------
    Path
        The folder.

    Examples
    --------
    >>> from clinical_mtl import MultiTaskMLP
    >>> from clinical_mtl.datasets import make_synthetic_cohort
    >>> X, Y = make_synthetic_cohort(200, random_state=0)
    >>> model = MultiTaskMLP(max_epochs=5, ensemble_size=1, random_state=0).fit(X, Y)
    >>> import tempfile
    >>> folder = save_model(model, tempfile.mkdtemp())
    >>> load_model(folder).predict(X).equals(model.predict(X))
    True
    """
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    state, weights = model.fitted_state()
    config = {
        "format_version": FORMAT_VERSION,
        "clinical_mtl_version": __version__,
        "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "params": to_json_ready(_storable_params(model.get_params())),
        "cohort_schema": schema.to_dict() if schema is not None else None,
    } | state
    # Each file appears complete or not at all, model.json last: a save that fails or is killed midway
    # leaves the earlier model, or new weights whose digest its model.json refuses, never a torn file.
    with AtomicPath(folder / WEIGHTS_FILE) as partial:
        torch.save(weights, partial)
    config[INTEGRITY_KEY] = {"weights_sha256": _file_digest(folder / WEIGHTS_FILE),
                             "config_sha256": _config_digest(config)}
    with AtomicPath(folder / CONFIG_FILE) as partial:
        partial.write_text(json.dumps(config, indent=1))
    return folder


def load_model(path: str | Path) -> MultiTaskMLP:
    """Read a model written by ``save_model``; no code is executed in loading.

    Parameters
    ----------
    path : str or Path
        The folder written by ``save_model``.

    Returns
    -------
    MultiTaskMLP
        Fitted, predicting exactly as the saved model did.

    Raises
    ------
    ModelLoadError
        If the folder is not a verified saved model (see :func:`read_model_config`),
        or its weights are not plain tensors.
    """
    folder = Path(path)
    return _model_from_config(read_model_config(folder), folder)


def read_model_config(path: str | Path) -> dict:
    """The verified content of a saved model's ``model.json``.

    Parameters
    ----------
    path : str or Path
        The folder written by ``save_model``.

    Returns
    -------
    dict

    Raises
    ------
    ModelLoadError
        If the folder or its files are missing or unreadable, the format
        version is not one this clinical_mtl reads, or a digest does not match
        (``model.json`` or ``weights.pt`` changed since saving).
    """
    folder = Path(path)
    file = folder / CONFIG_FILE
    if not folder.is_dir():
        raise ModelLoadError(f"Model folder {folder} does not exist.")
    try:
        config = json.loads(file.read_text())
    except FileNotFoundError:
        raise ModelLoadError(f"{folder} holds no {CONFIG_FILE}: it is not a model saved by clinical_mtl.") from None
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ModelLoadError(f"{file} cannot be read as JSON (truncated or damaged): "
                             f"{type(error).__name__}.") from None
    version = config.get("format_version") if isinstance(config, dict) else None
    if version not in READABLE_FORMAT_VERSIONS:
        raise ModelLoadError(
            f"{file} has format_version {version!r}; this clinical_mtl ({__version__}) reads format_version "
            f"{' or '.join(map(str, READABLE_FORMAT_VERSIONS))} (models saved before version 3 carry no "
            "digests to verify: train and save them again)."
        )
    _verify(config, folder)
    return config


def _verify(config: dict, folder: Path) -> None:
    """Refuse a model whose ``model.json`` or weights differ from what was saved."""
    stored = config.get(INTEGRITY_KEY)
    if not isinstance(stored, dict):
        raise ModelLoadError(f"{folder / CONFIG_FILE} has no '{INTEGRITY_KEY}' digests; refusing an unverifiable model.")
    try:
        weights = _file_digest(folder / WEIGHTS_FILE)
    except OSError:
        raise ModelLoadError(f"{folder} holds no readable {WEIGHTS_FILE}.") from None
    if stored.get("config_sha256") != _config_digest(config):
        raise ModelLoadError(f"{folder / CONFIG_FILE} was changed after the model was saved (its digest does not "
                             "match); refusing to load it.")
    if stored.get("weights_sha256") != weights:
        raise ModelLoadError(f"{folder / WEIGHTS_FILE} is not the weights file saved with {folder / CONFIG_FILE} "
                             "(its digest does not match); refusing to load it.")


def _config_digest(config: dict) -> str:
    """SHA-256 of ``model.json``'s content without its digests, in one canonical text."""
    content = {key: value for key, value in config.items() if key != INTEGRITY_KEY}
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _model_from_config(config: dict, folder: Path) -> MultiTaskMLP:
    params = from_json_ready(config["params"])
    params["hidden_layer_sizes"] = tuple(params["hidden_layer_sizes"])
    try:
        weights = torch.load(folder / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # digests recomputed over a file that is not plain tensors
        raise ModelLoadError(f"{folder / WEIGHTS_FILE} holds something other than tensors; refusing it.") from None
    return MultiTaskMLP.from_fitted_state(params, config, weights)


def load_saved_model(path: str | Path) -> tuple[MultiTaskMLP, CohortSchema | None, dict]:
    """The model, its cohort schema and its save information, from one verified read of the folder.

    Returns
    -------
    model : MultiTaskMLP
    schema : CohortSchema or None
        As :func:`load_schema_of` gives it.
    info : dict
        As :func:`load_model_info` gives it.
    """
    folder = Path(path)
    config = read_model_config(folder)
    return _model_from_config(config, folder), _schema_from_config(config, folder), _info_from_config(config)


def load_model_info(path: str | Path) -> dict:
    """When and by which clinical_mtl version the model in folder ``path`` was saved.

    Returns
    -------
    dict
        ``saved_at`` (ISO 8601, UTC; None for models saved before it was
        recorded) and ``clinical_mtl_version``.
    """
    return _info_from_config(read_model_config(path))


def load_schema_of(path: str | Path) -> CohortSchema | None:
    """The cohort schema saved with the model in folder ``path`` (None if there is none)."""
    return _schema_from_config(read_model_config(path), Path(path))


def _info_from_config(config: dict) -> dict:
    return {"saved_at": config.get("saved_at"), "clinical_mtl_version": config.get("clinical_mtl_version")}


def _schema_from_config(config: dict, folder: Path) -> CohortSchema | None:
    stored = config.get("cohort_schema")
    return CohortSchema.from_dict(stored, source=str(folder / CONFIG_FILE)) if stored else None


def _storable_params(params: dict) -> dict:
    if isinstance(params["random_state"], np.random.RandomState):
        params = params | {"random_state": None}
    return params

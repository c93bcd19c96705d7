"""The fitted state of a ``MultiTaskMLP`` as plain JSON-ready data, listed once.

Every stored fitted attribute has one entry in ``FITTED_ATTRIBUTES``: where it
lives in the state and how it becomes JSON-ready data and comes back.
``MultiTaskMLP.fitted_state`` and ``MultiTaskMLP.from_fitted_state`` go
through this table only, so a new fitted attribute is one line here (and its
assignment in ``fit``). The networks' weights are tensors, kept apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from .calibration import calibrator_from_dict
from .conformal import ScaleModel
from .explanation import Background
from .network import MultiHeadEnsemble, MultiHeadNet, head_layers
from .preprocessing import ClinicalPreprocessor
from .survival import INTERVAL_HEAD
from .tasks import TaskSpec


def to_json_ready(value):
    """JSON-ready form of parameters and labels: tuples and non-text keys are tagged."""
    if isinstance(value, dict):
        if all(isinstance(key, str) for key in value):
            return {key: to_json_ready(item) for key, item in value.items()}
        return {"__items__": [[to_json_ready(key), to_json_ready(item)] for key, item in value.items()]}
    if isinstance(value, tuple):
        return {"__tuple__": [to_json_ready(item) for item in value]}
    if isinstance(value, list):
        return [to_json_ready(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def from_json_ready(value):
    """Inverse of ``to_json_ready``."""
    if isinstance(value, dict):
        if set(value) == {"__items__"}:
            return {_hashable(from_json_ready(key)): from_json_ready(item) for key, item in value["__items__"]}
        if set(value) == {"__tuple__"}:
            return tuple(from_json_ready(item) for item in value["__tuple__"])
        return {key: from_json_ready(item) for key, item in value.items()}
    if isinstance(value, list):
        return [from_json_ready(item) for item in value]
    return value


def _hashable(value):
    return tuple(value) if isinstance(value, list) else value


def _task_to_json(spec: TaskSpec) -> dict:
    return {"name": spec.name, "kind": spec.kind,
            "classes": to_json_ready(list(spec.classes)) if spec.classes is not None else None,
            "target_mean": spec.target_mean, "target_scale": spec.target_scale,
            "cut_points": _optional_list(spec.cut_points), "horizons": _optional_list(spec.horizons)}


def _task_from_json(task: dict) -> TaskSpec:
    classes = tuple(from_json_ready(task["classes"])) if task["classes"] is not None else None
    return TaskSpec(task["name"], task["kind"], classes, task["target_mean"], task["target_scale"],
                    _optional_tuple(task.get("cut_points")), _optional_tuple(task.get("horizons")))


def _optional_list(values: tuple | None) -> list | None:
    return None if values is None else [float(value) for value in values]


def _optional_tuple(values: list | None) -> tuple | None:
    return None if values is None else tuple(float(value) for value in values)


def _same(value):
    return value


def _arrays(values: dict) -> dict:
    return {name: np.asarray(array, dtype=np.float64) for name, array in values.items()}


def _lists(values: dict) -> dict:
    return {name: array.tolist() for name, array in values.items()}


@dataclass(frozen=True)
class FittedAttribute:
    """How one fitted attribute is stored.

    Attributes
    ----------
    name : str
        The estimator's attribute.
    key : tuple of str
        Its place in the state (``("fitted", "history")`` is ``state["fitted"]["history"]``).
    to_json, from_json : callable
        Value -> JSON-ready data, and back.
    default : object
        JSON-ready value read where the key is absent (attributes that models
        saved by older versions lack); ``REQUIRED`` if it must be there,
        ``OPTIONAL`` for an attribute some models do not have (stored as None).
    """

    name: str
    key: tuple[str, ...]
    to_json: Callable
    from_json: Callable
    default: object = "required"


REQUIRED, OPTIONAL = "required", "optional"


FITTED_ATTRIBUTES = (
    FittedAttribute("n_features_in_", ("fitted", "n_features_in"), int, int),
    FittedAttribute("feature_names_in_", ("fitted", "feature_names_in"), lambda names: names.tolist(),
                    lambda names: np.asarray(names, dtype=object), default=OPTIONAL),
    FittedAttribute("task_specs_", ("fitted", "tasks"), lambda specs: [_task_to_json(s) for s in specs],
                    lambda tasks: tuple(_task_from_json(t) for t in tasks)),
    FittedAttribute("single_outcome_", ("fitted", "single_outcome"), _same, _same, default=None),
    FittedAttribute("label_counts_", ("fitted", "label_counts"), to_json_ready, from_json_ready),
    FittedAttribute("label_percentiles_", ("fitted", "label_percentiles"), _lists,
                    lambda values: {name: np.asarray(v) for name, v in values.items()}, default={}),
    FittedAttribute("cohort_survival_", ("fitted", "cohort_survival"), _lists, _arrays, default={}),
    # Models saved before the times were stored kept the curve at the cut points.
    FittedAttribute("cohort_survival_times_", ("fitted", "cohort_survival_times"), _lists, _arrays, default={}),
    # Models saved before the proportional head existed had interval heads.
    FittedAttribute("survival_head_", ("fitted", "survival_head"), _same, _same, default=INTERVAL_HEAD),
    FittedAttribute("survival_head_losses_", ("fitted", "survival_head_losses"), _same, _same, default={}),
    FittedAttribute("history_", ("fitted", "history"), list, list),
    FittedAttribute("best_epoch_", ("fitted", "best_epoch"), np.ndarray.tolist, np.asarray),
    # None in models saved before per-outcome stopping, whose outcomes all kept their network's best epoch.
    FittedAttribute("outcome_best_epoch_", ("fitted", "outcome_best_epoch"), np.ndarray.tolist,
                    lambda epochs: None if epochs is None else np.asarray(epochs), default=None),
    FittedAttribute("n_iter_", ("fitted", "n_iter"), np.ndarray.tolist, np.asarray),
    FittedAttribute("validation_metrics_", ("fitted", "validation_metrics"),
                    lambda table: table.to_dict(orient="split") if table is not None else None,
                    lambda table: pd.DataFrame(**table).rename_axis("outcome") if table is not None else None),
    FittedAttribute("calibrators_", ("fitted", "calibrators"),
                    lambda calibrators: {name: c.to_dict() for name, c in calibrators.items()},
                    lambda states: {name: calibrator_from_dict(state) for name, state in states.items()}, default={}),
    FittedAttribute("conformal_scores_", ("fitted", "conformal_scores"), _lists, _arrays, default={}),
    FittedAttribute("interval_scales_", ("fitted", "interval_scales"),
                    lambda scales: {name: scale.to_dict() for name, scale in scales.items()},
                    lambda states: {name: ScaleModel.from_dict(state) for name, state in states.items()}, default={}),
    FittedAttribute("preprocessor_", ("preprocessor",), ClinicalPreprocessor.to_dict, ClinicalPreprocessor.from_dict),
    FittedAttribute("explanation_background_", ("explanation_background",), Background.to_dict, Background.from_dict),
)


def state_of(model) -> dict:
    """The fitted state of ``model`` as nested JSON-ready dicts (weights apart)."""
    state = {"network": network_architecture(model.module_)}
    for attribute in FITTED_ATTRIBUTES:
        place, last = _place(state, attribute.key, create=True)
        present = attribute.default != OPTIONAL or hasattr(model, attribute.name)
        place[last] = attribute.to_json(getattr(model, attribute.name)) if present else None
    return state


def _place(state: dict, key: tuple[str, ...], create: bool = False) -> tuple[dict, str]:
    """The dict that holds ``key``'s last part, and that part (missing parents made when ``create``)."""
    *parents, last = key
    for parent in parents:
        state = state.setdefault(parent, {}) if create else state[parent]
    return state, last


def restore_state(model, state: dict, weights: dict) -> None:
    """Set every fitted attribute of ``model`` (a fresh estimator) from ``state`` and ``weights``."""
    for attribute in FITTED_ATTRIBUTES:
        place, last = _place(state, attribute.key)
        if attribute.default == OPTIONAL and place[last] is None:
            continue
        value = place[last] if attribute.default in (REQUIRED, OPTIONAL) else place.get(last, attribute.default)
        setattr(model, attribute.name, attribute.from_json(value))
    network = state["network"]
    model.module_ = MultiHeadEnsemble([
        MultiHeadNet(network["n_features"], network["hidden_layer_sizes"], network["head_sizes"], model.dropout,
                     network.get("head_hidden_layer_sizes"))  # absent from models saved before task-specific layers
        for _ in range(network["n_members"])
    ])
    model.module_.load_state_dict(weights)
    model.module_.eval()


def network_architecture(ensemble: MultiHeadEnsemble) -> dict:
    """What rebuilding the networks needs besides their weights."""
    first = ensemble.members[0]
    linears = [layer for layer in first.trunk if isinstance(layer, torch.nn.Linear)]
    heads = [head_layers(head) for head in first.heads]
    return {
        "n_features": linears[0].in_features if linears else (heads[0][0] or [heads[0][1]])[0].in_features,
        "hidden_layer_sizes": [layer.out_features for layer in linears],
        "head_sizes": [output.out_features for _, output in heads],
        "head_hidden_layer_sizes": [[layer.out_features for layer in hidden] for hidden, _ in heads],
        "n_members": len(ensemble.members),
    }

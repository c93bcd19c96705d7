"""The parameters of ``MultiTaskMLP`` and what each may be: scikit-learn's
``_parameter_constraints``, checked by ``fit`` before anything runs."""

from __future__ import annotations

from numbers import Integral, Real

from ._compat import Interval, StrOptions
from .calibration import ISOTONIC, TEMPERATURE
from .losses import EQUAL, UNCERTAINTY
from .training import ALTERNATE, JOINT
from .weighting import DWA, GRADNORM, PCGRAD

PARAMETER_CONSTRAINTS: dict = {
    "tasks": [dict, None],
    "hidden_layer_sizes": [tuple, list],
    "dropout": [Interval(Real, 0, 1, closed="left")],
    "learning_rate": [Interval(Real, 0, None, closed="neither")],
    "weight_decay": [Interval(Real, 0, None, closed="left")],
    "batch_size": [Interval(Integral, 1, None, closed="left")],
    "max_epochs": [Interval(Integral, 1, None, closed="left")],
    "early_stopping": ["boolean"],
    "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
    "patience": [Interval(Integral, 1, None, closed="left")],
    "loss_weighting": [StrOptions({EQUAL, UNCERTAINTY, DWA, GRADNORM, PCGRAD}), dict],
    "class_weight": [StrOptions({"balanced"}), dict, None],
    "random_state": ["random_state"],
    "device": [str],
    "verbose": ["verbose"],
    "ensemble_size": [Interval(Integral, 1, None, closed="left")],
    "log_transform": [StrOptions({"auto"}), list, None],
    "calibration": [StrOptions({TEMPERATURE, ISOTONIC}), None],
    "survival_intervals": [Interval(Integral, 1, None, closed="left")],
    "survival_horizons": [tuple, list, dict, None],
    "head_hidden_layer_sizes": [tuple, list, dict],
    "training": [StrOptions({JOINT, ALTERNATE})],
    "head_weight_decay": [Interval(Real, 0, None, closed="left"), dict, None],
    "self_supervision": [Interval(Real, 0, None, closed="left")],
}

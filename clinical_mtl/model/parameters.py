"""The parameters of ``MultiTaskMLP`` and what each may be: scikit-learn's
``_parameter_constraints``, checked by ``fit`` before anything runs.

The multi-task options
----------------------
Defaults are plain hard parameter sharing with joint training and equal
weights; each option below changes one thing.

- ``head_hidden_layer_sizes``: task-specific layers. Each head gets hidden
  layers of its own between the shared trunk and its output (a tuple for all
  heads, or a dict outcome -> tuple). Explanations stay exact (DeepLIFT runs
  through the head's layers, then the trunk).
- ``sharing="soft"``: one trunk per outcome with the widths of
  ``hidden_layer_sizes``, each head's first layers, tied by
  ``sharing_strength`` times the squared distance of every trunk's weights
  and biases from their mean over outcomes (Duong et al. 2015). The penalty
  does not depend on labels, so a trunk is pulled towards the others even in
  a step where its outcome has no label. Needs a trunk; GradNorm, PCGrad,
  self-supervision and the gradient cosines need a shared one and do not
  apply.
- ``training="alternate"``: each optimiser step uses one outcome's loss, the
  outcomes labelled in the batch taken in rotation; the trunk and that
  outcome's head move (see ``training.Rotation``). Every outcome's loss is
  still reported per epoch, and early stopping watches the same validation
  objective as joint training. Not with GradNorm or PCGrad, which need every
  outcome's gradient in one step.
- ``head_weight_decay``: AdamW weight decay of the heads' matrices, for all
  heads or per outcome (others keep ``weight_decay``).
- ``loss_weighting``: "equal", "label_share" (each outcome by the share of the
  batch labelled for it), "uncertainty", fixed weights, or the dynamic
  "dwa", "gradnorm" and "pcgrad" (:mod:`clinical_mtl.model.weighting`).
- ``self_supervision``: weight of a masked-feature reconstruction loss on the
  shared trunk, from every training row including unlabelled patients
  (:mod:`clinical_mtl.model.self_supervision`).
- ``early_stopping="per_outcome"``: each outcome with at least 30 labelled
  validation rows keeps the weights of its own best validation epoch, the
  others the joint objective's; training stops with the joint objective, so
  it costs no extra epoch (``early_stopping.OutcomeStopping``). Where the outcomes' best epochs
  differ, the fitted networks hold one copy of the trunk per outcome, as
  after soft sharing (``network.split_by_outcome``): predicting costs one
  trunk per outcome.
- Always on: every tenth epoch, the cosine between the outcomes' gradients
  on the shared trunk (:mod:`clinical_mtl.model.relatedness`).

Every option works with every task kind, survival included; all are saved
and loaded by the pickle-free format (task-specific layers as part of the
network's architecture, the rest as parameters).
"""

from __future__ import annotations

from numbers import Integral, Real

from ._compat import Interval, StrOptions
from .calibration import ISOTONIC, TEMPERATURE
from .conformal import INTERVAL_METHODS
from .early_stopping import PER_OUTCOME
from .losses import EQUAL, LABEL_SHARE, UNCERTAINTY
from .survival import AUTO_HEAD, COX_HEAD, INTERVAL_HEAD, MIXED_HEAD, PROPORTIONAL_HEAD
from .training import ALTERNATE, JOINT
from .weighting import DWA, GRADNORM, PCGRAD

PARAMETER_CONSTRAINTS: dict = {
    "tasks": [dict, None],
    "hidden_layer_sizes": [tuple, list],
    "dropout": [Interval(Real, 0, 1, closed="left")],
    "learning_rate": [Interval(Real, 0, None, closed="neither"), StrOptions({"auto"})],
    "weight_decay": [Interval(Real, 0, None, closed="left")],
    "batch_size": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
    "max_epochs": [Interval(Integral, 1, None, closed="left")],
    "early_stopping": ["boolean", StrOptions({PER_OUTCOME})],
    "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
    "patience": [Interval(Integral, 1, None, closed="left")],
    "loss_weighting": [StrOptions({EQUAL, LABEL_SHARE, UNCERTAINTY, DWA, GRADNORM, PCGRAD}), dict],
    "class_weight": [StrOptions({"balanced"}), dict, None],
    "random_state": ["random_state"],
    "device": [str],
    "verbose": ["verbose"],
    "ensemble_size": [Interval(Integral, 1, None, closed="left")],
    "log_transform": [StrOptions({"auto"}), list, None],
    "calibration": [StrOptions({TEMPERATURE, ISOTONIC}), None],
    "survival_intervals": [Interval(Integral, 1, None, closed="left")],
    "survival_horizons": [tuple, list, dict, None],
    "survival_head": [StrOptions({INTERVAL_HEAD, PROPORTIONAL_HEAD, AUTO_HEAD, COX_HEAD, MIXED_HEAD})],
    "interval_method": [StrOptions(set(INTERVAL_METHODS))],
    "head_hidden_layer_sizes": [tuple, list, dict],
    "training": [StrOptions({JOINT, ALTERNATE})],
    "head_weight_decay": [Interval(Real, 0, None, closed="left"), dict, None],
    "self_supervision": [Interval(Real, 0, None, closed="left")],
    "sharing": [StrOptions({"hard", "soft"})],
    "sharing_strength": [Interval(Real, 0, None, closed="left")],
}

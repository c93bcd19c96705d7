"""SHAP explanations per outcome, on the original clinical features, exact and batched.

Method
------
Every network of the ensemble is a stack of linear layers and ReLUs under a
link (sigmoid, softmax or the regression scale). Its outputs are explained
with DeepLIFT's rescale rule against each point of a small background, the
way ``shap.DeepExplainer`` does, but batched over patients and background
points in plain torch:

1. For a patient ``x`` and a background point ``r``, every ReLU gets the
   multiplier ``(relu(z(x)) - relu(z(r))) / (z(x) - z(r))`` (its slope where
   ``z(x) = z(r)``); multiplying the linear layers' weights and these
   multipliers from the heads down gives, per input column ``i``, a multiplier
   ``m_i`` with ``sum_i m_i (x_i - r_i) = h(x) - h(r)`` exactly, for every
   head output ``h``. The attribution of column ``i`` is ``m_i (x_i - r_i)``.
2. The link is carried through exactly: for a sigmoid, the attributions are
   multiplied by ``(s(h(x)) - s(h(r))) / (h(x) - h(r))``; for a softmax, by the
   softmax Jacobian integrated along the straight line from ``h(r)`` to
   ``h(x)`` (Gauss-Legendre quadrature with more nodes the larger the logit
   change, error below 1e-8), whose product with ``h(x) - h(r)`` is
   ``p(x) - p(r)``; regression values are multiplied by the target's scale.
   A survival outcome is explained as its probability of the event by each
   horizon ``tau``, ``F(tau) = 1 - S(tau)``. Its log survival is a sum of
   functions of one logit each, ``log S(tau) = sum_j log(1 - c_j h_j)``
   (:mod:`clinical_mtl.model.survival`), so the rescale rule is applied per
   logit, ``(g_j(z_j(x)) - g_j(z_j(r))) / (z_j(x) - z_j(r))``, which is exact,
   and once more through ``F = 1 - exp(log S)``.
3. Attributions are averaged over the background points (weighted by cluster
   size) and over the networks; the base value is the same average of the
   outputs at the background points. Hence, for every patient and output,
   ``base value + sum of attributions = model output`` up to float32 rounding
   (about 1e-6; checked to 1e-4 in the tests).
4. The columns that one clinical variable produced (its value and missing
   indicator, or its one-hot columns) are summed into that variable, which is
   exact as well.

Recalibration
-------------
Where the model recalibrates an outcome's probabilities (see
:mod:`clinical_mtl.model.calibration`), the probability attributions are carried
through that map ``g`` as well, so that they add up to the recalibrated
probability that ``predict_proba`` returns. The map acts on the ensemble's
probability, so it is applied at the ensemble level: the base value becomes
``g(b)`` of the base value ``b`` above, and for a binary outcome every
attribution is multiplied by ``(g(p(x)) - g(b)) / (p(x) - b)`` (the rescale
rule once more; ``g`` is increasing, so the ranking of the features is
kept). For several classes the attributions are multiplied by the Jacobian of
``g`` integrated along the straight line from ``b`` to ``p(x)`` (Gauss-Legendre
quadrature), plus a rank-one correction of the quadrature's remainder, which
makes the sum exact and keeps the attributions of the classes summing to 0.

Log-odds explanations rescale the probability attributions once more through
``logit``: ``(logit p(x) - logit b) / (p(x) - b)``, so they add up to the
log-odds of the ensemble's (recalibrated) probability.

Background
----------
Fixed at fit time by ``summarise_background``: k-means centres of the
training rows in the network's input space (at most 20), every centre the
mean of at least ``MIN_CLUSTER_SIZE`` patients and weighted by its cluster's
size. The background is a summary, not patient rows, and it is stored with
the model, so explanations need no training data later and are reproducible.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial

import numpy as np
import pandas as pd
import torch
from sklearn.cluster import KMeans

from .features import BOOLEAN, prepare_features
from .link_attributions import survival_link_slopes, through_calibration, through_link, to_log_odds
from .network import MultiHeadNet, head_layers
from .preprocessing import CategoricalEncoding
from .survival import SURVIVAL, check_horizons
from .tasks import BINARY, MULTICLASS, TaskSpec

BACKGROUND_CLUSTERS = 20
MIN_CLUSTER_SIZE = 5
MAX_CLUSTERING_ROWS = 5000
CHUNK_ROWS = 256
PROBABILITY, LOG_ODDS = "probability", "log_odds"


@dataclass(frozen=True)
class Background:
    """Reference points of the explanations, in the network's input space.

    Attributes
    ----------
    points : ndarray of shape (n_points, n_inputs), float32
        k-means centres of the training inputs.
    weights : ndarray of shape (n_points,)
        Share of training rows in each centre's cluster (sums to 1).
    """

    points: np.ndarray
    weights: np.ndarray

    def to_dict(self) -> dict:
        """Plain JSON-ready data."""
        return {"points": self.points.tolist(), "weights": self.weights.tolist()}

    @classmethod
    def from_dict(cls, state: dict) -> Background:
        """Inverse of ``to_dict``."""
        return cls(np.asarray(state["points"], dtype=np.float32), np.asarray(state["weights"]))


def summarise_background(inputs: np.ndarray, seed: int) -> Background:
    """Summarise training inputs into weighted k-means centres (see module docstring).

    Parameters
    ----------
    inputs : ndarray of shape (n_samples, n_inputs)
        Preprocessed training rows.
    seed : int
        Seeds the row sample and k-means.

    Returns
    -------
    Background
    """
    rng = np.random.default_rng(seed)
    sample = inputs if len(inputs) <= MAX_CLUSTERING_ROWS else inputs[
        rng.choice(len(inputs), MAX_CLUSTERING_ROWS, replace=False)
    ]
    n_clusters = max(1, min(BACKGROUND_CLUSTERS, len(sample) // MIN_CLUSTER_SIZE))
    labels = np.zeros(len(sample), dtype=int)
    if n_clusters > 1:
        labels = KMeans(n_clusters, n_init=3, random_state=seed).fit(sample).labels_
        sizes = np.bincount(labels, minlength=n_clusters)
        kept = np.flatnonzero(sizes >= MIN_CLUSTER_SIZE)
        if len(kept) < n_clusters:  # fold small clusters into the nearest kept centre
            centres = np.stack([sample[labels == k].mean(axis=0) for k in kept])
            distances = ((sample[:, None, :] - centres[None]) ** 2).sum(axis=2)
            labels = np.argmin(distances, axis=1)
    ids, counts = np.unique(labels, return_counts=True)
    points = np.stack([sample[labels == k].mean(axis=0) for k in ids]).astype(np.float32)
    return Background(points, counts / counts.sum())


@dataclass(frozen=True)
class Attributions:
    """SHAP values of one outcome as arrays: what ``explain_model`` wraps in a
    ``shap.Explanation``, without the patients' own values it also carries."""

    values: np.ndarray  # (n_samples, n_features), or (n_samples, n_features, n_outputs)
    base_values: np.ndarray  # (n_samples,), or (n_samples, n_outputs)
    feature_names: list
    output_names: str | list


def attributions(model, X, outcomes: Sequence[str] | None = None, *, output: str = PROBABILITY,
                 horizons=None) -> dict[str, Attributions]:
    """SHAP values of every requested outcome as arrays (see ``MultiTaskMLP.explain``
    for the parameters); the same values as ``explain_model``.

    Why apart: building a ``shap.Explanation`` walks every patient's values
    (``display_data`` is an object array), about 0.07 ms per patient, more than
    the attributions themselves cost; batch scoring's top contributions need
    the arrays only.
    """
    return _attributions(model, model.feature_frame(X), outcomes, output, horizons)


def explain_model(model, X, outcomes: Sequence[str] | None = None, *, output: str = PROBABILITY,
                  horizons=None) -> dict:
    """SHAP values of every requested outcome; see ``MultiTaskMLP.explain``."""
    import shap

    features = model.feature_frame(X)
    found = _attributions(model, features, outcomes, output, horizons)
    data, display = _raw_values(model, features)
    return {name: shap.Explanation(values=a.values, base_values=a.base_values, data=data, display_data=display,
                                   feature_names=a.feature_names, output_names=a.output_names)
            for name, a in found.items()}


def _attributions(model, features: pd.DataFrame, outcomes, output: str, horizons) -> dict[str, Attributions]:
    if output not in (PROBABILITY, LOG_ODDS):
        raise ValueError(f"output must be {PROBABILITY!r} or {LOG_ODDS!r}, got {output!r}.")
    specs = _at_horizons(_requested(model, outcomes), horizons)
    inputs = torch.from_numpy(np.ascontiguousarray(model.preprocessor_.transform(features)))
    groups = _group_matrix(model.preprocessor_)
    values, bases = _attribute(model, inputs, specs, model.explanation_background_)
    names = list(model.feature_names_in_) if hasattr(model, "feature_names_in_") else list(groups.columns)
    found = {}
    for spec in specs:
        grouped, base = _in_fixed_blocks(partial(_grouped_output, model, spec, groups.to_numpy(), output),
                                         values[spec.name], bases[spec.name])
        output_names = _output_names(spec)
        if grouped.shape[2] == 1:
            grouped, base, output_names = grouped[:, :, 0], base[:, 0], output_names[0]
        found[spec.name] = Attributions(grouped, base, names, output_names)
    return found


def _grouped_output(model, spec: TaskSpec, groups: np.ndarray, output: str, values: np.ndarray, base: np.ndarray):
    """Attributions per input column (n, k, d) -> per feature (n, f, k), through the
    recalibration and, if asked, into log-odds; with the base values (n, k)."""
    grouped = np.einsum("nkd,df->nfk", values, groups)
    if spec.name in model.calibrators_:
        grouped, base = through_calibration(spec, model.calibrators_[spec.name], grouped, base)
    if spec.kind != "regression" and output == LOG_ODDS:
        grouped, base = to_log_odds(grouped, base)
    return grouped, base


def _in_fixed_blocks(function, *arrays: np.ndarray):
    """``function`` of row blocks of ``arrays`` padded to ``CHUNK_ROWS`` rows (see
    ``fixed_blocks``: numpy's reductions and einsum also loop by shape), padding dropped."""
    tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in arrays]
    parts = []
    for blocks in zip(*(fixed_blocks(t, CHUNK_ROWS) for t in tensors)):
        n_rows = blocks[0][1]
        parts.append([result[:n_rows] for result in function(*(block.numpy() for block, _ in blocks))])
    return tuple(np.concatenate(results) for results in zip(*parts))


def _requested(model, outcomes: Sequence[str] | None) -> list[TaskSpec]:
    specs = {spec.name: spec for spec in model.task_specs_}
    if outcomes is None:
        return list(specs.values())
    unknown = [name for name in outcomes if name not in specs]
    if unknown:
        raise ValueError(f"outcomes {unknown} are not outcomes of this model; its outcomes are {list(specs)}.")
    return [specs[name] for name in outcomes]


def _at_horizons(specs: list[TaskSpec], horizons) -> list[TaskSpec]:
    """The requested outcomes, each survival outcome with the horizons it is to be
    explained at: ``horizons`` (any positive times; a sequence for every survival
    outcome, or a dict per outcome), its own where None or not named."""
    if horizons is None:
        return specs
    survival = [spec.name for spec in specs if spec.kind == SURVIVAL]
    if isinstance(horizons, Mapping):
        unknown = [name for name in horizons if name not in survival]
        if unknown:
            raise ValueError(f"horizons names {unknown}, which are not survival outcomes being explained; "
                             f"those are {survival}.")
        chosen = {name: check_horizons(times, name, "horizons") for name, times in horizons.items()}
    else:
        checked = check_horizons(horizons, parameter="horizons")
        chosen = dict.fromkeys(survival, checked)
    return [replace(spec, horizons=chosen[spec.name]) if spec.name in chosen else spec for spec in specs]


def _attribute(model, inputs: torch.Tensor, specs: list[TaskSpec], background: Background):
    """Attributions per input column (n, n_outputs, n_inputs) and base values (n, n_outputs)."""
    points = torch.from_numpy(background.points)
    weights = torch.from_numpy(background.weights).float()
    members = model.module_.members
    task_index = {spec.name: t for t, spec in enumerate(model.task_specs_)}
    values = {spec.name: [] for spec in specs}
    bases = {spec.name: None for spec in specs}
    for chunk, n_rows in fixed_blocks(inputs, CHUNK_ROWS):
        sums = {spec.name: 0.0 for spec in specs}
        base_sums = {spec.name: 0.0 for spec in specs}
        for member in members:
            member.eval()
            for spec, (phi, f_r) in zip(specs, _explained_outputs(member, chunk, points, specs, task_index)):
                sums[spec.name] = sums[spec.name] + torch.einsum("nmkd,m->nkd", phi, weights)
                base_sums[spec.name] = base_sums[spec.name] + f_r.T @ weights
        for spec in specs:
            values[spec.name].append((sums[spec.name][:n_rows] / len(members)).double().numpy())
            base = (base_sums[spec.name] / len(members)).double().numpy()
            bases[spec.name] = np.broadcast_to(base, (len(inputs), len(base))).copy()
    return {name: np.concatenate(parts) for name, parts in values.items()}, bases


@torch.no_grad()
def _explained_outputs(member: MultiHeadNet, x: torch.Tensor, r: torch.Tensor, specs, task_index: dict):
    """Per requested outcome of one network: attributions of its explained output
    (n, m, k, d) and that output at the background points (m, k).

    A survival head's link acts on its J logits through J x K rescale
    multipliers (``survival_link_slopes``); they are folded into the head's
    weights before the backward pass, which then carries K rows instead of J
    (the pass is linear in the multipliers it starts from, so this is exact).
    """
    linears, slopes, outputs_x, outputs_r, own = _forward(member, x, r)
    n, m = len(x), len(r)
    starts, finals = [], []
    for spec in specs:
        t = task_index[spec.name]
        weight = head_layers(member.heads[t])[1].weight  # (head width, last hidden width)
        if spec.kind == SURVIVAL:
            link, f_r = survival_link_slopes(spec, outputs_x[t], outputs_r[t])  # (n, m, K, J)
            start = torch.einsum("nmkj,jw->nmkw", link, weight)
            finals.append(f_r)
        else:
            start = weight.expand(n, m, *weight.shape)
            finals.append(None)
        starts.append(_through_layers(*own[t], start))
    phis = torch.split(_backward(linears, slopes, torch.cat(starts, dim=2), x, r),
                       [start.shape[2] for start in starts], dim=2)
    return [(phi, f_r) if f_r is not None else through_link(spec, phi, outputs_x[task_index[spec.name]],
                                                             outputs_r[task_index[spec.name]])
            for spec, phi, f_r in zip(specs, phis, finals)]


def fixed_blocks(rows: torch.Tensor, size: int):
    """Yield ``(block, n_real)``: ``rows`` cut into fresh tensors of exactly ``size``
    rows, the last one padded with copies of its last row.

    Why: float32 kernels (matrix products, vectorised loops) pick their blocking,
    and so their rounding, by a tensor's shape and alignment, so a patient's result
    would depend on how many others came with it. Fixed shapes make the output
    the same whatever the caller's chunking; each row's result depends only on the
    row (checked in ``tests/integration/test_chunk_invariance.py``).
    """
    for start in range(0, len(rows), size):
        part = rows[start : start + size]
        block = torch.empty((size, *rows.shape[1:]), dtype=rows.dtype)
        block[: len(part)] = part
        block[len(part) :] = part[-1]
        yield block, len(part)


@torch.no_grad()
def _deeplift(member: MultiHeadNet, x: torch.Tensor, r: torch.Tensor):
    """DeepLIFT-rescale attributions of every head output of one network.

    Returns, per head: attributions (n, m, width, n_inputs) of ``h(x) - h(r)``,
    logits at x (n, width) and at the background points (m, width).
    """
    linears, slopes, outputs_x, outputs_r, own = _forward(member, x, r)
    n, m = len(x), len(r)
    mixed = any(layers for layers, _ in own)  # then every head's multipliers are per (patient, point)
    starts = []
    for head, (layers, head_slopes) in zip(member.heads, own):
        weight = head_layers(head)[1].weight  # (outputs, width)
        starts.append(_through_layers(layers, head_slopes, weight.expand(n, m, *weight.shape) if mixed
                                      else weight[None, None]))
    attributions = _backward(linears, slopes, torch.cat(starts, dim=2), x, r)
    return torch.split(attributions, [start.shape[2] for start in starts], dim=2), outputs_x, outputs_r


def _forward(member: MultiHeadNet, x: torch.Tensor, r: torch.Tensor):
    """The forward pass at the patients ``x`` (n, d) and background points ``r`` (m, d).

    Returns the trunk's linear layers, the rescale slope of every hidden unit
    for every (patient, point) pair (n, m, width) per layer, per head its
    outputs at x (n, width) and at r (m, width), and per head its own hidden
    layers with their slopes (empty for a linear head). float32: float64 is
    several times slower here and the sums agree to ~1e-6.
    """
    linears = [layer for layer in member.trunk if isinstance(layer, torch.nn.Linear)]
    a_x, a_r, slopes = _rescale_layers(linears, x, r)
    heads = [head_layers(head) for head in member.heads]
    if not any(hidden for hidden, _ in heads):
        head_weight = torch.cat([output.weight for _, output in heads])
        head_bias = torch.cat([output.bias for _, output in heads])
        out_x = torch.addmm(head_bias[:, None], head_weight, a_x.T).T.contiguous()
        out_r = a_r @ head_weight.T + head_bias
        widths = [output.out_features for _, output in heads]
        own = [([], [])] * len(heads)
        return linears, slopes, torch.split(out_x, widths, dim=1), torch.split(out_r, widths, dim=1), own
    outputs_x, outputs_r, own = [], [], []
    for hidden, output in heads:
        h_x, h_r, head_slopes = _rescale_layers(hidden, a_x, a_r)
        outputs_x.append(torch.addmm(output.bias[:, None], output.weight, h_x.T).T.contiguous())
        outputs_r.append(output(h_r))
        own.append((hidden, head_slopes))
    return linears, slopes, outputs_x, outputs_r, own


def _rescale_layers(linears, a_x: torch.Tensor, a_r: torch.Tensor):
    """Activations after ``linears`` (each followed by ReLU) at x and r, and each
    layer's rescale slopes (n, m, width)."""
    slopes = []
    for layer in linears:
        # Patients along the product's columns, as in predict_feature_major: with
        # patients along its rows, a row's rounding depended on its place in the block.
        z_x, z_r = torch.addmm(layer.bias[:, None], layer.weight, a_x.T).T.contiguous(), layer(a_r)
        a_x, a_r = torch.relu(z_x), torch.relu(z_r)
        delta_z = z_x[:, None, :] - z_r[None, :, :]
        delta_a = a_x[:, None, :] - a_r[None, :, :]
        flat = delta_z.abs() < 1e-6
        slope = torch.where(flat, (z_x[:, None, :] > 0).float(), delta_a / torch.where(flat, 1.0, delta_z))
        slopes.append(slope)
    return a_x, a_r, slopes


def _through_layers(linears, slopes, multipliers: torch.Tensor) -> torch.Tensor:
    """Multipliers on the outputs of ``linears`` (n or 1, m or 1, k, width) carried
    back to their inputs through the rescale slopes: (n, m, k, input width)."""
    for layer, slope in zip(reversed(linears), reversed(slopes)):
        n, m = slope.shape[:2]
        multipliers = ((multipliers * slope[:, :, None, :]).reshape(-1, layer.weight.shape[0]) @ layer.weight)
        multipliers = multipliers.reshape(n, m, -1, layer.weight.shape[1])
    return multipliers


def _backward(linears, slopes, multipliers: torch.Tensor, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Attributions (n, m, k, d) of k outputs whose multipliers on the last hidden
    layer (or on the inputs, without a trunk) are ``multipliers`` (n or 1, m or 1, k, width)."""
    return _through_layers(linears, slopes, multipliers) * (x[:, None, :] - r[None, :, :])[:, :, None, :]


def _group_matrix(preprocessor) -> pd.DataFrame:
    """(n_inputs, n_features) indicator of which input column belongs to which feature."""
    matrix = np.zeros((preprocessor.n_features_out_, len(preprocessor.feature_groups_)))
    for f, columns in enumerate(preprocessor.feature_groups_.values()):
        matrix[columns, f] = 1.0
    return pd.DataFrame(matrix, columns=list(preprocessor.feature_groups_))


def _raw_values(model, features: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The patients' own values: numeric ``data`` (categories as their index in the
    training categories, -1 if unseen, NaN if missing) and ``display_data``
    (numbers, True/False, category labels; None where missing)."""
    preprocessor = model.preprocessor_
    columns = prepare_features(features, preprocessor.feature_kinds_)
    data = np.empty((len(features), len(columns)))
    display = np.empty((len(features), len(columns)), dtype=object)
    for f, encoding in enumerate(preprocessor.encodings_):
        values = columns[encoding.name]
        kind = preprocessor.feature_kinds_[encoding.name]
        if isinstance(encoding, CategoricalEncoding):
            missing = values.codes < 0
            codes = values.set_categories(list(encoding.categories)).codes.astype(float)
            data[:, f] = np.where(missing, np.nan, codes)
            display[:, f] = np.where(missing, None, np.asarray(values, dtype=object))
        else:
            missing = np.isnan(values)
            data[:, f] = values
            shown = values == 1.0 if kind == BOOLEAN else values
            display[:, f] = np.where(missing, None, shown.astype(object))
    return data, display


def _output_names(spec: TaskSpec) -> list[str]:
    if spec.kind == SURVIVAL:
        return [f"{spec.name} event by {horizon:g}" for horizon in spec.horizons]
    if spec.kind == BINARY:
        return [f"{spec.name}={spec.classes[1]}"]
    if spec.kind == MULTICLASS:
        return [f"{spec.name}={label}" for label in spec.classes]
    return [spec.name]


def global_importance(explanations: dict) -> pd.DataFrame:
    """Mean absolute SHAP value of every feature, per outcome (and class).

    Parameters
    ----------
    explanations : dict of str to shap.Explanation
        As returned by ``MultiTaskMLP.explain``.

    Returns
    -------
    DataFrame
        Index: features; columns: outcomes (``outcome=class`` for multi-class);
        sorted by the first column.
    """
    columns = {}
    for name, explanation in explanations.items():
        values = np.abs(explanation.values).mean(axis=0)
        if values.ndim == 1:
            columns[name] = values
        else:
            for k, output_name in enumerate(explanation.output_names):
                columns[output_name] = values[:, k]
    first = next(iter(explanations.values()))
    table = pd.DataFrame(columns, index=pd.Index(first.feature_names, name="feature"))
    return table.sort_values(table.columns[0], ascending=False)


def contribution_ranks(values: np.ndarray, top_k: int) -> np.ndarray:
    """Positions of the ``top_k`` largest contributions by absolute value, row by row.

    Parameters
    ----------
    values : ndarray of shape (n_samples, n_features)
    top_k : int
        Capped at the number of features.

    Returns
    -------
    ndarray of shape (n_samples, min(top_k, n_features)), int
        Largest first; ties keep the features' order.
    """
    return np.argsort(-np.abs(values), axis=1, kind="stable")[:, : min(top_k, values.shape[1])]



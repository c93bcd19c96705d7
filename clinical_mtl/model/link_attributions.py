"""From attributions of a head's raw outputs to attributions of what its outcome predicts.

DeepLIFT (:mod:`clinical_mtl.model.explanation`) attributes the heads' logits or
standardised values; the functions here carry those attributions, exactly,
through each outcome's link (sigmoid, softmax, target scale, the survival
curve), through a classification outcome's recalibration map, and into
log-odds. The maths is in the docstring of :mod:`clinical_mtl.model.explanation`.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from numpy.polynomial.legendre import leggauss
from scipy.special import logit

from .survival import SURVIVAL, interpolation_weights
from .tasks import BINARY, MULTICLASS, TaskSpec

CALIBRATION_NODES = 32


def through_link(spec: TaskSpec, phi: torch.Tensor, h_x: torch.Tensor, h_r: torch.Tensor):
    """Carry logit attributions (n, m, width, d) through the outcome's link.

    Returns attributions of the explained output (n, m, k, d) and its values at
    the background points (m, k): k = 1 for binary (the positive class) and
    regression, k = n_classes for multi-class.
    """
    if spec.kind == BINARY:
        p_x, p_r = torch.sigmoid(h_x), torch.sigmoid(h_r)  # (n, 1), (m, 1)
        delta_h = h_x[:, None, :] - h_r[None, :, :]
        flat = delta_h.abs() < 1e-6
        slope = torch.where(flat, (p_x * (1 - p_x))[:, None, :], (p_x[:, None, :] - p_r[None, :, :])
                            / torch.where(flat, 1.0, delta_h))
        return phi * slope[..., None], p_r
    if spec.kind == MULTICLASS:
        delta_h = h_x[:, None, :] - h_r[None, :, :]  # (n, m, k)
        # Nodes per patient (its largest logit change), not per chunk: each level is
        # computed for the whole block and kept where it is the patient's own.
        levels = node_levels(delta_h.abs().amax(dim=(1, 2)))
        jacobian = None
        for level in torch.unique(levels).tolist():
            t, w = gauss_legendre(level)
            p = torch.softmax(h_r[None, None, :, :] + t[:, None, None, None] * delta_h[None], dim=-1)  # (q, n, m, k)
            # Integral over the path of the softmax Jacobian diag(p) - p p^T.
            at_level = torch.diag_embed(torch.einsum("q,qnmc->nmc", w, p)) - torch.einsum(
                "q,qnmc,qnmd->nmcd", w, p, p
            )
            jacobian = at_level if jacobian is None else torch.where(
                (levels == level)[:, None, None, None], at_level, jacobian)
        return torch.einsum("nmcd,nmdi->nmci", jacobian, phi), torch.softmax(h_r, dim=-1)
    if spec.kind == SURVIVAL:
        slopes, f_r = survival_link_slopes(spec, h_x, h_r)
        return torch.einsum("nmkj,nmjd->nmkd", slopes, phi), f_r
    return phi * spec.target_scale, h_r * spec.target_scale + spec.target_mean


def survival_link_slopes(spec: TaskSpec, z_x: torch.Tensor, z_r: torch.Tensor):
    """Rescale multipliers from hazard logits to the event probability by each horizon.

    ``F(tau_k) = 1 - prod_j (1 - c_kj sigmoid(z_j))``: the rescale rule per logit
    ``j`` (exact: ``log S`` is a sum of functions of one logit each), then once more
    through ``F = 1 - exp(log S)``. The attribution of ``F(tau_k)`` is
    ``sum_j slopes[..., k, j] * phi_j`` for the logit attributions ``phi``.

    Parameters
    ----------
    spec : TaskSpec
        A survival outcome.
    z_x : Tensor of shape (n, J)
        Hazard logits of the patients.
    z_r : Tensor of shape (m, J)
        Hazard logits of the background points.

    Returns
    -------
    slopes : Tensor of shape (n, m, K, J)
    f_r : Tensor of shape (m, K)
        The event probabilities at the background points.
    """
    c = torch.from_numpy(interpolation_weights(spec.cut_points, spec.horizons)).to(z_x.dtype)  # (K, J)

    def log_terms(z: torch.Tensor) -> torch.Tensor:  # log(1 - c sigmoid(z)), stable: (..., K, J)
        z = z[..., None, :]
        return torch.log1p((1 - c) * torch.exp(torch.clamp(z, max=80.0))) - torch.nn.functional.softplus(z)

    g_x, g_r = log_terms(z_x), log_terms(z_r)  # (n, K, J), (m, K, J)
    delta_z = (z_x[:, None, :] - z_r[None, :, :])[:, :, None, :]  # (n, m, 1, J)
    flat = delta_z.abs() < 1e-6
    s_x = torch.sigmoid(z_x)[:, None, None, :]
    derivative = -c * s_x * (1 - s_x) / (1 - c * s_x)
    slope = torch.where(flat, derivative, (g_x[:, None] - g_r[None]) / torch.where(flat, 1.0, delta_z))
    log_x, log_r = g_x.sum(dim=-1), g_r.sum(dim=-1)  # (n, K), (m, K)
    delta_log = log_x[:, None, :] - log_r[None, :, :]
    flat = delta_log.abs() < 1e-7
    link = torch.where(flat, -torch.exp(log_x)[:, None, :],
                       (torch.exp(log_r)[None] - torch.exp(log_x)[:, None]) / torch.where(flat, 1.0, delta_log))
    return slope * link[..., None], 1 - torch.exp(log_r)


NODE_LEVELS = (12, 16, 24, 32, 48, 64, 96, 128, 192, 256)


def node_levels(largest_change: torch.Tensor) -> torch.Tensor:
    """Gauss-Legendre node counts for integrating the softmax along paths whose
    logits move by up to ``largest_change`` (one per patient): the nearest
    singularity is pi / largest_change away, so the count grows with it
    (``1.2 * change + 8``), rounded up to one of ``NODE_LEVELS``."""
    needed = torch.ceil(1.2 * largest_change.double()) + 8
    levels = torch.tensor(NODE_LEVELS)
    return levels[torch.searchsorted(levels.double(), needed).clamp(max=len(NODE_LEVELS) - 1)]


@lru_cache(maxsize=32)
def gauss_legendre(n_nodes: int) -> tuple[torch.Tensor, torch.Tensor]:
    nodes, weights = leggauss(n_nodes)
    return torch.from_numpy((nodes + 1) / 2).float(), torch.from_numpy(weights / 2).float()


def through_calibration(spec: TaskSpec, calibrator, values: np.ndarray, base: np.ndarray):
    """Carry probability attributions (n, f, k) and base values (n, k) through the
    recalibration map of a classification outcome (see the module docstring); k = 1
    (the positive class) for a binary outcome."""
    total = base + values.sum(axis=1)  # the explained probabilities
    if spec.kind == BINARY:

        def calibrated(p: np.ndarray) -> np.ndarray:
            p = np.clip(p, 0.0, 1.0)
            return calibrator.transform(np.column_stack([1.0 - p, p]))[:, 1]

        p, b = total[:, 0], base[:, 0]
        delta = p - b
        flat = np.abs(delta) < 1e-9
        jacobian = calibrator.jacobian(np.column_stack([1.0 - p, p]))
        derivative = jacobian[:, 1, 1] - jacobian[:, 1, 0]  # d g(1 - p, p)_1 / dp
        slope = np.where(flat, derivative, (calibrated(p) - calibrated(b)) / np.where(flat, 1.0, delta))
        return values * slope[:, None, None], calibrated(b)[:, None]
    delta = total - base
    nodes, weights = leggauss(CALIBRATION_NODES)
    nodes, weights = (nodes + 1) / 2, weights / 2  # on [0, 1]
    jacobian = sum(w * calibrator.jacobian(base + t * delta) for t, w in zip(nodes, weights))
    remainder = calibrator.transform(total) - calibrator.transform(base) - np.einsum("ncd,nd->nc", jacobian, delta)
    norm = np.einsum("nd,nd->n", delta, delta)
    correction = remainder[:, :, None] * delta[:, None, :] / np.where(norm > 0, norm, 1.0)[:, None, None]
    jacobian = jacobian + np.where(norm[:, None, None] > 0, correction, 0.0)
    return np.einsum("ncd,nfd->nfc", jacobian, values), calibrator.transform(base)


def to_log_odds(values: np.ndarray, base: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rescale probability attributions (n, f, k) and bases (n, k) through logit."""
    total = base + values.sum(axis=1)  # the explained probabilities
    p = np.clip(total, 1e-12, 1 - 1e-12)
    b = np.clip(base, 1e-12, 1 - 1e-12)
    delta = p - b
    flat = np.abs(delta) < 1e-12
    slope = np.where(flat, 1 / (b * (1 - b)), (logit(p) - logit(b)) / np.where(flat, 1.0, delta))
    return values * slope[:, None, :], logit(b)

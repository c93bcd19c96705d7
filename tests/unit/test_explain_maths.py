"""The explanation maths one piece at a time, against float64 references written
independently of ``clinical_mtl.model.explanation`` (loops, fine quadratures, closed forms).

Fast on purpose: no fitted model, so that mutation testing can run it per mutant.
"""

import math

import numpy as np
import pytest
import torch
from scipy.special import expit, logit, softmax

from clinical_mtl.model.calibration import IsotonicCalibration, TemperatureScaling
from clinical_mtl.model.explanation import MAX_CLUSTERING_ROWS, _deeplift, fixed_blocks, summarise_background
from clinical_mtl.model.link_attributions import (
    NODE_LEVELS,
    gauss_legendre,
    node_levels,
    through_calibration,
    through_link,
    to_log_odds,
)
from clinical_mtl.model.network import MultiHeadNet
from clinical_mtl.model.tasks import BINARY, MULTICLASS, REGRESSION, TaskSpec


def _as_pairs(background):
    """(point, weight) rows sorted, so that cluster numbering does not matter."""
    rows = np.column_stack([background.points.astype(np.float64), background.weights])
    return rows[np.lexsort(rows.T[::-1])]


# -- summarise_background -------------------------------------------------------------------------


@pytest.mark.parametrize("n_rows", [1, 6, 9])
def test_fewer_than_two_clusters_of_rows_give_their_mean(n_rows):
    inputs = np.arange(3 * n_rows, dtype=np.float32).reshape(n_rows, 3)  # room for one cluster of 5 rows
    background = summarise_background(inputs, seed=0)
    np.testing.assert_allclose(background.points, inputs.mean(axis=0, keepdims=True))
    np.testing.assert_array_equal(background.weights, [1.0])


def test_two_groups_of_the_minimum_size_are_both_kept():
    group = np.array([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [0.1, 0.1], [0.05, 0.05]])
    inputs = np.vstack([group, group + 10.0]).astype(np.float32)  # 10 rows -> 2 clusters of 5
    expected = np.array([[0.05, 0.05, 0.5], [10.05, 10.05, 0.5]])
    np.testing.assert_allclose(_as_pairs(summarise_background(inputs, seed=0)), expected, atol=1e-6)


def test_small_clusters_fold_into_the_nearest_kept_centre():
    # Three distinct rows repeated 5, 5 and 10 times: 20 rows ask for 4 clusters, k-means
    # finds 3 and leaves one empty, which is folded away; the weights are the shares.
    a, b, c = [0.0, 4.0, 1.0], [3.0, -2.0, 0.0], [-5.0, 0.0, 2.0]
    inputs = np.array([a] * 5 + [b] * 5 + [c] * 10, dtype=np.float32)
    expected = np.array(sorted([[*a, 0.25], [*b, 0.25], [*c, 0.5]]))
    with pytest.warns(Warning):  # scikit-learn: fewer distinct points than clusters
        background = summarise_background(inputs, seed=0)
    np.testing.assert_allclose(_as_pairs(background), expected, atol=1e-6)


def test_folded_rows_join_the_centre_nearest_in_euclidean_distance():
    # 5 rows each at a and b, and 3 rows d between them but nearer b: 13 rows ask for
    # 2 clusters; k-means may give d a cluster of its own (3 < 5 rows) or not, and in
    # either case d ends in b's cluster.
    a, b, d = np.array([0.0, 0.0]), np.array([10.0, 0.0]), np.array([7.0, 0.0])
    inputs = np.array([a] * 5 + [b] * 5 + [d] * 3, dtype=np.float32)
    background = summarise_background(inputs, seed=0)
    expected = np.array([[0.0, 0.0, 5 / 13], [(5 * 10.0 + 3 * 7.0) / 8, 0.0, 8 / 13]])
    np.testing.assert_allclose(_as_pairs(background), expected, atol=1e-6)


def test_large_inputs_are_summarised_from_a_seeded_sample_without_replacement():
    rng = np.random.default_rng(3)
    inputs = rng.normal(size=(MAX_CLUSTERING_ROWS + 1000, 2)).astype(np.float32)
    sample = inputs[np.random.default_rng(7).choice(len(inputs), MAX_CLUSTERING_ROWS, replace=False)]
    assert len(np.unique(sample, axis=0)) == MAX_CLUSTERING_ROWS
    np.testing.assert_array_equal(_as_pairs(summarise_background(inputs, seed=7)),
                                  _as_pairs(summarise_background(sample, seed=7)))


def test_background_weights_are_cluster_shares():
    rng = np.random.default_rng(0)
    inputs = np.vstack([rng.normal(0, 0.1, (30, 2)), rng.normal(5, 0.1, (10, 2))]).astype(np.float32)
    background = summarise_background(inputs, seed=0)
    assert background.weights.sum() == pytest.approx(1.0, abs=1e-12)
    # each point is the weighted mean of its rows, so the weighted mean of the points is the mean
    np.testing.assert_allclose(background.weights @ background.points, inputs.mean(axis=0), atol=1e-5)
    assert len(background.points) <= len(inputs) // 5


# -- fixed_blocks ---------------------------------------------------------------------------------


def test_fixed_blocks_pad_the_last_block_with_its_last_row():
    rows = torch.arange(14.0).reshape(7, 2)
    blocks = list(fixed_blocks(rows, 4))
    assert [n for _, n in blocks] == [4, 3]
    torch.testing.assert_close(blocks[0][0], rows[:4])
    torch.testing.assert_close(blocks[1][0], torch.stack([rows[4], rows[5], rows[6], rows[6]]))
    assert all(block.shape == (4, 2) for block, _ in blocks)


# -- DeepLIFT through the trunk -------------------------------------------------------------------


def _reference_deeplift(net: MultiHeadNet, x: np.ndarray, r: np.ndarray):
    """Rescale-rule attributions (outputs, inputs) of one patient against one point, float64,
    by the chain rule layer by layer; a ReLU whose input does not move has torch's slope
    (1 above 0, 0 at or below)."""
    linears = [layer for layer in net.trunk if isinstance(layer, torch.nn.Linear)]
    a_x, a_r, multiplier = _reference_relu_chain(linears, x, r, np.eye(len(x)))
    attributions, outputs_x, outputs_r = [], [], []
    for head in net.heads:  # a head's own hidden layers (task-specific layers) continue the chain
        layers = [layer for layer in (head if isinstance(head, torch.nn.Sequential) else [head])
                  if isinstance(layer, torch.nn.Linear)]
        h_x, h_r, head_multiplier = _reference_relu_chain(layers[:-1], a_x, a_r, multiplier)
        weight, bias = layers[-1].weight.detach().double().numpy(), layers[-1].bias.detach().double().numpy()
        attributions.append((weight @ head_multiplier) * (x - r)[None, :])
        outputs_x.append(weight @ h_x + bias)
        outputs_r.append(weight @ h_r + bias)
    return np.vstack(attributions), np.concatenate(outputs_x), np.concatenate(outputs_r)


def _reference_relu_chain(linears, a_x, a_r, multiplier):
    for layer in linears:
        weight, bias = layer.weight.detach().double().numpy(), layer.bias.detach().double().numpy()
        z_x, z_r = weight @ a_x + bias, weight @ a_r + bias
        slope = np.empty_like(z_x)
        for j in range(len(z_x)):
            if z_x[j] == z_r[j]:
                slope[j] = 1.0 if z_x[j] > 0 else 0.0
            else:
                slope[j] = (max(z_x[j], 0) - max(z_r[j], 0)) / (z_x[j] - z_r[j])
        multiplier = (slope[:, None] * weight) @ multiplier
        a_x, a_r = np.maximum(z_x, 0), np.maximum(z_r, 0)
    return a_x, a_r, multiplier


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    net = MultiHeadNet(3, (4, 5), head_sizes=(1, 3), dropout=0.0).eval()
    with torch.no_grad():
        # Two first-layer units that do not move between the patient and the point below
        # (their weights are orthogonal to x - r), one resting at exactly 0 and one at 0.5:
        # the flat-ReLU convention decides their multipliers.
        net.trunk[0].weight[0] = torch.tensor([1.0, -1.0, 0.0])
        net.trunk[0].bias[0] = 0.0
        net.trunk[0].weight[1] = torch.tensor([2.0, -2.0, 0.0])
        net.trunk[0].bias[1] = 0.5
    return net


def test_deeplift_matches_the_layer_by_layer_rescale_rule(net):
    rng = np.random.default_rng(1)
    x = np.vstack([[1.0, 1.0, 0.0], rng.normal(size=(3, 3))]).astype(np.float32)
    r = np.vstack([[2.0, 2.0, 5.0], rng.normal(size=(2, 3))]).astype(np.float32)
    attributions = _assert_deeplift_matches_the_reference(net, x, r)
    assert [a.shape for a in attributions] == [(4, 3, 1, 3), (4, 3, 3, 3)]


def _assert_deeplift_matches_the_reference(net, x: np.ndarray, r: np.ndarray):
    """``_deeplift`` of every patient and point against ``_reference_deeplift``; returns the attributions."""
    attributions, logits_x, logits_r = _deeplift(net, torch.from_numpy(x), torch.from_numpy(r))
    together = torch.cat(attributions, dim=2).double().numpy()
    out_x, out_r = torch.cat(logits_x, dim=1).double().numpy(), torch.cat(logits_r, dim=1).double().numpy()
    for i in range(len(x)):
        for j in range(len(r)):
            expected, h_x, h_r = _reference_deeplift(net, x[i].astype(np.float64), r[j].astype(np.float64))
            np.testing.assert_allclose(together[i, j], expected, atol=1e-5, err_msg=f"patient {i}, point {j}")
            np.testing.assert_allclose(out_x[i], h_x, atol=1e-5)
            np.testing.assert_allclose(out_r[j], h_r, atol=1e-5)
            np.testing.assert_allclose(together[i, j].sum(axis=1), h_x - h_r, atol=1e-5)  # exact sums
    return attributions


@pytest.mark.parametrize("trunk", [(4,), ()])
def test_deeplift_through_task_specific_layers_matches_the_rescale_rule(trunk):
    torch.manual_seed(3)
    net = MultiHeadNet(3, trunk, head_sizes=(1, 3, 2), dropout=0.0,
                       head_hidden_layer_sizes=((5,), (), (3, 2))).eval()
    rng = np.random.default_rng(4)
    x, r = rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=(3, 3)).astype(np.float32)
    attributions = _assert_deeplift_matches_the_reference(net, x, r)
    assert [a.shape[2] for a in attributions] == [1, 3, 2]


def test_deeplift_of_a_net_without_trunk_is_weight_times_difference():
    torch.manual_seed(2)
    net = MultiHeadNet(3, (), head_sizes=(2,), dropout=0.0).eval()
    x, r = torch.tensor([[1.0, -2.0, 3.0]]), torch.tensor([[0.5, 0.5, 0.5]])
    (attributions,), _, _ = _deeplift(net, x, r)
    expected = net.heads[0].weight.detach() * (x - r)
    torch.testing.assert_close(attributions[0, 0], expected)


# -- through the link -----------------------------------------------------------------------------


def test_binary_link_rescales_by_the_sigmoid_secant_or_its_slope_where_flat():
    spec = TaskSpec("y", BINARY, classes=(0, 1))
    h_x = torch.tensor([[0.3], [-1.2]])
    h_r = torch.tensor([[0.3], [2.0]])  # patient 0 and point 0 share their logit: flat
    phi = torch.tensor(np.random.default_rng(0).normal(size=(2, 2, 1, 3)), dtype=torch.float32)
    values, at_points = through_link(spec, phi, h_x, h_r)
    torch.testing.assert_close(at_points, torch.sigmoid(h_r))
    for i in range(2):
        for j in range(2):
            hx, hr = float(h_x[i, 0]), float(h_r[j, 0])
            slope = expit(hx) * (1 - expit(hx)) if hx == hr else (expit(hx) - expit(hr)) / (hx - hr)
            np.testing.assert_allclose(values[i, j, 0].numpy(), slope * phi[i, j, 0].numpy(), rtol=1e-5)


def _softmax_path_integral(h_r: np.ndarray, delta: np.ndarray, n: int = 20000) -> np.ndarray:
    """Midpoint rule of the softmax Jacobian along h_r + t delta, t in [0, 1], float64."""
    total = np.zeros((len(h_r), len(h_r)))
    for t in (np.arange(n) + 0.5) / n:
        p = softmax(h_r + t * delta)
        total += np.diag(p) - np.outer(p, p)
    return total / n


@pytest.mark.parametrize("scale", [1.0, 40.0])
def test_multiclass_link_integrates_the_softmax_jacobian_along_the_path(scale):
    spec = TaskSpec("y", MULTICLASS, classes=("a", "b", "c"))
    rng = np.random.default_rng(4)
    # Two patients whose logits move by very different amounts, so they get different
    # numbers of nodes within one block.
    h_x = np.array([[0.2, -0.1, 0.4], [3.0 * scale, -2.0 * scale, 1.0]], dtype=np.float32)
    h_r = np.array([[0.0, 0.5, -0.5]], dtype=np.float32)
    delta = h_x[:, None, :] - h_r[None]
    phi = rng.normal(size=(2, 1, 3, 4))
    phi[..., -1] += delta[..., :] - phi.sum(axis=-1)  # columns summing to the logit change
    values, at_points = through_link(spec, torch.tensor(phi, dtype=torch.float32),
                                      torch.from_numpy(h_x), torch.from_numpy(h_r))
    torch.testing.assert_close(at_points, torch.softmax(torch.from_numpy(h_r), dim=-1))
    for i in range(2):
        jacobian = _softmax_path_integral(h_r[0].astype(np.float64), delta[i, 0].astype(np.float64))
        np.testing.assert_allclose(values[i, 0].numpy(), jacobian @ phi[i, 0], rtol=2e-5, atol=2e-6)  # float32
        np.testing.assert_allclose(values[i, 0].numpy().sum(axis=1),
                                   softmax(h_x[i].astype(np.float64)) - softmax(h_r[0].astype(np.float64)),
                                   rtol=2e-5, atol=2e-6)


def test_regression_link_applies_the_target_scale():
    spec = TaskSpec("y", REGRESSION, target_mean=3.0, target_scale=2.5)
    phi = torch.tensor([[[[1.0, -2.0]]]])
    values, at_points = through_link(spec, phi, torch.tensor([[0.1]]), torch.tensor([[0.4]]))
    torch.testing.assert_close(values, phi * 2.5)
    torch.testing.assert_close(at_points, torch.tensor([[0.4 * 2.5 + 3.0]]))


def testnode_levels_are_the_smallest_level_covering_one_point_two_times_the_change_plus_eight():
    changes = np.concatenate([np.linspace(0.0, 300.0, 3001), [10 / 3 - 1e-3, 3.3, 1e6]])
    expected = [next((level for level in NODE_LEVELS if level >= math.ceil(1.2 * c) + 8), NODE_LEVELS[-1])
                for c in changes]
    assert node_levels(torch.tensor(changes)).tolist() == expected


@pytest.mark.parametrize("n_nodes", [1, 3, 12])
def testgauss_legendre_on_the_unit_interval_is_exact_for_polynomials_of_its_degree(n_nodes):
    nodes, weights = gauss_legendre(n_nodes)
    assert len(nodes) == n_nodes and ((nodes > 0) & (nodes < 1)).all()
    for k in range(2 * n_nodes):
        assert float((weights.double() * nodes.double() ** k).sum()) == pytest.approx(1 / (k + 1), rel=1e-6)


# -- through recalibration and into log-odds ------------------------------------------------------


def _split(values_sum: np.ndarray, n_features: int, rng) -> np.ndarray:
    """Random attributions (n, f, k) whose feature sums are ``values_sum`` (n, k)."""
    parts = rng.normal(size=(len(values_sum), n_features, values_sum.shape[1]))
    parts[:, -1] += values_sum - parts.sum(axis=1)
    return parts


def test_binary_recalibration_rescales_by_the_secant_of_the_map():
    calibrator = IsotonicCalibration(((np.array([0.0, 0.3, 0.6, 1.0]), np.array([0.0, 0.1, 0.8, 1.0])),))
    g = lambda p: float(np.interp(p, [0.0, 0.3, 0.6, 1.0], [0.0, 0.1, 0.8, 1.0]))  # noqa: E731
    rng = np.random.default_rng(0)
    base = np.array([[0.2], [0.5], [0.4]])
    total = np.array([[0.7], [0.5], [0.1]])  # the second patient sits at the base: flat
    values = _split(total - base, 4, rng)
    values[1] = [[0.3], [-0.1], [-0.2], [0.0]]
    out, out_base = through_calibration(TaskSpec("y", BINARY, classes=(0, 1)), calibrator, values, base)
    np.testing.assert_allclose(out_base[:, 0], [g(b) for b in base[:, 0]])
    for n in range(3):
        p, b = total[n, 0], base[n, 0]
        slope = 0.7 / 0.3 if p == b else (g(p) - g(b)) / (p - b)  # at p = 0.5 the map's slope is 0.7/0.3
        np.testing.assert_allclose(out[n], values[n] * slope, atol=1e-12)
    np.testing.assert_allclose(out_base[:, 0] + out.sum(axis=1)[:, 0], [g(p) for p in total[:, 0]], atol=1e-12)


def test_binary_recalibration_clips_the_probabilities_into_the_unit_interval():
    calibrator = TemperatureScaling(2.0)
    base, values = np.array([[1.0]]), np.array([[[0.0]]])  # base exactly 1
    out, out_base = through_calibration(TaskSpec("y", BINARY, classes=(0, 1)), calibrator, values + 0, base)
    assert out_base[0, 0] == pytest.approx(1.0)
    out, out_base = through_calibration(TaskSpec("y", BINARY, classes=(0, 1)), calibrator,
                                         np.array([[[-0.9]]]), np.array([[1.2]]))  # rounding past 1
    expected = softmax(np.log(np.clip([[0.0, 1.0], [0.7, 0.3]], 1e-15, 1)) / 2.0, axis=1)[:, 1]
    np.testing.assert_allclose(out_base[0, 0], expected[0])
    np.testing.assert_allclose(out_base[0, 0] + out[0, 0, 0], expected[1], atol=1e-12)


def test_multiclass_recalibration_adds_up_and_follows_the_integrated_jacobian():
    calibrator = TemperatureScaling(1.7)
    spec = TaskSpec("y", MULTICLASS, classes=("a", "b", "c"))
    base = np.array([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1], [0.4, 0.4, 0.2]])
    total = np.array([[0.7, 0.2, 0.1], [0.05, 0.15, 0.8], [0.4, 0.4, 0.2]])  # third: no change
    rng = np.random.default_rng(1)
    values = _split(total - base, 5, rng)  # the third patient's attributions cancel out
    out, out_base = through_calibration(spec, calibrator, values, base)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out_base, calibrator.transform(base), atol=1e-12)
    np.testing.assert_allclose(out_base + out.sum(axis=1), calibrator.transform(total), atol=1e-12)
    np.testing.assert_allclose(out.sum(axis=2), 0.0, atol=1e-12)  # classes still sum to 0
    np.testing.assert_allclose(out[2], values[2] @ calibrator.jacobian(base[2:])[0].T, atol=1e-12)  # a zero-length path
    for n in range(2):  # close to the Jacobian integrated finely along the path
        n_steps = 4000
        jacobian = sum(calibrator.jacobian(base[n : n + 1] + (s + 0.5) / n_steps * (total - base)[n : n + 1])[0]
                       for s in range(n_steps)) / n_steps
        np.testing.assert_allclose(out[n], values[n] @ jacobian.T, atol=1e-6)


def test_log_odds_rescale_by_the_logit_secant_or_its_slope_where_flat():
    base = np.array([[0.3], [0.6], [0.2]])
    total = np.array([[0.8], [0.6], [1.0]])  # second flat, third at the edge (clipped)
    values = _split(total - base, 3, np.random.default_rng(2))
    values[1] = [[0.2], [-0.2], [0.0]]
    out, out_base = to_log_odds(values, base)
    np.testing.assert_allclose(out_base, logit(base))
    slopes = [(logit(0.8) - logit(0.3)) / 0.5, 1 / (0.6 * 0.4), (logit(1 - 1e-12) - logit(0.2)) / (1 - 1e-12 - 0.2)]
    for n, slope in enumerate(slopes):
        np.testing.assert_allclose(out[n], values[n] * slope, rtol=1e-6)
    np.testing.assert_allclose((out_base + out.sum(axis=1))[[0, 2], 0], [logit(0.8), logit(1 - 1e-12)], rtol=1e-6)


def test_log_odds_clip_a_base_at_certainty():
    base, values = np.array([[1.0], [0.0]]), np.array([[[-0.2], [-0.1]], [[0.1], [0.2]]])
    out, out_base = to_log_odds(values, base)
    edge = 1 - 1e-12
    np.testing.assert_allclose(out_base[:, 0], [logit(edge), logit(1e-12)])
    np.testing.assert_allclose((out_base + out.sum(axis=1))[:, 0], [logit(0.7), logit(0.3)], rtol=1e-9)


def test_log_odds_of_several_classes_rescale_each_class_on_its_own():
    base = np.array([[0.2, 0.3, 0.5]])
    total = np.array([[0.1, 0.6, 0.3]])
    values = _split(total - base, 2, np.random.default_rng(3))
    out, out_base = to_log_odds(values, base)
    np.testing.assert_allclose(out_base + out.sum(axis=1), logit(total), atol=1e-12)
    np.testing.assert_allclose(out / values, np.broadcast_to((logit(total) - logit(base)) / (total - base),
                                                             values.shape), rtol=1e-9)


def test_binary_recalibration_where_flat_takes_the_derivative_along_both_classes():
    calibrator = TemperatureScaling(1.6)  # its positive class depends on both columns
    base = np.array([[0.3], [0.8]])
    values = np.array([[[0.2], [-0.2]], [[0.1], [-0.1]]])  # sums 0: the output is the base
    out, _ = through_calibration(TaskSpec("y", BINARY, classes=(0, 1)), calibrator, values, base)
    step = 1e-6
    for n, b in enumerate(base[:, 0]):
        g = calibrator.transform(np.array([[1 - b - step, b + step], [1 - b + step, b - step]]))[:, 1]
        np.testing.assert_allclose(out[n], values[n] * (g[0] - g[1]) / (2 * step), rtol=1e-6)

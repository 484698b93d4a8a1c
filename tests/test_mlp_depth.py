"""Depth experiment sanity: backpropagated error signals shrink by the mean-field chi_1.

For tanh at sigma_w^2 = 0.8, sigma_b^2 = 0.05 (Poole et al. 2016; Schoenholz et al. 2017),
``E||delta_l||^2 / E||delta_{l+1}||^2 = chi_1 = sigma_w^2 E[phi'(sqrt(q*) z)^2]`` ~ 0.647
(ANCHORS.md). The theory is computed here by Gauss-Hermite quadrature, independently of
``neurosim.analysis``.
"""

import numpy as np
import pytest

import neurosim as ns
from neurosim.analysis import layer_gradient_norms

SW2, SB2 = 0.8, 0.05


def mean_field_chi1():
    z, w = np.polynomial.hermite_e.hermegauss(200)
    w = w / w.sum()
    q = 1.0
    for _ in range(1000):
        q = SW2 * np.sum(w * np.tanh(np.sqrt(q) * z) ** 2) + SB2
    return q, SW2 * np.sum(w * (1.0 - np.tanh(np.sqrt(q) * z) ** 2) ** 2)


def test_theory_value():
    q_star, chi1 = mean_field_chi1()
    assert chi1 == pytest.approx(0.647, abs=5e-4)
    assert q_star == pytest.approx(0.13808, rel=1e-4)


def test_squared_delta_ratio_matches_chi1_at_init():
    q_star, chi1 = mean_field_chi1()
    width, depth, batch = 500, 30, 16
    ratios = []
    for seed in range(3):
        net = ns.MLP([width] * (depth + 1) + [width], activation="tanh",
                     sigma_w=np.sqrt(SW2), sigma_b=np.sqrt(SB2), seed=seed)
        rng = np.random.default_rng(100 + seed)
        # inputs whose first pre-activations already have variance q*
        X = rng.standard_normal((batch, width)) * np.sqrt((q_star - SB2) / SW2)
        Y = rng.standard_normal((batch, width))
        _, grads = net.gradients(X, Y)
        sq = np.array([np.sum(d * d) for d in grads.deltas])
        ratios.append(sq[:-1] / sq[1:])  # layer l over layer l + 1, l = 1..L-1
    ratios = np.array(ratios)
    assert ratios.mean() == pytest.approx(chi1, rel=0.02)
    # the error signal vanishes toward the input: about chi1^(L-1) overall
    assert np.all(ratios < 1.0)


def test_layer_gradient_norms():
    net = ns.MLP([6, 8, 8, 3], seed=0)
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((10, 6)), rng.standard_normal((10, 3))
    norms = layer_gradient_norms(net, X, Y)
    _, grads = net.gradients(X, Y)
    assert norms.shape == (3,)
    np.testing.assert_allclose(norms, [np.linalg.norm(w) for w in grads.weights], rtol=1e-14)
    ce = layer_gradient_norms(net, X, np.eye(3)[[0, 1, 2, 0, 1, 2, 0, 1, 2, 0]],
                              loss="cross_entropy")
    assert np.all(ce > 0)
    with pytest.raises(ValueError, match="unknown loss"):
        layer_gradient_norms(net, X, Y, loss="l1")

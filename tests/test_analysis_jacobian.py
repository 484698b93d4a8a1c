"""jacobian_spectrum: exact Jacobians against finite differences, dynamical isometry of
orthogonal tanh networks, and the free-probability spread."""

import math

import numpy as np
import pytest

import neurosim as ns
from neurosim.analysis import jacobian_spectrum
from neurosim.analysis import meanfield as mf


@pytest.fixture(scope="module", autouse=True)
def one_blas_thread():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        yield


def fd_singular_values(model, x, h=1e-6):
    """Central differences of the forward map at x (shape (1, n_0)), column by column."""
    n0 = x.shape[1]
    cols = []
    for i in range(n0):
        e = np.zeros(n0)
        e[i] = h
        cols.append((model.forward(x + e) - model.forward(x - e))[0] / (2 * h))
    return np.linalg.svd(np.array(cols), compute_uv=False)


@pytest.mark.parametrize("make", [
    lambda: ns.MLP([6, 9, 8, 4], activation="tanh", sigma_w=1.3, sigma_b=0.2, seed=1),
    lambda: ns.MLP([4, 9, 8, 7], activation="elu", output_activation="tanh", seed=2),
    lambda: ns.MLP([6, 8, 8, 8, 3], residual=True, sigma_w=0.8, seed=3),
    lambda: ns.RateNetwork([5, 7, 6], activation="logistic", sigma_w=2.0, sigma_b=0.3,
                           w_bounds=None, seed=4),
], ids=["mlp-wide-out", "mlp-narrow-in", "residual", "rate"])
def test_singular_values_match_finite_differences(make):
    model = make()
    rng = np.random.default_rng(0)
    X = rng.standard_normal((3, model.sizes[0]))
    js = jacobian_spectrum(model, X)
    assert js.singular_values.shape == (3, min(model.sizes[0], model.sizes[-1]))
    for b in range(3):
        np.testing.assert_allclose(js.singular_values[b], fd_singular_values(model, X[b:b + 1]),
                                   rtol=1e-6, atol=1e-9)
    lam = js.singular_values**2
    assert js.mean_squared == pytest.approx(lam.mean()) and js.variance == pytest.approx(lam.var())


@pytest.fixture(scope="module")
def isometry():
    """Depth 64, width 128, inputs at q* ~ 0.05 on the tanh critical line."""
    sb = 0.011
    sw = mf.critical_sigma_w("tanh", sb)
    q = mf.q_star("tanh", sw, sb)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((3, 128))
    X *= np.sqrt((q - sb**2) / sw**2)
    out = {}
    for name, act, init, w, b in [("orthogonal tanh", "tanh", "orthogonal", sw, sb),
                                  ("gaussian tanh", "tanh", "gaussian", sw, sb),
                                  ("orthogonal relu", "relu", "orthogonal", math.sqrt(2), 0.0),
                                  ("gaussian relu", "relu", "gaussian", math.sqrt(2), 0.0)]:
        net = ns.MLP([128] * 65, activation=act, init=init, sigma_w=w, sigma_b=b, seed=0,
                     output_activation=act)
        out[name] = jacobian_spectrum(net, X)
    return q, out


def test_orthogonal_tanh_at_small_q_is_near_isometric_and_the_others_are_not(isometry):
    q, spectra = isometry
    assert 0.04 < q < 0.06
    assert spectra["orthogonal tanh"].fraction_in_band > 0.7  # Pennington et al.: about 80%
    for name in ("gaussian tanh", "orthogonal relu", "gaussian relu"):
        assert spectra[name].fraction_in_band < 0.2, name
    np.testing.assert_array_equal(spectra["orthogonal tanh"].s1, 0.0)
    np.testing.assert_array_equal(spectra["gaussian tanh"].s1, -1.0)
    iso = spectra["orthogonal tanh"]
    assert iso.normalized_variance == pytest.approx(iso.predicted_normalized_variance, rel=0.15)
    assert iso.mean_squared == pytest.approx(iso.predicted_mean_squared, rel=0.15)


@pytest.mark.parametrize("act,init,sw,sb", [("tanh", "gaussian", 1.2, 0.1),
                                            ("relu", "gaussian", math.sqrt(2), 0.0),
                                            ("tanh", "orthogonal", 1.5, 0.3)])
def test_spectrum_spread_tracks_free_probability(act, init, sw, sb):
    width, depth = 200, 8
    q = mf.q_star(act, sw, sb) if act == "tanh" else 1.0
    rng = np.random.default_rng(1)
    X = rng.standard_normal((4, width)) * np.sqrt(max(q - sb**2, 1e-9) / sw**2)
    measured, predicted, means = [], [], []
    for seed in range(3):
        net = ns.MLP([width] * (depth + 1), activation=act, init=init, sigma_w=sw, sigma_b=sb,
                     seed=seed, output_activation=act)
        js = jacobian_spectrum(net, X)
        measured.append(js.normalized_variance)
        predicted.append(js.predicted_normalized_variance)
        means.append(js.mean_squared / js.predicted_mean_squared)
    assert np.mean(measured) == pytest.approx(np.mean(predicted), rel=0.15)
    assert np.mean(means) == pytest.approx(1.0, rel=0.1)


def test_bad_inputs():
    with pytest.raises(ValueError, match="batch-normalised"):
        jacobian_spectrum(ns.MLP([3, 4, 4, 2], batchnorm=True), np.ones((1, 3)))
    with pytest.raises(ValueError, match="features"):
        jacobian_spectrum(ns.MLP([3, 4, 2]), np.ones((1, 5)))
    with pytest.raises(TypeError, match="MLP or RateNetwork"):
        jacobian_spectrum(object(), np.ones((1, 3)))
    with pytest.raises(ValueError, match="feedback"):
        jacobian_spectrum(ns.RateNetwork([3, 4, 2], feedback="symmetric"), np.ones((1, 3)))

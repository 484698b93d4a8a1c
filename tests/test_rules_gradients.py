"""Learning-rule signals against plain-NumPy references and float64 finite differences."""

import numpy as np
import pytest
from _blas_threads import one_blas_thread  # noqa: F401  (autouse fixture)

import neurosim as ns
from neurosim import rules
from neurosim.kernels import rules as K


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return rng.random((6, 5)), rng.random((6, 3))


def mse(out, Y):
    return 0.5 * np.mean(np.sum((out - Y) ** 2, axis=1))


def fd_grads(rn, loss_fn, eps=1e-5):
    grads = []
    for W in rn.weights:
        G = np.zeros_like(W)
        for i in range(W.shape[0]):
            for j in range(W.shape[1]):
                w0 = W[i, j]
                W[i, j] = w0 + eps
                lp = loss_fn()
                W[i, j] = w0 - eps
                lm = loss_fn()
                W[i, j] = w0
                G[i, j] = (lp - lm) / (2 * eps)
        grads.append(G)
    return grads


def ref_backward(rn, X, Y, mats=None, direct=False):
    """Plain-NumPy deltas and weight updates of BP (mats None), FA or DFA; MSE loss."""
    pre, post = rn.layer_outputs(X)
    d = [rn.activation.derivative(h) for h in pre]
    batch = X.shape[0]
    L = rn.n_layers
    deltas = [None] * L
    deltas[-1] = (post[-1] - Y) / batch * d[-1]
    for l in range(L - 2, -1, -1):
        if direct:
            deltas[l] = (deltas[-1] @ mats[l]) * d[l]
        else:
            M = rn.weights[l + 1] if mats is None else mats[l + 1]
            deltas[l] = (deltas[l + 1] @ M.T) * d[l]
    ins = [X] + post[:-1]
    return deltas, [a.T @ dl for a, dl in zip(ins, deltas, strict=True)]


@pytest.mark.parametrize("act,params", [("logistic", {"gain": 2.0}), ("tanh", {}),
                                        ("naka_rushton", {"c50": 0.7})])
def test_backprop_matches_finite_differences(act, params, data):
    X, Y = data
    rn = ns.RateNetwork([5, 7, 6, 3], activation=act, activation_params=params, seed=2,
                        sigma_w=1.5, sigma_b=0.5, w_bounds=None)
    if act == "naka_rushton":  # inputs must drive units above 0 for a smooth map
        rn.biases = [b + 0.5 for b in rn.biases]
    cmp = rules.compare_to_gradient(rn, X, Y, "backprop")
    fd = fd_grads(rn, lambda: mse(rn.forward(X), Y))
    for g, f in zip(cmp.true_grads, fd, strict=True):
        assert np.abs(g - f).max() < 1e-6 * np.abs(f).max()
    np.testing.assert_array_equal(cmp.angles, 0.0)
    assert cmp.loss == pytest.approx(mse(rn.forward(X), Y), rel=1e-14)
    deltas, grads = ref_backward(rn, X, Y)
    for got, want in zip(cmp.true_deltas, deltas, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


def test_backprop_of_energy_network_matches_finite_differences(data):
    X, Y = data
    rn = ns.RateNetwork([5, 7, 6, 3], feedback="symmetric", seed=3, sigma_w=1.2, sigma_b=0.5)
    cmp = rules.compare_to_gradient(rn, X, Y, "backprop")

    def loss():
        return mse(rn.steady_state(X, tol=1e-15, max_steps=100000).output, Y)

    fd = fd_grads(rn, loss, eps=1e-4)
    for g, f in zip(cmp.true_grads, fd, strict=True):
        assert np.abs(g - f).max() < 1e-6 * np.abs(f).max()


def test_cross_entropy_gradient(data):
    X, Y = data
    Y = np.eye(3)[[0, 1, 2, 0, 1, 2]]
    rn = ns.RateNetwork([5, 4, 3], seed=4, r_max=5.0, sigma_b=0.3)
    cmp = rules.compare_to_gradient(rn, X, Y, "backprop", loss="cross_entropy")

    def ce():
        z = rn.forward(X)
        z = z - z.max(axis=1, keepdims=True)
        return np.mean(-np.sum(Y * (z - np.log(np.exp(z).sum(axis=1, keepdims=True))), axis=1))

    for g, f in zip(cmp.true_grads, fd_grads(rn, ce), strict=True):
        assert np.abs(g - f).max() < 1e-6 * np.abs(f).max()


@pytest.mark.parametrize("rule", ["feedback_alignment", "direct_feedback_alignment"])
def test_feedback_alignment_signals_match_numpy(rule, data):
    X, Y = data
    rn = ns.RateNetwork([5, 7, 6, 3], seed=5, sigma_b=0.2)
    cmp = rules.compare_to_gradient(rn, X, Y, rule, feedback_scale=0.8)
    mats = rn.feedback_matrices(rule, 0.8)
    deltas, updates = ref_backward(rn, X, Y, mats, direct=rule.startswith("direct"))
    for got, want in zip(cmp.signals, deltas, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-16)
    for got, want in zip(cmp.updates, updates, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-16)
    assert cmp.angles[-1] == pytest.approx(0.0, abs=1e-5)
    assert np.all(cmp.angles[:-1] > 1.0)


def cosine(a, b):
    a = np.concatenate([x.ravel() for x in a])
    b = np.concatenate([x.ravel() for x in b])
    return a @ b / (np.linalg.norm(a) * np.linalg.norm(b))


def test_equilibrium_propagation_approaches_gradient(data):
    X, Y = data
    rn = ns.RateNetwork([5, 7, 6, 3], feedback="symmetric", seed=6, sigma_w=1.2, sigma_b=0.5,
                        dt=0.004)
    cos = {}
    for beta in (0.5, 0.05, 1e-3):
        cmp = rules.compare_to_gradient(rn, X, Y, "equilibrium_propagation", beta=beta,
                                        tol=1e-14)
        cos[beta] = cosine(cmp.updates, cmp.true_grads)
        np.testing.assert_allclose(np.concatenate([s.ravel() for s in cmp.signals]),
                                   np.concatenate([d.ravel() for d in cmp.true_deltas]),
                                   rtol=0, atol=max(beta, 1e-3) * 0.2 / X.shape[0])
    assert cos[1e-3] >= 0.999 and cos[0.05] >= 0.99
    assert 1 - cos[1e-3] < 1 - cos[0.5]
    sym = rules.compare_to_gradient(rn, X, Y, "equilibrium_propagation", beta=0.05,
                                    nudge="symmetric", tol=1e-14)
    assert 1 - cosine(sym.updates, sym.true_grads) < 0.1 * (1 - cos[0.05])
    assert np.all(sym.angles < 2.0)


def test_node_perturbation_mean_update_follows_gradient(data):
    X, Y = data
    rn = ns.RateNetwork([5, 6, 3], seed=7, sigma_w=1.5, sigma_b=0.3)
    cmp = rules.compare_to_gradient(rn, X, Y, "node_perturbation", sigma=1e-3,
                                    n_perturbations=4000, seed=1)
    assert cosine(cmp.updates, cmp.true_grads) > 0.9
    few = rules.compare_to_gradient(rn, X, Y, "node_perturbation", sigma=1e-3,
                                    n_perturbations=1, seed=1)
    assert cosine(few.updates, few.true_grads) < cosine(cmp.updates, cmp.true_grads)


def test_local_update_kernel_matches_numpy():
    rng = np.random.default_rng(3)
    W = rng.normal(size=(4, 3))
    x = rng.random((7, 4))
    y = rng.random((7, 3))
    theta = rng.random(3)
    U = np.empty_like(W)
    K.local_update(K.HEBBIAN, W, x, y, theta, U)
    np.testing.assert_allclose(U, -x.T @ y / 7, rtol=1e-14)
    K.local_update(K.OJA, W, x, y, theta, U)
    want = -np.mean(y[:, None, :] * (x[:, :, None] - W[None] * y[:, None, :]), axis=0)
    np.testing.assert_allclose(U, want, rtol=1e-13)
    K.local_update(K.BCM, W, x, y, theta, U)
    want = -np.mean(x[:, :, None] * (y * (y - theta))[:, None, :], axis=0)
    np.testing.assert_allclose(U, want, rtol=1e-13)


def ref_apply(W, U, lr, lo, hi, soft):
    step = -lr * U
    if soft:
        span = (hi - lo)[:, None]
        step = np.where(step > 0, step * (hi[:, None] - W) / span,
                        step * (W - lo[:, None]) / span)
    return np.clip(W + step, lo[:, None], hi[:, None])


@pytest.mark.parametrize("soft", [False, True])
def test_apply_update_respects_bounds_and_dale(soft):
    rn = ns.RateNetwork([6, 5, 4], seed=8, dale=0.5, w_bounds=(-0.4, 0.6),
                        bound_mode="soft" if soft else "clip", sigma_w=2.0)
    before = [W.copy() for W in rn.weights]
    b_before = [b.copy() for b in rn.biases]
    U = np.random.default_rng(0).normal(size=rn.n_params) * 3.0
    vel = np.zeros_like(U)
    lr = np.array([0.2, 0.5])
    K.apply_update(rn._params, U, vel, 0.0, lr, lr, rn._w_off, rn._b_off, rn._sizes, rn._lo,
                   rn._hi, soft, True)
    for l, (W0, W) in enumerate(zip(before, rn.weights, strict=True)):
        lo, hi = rn.weight_bounds[l]
        o = rn._w_off[l]
        Ul = U[o:o + W.size].reshape(W.shape)
        np.testing.assert_allclose(W, ref_apply(W0, Ul, lr[l], lo, hi, soft), rtol=1e-14)
        signs = rn.dale_signs[l][:, None]
        assert np.all(W * signs >= 0)
        ob = rn._b_off[l]
        np.testing.assert_allclose(rn.biases[l], b_before[l] - lr[l] * U[ob:ob + W.shape[1]])


def test_compare_to_gradient_shapes_and_unsupervised_signals(data):
    X, Y = data
    rn = ns.RateNetwork([5, 4, 3], seed=9)
    cmp = rules.compare_to_gradient(rn, X, Y, "hebbian")
    assert [s.shape for s in cmp.signals] == [(6, 4), (6, 3)]
    assert np.all(np.isnan(cmp.signals[0]))
    assert [u.shape for u in cmp.updates] == [(5, 4), (4, 3)]
    assert cmp.angles.shape == (2,)
    pre, post = rn.layer_outputs(X)
    np.testing.assert_allclose(cmp.updates[1], -post[0].T @ post[1] / 6, rtol=1e-13)


BAD_RULES = [
    (dict(rule="feedback_alignmnt"), ValueError, "did you mean 'feedback_alignment'"),
    (dict(rule="equilibrium_propagation"), ValueError, "feedback='symmetric'"),
    (dict(rule="backprop", beta=0.1), ValueError, "has no parameter 'beta'"),
    (dict(rule="node_perturbation", sigma=0.0), ValueError, "sigma must be > 0"),
    (dict(rule="backprop", loss="hinge"), ValueError, "loss"),
]


@pytest.mark.parametrize("kwargs,exc,match", BAD_RULES)
def test_bad_rule_arguments(kwargs, exc, match, data):
    X, Y = data
    rn = ns.RateNetwork([5, 4, 3], seed=0)
    with pytest.raises(exc, match=match):
        rules.compare_to_gradient(rn, X, Y, **kwargs)


def test_rule_model_mismatch(data):
    X, Y = data
    sym = ns.RateNetwork([5, 4, 3], seed=0, feedback="symmetric")
    with pytest.raises(ValueError, match="feedforward"):
        rules.compare_to_gradient(sym, X, Y, "feedback_alignment")
    with pytest.raises(ValueError, match="loss='mse'"):
        rules.compare_to_gradient(sym, X, Y, "equilibrium_propagation", loss="cross_entropy")
    with pytest.raises(TypeError, match="RateNetwork"):
        rules.compare_to_gradient(object(), X, Y, "backprop")
    rn = ns.RateNetwork([5, 4, 3], seed=0)
    with pytest.raises(ValueError, match="NaN or inf"):
        rules.compare_to_gradient(rn, np.full((6, 5), np.inf), Y, "backprop")
    with pytest.raises(ValueError, match="6 samples"):
        rules.compare_to_gradient(rn, X, Y[:4], "backprop")

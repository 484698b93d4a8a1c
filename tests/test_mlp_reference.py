"""A slow plain-NumPy MLP (forward, backward, optimizers) and its agreement with the kernels.

The reference is written from the definitions, independently of the kernels: activations and
their derivatives are NumPy formulas, batch norm and dropout follow their papers, and the
optimizers follow PyTorch's documented update rules. Other test files import it.
"""

import math

import numpy as np
import pytest
from scipy.special import erf

import neurosim as ns

# ------------------------------------------------------------------------------- reference


def ref_phi(name, x, p):
    """Activation value; ``p`` is the dict of activation parameters."""
    if name == "linear":
        return x
    if name == "sigmoid":
        return 0.5 * (1.0 + np.tanh(0.5 * x))
    if name == "tanh":
        return np.tanh(x)
    if name == "relu":
        return np.maximum(x, 0.0)
    if name in ("leaky_relu", "prelu"):
        return np.where(x > 0, x, p["slope"] * x)
    if name == "elu":
        return np.where(x > 0, x, p["alpha"] * np.expm1(np.minimum(x, 0.0)))
    if name == "softsign":
        return x / (1.0 + np.abs(x))
    if name == "hard_tanh":
        return np.clip(x, -1.0, 1.0)
    if name == "erf":
        return erf(x)
    raise KeyError(name)


def ref_dphi(name, x, p):
    """Activation derivative (right derivative at kinks, as the kernels)."""
    if name == "linear":
        return np.ones_like(x)
    if name == "sigmoid":
        s = ref_phi("sigmoid", x, p)
        return s * (1.0 - s)
    if name == "tanh":
        return 1.0 - np.tanh(x) ** 2
    if name == "relu":
        return (x > 0).astype(x.dtype)
    if name in ("leaky_relu", "prelu"):
        return np.where(x > 0, 1.0, p["slope"])
    if name == "elu":
        return np.where(x > 0, 1.0, p["alpha"] * np.exp(np.minimum(x, 0.0)))
    if name == "softsign":
        return 1.0 / (1.0 + np.abs(x)) ** 2
    if name == "hard_tanh":
        return (np.abs(x) < 1).astype(x.dtype)
    if name == "erf":
        return 2.0 / np.sqrt(np.pi) * np.exp(-x * x)
    raise KeyError(name)


def ref_loss(loss, out, Y):
    """Batch-mean loss and dL/d(out)."""
    nb = out.shape[0]
    if loss == "mse":
        e = out - Y
        return 0.5 * np.sum(e * e) / nb, e / nb
    z = out - out.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    value = -np.sum(Y * logp) / nb
    grad = (np.exp(logp) * Y.sum(axis=1, keepdims=True) - Y) / nb
    return value, grad


class RefMLP:
    """Plain-NumPy twin of an ``ns.MLP`` (parameters copied from it)."""

    eps = 1e-5

    def __init__(self, net):
        self.L = net.n_layers
        self.W = [w.astype(np.float64) for w in net.weights]
        self.b = [b.astype(np.float64) for b in net.biases]
        self.gamma = [None if g is None else g.astype(np.float64) for g in net.gammas]
        self.beta = [None if g is None else g.astype(np.float64) for g in net.betas]
        self.slope = [None if s is None else float(s) for s in net.slopes]
        self.run_mean = [None if m is None else m.astype(np.float64) for m in net.running_means]
        self.run_var = [None if m is None else m.astype(np.float64) for m in net.running_vars]
        self.acts = [net.activation] * (self.L - 1) + [net.output_activation]
        self.residual = net.residual
        self.dropout = net.dropout
        self.sizes = net.sizes

    def _p(self, l):
        p = dict(self.acts[l].params)
        if self.slope[l] is not None:
            p["slope"] = self.slope[l]
        return p

    def forward(self, X, training=False, masks=None):
        cache = []
        a = X
        for l in range(self.L):
            z = a @ self.W[l] + self.b[l]
            c = {"a_prev": a}
            if self.gamma[l] is not None:
                if training:
                    mu = z.mean(axis=0)
                    var = z.var(axis=0)
                else:
                    mu, var = self.run_mean[l], self.run_var[l]
                inv = 1.0 / np.sqrt(var + self.eps)
                xhat = (z - mu) * inv
                h = self.gamma[l] * xhat + self.beta[l]
                c.update(xhat=xhat, inv=inv, mu=mu, var=var)
            else:
                h = z
            u = ref_phi(self.acts[l].name, h, self._p(l))
            hidden = l < self.L - 1
            if hidden and training and self.dropout > 0:
                m = masks[l] / (1.0 - self.dropout)
            else:
                m = None
            branch = u if m is None else u * m
            skip = hidden and self.residual and self.sizes[l] == self.sizes[l + 1]
            a = branch + (a if skip else 0.0)
            c.update(h=h, u=u, m=m, skip=skip)
            cache.append(c)
        return a, cache

    def gradients(self, X, Y, loss="mse", training=True, masks=None):
        out, cache = self.forward(X, training, masks)
        value, g = ref_loss(loss, out, Y)
        nb = X.shape[0]
        res = {"W": [None] * self.L, "b": [None] * self.L, "delta": [None] * self.L,
               "gamma": [None] * self.L, "beta": [None] * self.L, "slope": [None] * self.L}
        for l in range(self.L - 1, -1, -1):
            c = cache[l]
            name = self.acts[l].name
            gu = g if c["m"] is None else g * c["m"]
            delta = gu * ref_dphi(name, c["h"], self._p(l))
            res["delta"][l] = delta
            if name == "prelu":
                res["slope"][l] = float(np.sum(gu * np.minimum(c["h"], 0.0)))
            if self.gamma[l] is not None:
                res["gamma"][l] = np.sum(delta * c["xhat"], axis=0)
                res["beta"][l] = np.sum(delta, axis=0)
                dx = delta * self.gamma[l]
                if training:
                    e = c["inv"] * (dx - dx.mean(axis=0)
                                    - c["xhat"] * (dx * c["xhat"]).mean(axis=0))
                else:
                    e = dx * c["inv"]
            else:
                e = delta
            res["W"][l] = c["a_prev"].T @ e
            res["b"][l] = e.sum(axis=0)
            g = e @ self.W[l].T + (g if c["skip"] else 0.0)
        assert nb == X.shape[0]
        return value, res


def ref_optimizer_step(name, p, g, state, lr, t, hyper, weight_decay=0.0, clip_norm=None,
                       clip_value=None):
    """PyTorch-style update of a flat float64 parameter vector; returns new p (state in place)."""
    g = g.copy()
    if clip_value is not None:
        g = np.clip(g, -clip_value, clip_value)
    if clip_norm is not None:
        norm = np.linalg.norm(g)
        if norm > clip_norm:
            g *= clip_norm / norm
    g = g + weight_decay * p
    if name == "sgd":
        return p - lr * g
    if name in ("momentum", "nesterov"):
        mu = hyper["momentum"]
        state["v"] = mu * state.get("v", np.zeros_like(p)) + g
        step = g + mu * state["v"] if name == "nesterov" else state["v"]
        return p - lr * step
    if name == "rmsprop":
        rho, eps = hyper["rho"], hyper["eps"]
        state["s"] = rho * state.get("s", np.zeros_like(p)) + (1 - rho) * g * g
        return p - lr * g / (np.sqrt(state["s"]) + eps)
    if name == "adagrad":
        state["s"] = state.get("s", np.zeros_like(p)) + g * g
        return p - lr * g / (np.sqrt(state["s"]) + hyper["eps"])
    if name == "adam":
        b1, b2, eps = hyper["beta1"], hyper["beta2"], hyper["eps"]
        state["m"] = b1 * state.get("m", np.zeros_like(p)) + (1 - b1) * g
        state["v"] = b2 * state.get("v", np.zeros_like(p)) + (1 - b2) * g * g
        mhat = state["m"] / (1 - b1**t)
        vhat = state["v"] / (1 - b2**t)
        return p - lr * mhat / (np.sqrt(vhat) + eps)
    raise KeyError(name)


def random_data(sizes, batch, seed=0, classes=False):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((batch, sizes[0]))
    if classes:
        Y = np.eye(sizes[-1])[rng.integers(0, sizes[-1], batch)]
    else:
        Y = rng.standard_normal((batch, sizes[-1]))
    return X, Y


def random_masks(net, batch, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.random((batch, n)) >= net.dropout).astype(float) for n in net.sizes[1:-1]]


# ----------------------------------------------------------------------------------- tests

VARIANTS = {
    "plain": {},
    "residual": {"residual": True},
    "batchnorm": {"batchnorm": True},
    "dropout": {"dropout": 0.3},
    "prelu": {"activation": "prelu"},
    "all": {"residual": True, "batchnorm": True, "dropout": 0.25, "activation": "prelu"},
}


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("training", [True, False])
def test_forward_backward_match_reference(variant, training):
    opts = dict(VARIANTS[variant])
    sizes = [5, 6, 6, 6, 3]
    net = ns.MLP(sizes, seed=3, sigma_b=0.3, **opts)
    if net.batchnorm:  # non-trivial running statistics and affine parameters for eval mode
        rng = np.random.default_rng(9)
        for m, v, g, b in zip(net.running_means, net.running_vars, net.gammas, net.betas,
                              strict=True):
            if m is not None:
                m[...] = rng.normal(size=m.shape) * 0.3
                v[...] = rng.uniform(0.5, 2.0, size=v.shape)
                g[...] = rng.uniform(0.5, 1.5, size=g.shape)
                b[...] = rng.normal(size=b.shape) * 0.2
    X, Y = random_data(sizes, 7, seed=1)
    masks = random_masks(net, 7) if (net.dropout and training) else None
    ref = RefMLP(net)
    out_ref, cache = ref.forward(X, training, masks)
    out = net.forward(X, training=training, dropout_mask=masks)
    np.testing.assert_allclose(out, out_ref, rtol=1e-12, atol=1e-12)
    pre, post = net.layer_outputs(X, training=training, dropout_mask=masks)
    for l in range(net.n_layers):
        np.testing.assert_allclose(pre[l], cache[l]["h"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(post[-1], out_ref, rtol=1e-12, atol=1e-12)

    value, grads = net.gradients(X, Y, training=training, dropout_mask=masks)
    value_ref, res = ref.gradients(X, Y, training=training, masks=masks)
    assert value == pytest.approx(value_ref, rel=1e-12)
    for l in range(net.n_layers):
        np.testing.assert_allclose(grads.weights[l], res["W"][l], rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(grads.biases[l], res["b"][l], rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(grads.deltas[l], res["delta"][l], rtol=1e-10, atol=1e-13)
        if res["gamma"][l] is not None:
            np.testing.assert_allclose(grads.gammas[l], res["gamma"][l], rtol=1e-10,
                                       atol=1e-13)
            np.testing.assert_allclose(grads.betas[l], res["beta"][l], rtol=1e-10, atol=1e-13)
        else:
            assert grads.gammas[l] is None
        if res["slope"][l] is not None:
            assert grads.slopes[l] == pytest.approx(res["slope"][l], rel=1e-10, abs=1e-13)
        else:
            assert grads.slopes[l] is None


@pytest.mark.parametrize("name", ["sgd", "momentum", "nesterov", "rmsprop", "adagrad", "adam"])
def test_optimizer_steps_match_reference(name):
    sizes = [4, 5, 3]
    net = ns.MLP(sizes, seed=2)
    X, Y = random_data(sizes, 6, seed=4)
    hyper = ns.optim.get(name).params
    extra = {"weight_decay": 0.01, "clip_norm": 0.5, "clip_value": 0.08}
    p = net.params.copy()
    state = {}
    # one full batch per step, no shuffling effect: the reference sees the same gradients
    for t in range(1, 4):
        ref_net = ns.MLP(sizes, seed=2)
        ref_net.params[...] = p
        _, grads = ref_net.gradients(X, Y)
        _, res = RefMLP(ref_net).gradients(X, Y)
        flat_ref = np.concatenate([np.concatenate([w.ravel(), b]) for w, b in
                                   zip(res["W"], res["b"], strict=True)])
        np.testing.assert_allclose(grads.flat, flat_ref, rtol=1e-10, atol=1e-14)
        p = ref_optimizer_step(name, p, flat_ref, state, 0.05, t, hyper, **extra)
    ns.train(net, (X, Y), optimizer=name, lr=0.05, epochs=3, batch_size=6, **extra)
    np.testing.assert_allclose(net.params, p, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sgd_update_in_chunks_guards_each_value(dtype):
    # Long enough for several chunks of the check-then-store SGD kernel; entries 2500 and
    # 4100 (second and third chunk) overflow and must keep their old values, the rest update.
    from neurosim.kernels import optim as ko

    rng = np.random.default_rng(0)
    n = 3 * ko._SGD_CHUNK + 7
    p = rng.standard_normal(n).astype(dtype)
    g = rng.standard_normal(n).astype(dtype)
    hyper = np.zeros(ko.N_HYPER, dtype)
    lr = 0.1
    want = p - dtype(lr) * (g * dtype(0.5) + dtype(0.01) * p)
    tol = 4 * np.finfo(dtype).eps  # the kernel contracts to FMAs; values are O(1)
    q = p.copy()
    assert ko.optimizer_step(ko.SGD, q, g, p[:0], p[:0], lr, hyper, 1, 0.01, 0.5, np.inf)
    np.testing.assert_allclose(q, want, rtol=tol, atol=tol)
    big = np.finfo(dtype).max
    p[[2500, 4100]] = big
    g[[2500, 4100]] = -big
    q = p.copy()
    with np.errstate(over="ignore"):
        want = p - dtype(lr) * (g * dtype(0.5) + dtype(0.01) * p)
        assert not ko.optimizer_step(ko.SGD, q, g, p[:0], p[:0], lr, hyper, 1, 0.01, 0.5,
                                     np.inf)
    want[[2500, 4100]] = big
    np.testing.assert_allclose(q, want, rtol=tol, atol=tol)
    assert q[2500] == big and q[4100] == big


def test_batchnorm_running_statistics_match_reference():
    sizes = [3, 4, 2]
    net = ns.MLP(sizes, batchnorm=True, seed=1)
    X, Y = random_data(sizes, 5, seed=2)
    mean = np.zeros(4)
    var = np.ones(4)
    p = net.params.copy()
    for t in range(1, 3):
        ref_net = ns.MLP(sizes, batchnorm=True, seed=1)
        ref_net.params[...] = p
        z = X @ ref_net.weights[0] + ref_net.biases[0]
        mean = 0.9 * mean + 0.1 * z.mean(axis=0)
        var = 0.9 * var + 0.1 * z.var(axis=0, ddof=1)
        _, grads = ref_net.gradients(X, Y)
        p = p - 0.1 * grads.flat
        assert t
    ns.train(net, (X, Y), lr=0.1, epochs=2, batch_size=5)
    np.testing.assert_allclose(net.running_means[0], mean, rtol=1e-12)
    np.testing.assert_allclose(net.running_vars[0], var, rtol=1e-12)
    assert math.isclose(float(net.params[0]), float(p[0]), rel_tol=1e-12)

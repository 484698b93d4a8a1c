"""``MLP.gradients`` against float64 central finite differences of the loss.

Relative error = max |analytic - numeric| / max |analytic| over every trainable parameter
(weights, biases, PReLU slopes, batch-norm scales and shifts); required below 1e-6.
"""

import numpy as np
import pytest

import neurosim as ns
from neurosim import activations, losses

H = 1e-6


def data(sizes, batch=5, seed=0, classes=False):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((batch, sizes[0]))
    if classes:
        Y = np.eye(sizes[-1])[rng.integers(0, sizes[-1], batch)]
    else:
        Y = rng.standard_normal((batch, sizes[-1]))
    return X, Y


def numeric_gradient(net, X, Y, loss, training=True, dropout_mask=None):
    loss_fn = losses.get(loss)

    def value():
        return loss_fn.value(net.forward(X, training=training, dropout_mask=dropout_mask), Y)

    p = net.params
    out = np.zeros_like(p)
    for i in range(p.size):
        old = p[i]
        p[i] = old + H
        plus = value()
        p[i] = old - H
        minus = value()
        p[i] = old
        out[i] = (plus - minus) / (2 * H)
    return out


def check(net, X, Y, loss="mse", training=True, dropout_mask=None):
    value, grads = net.gradients(X, Y, loss=loss, training=training, dropout_mask=dropout_mask)
    num = numeric_gradient(net, X, Y, loss, training, dropout_mask)
    rel = np.max(np.abs(grads.flat - num)) / np.max(np.abs(grads.flat))
    assert rel < 1e-6, rel
    out = net.forward(X, training=training, dropout_mask=dropout_mask)
    assert value == pytest.approx(losses.get(loss).value(out, Y), rel=1e-14)
    return grads


@pytest.mark.parametrize("activation", activations.MLP_ACTIVATIONS)
@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_every_activation_and_loss(activation, loss):
    sizes = [3, 5, 4, 3]
    net = ns.MLP(sizes, activation=activation, sigma_w=1.3, sigma_b=0.4, seed=1)
    X, Y = data(sizes, classes=loss == "cross_entropy")
    check(net, X, Y, loss)


@pytest.mark.parametrize("output_activation", ["sigmoid", "tanh", "softsign", "prelu"])
def test_output_activations(output_activation):
    sizes = [3, 4, 2]
    net = ns.MLP(sizes, output_activation=output_activation, seed=2)
    X, Y = data(sizes, seed=1)
    grads = check(net, X, Y)
    assert (grads.slopes[-1] is not None) == (output_activation == "prelu")


def test_activation_parameters():
    sizes = [3, 4, 4, 2]
    for name, params in [("leaky_relu", {"slope": 0.3}), ("elu", {"alpha": 0.5})]:
        net = ns.MLP(sizes, activation=name, activation_params=params, seed=3)
        X, Y = data(sizes, seed=2)
        check(net, X, Y)


def test_residual():
    sizes = [4, 4, 4, 4, 2]
    net = ns.MLP(sizes, residual=True, sigma_b=0.3, seed=4)
    X, Y = data(sizes, seed=3)
    check(net, X, Y)


def test_residual_skips_only_equal_width_layers():
    net = ns.MLP([3, 5, 5, 2], residual=True, seed=0)
    X, Y = data(net.sizes, seed=4)
    check(net, X, Y)
    _, post = net.layer_outputs(X)
    pre, _ = net.layer_outputs(X)
    np.testing.assert_allclose(post[0], np.tanh(pre[0]))  # 3 -> 5: no skip
    np.testing.assert_allclose(post[1], post[0] + np.tanh(pre[1]))


@pytest.mark.parametrize("training", [True, False])
def test_batchnorm(training):
    sizes = [3, 5, 5, 2]
    net = ns.MLP(sizes, batchnorm=True, seed=5)
    rng = np.random.default_rng(0)
    for g, b, m, v in zip(net.gammas, net.betas, net.running_means, net.running_vars,
                          strict=True):
        if g is not None:
            g[...] = rng.uniform(0.5, 1.5, g.shape)
            b[...] = rng.normal(0, 0.3, b.shape)
            m[...] = rng.normal(0, 0.3, m.shape)
            v[...] = rng.uniform(0.5, 2.0, v.shape)
    X, Y = data(sizes, batch=6, seed=5)
    grads = check(net, X, Y, training=training)
    assert grads.gammas[0] is not None and grads.gammas[-1] is None
    if training:  # the bias before batch norm cancels
        np.testing.assert_allclose(grads.biases[0], 0.0, atol=1e-15)


def test_dropout_with_fixed_mask():
    sizes = [3, 6, 6, 2]
    net = ns.MLP(sizes, dropout=0.4, seed=6)
    X, Y = data(sizes, batch=5, seed=6)
    rng = np.random.default_rng(1)
    mask = [(rng.random((5, n)) > 0.4).astype(float) for n in sizes[1:-1]]
    check(net, X, Y, dropout_mask=mask)
    out = net.forward(X, training=True, dropout_mask=mask)
    pre, post = net.layer_outputs(X, training=True, dropout_mask=mask)
    np.testing.assert_allclose(post[0], np.tanh(pre[0]) * mask[0] / 0.6)
    np.testing.assert_allclose(out, post[-1])


def test_prelu_slopes_are_learnable():
    sizes = [3, 4, 4, 2]
    net = ns.MLP(sizes, activation="prelu", activation_params={"slope": 0.1}, seed=7)
    assert [float(s) for s in net.slopes[:2]] == [pytest.approx(0.1)] * 2
    assert net.slopes[2] is None
    X, Y = data(sizes, seed=7)
    grads = check(net, X, Y)
    assert grads.slopes[0] != 0.0 and grads.slopes[1] != 0.0


def test_all_options_together():
    sizes = [4, 4, 4, 4, 3]
    net = ns.MLP(sizes, activation="prelu", residual=True, batchnorm=True, dropout=0.3,
                 seed=8)
    X, Y = data(sizes, batch=6, seed=8, classes=True)
    rng = np.random.default_rng(2)
    mask = [(rng.random((6, n)) > 0.3).astype(float) for n in sizes[1:-1]]
    check(net, X, Y, loss="cross_entropy", dropout_mask=mask)

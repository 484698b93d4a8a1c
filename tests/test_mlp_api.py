"""MLP construction, the flat parameter buffer, initializers, float32, bad input."""

import numpy as np
import pytest

import neurosim as ns
from neurosim import init as initializers
from neurosim.kernels import dense as kd


@pytest.fixture(scope="module")
def xy():
    rng = np.random.default_rng(0)
    return rng.standard_normal((9, 4)), rng.standard_normal((9, 3))


# ------------------------------------------------------------------------ parameter buffer


def test_weights_and_biases_are_views_of_one_flat_buffer():
    net = ns.MLP([4, 5, 3], seed=0)
    assert net.sizes == [4, 5, 3] and net.n_layers == 2
    assert net.n_params == 4 * 5 + 5 + 5 * 3 + 3 == net.params.size
    assert [w.shape for w in net.weights] == [(4, 5), (5, 3)]
    assert all(np.shares_memory(w, net.params) for w in net.weights + net.biases)
    np.testing.assert_array_equal(net.params[:20], net.weights[0].ravel())
    np.testing.assert_array_equal(net.params[20:25], net.biases[0])
    lay = net.layout
    assert lay.shape == (2, kd.N_LAYOUT_COLS)
    assert list(lay[:, kd.W_OFF]) == [0, 25] and list(lay[:, kd.B_OFF]) == [20, 40]


def test_assigning_parameters_writes_into_the_buffer(xy):
    X, _ = xy
    net = ns.MLP([4, 5, 3], seed=0)
    before = net.forward(X)
    W0 = np.arange(20.0).reshape(4, 5) / 100
    net.weights[0] = W0
    np.testing.assert_array_equal(net.params[:20], W0.ravel())
    net.weights[1][...] = 0.0
    np.testing.assert_allclose(net.forward(X), np.broadcast_to(net.biases[1], (9, 3)))
    net.weights = [np.ones((4, 5)), np.ones((5, 3), dtype=np.int64)]
    net.biases = [np.zeros(5), np.full(3, 0.5)]
    np.testing.assert_allclose(net.forward(X[:1]), np.tanh(X[:1].sum()) * 5 + 0.5)
    assert not np.allclose(before, net.forward(X))
    with pytest.raises(ValueError, match=r"weights\[0\] must have shape \(4, 5\), got \(5, 4\)"):
        net.weights[0] = np.ones((5, 4))
    with pytest.raises(ValueError, match="weights needs 2 entries"):
        net.weights = [np.ones((4, 5))]
    with pytest.raises(ValueError, match="NaN or inf"):
        net.biases[0] = np.full(5, np.inf)
    with pytest.raises(TypeError, match="real numbers"):
        net.biases[1] = np.array(["a", "b", "c"])
    with pytest.raises(ValueError, match="gammas\\[0\\] does not exist"):
        net.gammas[0] = np.ones(5)


def test_batchnorm_and_prelu_parameters_in_the_buffer():
    net = ns.MLP([4, 5, 5, 3], activation="prelu", batchnorm=True, seed=0)
    core = 4 * 5 + 5 + 5 * 5 + 5 + 5 * 3 + 3
    assert net.n_params == core + 2 * (5 + 5) + 2
    np.testing.assert_array_equal(net.gammas[0], 1.0)
    np.testing.assert_array_equal(net.betas[1], 0.0)
    assert net.gammas[2] is None and net.running_means[2] is None
    np.testing.assert_array_equal(net.running_vars[0], 1.0)
    assert [None if s is None else float(s) for s in net.slopes] == [0.25, 0.25, None]
    net.slopes[1] = 0.5
    assert net.params[-1] == 0.5
    assert all(np.shares_memory(g, net.params) for g in net.gammas[:2] + net.betas[:2])


def test_copy_is_independent(xy):
    X, _ = xy
    net = ns.MLP([4, 5, 3], seed=0)
    twin = net.copy()
    twin.weights[0][...] = 0.0
    assert not np.allclose(net.forward(X), twin.forward(X))
    assert "MLP([4, 5, 3], activation='tanh'" in repr(net)


# --------------------------------------------------------------------------- initializers


def test_gaussian_init_variances():
    net = ns.MLP([400, 300, 300], sigma_w=1.5, sigma_b=0.2, seed=1)
    W = net.weights[1]
    assert W.var() * 300 == pytest.approx(1.5**2, rel=0.02)
    assert abs(W.mean()) < 0.01
    b = np.concatenate(net.biases)
    assert b.std() == pytest.approx(0.2, rel=0.1)


def test_glorot_he_orthogonal():
    rng = np.random.default_rng(0)
    W = initializers.glorot(rng, 300, 200, 1.0)
    limit = np.sqrt(6 / 500)
    assert np.abs(W).max() <= limit and np.abs(W).max() > 0.99 * limit
    assert W.var() == pytest.approx(2 / 500, rel=0.03)
    W = initializers.he(rng, 300, 200, 1.0)
    assert W.var() == pytest.approx(2 / 300, rel=0.03)
    for fan_in, fan_out in [(50, 50), (60, 40), (40, 60)]:
        W = initializers.orthogonal(rng, fan_in, fan_out, 1.7)
        s = np.linalg.svd(W, compute_uv=False)
        np.testing.assert_allclose(s, 1.7, rtol=1e-12)
    net = ns.MLP([30, 30, 30], init="orthogonal", sigma_w=2.0, sigma_b=0.0, seed=3)
    np.testing.assert_allclose(net.weights[0].T @ net.weights[0], 4.0 * np.eye(30), atol=1e-12)
    np.testing.assert_array_equal(net.biases[0], 0.0)


def test_same_seed_same_parameters_across_dtypes():
    a = ns.MLP([5, 7, 2], seed=11)
    b = ns.MLP([5, 7, 2], seed=11)
    c = ns.MLP([5, 7, 2], seed=12)
    f = ns.MLP([5, 7, 2], seed=11, dtype="float32")
    np.testing.assert_array_equal(a.params, b.params)
    assert not np.array_equal(a.params, c.params)
    np.testing.assert_array_equal(f.params, a.params.astype(np.float32))


# ------------------------------------------------------------------------------- float32


@pytest.mark.parametrize("options", [{}, {"residual": True, "batchnorm": True},
                                     {"activation": "prelu", "dropout": 0.2},
                                     {"activation": "elu"}])
def test_float32_stays_float32_and_matches_float64(xy, options):
    X, Y = xy
    sizes = [4, 6, 6, 3]
    n64 = ns.MLP(sizes, seed=2, **options)
    n32 = ns.MLP(sizes, seed=2, dtype="float32", **options)
    assert n32.params.dtype == np.float32 and n32.dtype == np.float32
    out = n32.forward(X)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, n64.forward(X), rtol=1e-5, atol=1e-5)
    mask = None
    if n32.dropout:
        mask = [np.ones((9, 6)), np.zeros((9, 6))]
        mask[1][:, ::2] = 1
    loss32, g32 = n32.gradients(X, Y, dropout_mask=mask)
    loss64, g64 = n64.gradients(X, Y, dropout_mask=mask)
    assert loss32 == pytest.approx(loss64, rel=1e-5)
    assert all(a.dtype == np.float32 for a in g32.weights + g32.biases + g32.deltas)
    assert g32.flat.dtype == np.float32
    scale = np.abs(g64.flat).max()
    np.testing.assert_allclose(g32.flat, g64.flat, atol=2e-5 * scale)
    pre, post = n32.layer_outputs(X)
    assert all(a.dtype == np.float32 for a in pre + post)
    hist = ns.train(n32, (X, Y), epochs=2, batch_size=4, seed=0)
    assert n32.params.dtype == np.float32 and np.isfinite(hist.loss).all()


# -------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("kwargs,error,match", [
    ({"sizes": [4]}, ValueError, "at least 2 layer sizes"),
    ({"sizes": [4, 0, 3]}, ValueError, r"sizes\[1\] must be a positive integer, got 0"),
    ({"sizes": [4, -2, 3]}, ValueError, r"sizes\[1\] must be a positive integer, got -2"),
    ({"sizes": "43"}, TypeError, "sequence of positive integers"),
    ({"activation": "tanhh"}, ValueError, "unknown activation 'tanhh'.*valid names: .*relu"),
    ({"output_activation": "soft"}, ValueError, "unknown output_activation 'soft'"),
    ({"init": "xavier"}, ValueError, "unknown init 'xavier'.*valid names: gaussian, glorot, "
                                     "he, orthogonal"),
    ({"dropout": 1.0}, ValueError, r"dropout must lie in \[0.0, 1.0\), got 1.0"),
    ({"dropout": -0.1}, ValueError, r"dropout must lie in \[0.0, 1.0\)"),
    ({"sigma_w": -1.0}, ValueError, "sigma_w must be >= 0"),
    ({"dtype": "float16"}, ValueError, "dtype must be one of"),
    ({"residual": True, "sizes": [4, 5, 6, 3]}, ValueError, "equal hidden widths"),
    ({"residual": True, "sizes": [4, 3]}, ValueError, "at least one hidden layer"),
    ({"residual": True, "sizes": [4, 5, 3]}, ValueError, "adds no skip"),
    ({"residual": 1}, TypeError, "residual must be True or False"),
    ({"seed": -1}, ValueError, "seed must be >= 0"),
    ({"activation_params": {"slope": 0.1}}, ValueError, "no parameter 'slope'"),
    ({"device": "tpu"}, ValueError, "unknown device 'tpu'"),
    # device="cuda" builds under the simulator (tests/test_cuda_models.py); its arguments are
    # still checked first, and the no-GPU error is tested in tests/test_cuda_device.py
    ({"device": "cuda", "dropout": 1.0}, ValueError, r"dropout must lie in \[0.0, 1.0\)"),
])
def test_bad_constructor_arguments(kwargs, error, match):
    kwargs = {"sizes": [4, 5, 3], **kwargs}
    with pytest.raises(error, match=match):
        ns.MLP(**kwargs)


def test_bad_data(xy):
    X, Y = xy
    net = ns.MLP([4, 5, 3], seed=0)
    with pytest.raises(ValueError, match="X has 5 features .* network expects 4"):
        net.forward(np.ones((2, 5)))
    with pytest.raises(ValueError, match="Y has 2 features .* network expects 3"):
        net.gradients(X, Y[:, :2])
    with pytest.raises(ValueError, match="X has 9 samples but Y has 8"):
        net.gradients(X, Y[:8])
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="X contains 1 NaN or inf"):
        net.forward(bad)
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        net.gradients(X, Y, loss="hinge")
    with pytest.raises(ValueError, match="dropout_mask was given but the network has dropout=0"):
        net.forward(X, training=True, dropout_mask=[np.ones((9, 5))])
    drop = ns.MLP([4, 5, 3], dropout=0.5, seed=0)
    with pytest.raises(ValueError, match="training mode only"):
        drop.forward(X, dropout_mask=[np.ones((9, 5))])
    with pytest.raises(ValueError, match=r"dropout_mask\[0\] must have shape \(9, 5\)"):
        drop.forward(X, training=True, dropout_mask=[np.ones((9, 4))])
    with pytest.raises(ValueError, match="only 0 and 1"):
        drop.forward(X, training=True, dropout_mask=[np.full((9, 5), 0.5)])
    with pytest.raises(TypeError, match="training must be True or False"):
        net.forward(X, training="yes")


def test_one_sample_as_1d_and_chunked_inference(xy):
    X, _ = xy
    net = ns.MLP([4, 5, 3], seed=0)
    np.testing.assert_allclose(net.forward(X[0]), net.forward(X)[:1])
    big = np.random.default_rng(1).standard_normal((3000, 4))
    import neurosim.ann as ann

    old = ann._FORWARD_CHUNK_VALUES
    try:
        ann._FORWARD_CHUNK_VALUES = 8 * 256  # forces 256-row chunks
        chunked = net.forward(big)
    finally:
        ann._FORWARD_CHUNK_VALUES = old
    np.testing.assert_allclose(chunked, net.forward(big), rtol=1e-15)

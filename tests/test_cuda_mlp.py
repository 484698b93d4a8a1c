"""CUDA twins of the MLP engine (dense, optim, mlp_train kernels) against the CPU engine.

Small nets under numba's CUDA simulator (or a GPU with ``--gpu``); workspaces and outputs are
poisoned with NaN so that an unwritten element shows up.
"""

import numpy as np
import pytest

import neurosim as ns
from neurosim.ann import BN_EPS
from neurosim.kernels import dense as cpu_dense
from neurosim.kernels import optim as cpu_optim

cuda = pytest.importorskip("numba.cuda")
if not cuda.is_available():  # pragma: no cover
    pytest.skip("no CUDA device and no simulator", allow_module_level=True)

from test_cuda_kernels import (  # noqa: E402
    assert_written_close,
    fetch,
    poisoned,
    reliable_simulator,
    tol,
)

from neurosim.kernels.cuda import dense as gpu_dense  # noqa: E402
from neurosim.kernels.cuda import optim as gpu_optim  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # simulated uint64 wraparound

DTYPES = (np.float32, np.float64)


@pytest.fixture(autouse=True, scope="module")
def simulator():
    with reliable_simulator():
        yield


def device_workspaces(net, nb, masks=None):
    """CPU workspaces of ``net`` for ``nb`` samples and NaN-poisoned device twins of them."""
    cpu = list(net._workspace(nb, masks is not None)) + list(net._backward_workspace(nb))
    if masks is not None:
        net._fill_masks(cpu[5], nb, masks)
    dev = []
    for k, arr in enumerate(cpu):
        if k == 2 and arr is cpu[1]:  # A is U when no layer has a skip or dropout
            dev.append(dev[1])
        elif k == 5:
            dev.append(cuda.to_device(arr))
        else:
            dev.append(poisoned(arr.shape, arr.dtype))
    return cpu, dev


NETS = {
    "tanh_batchnorm": dict(sizes=[5, 7, 6, 3], activation="tanh", batchnorm=True),
    "residual_bn_prelu": dict(sizes=[4, 6, 6, 6, 2], activation="prelu", residual=True,
                              batchnorm=True),
    "dropout_logistic": dict(sizes=[5, 8, 3], activation="elu", dropout=0.3,
                             output_activation="sigmoid"),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", sorted(NETS))
def test_forward_backward_matches_cpu(kind, dtype):
    net = ns.MLP(**NETS[kind], seed=3, dtype=np.dtype(dtype).name, sigma_w=1.3)
    rng = np.random.default_rng(0)
    nb = 6
    X = rng.normal(size=(nb, net.sizes[0])).astype(dtype)
    Y = rng.normal(size=(nb, net.sizes[-1])).astype(dtype)
    masks = None
    if net.dropout:
        masks = [rng.random((nb, n)) > 0.3 for n in net.sizes[1:-1]]
    cpu, dev = device_workspaces(net, nb, masks)
    grad = np.zeros_like(net.params)
    bn_cpu = net.bn_state.copy()
    eps = net.dtype.type(BN_EPS)
    loss = cpu_dense.forward_backward(net.layout, net.act_params, net.params, X, Y, 0, True, eps,
                                      bn_cpu, *cpu, grad)
    dgrad = poisoned(grad.shape, dtype)
    dloss = gpu_dense.forward_backward(net.layout, net.act_params, cuda.to_device(net.params),
                                       cuda.to_device(X), cuda.to_device(Y), 0, True, eps,
                                       cuda.to_device(net.bn_state), *dev, dgrad)
    np.testing.assert_allclose(dloss, loss, **tol(dtype, abs(loss)))
    assert_written_close(fetch(dgrad), grad, dtype, scale=np.abs(grad).max())
    H, U, A, XH, ST, MK, D = cpu[:7]
    dH, dU, dA, dXH, dST, dMK, dD = dev[:7]
    for name, c, d in (("H", H, dH), ("U", U, dU), ("A", A, dA), ("D", D, dD)):
        assert_written_close(fetch(d), c, dtype, scale=np.abs(c).max(), what=name)
    bn_units = [(nb * lay[cpu_dense.UNIT_OFF], nb * (lay[cpu_dense.UNIT_OFF] + lay[1]))
                for lay in net.layout if lay[cpu_dense.BN_OFF] >= 0]
    for start, stop in bn_units:  # only batch-norm layers have a normalised input
        assert_written_close(fetch(dXH)[start:stop], XH[start:stop], dtype, scale=10)
    if ST.size:
        assert_written_close(fetch(dST), ST, dtype, scale=np.abs(ST).max())

    # inference mode forward (running statistics, no dropout)
    out_cpu = cpu_dense.mlp_forward(net.layout, net.act_params, net.params, X, False, eps,
                                    net.bn_state, *cpu[:6]).copy()
    cpu2, dev2 = device_workspaces(net, nb)
    out = gpu_dense.mlp_forward(net.layout, net.act_params, cuda.to_device(net.params),
                                cuda.to_device(X), False, eps, cuda.to_device(net.bn_state),
                                *dev2[:6])
    assert_written_close(fetch(out), out_cpu, dtype, scale=np.abs(out_cpu).max())


@pytest.mark.parametrize("dtype", DTYPES)
def test_layer_kernels_match_cpu(dtype):
    rng = np.random.default_rng(1)
    nb, n = 5, 9
    h = rng.normal(size=(nb, n)).astype(dtype)
    b = rng.normal(size=n).astype(dtype)
    act = ns.activations.get("prelu", slope=0.2)
    p = act.param_array(dtype)
    h_cpu, u_cpu = h.copy(), np.empty_like(h)
    cpu_dense.bias_activation(h_cpu, b, act.code, p[0], p[1], p[2], u_cpu)
    dh, du = cuda.to_device(h), poisoned((nb, n), dtype)
    gpu_dense.bias_activation(dh, cuda.to_device(b), act.code, p[0], p[1], p[2], du)
    assert_written_close(fetch(dh), h_cpu, dtype, scale=3)
    assert_written_close(fetch(du), u_cpu, dtype, scale=3)

    g = rng.normal(size=(nb, n)).astype(dtype)
    mask = (rng.random((nb, n)) > 0.5).astype(dtype) * 2
    delta, sums = np.empty_like(h), np.empty(n, dtype)
    slope_grad = cpu_dense.activation_backward(g, mask, True, h_cpu, u_cpu, act.code, p[0], p[1],
                                               p[2], delta, sums)
    ddelta, dsums = poisoned((nb, n), dtype), poisoned(n, dtype)
    got = gpu_dense.activation_backward(cuda.to_device(g), cuda.to_device(mask), True,
                                        cuda.to_device(h_cpu), cuda.to_device(u_cpu), act.code,
                                        p[0], p[1], p[2], ddelta, dsums,
                                        slope=cuda.to_device(p[:1]))
    assert_written_close(fetch(ddelta), delta, dtype, scale=3)
    assert_written_close(fetch(dsums), sums, dtype, scale=5)
    np.testing.assert_allclose(got, slope_grad, **tol(dtype, 10))

    skip = rng.normal(size=(nb, n)).astype(dtype)
    a = np.empty_like(h)
    cpu_dense.combine_output(u_cpu, mask, True, skip, True, a)
    da = poisoned((nb, n), dtype)
    gpu_dense.combine_output(cuda.to_device(u_cpu), cuda.to_device(mask), True,
                             cuda.to_device(skip), True, da)
    assert_written_close(fetch(da), a, dtype, scale=5)


@pytest.mark.parametrize("dtype", DTYPES)
def test_batchnorm_running_stats_and_dropout(dtype):
    rng = np.random.default_rng(2)
    nb, n = 7, 5
    mean, var = rng.normal(size=n).astype(dtype), rng.random(n).astype(dtype)
    run_mean, run_var = rng.normal(size=n).astype(dtype), rng.random(n).astype(dtype)
    dm, dv = cuda.to_device(run_mean), cuda.to_device(run_var)
    cpu_dense.update_running_stats(mean, var, nb, dtype(0.1), run_mean, run_var)
    gpu_dense.update_running_stats(cuda.to_device(mean), cuda.to_device(var), nb, 0.1, dm, dv)
    assert_written_close(fetch(dm), run_mean, dtype)
    assert_written_close(fetch(dv), run_var, dtype)

    net = ns.MLP([4, 40, 30, 2], dropout=0.25, dtype=np.dtype(dtype).name)
    MK = poisoned(nb * 72, dtype)
    gpu_dense.draw_dropout_masks(gpu_dense.device_rng(np.random.default_rng(0)), 0.25,
                                 net.layout, nb, MK)
    masks = fetch(MK)[:nb * 70]  # the output layer has no dropout: its block stays untouched
    assert np.isnan(fetch(MK)[nb * 70:]).all()
    assert set(np.unique(masks)) == {0.0, np.float64(dtype(1 / 0.75))}
    assert 0.1 < np.mean(masks == 0) < 0.4


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("magnitude", [1.0, 1e-27])
def test_weight_grad_norms_and_delta_norms(dtype, magnitude):
    """Also for a vanishing signal (1e-27), whose float32 squares would underflow: both
    devices sum them in float64."""
    from neurosim.kernels import mlp_train as cpu_train
    from neurosim.kernels.cuda import mlp_train as gpu_train

    net = ns.MLP([3, 5, 4, 2], dtype=np.dtype(dtype).name)
    rng = np.random.default_rng(3)
    grad = (rng.normal(size=net.n_params) * magnitude).astype(dtype)
    want = np.empty(3)
    cpu_optim.weight_grad_norms(grad, net.layout, want)
    assert np.all(want > 0.1 * magnitude)
    out = poisoned((2, 3), dtype)
    gpu_optim.weight_grad_norms(cuda.to_device(grad), net.layout, out, index=1)
    assert_written_close(fetch(out)[1], want, dtype, scale=5 * magnitude)
    nb = 4
    D = (rng.normal(size=nb * 11) * magnitude).astype(dtype)
    cpu_train.delta_norms(D, net.layout, nb, want)
    assert np.all(want > 0.1 * magnitude)
    gpu_train.delta_norms(cuda.to_device(D), net.layout, nb, out, index=0)
    assert_written_close(fetch(out)[0], want, dtype, scale=5 * magnitude)


@pytest.mark.parametrize("dtype", DTYPES)
def test_optimizers_and_clipping_match_cpu(dtype):
    rng = np.random.default_rng(7)
    n = 37
    hyper = np.array([0.9, 0.95, 0.9, 0.999, 1e-8], dtype)
    for code in range(6):  # sgd, momentum, nesterov, rmsprop, adagrad, adam
        p, g = rng.normal(size=n).astype(dtype), rng.normal(size=n).astype(dtype)
        s1, s2 = (np.abs(rng.normal(size=n)).astype(dtype) for _ in range(2))
        dev = [cuda.to_device(a) for a in (p, g, s1, s2)]
        ok = cpu_optim.optimizer_step(code, p, g, s1, s2, 0.1, hyper, 3, 0.01, 0.7, 0.8)
        assert gpu_optim.optimizer_step(code, *dev, 0.1, hyper, 3, 0.01, 0.7, 0.8) == ok
        for name, want, got in (("params", p, dev[0]), ("s1", s1, dev[2]), ("s2", s2, dev[3])):
            assert_written_close(fetch(got), want, dtype, scale=3, what=f"{code} {name}")
    # an update that overflows keeps the old value and reports failure, as on the CPU
    big = np.finfo(dtype).max
    p = np.array([1.0, big, -2.0], dtype)
    g = np.array([0.5, -big, 0.25], dtype)
    dp = cuda.to_device(p)
    assert not gpu_optim.optimizer_step(0, dp, cuda.to_device(g), cuda.to_device(p),
                                        cuda.to_device(p), 10.0, hyper, 1, 0.0, 1.0, np.inf)
    assert not cpu_optim.optimizer_step(0, p, g, p.copy(), p.copy(), 10.0, hyper, 1, 0.0, 1.0,
                                        np.inf)
    np.testing.assert_array_equal(fetch(dp), p)
    grad = rng.normal(size=n).astype(dtype)
    for bad in (False, True):
        if bad:
            grad[5] = np.nan
        want = cpu_optim.clipped_sumsq(grad, dtype(0.5))
        got = gpu_optim.clipped_sumsq(cuda.to_device(grad), 0.5)
        assert got[1] == want[1]
        if not bad:
            np.testing.assert_allclose(got[0], want[0], **tol(dtype, n))

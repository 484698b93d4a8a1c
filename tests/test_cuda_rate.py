"""CUDA twins of the rate-network kernels (rate, rules) against the CPU kernels.

Tiny networks under numba's CUDA simulator (or a GPU with ``--gpu``); outputs poisoned with NaN.
"""

import numpy as np
import pytest

import neurosim as ns
from neurosim.kernels import rate as cpu_rate
from neurosim.kernels import rules as cpu_rules

cuda = pytest.importorskip("numba.cuda")
if not cuda.is_available():  # pragma: no cover
    pytest.skip("no CUDA device and no simulator", allow_module_level=True)

from test_cuda_kernels import (  # noqa: E402
    assert_written_close,
    fetch,
    poisoned,
    reliable_simulator,
)

from neurosim.kernels.cuda import rate as gpu_rate  # noqa: E402
from neurosim.kernels.cuda import rules as gpu_rules  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

DTYPES = (np.float32, np.float64)
SIZES = [3, 5, 4, 2]
BATCH = 3
UNITS = BATCH * sum(SIZES[1:])


@pytest.fixture(autouse=True, scope="module")
def simulator():
    with reliable_simulator():
        yield


def network(dtype, **kw):
    return ns.RateNetwork(SIZES, seed=1, dtype=np.dtype(dtype).name, sigma_w=1.5, sigma_b=0.3,
                          **kw)


def inputs(dtype, seed=0):
    return np.random.default_rng(seed).random((BATCH, SIZES[0])).astype(dtype)


def args(rn):
    return rn.activation.code, rn._ap, rn._params, rn._w_off, rn._b_off, rn._sizes


def dev_args(rn):
    return rn.activation.code, rn._ap, cuda.to_device(rn._params), rn._w_off, rn._b_off, \
        rn._sizes


@pytest.mark.parametrize("dtype", DTYPES)
def test_feedforward_and_derivatives(dtype):
    rn = network(dtype)
    X = inputs(dtype)
    H, R = np.empty(UNITS, dtype), np.empty(UNITS, dtype)
    cpu_rate.feedforward(*args(rn), X, H, R)
    dH, dR = poisoned(UNITS, dtype), poisoned(UNITS, dtype)
    gpu_rate.feedforward(*dev_args(rn), cuda.to_device(X), dH, dR)
    assert_written_close(fetch(dH), H, dtype, scale=3)
    assert_written_close(fetch(dR), R, dtype)
    p0, p1, p2 = rn._ap
    F = np.empty_like(H)
    cpu_rate.transfer(rn.activation.code, p0, p1, p2, H, F)
    dF = poisoned(UNITS, dtype)
    gpu_rate.transfer(rn.activation.code, p0, p1, p2, dH, dF)
    assert_written_close(fetch(dF), F, dtype)
    Hl, Rl = H[:BATCH * 5].reshape(BATCH, 5), R[:BATCH * 5].reshape(BATCH, 5).copy()
    b = rn._params[rn._b_off[0]:rn._b_off[0] + 5]
    dRl = cuda.to_device(Rl)
    cpu_rate.relax_rows(rn.activation.code, p0, p1, p2, Hl, b, Rl, dtype(0.3))
    gpu_rate.relax_rows(rn.activation.code, p0, p1, p2, cuda.to_device(Hl), cuda.to_device(b),
                        dRl, 0.3)
    assert_written_close(fetch(dRl), Rl, dtype)
    D = np.empty_like(H)
    cpu_rate.layer_derivatives(rn.activation.code, rn._ap, H, R, D)
    dD = poisoned(UNITS, dtype)
    gpu_rate.layer_derivatives(rn.activation.code, rn._ap, dH, dR, dD)
    assert_written_close(fetch(dD), D, dtype)


@pytest.mark.parametrize("dtype,feedback", [(np.float32, None), (np.float64, "symmetric")])
def test_relax_stops_at_the_cpu_step(dtype, feedback):
    rn = network(dtype, feedback=feedback, integrator="exponential", tau=0.01, dt=0.004)
    X = inputs(dtype)
    t = np.dtype(dtype).type
    a, fb, tol = t(rn.integration_coefficient), t(rn.feedback_gain), t(1e-3)
    R, H, T = np.zeros(UNITS, dtype), np.empty(UNITS, dtype), np.empty(BATCH * 5, dtype)
    steps, residual = cpu_rate.relax(*args(rn), X, R, H, T, a, fb, X, t(0), tol, 200)
    assert 3 < steps < 40, "the test wants a relaxation of a few steps"
    dR, dH = cuda.to_device(np.zeros(UNITS, dtype)), poisoned(UNITS, dtype)
    dX = cuda.to_device(X)
    got_steps, got_residual = gpu_rate.relax(*dev_args(rn), dX, dR, dH, None, a, fb, dX, t(0),
                                             tol, 200)
    assert got_steps == steps
    np.testing.assert_allclose(got_residual, residual, rtol=1e-4 if dtype == np.float32 else 1e-9)
    assert_written_close(fetch(dR), R, dtype)
    assert_written_close(fetch(dH), H, dtype)
    # max_steps reached before tol: the CPU's step count and state as well
    R2 = np.zeros(UNITS, dtype)
    cpu_rate.relax(*args(rn), X, R2, H, T, a, fb, X, t(0), tol, 2)
    dR2 = cuda.to_device(np.zeros(UNITS, dtype))
    assert gpu_rate.relax(*dev_args(rn), dX, dR2, dH, None, a, fb, dX, t(0), tol, 2)[0] == 2
    assert_written_close(fetch(dR2), R2, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("feedback", [None, "symmetric"])
def test_simulate_matches_cpu_without_noise(dtype, feedback, monkeypatch):
    rn = network(dtype, feedback=feedback)
    X = inputs(dtype)
    t = np.dtype(dtype).type
    R0 = np.random.default_rng(1).random(UNITS).astype(dtype)
    steps, every = 5, 2
    trace = np.empty((steps // every + 1, UNITS), dtype)
    R, H, T, Z = R0.copy(), np.empty(UNITS, dtype), np.empty(BATCH * 5, dtype), np.zeros(UNITS,
                                                                                        dtype)
    a, fb = t(rn.integration_coefficient), t(rn.feedback_gain)
    cpu_rate.simulate(*args(rn), X, R, H, T, Z, a, fb, steps, every, cpu_rate.NOISE_NONE, t(0),
                      t(0), np.random.default_rng(0), trace)
    # a host trace staged two rows at a time exercises the batched copies back
    monkeypatch.setattr(gpu_rate, "TRACE_STAGE_BYTES", 2 * UNITS * np.dtype(dtype).itemsize)
    got = np.full_like(trace, np.nan)
    dR = cuda.to_device(R0)
    gpu_rate.simulate(*dev_args(rn), cuda.to_device(X), dR, cuda.device_array(UNITS, dtype),
                      None, cuda.to_device(Z), a, fb, steps, every, gpu_rate.NOISE_NONE, 0, 0,
                      None, got)
    assert_written_close(got, trace, dtype)
    assert_written_close(fetch(dR), R, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_simulate_with_noise_stays_in_range_and_is_seeded(dtype):
    rn = network(dtype, noise="ou", noise_std=0.5)
    X = cuda.to_device(inputs(dtype))
    t = np.dtype(dtype).type
    runs = []
    for _ in range(2):
        trace = poisoned((5, UNITS), dtype)
        gpu_rate.simulate(*dev_args(rn), X, cuda.to_device(np.zeros(UNITS, dtype)),
                          cuda.device_array(UNITS, dtype), None,
                          cuda.to_device(np.full(UNITS, 0.3, dtype)), t(0.1), t(0), 4, 1,
                          gpu_rate.NOISE_OU, t(0.5), t(0.9),
                          gpu_rate.noise_rng(np.random.default_rng(7)), trace)
        runs.append(fetch(trace))
    low, high = rn.rate_range
    assert np.all(np.isfinite(runs[0]))
    assert runs[0].min() >= low and runs[0].max() <= high
    np.testing.assert_array_equal(runs[0], runs[1])  # same generator seed, same trace
    assert np.all(np.diff(runs[0], axis=0) != 0)  # the noise moves every unit


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("form", [cpu_rate.FORM_CURRENT, cpu_rate.FORM_RATE])
@pytest.mark.parametrize("batch", [1, 5])  # matrix-vector kernel / tiled matrix product
def test_recurrent_simulate_matches_cpu(dtype, form, batch):
    rng = np.random.default_rng(4)
    n = 7
    J = (0.8 * rng.normal(size=(n, n)) / np.sqrt(n)).astype(dtype)
    I = rng.normal(size=(batch, n)).astype(dtype) * 0.3
    V0 = rng.normal(size=(batch, n)).astype(dtype)
    ap = ns.activations.get("tanh").param_array(dtype)
    t = np.dtype(dtype).type
    steps = 4
    trace = np.empty((steps + 1, batch, n), dtype)
    V = V0.copy()
    cpu_rate.recurrent_simulate(2, ap, J, I, V, t(0.2), form, steps, 1, cpu_rate.NOISE_NONE,
                                t(0), t(0), np.zeros_like(V), np.random.default_rng(0), trace)
    dtrace = poisoned(trace.shape, dtype)
    dV = cuda.to_device(V0)
    gpu_rate.recurrent_simulate(2, ap, cuda.to_device(J), cuda.to_device(I), dV, t(0.2), form,
                                steps, 1, gpu_rate.NOISE_NONE, 0, 0,
                                cuda.to_device(np.zeros_like(V)), None, dtrace)
    assert_written_close(fetch(dtrace), trace, dtype, scale=3)
    assert_written_close(fetch(dV), V, dtype, scale=3)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rule", ["backprop", "feedback_alignment", "direct_feedback_alignment"])
def test_backward_and_bounded_update_match_cpu(dtype, rule):
    rn = network(dtype, w_bounds=(-0.6, 0.8), bound_mode="soft")
    X = inputs(dtype)
    H, R = np.empty(UNITS, dtype), np.empty(UNITS, dtype)
    cpu_rate.feedforward(*args(rn), X, H, R)
    E = np.random.default_rng(5).normal(size=(BATCH, SIZES[-1])).astype(dtype)
    mode = {"backprop": cpu_rules.BACKPROP, "feedback_alignment": cpu_rules.FEEDBACK_ALIGNMENT,
            "direct_feedback_alignment": cpu_rules.DIRECT_FEEDBACK_ALIGNMENT}[rule]
    M, m_off = np.zeros(1, dtype), np.zeros(rn.n_layers, np.int64)
    if rule != "backprop":
        mats = rn.feedback_matrices(rule)
        M = np.concatenate([m.ravel() for m in mats]).astype(dtype)
        m_off = np.cumsum([0] + [m.size for m in mats[:-1]]).astype(np.int64)
    delta, grads = np.empty(UNITS, dtype), np.empty(rn.n_params, dtype)
    cpu_rules.backward(*args(rn), M, m_off, mode, X, H, R, E, delta, grads)
    ddelta, dgrads = poisoned(UNITS, dtype), poisoned(rn.n_params, dtype)
    gpu_rules.backward(*dev_args(rn), cuda.to_device(M), m_off, mode, cuda.to_device(X),
                       cuda.to_device(H), cuda.to_device(R), cuda.to_device(E), ddelta, dgrads)
    assert_written_close(fetch(ddelta), delta, dtype, scale=np.abs(delta).max())
    assert_written_close(fetch(dgrads), grads, dtype, scale=np.abs(grads).max())

    lr = np.array([0.3, 0.2, 0.1], dtype)
    vel = np.random.default_rng(6).normal(size=rn.n_params).astype(dtype) * 0.1
    params = rn._params.copy()
    dparams, dvel = cuda.to_device(params), cuda.to_device(vel)
    cpu_rules.apply_update(params, grads * 20, vel, dtype(0.5), lr, lr, rn._w_off, rn._b_off,
                           rn._sizes, rn._lo, rn._hi, True, True)
    gpu_rules.apply_update(dparams, cuda.to_device(grads * 20), dvel, 0.5, lr, lr, rn._w_off,
                           rn._b_off, rn._sizes, cuda.to_device(rn._lo), cuda.to_device(rn._hi),
                           True, True)
    assert_written_close(fetch(dparams), params, dtype)
    assert_written_close(fetch(dvel), vel, dtype, scale=np.abs(vel).max())
    # a set stop flag freezes everything
    frozen = fetch(dparams)
    gpu_rules.apply_update(dparams, cuda.to_device(grads), dvel, 0.5, lr, lr, rn._w_off,
                           rn._b_off, rn._sizes, cuda.to_device(rn._lo), cuda.to_device(rn._hi),
                           True, True, status=cuda.to_device(np.ones(3, np.int64)))
    np.testing.assert_array_equal(fetch(dparams), frozen)

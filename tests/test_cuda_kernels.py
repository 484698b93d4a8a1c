"""CUDA building blocks against their CPU twins and plain NumPy.

Runs under numba's CUDA simulator (tiny launch geometry, selected in conftest) or, with ``--gpu``,
on a real device. Every output is poisoned with NaN before the launch, so an element a kernel
fails to write fails the comparison; sizes are odd so they never divide a block or tile.
"""

import contextlib
import sys
import threading

import numpy as np
import pytest

from neurosim import activations
from neurosim.kernels import activations as cpu_act
from neurosim.kernels import losses as cpu_losses

cuda = pytest.importorskip("numba.cuda")
if not cuda.is_available():  # pragma: no cover - only without simulator and GPU
    pytest.skip("no CUDA device and no simulator", allow_module_level=True)

from neurosim.kernels.cuda import activations as gpu_act  # noqa: E402
from neurosim.kernels.cuda import gemm as gpu_gemm  # noqa: E402
from neurosim.kernels.cuda import losses as gpu_losses  # noqa: E402
from neurosim.kernels.cuda import reduce as gpu_reduce  # noqa: E402
from neurosim.kernels.cuda._launch import SIMULATOR  # noqa: E402

DTYPES = (np.float32, np.float64)


@contextlib.contextmanager
def reliable_simulator():
    """Run numba's CUDA simulator fast and without its shared-memory race.

    The simulator runs each CUDA thread as a Python thread and polls them from the launching
    thread; with the default 5 ms switch interval every ``syncthreads`` costs milliseconds, so
    the interval is lowered. Its ``cuda.shared.array`` looks an allocation up and creates it
    without a lock, so two threads of a block can occasionally get different "shared" arrays
    (seen as rare wrong reductions); the replacement creates them under a lock, keyed like the
    original by the calling source line.
    """
    if not SIMULATOR:
        yield
        return
    from numba.core import types
    from numba.cuda.simulator import kernelapi
    from numba.np import numpy_support

    original = kernelapi.FakeCUDAShared.array
    lock = threading.Lock()

    def array(self, shape, dtype, alignment=None):
        if shape == 0 or alignment is not None:  # dynamic shared memory: no allocation
            return original(self, shape, dtype, alignment)
        if isinstance(dtype, types.Type):
            dtype = numpy_support.as_dtype(dtype)
        frame = sys._getframe(1)
        key = (frame.f_code.co_filename, frame.f_lineno)
        with lock:
            found = self._allocations.get(key)
            if found is None:
                found = self._allocations[key] = np.empty(shape, dtype)
        return found

    old_interval = sys.getswitchinterval()
    kernelapi.FakeCUDAShared.array = array
    sys.setswitchinterval(1e-4)
    try:
        yield
    finally:
        sys.setswitchinterval(old_interval)
        kernelapi.FakeCUDAShared.array = original


@pytest.fixture(autouse=True, scope="module")
def simulator():
    with reliable_simulator():
        yield


def tol(dtype, scale=1.0):
    """(rtol, atol) for comparing a device result with the CPU twin in ``dtype``."""
    if np.dtype(dtype) == np.float32:
        return {"rtol": 2e-5, "atol": 2e-6 * scale}
    return {"rtol": 1e-12, "atol": 1e-13 * scale}


def poisoned(shape, dtype):
    """A device array full of NaN."""
    return cuda.to_device(np.full(shape, np.nan, dtype=dtype))


def fetch(dev):
    """Synchronise (surfacing any launch or execution error) and copy back."""
    cuda.synchronize()
    return dev.copy_to_host()


def assert_written_close(got, want, dtype, scale=1.0, what=""):
    assert got.dtype == np.dtype(dtype), what
    assert np.all(np.isfinite(got)), f"{what}: kernel left elements unwritten (NaN survived)"
    np.testing.assert_allclose(got, want, err_msg=what, **tol(dtype, scale))


def sample_input(name, rng, n, dtype):
    x = rng.uniform(-2.5, 2.5, size=n)
    if name == "naka_rushton":  # cover both branches (x < c50 and x > c50) and x <= 0
        x = rng.uniform(-0.5, 3.0, size=n)
    x[np.abs(x) < 1e-3] = 0.3  # stay off kinks, where one-sided conventions may differ
    return x.astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_activation_kernels_match_cpu(dtype):
    rng = np.random.default_rng(1)
    n = 37
    for name in activations.names():
        overrides = {"logistic": {"r_max": 2.0, "gain": 1.7, "threshold": 0.2},
                     "saturating_linear": {"r_max": 1.5, "gain": 0.8, "threshold": -0.4},
                     "naka_rushton": {"r_max": 1.2, "exponent": 2.5, "c50": 0.9},
                     "leaky_relu": {"slope": 0.13}, "elu": {"alpha": 0.7}}.get(name, {})
        act = activations.get(name, **overrides)
        params = act.param_array(dtype)
        h = sample_input(name, rng, n, dtype)
        a = np.empty_like(h)
        d1 = np.empty_like(h)
        d2 = np.empty_like(h)
        cpu_act.apply_phi(act.code, params, h, a)
        cpu_act.apply_dphi(act.code, params, h, a, d1)
        cpu_act.apply_d2phi(act.code, params, h, a, d2)

        dh, da = cuda.to_device(h), cuda.to_device(a)
        out = poisoned(n, dtype)
        gpu_act.apply_phi(act.code, params, dh, out)
        assert_written_close(fetch(out), a, dtype)
        out = poisoned(n, dtype)
        gpu_act.apply_dphi(act.code, cuda.to_device(params), dh, da, out)
        assert_written_close(fetch(out), d1, dtype, scale=np.abs(d1).max())
        out = poisoned(n, dtype)
        gpu_act.apply_d2phi(act.code, params, dh, da, out)
        assert_written_close(fetch(out), d2, dtype, scale=np.abs(d2).max() + 1)


def test_activation_kernels_reject_mismatched_arrays():
    h = cuda.to_device(np.ones(5))
    with pytest.raises(ValueError, match="out has shape"):
        gpu_act.apply_phi(0, np.zeros(3), h, cuda.to_device(np.ones(4)))
    with pytest.raises(TypeError, match="out has dtype float32"):
        gpu_act.apply_phi(0, np.zeros(3), h, cuda.to_device(np.ones(5, np.float32)))
    with pytest.raises(ValueError, match="params has shape"):
        gpu_act.apply_phi(0, np.zeros(2), h, cuda.to_device(np.ones(5)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss_code", [cpu_losses.MSE, cpu_losses.CROSS_ENTROPY])
def test_loss_kernels_match_cpu(dtype, loss_code):
    rng = np.random.default_rng(2)
    batch, n_out = 7, 19
    out = (3 * rng.normal(size=(batch, n_out))).astype(dtype)
    if loss_code == cpu_losses.MSE:
        Y = rng.normal(size=(batch, n_out)).astype(dtype)
    else:  # soft targets with rows summing to 0.5..1.5 exercise the y_total factor
        Y = rng.dirichlet(np.ones(n_out), size=batch) * rng.uniform(0.5, 1.5, (batch, 1))
        Y = Y.astype(dtype)
    grad = np.empty_like(out)
    want = cpu_losses.loss_and_output_grad(loss_code, out, Y, grad)

    dgrad = poisoned((batch, n_out), dtype)
    got = gpu_losses.loss_and_output_grad(loss_code, cuda.to_device(out), cuda.to_device(Y), dgrad)
    assert np.asarray(got).dtype == np.dtype(dtype)
    np.testing.assert_allclose(got, want, **tol(dtype, abs(want)))
    assert_written_close(fetch(dgrad), grad, dtype, scale=np.abs(grad).max())

    # the loss can stay on the device, written into a record buffer slot
    record = poisoned(4, dtype)
    work = gpu_losses.loss_workspace(batch, dtype)
    assert gpu_losses.loss_and_output_grad(loss_code, cuda.to_device(out), cuda.to_device(Y),
                                           dgrad, loss_out=record, index=2, work=work) is None
    got_record = fetch(record)
    np.testing.assert_allclose(got_record[2], want, **tol(dtype, abs(want)))
    assert np.isnan(got_record[[0, 1, 3]]).all()
    value = gpu_losses.loss_value(loss_code, cuda.to_device(out), cuda.to_device(Y))
    np.testing.assert_allclose(value, want, **tol(dtype, abs(want)))


def test_loss_kernel_rejects_bad_arguments():
    out = cuda.to_device(np.ones((3, 4)))
    with pytest.raises(ValueError, match="loss_code"):
        gpu_losses.loss_and_output_grad(5, out, out, out)
    with pytest.raises(ValueError, match="Y has shape"):
        gpu_losses.loss_and_output_grad(0, out, cuda.to_device(np.ones((3, 5))), out)
    with pytest.raises(ValueError, match="index 4"):
        gpu_losses.loss_and_output_grad(0, out, out, cuda.to_device(np.ones((3, 4))),
                                        loss_out=cuda.to_device(np.ones(4)), index=4)


def _op(x, trans):
    return x.T if trans else x


GEMM_CASES = [(13, 11, 7), (5, 17, 9), (3, 7, 37), (1, 3, 1)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (False, True), (True, False),
                                             (True, True)])
def test_gemm_matches_numpy(dtype, trans_a, trans_b):
    rng = np.random.default_rng(3)
    for case, (M, N, K) in enumerate(GEMM_CASES):
        A = rng.normal(size=(K, M) if trans_a else (M, K)).astype(dtype)
        B = rng.normal(size=(N, K) if trans_b else (K, N)).astype(dtype)
        C0 = rng.normal(size=(M, N)).astype(dtype)
        product = _op(A, trans_a).astype(np.float64) @ _op(B, trans_b).astype(np.float64)
        C = poisoned((M, N), dtype)  # beta = 0 must not read C
        gpu_gemm.gemm(cuda.to_device(A), cuda.to_device(B), C, trans_a, trans_b)
        assert_written_close(fetch(C), product, dtype, scale=np.sqrt(K))
        if case > 1:
            continue
        C = cuda.to_device(C0)
        gpu_gemm.gemm(cuda.to_device(A), cuda.to_device(B), C, trans_a, trans_b, alpha=-0.7,
                      beta=0.4)
        assert_written_close(fetch(C), -0.7 * product + 0.4 * C0, dtype, scale=np.sqrt(K))


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_fused_epilogues_match_cpu_kernels(dtype):
    rng = np.random.default_rng(4)
    M, K, N = 9, 10, 13
    for name, params in (("tanh", {}), ("logistic", {"r_max": 1.5, "gain": 2.0,
                                                     "threshold": 0.1}), ("leaky_relu", {})):
        act = activations.get(name, **params)
        p = act.param_array(dtype)
        A = rng.normal(size=(M, K)).astype(dtype)
        W = (rng.normal(size=(K, N)) / np.sqrt(K)).astype(dtype)
        b = rng.normal(size=N).astype(dtype)
        H_ref = (A.astype(np.float64) @ W + b).astype(dtype)
        a_ref = np.empty_like(H_ref)
        cpu_act.apply_phi(act.code, p, H_ref.ravel(), a_ref.reshape(-1))
        H, out = poisoned((M, N), dtype), poisoned((M, N), dtype)
        gpu_gemm.gemm_bias_act(cuda.to_device(A), cuda.to_device(W), cuda.to_device(b),
                               act.code, p, H, out)
        assert_written_close(fetch(H), H_ref, dtype, scale=3)
        assert_written_close(fetch(out), a_ref, dtype, scale=3)
        # inference form: no pre-activation stored
        out = poisoned((M, N), dtype)
        gpu_gemm.gemm_bias_act(cuda.to_device(A), cuda.to_device(W), cuda.to_device(b),
                               act.code, p, cuda.device_array((0, 0), dtype), out)
        assert_written_close(fetch(out), a_ref, dtype, scale=3)

        D = rng.normal(size=(M, N)).astype(dtype)
        H_prev = rng.normal(size=(M, K)).astype(dtype)
        a_prev = np.empty_like(H_prev)
        d_prev = np.empty_like(H_prev)
        cpu_act.apply_phi(act.code, p, H_prev.ravel(), a_prev.reshape(-1))
        cpu_act.apply_dphi(act.code, p, H_prev.ravel(), a_prev.ravel(), d_prev.reshape(-1))
        want = (D.astype(np.float64) @ W.T) * d_prev
        got = poisoned((M, K), dtype)
        gpu_gemm.gemm_dphi(cuda.to_device(D), cuda.to_device(W), cuda.to_device(H_prev),
                           cuda.to_device(a_prev), act.code, p, got)
        assert_written_close(fetch(got), want, dtype, scale=3)


@pytest.mark.skipif(not SIMULATOR, reason="the production tiles are what a GPU run uses anyway")
@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_production_tiles_under_the_simulator(dtype, monkeypatch):
    # the GPU tile shapes (many threads, several loads per thread) on one partial tile
    monkeypatch.setattr(gpu_gemm, "SIMULATOR", False)
    rng = np.random.default_rng(5)
    M, N, K = 3, 5, 11
    A = rng.normal(size=(K, M)).astype(dtype)
    B = rng.normal(size=(N, K)).astype(dtype)
    C = poisoned((M, N), dtype)
    gpu_gemm.gemm(cuda.to_device(A), cuda.to_device(B), C, True, True)
    assert_written_close(fetch(C), A.T.astype(np.float64) @ B.T, dtype, scale=3)


def test_gemm_rejects_bad_shapes():
    A = cuda.to_device(np.ones((3, 4)))
    with pytest.raises(ValueError, match="inner dimensions"):
        gpu_gemm.gemm(A, cuda.to_device(np.ones((5, 2))), cuda.to_device(np.ones((3, 2))))
    with pytest.raises(ValueError, match="C has shape"):
        gpu_gemm.gemm(A, cuda.to_device(np.ones((4, 2))), cuda.to_device(np.ones((3, 3))))
    with pytest.raises(TypeError, match="B has dtype float32"):
        gpu_gemm.gemm(A, cuda.to_device(np.ones((4, 2), np.float32)),
                      cuda.to_device(np.ones((3, 2))))


@pytest.mark.parametrize("dtype", DTYPES)
def test_segment_norms(dtype):
    rng = np.random.default_rng(6)
    x = rng.normal(size=61).astype(dtype)
    starts = np.array([0, 5, 7, 40])
    stops = np.array([5, 5, 40, 61])  # an empty segment; a gap (5..7) left out
    dstarts, dstops = cuda.to_device(starts), cuda.to_device(stops)
    out = poisoned((3, 4), dtype)
    gpu_reduce.segment_sumsq(cuda.to_device(x), dstarts, dstops, out, index=1)
    gpu_reduce.segment_sumsq(cuda.to_device(x), dstarts, dstops, out, index=2, squared=True,
                             work=gpu_reduce.segment_workspace(4))
    got = fetch(out)
    sums = np.array([np.sum(x[a:b].astype(np.float64) ** 2)
                     for a, b in zip(starts, stops, strict=True)])
    assert np.isnan(got[0]).all()
    assert_written_close(got[1], np.sqrt(sums), dtype, scale=10)
    assert_written_close(got[2], sums, dtype, scale=10)
    # a non-finite guard (the step's loss) turns the record into NaN, as on the CPU
    row = cuda.to_device(np.zeros(4, dtype))
    gpu_reduce.segment_sumsq(cuda.to_device(x), dstarts, dstops, row,
                             guard=cuda.to_device(np.array([1.0, np.inf], dtype)), guard_index=1)
    assert np.isnan(fetch(row)).all()

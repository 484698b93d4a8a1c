"""CUDA twins of :mod:`neurosim.kernels.rate`: layered and recurrent rate dynamics on the device.

Same names, argument order, flat buffers and update rules as the CPU module (see its docstring).
``sizes``, ``w_off``, ``b_off`` and ``ap`` stay on the host (they choose the launches); every
other array is on the device, except that a ``trace`` may be a host array: records are then
staged on the device and copied back in batches of rows.

Each integration step fuses the matrix product with the bias, input, noise, transfer function
and the update ``r <- r + a (F(h) - r)``. Noise comes from a device generator
(:func:`noise_rng`), so noisy runs are statistically, not bitwise, equal to the CPU's; noise-free
runs match the CPU to rounding. :func:`relax` decides convergence on the device and the host
checks the decision every few steps, so its steps and final state are the CPU's.
"""

from __future__ import annotations

import numpy as np
from numba import cuda

from ..rate import FORM_CURRENT, FORM_RATE, NOISE_NONE, NOISE_OU, NOISE_WHITE
from ._launch import (
    BLOCK_1D,
    BLOCK_REDUCE,
    SIMULATOR,
    check_float_arrays,
    grid_1d,
    is_device_array,
    numba_float,
    specialise,
)
from .activations import dphi, phi
from .dense import device_rng
from .gemm import CURRENT_STEP, RATE_STEP, gemm_add, gemm_bias_act, gemm_step
from .random import normal_for
from .reduce import block_max

__all__ = ["NOISE_NONE", "NOISE_WHITE", "NOISE_OU", "FORM_CURRENT", "FORM_RATE",
           "state_offsets", "transfer", "relax_rows", "feedforward", "currents", "relax",
           "simulate", "recurrent_simulate",
           "layer_derivatives", "noise_rng", "NOISE_THREADS"]

#: threads of a noise launch (one generator state each)
NOISE_THREADS = 2 * BLOCK_1D if SIMULATOR else 256 * BLOCK_1D
#: most trace bytes staged on the device before a copy to the host
TRACE_STAGE_BYTES = 64 << 20


@cuda.jit
def _transfer_kernel(code, p0, p1, p2, x, out):
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        out[i] = phi(code, x[i], p0, p1, p2)


def transfer(code, p0, p1, p2, x, out):
    """``out = F(x)`` over 1-D device arrays (``out`` may be ``x``)."""
    dtype = check_float_arrays(("x", "out"), (x, out))
    if x.shape[0]:
        t = dtype.type
        _transfer_kernel[grid_1d(x.shape[0]), BLOCK_1D](code, t(p0), t(p1), t(p2), x, out)


@cuda.jit
def _relax_rows_kernel(code, p0, p1, p2, Hl, b, Rl, a):
    rows, cols = Hl.shape
    for k in range(cuda.grid(1), rows * cols, cuda.gridsize(1)):
        i, j = k // cols, k % cols
        r = Rl[i, j]
        Rl[i, j] = r + a * (phi(code, Hl[i, j] + b[j], p0, p1, p2) - r)


def relax_rows(code, p0, p1, p2, Hl, b, Rl, a):
    """``Rl += a * (F(Hl + b) - Rl)``, ``b`` broadcast over rows; ``Hl`` unchanged."""
    dtype = check_float_arrays(("Hl", "b", "Rl"), (Hl, b, Rl))
    if Hl.size:
        t = dtype.type
        _relax_rows_kernel[grid_1d(Hl.size), BLOCK_1D](code, t(p0), t(p1), t(p2), Hl, b, Rl,
                                                       t(a))


def noise_rng(generator):
    """Device generator states for the noise of :func:`simulate` / :func:`recurrent_simulate`."""
    return device_rng(generator, NOISE_THREADS)


def state_offsets(sizes, batch):
    """Start of each layer's ``(batch, n_l)`` block in a flat state buffer, shape (L + 1,)."""
    sizes = np.asarray(sizes, dtype=np.int64)
    return np.concatenate([[0], np.cumsum(batch * sizes[1:])]).astype(np.int64)


def _mat(buf, off, rows, cols):
    off, rows, cols = int(off), int(rows), int(cols)
    return buf[off:off + rows * cols].reshape((rows, cols))


def _vec(buf, off, n):
    off = int(off)
    return buf[off:off + int(n)]


def feedforward(code, ap, params, w_off, b_off, sizes, X, H, R):
    """Fixed point of the feedforward layered network: ``r_l = F(r_{l-1} W_l + b_l)``."""
    check_float_arrays(("params", "X", "H", "R"), (params, X, H, R))
    L = len(sizes) - 1
    batch = X.shape[0]
    so = state_offsets(sizes, batch)
    prev = X
    for l in range(L):
        n_in, n_out = sizes[l], sizes[l + 1]
        Rl = _mat(R, so[l], batch, n_out)
        gemm_bias_act(prev, _mat(params, w_off[l], n_in, n_out), _vec(params, b_off[l], n_out),
                      code, ap, _mat(H, so[l], batch, n_out), Rl)
        prev = Rl


@cuda.jit
def _nudge_kernel(H, Y, R, beta):
    batch, n = H.shape
    for k in range(cuda.grid(1), batch * n, cuda.gridsize(1)):
        i, j = k // n, k % n
        H[i, j] += beta * (Y[i, j] - R[i, j])


def currents(params, w_off, b_off, sizes, X, R, H, T, feedback, Y, beta):
    """Input currents of every layer from the rates ``R`` (twin of the CPU ``_currents``).

    ``T`` is unused on the device (the feedback product accumulates in place); it is kept for the
    CPU argument order.
    """
    L = len(sizes) - 1
    batch = X.shape[0]
    so = state_offsets(sizes, batch)
    dtype = np.dtype(H.dtype)
    for l in range(L):
        n_in, n_out = sizes[l], sizes[l + 1]
        Hl = _mat(H, so[l], batch, n_out)
        prev = X if l == 0 else _mat(R, so[l - 1], batch, n_in)
        gemm_add(prev, _mat(params, w_off[l], n_in, n_out), Hl, Hl, beta=0.0,
                 bias=_vec(params, b_off[l], n_out))
        if feedback != 0 and l < L - 1:
            n_up = sizes[l + 2]
            gemm_add(_mat(R, so[l + 1], batch, n_up), _mat(params, w_off[l + 1], n_out, n_up),
                     Hl, Hl, trans_b=True, alpha=feedback, beta=1.0)
        if beta != 0 and l == L - 1:
            _nudge_kernel[grid_1d(batch * n_out), BLOCK_1D](
                Hl, Y, _mat(R, so[l], batch, n_out), dtype.type(beta))


_currents = currents


@specialise
def _residual_kernel(dtype_name):
    dt = numba_float(dtype_name)
    shape = (BLOCK_1D,)

    @cuda.jit
    def kernel(code, p0, p1, p2, H, R, done, partials):
        # H <- F(H); partials[block] = max |F(h) - r|  (nothing once the relaxation is done)
        sh = cuda.shared.array(shape, dt)
        frozen = done[0] != 0
        worst = dt(0.0)
        for k in range(cuda.grid(1), H.shape[0], cuda.gridsize(1)):
            if not frozen:
                f = phi(code, H[k], p0, p1, p2)
                H[k] = f
                worst = max(worst, abs(f - R[k]))
        worst = block_max(sh, worst)
        if cuda.threadIdx.x == 0:
            partials[cuda.blockIdx.x] = worst

    return kernel


@specialise
def _relax_check_kernel(dtype_name):
    dt = numba_float(dtype_name)
    shape = (BLOCK_REDUCE,)

    @cuda.jit
    def kernel(partials, done, info, residual, step, tol, max_steps):
        sh = cuda.shared.array(shape, dt)
        worst = dt(0.0)
        for b in range(cuda.threadIdx.x, partials.shape[0], cuda.blockDim.x):
            worst = max(worst, partials[b])
        worst = block_max(sh, worst)
        if cuda.threadIdx.x == 0 and done[0] == 0:
            if worst < tol or step == max_steps:
                done[0] = 1
                info[0] = step
                residual[0] = worst

    return kernel


@cuda.jit
def _euler_kernel(H, R, a, done):
    if done[0] != 0:
        return
    for k in range(cuda.grid(1), R.shape[0], cuda.gridsize(1)):
        R[k] += a * (H[k] - R[k])


def relax(code, ap, params, w_off, b_off, sizes, X, R, H, T, a, feedback, Y, beta, tol,
          max_steps):
    """Relax the deterministic layered dynamics until ``max |F(h) - r| < tol`` (see the CPU twin).

    Returns
    -------
    steps : int
    residual : float
    """
    dtype = check_float_arrays(("params", "X", "R", "H"), (params, X, R, H))
    t = dtype.type
    p0, p1, p2 = (t(v) for v in np.asarray(ap))
    n = R.shape[0]
    blocks = grid_1d(n)
    partials = cuda.device_array(blocks, dtype=dtype)
    done = cuda.to_device(np.zeros(1, dtype=np.int64))
    info = cuda.to_device(np.zeros(1, dtype=np.int64))
    residual = cuda.to_device(np.full(1, np.inf, dtype=dtype))
    residual_kernel = _residual_kernel(dtype.name)
    check_kernel = _relax_check_kernel(dtype.name)
    check_every, next_check = 4, 4
    for step in range(max_steps + 1):
        currents(params, w_off, b_off, sizes, X, R, H, T, feedback, Y, beta)
        residual_kernel[blocks, BLOCK_1D](code, p0, p1, p2, H, R, done, partials)
        check_kernel[1, BLOCK_REDUCE](partials, done, info, residual, step, t(tol), max_steps)
        _euler_kernel[blocks, BLOCK_1D](H, R, t(a), done)
        if step + 1 == next_check or step == max_steps:
            if done.copy_to_host()[0]:
                break
            check_every = min(2 * check_every, 256)
            next_check += check_every
    # H holds raw currents if steps ran past convergence: recompute F(h) of the final state
    currents(params, w_off, b_off, sizes, X, R, H, T, feedback, Y, beta)
    done.copy_to_device(np.zeros(1, dtype=np.int64))
    residual_kernel[blocks, BLOCK_1D](code, p0, p1, p2, H, R, done, partials)
    return int(info.copy_to_host()[0]), residual.copy_to_host()[0]


@specialise
def _noise_kernel(dtype_name):
    normal = normal_for(dtype_name)

    @cuda.jit
    def kernel(states, kind, scale, decay, Z, N):
        # white: N = scale * xi; OU: Z = decay * Z + scale * xi (N is Z)
        tid = cuda.grid(1)
        for k in range(tid, Z.shape[0], cuda.gridsize(1)):
            xi = normal(states, tid)
            if kind == NOISE_WHITE:
                N[k] = scale * xi
            else:
                Z[k] = decay * Z[k] + scale * xi

    return kernel


def _draw_noise(rng, kind, scale, decay, Z, N):
    """Fill the flat noise buffer for one step; returns the array holding the noise."""
    if rng.shape[0] != NOISE_THREADS:
        raise ValueError(f"rng must come from noise_rng ({NOISE_THREADS} states), got "
                         f"{rng.shape[0]}")
    dtype = np.dtype(Z.dtype)
    _noise_kernel(dtype.name)[NOISE_THREADS // BLOCK_1D, BLOCK_1D](
        rng, kind, dtype.type(scale), dtype.type(decay), Z, N)
    return N if kind == NOISE_WHITE else Z


@cuda.jit
def _rate_update_kernel(code, p0, p1, p2, H, N, has_noise, a, R):
    for k in range(cuda.grid(1), R.shape[0], cuda.gridsize(1)):
        h = H[k] + N[k] if has_noise else H[k]
        R[k] += a * (phi(code, h, p0, p1, p2) - R[k])


class _Recorder:
    """Copies rows of the state into ``trace`` (device array, or host array via staging)."""

    def __init__(self, trace, width, dtype):
        self.trace = trace
        self.on_device = is_device_array(trace)
        self.k = 0
        if not self.on_device:
            rows = max(1, min(trace.shape[0], TRACE_STAGE_BYTES // max(1, width * dtype.itemsize)))
            self.stage = cuda.device_array((rows, width), dtype=dtype)
            self.filled = 0

    def record(self, state):
        flat = state.reshape(state.size)
        if self.on_device:
            self.trace[self.k].reshape(flat.size).copy_to_device(flat)
            self.k += 1
        else:
            self.stage[self.filled].copy_to_device(flat)
            self.filled += 1
            self.k += 1
            if self.filled == self.stage.shape[0]:
                self.flush()

    def flush(self):
        if not self.on_device and self.filled:
            start = self.k - self.filled
            dest = self.trace[start:self.k].reshape(self.filled, -1)
            dest[...] = self.stage[:self.filled].copy_to_host()
            self.filled = 0


def simulate(code, ap, params, w_off, b_off, sizes, X, R, H, T, Z, a, feedback, steps,
             record_every, noise_kind, noise_scale, noise_decay, rng, trace):
    """Integrate the layered dynamics for ``steps`` steps and record the rates (see the CPU twin).

    ``rng`` is a device generator from :func:`noise_rng` (unused without noise); ``trace`` of
    shape ``(steps // record_every + 1, R.size)`` on the device or the host.
    """
    dtype = check_float_arrays(("params", "X", "R", "H", "Z"), (params, X, R, H, Z))
    t = dtype.type
    L = len(sizes) - 1
    batch = X.shape[0]
    so = state_offsets(sizes, batch)
    n = R.shape[0]
    p0, p1, p2 = (t(v) for v in np.asarray(ap))
    noisy = noise_kind != NOISE_NONE
    N = cuda.device_array(n if noisy else 0, dtype=dtype)
    rec = _Recorder(trace, n, dtype)
    rec.record(R)
    for step in range(1, steps + 1):
        noise = _draw_noise(rng, noise_kind, noise_scale, noise_decay, Z, N) if noisy else None
        if feedback == 0:
            # top-down, so that layer l still reads the old rates of layer l - 1
            for l in range(L - 1, -1, -1):
                n_in, n_out = sizes[l], sizes[l + 1]
                prev = X if l == 0 else _mat(R, so[l - 1], batch, n_in)
                Rl = _mat(R, so[l], batch, n_out)
                gemm_step(prev, _mat(params, w_off[l], n_in, n_out), Rl, Rl, t(a), code, ap,
                          RATE_STEP, bias=_vec(params, b_off[l], n_out),
                          noise=None if noise is None else _mat(noise, so[l], batch, n_out))
        else:
            currents(params, w_off, b_off, sizes, X, R, H, T, feedback, X, 0.0)
            _rate_update_kernel[grid_1d(n), BLOCK_1D](code, p0, p1, p2, H,
                                                      N if noise is None else noise, noisy,
                                                      t(a), R)
        if step % record_every == 0:
            rec.record(R)
    rec.flush()


@cuda.jit
def _apply_phi_2d(code, p0, p1, p2, V, S):
    batch, n = V.shape
    for k in range(cuda.grid(1), batch * n, cuda.gridsize(1)):
        i, j = k // n, k % n
        S[i, j] = phi(code, V[i, j], p0, p1, p2)


def recurrent_simulate(code, ap, J, I, V, a, form, steps, record_every, noise_kind, noise_scale,
                       noise_decay, Z, rng, trace):
    """Integrate a fully connected rate network for a batch of trials (see the CPU twin).

    ``V`` (batch, n) holds the initial state and is left at the final one; ``rng`` comes from
    :func:`noise_rng`; ``trace`` of shape ``(steps // record_every + 1, batch, n)`` on the device
    or the host. Each step reads ``J`` once: one trial is a memory-bound matrix-vector product
    (a warp per neuron), many trials a tiled matrix product.
    """
    dtype = check_float_arrays(("J", "I", "V", "Z"), (J, I, V, Z))
    t = dtype.type
    p0, p1, p2 = (t(v) for v in np.asarray(ap))
    batch, n = V.shape
    noisy = noise_kind != NOISE_NONE
    N = cuda.device_array((batch, n) if noisy else (0, 0), dtype=dtype)
    Zf, Nf = Z.reshape(Z.size), N.reshape(N.size)
    S = cuda.device_array((batch, n), dtype=dtype)  # phi(V), or the other state buffer
    rec = _Recorder(trace, batch * n, dtype)
    rec.record(V)
    cur, other = V, S
    for step in range(1, steps + 1):
        noise = None
        if noisy:
            _draw_noise(rng, noise_kind, noise_scale, noise_decay, Zf, Nf)
            noise = N if noise_kind == NOISE_WHITE else Z
        if form == FORM_CURRENT:
            _apply_phi_2d[grid_1d(batch * n), BLOCK_1D](code, p0, p1, p2, cur, S)
            gemm_step(S, J, cur, cur, t(a), code, ap, CURRENT_STEP, I=I, noise=noise,
                      trans_b=True)
        else:
            gemm_step(cur, J, other, cur, t(a), code, ap, RATE_STEP, I=I, noise=noise,
                      trans_b=True)
            cur, other = other, cur
        if step % record_every == 0:
            rec.record(cur)
    rec.flush()
    if cur is not V:
        V.copy_to_device(cur)


@cuda.jit
def _derivative_kernel(code, p0, p1, p2, H, R, D):
    for k in range(cuda.grid(1), H.shape[0], cuda.gridsize(1)):
        D[k] = dphi(code, H[k], R[k], p0, p1, p2)


def layer_derivatives(code, ap, H, R, D):
    """``D = F'(H)`` elementwise over flat device buffers (``R = F(H)``)."""
    dtype = check_float_arrays(("H", "R", "D"), (H, R, D))
    if H.shape[0]:
        t = dtype.type
        p0, p1, p2 = (t(v) for v in np.asarray(ap))
        _derivative_kernel[grid_1d(H.shape[0]), BLOCK_1D](code, p0, p1, p2, H, R, D)


def _signatures(dt, int_t, bool_t):
    from numba.cuda.random import xoroshiro128p_type

    name, v, m = str(dt), dt[::1], dt[:, ::1]
    iv = int_t[::1]
    states = xoroshiro128p_type[::1]
    return [("transfer", _transfer_kernel.py_func, (int_t, dt, dt, dt, v, v)),
            ("relax_rows", _relax_rows_kernel.py_func, (int_t, dt, dt, dt, m, v, m, dt)),
            ("nudge", _nudge_kernel.py_func, (m, m, m, dt)),
            ("residual", _residual_kernel(name).py_func, (int_t, dt, dt, dt, v, v, iv, v)),
            ("relax_check", _relax_check_kernel(name).py_func,
             (v, iv, iv, v, int_t, dt, int_t)),
            ("euler", _euler_kernel.py_func, (v, v, dt, iv)),
            ("noise", _noise_kernel(name).py_func, (states, int_t, dt, dt, v, v)),
            ("rate_update", _rate_update_kernel.py_func,
             (int_t, dt, dt, dt, v, v, bool_t, dt, v)),
            ("apply_phi_2d", _apply_phi_2d.py_func, (int_t, dt, dt, dt, m, m)),
            ("derivatives", _derivative_kernel.py_func, (int_t, dt, dt, dt, v, v, v))]


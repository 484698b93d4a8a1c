"""CUDA twins of :mod:`neurosim.kernels.dense`: dense layers and the whole MLP on the device.

Same names, argument order, layout table and flat buffers as the CPU module (see its docstring);
every array argument is a device array except ``layout`` and ``act_params``, which stay on the host
(they decide which kernels to launch). Differences a caller can see:

- a learnable PReLU slope lives in the device parameter buffer, so the elementwise twins take it
  as ``slope=`` (a device array of one element) instead of the scalar ``p0``;
- :func:`column_sums` (bias gradients, batch-norm statistics) has no CPU twin: the CPU fuses
  those sums into its elementwise loops;
- :func:`activation_backward` writes the PReLU slope gradient to ``slope_out[slope_index]`` on
  the device when given one (it returns it otherwise, which waits for the device);
- :func:`draw_dropout_masks` draws from a device generator (:func:`device_rng`), so masks differ
  from the CPU's; everything else matches the CPU to floating-point rounding;
- the matrix products are fused where the CPU runs two passes: the forward product with bias and
  activation, and the backward product with ``phi'`` of the layer below when nothing (a skip, a
  dropout mask, a PReLU slope) sits in between.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda
from numba.cuda.random import xoroshiro128p_dtype

from ..activations import PRELU
from ..dense import (
    ACT,
    B_OFF,
    BN_OFF,
    BN_RUN_OFF,
    BN_STAT_OFF,
    DROPOUT,
    N_IN,
    N_LAYOUT_COLS,
    N_OUT,
    SKIP,
    SLOPE_OFF,
    UNIT_OFF,
    W_OFF,
    has_separate_outputs,
)
from ..scalar import like
from ._launch import (
    BLOCK_1D,
    BLOCK_REDUCE,
    MAX_BLOCKS_1D,
    SIMULATOR,
    check_float_arrays,
    check_shape,
    grid_1d,
    numba_float,
    specialise,
)
from .activations import dphi, phi
from .gemm import gemm, gemm_add, gemm_bias_act, gemm_dphi
from .losses import loss_and_output_grad
from .random import uniform_for
from .reduce import block_sum

__all__ = [
    "apply_tanh_fast", "bias_activation", "activation_backward", "combine_output",
    "column_sums", "batchnorm_forward", "batchnorm_backward", "update_running_stats",
    "draw_dropout_masks", "device_rng", "block", "weight", "vector", "has_separate_outputs",
    "mlp_forward", "mlp_backward", "forward_backward",
]

#: threads of a dropout-mask launch (one generator state each)
DROPOUT_THREADS = 2 * BLOCK_1D if SIMULATOR else 64 * BLOCK_1D
#: (columns, row lanes) of a column-reduction block
COLUMN_BLOCK = (4, 2) if SIMULATOR else (32, 8)


def _no_slope(dtype):
    return _EMPTY[np.dtype(dtype).name]


class _Empty(dict):
    def __missing__(self, key):
        value = self[key] = cuda.device_array(0, dtype=key)
        return value


_EMPTY = _Empty()


_SCRATCH = {}


def _scratch(dtype_name, n):
    """A reusable device scratch vector of at least ``n`` elements (no allocation per step)."""
    buf = _SCRATCH.get(dtype_name)
    if buf is None or buf.shape[0] < n:
        buf = _SCRATCH[dtype_name] = cuda.device_array(max(n, MAX_BLOCKS_1D), dtype=dtype_name)
    return buf[:n]


def _slope(slope, dtype):
    if slope is None:
        return _no_slope(dtype)
    check_float_arrays(("slope",), (slope,), dtype)
    return slope


def _check_2d(names, arrays):
    dtype = check_float_arrays(names, arrays)
    for name, arr in zip(names, arrays, strict=True):
        if arr.ndim != 2:
            raise ValueError(f"{name} must be 2-D, got shape {tuple(arr.shape)}")
        check_shape(name, arr, arrays[0].shape)
    return dtype


# ---------------------------------------------------------------------------------------------
# Elementwise kernels over (nb, n) arrays
# ---------------------------------------------------------------------------------------------


@cuda.jit
def _tanh_kernel(x, out):
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        out[i] = math.tanh(x[i])


def apply_tanh_fast(x, out):
    """``out[i] = tanh(x[i])`` over 1-D device arrays (the GPU's tanh is already fast)."""
    check_float_arrays(("x", "out"), (x, out))
    check_shape("out", out, x.shape)
    if x.shape[0]:
        _tanh_kernel[grid_1d(x.shape[0]), BLOCK_1D](x, out)


@cuda.jit
def _bias_act_kernel(h, b, add_bias, code, p0, p1, p2, slope, out):
    nb, n = h.shape
    if slope.shape[0] > 0:
        p0 = slope[0]
    for k in range(cuda.grid(1), nb * n, cuda.gridsize(1)):
        i, j = k // n, k % n
        v = h[i, j]
        if add_bias:
            v += b[j]
            h[i, j] = v
        out[i, j] = phi(code, v, p0, p1, p2)


def bias_activation(h, b, code, p0, p1, p2, out, slope=None):
    """``h += b`` (in place, broadcast over rows), then ``out = phi(h)``; see the CPU twin."""
    dtype = _check_2d(("h", "out"), (h, out))
    check_shape("b", b, (h.shape[1],))
    if h.size:
        t = dtype.type
        _bias_act_kernel[grid_1d(h.size), BLOCK_1D](h, b, True, code, t(p0), t(p1), t(p2),
                                                     _slope(slope, dtype), out)


@specialise
def _act_backward_kernel(dtype_name):
    dt = numba_float(dtype_name)
    shape = (BLOCK_1D,)

    @cuda.jit
    def kernel(g, mask, use_mask, h, u, code, p0, p1, p2, slope, delta, partials):
        sh = cuda.shared.array(shape, dt)
        nb, n = h.shape
        if slope.shape[0] > 0:
            p0 = slope[0]
        zero = dt(0.0)
        acc = zero
        for k in range(cuda.grid(1), nb * n, cuda.gridsize(1)):
            i, j = k // n, k % n
            gij = g[i, j] * mask[i, j] if use_mask else g[i, j]
            hij = h[i, j]
            delta[i, j] = gij * dphi(code, hij, u[i, j], p0, p1, p2)
            if code == PRELU and hij <= zero:
                acc += gij * hij
        if code == PRELU:
            total = block_sum(sh, acc)
            if cuda.threadIdx.x == 0:
                partials[cuda.blockIdx.x] = total

    return kernel


@specialise
def _sum_into_kernel(dtype_name):
    dt = numba_float(dtype_name)
    shape = (BLOCK_REDUCE,)

    @cuda.jit
    def kernel(values, out, index):
        sh = cuda.shared.array(shape, dt)
        acc = dt(0.0)
        for i in range(cuda.threadIdx.x, values.shape[0], cuda.blockDim.x):
            acc += values[i]
        total = block_sum(sh, acc)
        if cuda.threadIdx.x == 0:
            out[index] = total

    return kernel


def activation_backward(g, mask, use_mask, h, u, code, p0, p1, p2, delta, delta_sum,
                        slope=None, slope_out=None, slope_index=0, work=None):
    """``delta = g * mask * phi'(h)`` and its column sums; the PReLU slope gradient.

    Parameters as in the CPU twin (``delta_sum``, shape (n,), receives ``sum_i delta[i, :]``),
    plus ``slope`` (the device PReLU slope), ``slope_out`` / ``slope_index`` (where the slope
    gradient ``sum(g * mask * min(h, 0))`` goes on the device) and ``work`` (a device array of
    ``grid_1d(nb * n)`` partial sums).

    Returns
    -------
    float or None
        The slope gradient for PReLU when ``slope_out`` is None (0 for other activations);
        None when it was written to ``slope_out``.
    """
    dtype = _check_2d(("g", "h", "u", "delta"), (g, h, u, delta))
    if use_mask:
        _check_2d(("g", "mask"), (g, mask))
    check_shape("delta_sum", delta_sum, (h.shape[1],))
    blocks = grid_1d(max(h.size, 1))
    if work is None:
        work = _scratch(dtype.name, blocks)
    t = dtype.type
    if h.size:
        _act_backward_kernel(dtype.name)[blocks, BLOCK_1D](
            g, mask, bool(use_mask), h, u, code, t(p0), t(p1), t(p2), _slope(slope, dtype),
            delta, work)
    column_sums(delta, delta_sum)
    if code != PRELU:
        return None if slope_out is not None else dtype.type(0.0)
    returned = slope_out is None
    if returned:
        slope_out, slope_index = cuda.device_array(1, dtype=dtype), 0
    if h.size:
        _sum_into_kernel(dtype.name)[1, BLOCK_REDUCE](work[:blocks], slope_out, slope_index)
    else:
        slope_out[slope_index:slope_index + 1].copy_to_device(np.zeros(1, dtype))
    return slope_out.copy_to_host()[slope_index] if returned else None


@cuda.jit
def _combine_kernel(u, mask, use_mask, skip_in, use_skip, a):
    nb, n = u.shape
    for k in range(cuda.grid(1), nb * n, cuda.gridsize(1)):
        i, j = k // n, k % n
        v = u[i, j] * mask[i, j] if use_mask else u[i, j]
        a[i, j] = v + skip_in[i, j] if use_skip else v


def combine_output(u, mask, use_mask, skip_in, use_skip, a):
    """``a = u * mask (if use_mask) + skip_in (if use_skip)``; all (nb, n) device arrays."""
    _check_2d(("u", "mask", "skip_in", "a"), (u, mask, skip_in, a))
    if u.size:
        _combine_kernel[grid_1d(u.size), BLOCK_1D](u, mask, bool(use_mask), skip_in,
                                                   bool(use_skip), a)


# ---------------------------------------------------------------------------------------------
# Column reductions (bias gradients, batch-norm statistics): fixed order, no atomics
# ---------------------------------------------------------------------------------------------

COL_SUM, COL_DOT, COL_SQDEV = 0, 1, 2


@specialise
def _column_kernel(dtype_name, op):
    dt = numba_float(dtype_name)
    CW, CR = COLUMN_BLOCK
    shape = (CR, CW)

    @cuda.jit
    def kernel(x, y, b, c, scale, offset, out):
        # out[j] = scale * sum_i f(x[i, j], ...) (+ offset[j]); block = CW columns x CR row lanes
        sh = cuda.shared.array(shape, dt)
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        nb, n = x.shape
        j = cuda.blockIdx.x * CW + tx
        acc = dt(0.0)
        if j < n:
            for i in range(ty, nb, CR):
                if op == COL_SUM:
                    acc += x[i, j]
                elif op == COL_DOT:
                    acc += x[i, j] * y[i, j]
                else:
                    d = x[i, j] + b[j] - c[j]
                    acc += d * d
        sh[ty, tx] = acc
        cuda.syncthreads()
        if ty == 0 and j < n:
            total = sh[0, tx]
            for r in range(1, CR):
                total += sh[r, tx]
            total *= scale
            if offset.shape[0] > 0:
                total += offset[j]
            out[j] = total

    return kernel


def _columns(op, x, y, b, c, scale, offset, out):
    dtype = np.dtype(x.dtype)
    nb, n = x.shape
    check_shape("out", out, (n,))
    if n == 0:
        return
    empty_v = _no_slope(dtype)
    kernel = _column_kernel(dtype.name, op)
    kernel[math.ceil(n / COLUMN_BLOCK[0]), COLUMN_BLOCK](
        x, x if y is None else y, empty_v if b is None else b, empty_v if c is None else c,
        dtype.type(scale), empty_v if offset is None else offset, out)


def column_sums(x, out):
    """``out[j] = sum_i x[i, j]`` (bias gradients)."""
    check_float_arrays(("x", "out"), (x, out))
    _columns(COL_SUM, x, None, None, None, 1.0, None, out)


# ---------------------------------------------------------------------------------------------
# Batch normalisation
# ---------------------------------------------------------------------------------------------


@cuda.jit
def _bn_inv_std_kernel(var, eps, inv_std):
    for j in range(cuda.grid(1), var.shape[0], cuda.gridsize(1)):
        inv_std[j] = like(var, 1.0) / math.sqrt(var[j] + eps)


@cuda.jit
def _bn_apply_kernel(z, b, gamma, mean, inv_std, xhat, h):
    nb, n = z.shape
    for k in range(cuda.grid(1), nb * n, cuda.gridsize(1)):
        i, j = k // n, k % n
        x = (z[i, j] + b[j] - mean[j]) * inv_std[j]
        xhat[i, j] = x
        h[i, j] = gamma[j] * x


def batchnorm_forward(z, b, gamma, training, eps, run_mean, run_var, xhat, mean, var, inv_std,
                      h):
    """Batch normalisation without the shift, ``h = gamma * xhat``, on the device (see the CPU
    twin; ``z`` may be ``h``)."""
    dtype = _check_2d(("z", "xhat", "h"), (z, xhat, h))
    nb, n = z.shape
    for name, arr in (("b", b), ("gamma", gamma), ("mean", mean), ("var", var),
                      ("inv_std", inv_std)):
        check_shape(name, arr, (n,))
    if training:
        _columns(COL_SUM, z, None, None, None, 1.0 / nb, b, mean)
        _columns(COL_SQDEV, z, None, b, mean, 1.0 / nb, None, var)
    else:
        mean.copy_to_device(run_mean)
        var.copy_to_device(run_var)
    if n:
        _bn_inv_std_kernel[grid_1d(n), BLOCK_1D](var, dtype.type(eps), inv_std)
    if z.size:
        _bn_apply_kernel[grid_1d(z.size), BLOCK_1D](z, b, gamma, mean, inv_std, xhat, h)


@cuda.jit
def _bn_backward_kernel(delta, xhat, gamma, inv_std, dbeta, dgamma, inv_nb, e):
    nb, n = delta.shape
    for k in range(cuda.grid(1), nb * n, cuda.gridsize(1)):
        i, j = k // n, k % n
        e[i, j] = gamma[j] * inv_std[j] * (delta[i, j] - (dbeta[j] + xhat[i, j] * dgamma[j])
                                           * inv_nb)


def batchnorm_backward(delta, xhat, gamma, inv_std, training, dbeta, dgamma, e, db):
    """Backward of :func:`batchnorm_forward` on the device (see the CPU twin): ``dgamma``,
    ``e = dL/dz`` and ``db = sum_i e[i, :]`` from ``delta`` and ``dbeta = sum_i delta[i, :]``."""
    dtype = _check_2d(("delta", "xhat", "e"), (delta, xhat, e))
    nb, n = delta.shape
    _columns(COL_DOT, delta, xhat, None, None, 1.0, None, dgamma)
    if delta.size:
        inv_nb = dtype.type(1.0 / nb) if training else dtype.type(0.0)
        _bn_backward_kernel[grid_1d(delta.size), BLOCK_1D](delta, xhat, gamma, inv_std, dbeta,
                                                           dgamma, inv_nb, e)
    column_sums(e, db)


@cuda.jit
def _running_stats_kernel(mean, var, keep, momentum, correction, run_mean, run_var, status):
    if status.shape[0] > 0 and status[0] != 0:  # the step diverged: leave the statistics
        return
    for j in range(cuda.grid(1), run_mean.shape[0], cuda.gridsize(1)):
        run_mean[j] = keep * run_mean[j] + momentum * mean[j]
        run_var[j] = keep * run_var[j] + momentum * var[j] * correction


def update_running_stats(mean, var, nb, momentum, run_mean, run_var, status=None):
    """Running averages after a training-mode batch (see the CPU twin).

    ``status`` (the training loop's device status array) skips the update once ``status[0]``
    (STOP) is set.
    """
    dtype = check_float_arrays(("mean", "var", "run_mean", "run_var"),
                               (mean, var, run_mean, run_var))
    n = run_mean.shape[0]
    t = dtype.type
    correction = t(nb) / t(nb - 1) if nb > 1 else t(1.0)
    if status is None:
        status = _EMPTY["int64"]
    if n:
        _running_stats_kernel[grid_1d(n), BLOCK_1D](mean, var, t(1.0) - t(momentum),
                                                    t(momentum), correction, run_mean, run_var,
                                                    status)


# ---------------------------------------------------------------------------------------------
# Dropout
# ---------------------------------------------------------------------------------------------


def device_rng(generator, n_states=None):
    """Device xoroshiro128+ states (one per thread of a launch), drawn from a NumPy Generator.

    Every state is an independent random 128-bit seed, so the same Generator state gives the same
    device stream on every run.
    """
    n_states = DROPOUT_THREADS if n_states is None else int(n_states)
    words = generator.integers(1, 2**64, size=(n_states, 2), dtype=np.uint64, endpoint=False)
    states = np.empty(n_states, dtype=xoroshiro128p_dtype)
    states["s0"] = words[:, 0]
    states["s1"] = words[:, 1]
    return cuda.to_device(states)


@specialise
def _dropout_kernel(dtype_name):
    uniform = uniform_for(dtype_name)

    @cuda.jit
    def kernel(states, p, scale, start, stop, MK):
        tid = cuda.grid(1)
        zero = like(MK, 0.0)
        for k in range(start + tid, stop, cuda.gridsize(1)):
            MK[k] = zero if uniform(states, tid) < p else scale

    return kernel


def draw_dropout_masks(rng, p, layout, nb, MK):
    """Fill the mask blocks of the dropout layers: 0 with probability ``p``, else 1/(1-p).

    ``rng`` is a device generator from :func:`device_rng` (one state per launched thread).
    """
    dtype = check_float_arrays(("MK",), (MK,))
    if rng.shape[0] != DROPOUT_THREADS:
        raise ValueError(f"rng must come from device_rng ({DROPOUT_THREADS} states), got "
                         f"{rng.shape[0]}")
    scale = dtype.type(1.0) / (dtype.type(1.0) - dtype.type(p))
    kernel = _dropout_kernel(dtype.name)
    for l in range(layout.shape[0]):
        if layout[l, DROPOUT] == 0:
            continue
        start = nb * layout[l, UNIT_OFF]
        kernel[DROPOUT_THREADS // BLOCK_1D, BLOCK_1D](rng, dtype.type(p), scale, start,
                                                      start + nb * layout[l, N_OUT], MK)


# ---------------------------------------------------------------------------------------------
# Views of the flat buffers (host-side slicing of device arrays)
# ---------------------------------------------------------------------------------------------


def block(buf, nb, layout, l):
    """The ``(nb, n_l)`` block of layer ``l`` (0-based) in a flat device workspace."""
    start = nb * int(layout[l, UNIT_OFF])
    n = int(layout[l, N_OUT])
    return buf[start:start + nb * n].reshape((nb, n))


def weight(params, layout, l):
    """``W_l`` as a ``(n_in, n_out)`` view of the flat device buffer."""
    start = int(layout[l, W_OFF])
    n_in, n_out = int(layout[l, N_IN]), int(layout[l, N_OUT])
    return params[start:start + n_in * n_out].reshape((n_in, n_out))


def vector(buf, start, n):
    start = int(start)
    return buf[start:start + int(n)]


def _check_layout(layout, act_params):
    layout = np.asarray(layout)
    if layout.ndim != 2 or layout.shape[1] != N_LAYOUT_COLS:
        raise ValueError(f"layout must have shape (L, {N_LAYOUT_COLS}), got {layout.shape}")
    act_params = np.asarray(act_params)
    check_shape("act_params", act_params, (layout.shape[0], 3))
    return layout, act_params


def _layer_slope(params, layout, l):
    off = int(layout[l, SLOPE_OFF])
    return params[off:off + 1] if off >= 0 else None


# ---------------------------------------------------------------------------------------------
# Whole network
# ---------------------------------------------------------------------------------------------


def mlp_forward(layout, act_params, params, X, training, bn_eps, bn_state, H, U, A, XH, ST, MK):
    """Forward pass of a batch through every layer on the device (see the CPU twin).

    Returns
    -------
    device array, shape (nb, n_L)
        The network output (a view into ``A`` or ``U``).
    """
    layout, act_params = _check_layout(layout, act_params)
    nb = X.shape[0]
    separate = has_separate_outputs(layout)
    a_prev = X
    for l in range(layout.shape[0]):
        n = int(layout[l, N_OUT])
        h = block(H, nb, layout, l)
        u = block(U, nb, layout, l)
        W = weight(params, layout, l)
        b = vector(params, layout[l, B_OFF], n)
        ap = act_params[l]
        slope = _layer_slope(params, layout, l)
        code = int(layout[l, ACT])
        bn = int(layout[l, BN_OFF])
        if bn >= 0:
            ro, so = int(layout[l, BN_RUN_OFF]), int(layout[l, BN_STAT_OFF])
            gemm(a_prev, W, h)
            batchnorm_forward(h, b, vector(params, bn, n), training, bn_eps,
                              vector(bn_state, ro, n), vector(bn_state, ro + n, n),
                              block(XH, nb, layout, l), vector(ST, so, n),
                              vector(ST, so + n, n), vector(ST, so + 2 * n, n), h)
            # beta, the shift after normalising, enters with the activation
            bias_activation(h, vector(params, bn + n, n), code, ap[0], ap[1], ap[2], u,
                            slope=slope)
        else:
            gemm_bias_act(a_prev, W, b, code, ap, h, u, slope=slope)
        if separate:
            a = block(A, nb, layout, l)
            use_mask = bool(training) and layout[l, DROPOUT] == 1
            use_skip = layout[l, SKIP] == 1
            combine_output(u, block(MK, nb, layout, l) if use_mask else u, use_mask,
                           a_prev if use_skip else u, use_skip, a)
            a_prev = a
        else:
            a_prev = u
    return a_prev


def mlp_backward(layout, act_params, params, X, training, H, U, A, XH, ST, MK, D, G0, G1, E,
                 grad):
    """Backward pass on the device: every parameter gradient and ``delta_l`` (see the CPU twin).

    ``G0[:nb * n_L]`` holds dL/d(output) on entry.
    """
    layout, act_params = _check_layout(layout, act_params)
    nb = X.shape[0]
    L = layout.shape[0]
    separate = has_separate_outputs(layout)
    cur, nxt = G0, G1
    delta_ready = False
    for l in range(L - 1, -1, -1):
        n, n_in = int(layout[l, N_OUT]), int(layout[l, N_IN])
        g = cur[:nb * n].reshape((nb, n))
        delta = block(D, nb, layout, l)
        use_mask = bool(training) and layout[l, DROPOUT] == 1
        ap = act_params[l]
        slope_off = int(layout[l, SLOPE_OFF])
        bias_grad = vector(grad, layout[l, B_OFF], n)
        bn = int(layout[l, BN_OFF])
        # the column sums of delta: the bias gradient, or dL/dbeta with batch norm
        delta_sum = bias_grad if bn < 0 else vector(grad, bn + n, n)
        if delta_ready:
            column_sums(delta, delta_sum)
        else:
            activation_backward(g, block(MK, nb, layout, l) if use_mask else g, use_mask,
                                block(H, nb, layout, l), block(U, nb, layout, l),
                                int(layout[l, ACT]), ap[0], ap[1], ap[2], delta, delta_sum,
                                slope=_layer_slope(params, layout, l),
                                slope_out=grad if slope_off >= 0 else None,
                                slope_index=max(slope_off, 0))
        err = delta
        if bn >= 0:
            so = int(layout[l, BN_STAT_OFF])
            err = E[:nb * n].reshape((nb, n))
            batchnorm_backward(delta, block(XH, nb, layout, l), vector(params, bn, n),
                               vector(ST, so + 2 * n, n), training, delta_sum,
                               vector(grad, bn, n), err, bias_grad)
        if l == 0:
            a_prev = X
        elif separate:
            a_prev = block(A, nb, layout, l - 1)
        else:
            a_prev = block(U, nb, layout, l - 1)
        gemm(a_prev, err, weight(grad, layout, l), trans_a=True)
        if l == 0:
            break
        W = weight(params, layout, l)
        below_mask = bool(training) and layout[l - 1, DROPOUT] == 1
        fuse = (layout[l, SKIP] == 0 and layout[l - 1, SKIP] == 0 and not below_mask
                and layout[l - 1, SLOPE_OFF] < 0)
        if fuse:  # delta_{l-1} = (err W^T) * phi'(h_{l-1}) straight from the product
            apb = act_params[l - 1]
            gemm_dphi(err, W, block(H, nb, layout, l - 1), block(U, nb, layout, l - 1),
                      int(layout[l - 1, ACT]), apb, block(D, nb, layout, l - 1))
            delta_ready = True
        else:
            g_prev = nxt[:nb * n_in].reshape((nb, n_in))
            if layout[l, SKIP] == 1:
                gemm_add(err, W, g, g_prev, trans_b=True)
            else:
                gemm(err, W, g_prev, trans_b=True)
            delta_ready = False
            cur, nxt = nxt, cur


def forward_backward(layout, act_params, params, X, Y, loss_code, training, bn_eps, bn_state,
                     H, U, A, XH, ST, MK, D, G0, G1, E, grad, loss_out=None, loss_index=0,
                     loss_work=None):
    """Loss and gradients of one batch on the device (see the CPU twin).

    With ``loss_out`` the loss stays on the device (``loss_out[loss_index]``) and nothing is
    returned; otherwise the loss is returned (which waits for the device).
    """
    nb = X.shape[0]
    out = mlp_forward(layout, act_params, params, X, training, bn_eps, bn_state, H, U, A, XH,
                      ST, MK)
    n_out = out.shape[1]
    g_out = G0[:nb * n_out].reshape((nb, n_out))
    loss = loss_and_output_grad(loss_code, out, Y, g_out, loss_out=loss_out, index=loss_index,
                                work=loss_work)
    mlp_backward(layout, act_params, params, X, training, H, U, A, XH, ST, MK, D, G0, G1, E,
                 grad)
    return loss


def _signatures(dt, int_t, bool_t):
    name, v, m = str(dt), dt[::1], dt[:, ::1]
    from numba.cuda.random import xoroshiro128p_type

    states = xoroshiro128p_type[::1]
    out = [("tanh", _tanh_kernel.py_func, (v, v)),
           ("bias_activation", _bias_act_kernel.py_func,
            (m, v, bool_t, int_t, dt, dt, dt, v, m)),
           ("activation_backward", _act_backward_kernel(name).py_func,
            (m, m, bool_t, m, m, int_t, dt, dt, dt, v, m, v)),
           ("sum_into", _sum_into_kernel(name).py_func, (v, v, int_t)),
           ("combine_output", _combine_kernel.py_func, (m, m, bool_t, m, bool_t, m)),
           ("bn_inv_std", _bn_inv_std_kernel.py_func, (v, dt, v)),
           ("bn_apply", _bn_apply_kernel.py_func, (m, v, v, v, v, m, m)),
           ("bn_backward", _bn_backward_kernel.py_func, (m, m, v, v, v, v, dt, m)),
           ("running_stats", _running_stats_kernel.py_func,
            (v, v, dt, dt, dt, v, v, int_t[::1])),
           ("dropout", _dropout_kernel(name).py_func, (states, dt, dt, int_t, int_t, v))]
    for op in (COL_SUM, COL_DOT, COL_SQDEV):
        out.append((f"columns_{op}", _column_kernel(name, op).py_func, (m, m, v, v, dt, v, v)))
    return out

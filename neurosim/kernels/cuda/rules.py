"""CUDA twins of :mod:`neurosim.kernels.rules`: backprop, feedback alignment and direct feedback
alignment through a layered rate network, layer gradients and bounded weight updates.

Same names, argument order and flat buffers as the CPU module; ``sizes``, offsets, ``ap`` and the
per-layer learning rates stay on the host, every other array is on the device. The error of each
hidden layer comes straight out of one fused product, ``delta_l = (delta_{l+1} M^T) * F'(h_l)``
(or ``(delta_L B_l) * F'(h_l)`` for DFA).
"""

from __future__ import annotations

import numpy as np
from numba import cuda

from ..rules import BACKPROP, DIRECT_FEEDBACK_ALIGNMENT, FEEDBACK_ALIGNMENT, bounded_weight
from ._launch import BLOCK_1D, check_float_arrays, grid_1d
from .activations import dphi, phi
from .dense import column_sums
from .gemm import gemm, gemm_dphi
from .rate import _mat, _vec, currents, state_offsets

__all__ = ["BACKPROP", "FEEDBACK_ALIGNMENT", "DIRECT_FEEDBACK_ALIGNMENT", "backward",
           "layer_grads", "apply_update", "currents_and_slopes"]


@cuda.jit
def _output_error_kernel(code, p0, p1, p2, E, H, R, delta):
    batch, n = E.shape
    for k in range(cuda.grid(1), batch * n, cuda.gridsize(1)):
        i, j = k // n, k % n
        delta[i, j] = E[i, j] * dphi(code, H[i, j], R[i, j], p0, p1, p2)


def backward(code, ap, params, w_off, b_off, sizes, M, m_off, mode, X, H, R, E, delta, grads):
    """Error signals and weight-gradient estimates of a layered rate network (see the CPU twin).

    ``mode`` is ``BACKPROP`` (``M`` unused), ``FEEDBACK_ALIGNMENT`` or
    ``DIRECT_FEEDBACK_ALIGNMENT``; ``M`` is the flat device buffer of feedback matrices at the
    host offsets ``m_off``.
    """
    if mode not in (BACKPROP, FEEDBACK_ALIGNMENT, DIRECT_FEEDBACK_ALIGNMENT):
        raise ValueError(f"mode must be BACKPROP, FEEDBACK_ALIGNMENT or "
                         f"DIRECT_FEEDBACK_ALIGNMENT, got {mode!r}")
    dtype = check_float_arrays(("params", "X", "H", "R", "E", "delta", "grads"),
                               (params, X, H, R, E, delta, grads))
    t = dtype.type
    p0, p1, p2 = (t(v) for v in np.asarray(ap))
    L = len(sizes) - 1
    batch = X.shape[0]
    so = state_offsets(sizes, batch)
    n_L = sizes[L]
    dL = _mat(delta, so[L - 1], batch, n_L)
    if batch * n_L:
        _output_error_kernel[grid_1d(batch * n_L), BLOCK_1D](
            code, p0, p1, p2, E, _mat(H, so[L - 1], batch, n_L), _mat(R, so[L - 1], batch, n_L),
            dL)
    for l in range(L - 2, -1, -1):
        n = sizes[l + 1]
        dl = _mat(delta, so[l], batch, n)
        Hl, Rl = _mat(H, so[l], batch, n), _mat(R, so[l], batch, n)
        if mode == DIRECT_FEEDBACK_ALIGNMENT:
            gemm_dphi(dL, _mat(M, m_off[l], n_L, n), Hl, Rl, code, ap, dl, trans_b=False)
        else:
            n_up = sizes[l + 2]
            Mu = (_mat(params, w_off[l + 1], n, n_up) if mode == BACKPROP
                  else _mat(M, m_off[l + 1], n, n_up))
            gemm_dphi(_mat(delta, so[l + 1], batch, n_up), Mu, Hl, Rl, code, ap, dl)
    layer_grads(params, w_off, b_off, sizes, X, R, delta, grads)


def layer_grads(params, w_off, b_off, sizes, X, R, delta, grads):
    """``grads_W_l = r_{l-1}^T delta_l`` and ``grads_b_l = sum_batch delta_l`` for every layer."""
    L = len(sizes) - 1
    batch = X.shape[0]
    so = state_offsets(sizes, batch)
    for l in range(L):
        n_in, n_out = sizes[l], sizes[l + 1]
        dl = _mat(delta, so[l], batch, n_out)
        prev = X if l == 0 else _mat(R, so[l - 1], batch, n_in)
        gemm(prev, dl, _mat(grads, w_off[l], n_in, n_out), trans_a=True)
        column_sums(dl, _vec(grads, b_off[l], n_out))


@cuda.jit
def _weight_update_kernel(W, U, V, momentum, lr, lo, hi, soft, status):
    if status.shape[0] > 0 and status[0] != 0:  # the training loop stopped: leave the weights
        return
    n_in, n_out = W.shape
    for k in range(cuda.grid(1), n_in * n_out, cuda.gridsize(1)):
        i, j = k // n_out, k % n_out
        v = momentum * V[i, j] + U[i, j]
        V[i, j] = v
        W[i, j] = bounded_weight(W[i, j], v, lr, lo[i], hi[i], soft)


@cuda.jit
def _bias_update_kernel(b, U, V, momentum, lr, status):
    if status.shape[0] > 0 and status[0] != 0:
        return
    for j in range(cuda.grid(1), b.shape[0], cuda.gridsize(1)):
        v = momentum * V[j] + U[j]
        V[j] = v
        b[j] -= lr * v


def apply_update(params, U, vel, momentum, lr_w, lr_b, w_off, b_off, sizes, lo, hi, soft,
                 update_biases, status=None):
    """Move the parameters by ``-lr * v``, ``v = momentum * v + U``, inside the bounds.

    Arguments as in the CPU twin (``lr_w``, ``lr_b`` on the host; ``lo``, ``hi`` on the device).
    ``status`` (an int64 device array) skips the whole update once ``status[0]`` is set, which
    is how a training loop on the device stops at a divergent step without waiting for the host.
    """
    dtype = check_float_arrays(("params", "U", "vel", "lo", "hi"), (params, U, vel, lo, hi))
    t = dtype.type
    if status is None:
        status = cuda.device_array(0, dtype=np.int64)
    pre = 0
    for l in range(len(sizes) - 1):
        n_in, n_out = sizes[l], sizes[l + 1]
        if n_in * n_out:
            _weight_update_kernel[grid_1d(n_in * n_out), BLOCK_1D](
                _mat(params, w_off[l], n_in, n_out), _mat(U, w_off[l], n_in, n_out),
                _mat(vel, w_off[l], n_in, n_out), t(momentum), t(lr_w[l]),
                _vec(lo, pre, n_in), _vec(hi, pre, n_in), bool(soft), status)
        pre += n_in
        if update_biases and n_out:
            _bias_update_kernel[grid_1d(n_out), BLOCK_1D](
                _vec(params, b_off[l], n_out), _vec(U, b_off[l], n_out),
                _vec(vel, b_off[l], n_out), t(momentum), t(lr_b[l]), status)


@cuda.jit
def _slopes_kernel(code, p0, p1, p2, H, D):
    for k in range(cuda.grid(1), H.shape[0], cuda.gridsize(1)):
        h = H[k]
        D[k] = dphi(code, h, phi(code, h, p0, p1, p2), p0, p1, p2)


def currents_and_slopes(code, ap, params, w_off, b_off, sizes, X, R, H, T, feedback, D):
    """Input currents ``H`` of the state ``R`` and the slopes ``D = F'(H)`` (flat buffers)."""
    currents(params, w_off, b_off, sizes, X, R, H, T, feedback, X, 0.0)
    dtype = check_float_arrays(("H", "D"), (H, D))
    if H.shape[0]:
        t = dtype.type
        p0, p1, p2 = (t(v) for v in np.asarray(ap))
        _slopes_kernel[grid_1d(H.shape[0]), BLOCK_1D](code, p0, p1, p2, H, D)


def _signatures(dt, int_t, bool_t):
    v, m = dt[::1], dt[:, ::1]
    iv = int_t[::1]
    return [("output_error", _output_error_kernel.py_func, (int_t, dt, dt, dt, m, m, m, m)),
            ("weight_update", _weight_update_kernel.py_func,
             (m, m, m, dt, dt, v, v, bool_t, iv)),
            ("bias_update", _bias_update_kernel.py_func, (v, v, v, dt, dt, iv)),
            ("slopes", _slopes_kernel.py_func, (int_t, dt, dt, dt, v, v))]

"""CUDA twins of :mod:`neurosim.kernels.optim`: clipping, optimizer updates and gradient norms.

Same rules, order and codes as the CPU kernels (clip by value, scale by the global-norm factor,
add weight decay, then the rule; a parameter whose new value is not finite keeps its old value).

A training loop on the device must not wait for the host at every step, so the decisions the CPU
loop takes with scalars live in two small device arrays:

``control`` (the parameters' float type, ``CONTROL_SIZE``): ``GSCALE`` the global-norm clipping
factor of the current step, ``SUMSQ`` and ``FINITE`` the result of :func:`clipped_sumsq`.

``status`` (int64, ``STATUS_SIZE``): ``STOP`` set once a step diverged (non-finite loss, gradient
or update), ``STOP_STEP`` that step, ``BAD`` the count of non-finite updates. Once ``STOP`` is
set every later update is a no-op, so the parameters stay at their last finite values and the host
learns about it when it next reads ``status`` (once per epoch).
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

from ..optim import (  # noqa: F401  (codes re-exported with the twin)
    ADAGRAD,
    ADAM,
    H_BETA1,
    H_BETA2,
    H_EPS,
    H_MOMENTUM,
    H_RHO,
    MOMENTUM,
    NESTEROV,
    RMSPROP,
    SGD,
)
from ..scalar import like
from ._launch import (
    BLOCK_1D,
    BLOCK_REDUCE,
    SIMULATOR,
    check_float_arrays,
    check_shape,
    grid_1d,
    numba_float,
    specialise,
)
from .reduce import block_sum, segment_sumsq

__all__ = ["clipped_sumsq", "sumsq", "weight_grad_norms", "optimizer_step", "step_control",
           "finish_step", "stop_unless_finite", "new_control", "new_status", "GSCALE", "SUMSQ",
           "FINITE", "STOP", "STOP_STEP", "BAD"]

GSCALE, SUMSQ, FINITE = 0, 1, 2
CONTROL_SIZE = 3
STOP, STOP_STEP, BAD = 0, 1, 2
STATUS_SIZE = 3

#: blocks of the first pass of :func:`clipped_sumsq`
SUMSQ_PARTS = 2 if SIMULATOR else 256


class _NoControl(dict):
    def __missing__(self, key):
        value = self[key] = cuda.device_array(0, dtype=key)
        return value


_NO_CONTROL = _NoControl()


def new_control(dtype):
    """A fresh ``control`` array on the device (global-norm factor 1, gradient finite)."""
    return cuda.to_device(np.array([1.0, 0.0, 1.0], dtype=dtype))


def new_status():
    """A fresh ``status`` array on the device (not stopped)."""
    return cuda.to_device(np.zeros(STATUS_SIZE, dtype=np.int64))


@specialise
def _sumsq_partials_kernel(dtype_name):
    dt = numba_float(dtype_name)
    shape = (BLOCK_REDUCE,)

    @cuda.jit
    def kernel(grad, clip_value, partials):
        sh = cuda.shared.array(shape, dt)
        t = cuda.threadIdx.x
        total = dt(0.0)
        probe = dt(0.0)
        zero = dt(0.0)
        for i in range(cuda.grid(1), grad.shape[0], cuda.gridsize(1)):
            g = grad[i]
            probe += g * zero  # NaN as soon as one entry is NaN or infinite
            c = min(max(g, -clip_value), clip_value)
            total += c * c
        total = block_sum(sh, total)
        probe = block_sum(sh, probe)
        if t == 0:
            partials[0, cuda.blockIdx.x] = total
            partials[1, cuda.blockIdx.x] = probe

    return kernel


@specialise
def _sumsq_finish_kernel(dtype_name):
    dt = numba_float(dtype_name)
    shape = (BLOCK_REDUCE,)

    @cuda.jit
    def kernel(partials, control):
        sh = cuda.shared.array(shape, dt)
        t = cuda.threadIdx.x
        total = dt(0.0)
        probe = dt(0.0)
        for b in range(t, partials.shape[1], cuda.blockDim.x):
            total += partials[0, b]
            probe += partials[1, b]
        total = block_sum(sh, total)
        probe = block_sum(sh, probe)
        if t == 0:
            control[SUMSQ] = total
            control[FINITE] = dt(1.0) if probe == dt(0.0) else dt(0.0)

    return kernel


def clipped_sumsq(grad, clip_value, control=None, work=None):
    """Sum of squares of the value-clipped gradient, and whether every entry is finite.

    Parameters
    ----------
    grad : device array, shape (P,)
    clip_value : float
        Entries are clipped to ``[-clip_value, clip_value]`` first (``inf``: no clipping).
    control : device array, shape (CONTROL_SIZE,), optional
        When given, the results go to ``control[SUMSQ]`` and ``control[FINITE]`` (1 or 0) on the
        device and nothing is returned.
    work : device array, shape (2, SUMSQ_PARTS), optional
        Workspace (allocated per call when omitted).

    Returns
    -------
    (sumsq, finite) or None
    """
    dtype = check_float_arrays(("grad",), (grad,))
    returned = control is None
    if returned:
        control = new_control(dtype)
    check_float_arrays(("grad", "control"), (grad, control))
    check_shape("control", control, (CONTROL_SIZE,))
    if work is None:
        work = cuda.device_array((2, SUMSQ_PARTS), dtype=dtype)
    check_shape("work", work, (2, SUMSQ_PARTS))
    _sumsq_partials_kernel(dtype.name)[SUMSQ_PARTS, BLOCK_REDUCE](grad, dtype.type(clip_value),
                                                                  work)
    _sumsq_finish_kernel(dtype.name)[1, BLOCK_REDUCE](work, control)
    if returned:
        host = control.copy_to_host()
        return host[SUMSQ], bool(host[FINITE] == 1)
    return None


def sumsq(x):
    """Sum of squares of a contiguous device array (any shape), returned to the host."""
    total, _ = clipped_sumsq(x.reshape(x.size), np.inf)
    return total


def weight_grad_norms(grad, layout, out, index=0, segments=None, work=None, guard=None,
                      guard_index=0):
    """``out[l] = ||dL/dW_l||_F`` for every layer (weights only, not biases).

    Parameters
    ----------
    grad : device array, shape (P,)
    layout : ndarray of int64, shape (L, N_LAYOUT_COLS)
        The network layout (host array; see :mod:`neurosim.kernels.dense`).
    out : device array, shape (L,) or (n_records, L)
        Receives the norms (row ``index`` of a 2-D record buffer).
    segments : (starts, stops) device arrays, optional
        From :func:`weight_segments` (built per call when omitted).
    work, guard, guard_index
        As in :func:`neurosim.kernels.cuda.reduce.segment_sumsq`.
    """
    if segments is None:
        segments = weight_segments(layout)
    segment_sumsq(grad, segments[0], segments[1], out, index=index, work=work, guard=guard,
                  guard_index=guard_index)


def weight_segments(layout):
    """Device (starts, stops) of every layer's weight block in the flat buffer."""
    from ..dense import N_IN, N_OUT, W_OFF

    layout = np.asarray(layout)
    starts = layout[:, W_OFF].astype(np.int64)
    stops = starts + layout[:, N_IN] * layout[:, N_OUT]
    return cuda.to_device(starts), cuda.to_device(stops.astype(np.int64))


@cuda.jit
def _step_control_kernel(control, status, losses, loss_index, clip_norm, step):
    # one thread: the CPU loop's per-step decisions, taken on the device
    if cuda.grid(1) != 0 or status[STOP] != 0:
        return
    one = like(control, 1.0)
    loss = losses[loss_index]
    if not math.isfinite(loss) or control[FINITE] == 0:
        status[STOP] = 1
        status[STOP_STEP] = step
        return
    gscale = one
    if clip_norm > 0:
        norm = math.sqrt(control[SUMSQ])
        if norm > clip_norm:
            gscale = clip_norm / norm
    control[GSCALE] = gscale


def step_control(control, status, losses, loss_index, clip_norm, step):
    """Decide a step on the device: stop on a non-finite loss or gradient, else set GSCALE.

    Parameters
    ----------
    control, status : device arrays
        See the module docstring (``control[SUMSQ]``/``[FINITE]`` from :func:`clipped_sumsq`).
    losses : device array
        Holds the step's minibatch loss at ``loss_index``.
    clip_norm : float
        Global-norm threshold, or 0 for none.
    step : int
        The step number (recorded as ``STOP_STEP`` if it diverges).
    """
    dtype = np.dtype(control.dtype)
    _step_control_kernel[1, 1](control, status, losses, loss_index, dtype.type(clip_norm), step)


@cuda.jit
def _stop_unless_finite_kernel(control, status, step):
    if cuda.grid(1) == 0 and status[STOP] == 0 and control[FINITE] == 0:
        status[STOP] = 1
        status[STOP_STEP] = step


def stop_unless_finite(control, status, step):
    """Stop at ``step`` unless the last :func:`clipped_sumsq` found every entry finite."""
    _stop_unless_finite_kernel[1, 1](control, status, step)


@cuda.jit
def _finish_step_kernel(status, step):
    if cuda.grid(1) == 0 and status[STOP] == 0 and status[BAD] > 0:
        status[STOP] = 1
        status[STOP_STEP] = step


def finish_step(status, step):
    """Mark ``step`` as the divergence step if its update produced non-finite values."""
    _finish_step_kernel[1, 1](status, step)


@specialise
def _optimizer_kernel(dtype_name):
    dt = numba_float(dtype_name)

    @cuda.jit
    def kernel(code, params, grad, s1, s2, lr, mu, rho, b1, b2, eps, c1, c2, wd, control, status,
               cv, gs_in):
        if status[STOP] != 0:
            return
        one = dt(1.0)
        zero = dt(0.0)
        gs = control[GSCALE] if control.shape[0] > 0 else gs_in
        bad = 0
        for i in range(cuda.grid(1), params.shape[0], cuda.gridsize(1)):
            p = params[i]
            g = min(max(grad[i], -cv), cv) * gs + wd * p
            if code == SGD:
                new = p - lr * g
            elif code == MOMENTUM or code == NESTEROV:
                # momentum: p -= lr * v; nesterov: p -= lr * (g + mu v) (the CPU's expression)
                v = mu * s1[i] + g
                s1[i] = v
                if code == NESTEROV:
                    new = p - lr * (one * g + mu * v)
                else:
                    new = p - lr * (zero * g + one * v)
            elif code == RMSPROP:
                s = rho * s1[i] + (one - rho) * g * g
                s1[i] = s
                new = p - lr * g / (math.sqrt(s) + eps)
            elif code == ADAGRAD:
                s = s1[i] + g * g
                s1[i] = s
                new = p - lr * g / (math.sqrt(s) + eps)
            else:
                m = b1 * s1[i] + (one - b1) * g
                v = b2 * s2[i] + (one - b2) * g * g
                s1[i] = m
                s2[i] = v
                new = p - lr * (m * c1) / (math.sqrt(v * c2) + eps)
            if new - new == zero:
                params[i] = new
            else:
                bad += 1
        if bad > 0:
            cuda.atomic.add(status, BAD, bad)

    return kernel


def optimizer_step(code, params, grad, s1, s2, lr, hyper, t, weight_decay, gscale, clip_value,
                   control=None, status=None):
    """One optimizer update of the flat device buffer ``params`` in place.

    Arguments as in the CPU twin (``hyper`` is a host array: its values are passed as kernel
    scalars). With
    ``control``/``status`` (see the module docstring) the global-norm factor is read from
    ``control[GSCALE]`` (``gscale`` is ignored), the update is skipped when ``status[STOP]`` is
    set, and non-finite updates are counted in ``status[BAD]``; nothing is returned.

    Returns
    -------
    bool or None
        Without ``status``: True when every new value is finite (otherwise the parameters whose
        new value is not finite kept their old value), as the CPU twin.
    """
    dtype = check_float_arrays(("params", "grad"), (params, grad))
    n = params.shape[0]
    check_shape("grad", grad, (n,))
    if hasattr(hyper, "copy_to_host"):
        raise TypeError("hyper must be a host array (its values become kernel scalars)")
    hyper = np.asarray(hyper).astype(dtype)
    if code in (MOMENTUM, NESTEROV, RMSPROP, ADAGRAD, ADAM):
        check_shape("s1", s1, (n,))
    if code == ADAM:
        check_shape("s2", s2, (n,))
    one = dtype.type(1.0)
    c1 = c2 = one
    if code == ADAM:  # in the parameters' type, as the CPU computes them
        tt = dtype.type(t)
        c1 = one / (one - hyper[H_BETA1] ** tt)
        c2 = one / (one - hyper[H_BETA2] ** tt)
    returned = status is None
    if returned:
        status = new_status()
    if control is None:
        control = _NO_CONTROL[dtype.name]
    if n:
        _optimizer_kernel(dtype.name)[grid_1d(n), BLOCK_1D](
            code, params, grad, s1, s2, dtype.type(lr), hyper[H_MOMENTUM], hyper[H_RHO],
            hyper[H_BETA1], hyper[H_BETA2], hyper[H_EPS], c1, c2, dtype.type(weight_decay),
            control, status, dtype.type(clip_value), dtype.type(gscale))
    if returned:
        return bool(status.copy_to_host()[BAD] == 0)
    return None


def _signatures(dt, int_t, bool_t):
    name, v, m = str(dt), dt[::1], dt[:, ::1]
    iv = int_t[::1]
    return [("sumsq_partials", _sumsq_partials_kernel(name).py_func, (v, dt, m)),
            ("sumsq_finish", _sumsq_finish_kernel(name).py_func, (m, v)),
            ("step_control", _step_control_kernel.py_func, (v, iv, v, int_t, dt, int_t)),
            ("finish_step", _finish_step_kernel.py_func, (iv, int_t)),
            ("stop_unless_finite", _stop_unless_finite_kernel.py_func, (v, iv, int_t)),
            ("optimizer_step", _optimizer_kernel(name).py_func,
             (int_t, v, v, v, v, dt, dt, dt, dt, dt, dt, dt, dt, dt, v, iv, dt, dt))]

"""CUDA twins of :mod:`neurosim.kernels.activations`.

``phi``, ``dphi`` and ``d2phi`` are device functions with the CPU kernels' names, argument order
and formulas (``math`` functions instead of NumPy ufuncs, which CUDA device code lacks); constants
go through :func:`~neurosim.kernels.scalar.like`, which numba's CUDA target compiles as well, so
float32 stays float32 on the device. ``apply_phi``, ``apply_dphi`` and ``apply_d2phi`` launch
elementwise kernels over 1-D device arrays; ``params`` is a (3,) array on the device or the host.
"""

import math

from numba import cuda

from ..activations import (
    ELU,
    ERF,
    HARD_TANH,
    LEAKY_RELU,
    LINEAR,
    LOGISTIC,
    NAKA_RUSHTON,
    PRELU,
    RELU,
    SATURATING_LINEAR,
    SIGMOID,
    SOFTSIGN,
    TANH,
)
from ..scalar import like
from ._launch import BLOCK_1D, check_float_arrays, check_shape, device_params, grid_1d

__all__ = ["phi", "dphi", "d2phi", "apply_phi", "apply_dphi", "apply_d2phi"]


@cuda.jit(device=True, inline="always")
def _sigmoid(x):
    one = like(x, 1.0)
    if x >= like(x, 0.0):
        return one / (one + math.exp(-x))
    e = math.exp(x)
    return e / (one + e)


@cuda.jit(device=True)
def phi(code, x, p0, p1, p2):
    """Activation value phi(x) (device function; see the CPU twin for the parameters)."""
    zero = like(x, 0.0)
    one = like(x, 1.0)
    if code == TANH:
        return math.tanh(x)
    if code == LINEAR:
        return x
    if code == SIGMOID:
        return _sigmoid(x)
    if code == RELU:
        return x if x > zero else zero
    if code == LEAKY_RELU or code == PRELU:
        return x if x > zero else p0 * x
    if code == ELU:
        return x if x > zero else p0 * math.expm1(x)
    if code == SOFTSIGN:
        return x / (one + abs(x))
    if code == HARD_TANH:
        return min(max(x, -one), one)
    if code == ERF:
        return math.erf(x)
    if code == LOGISTIC:
        return p0 * _sigmoid(p1 * (x - p2))
    if code == SATURATING_LINEAR:
        return min(max(p1 * (x - p2), zero), p0)
    if code == NAKA_RUSHTON:
        if x <= zero:
            return zero
        if x > p2:
            return p0 / (one + (p2 / x) ** p1)
        u = x**p1
        return p0 * u / (u + p2**p1)
    return x + like(x, math.nan)


@cuda.jit(device=True)
def dphi(code, x, a, p0, p1, p2):
    """First derivative phi'(x) given ``a = phi(x)`` (device function)."""
    zero = like(x, 0.0)
    one = like(x, 1.0)
    if code == TANH:
        return one - a * a
    if code == LINEAR:
        return one
    if code == SIGMOID:
        return a * (one - a)
    if code == RELU:
        return one if x > zero else zero
    if code == LEAKY_RELU or code == PRELU:
        return one if x > zero else p0
    if code == ELU:
        return one if x > zero else a + p0
    if code == SOFTSIGN:
        d = one + abs(x)
        return one / (d * d)
    if code == HARD_TANH:
        return one if abs(x) < one else zero
    if code == ERF:
        return like(x, 1.1283791670955126) * math.exp(-x * x)
    if code == LOGISTIC:
        return p1 * a * (one - a / p0)
    if code == SATURATING_LINEAR:
        u = p1 * (x - p2)
        return p1 if (u > zero and u < p0) else zero
    if code == NAKA_RUSHTON:
        if x <= zero:
            return zero
        if x > p2:
            t = (p2 / x) ** p1
            s = one + t
            return p0 * p1 * t / (x * s * s)
        u = x**p1
        s = u + p2**p1
        return p0 * p1 * (p2**p1) * (u / x) / (s * s)
    return x + like(x, math.nan)


@cuda.jit(device=True)
def d2phi(code, x, a, p0, p1, p2):
    """Second derivative phi''(x) given ``a = phi(x)`` (device function)."""
    zero = like(x, 0.0)
    one = like(x, 1.0)
    two = like(x, 2.0)
    if code == TANH:
        return -two * a * (one - a * a)
    if code == SIGMOID:
        return a * (one - a) * (one - two * a)
    if code == ELU:
        return zero if x > zero else a + p0
    if code == SOFTSIGN:
        d = one + abs(x)
        s = one if x > zero else (-one if x < zero else zero)
        return -two * s / (d * d * d)
    if code == ERF:
        return -two * x * like(x, 1.1283791670955126) * math.exp(-x * x)
    if code == LOGISTIC:
        y = a / p0
        return p0 * p1 * p1 * y * (one - y) * (one - two * y)
    if code == NAKA_RUSHTON:
        if x <= zero:
            return zero
        if x > p2:
            t = (p2 / x) ** p1
            s = one + t
            return p0 * p1 * t * ((p1 - one) * s - two * p1) / (x * x * s * s * s)
        u = x**p1
        c = p2**p1
        s = u + c
        return p0 * p1 * c * (u / (x * x)) * ((p1 - one) * s - two * p1 * u) / (s * s * s)
    if code <= PRELU or code == HARD_TANH or code == SATURATING_LINEAR:
        return zero
    return x + like(x, math.nan)


@cuda.jit
def _phi_kernel(code, params, h, out):
    p0, p1, p2 = params[0], params[1], params[2]
    for i in range(cuda.grid(1), h.shape[0], cuda.gridsize(1)):
        out[i] = phi(code, h[i], p0, p1, p2)


@cuda.jit
def _dphi_kernel(code, params, h, a, out):
    p0, p1, p2 = params[0], params[1], params[2]
    for i in range(cuda.grid(1), h.shape[0], cuda.gridsize(1)):
        out[i] = dphi(code, h[i], a[i], p0, p1, p2)


@cuda.jit
def _d2phi_kernel(code, params, h, a, out):
    p0, p1, p2 = params[0], params[1], params[2]
    for i in range(cuda.grid(1), h.shape[0], cuda.gridsize(1)):
        out[i] = d2phi(code, h[i], a[i], p0, p1, p2)


def _check(params, arrays, names):
    dtype = check_float_arrays(names, arrays)
    for name, arr in zip(names, arrays, strict=True):
        if arr.ndim != 1:
            raise ValueError(f"{name} must be 1-D, got shape {tuple(arr.shape)}")
        check_shape(name, arr, arrays[0].shape)
    return device_params(params, dtype)


def apply_phi(code, params, h, out):
    """Elementwise ``out[i] = phi(h[i])`` on the device; 1-D arrays, ``params`` shape (3,)."""
    params = _check(params, (h, out), ("h", "out"))
    if h.shape[0]:
        _phi_kernel[grid_1d(h.shape[0]), BLOCK_1D](code, params, h, out)


def apply_dphi(code, params, h, a, out):
    """Elementwise ``out[i] = phi'(h[i])`` given ``a = phi(h)`` on the device; 1-D arrays."""
    params = _check(params, (h, a, out), ("h", "a", "out"))
    if h.shape[0]:
        _dphi_kernel[grid_1d(h.shape[0]), BLOCK_1D](code, params, h, a, out)


def apply_d2phi(code, params, h, a, out):
    """Elementwise ``out[i] = phi''(h[i])`` given ``a = phi(h)`` on the device; 1-D arrays."""
    params = _check(params, (h, a, out), ("h", "a", "out"))
    if h.shape[0]:
        _d2phi_kernel[grid_1d(h.shape[0]), BLOCK_1D](code, params, h, a, out)


def _signatures(dt, int_t, bool_t):
    v = dt[::1]
    return [("apply_phi", _phi_kernel.py_func, (int_t, v, v, v)),
            ("apply_dphi", _dphi_kernel.py_func, (int_t, v, v, v, v)),
            ("apply_d2phi", _d2phi_kernel.py_func, (int_t, v, v, v, v))]

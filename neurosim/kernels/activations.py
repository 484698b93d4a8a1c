"""Scalar and array activation kernels, dispatched on an integer code.

Every function keeps the floating type of its input (float32 stays float32). Parameters ``p0, p1,
p2`` are passed as scalars of the same type as ``x``; their meaning per activation is listed in
:mod:`neurosim.activations`, which owns the names, codes and defaults.

The scalar functions are also the CUDA device functions (:mod:`neurosim.kernels.cuda.activations`
calls them from its kernels), so they use only what both numba targets compile: ``math``
functions (not NumPy ufuncs, which numba's CUDA target lacks for exp/expm1) and :func:`like`.
"""

import math

import numpy as np
from numba import njit

from .scalar import like

LINEAR = 0
SIGMOID = 1
TANH = 2
RELU = 3
LEAKY_RELU = 4
PRELU = 5
ELU = 6
SOFTSIGN = 7
HARD_TANH = 8
ERF = 9
LOGISTIC = 10
SATURATING_LINEAR = 11
NAKA_RUSHTON = 12
N_ACTIVATIONS = 13


@njit(cache=True, inline="always")
def _sigmoid(x):
    one = like(x, 1.0)
    if x >= 0:
        return one / (one + math.exp(-x))
    e = math.exp(x)
    return e / (one + e)


@njit(cache=True)
def phi(code, x, p0, p1, p2):
    """Activation value phi(x).

    Parameters
    ----------
    code : int
        Activation code (module constants).
    x : float
        Pre-activation.
    p0, p1, p2 : float
        Activation parameters (same type as ``x``).
    """
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
    return x + like(x, np.nan)


@njit(cache=True)
def dphi(code, x, a, p0, p1, p2):
    """First derivative phi'(x), given ``a = phi(x)`` (used where it is cheaper)."""
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
    return x + like(x, np.nan)


@njit(cache=True)
def d2phi(code, x, a, p0, p1, p2):
    """Second derivative phi''(x), given ``a = phi(x)`` (zero at kinks of piecewise maps)."""
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
    return x + like(x, np.nan)


@njit(cache=True)
def apply_phi(code, params, h, out):
    """Elementwise ``out[i] = phi(h[i])`` over 1-D arrays; ``params`` has shape (3,)."""
    p0, p1, p2 = params[0], params[1], params[2]
    for i in range(h.shape[0]):
        out[i] = phi(code, h[i], p0, p1, p2)


@njit(cache=True)
def apply_dphi(code, params, h, a, out):
    """Elementwise ``out[i] = phi'(h[i])`` given ``a = phi(h)``; 1-D arrays."""
    p0, p1, p2 = params[0], params[1], params[2]
    for i in range(h.shape[0]):
        out[i] = dphi(code, h[i], a[i], p0, p1, p2)


@njit(cache=True)
def apply_d2phi(code, params, h, a, out):
    """Elementwise ``out[i] = phi''(h[i])`` given ``a = phi(h)``; 1-D arrays."""
    p0, p1, p2 = params[0], params[1], params[2]
    for i in range(h.shape[0]):
        out[i] = d2phi(code, h[i], a[i], p0, p1, p2)

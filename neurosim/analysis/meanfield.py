"""Mean-field theory of signal and gradient propagation in wide random networks.

A layer computes ``h = a_prev @ W + b`` with ``W ~ N(0, sigma_w^2 / fan_in)`` and
``b ~ N(0, sigma_b^2)``, ``a = phi(h)``. In the wide limit every pre-activation is Gaussian with
variance ``q`` that follows the length map, and two inputs keep a correlation ``c`` that follows
the correlation map (Poole et al. 2016, Schoenholz et al. 2017)::

    q^{l+1} = sigma_w^2 E[phi(sqrt(q^l) z)^2] + sigma_b^2
    c^{l+1} = (sigma_w^2 E[phi(u1) phi(u2)] + sigma_b^2) / q^{l+1}
    chi_1   = sigma_w^2 E[phi'(sqrt(q*) z)^2]           # E||delta_l||^2 / E||delta_{l+1}||^2
    chi_c   = sigma_w^2 E[phi'(u1) phi'(u2)] at c*
    xi_c    = -1 / ln chi_c,     xi_q = -1 / ln(d q^{l+1} / d q^l at q*)

Every function takes the activation as a registered name or a resolved
:class:`neurosim.activations.Activation` (so bounded rate activations and their parameters work
too) and the weight and bias scales as *standard deviations* ``sigma_w``, ``sigma_b``.

Gaussian expectations come from the adaptive Gauss-Legendre kernels in
:mod:`neurosim.kernels.meanfield`, graded around each activation's kinks and transitions; they
match the closed forms (ReLU arc-cosine kernel, erf arcsine kernel) to about 1e-14 relative.
Fixed points are bracketed and polished with Brent's method to machine precision.

Conventions for the limits: a zero variance means the limit ``q -> 0+`` (for relu,
``E[phi'(0)^2] = 1/2``); a length map that grows without bound (``q* = inf``, e.g. relu with
``sigma_w^2 > 2``) keeps ``chi_1`` finite, and the correlation map is then taken in its
large-``q`` limit, where every unbounded registered activation is asymptotically piecewise
linear: ``c* = 1`` with slope 1 (correlations converge only polynomially, ``xi_c = inf``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.polynomial.legendre import leggauss, legroots, legval
from scipy.optimize import brentq
from scipy.special import erf

from .. import activations
from .._validation import (
    check_choice,
    check_in_range,
    check_int,
    check_nonnegative,
    check_positive,
    check_real,
)
from ..activations import Activation
from ..kernels import meanfield as _k

RTOL = 1e-12
"""Relative tolerance of the quadrature error estimate (actual errors are far smaller)."""

Q_MAX = 1e150
"""A length map iterate beyond this counts as divergent (``q* = inf``)."""



def gauss_kronrod(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nodes and weights of the ``(2n+1)``-point Kronrod extension of ``n``-point Gauss-Legendre.

    The ``n + 1`` added nodes are the zeros of the Stieltjes polynomial ``E_{n+1}``, orthogonal to
    ``P_n x^k`` for ``k <= n``; the weights make the rule exact for polynomials of degree
    ``<= 2n`` (it is in fact exact to degree ``3n + 1``).

    Returns
    -------
    xk, wk : ndarray, shape (2n+1,)
        Kronrod nodes (ascending; the Gauss nodes at the odd positions) and weights.
    wg : ndarray, shape (n,)
        Weights of the embedded Gauss rule.
    """
    xg, wg = leggauss(n)
    xq, wq = leggauss(3 * n + 8)
    basis = np.array([legval(xq, np.eye(n + 2)[j]) for j in range(n + 2)])
    gram = np.einsum("q,q,jq,kq->kj", wq, basis[n], basis, basis[: n + 1])
    coef = np.append(np.linalg.solve(gram[:, : n + 1], -gram[:, n + 1]), 1.0)
    xk = np.sort(np.concatenate([xg, legroots(coef).real]))
    xk = 0.5 * (xk - xk[::-1])
    m = 2 * n + 1
    vander = np.array([legval(xk, np.eye(m)[j]) for j in range(m)])
    rhs = np.zeros(m)
    rhs[0] = 2.0
    wk = np.linalg.solve(vander, rhs)
    wk = 0.5 * (wk + wk[::-1])
    return xk, wk, wg


_XK, _WK, _WG = gauss_kronrod(10)
_BIG = 1e300

_FEATURES = {
    # (centre, width) in x of each kink (width 0) or smooth transition of phi.
    "linear": lambda p: [],
    "sigmoid": lambda p: [(0.0, 1.0)],
    "tanh": lambda p: [(0.0, 1.0)],
    "erf": lambda p: [(0.0, 1.0)],
    "relu": lambda p: [(0.0, 0.0)],
    "leaky_relu": lambda p: [(0.0, 0.0)],
    "prelu": lambda p: [(0.0, 0.0)],
    "elu": lambda p: [(0.0, 0.0), (0.0, 1.0)],
    "softsign": lambda p: [(0.0, 0.0), (0.0, 1.0)],
    "hard_tanh": lambda p: [(-1.0, 0.0), (1.0, 0.0)],
    "logistic": lambda p: [(p["threshold"], 1.0 / p["gain"])],
    "saturating_linear": lambda p: [(p["threshold"], 0.0),
                                    (p["threshold"] + p["r_max"] / p["gain"], 0.0)],
    "naka_rushton": lambda p: [(0.0, 0.0), (p["c50"], p["c50"])],
}


# ----------------------------------------------------------------------------------------------
# Gaussian expectations
# ----------------------------------------------------------------------------------------------

def _resolve(activation) -> Activation:
    return activations.get(activation)


@lru_cache(maxsize=256)
def _prepared(name: str, param_items: tuple) -> tuple:
    act = activations.get(name, **dict(param_items))
    feats = np.array(_FEATURES[name](act.params), dtype=np.float64).reshape(-1, 2)
    return act.code, act.param_array(np.float64), feats


def _prep(act: Activation) -> tuple:
    return _prepared(act.name, tuple(sorted(act.params.items())))


def _e1(act: Activation, q: float, na=0, nb=0, nc=0, nd=0, mean=0.0) -> float:
    """``E[x^nd phi^na phi'^nb phi''^nc]`` for ``x ~ N(mean, q)`` (q may be 0 or inf)."""
    code, params, feats = _prep(act)
    if math.isinf(q):
        if na or nd or nc:
            return math.inf
        # Limit of a variance growing without bound: phi' settles to its values at +-inf.
        up = _k.integrand(code, params[0], params[1], params[2], _BIG, 0, nb, 0, 0)
        down = _k.integrand(code, params[0], params[1], params[2], -_BIG, 0, nb, 0, 0)
        return 0.5 * (up + down)
    return float(_k.expect1(code, params, na, nb, nc, nd, mean, math.sqrt(q), feats, RTOL,
                            _XK, _WK, _WG))


def _e2(act: Activation, q1: float, q2: float, c: float, f=(1, 0), g=(1, 0)) -> float:
    """``E[f(u1) g(u2)]``, ``f = phi^f[0] phi'^f[1]``, over a Gaussian pair (variances q1, q2,
    correlation c)."""
    code, params, feats = _prep(act)
    if q1 == 0.0 or q2 == 0.0:
        # A degenerate pair: the zero-variance member sits at its limit value.
        if q1 == 0.0 and q2 == 0.0:
            return _e1(act, 0.0, f[0] + g[0], f[1] + g[1])
        zero, other = (f, g) if q1 == 0.0 else (g, f)
        return _e1(act, 0.0, *zero) * _e1(act, q2 if q1 == 0.0 else q1, *other)
    return float(_k.expect2(code, params, f[0], f[1], g[0], g[1], q1, q2, c, feats, RTOL,
                            _XK, _WK, _WG))


def gaussian_expectation(activation, q, *, phi_power=1, dphi_power=0, d2phi_power=0, x_power=0,
                         mean=0.0) -> float:
    """``E[x^d phi(x)^a phi'(x)^b phi''(x)^c]`` for ``x ~ N(mean, q)``.

    Parameters
    ----------
    activation : str or Activation
    q : float
        Variance of x (``>= 0``; 0 gives the limit of a vanishing variance).
    phi_power, dphi_power, d2phi_power, x_power : int
        The non-negative powers ``a, b, c, d``.
    mean : float
        Mean of x.

    Returns
    -------
    float
    """
    act = _resolve(activation)
    q = check_nonnegative("q", q)
    powers = [check_int(name, v, minimum=0) for name, v in
              (("phi_power", phi_power), ("dphi_power", dphi_power),
               ("d2phi_power", d2phi_power), ("x_power", x_power))]
    return _e1(act, q, *powers, mean=check_real("mean", mean))


def pair_expectation(activation, q1, q2, c, *, derivative=False) -> float:
    """``E[phi(u1) phi(u2)]`` (or ``E[phi'(u1) phi'(u2)]`` with ``derivative=True``).

    ``u1 = sqrt(q1) z1`` and ``u2 = sqrt(q2) (c z1 + sqrt(1 - c^2) z2)`` with independent
    standard normal ``z1, z2``: a zero-mean Gaussian pair with variances ``q1, q2`` and
    correlation ``c``.
    """
    act = _resolve(activation)
    q1 = check_nonnegative("q1", q1)
    q2 = check_nonnegative("q2", q2)
    c = check_in_range("c", c, -1.0, 1.0)
    powers = (0, 1) if derivative else (1, 0)
    return _e2(act, q1, q2, c, powers, powers)


# ----------------------------------------------------------------------------------------------
# Length map and q*
# ----------------------------------------------------------------------------------------------

def _check_sigmas(sigma_w, sigma_b) -> tuple[float, float]:
    sigma_w = check_positive("sigma_w", sigma_w)
    sigma_b = check_nonnegative("sigma_b", sigma_b)
    return sigma_w * sigma_w, sigma_b * sigma_b


def _length(act, q, sw2, sb2) -> float:
    if math.isinf(q):
        return math.inf
    return sw2 * _e1(act, q, 2) + sb2


def length_map(activation, q, sigma_w, sigma_b) -> float:
    """One step of the length map: ``sigma_w^2 E[phi(sqrt(q) z)^2] + sigma_b^2``.

    Parameters
    ----------
    activation : str or Activation
    q : float
        Pre-activation variance of layer l (``>= 0``).
    sigma_w, sigma_b : float
        Weight and bias standard deviations (in the ``sigma_w^2 / fan_in`` convention).

    Returns
    -------
    float
        The pre-activation variance of layer l + 1.
    """
    act = _resolve(activation)
    sw2, sb2 = _check_sigmas(sigma_w, sigma_b)
    return _length(act, check_nonnegative("q", q), sw2, sb2)


def length_iterates(activation, sigma_w, sigma_b, n_layers, q0=1.0) -> np.ndarray:
    """Pre-activation variances ``q^1 .. q^L`` of a network fed inputs with ``||x||^2/n_0 = q0``.

    ``q^1 = sigma_w^2 q0 + sigma_b^2`` (the input layer is linear), then the length map.

    Returns
    -------
    ndarray, shape (n_layers,)
    """
    act = _resolve(activation)
    sw2, sb2 = _check_sigmas(sigma_w, sigma_b)
    n_layers = check_int("n_layers", n_layers, minimum=1)
    q0 = check_nonnegative("q0", q0)
    out = np.empty(n_layers)
    q = sw2 * q0 + sb2
    for layer in range(n_layers):
        out[layer] = q
        q = _length(act, q, sw2, sb2) if q <= Q_MAX else math.inf
    return out


def _ratios():
    """Multiplicative steps for bracketing a root from a point: fine first, then fast."""
    r = 1.001
    while True:
        yield r
        r = 1.0 + 4.0 * (r - 1.0) if r < 2.0 else r * r


def _q_star(act: Activation, sw2: float, sb2: float, q0: float = 1.0) -> float:
    """The fixed point of the length map that iteration from ``q^1 = sw2 q0 + sb2`` reaches."""

    def g(q):
        return _length(act, q, sw2, sb2) - q

    q = sw2 * q0 + sb2
    if q == 0.0:
        q = _length(act, 0.0, sw2, sb2)
        if q == 0.0:
            return 0.0
    # A few plain iterations bring q near the attractor; then bracket and polish.
    for _ in range(40):
        q_next = _length(act, q, sw2, sb2)
        if q_next > Q_MAX:
            return math.inf
        done = abs(q_next - q) <= 1e-4 * q
        q = q_next
        if done or q == 0.0:
            break
    if q == 0.0:
        return 0.0
    gq = g(q)
    if gq == 0.0:
        return q
    # Far from the root g is a small difference of large numbers: a bracket end counts only
    # where g's sign is clear of rounding (|g| > 1e-12 q), so a map creeping to 0 or to infinity
    # (tanh at sigma_w = 1, linear at sigma_w = 1 with a bias) is not mistaken for a fixed point.
    if gq > 0.0:  # the attractor lies above
        lo = q
        for r in _ratios():
            hi = q * r
            if hi > Q_MAX:
                return math.inf
            g_hi = g(hi)
            if g_hi < -1e-12 * hi:
                break
            if g_hi > 0.0:
                lo = hi
    else:  # below
        hi = q
        for r in _ratios():
            lo = q / r
            if lo < 1e-300:
                return 0.0
            g_lo = g(lo)
            if g_lo > 1e-12 * lo:
                break
            if g_lo < 0.0:
                hi = lo
    return float(brentq(g, lo, hi, xtol=1e-300, rtol=4 * np.finfo(float).eps, maxiter=500))


def q_star(activation, sigma_w, sigma_b, q0=1.0) -> float:
    """Fixed point ``q*`` of the length map.

    For a monotone length map this is the limit of the iterates started from inputs with
    ``||x||^2 / n_0 = q0`` (for tanh, erf, sigmoid and the bounded rate activations the fixed
    point does not depend on ``q0``; for relu with ``sigma_b = 0`` and ``sigma_w^2 = 2`` every q is
    fixed and the start is kept).

    Returns
    -------
    float
        ``q*`` (0 when the iterates decay to zero, ``inf`` when they grow without bound).
    """
    act = _resolve(activation)
    sw2, sb2 = _check_sigmas(sigma_w, sigma_b)
    return _q_star(act, sw2, sb2, check_nonnegative("q0", q0))


# ----------------------------------------------------------------------------------------------
# chi_1, the correlation map, c*, chi_c, depth scales
# ----------------------------------------------------------------------------------------------

def _chi1(act, sw2, q) -> float:
    return sw2 * _e1(act, q, 0, 2)


def chi1(activation, sigma_w, sigma_b, q=None) -> float:
    """``chi_1 = sigma_w^2 E[phi'(sqrt(q) z)^2]`` at ``q*`` (or at a given variance ``q``).

    At ``q*`` this is the predicted per-layer ratio ``E||delta_l||^2 / E||delta_{l+1}||^2`` of
    backpropagated error signals in equal-width layers: gradients vanish toward the input when
    ``chi_1 < 1`` and explode when ``chi_1 > 1``.
    """
    act = _resolve(activation)
    sw2, sb2 = _check_sigmas(sigma_w, sigma_b)
    q = _q_star(act, sw2, sb2) if q is None else check_nonnegative("q", q)
    return _chi1(act, sw2, q)


def gradient_ratio(activation, sigma_w, sigma_b) -> float:
    """Predicted per-layer squared-gradient ratio ``E||delta_l||^2 / E||delta_{l+1}||^2``.

    Equal to ``chi_1`` at ``q*`` (the same ratio holds for ``||dL/dW_l||_F^2`` once the forward
    signal has reached its fixed point).
    """
    return chi1(activation, sigma_w, sigma_b)


def _correlation_map(act, c, sw2, sb2, q) -> float:
    q_next = _length(act, q, sw2, sb2)
    return (sw2 * _e2(act, q, q, c) + sb2) / q_next


def correlation_map(activation, c, sigma_w, sigma_b, q=None) -> float:
    """One step of the correlation map for two inputs with the same variance ``q`` (``q*``).

    ``c^{l+1} = (sigma_w^2 E[phi(u1) phi(u2)] + sigma_b^2) / q^{l+1}`` where ``u1, u2`` have
    variance ``q`` and correlation ``c``.
    """
    act = _resolve(activation)
    sw2, sb2 = _check_sigmas(sigma_w, sigma_b)
    c = check_in_range("c", c, -1.0, 1.0)
    q = _q_star(act, sw2, sb2) if q is None else check_nonnegative("q", q)
    if q == 0.0 or math.isinf(q):
        raise ValueError(f"the correlation map needs a finite, non-zero variance q; got q={q!r}"
                         " (q* is 0 or infinite for these parameters: pass q explicitly)")
    return _correlation_map(act, c, sw2, sb2, q)


def correlation_iterates(activation, sigma_w, sigma_b, n_layers, c0, q0=1.0, q0_b=None):
    """Mean-field layer-by-layer statistics of two inputs.

    Parameters
    ----------
    activation : str or Activation
    sigma_w, sigma_b : float
    n_layers : int
    c0 : float
        Input correlation ``x_a . x_b / (||x_a|| ||x_b||)``.
    q0, q0_b : float
        ``||x||^2 / n_0`` of the two inputs (``q0_b`` defaults to ``q0``).

    Returns
    -------
    q_a, q_b, c : ndarray, each shape (n_layers,)
        Pre-activation variances of the two inputs and their correlation, layers 1..L.
    """
    act = _resolve(activation)
    sw2, sb2 = _check_sigmas(sigma_w, sigma_b)
    n_layers = check_int("n_layers", n_layers, minimum=1)
    c0 = check_in_range("c0", c0, -1.0, 1.0)
    q0 = check_nonnegative("q0", q0)
    q0_b = q0 if q0_b is None else check_nonnegative("q0_b", q0_b)
    qa = sw2 * q0 + sb2
    qb = sw2 * q0_b + sb2
    qab = sw2 * c0 * math.sqrt(q0 * q0_b) + sb2
    out = np.empty((3, n_layers))
    for layer in range(n_layers):
        c = qab / math.sqrt(qa * qb) if qa > 0 and qb > 0 else 1.0
        c = min(1.0, max(-1.0, c))
        out[:, layer] = qa, qb, c
        if max(qa, qb) > Q_MAX:
            out[:, layer + 1:] = np.nan
            break
        qab = sw2 * _e2(act, qa, qb, c) + sb2
        qa = _length(act, qa, sw2, sb2)
        qb = _length(act, qb, sw2, sb2)
    return out[0], out[1], out[2]


def _c_star(act, sw2, sb2, q) -> float:
    if math.isinf(q) or q == 0.0:
        return 1.0
    if _chi1(act, sw2, q) <= 1.0:
        # C is convex on [0, 1] (its Mehler series has non-negative coefficients for monotone
        # phi) with C(1) = 1, so a slope <= 1 at c = 1 makes c = 1 the stable fixed point.
        return 1.0

    def h(c):
        return (sw2 * _e2(act, q, q, c) + sb2) / q - c

    # At c = 0 the pair factorises: E[phi(u1) phi(u2)] = E[phi]^2.
    h0 = (sw2 * _e1(act, q, 1) ** 2 + sb2) / q
    if h0 <= 1e-15:
        return 0.0
    eps = 0.1
    while h(1.0 - eps) >= 0.0:
        eps *= 0.1
        if eps < 1e-13:
            return 1.0
    return float(brentq(h, 0.0, 1.0 - eps, xtol=1e-15, rtol=4 * np.finfo(float).eps))


def c_star(activation, sigma_w, sigma_b) -> float:
    """Stable fixed point ``c*`` of the correlation map at ``q*``.

    ``c* = 1`` in the ordered phase (``chi_1 <= 1``): all inputs become parallel with depth.
    In the chaotic phase (``chi_1 > 1``) ``c* < 1``: nearby inputs decorrelate.
    """
    act = _resolve(activation)
    sw2, sb2 = _check_sigmas(sigma_w, sigma_b)
    return _c_star(act, sw2, sb2, _q_star(act, sw2, sb2))


def _chi_c(act, sw2, sb2, q, cs) -> float:
    if math.isinf(q):
        return 1.0
    if cs == 1.0:
        return _chi1(act, sw2, q)
    return sw2 * _e2(act, q, q, cs, (0, 1), (0, 1))


def chi_c(activation, sigma_w, sigma_b) -> float:
    """``chi_c = sigma_w^2 E[phi'(u1) phi'(u2)]`` at ``(q*, c*)``: the slope of the correlation map
    at its stable fixed point (equal to ``chi_1`` in the ordered phase)."""
    act = _resolve(activation)
    sw2, sb2 = _check_sigmas(sigma_w, sigma_b)
    q = _q_star(act, sw2, sb2)
    return _chi_c(act, sw2, sb2, q, _c_star(act, sw2, sb2, q))


def _depth_scale(slope: float) -> float:
    slope = abs(slope)
    if slope >= 1.0:
        return math.inf
    if slope == 0.0:
        return 0.0
    return -1.0 / math.log(slope)


def xi_c(activation, sigma_w, sigma_b) -> float:
    """Correlation depth scale ``xi_c = -1 / ln chi_c`` (layers); infinite at criticality.

    Schoenholz et al. (2017): networks are trainable when their depth is below about
    ``6 xi_c``.
    """
    return _depth_scale(chi_c(activation, sigma_w, sigma_b))


def _length_slope(act, sw2, q) -> float:
    """``d q^{l+1} / d q^l`` at q: ``sigma_w^2 E[x phi(x) phi'(x)] / q`` (Stein's lemma form of
    ``chi_1 + sigma_w^2 E[phi'' phi]``, valid for kinked phi too)."""
    if q == 0.0:
        return _chi1(act, sw2, 0.0)
    return sw2 * _e1(act, q, 1, 1, 0, 1) / q


def xi_q(activation, sigma_w, sigma_b) -> float:
    """Length depth scale ``xi_q = -1 / ln(chi_1 + sigma_w^2 E[phi''(h) phi(h)])`` at ``q*``: the
    number of layers over which the pre-activation variance relaxes to ``q*`` (NaN when ``q*``
    is infinite)."""
    act = _resolve(activation)
    sw2, sb2 = _check_sigmas(sigma_w, sigma_b)
    q = _q_star(act, sw2, sb2)
    if math.isinf(q):
        return math.nan
    return _depth_scale(_length_slope(act, sw2, q))


# ----------------------------------------------------------------------------------------------
# Critical line
# ----------------------------------------------------------------------------------------------

def _critical_sw2(act, sb2) -> float:
    def f(sw2):
        return _chi1(act, sw2, _q_star(act, sw2, sb2)) - 1.0

    code, params, _ = _prep(act)
    if sb2 == 0.0 and _k.integrand(code, params[0], params[1], params[2], 0.0, 1, 0, 0, 0) == 0.0:
        # phi(0) = 0 and no bias: while q* = 0 is attracting, chi_1 = sigma_w^2 phi'(0)^2
        # exactly, and it reaches 1 where the zero fixed point loses stability. (Past it chi_1
        # exceeds 1 only quadratically for odd phi -- 1 + eps^2/3 for tanh and erf -- which no
        # root finder can resolve beyond sqrt(machine precision), hence the closed form.)
        slope0 = _e1(act, 0.0, 0, 2)
        if slope0 > 0.0 and _q_star(act, (1.0 - 1e-6) / slope0, 0.0) == 0.0:
            return 1.0 / slope0

    s = 1.0
    fs = f(s)
    if fs == 0.0:
        return s
    factor = 2.0 if fs < 0.0 else 0.5
    for _ in range(200):
        s_next = s * factor
        f_next = f(s_next)
        if (f_next >= 0.0) != (fs >= 0.0) or f_next == 0.0:
            lo, hi = sorted((s, s_next))
            return float(brentq(f, lo, hi, xtol=1e-300, rtol=4 * np.finfo(float).eps))
        s, fs = s_next, f_next
        if s > 1e12 or s < 1e-12:
            break
    raise ValueError(
        f"activation {act.name!r} with sigma_b^2={sb2!r} has no critical point: chi_1 does "
        "not cross 1 for sigma_w^2 in [1e-12, 1e12]"
    )


def critical_sigma_w(activation, sigma_b) -> float:
    """The weight standard deviation ``sigma_w`` at which ``chi_1 = 1`` (order-chaos edge).

    Parameters
    ----------
    activation : str or Activation
    sigma_b : float
        Bias standard deviation.

    Returns
    -------
    float
        ``sigma_w`` (a standard deviation: square it to compare with tables of sigma_w^2).
    """
    act = _resolve(activation)
    sigma_b = check_nonnegative("sigma_b", sigma_b)
    return math.sqrt(_critical_sw2(act, sigma_b * sigma_b))


def critical_line(activation, sigma_b_values) -> np.ndarray:
    """``critical_sigma_w`` for each bias standard deviation; shape of ``sigma_b_values``."""
    values = np.asarray(sigma_b_values, dtype=np.float64)
    return np.array([critical_sigma_w(activation, float(v)) for v in values.ravel()]).reshape(
        values.shape)


# ----------------------------------------------------------------------------------------------
# Finite-depth predictions and biologically plausible rules
# ----------------------------------------------------------------------------------------------

def gradient_profile(activation, sigma_w, sigma_b, n_layers, q0=1.0) -> np.ndarray:
    """Predicted ``E||delta_l||^2 / E||delta_L||^2`` for layers ``l = 1..L``.

    Uses the pre-activation variances ``q^l`` of inputs with ``||x||^2 / n_0 = q0`` (so it holds
    before the forward signal reaches ``q*`` too): ``E||delta_l||^2 = chi_1(q^l)
    E||delta_{l+1}||^2`` with ``chi_1(q) = sigma_w^2 E[phi'(sqrt(q) z)^2]``.

    Returns
    -------
    ndarray, shape (n_layers,)
        Last entry 1.
    """
    act = _resolve(activation)
    qs = length_iterates(act, sigma_w, sigma_b, n_layers, q0)
    sw2 = sigma_w * sigma_w
    out = np.ones(n_layers)
    for layer in range(n_layers - 2, -1, -1):
        out[layer] = out[layer + 1] * _chi1(act, sw2, qs[layer])
    return out


RULES = ("backprop", "feedback_alignment", "direct_feedback_alignment")


def chi_fa(activation, sigma_w, sigma_b, sigma_B) -> float:
    """Feedback alignment's per-layer ratio ``chi_FA = sigma_B^2 E[phi'(sqrt(q*) z)^2]``.

    FA sends ``delta_l = phi'(h_l) * (delta_{l+1} B_{l+1})`` back through fixed random matrices
    whose entries have variance ``sigma_B^2 / n_l``; ``h_l`` still follows the forward length
    map, so FA's error signal compounds across depth like backprop's with ``sigma_w`` replaced
    by ``sigma_B`` in the backward factor.
    """
    act = _resolve(activation)
    sw2, sb2 = _check_sigmas(sigma_w, sigma_b)
    sigma_B = check_positive("sigma_B", sigma_B)
    return sigma_B * sigma_B * _e1(act, _q_star(act, sw2, sb2), 0, 2)


def signal_ratio(activation, sigma_w, sigma_b, rule="backprop", sigma_B=None) -> float:
    """Predicted ``E||delta_l||^2 / E||delta_{l+1}||^2`` of a rule's error signal (equal widths).

    ``backprop``: ``chi_1``; ``feedback_alignment``: ``chi_FA`` (needs ``sigma_B``);
    ``direct_feedback_alignment``: 1, because every hidden layer receives the output error
    through its own random matrix, ``delta_l = phi'(h_l) * (e B_l)``, and at the forward fixed
    point each layer's signal has the same size: DFA's error does not compound with depth.
    """
    rule = check_choice("rule", rule, RULES)
    if rule == "backprop":
        return chi1(activation, sigma_w, sigma_b)
    if rule == "feedback_alignment":
        if sigma_B is None:
            raise ValueError("rule='feedback_alignment' needs sigma_B, the feedback weights' "
                             "standard deviation (entries ~ N(0, sigma_B^2 / n_l))")
        return chi_fa(activation, sigma_w, sigma_b, sigma_B)
    _check_sigmas(sigma_w, sigma_b)
    _resolve(activation)
    return 1.0


# ----------------------------------------------------------------------------------------------
# Bounded synapses
# ----------------------------------------------------------------------------------------------

def _phi_n(x):
    return math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def _cdf(x):
    return 0.5 * (1.0 + erf(x / math.sqrt(2.0)))


def clipped_weight_moments(lower, upper, mode="clip") -> tuple[float, float]:
    """Mean and variance of a standard normal ``z`` bounded to ``[lower, upper]``.

    ``mode="clip"``: values outside are set to the nearest bound (hard synaptic bounds applied
    to a Gaussian draw); ``mode="truncate"``: values outside are redrawn (a truncated normal).
    Bounds are in units of the weight standard deviation and may be infinite.
    """
    mode = check_choice("mode", mode, ("clip", "truncate"))
    lower = float(lower)
    upper = float(upper)
    if math.isnan(lower) or math.isnan(upper) or not lower < upper:
        raise ValueError(f"bounds must satisfy lower < upper, got ({lower!r}, {upper!r})")
    pa, pb = _phi_n(lower) if math.isfinite(lower) else 0.0, \
        _phi_n(upper) if math.isfinite(upper) else 0.0
    ca, cb = _cdf(lower), _cdf(upper)
    mass = cb - ca
    # Inside moments: int_a^b z phi = pa - pb, int_a^b z^2 phi = mass + a pa - b pb.
    m1_in = pa - pb
    m2_in = mass + (lower * pa if math.isfinite(lower) else 0.0) \
        - (upper * pb if math.isfinite(upper) else 0.0)
    if mode == "truncate":
        if mass <= 0.0:
            raise ValueError(f"bounds ({lower}, {upper}) hold no probability mass")
        mean = m1_in / mass
        return mean, m2_in / mass - mean * mean
    m1 = m1_in + (lower * ca if math.isfinite(lower) else 0.0) \
        + (upper * (1.0 - cb) if math.isfinite(upper) else 0.0)
    m2 = m2_in + (lower * lower * ca if math.isfinite(lower) else 0.0) \
        + (upper * upper * (1.0 - cb) if math.isfinite(upper) else 0.0)
    return m1, m2 - m1 * m1


def effective_sigma_w(sigma_w, bounds, fan_in=None, mode="clip") -> float:
    """Weight standard deviation left after bounding Gaussian weights.

    Parameters
    ----------
    sigma_w : float
        Standard deviation before bounding (``W ~ N(0, sigma_w^2 / fan_in)``).
    bounds : float or (float, float)
        Synaptic bounds. A single ``k`` means ``|W| <= k``; a pair ``(w_min, w_max)`` means
        ``w_min <= W <= w_max``. With ``fan_in=None`` they are in units of the weight standard
        deviation ``sigma_w / sqrt(fan_in)`` (``k = 2`` clips at two standard deviations); with
        ``fan_in`` given they are absolute weight values.
    fan_in : int, optional
    mode : {"clip", "truncate"}
        Hard clipping of each weight to the bounds, or redrawing outside them.

    Returns
    -------
    float
        ``sigma_w_eff`` with ``W_eff ~ (0, sigma_w_eff^2 / fan_in)`` in variance; clipping at
        two standard deviations gives ``sigma_w_eff^2 = 0.9205 sigma_w^2``: bounded synapses
        shrink the per-layer gain and push a network toward the vanishing phase. Asymmetric
        bounds also shift the mean weight (see :func:`clipped_weight_moments`).
    """
    sigma_w = check_positive("sigma_w", sigma_w)
    if np.ndim(bounds) == 0:
        k = check_positive("bounds", bounds)
        lo, hi = -k, k
    else:
        if len(bounds) != 2:
            raise ValueError(f"bounds must be a number k or a pair (w_min, w_max), got {bounds!r}")
        lo, hi = (check_real("bounds[0]", bounds[0]), check_real("bounds[1]", bounds[1]))
    if fan_in is not None:
        fan_in = check_int("fan_in", fan_in, minimum=1)
        scale = sigma_w / math.sqrt(fan_in)
        lo, hi = lo / scale, hi / scale
    _, var = clipped_weight_moments(lo, hi, mode)
    return sigma_w * math.sqrt(var)


# ----------------------------------------------------------------------------------------------
# Jacobian spectrum (free probability)
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class JacobianPrediction:
    """Free-probability prediction for the input-output Jacobian ``J = prod_l D_l W_l``.

    Attributes
    ----------
    mean_squared_singular_value : float
        ``(sigma_w^2 mu_1)^L = chi_1^L``.
    normalized_variance : float
        ``var(lambda) / mean(lambda)^2 = L (mu_2 / mu_1^2 - 1 - s_1)`` over the squared singular
        values ``lambda`` of J (wide-network limit, equal widths).
    mu1, mu2 : float
        ``E[phi'(h)^2]``, ``E[phi'(h)^4]`` at the variance used.
    s1 : float
        First S-transform coefficient of ``W^T W``: -1 Gaussian, 0 orthogonal.
    depth : int
    q : float
        The pre-activation variance used (``q*`` by default).
    """

    mean_squared_singular_value: float
    normalized_variance: float
    mu1: float
    mu2: float
    s1: float
    depth: int
    q: float


WEIGHT_ENSEMBLES = {"gaussian": -1.0, "orthogonal": 0.0}


def jacobian_prediction(activation, sigma_w, sigma_b, depth, weights="gaussian",
                        q=None) -> JacobianPrediction:
    """Mean and spread of the Jacobian's squared singular values (Pennington et al. 2017).

    Parameters
    ----------
    activation : str or Activation
    sigma_w, sigma_b : float
    depth : int
        Number of layers L, each ``D_l W_l`` with ``D_l = diag(phi'(h_l))``.
    weights : {"gaussian", "orthogonal"}
    q : float, optional
        Pre-activation variance (default ``q*``).
    """
    act = _resolve(activation)
    sw2, sb2 = _check_sigmas(sigma_w, sigma_b)
    depth = check_int("depth", depth, minimum=1)
    weights = check_choice("weights", weights, WEIGHT_ENSEMBLES)
    q = _q_star(act, sw2, sb2) if q is None else check_nonnegative("q", q)
    mu1 = _e1(act, q, 0, 2)
    mu2 = _e1(act, q, 0, 4)
    s1 = WEIGHT_ENSEMBLES[weights]
    return JacobianPrediction(
        mean_squared_singular_value=(sw2 * mu1) ** depth,
        normalized_variance=depth * (mu2 / (mu1 * mu1) - 1.0 - s1),
        mu1=mu1, mu2=mu2, s1=s1, depth=depth, q=q,
    )


# ----------------------------------------------------------------------------------------------
# Everything at one point, and over a grid
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MeanFieldPoint:
    """Mean-field quantities at one ``(sigma_w, sigma_b)``; see the module docstring."""

    activation: str
    sigma_w: float
    sigma_b: float
    q_star: float
    chi1: float
    c_star: float
    chi_c: float
    xi_c: float
    xi_q: float

    @property
    def regime(self) -> str:
        """``"ordered"`` (chi_1 < 1), ``"critical"`` (within 1e-9 of 1) or ``"chaotic"``."""
        if abs(self.chi1 - 1.0) <= 1e-9:
            return "critical"
        return "ordered" if self.chi1 < 1.0 else "chaotic"


def _point(act, sw2, sb2) -> tuple:
    q = _q_star(act, sw2, sb2)
    c1 = _chi1(act, sw2, q)
    cs = _c_star(act, sw2, sb2, q)
    cc = _chi_c(act, sw2, sb2, q, cs)
    xq = math.nan if math.isinf(q) else _depth_scale(_length_slope(act, sw2, q))
    return q, c1, cs, cc, _depth_scale(cc), xq


def summary(activation, sigma_w, sigma_b) -> MeanFieldPoint:
    """All mean-field quantities at one point (computing ``q*`` and ``c*`` once)."""
    act = _resolve(activation)
    sw2, sb2 = _check_sigmas(sigma_w, sigma_b)
    q, c1, cs, cc, xc, xq = _point(act, sw2, sb2)
    return MeanFieldPoint(act.name, math.sqrt(sw2), math.sqrt(sb2), q, c1, cs, cc, xc, xq)


@dataclass
class PhaseDiagram:
    """Mean-field quantities on a ``(sigma_w^2, sigma_b^2)`` grid.

    Attributes
    ----------
    activation : str
    sigma_w2 : ndarray, shape (n_w,)
        Weight variances (x axis).
    sigma_b2 : ndarray, shape (n_b,)
        Bias variances (y axis).
    q_star, chi1, c_star, chi_c, xi_c, xi_q : ndarray, shape (n_b, n_w)
    critical_sigma_w2 : ndarray, shape (n_b,)
        The critical line ``chi_1 = 1`` (NaN where none exists).
    """

    activation: str
    sigma_w2: np.ndarray
    sigma_b2: np.ndarray
    q_star: np.ndarray
    chi1: np.ndarray
    c_star: np.ndarray
    chi_c: np.ndarray
    xi_c: np.ndarray
    xi_q: np.ndarray
    critical_sigma_w2: np.ndarray

    def to_arrays(self) -> dict:
        """Fields as arrays (``np.savez``-ready, no pickling)."""
        out = {k: np.asarray(v) for k, v in self.__dict__.items()}
        return out

    @classmethod
    def from_arrays(cls, arrays) -> PhaseDiagram:
        kwargs = {k: np.asarray(arrays[k]) for k in cls.__dataclass_fields__}
        kwargs["activation"] = str(kwargs["activation"])
        return cls(**kwargs)


def phase_diagram(activation, sigma_w2, sigma_b2) -> PhaseDiagram:
    """Order-chaos phase diagram over a grid of weight and bias *variances*.

    Parameters
    ----------
    activation : str or Activation
    sigma_w2 : array_like, shape (n_w,)
        Weight variances ``sigma_w^2`` (> 0).
    sigma_b2 : array_like, shape (n_b,)
        Bias variances ``sigma_b^2`` (>= 0).

    Returns
    -------
    PhaseDiagram
    """
    act = _resolve(activation)
    sw2 = np.atleast_1d(np.asarray(sigma_w2, dtype=np.float64))
    sb2 = np.atleast_1d(np.asarray(sigma_b2, dtype=np.float64))
    if sw2.ndim != 1 or sb2.ndim != 1 or sw2.size == 0 or sb2.size == 0:
        raise ValueError("sigma_w2 and sigma_b2 must be non-empty 1-D sequences of variances")
    if not (np.all(np.isfinite(sw2)) and np.all(sw2 > 0)):
        raise ValueError(f"sigma_w2 must hold finite values > 0, got {sw2!r}")
    if not (np.all(np.isfinite(sb2)) and np.all(sb2 >= 0)):
        raise ValueError(f"sigma_b2 must hold finite values >= 0, got {sb2!r}")
    grids = np.empty((6, sb2.size, sw2.size))
    critical = np.empty(sb2.size)
    for i, b in enumerate(sb2):
        for j, w in enumerate(sw2):
            grids[:, i, j] = _point(act, float(w), float(b))
        try:
            critical[i] = _critical_sw2(act, float(b))
        except ValueError:
            critical[i] = np.nan
    return PhaseDiagram(act.name, sw2, sb2, *grids, critical)


# ----------------------------------------------------------------------------------------------
# Layer by layer through a given network
# ----------------------------------------------------------------------------------------------

@dataclass
class LayerStatistics:
    """Mean-field statistics of each layer ``l = 1..L`` of a network with per-layer parameters.

    Attributes
    ----------
    q : ndarray, shape (L,)
        Pre-activation variance ``q^l``.
    phi_sq : ndarray, shape (L,)
        ``E[phi_l(h_l)^2]`` (second moment of the layer's output).
    dphi_sq : ndarray, shape (L,)
        ``E[phi_l'(h_l)^2]``.
    dphi_4th : ndarray, shape (L,)
        ``E[phi_l'(h_l)^4]``.
    """

    q: np.ndarray
    phi_sq: np.ndarray
    dphi_sq: np.ndarray
    dphi_4th: np.ndarray


def network_statistics(layer_activations, sigma_w, sigma_b, q0=1.0, fourth=False
                       ) -> LayerStatistics:
    """Propagate the length map through layers with their own activations and scales.

    Parameters
    ----------
    layer_activations : sequence of (str or Activation), length L
    sigma_w, sigma_b : array_like, shape (L,)
        Per-layer weight and bias standard deviations (weights ``N(0, sigma_w[l]^2 / fan_in)``).
    q0 : float
        ``||x||^2 / n_0`` of the input.
    fourth : bool
        Also compute ``E[phi'^4]`` (else NaN).

    Returns
    -------
    LayerStatistics
    """
    resolved = {}  # the same activation name on every layer is resolved once
    acts = []
    for a in layer_activations:
        if isinstance(a, str) and a not in resolved:
            resolved[a] = _resolve(a)
        acts.append(resolved[a] if isinstance(a, str) else _resolve(a))
    sw = np.asarray(sigma_w, dtype=np.float64)
    sb = np.asarray(sigma_b, dtype=np.float64)
    n = len(acts)
    if sw.shape != (n,) or sb.shape != (n,):
        raise ValueError(f"sigma_w and sigma_b need one value per layer ({n}), got shapes "
                         f"{sw.shape} and {sb.shape}")
    if not (np.all(np.isfinite(sw)) and np.all(sw >= 0) and np.all(np.isfinite(sb))
            and np.all(sb >= 0)):
        raise ValueError("sigma_w and sigma_b must be finite and >= 0")
    q0 = check_nonnegative("q0", q0)
    out = np.full((4, n), np.nan)
    prepared = [_prep(a) for a in acts]
    codes = np.array([code for code, _, _ in prepared], dtype=np.int64)
    params = np.array([p for _, p, _ in prepared], dtype=np.float64).reshape(n, 3)
    features = np.concatenate([f for _, _, f in prepared]) if n else np.zeros((0, 2))
    start = np.concatenate([[0], np.cumsum([f.shape[0] for _, _, f in prepared])]).astype(
        np.int64)
    _k.length_map(codes, params, features, start, sw, sb, q0, fourth, Q_MAX, RTOL, _XK, _WK,
                  _WG, out)
    return LayerStatistics(*out)

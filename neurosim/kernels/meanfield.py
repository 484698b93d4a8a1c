"""Gaussian expectations of activation functions by adaptive Gauss-Kronrod quadrature.

Mean-field theory needs integrals such as ``E[phi(x)^2]`` with ``x ~ N(m, s^2)`` and
``E[phi'(u1) phi'(u2)]`` over a correlated Gaussian pair. Gauss-Hermite rules lose their accuracy
when ``phi`` has kinks (relu, hard_tanh, saturating_linear) or varies on a scale much finer than
``s`` (tanh at large variance), so both expectations are computed here in the standard-normal
variable ``z`` on ``[-Z_MAX, Z_MAX]``, on panels graded around the activation's kinks and
transitions, each bisected until its Kronrod and embedded Gauss values differ by less than its
share of ``rtol`` times the integral of the absolute integrand. The Kronrod values are returned,
so the actual error is far below the tolerance wherever the integrand is smooth on each panel.

The integrand is ``x^nd * phi(x)^na * phi'(x)^nb * phi''(x)^nc`` (non-negative integer powers).
The rule's nodes and weights are arguments (computed once by :mod:`neurosim.analysis.meanfield`)
so the kernels stay pure functions.
"""

import math

import numpy as np
from numba import njit

from .activations import d2phi, dphi, phi

Z_MAX = 10.0
"""Integration range in standard deviations; the Gaussian mass beyond it is 1.5e-23."""

INITIAL_PANEL = 2.5
"""Initial panel width (in z) before adaptive refinement."""

MAX_DEPTH = 48
STACK = 4096
MAX_PANELS = 4000
ROUNDOFF = 1e-13
"""A panel is accepted once its Gauss/Kronrod difference is this share of its own |integral|:
below that the difference is floating-point noise (e.g. cancellation in ``m + s z``)."""
_INV_SQRT_2PI = 0.3989422804014327


@njit(cache=True, inline="always")
def _gauss(z):
    return _INV_SQRT_2PI * math.exp(-0.5 * z * z)


@njit(cache=True)
def integrand(code, p0, p1, p2, x, na, nb, nc, nd):
    """``x^nd * phi(x)^na * phi'(x)^nb * phi''(x)^nc`` for one activation (float64)."""
    a = phi(code, x, p0, p1, p2)
    out = 1.0
    if na > 0:
        out *= a**na
    if nb > 0:
        out *= dphi(code, x, a, p0, p1, p2) ** nb
    if nc > 0:
        out *= d2phi(code, x, a, p0, p1, p2) ** nc
    if nd > 0:
        out *= x**nd
    return out


@njit(cache=True, inline="always")
def _put(stack, i, lo, hi, panel, depth):
    """Stores a panel in row i of the refinement stack: its edges, its (Kronrod, Gauss,
    Kronrod of |.|) values and its bisection depth."""
    stack[i, 0] = lo
    stack[i, 1] = hi
    stack[i, 2] = panel[0]
    stack[i, 3] = panel[1]
    stack[i, 4] = panel[2]
    stack[i, 5] = depth


@njit(cache=True)
def _start(stack, n0, rtol):
    """State of the refinement once the ``n0`` initial panels are on the stack: the absolute
    error allowed per unit of z (``rtol`` times the integral of |integrand| spread over the
    integration range), the stack top, the running total and the panel budget."""
    scale = 0.0
    for k in range(n0):
        scale += stack[k, 4]
    return rtol * scale / (2.0 * Z_MAX), n0, 0.0, MAX_PANELS


@njit(cache=True)
def _next_split(stack, top, total, tol, budget):
    """Pops panels off the stack, adding each accepted one's Kronrod value to ``total``, until
    one needs bisection.

    A panel is accepted when its Kronrod and Gauss values differ by less than ``tol`` per unit
    width, or by rounding noise (ROUNDOFF of its |integral|), or when the depth, stack or panel
    budget is spent.

    Returns
    -------
    top, total, budget, lo, mid, hi, depth
        The panel ``[lo, hi]`` to bisect at ``mid`` (its halves go to rows ``top`` and
        ``top + 1``); ``top = -1`` once the stack is empty, ``total`` then being the integral.
    """
    while top > 0:
        top -= 1
        lo = stack[top, 0]
        hi = stack[top, 1]
        depth = stack[top, 5]
        diff = abs(stack[top, 2] - stack[top, 3])
        if (diff <= tol * (hi - lo) or diff <= ROUNDOFF * stack[top, 4] or depth >= MAX_DEPTH
                or top + 2 > STACK or budget <= 0):
            total += stack[top, 2]
            continue
        return top, total, budget - 2, lo, 0.5 * (lo + hi), hi, depth + 1.0
    return -1, total, budget, 0.0, 0.0, 0.0, 0.0


@njit(cache=True)
def _initial_edges(centres, widths):
    """Panel edges on [-Z_MAX, Z_MAX] (all in z units).

    Each feature of the integrand (a kink, or a smooth transition such as tanh around 0) at
    ``centres[i]`` with width ``widths[i]`` gets an edge at its centre and a graded mesh of edges
    at 0.5, 3 and 12 widths on either side, so that no initial panel straddles a feature much
    narrower than itself (two Gauss rules could then agree while both miss it). Panels are then
    split to be no wider than INITIAL_PANEL.
    """
    pts = [-Z_MAX, Z_MAX]
    for i in range(centres.shape[0]):
        ctr = centres[i]
        w = widths[i]
        if -Z_MAX < ctr < Z_MAX:
            pts.append(ctr)
        for grade in (0.5, 3.0, 12.0):
            d = grade * w
            if d > 0.0 and d < INITIAL_PANEL:
                for p in (ctr - d, ctr + d):
                    if -Z_MAX < p < Z_MAX:
                        pts.append(p)
    pts = np.sort(np.array(pts))
    edges = [pts[0]]
    for i in range(pts.shape[0] - 1):
        lo, hi = pts[i], pts[i + 1]
        if hi - lo <= 1e-14:
            continue
        n = int(math.ceil((hi - lo) / INITIAL_PANEL))
        for k in range(1, n + 1):
            edges.append(lo + (hi - lo) * k / n)
    return np.array(edges)


@njit(cache=True, inline="always")
def _rule(vals, h, wk, wg):
    """Kronrod value, embedded Gauss value and Kronrod integral of |.| of a panel of half-width
    ``h`` from the integrand's values at the Kronrod nodes (the Gauss nodes at odd positions)."""
    ik = 0.0
    ig = 0.0
    ak = 0.0
    for k in range(vals.shape[0]):
        v = vals[k]
        ik += wk[k] * v
        ak += wk[k] * abs(v)
        if k % 2 == 1:
            ig += wg[k // 2] * v
    return h * ik, h * ig, h * ak


@njit(cache=True)
def _panel1(code, p0, p1, p2, na, nb, nc, nd, m, s, lo, hi, xk, wk, wg, vals):
    """Integral of the 1-D integrand times the standard normal density over one z panel.

    Returns the Kronrod value, the embedded Gauss value and the Kronrod integral of |integrand|.
    """
    c = 0.5 * (lo + hi)
    h = 0.5 * (hi - lo)
    for k in range(xk.shape[0]):
        z = c + h * xk[k]
        vals[k] = integrand(code, p0, p1, p2, m + s * z, na, nb, nc, nd) * _gauss(z)
    return _rule(vals, h, wk, wg)


@njit(cache=True, nogil=True)
def expect1(code, params, na, nb, nc, nd, m, s, features, rtol, xk, wk, wg):
    """``E[g(x)]`` for ``x ~ N(m, s^2)``, ``g = x^nd phi^na phi'^nb phi''^nc``.

    Parameters
    ----------
    code : int
        Activation code.
    params : ndarray, shape (3,)
        Activation parameters.
    na, nb, nc, nd : int
        Powers of phi, phi', phi'' and x.
    m, s : float
        Mean and standard deviation of x (``s = 0`` gives the average of the one-sided limits
        of g at m, the limit of a vanishing variance).
    features : ndarray, shape (k, 2)
        ``(centre, width)`` in x of each feature of phi: a kink (width 0) or a smooth
        transition (width its scale, e.g. 1 for tanh at 0).
    rtol : float
        Relative tolerance on the panel error estimate.
    xk, wk, wg : ndarray
        Gauss-Kronrod nodes and weights on [-1, 1] (``2n + 1`` of them, the ``n`` Gauss nodes at
        the odd positions) and the weights ``wg`` of the embedded n-point Gauss rule.
    """
    p0, p1, p2 = params[0], params[1], params[2]
    if s == 0.0:
        d = max(abs(m) * 4e-16, 1e-300)
        return 0.5 * (integrand(code, p0, p1, p2, m + d, na, nb, nc, nd)
                      + integrand(code, p0, p1, p2, m - d, na, nb, nc, nd))
    edges = _initial_edges((features[:, 0] - m) / s, features[:, 1] / s)
    stack = np.empty((STACK, 6))
    vals = np.empty(xk.shape[0])
    n0 = edges.shape[0] - 1
    for k in range(n0):
        _put(stack, k, edges[k], edges[k + 1],
             _panel1(code, p0, p1, p2, na, nb, nc, nd, m, s, edges[k], edges[k + 1], xk, wk, wg,
                     vals), 0.0)
    tol, top, total, budget = _start(stack, n0, rtol)
    while True:
        top, total, budget, lo, mid, hi, depth = _next_split(stack, top, total, tol, budget)
        if top < 0:
            return total
        _put(stack, top, lo, mid,
             _panel1(code, p0, p1, p2, na, nb, nc, nd, m, s, lo, mid, xk, wk, wg, vals), depth)
        _put(stack, top + 1, mid, hi,
             _panel1(code, p0, p1, p2, na, nb, nc, nd, m, s, mid, hi, xk, wk, wg, vals), depth)
        top += 2


@njit(cache=True)
def _panel2(code, params, fa, fb, ga, gb, sq1, sq2, c, sc, lo, hi, features, rtol, xk, wk, wg,
            vals):
    """One outer z1 panel of ``E[f(u1) g(u2)]``; the inner z2 integral is :func:`expect1`."""
    p0, p1, p2 = params[0], params[1], params[2]
    ctr = 0.5 * (lo + hi)
    h = 0.5 * (hi - lo)
    for k in range(xk.shape[0]):
        z = ctr + h * xk[k]
        inner = expect1(code, params, ga, gb, 0, 0, sq2 * c * z, sq2 * sc, features, rtol,
                        xk, wk, wg)
        vals[k] = integrand(code, p0, p1, p2, sq1 * z, fa, fb, 0, 0) * inner * _gauss(z)
    return _rule(vals, h, wk, wg)


@njit(cache=True)
def expect2(code, params, fa, fb, ga, gb, q1, q2, c, features, rtol, xk, wk, wg):
    """``E[f(u1) g(u2)]`` over a zero-mean Gaussian pair.

    ``u1 = sqrt(q1) z1``, ``u2 = sqrt(q2) (c z1 + sqrt(1 - c^2) z2)``; ``f = phi^fa phi'^fb`` and
    ``g = phi^ga phi'^gb``. Other arguments as in :func:`expect1`. ``q1, q2 > 0``, ``|c| <= 1``.
    """
    sq1 = math.sqrt(q1)
    sq2 = math.sqrt(q2)
    sc = math.sqrt(max(0.0, 1.0 - c * c))
    # Outer edges: the features of f at x/sqrt(q1); those of g seen through z1 at
    # x/(sqrt(q2) c), widened by the inner Gaussian's smoothing (narrow as c -> 1).
    nf = features.shape[0]
    centres = np.empty(2 * nf)
    widths = np.empty(2 * nf)
    n_out = 0
    for i in range(nf):
        centres[n_out] = features[i, 0] / sq1
        widths[n_out] = features[i, 1] / sq1
        n_out += 1
        if c != 0.0:
            centres[n_out] = features[i, 0] / (sq2 * c)
            widths[n_out] = math.hypot(features[i, 1], sq2 * sc) / (sq2 * abs(c))
            n_out += 1
    edges = _initial_edges(centres[:n_out], widths[:n_out])
    stack = np.empty((STACK, 6))
    vals = np.empty(xk.shape[0])
    n0 = edges.shape[0] - 1
    for k in range(n0):
        _put(stack, k, edges[k], edges[k + 1],
             _panel2(code, params, fa, fb, ga, gb, sq1, sq2, c, sc, edges[k], edges[k + 1],
                     features, rtol, xk, wk, wg, vals), 0.0)
    tol, top, total, budget = _start(stack, n0, rtol)
    while True:
        top, total, budget, lo, mid, hi, depth = _next_split(stack, top, total, tol, budget)
        if top < 0:
            return total
        for lo2, hi2, row in ((lo, mid, top), (mid, hi, top + 1)):
            _put(stack, row, lo2, hi2,
                 _panel2(code, params, fa, fb, ga, gb, sq1, sq2, c, sc, lo2, hi2, features,
                         rtol, xk, wk, wg, vals), depth)
        top += 2


@njit(cache=True, nogil=True)
def length_map(codes, params, features, feature_start, sigma_w, sigma_b, q0, fourth, q_max,
               rtol, xk, wk, wg, out):
    """The length map through layers with their own activations and weight scales, in one
    compiled loop: for layer ``l``, ``q_l = sigma_w[l]^2 E[phi_{l-1}^2] + sigma_b[l]^2`` (with
    ``q0`` before the first layer) and the moments of ``h_l ~ N(0, q_l)``.

    Parameters
    ----------
    codes : ndarray of int64, shape (L,)
        Activation codes.
    params : ndarray, shape (L, 3)
        Activation parameters.
    features, feature_start : ndarray, shapes (K, 2) and (L + 1,)
        Every layer's features (as :func:`expect1`) one after the other; layer ``l``'s are
        rows ``feature_start[l]:feature_start[l + 1]``.
    sigma_w, sigma_b : ndarray, shape (L,)
    q0 : float
    fourth : bool
        Also ``E[phi'^4]``.
    q_max : float
        Stop (leaving the rest of ``out`` as it is) at the first ``q`` above this.
    rtol, xk, wk, wg
        As in :func:`expect1`.
    out : ndarray of float64, shape (4, L)
        Written per layer: ``q``, ``E[phi^2]``, ``E[phi'^2]`` and ``E[phi'^4]`` (when
        ``fourth``).
    """
    prev = q0
    for layer in range(codes.shape[0]):
        q = sigma_w[layer] ** 2 * prev + sigma_b[layer] ** 2
        if q > q_max:
            return
        s = math.sqrt(q)
        out[0, layer] = q
        code = codes[layer]
        p = params[layer]
        f = features[feature_start[layer]:feature_start[layer + 1]]
        out[1, layer] = expect1(code, p, 2, 0, 0, 0, 0.0, s, f, rtol, xk, wk, wg)
        out[2, layer] = expect1(code, p, 0, 2, 0, 0, 0.0, s, f, rtol, xk, wk, wg)
        if fourth:
            out[3, layer] = expect1(code, p, 0, 4, 0, 0, 0.0, s, f, rtol, xk, wk, wg)
        prev = out[1, layer]

"""Lyapunov exponents of a recurrent rate network by the Benettin / QR method.

The state and ``k`` tangent vectors per trial are integrated together with the classical
fourth-order Runge-Kutta scheme in time units of ``tau`` (``s = t / tau``):

- current form: ``dx/ds = -x + J phi(x) + I``, tangent ``dv/ds = -v + J (phi'(x) * v)``;
- rate form: ``dr/ds = -r + phi(J r + I)``, tangent ``dv/ds = -v + phi'(J r + I) * (J v)``.

Runge-Kutta methods commute with linearisation, so the tangent vectors follow the exact
derivative of the discrete map. Every ``renorm_every`` steps each trial's tangent vectors are
re-orthonormalised by a QR factorisation and ``log |R_jj|`` recorded; their time averages are
the exponents. One stage is a single matrix product ``J @ [phi(x) | phi'(x) v]`` over all trials
and tangent vectors (BLAS), the elementwise work one fused pass.
"""

import numpy as np
from numba import njit

from .activations import dphi, phi

FORM_CURRENT = 0
FORM_RATE = 1


@njit(cache=True, error_model="numpy")
def _deriv(code, p0, p1, p2, J, I, S, trials, k, form, Z, G, out):
    """Right-hand side of the joint system; columns: trials' states, then their tangents."""
    n = S.shape[0]
    if form == FORM_CURRENT:
        for i in range(n):
            for t in range(trials):
                x = S[i, t]
                a = phi(code, x, p0, p1, p2)
                Z[i, t] = a
                d = dphi(code, x, a, p0, p1, p2)
                base = trials + t * k
                for j in range(base, base + k):
                    Z[i, j] = d * S[i, j]
    else:
        Z[:, :] = S
    np.dot(J, Z, G)
    if form == FORM_CURRENT:
        for i in range(n):
            for t in range(trials):
                out[i, t] = G[i, t] + I[i, t] - S[i, t]
            for j in range(trials, S.shape[1]):
                out[i, j] = G[i, j] - S[i, j]
    else:
        for i in range(n):
            for t in range(trials):
                u = G[i, t] + I[i, t]
                a = phi(code, u, p0, p1, p2)
                out[i, t] = a - S[i, t]
                d = dphi(code, u, a, p0, p1, p2)
                base = trials + t * k
                for j in range(base, base + k):
                    out[i, j] = d * G[i, j] - S[i, j]


@njit(cache=True, error_model="numpy")
def _shifted(S, a, K, out):
    """``out = S + a K`` (the state of a Runge-Kutta stage)."""
    n, m = S.shape
    for i in range(n):
        for j in range(m):
            out[i, j] = S[i, j] + a * K[i, j]


@njit(cache=True, error_model="numpy")
def benettin(code, params, J, I, S, trials, k, form, h, n_steps, renorm_every, logs):
    """Integrate states and tangent vectors; record the growth at every re-orthonormalisation.

    Parameters
    ----------
    code, params : int, ndarray of shape (3,)
        Activation code and parameters (:mod:`neurosim.kernels.activations`).
    J : ndarray, shape (n, n)
        Couplings, ``J[i, j]`` from neuron j onto neuron i.
    I : ndarray, shape (n, trials)
        Constant input.
    S : ndarray, shape (n, trials * (1 + k))
        Columns ``0..trials-1``: initial states; column ``trials + t k + j``: tangent vector j
        of trial t (orthonormal per trial). Overwritten with the final state.
    trials, k : int
    form : int
        ``FORM_CURRENT`` or ``FORM_RATE``.
    h : float
        Step in units of tau.
    n_steps, renorm_every : int
    logs : ndarray, shape (n_steps // renorm_every, trials, k)
        Written with ``log |R_jj|`` of each re-orthonormalisation.
    """
    n, m = S.shape
    p0, p1, p2 = params[0], params[1], params[2]
    Z = np.empty((n, m))
    G = np.empty((n, m))
    k1 = np.empty((n, m))
    k2 = np.empty((n, m))
    k3 = np.empty((n, m))
    k4 = np.empty((n, m))
    tmp = np.empty((n, m))
    half = 0.5 * h
    sixth = h / 6.0
    record = 0
    for step in range(1, n_steps + 1):
        _deriv(code, p0, p1, p2, J, I, S, trials, k, form, Z, G, k1)
        _shifted(S, half, k1, tmp)
        _deriv(code, p0, p1, p2, J, I, tmp, trials, k, form, Z, G, k2)
        _shifted(S, half, k2, tmp)
        _deriv(code, p0, p1, p2, J, I, tmp, trials, k, form, Z, G, k3)
        _shifted(S, h, k3, tmp)
        _deriv(code, p0, p1, p2, J, I, tmp, trials, k, form, Z, G, k4)
        for i in range(n):
            for j in range(m):
                S[i, j] += sixth * (k1[i, j] + 2.0 * (k2[i, j] + k3[i, j]) + k4[i, j])
        if step % renorm_every == 0:
            for t in range(trials):
                base = trials + t * k
                if k == 1:
                    norm = 0.0
                    for i in range(n):
                        norm += S[i, base] * S[i, base]
                    norm = np.sqrt(norm)
                    logs[record, t, 0] = np.log(norm)
                    for i in range(n):
                        S[i, base] /= norm
                else:
                    q, r = np.linalg.qr(np.ascontiguousarray(S[:, base:base + k]))
                    for j in range(k):
                        logs[record, t, j] = np.log(abs(r[j, j]))
                    S[:, base:base + k] = q
            record += 1

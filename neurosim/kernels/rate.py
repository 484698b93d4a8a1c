"""Rate-network kernels: layered feedforward map, relaxation, time courses, recurrent networks.

Layered networks keep their parameters in one flat buffer: layer ``l`` (0-based) has its weight
matrix ``W_l`` of shape ``(sizes[l], sizes[l+1])`` at ``params[w_off[l]:]`` (C order) and its
bias ``b_l`` at ``params[b_off[l]:]``. Layer states (input currents ``H`` and rates ``R``) live in
flat buffers too: layer ``l`` occupies ``batch * sizes[l+1]`` entries starting at
``batch * (sizes[1] + ... + sizes[l])``, viewed as a C-ordered ``(batch, sizes[l+1])`` matrix.

Dynamics of layer ``l`` (``r_0 = X`` clamped)::

    tau dr_l/dt = -r_l + F(h_l),   h_l = r_{l-1} W_l + b_l + feedback * r_{l+1} W_{l+1}^T + I_l

Both integrators are the update ``r <- r + a (F(h) - r)``: forward Euler has ``a = dt / tau``,
exponential Euler ``a = 1 - exp(-dt / tau)`` (exact for constant ``h``). With ``0 < a <= 1`` every
new rate is a convex combination of the old rate and ``F(h)``, so rates never leave the range of
``F``. All currents ``h`` of a step are computed from the rates at the start of the step.

With ``feedback = 1`` the network is the layered energy-based (continuous Hopfield) network of
equilibrium propagation: symmetric couplings make ``E(r) = sum_i int^{r_i} F^{-1} - sum_l r_{l-1}
W_l r_l - sum_l b_l r_l`` a Lyapunov function of the dynamics. A nudge ``beta`` adds
``beta * (y - r_L)`` to the output currents (the gradient of ``-beta/2 ||r_L - y||^2``).

Every kernel keeps the floating type of its arrays (float32 or float64). The logistic transfer
function runs through an exp written as plain arithmetic so that LLVM vectorises it (libm's exp
is a scalar call), accurate to about one ulp; the other transfer functions use the scalar
kernels of :mod:`neurosim.kernels.activations`. Matrix products go to BLAS through ``np.dot``;
the elementwise work around them is fused into as few passes as possible.
"""

import numpy as np
from numba import njit

from .activations import LOGISTIC, dphi, phi
from .fastexp import exp64
from .scalar import like

NOISE_NONE = 0
NOISE_WHITE = 1
NOISE_OU = 2

FORM_CURRENT = 0
FORM_RATE = 1


@njit(cache=True, inline="always")
def _mat(buf, off, rows, cols):
    return buf[off:off + rows * cols].reshape((rows, cols))


@njit(cache=True, inline="always")
def _vec(buf, off, n):
    return buf[off:off + n]


# The exp loops are throughput-bound, so they allow fused multiply-adds (one rounding instead of
# two; nothing is reassociated, which keeps the error analysis of exp64 valid).
_FMA = {"contract"}


@njit(cache=True, error_model="numpy", fastmath=_FMA)
def exp_values(x, out):
    """``out = exp(x)`` over float64 1-D arrays with :func:`exp64` (for tests and callers that
    want the vectorised exp on its own)."""
    for i in range(x.shape[0]):
        out[i] = exp64(x[i])


@njit(cache=True, inline="always", error_model="numpy", fastmath=_FMA)
def _logistic(x, p0, p1, p2):
    """``p0 / (1 + exp(-p1 (x - p2)))`` in float64, through :func:`exp64`."""
    return p0 / (1.0 + exp64(np.float64(-p1 * (x - p2))))


@njit(cache=True, error_model="numpy", fastmath=_FMA)
def _relax_flat(code, p0, p1, p2, h, c, r, a):
    """``r += a * (F(h + c) - r)`` over 1-D arrays in one fused pass (``h`` unchanged)."""
    n = h.shape[0]
    if code == LOGISTIC:
        # Two independent halves per iteration: more independent work between the long
        # dependency chains of the exp (5-15 % faster than one stream on Zen 3).
        half = n // 2
        for i in range(half):
            j = i + half
            fi = _logistic(h[i] + c[i], p0, p1, p2)
            fj = _logistic(h[j] + c[j], p0, p1, p2)
            ri = r[i]
            rj = r[j]
            r[i] = ri + a * (fi - ri)
            r[j] = rj + a * (fj - rj)
        for i in range(2 * half, n):
            ri = r[i]
            r[i] = ri + a * (_logistic(h[i] + c[i], p0, p1, p2) - ri)
    else:
        for i in range(n):
            ri = r[i]
            r[i] = ri + a * (phi(code, h[i] + c[i], p0, p1, p2) - ri)


@njit(cache=True, error_model="numpy", fastmath=_FMA)
def transfer(code, p0, p1, p2, x, out):
    """``out = F(x)`` over 1-D arrays (``out`` may be ``x``).

    The logistic runs through the vectorised :func:`exp64`; other transfer functions call the
    scalar kernels.
    """
    n = x.shape[0]
    if code == LOGISTIC:
        for i in range(n):
            out[i] = _logistic(x[i], p0, p1, p2)
    else:
        for i in range(n):
            out[i] = phi(code, x[i], p0, p1, p2)


@njit(cache=True, error_model="numpy")
def relax_rows(code, p0, p1, p2, Hl, b, Rl, a):
    """``Rl += a * (F(Hl + b) - Rl)`` row by row, ``b`` broadcast over rows, in one fused pass.
    ``Hl`` is left unchanged."""
    for i in range(Hl.shape[0]):
        _relax_flat(code, p0, p1, p2, Hl[i], b, Rl[i], a)


@njit(cache=True)
def state_offsets(sizes, batch):
    """Start of each layer's ``(batch, n_l)`` block in a flat state buffer, shape (L + 1,)."""
    L = sizes.shape[0] - 1
    off = np.zeros(L + 1, dtype=np.int64)
    for l in range(L):
        off[l + 1] = off[l] + batch * sizes[l + 1]
    return off


@njit(cache=True, inline="always")
def presynaptic(X, R, so, sizes, l):
    """Rates feeding layer ``l``: ``X`` for the first layer, else layer ``l - 1``'s block of
    the flat state ``R`` (``so``: :func:`state_offsets`)."""
    if l == 0:
        return X
    return _mat(R, so[l - 1], X.shape[0], sizes[l])


@njit(cache=True)
def _drive(params, w_off, b_off, sizes, so, l, X, R, Hl, with_bias):
    """``Hl = r_{l-1} W_l``, plus ``b_l`` when ``with_bias`` (``r_0 = X``)."""
    np.dot(presynaptic(X, R, so, sizes, l), _mat(params, w_off[l], sizes[l], sizes[l + 1]), Hl)
    if with_bias:
        b = _vec(params, b_off[l], sizes[l + 1])
        for i in range(Hl.shape[0]):
            for j in range(Hl.shape[1]):
                Hl[i, j] += b[j]


@njit(cache=True)
def forward(code, ap, params, w_off, b_off, sizes, X, Xi, H, R):
    """Feedforward pass ``r_l = F(r_{l-1} W_l + b_l + xi_l)`` through every layer.

    Parameters
    ----------
    code : int
        Activation code.
    ap : ndarray, shape (3,)
        Activation parameters.
    params : ndarray, shape (n_params,)
        Flat parameter buffer.
    w_off, b_off, sizes : ndarray of int64
        Weight and bias offsets (L,) and layer sizes (L + 1,).
    X : ndarray, shape (batch, sizes[0])
        Input rates (C order).
    Xi : ndarray, shape (batch * sum(sizes[1:]),) or (0,)
        Current noise ``xi`` added to every layer (flat, like ``H``); empty for none.
    H, R : ndarray, shape (batch * sum(sizes[1:]),)
        Written with the input currents and rates of every layer.
    """
    L = sizes.shape[0] - 1
    p0, p1, p2 = ap[0], ap[1], ap[2]
    so = state_offsets(sizes, X.shape[0])
    for l in range(L):
        _drive(params, w_off, b_off, sizes, so, l, X, R,
               _mat(H, so[l], X.shape[0], sizes[l + 1]), True)
        h = H[so[l]:so[l + 1]]
        if Xi.shape[0] > 0:
            h += Xi[so[l]:so[l + 1]]
        transfer(code, p0, p1, p2, h, R[so[l]:so[l + 1]])


@njit(cache=True)
def feedforward(code, ap, params, w_off, b_off, sizes, X, H, R):
    """Fixed point of the feedforward layered network: ``r_l = F(r_{l-1} W_l + b_l)``.

    Arguments as in :func:`forward` (without the noise).
    """
    forward(code, ap, params, w_off, b_off, sizes, X, H[:0], H, R)


@njit(cache=True)
def _currents(params, w_off, b_off, sizes, X, R, H, T, feedback, Y, beta):
    """Input currents of every layer from the rates ``R`` (all layers at the same time)."""
    L = sizes.shape[0] - 1
    batch = X.shape[0]
    so = state_offsets(sizes, batch)
    for l in range(L):
        n_out = sizes[l + 1]
        Hl = _mat(H, so[l], batch, n_out)
        _drive(params, w_off, b_off, sizes, so, l, X, R, Hl, True)
        if feedback != 0 and l < L - 1:
            n_up = sizes[l + 2]
            Wu = _mat(params, w_off[l + 1], n_out, n_up)
            Tl = _mat(T, 0, batch, n_out)
            np.dot(_mat(R, so[l + 1], batch, n_up), Wu.T, Tl)
            for i in range(batch):
                for j in range(n_out):
                    Hl[i, j] += feedback * Tl[i, j]
        if beta != 0 and l == L - 1:
            Rl = _mat(R, so[l], batch, n_out)
            for i in range(batch):
                for j in range(n_out):
                    Hl[i, j] += beta * (Y[i, j] - Rl[i, j])


@njit(cache=True)
def relax(code, ap, params, w_off, b_off, sizes, X, R, H, T, a, feedback, Y, beta, tol,
          max_steps):
    """Relax the deterministic layered dynamics until ``max |F(h) - r| < tol``.

    Parameters
    ----------
    code, ap, params, w_off, b_off, sizes, X
        As in :func:`feedforward`.
    R : ndarray, shape (batch * sum(sizes[1:]),)
        Initial rates; overwritten with the final rates.
    H : ndarray, same shape as ``R``
        Workspace (left holding ``F(h)`` of the final state).
    T : ndarray, shape (batch * max(sizes[1:]),)
        Workspace for the feedback product.
    a : float
        Integration coefficient (``dt/tau`` for Euler, ``1 - exp(-dt/tau)`` exponential).
    feedback : float
        0 for the feedforward network, 1 for symmetric feedback (energy-based network).
    Y : ndarray, shape (batch, sizes[-1])
        Nudge targets (ignored when ``beta == 0``).
    beta : float
        Nudge strength.
    tol : float
        Convergence threshold on the largest ``|F(h) - r|`` (rate units).
    max_steps : int
        Most integration steps.

    Returns
    -------
    steps : int
        Integration steps applied.
    residual : float
        ``max |F(h) - r|`` of the returned state (``tau`` times its largest ``|dr/dt|``).
    """
    p0, p1, p2 = ap[0], ap[1], ap[2]
    n = R.shape[0]
    residual = like(R, np.inf)
    for step in range(max_steps + 1):
        _currents(params, w_off, b_off, sizes, X, R, H, T, feedback, Y, beta)
        transfer(code, p0, p1, p2, H, H)
        residual = like(R, 0.0)
        for k in range(n):
            residual = max(residual, abs(H[k] - R[k]))
        if residual < tol or step == max_steps:
            return step, residual
        for k in range(n):
            R[k] += a * (H[k] - R[k])
    return max_steps, residual


@njit(cache=True)
def _add_noise(Hl, Zl, kind, scale, decay, rng):
    rows, cols = Hl.shape
    if kind == NOISE_WHITE:
        for i in range(rows):
            for j in range(cols):
                Hl[i, j] += scale * rng.standard_normal()
    elif kind == NOISE_OU:
        for i in range(rows):
            for j in range(cols):
                z = decay * Zl[i, j] + scale * rng.standard_normal()
                Zl[i, j] = z
                Hl[i, j] += z


@njit(cache=True)
def simulate(code, ap, params, w_off, b_off, sizes, X, R, H, T, Z, a, feedback, steps,
             record_every, noise_kind, noise_scale, noise_decay, rng, trace):
    """Integrate the layered dynamics for ``steps`` steps and record the rates.

    Parameters
    ----------
    code, ap, params, w_off, b_off, sizes, X, R, H, T, a, feedback
        As in :func:`relax` (``R`` holds the initial rates and is left at the final ones).
    Z : ndarray, same shape as ``R``
        Ornstein-Uhlenbeck noise state (initialised by the caller; unused otherwise).
    steps, record_every : int
        Number of steps; record every ``record_every`` steps (the initial state included).
    noise_kind : int
        ``NOISE_NONE``, ``NOISE_WHITE`` or ``NOISE_OU``.
    noise_scale, noise_decay : float
        Per-step noise standard deviation and OU decay factor ``exp(-dt/noise_tau)``.
    rng : numpy.random.Generator
        Source of the noise.
    trace : ndarray, shape (steps // record_every + 1, R.size)
        Written with the flat state at steps ``0, record_every, 2 record_every, ...``.
    """
    L = sizes.shape[0] - 1
    batch = X.shape[0]
    p0, p1, p2 = ap[0], ap[1], ap[2]
    so = state_offsets(sizes, batch)
    n = R.shape[0]
    trace[0, :] = R
    k = 1
    for step in range(1, steps + 1):
        if feedback == 0:
            # Top-down, so that layer l still reads the old rates of layer l - 1.
            for l in range(L - 1, -1, -1):
                n_out = sizes[l + 1]
                Hl = _mat(H, so[l], batch, n_out)
                _drive(params, w_off, b_off, sizes, so, l, X, R, Hl, False)
                if noise_kind != NOISE_NONE:
                    _add_noise(Hl, _mat(Z, so[l], batch, n_out), noise_kind, noise_scale,
                               noise_decay, rng)
                relax_rows(code, p0, p1, p2, Hl, _vec(params, b_off[l], n_out),
                           _mat(R, so[l], batch, n_out), a)
        else:
            _currents(params, w_off, b_off, sizes, X, R, H, T, feedback, X, like(a, 0.0))
            if noise_kind != NOISE_NONE:
                for l in range(L):
                    n_out = sizes[l + 1]
                    _add_noise(_mat(H, so[l], batch, n_out), _mat(Z, so[l], batch, n_out),
                               noise_kind, noise_scale, noise_decay, rng)
            transfer(code, p0, p1, p2, H, H)
            for m in range(n):
                R[m] += a * (H[m] - R[m])
        if step % record_every == 0:
            trace[k, :] = R
            k += 1


@njit(cache=True)
def recurrent_simulate(code, ap, J, I, V, a, form, steps, record_every, noise_kind, noise_scale,
                       noise_decay, Z, rng, trace):
    """Integrate a fully connected rate network for a batch of trials.

    ``form == FORM_CURRENT``: ``tau dx/dt = -x + J F(x) + I`` (Sompolinsky, Crisanti & Sommers);
    ``form == FORM_RATE``: ``tau dr/dt = -r + F(J r + I)``. ``J[i, j]`` is the weight from neuron
    ``j`` onto neuron ``i``.

    Parameters
    ----------
    code, ap
        Activation code and parameters, as in :func:`forward`.
    J : ndarray, shape (n, n)
        Coupling matrix (C order).
    I : ndarray, shape (batch, n)
        Constant external input.
    V : ndarray, shape (batch, n)
        Initial state (currents or rates); overwritten with the final state.
    a : float
        Integration coefficient.
    form : int
        ``FORM_CURRENT`` or ``FORM_RATE``.
    steps, record_every : int
        Number of steps and recording interval (the initial state is recorded too).
    noise_kind, noise_scale, noise_decay, rng
        Input noise, as in :func:`simulate`.
    Z : ndarray, shape (batch, n)
        OU noise state.
    trace : ndarray, shape (steps // record_every + 1, batch, n)
        Written with the recorded states.
    """
    batch, n = V.shape
    p0, p1, p2 = ap[0], ap[1], ap[2]
    trace[0] = V
    k = 1
    N = np.zeros_like(V)
    S = np.empty_like(V)
    H = np.empty_like(V)
    v = V.reshape(batch * n)
    s = S.reshape(batch * n)
    h = H.reshape(batch * n)
    Iv = I.reshape(batch * n)
    Nv = N.reshape(batch * n)
    # A plain (not transposed) GEMM operand runs a bit faster; one trial needs no copy (at large
    # n the O(n^2) transpose would cost as much as tens of matrix-vector steps).
    JT = np.ascontiguousarray(J.T) if batch > 1 else J[:0]
    for step in range(1, steps + 1):
        if noise_kind != NOISE_NONE:
            N[:, :] = 0
            _add_noise(N, Z, noise_kind, noise_scale, noise_decay, rng)
        # One trial is a BLAS matrix-vector product, several a matrix-matrix product; the
        # elementwise work around it is one or two fused passes.
        if form == FORM_CURRENT:
            transfer(code, p0, p1, p2, v, s)
            if batch == 1:
                np.dot(J, S[0], H[0])
            else:
                np.dot(S, JT, H)
            for m in range(batch * n):
                v[m] += a * (h[m] + Iv[m] + Nv[m] - v[m])
        else:
            if batch == 1:
                np.dot(J, V[0], H[0])
            else:
                np.dot(V, JT, H)
            if noise_kind != NOISE_NONE:
                for m in range(batch * n):
                    h[m] += Nv[m]
            _relax_flat(code, p0, p1, p2, h, Iv, v, a)
        if step % record_every == 0:
            trace[k] = V
            k += 1


@njit(cache=True)
def layer_derivatives(code, ap, H, R, D):
    """``D = F'(H)`` elementwise over flat buffers (``R = F(H)``)."""
    p0, p1, p2 = ap[0], ap[1], ap[2]
    for k in range(H.shape[0]):
        D[k] = dphi(code, H[k], R[k], p0, p1, p2)

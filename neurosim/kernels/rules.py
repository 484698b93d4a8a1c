"""Learning-rule kernels for layered rate networks.

Buffers follow :mod:`neurosim.kernels.rate`: one flat parameter buffer with weight offsets
``w_off`` and bias offsets ``b_off``, and flat per-layer state buffers of ``(batch, n_l)`` blocks.
Gradient-like buffers (``grads``, ``U``) have the layout of the parameter buffer. Every update
direction is written with the sign of a gradient: the weights move by ``-lr * U``.
"""

import numpy as np
from numba import njit

from .activations import dphi, phi
from .losses import MSE
from .rate import _currents, _mat, _vec, forward, presynaptic, state_offsets
from .scalar import like

BACKPROP = 0
FEEDBACK_ALIGNMENT = 1
DIRECT_FEEDBACK_ALIGNMENT = 2

HEBBIAN = 0
OJA = 1
BCM = 2


@njit(cache=True)
def per_sample_loss(loss_code, out, Y, losses):
    """Loss of every sample (not averaged): ``0.5 ||out - y||^2`` or softmax cross entropy.

    Parameters
    ----------
    loss_code : int
        ``MSE`` or ``CROSS_ENTROPY`` (from :mod:`neurosim.kernels.losses`).
    out, Y : ndarray, shape (batch, n_out)
    losses : ndarray, shape (batch,)
        Written with the per-sample losses.
    """
    batch, n_out = out.shape
    half = like(out, 0.5)
    for i in range(batch):
        total = like(out, 0.0)
        if loss_code == MSE:
            for j in range(n_out):
                e = out[i, j] - Y[i, j]
                total += half * e * e
        else:
            zmax = out[i, 0]
            for j in range(1, n_out):
                zmax = max(zmax, out[i, j])
            s = like(out, 0.0)
            for j in range(n_out):
                s += np.exp(out[i, j] - zmax)
            log_norm = zmax + np.log(s)
            for j in range(n_out):
                total += Y[i, j] * (log_norm - out[i, j])
        losses[i] = total


@njit(cache=True)
def backward(code, ap, params, w_off, b_off, sizes, M, m_off, mode, X, H, R, E, delta, grads):
    """Error signals and weight-gradient estimates of a feedforward layered rate network.

    ``delta_L = E * F'(h_L)``. Hidden layers get ``delta_l = F'(h_l) * (delta_{l+1} M_{l+1}^T)``
    with ``M = W`` (``BACKPROP``, the exact gradient) or fixed random ``M = B`` of the same shape
    (``FEEDBACK_ALIGNMENT``), or ``delta_l = F'(h_l) * (delta_L B_l)`` with ``B_l`` of shape
    ``(n_L, n_l)`` (``DIRECT_FEEDBACK_ALIGNMENT``). Then ``dW_l = r_{l-1}^T delta_l`` and
    ``db_l = sum_batch delta_l``.

    Parameters
    ----------
    code, ap, params, w_off, b_off, sizes
        Activation and network, as in :func:`neurosim.kernels.rate.feedforward`.
    M : ndarray
        Flat feedback buffer (ignored for ``BACKPROP``).
    m_off : ndarray of int64, shape (L,)
        Offset of each layer's feedback matrix in ``M``.
    mode : int
        ``BACKPROP``, ``FEEDBACK_ALIGNMENT`` or ``DIRECT_FEEDBACK_ALIGNMENT``.
    X : ndarray, shape (batch, sizes[0])
    H, R : ndarray
        Flat currents and rates from the forward pass.
    E : ndarray, shape (batch, sizes[-1])
        dL/dr_L (the loss gradient with respect to the output rates).
    delta : ndarray, same shape as ``H``
        Written with the error signal of every layer.
    grads : ndarray, same shape as ``params``
        Written with the weight and bias gradient (estimates).
    """
    L = sizes.shape[0] - 1
    batch = X.shape[0]
    p0, p1, p2 = ap[0], ap[1], ap[2]
    so = state_offsets(sizes, batch)
    n_L = sizes[L]
    dL = _mat(delta, so[L - 1], batch, n_L)
    HL = _mat(H, so[L - 1], batch, n_L)
    RL = _mat(R, so[L - 1], batch, n_L)
    for i in range(batch):
        for j in range(n_L):
            dL[i, j] = E[i, j] * dphi(code, HL[i, j], RL[i, j], p0, p1, p2)
    for l in range(L - 2, -1, -1):
        n = sizes[l + 1]
        dl = _mat(delta, so[l], batch, n)
        if mode == DIRECT_FEEDBACK_ALIGNMENT:
            np.dot(dL, _mat(M, m_off[l], n_L, n), dl)
        else:
            n_up = sizes[l + 2]
            if mode == BACKPROP:
                Mu = _mat(params, w_off[l + 1], n, n_up)
            else:
                Mu = _mat(M, m_off[l + 1], n, n_up)
            np.dot(_mat(delta, so[l + 1], batch, n_up), Mu.T, dl)
        Hl = _mat(H, so[l], batch, n)
        Rl = _mat(R, so[l], batch, n)
        for i in range(batch):
            for j in range(n):
                dl[i, j] *= dphi(code, Hl[i, j], Rl[i, j], p0, p1, p2)
    layer_grads(params, w_off, b_off, sizes, X, R, delta, grads)


@njit(cache=True, inline="always")
def _column_sums(A, scale, out):
    """``out[j] = scale * sum_i A[i, j]``."""
    out[:] = 0
    for i in range(A.shape[0]):
        for j in range(A.shape[1]):
            out[j] += A[i, j]
    for j in range(A.shape[1]):
        out[j] *= scale


@njit(cache=True)
def layer_grads(params, w_off, b_off, sizes, X, R, delta, grads):
    """``grads_W_l = r_{l-1}^T delta_l`` and ``grads_b_l = sum_batch delta_l`` for every layer."""
    L = sizes.shape[0] - 1
    batch = X.shape[0]
    so = state_offsets(sizes, batch)
    for l in range(L):
        n_in, n_out = sizes[l], sizes[l + 1]
        dl = _mat(delta, so[l], batch, n_out)
        np.dot(presynaptic(X, R, so, sizes, l).T, dl, _mat(grads, w_off[l], n_in, n_out))
        _column_sums(dl, like(dl, 1.0), _vec(grads, b_off[l], n_out))


@njit(cache=True)
def currents_and_slopes(code, ap, params, w_off, b_off, sizes, X, R, H, T, feedback, D):
    """Input currents ``H`` of the state ``R`` and the slopes ``D = F'(H)`` (flat buffers)."""
    p0, p1, p2 = ap[0], ap[1], ap[2]
    _currents(params, w_off, b_off, sizes, X, R, H, T, feedback, X, like(H, 0.0))
    for k in range(H.shape[0]):
        D[k] = dphi(code, H[k], phi(code, H[k], p0, p1, p2), p0, p1, p2)


@njit(cache=True)
def adjoint_relax(params, w_off, sizes, batch, D, G, Lam, T, a, feedback, tol, max_steps):
    """Solve the adjoint of a network's fixed point by relaxing its linearised dynamics.

    At a fixed point ``r = F(h(r))`` of the layered network with coupling ``feedback`` (0 or 1),
    the loss gradient with respect to the layer currents, ``lam = dL/db``, solves
    ``lam = D * (g + lam C)`` with ``C`` the rate-to-current coupling (``W_{l+1}^T`` from the
    layer above and, with feedback, ``W_l`` from the layer below) and ``g = dL/dr``. It is
    relaxed by ``lam <- lam + a (D * (g + lam C) - lam)``, the network's own linearised dynamics,
    which converge whenever the fixed point is stable.

    Parameters
    ----------
    params, w_off, sizes
        Network.
    batch : int
    D : ndarray
        Flat slopes ``F'(h)`` at the fixed point.
    G : ndarray
        Flat ``dL/dr`` (zero except in the output layer for a loss on the output).
    Lam : ndarray
        Initial guess; overwritten with the solution.
    T : ndarray
        Flat workspace, same size as ``Lam``.
    a, feedback, tol, max_steps
        Step, coupling, convergence threshold on ``max |update|`` and the most steps.

    Returns
    -------
    steps : int
    residual : float
        ``max |D * (g + lam C) - lam|`` of the returned solution.
    """
    L = sizes.shape[0] - 1
    so = state_offsets(sizes, batch)
    n = Lam.shape[0]
    residual = like(Lam, np.inf)
    for step in range(max_steps + 1):
        for l in range(L):
            n_l = sizes[l + 1]
            Tl = _mat(T, so[l], batch, n_l)
            Tl[:, :] = 0
            if l < L - 1:
                n_up = sizes[l + 2]
                Wu = _mat(params, w_off[l + 1], n_l, n_up)
                np.dot(_mat(Lam, so[l + 1], batch, n_up), Wu.T, Tl)
            if feedback != 0 and l > 0:
                n_dn = sizes[l]
                Wl = _mat(params, w_off[l], n_dn, n_l)
                Tl += feedback * np.dot(_mat(Lam, so[l - 1], batch, n_dn), Wl)
        residual = like(Lam, 0.0)
        for k in range(n):
            target = D[k] * (G[k] + T[k])
            T[k] = target - Lam[k]
            residual = max(residual, abs(T[k]))
        if residual < tol or step == max_steps:
            return step, residual
        for k in range(n):
            Lam[k] += a * T[k]
    return max_steps, residual


@njit(cache=True)
def adjoint_grads(params, w_off, b_off, sizes, X, R, Lam, feedback, grads):
    """Gradient from an adjoint: ``dW_l = r_{l-1}^T lam_l + feedback * lam_{l-1}^T r_l``."""
    layer_grads(params, w_off, b_off, sizes, X, R, Lam, grads)
    if feedback == 0:
        return
    L = sizes.shape[0] - 1
    batch = X.shape[0]
    so = state_offsets(sizes, batch)
    for l in range(1, L):
        n_in, n_out = sizes[l], sizes[l + 1]
        G = _mat(grads, w_off[l], n_in, n_out)
        G += feedback * np.dot(_mat(Lam, so[l - 1], batch, n_in).T,
                               _mat(R, so[l], batch, n_out))


@njit(cache=True)
def coactivation_difference(params, w_off, b_off, sizes, X, Ra, Rb, scale, U):
    """Contrastive update ``U_l = -scale * (r_{l-1}^a T r_l^a - r_{l-1}^b T r_l^b)``.

    With ``Ra`` the nudged and ``Rb`` the free fixed point and ``scale = 1 / (beta * batch)``
    this is equilibrium propagation's estimate of the gradient (biases:
    ``-scale * sum_batch (r_l^a - r_l^b)``).
    """
    L = sizes.shape[0] - 1
    batch = X.shape[0]
    so = state_offsets(sizes, batch)
    for l in range(L):
        n_in, n_out = sizes[l], sizes[l + 1]
        Ua = _mat(U, w_off[l], n_in, n_out)
        ra = _mat(Ra, so[l], batch, n_out)
        rb = _mat(Rb, so[l], batch, n_out)
        # pa^T ra - pb^T rb = pa^T (ra - rb) + (pa - pb)^T rb: no cancellation for small beta.
        d = ra - rb
        pa = presynaptic(X, Ra, so, sizes, l)
        np.dot(pa.T, d, Ua)
        if l > 0:
            Ua += np.dot((pa - presynaptic(X, Rb, so, sizes, l)).T, rb)
        Ua *= -scale
        _column_sums(d, -scale, _vec(U, b_off[l], n_out))


@njit(cache=True)
def local_update(kind, W, pre, post, theta, U):
    """Unsupervised update direction of one layer (gradient sign: weights move by ``-lr U``).

    ``HEBBIAN``: ``dW = <x y^T>``; ``OJA``: ``dW_ij = <y_j (x_i - W_ij y_j)>``; ``BCM``:
    ``dW_ij = <x_i y_j (y_j - theta_j)>``, with ``<.>`` the batch mean and ``U = -dW``.

    Parameters
    ----------
    kind : int
        ``HEBBIAN``, ``OJA`` or ``BCM``.
    W : ndarray, shape (n_in, n_out)
    pre : ndarray, shape (batch, n_in)
        Presynaptic rates ``x``.
    post : ndarray, shape (batch, n_out)
        Postsynaptic rates ``y``.
    theta : ndarray, shape (n_out,)
        BCM thresholds (ignored otherwise).
    U : ndarray, shape (n_in, n_out)
        Written with the update direction.
    """
    batch, n_out = post.shape
    n_in = pre.shape[1]
    inv = like(W, 1.0 / batch)
    if kind == BCM:
        P = np.empty_like(post)
        for i in range(batch):
            for j in range(n_out):
                y = post[i, j]
                P[i, j] = y * (y - theta[j])
        np.dot(pre.T, P, U)
    else:
        np.dot(pre.T, post, U)
    for i in range(n_in):
        for j in range(n_out):
            U[i, j] *= -inv
    if kind == OJA:
        for j in range(n_out):
            y2 = like(W, 0.0)
            for i in range(batch):
                y2 += post[i, j] * post[i, j]
            y2 *= inv
            for i in range(n_in):
                U[i, j] += W[i, j] * y2


@njit(cache=True)
def bounded_weight(w, v, lr, low, high, soft):
    """``w - lr * v`` kept in ``[low, high]``; with ``soft``, a potentiation is scaled by
    ``(high - w) / (high - low)`` and a depression by ``(w - low) / (high - low)`` first.
    One scalar kernel for the CPU loop and the CUDA twin."""
    zero = like(w, 0.0)
    step = -lr * v
    span = high - low
    if soft and span > zero:
        if step > zero:
            step *= (high - w) / span
        else:
            step *= (w - low) / span
    return min(max(w + step, low), high)


@njit(cache=True)
def apply_update(params, U, vel, momentum, lr_w, lr_b, w_off, b_off, sizes, lo, hi, soft,
                 update_biases):
    """Move the parameters by ``-lr * v`` with ``v = momentum * v + U``, inside the bounds.

    Weight ``W_l[i, j]`` of presynaptic neuron ``i`` lives in ``[lo_l[i], hi_l[i]]`` (the
    synapse bounds intersected with the neuron's Dale sign). Hard bounds clip; soft bounds scale
    a potentiation by ``(hi - w) / (hi - lo)`` and a depression by ``(w - lo) / (hi - lo)``, and
    then clip (which only acts on steps larger than the whole range).

    Parameters
    ----------
    params, U, vel : ndarray
        Flat parameters (updated in place), update direction and velocity (updated in place).
    momentum : float
    lr_w, lr_b : ndarray, shape (L,)
        Per-layer learning rates of weights and biases.
    w_off, b_off, sizes : ndarray of int64
    lo, hi : ndarray, shape (sum(sizes[:-1]),)
        Per-presynaptic-neuron weight bounds, layer after layer.
    soft : bool
    update_biases : bool
    """
    L = sizes.shape[0] - 1
    pre = 0
    for l in range(L):
        n_in, n_out = sizes[l], sizes[l + 1]
        W = _mat(params, w_off[l], n_in, n_out)
        Uw = _mat(U, w_off[l], n_in, n_out)
        Vw = _mat(vel, w_off[l], n_in, n_out)
        lr = lr_w[l]
        for i in range(n_in):
            low = lo[pre + i]
            high = hi[pre + i]
            for j in range(n_out):
                v = momentum * Vw[i, j] + Uw[i, j]
                Vw[i, j] = v
                W[i, j] = bounded_weight(W[i, j], v, lr, low, high, soft)
        pre += n_in
        if update_biases:
            b = _vec(params, b_off[l], n_out)
            ub = _vec(U, b_off[l], n_out)
            vb = _vec(vel, b_off[l], n_out)
            for j in range(n_out):
                v = momentum * vb[j] + ub[j]
                vb[j] = v
                b[j] -= lr_b[l] * v


@njit(cache=True)
def perturbed_forward(code, ap, params, w_off, b_off, sizes, X, Xi, H, R):
    """Feedforward pass with noise ``Xi`` (flat, like ``H``) added to every layer's current."""
    forward(code, ap, params, w_off, b_off, sizes, X, Xi, H, R)

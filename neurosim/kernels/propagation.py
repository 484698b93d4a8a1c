"""Per-layer norms of the backpropagated signal of an MLP, without forming weight gradients.

:func:`backward_norms` runs the backward pass of :func:`neurosim.kernels.dense.mlp_backward` on
the workspaces of :func:`neurosim.kernels.dense.mlp_forward` but keeps only what a propagation
profile needs: ``||dL/dW_l||_F^2``, ``||dL/db_l||^2``, the batch mean of ``||delta_l||`` and of
``||delta_l||^2``, and the mean of ``phi'(h_l)^2``. The weight-gradient norm comes from the
identity ``||A^T E||_F^2 = sum((A A^T) * (E E^T))`` when the two ``nb x nb`` Gram matrices are
cheaper than the ``n_in x n`` product (``nb (n_in + n) < n_in n``, e.g. batch 64 and width 256),
so a layer costs the forward product, the product that carries the error down, and two small
Gram products.
"""

import numpy as np
from numba import njit

from .activations import dphi
from .dense import (
    ACT,
    BN_OFF,
    BN_STAT_OFF,
    DROPOUT,
    FASTMATH,
    N_IN,
    N_OUT,
    SKIP,
    _act_params,
    batchnorm_backward,
    block,
    has_separate_outputs,
    vector,
    weight,
)


@njit(cache=True, error_model="numpy", fastmath=FASTMATH)
def _delta_and_stats(g, mask, use_mask, h, u, code, p0, p1, p2, delta, out, l):
    """``delta = g * mask * phi'(h)``; adds the layer's row-norm and phi'^2 statistics to out."""
    nb, n = h.shape
    norm_sum = 0.0
    sq_sum = 0.0
    d2_sum = 0.0
    for i in range(nb):
        row = 0.0
        for j in range(n):
            d = dphi(code, h[i, j], u[i, j], p0, p1, p2)
            gij = g[i, j] * mask[i, j] if use_mask else g[i, j]
            v = gij * d
            delta[i, j] = v
            row += np.float64(v) * np.float64(v)
            d2_sum += np.float64(d) * np.float64(d)
        norm_sum += np.sqrt(row)
        sq_sum += row
    out[2, l] = norm_sum / nb
    out[3, l] = sq_sum / nb
    out[4, l] = d2_sum / (nb * n)


@njit(cache=True, error_model="numpy", fastmath=FASTMATH)
def _frobenius_sq_of_product(a, e, ga, ge, scratch):
    """``||a^T e||_F^2`` for ``a`` (nb, n_in), ``e`` (nb, n); Gram form when it is cheaper."""
    nb, n_in = a.shape
    n = e.shape[1]
    total = 0.0
    if nb * (n_in + n) < n_in * n:
        gA = ga[:nb * nb].reshape((nb, nb))
        gE = ge[:nb * nb].reshape((nb, nb))
        np.dot(a, a.T, gA)
        np.dot(e, e.T, gE)
        for i in range(nb):
            for k in range(nb):
                total += np.float64(gA[i, k]) * np.float64(gE[i, k])
        return total
    prod = scratch[:n_in * n].reshape((n_in, n))
    np.dot(a.T, e, prod)
    for i in range(n_in):
        for j in range(n):
            total += np.float64(prod[i, j]) * np.float64(prod[i, j])
    return total


@njit(cache=True, error_model="numpy", fastmath=FASTMATH)
def backward_norms(layout, act_params, params, X, training, H, U, A, XH, ST, MK, G0, G1, DL, E,
                   BNG, GA, GE, P, out):
    """Backward pass that records per-layer norms instead of gradients.

    Parameters
    ----------
    layout, act_params, params, X, training
        As in :func:`neurosim.kernels.dense.mlp_forward` (same batch, after it ran).
    H, U, A, XH, ST, MK : ndarray
        The workspaces the forward pass filled.
    G0, G1 : ndarray, shape (>= nb * max(n_l),)
        Scratch; on entry ``G0[:nb * n_L]`` holds dL/d(output) row-major.
    DL : ndarray, shape (>= nb * max(n_l),)
        Scratch for ``delta_l``.
    E : ndarray
        Scratch of the same size for batch-norm layers (may be empty without batch norm).
    BNG : ndarray, shape (>= 2 * max(n_l),)
        Scratch for batch-norm parameter gradients (may be empty without batch norm).
    GA, GE : ndarray, shape (>= nb * nb,)
        Scratch for the Gram matrices.
    P : ndarray
        Scratch of ``max(n_in n)`` values over the layers whose gradient norm is formed
        directly (may be empty when every layer uses the Gram form).
    out : ndarray of float64, shape (5, L)
        Written per layer: ``||dL/dW_l||_F^2``, ``||dL/db_l||^2``, batch mean of
        ``||delta_l||``, batch mean of ``||delta_l||^2`` and mean of ``phi'(h_l)^2`` over the
        batch and units.
    """
    nb = X.shape[0]
    separate = has_separate_outputs(layout)
    cur = G0
    nxt = G1
    for l in range(layout.shape[0] - 1, -1, -1):
        n = layout[l, N_OUT]
        n_in = layout[l, N_IN]
        g = cur[:nb * n].reshape((nb, n))
        delta = DL[:nb * n].reshape((nb, n))
        use_mask = training and layout[l, DROPOUT] == 1
        p0, p1, p2 = _act_params(layout, act_params, params, l)
        _delta_and_stats(g, block(MK, nb, layout, l) if use_mask else g, use_mask,
                         block(H, nb, layout, l), block(U, nb, layout, l), layout[l, ACT],
                         p0, p1, p2, delta, out, l)
        bn = layout[l, BN_OFF]
        err = delta
        if bn >= 0:
            so = layout[l, BN_STAT_OFF]
            err = E[:nb * n].reshape((nb, n))
            batchnorm_backward(delta, block(XH, nb, layout, l), vector(params, bn, n),
                               vector(ST, so + 2 * n, n), training, vector(BNG, 0, n),
                               vector(BNG, n, n), err)
        if l == 0:
            a_prev = X
        elif separate:
            a_prev = block(A, nb, layout, l - 1)
        else:
            a_prev = block(U, nb, layout, l - 1)
        out[0, l] = _frobenius_sq_of_product(a_prev, err, GA, GE, P)
        col = np.zeros(n)
        for i in range(nb):
            for j in range(n):
                col[j] += np.float64(err[i, j])
        out[1, l] = np.dot(col, col)
        if l > 0:
            g_prev = nxt[:nb * n_in].reshape((nb, n_in))
            np.dot(err, weight(params, layout, l).T, g_prev)
            if layout[l, SKIP] == 1:
                for i in range(nb):
                    for j in range(n):
                        g_prev[i, j] += g[i, j]
            cur, nxt = nxt, cur

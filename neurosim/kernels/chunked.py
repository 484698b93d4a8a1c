"""Column chunks: one layer's work split between threads by output columns.

A layer of ``n >= 2 * SPLIT_UNIT`` units is split into two chunks of columns at a multiple of
``SPLIT_UNIT`` (a multiple of the block kernels' panel width in both float types, with AVX2 and
with AVX-512); a narrower layer is one chunk. The split depends on ``n`` alone and threads take
whole chunks, so whatever the number of threads every value is computed by the same
operations.

:func:`forward_backward_chunked` is the whole-batch loss and gradient of
:func:`neurosim.kernels.dense.forward_backward` (without batch norm) computed this way by up to
``MAX_CHUNKS`` threads: the forward product ``a_{l-1} W_l``, the activation, ``delta_l``, the
bias gradient and ``dL/dW_l = a_{l-1}^T delta_l`` by columns of the layer, the error
``delta_l W_l^T`` by columns of the layer below. Unlike two half-batch shards, no per-shard
gradients are formed and added afterwards, and each product runs on the whole batch.
:func:`forward_loss_chunked` and :func:`error_below_chunked` also serve the propagation
profile (:func:`neurosim.kernels.propagation.profile_pass`).
"""

import numpy as np
from numba import njit

from .dense import (
    ACT,
    B_OFF,
    DROPOUT,
    FASTMATH,
    N_IN,
    N_OUT,
    SKIP,
    SLOPE_OFF,
    _act_params,
    activation_backward_cols,
    add_cols,
    bias_activation_cols,
    block,
    combine_output_cols,
    has_separate_outputs,
    layer_input,
    vector,
    weight,
)
from .losses import loss_and_output_grad
from .optim import REDUCE_FASTMATH, clipped_sumsq
from .smallgemm import matmul_part_into, uses_block_kernels
from .sync import barrier

MAX_CHUNKS = 2
SPLIT_UNIT = 32


@njit(cache=True)
def chunk_bounds(n, c):
    """Units ``[lo, hi)`` of chunk ``c`` of a layer of ``n`` units (``lo == hi``: empty)."""
    if n < 2 * SPLIT_UNIT:
        return (0, n) if c == 0 else (n, n)
    mid = SPLIT_UNIT * ((n + 2 * SPLIT_UNIT - 1) // (2 * SPLIT_UNIT))
    return (0, mid) if c == 0 else (mid, n)


@njit(cache=True, error_model="numpy", fastmath=REDUCE_FASTMATH)
def _check_columns(dw, db, lo, hi, clip_value, with_sumsq, checks, c):
    """Adds the checks of ``dw[:, lo:hi]`` and ``db[lo:hi]`` to column ``c`` of ``checks``."""
    total = 0.0
    finite = True
    for i in range(dw.shape[0]):
        row_sq, row_finite = clipped_sumsq(dw[i, lo:hi], clip_value, with_sumsq)
        total += row_sq
        finite = finite and row_finite
    row_sq, row_finite = clipped_sumsq(db[lo:hi], clip_value, with_sumsq)
    checks[0, c] += total + row_sq
    if not (finite and row_finite):
        checks[1, c] = np.nan


@njit(cache=True, nogil=True, error_model="numpy", fastmath=FASTMATH)
def forward_loss_chunked(tid, n_threads, sync, layout, act_params, params, X, Y, loss_code,
                         training, H, U, A, MK, G0, loss):
    """The forward pass of :func:`neurosim.kernels.dense.mlp_forward` (no batch norm) and the
    loss, by column chunks that ``n_threads`` threads share; one barrier per layer and one
    after the loss.

    Arguments as in :func:`forward_backward_chunked`; ``G0[:nb * n_L]`` receives dL/d(output)
    and ``loss[0]`` the batch-mean loss (thread 0). Returns False when another thread
    aborted.
    """
    nb = X.shape[0]
    n_layers = layout.shape[0]
    separate = has_separate_outputs(layout)
    for l in range(n_layers):
        n = layout[l, N_OUT]
        a_prev = layer_input(X, A, U, nb, layout, l, separate)
        w = weight(params, layout, l)
        b = vector(params, layout[l, B_OFF], n)
        h = block(H, nb, layout, l)
        u = block(U, nb, layout, l)
        a = block(A, nb, layout, l)
        use_mask = training and layout[l, DROPOUT] == 1
        mk = block(MK, nb, layout, l) if use_mask else u
        use_skip = layout[l, SKIP] == 1
        p0, p1, p2 = _act_params(layout, act_params, params, l)
        blas = not uses_block_kernels(a_prev, w, h)
        for c in range(tid, MAX_CHUNKS, n_threads):
            lo, hi = chunk_bounds(n, c)
            if lo < hi:
                matmul_part_into(a_prev, w[:, lo:hi], h[:, lo:hi], blas)
                bias_activation_cols(h, b, layout[l, ACT], p0, p1, p2, u, lo, hi)
                if separate:
                    combine_output_cols(u, mk, use_mask, a_prev if use_skip else u, use_skip, a,
                                        lo, hi)
        if not barrier(sync, n_threads):
            return False
    last = n_layers - 1
    n_out = layout[last, N_OUT]
    if tid == 0:
        output = block(A if separate else U, nb, layout, last)
        loss[0] = loss_and_output_grad(loss_code, output, Y,
                                       G0[:nb * n_out].reshape((nb, n_out)))
    return barrier(sync, n_threads)


@njit(cache=True, error_model="numpy", fastmath=FASTMATH)
def error_below_chunked(tid, n_threads, delta, w, g, skip, below):
    """This thread's chunks of ``below = delta W^T`` (``+ g`` through an identity skip), split
    by the columns of ``below`` (the layer's inputs); no barrier."""
    n_in = below.shape[1]
    blas = not uses_block_kernels(delta, w.T, below)
    for c in range(tid, MAX_CHUNKS, n_threads):
        lo, hi = chunk_bounds(n_in, c)
        if lo < hi:
            matmul_part_into(delta, w[lo:hi, :].T, below[:, lo:hi], blas)
            if skip:
                add_cols(g, below, lo, hi)


@njit(cache=True, nogil=True, error_model="numpy", fastmath=FASTMATH)
def forward_backward_chunked(tid, n_threads, sync, layout, act_params, params, X, Y, loss_code,
                             training, H, U, A, MK, D, G0, G1, grad, clip_value, with_sumsq,
                             slope_parts, checks, loss):
    """Loss and gradients of one batch (no batch norm), by column chunks that ``n_threads``
    threads share (this one is ``tid``).

    The threads meet at one barrier per layer forward, one after the loss and two per layer
    backward; the results do not depend on ``n_threads``. The checks the optimizer step needs
    (:func:`neurosim.kernels.optim.clipped_sumsq`) are taken on each chunk of the gradient
    right after it is formed, while it is still in cache, instead of in a pass of their own.
    A product whose whole would go to BLAS in :func:`neurosim.kernels.smallgemm.matmul_into`
    goes to BLAS chunk by chunk (which must run on one thread; the caller arranges it), else
    to the block kernels.

    Parameters
    ----------
    tid, n_threads : int
    sync : ndarray of int64, shape (SYNC_SIZE,)
        Barrier state (:func:`neurosim.kernels.sync.barrier`).
    layout, act_params, params
        The network (:mod:`.dense`).
    X, Y : ndarray, shapes (nb, n_0), (nb, n_L)
        Inputs and targets (C-contiguous, the network's float type).
    loss_code : int
    training : bool
        Dropout masks from ``MK`` (True) or none (False).
    H, U, A, MK, D, G0, G1 : ndarray
        Workspaces of :func:`neurosim.kernels.dense.forward_backward` for ``nb`` samples.
    grad : ndarray, shape (P,)
        Written with the gradient of every parameter.
    clip_value : float
        Value clipping threshold of the checks (``inf``: none), in the gradient's float type.
    with_sumsq : bool
        Whether the checks include the sum of squares (:func:`.optim.clipped_sumsq`).
    slope_parts : ndarray of float64, shape (MAX_CHUNKS,)
        Scratch: a PReLU layer's slope gradient per chunk (added in chunk order).
    checks : ndarray of float64, shape (2, >= MAX_CHUNKS)
        Written per chunk of units, over the layers: the sum of squares of the value-clipped
        gradient (row 0; 0 unless ``with_sumsq``) and 0, or NaN where a gradient entry is
        not finite (row 1). Their sums over the chunks cover every parameter.
    loss : ndarray of float64, shape (1,)
        Written by thread 0 with the batch-mean loss.

    Returns
    -------
    bool
        False when another thread aborted (``sync[SYNC_ABORT]``).
    """
    if not forward_loss_chunked(tid, n_threads, sync, layout, act_params, params, X, Y,
                                loss_code, training, H, U, A, MK, G0, loss):
        return False
    nb = X.shape[0]
    last = layout.shape[0] - 1
    separate = has_separate_outputs(layout)
    for c in range(tid, MAX_CHUNKS, n_threads):
        checks[0, c] = 0.0
        checks[1, c] = 0.0
    cur = G0
    nxt = G1
    for l in range(last, -1, -1):
        n = layout[l, N_OUT]
        n_in = layout[l, N_IN]
        g = cur[:nb * n].reshape((nb, n))
        delta = block(D, nb, layout, l)
        use_mask = training and layout[l, DROPOUT] == 1
        mk = block(MK, nb, layout, l) if use_mask else g
        h = block(H, nb, layout, l)
        u = block(U, nb, layout, l)
        w = weight(params, layout, l)
        dw = weight(grad, layout, l)
        db = vector(grad, layout[l, B_OFF], n)
        a_t = layer_input(X, A, U, nb, layout, l, separate).T
        p0, p1, p2 = _act_params(layout, act_params, params, l)
        blas = not uses_block_kernels(a_t, delta, dw)
        for c in range(tid, MAX_CHUNKS, n_threads):
            lo, hi = chunk_bounds(n, c)
            slope_parts[c] = 0.0
            if lo < hi:
                slope_parts[c] = activation_backward_cols(g, mk, use_mask, h, u, layout[l, ACT],
                                                          p0, p1, p2, delta, db, lo, hi)
                matmul_part_into(a_t, delta[:, lo:hi], dw[:, lo:hi], blas)
                _check_columns(dw, db, lo, hi, clip_value, with_sumsq, checks, c)
        if not barrier(sync, n_threads):
            return False
        so = layout[l, SLOPE_OFF]
        if so >= 0 and tid == 0:
            total = 0.0
            for c in range(MAX_CHUNKS):
                total += slope_parts[c]
            grad[so] = total
            _check_columns(grad[so:so + 1].reshape((1, 1)), grad[so:so], 0, 1, clip_value,
                           with_sumsq, checks, 0)
        if l > 0:
            error_below_chunked(tid, n_threads, delta, w, g, layout[l, SKIP] == 1,
                                nxt[:nb * n_in].reshape((nb, n_in)))
            cur, nxt = nxt, cur
        if not barrier(sync, n_threads):
            return False
    return True


"""The compiled minibatch loop of MLP training, run by one or more threads.

One call of :func:`train_epoch` runs every optimizer step of one epoch: gather the batch, draw
dropout masks, forward and backward (:func:`neurosim.kernels.dense.forward_backward`), record,
check for divergence, clip, update (:func:`neurosim.kernels.optim.optimizer_step`) and update
batch-norm running statistics. Workspaces are allocated by the caller once per run; a step
allocates only the row copies of large weight-gradient operands
(:func:`neurosim.kernels.smallgemm.copies_rows_of_a`).

Shards, chunks and threads
--------------------------
Each minibatch may be split into ``S`` shards (consecutive row ranges; ``S`` is the first axis
of the gradient and workspace arrays). Shard ``s`` computes the gradient of its own mean loss
into ``grads[s]``; the minibatch gradient is ``sum_s (n_s / nb) grads[s]``, summed in shard
order. ``T <= S`` threads (Python threads calling this GIL-free kernel with ``tid = 0..T-1``)
share the shards (thread ``t`` takes shards ``t, t + T, ...``) and the passes over the
parameter buffer (``S`` fixed ranges, the same way), meeting at three barriers per step.

A ``chunked`` step (``S = 1``) computes the whole-batch gradient instead, every layer's
products and passes split by columns into chunks the threads share
(:mod:`neurosim.kernels.chunked`), and the flat passes in ``MAX_CHUNKS`` ranges: no work is
duplicated and no shard gradients are combined, which pays for wide layers.

Every sum is formed in an order fixed by ``S`` and ``chunked`` alone, so the results do not
depend on ``T``; the BLAS the threads call must run single-threaded for the same reason
(float32 GEMMs round differently with different BLAS thread counts), which the caller
arranges.
"""

import numpy as np
from numba import njit, types
from numba.extending import overload

from .chunked import MAX_CHUNKS, forward_backward_chunked
from .dense import (
    BN_RUN_OFF,
    BN_STAT_OFF,
    N_OUT,
    block,
    draw_dropout_masks,
    forward_backward,
    update_running_stats,
)
from .optim import REDUCE_FASTMATH, clipped_sumsq, optimizer_step, sumsq64, weight_grad_norms
from .scalar import like
from .sync import barrier

MAX_SHARDS = 2

# Layout of the float64 array the threads exchange values through. The flat passes over the
# gradient (checks, update) run in one range per shard, or MAX_CHUNKS ranges in chunked steps.
MAX_RANGES = max(MAX_SHARDS, MAX_CHUNKS)
SH_LOSS = 0  # per shard: its mean loss
# per range: sum of squares of the clipped gradient, then 0, or NaN when a gradient entry is
# not finite (chunked steps: per column chunk, over every layer)
SH_SUMSQ = SH_LOSS + MAX_SHARDS
SH_PROBE = SH_SUMSQ + MAX_RANGES
SH_OK = SH_PROBE + MAX_RANGES  # per range: 1 when every update was finite
SH_SLOPE = SH_OK + MAX_RANGES  # per column chunk: a PReLU slope's gradient (chunked steps)
SH_DELTA = SH_SLOPE + MAX_CHUNKS  # per shard and layer: sum over rows of ||delta row||


def shared_size(n_layers: int) -> int:
    """Length of the ``shared`` array for ``n_layers`` layers."""
    return SH_DELTA + MAX_SHARDS * n_layers


# ---------------------------------------------------------------------------- the loop

NO_RNG = np.zeros(0, np.int64)  # stands for the dropout generators of a net without dropout


def _masks_from(rng, p, layout, nb, MK):
    """Draw dropout masks from ``rng``; nothing when ``rng`` is :data:`NO_RNG`."""


@overload(_masks_from)
def _masks_from_overload(rng, p, layout, nb, MK):
    # Unboxing a numpy Generator costs about 10 us per call of the loop, as much as a whole
    # step of a small net, so a net without dropout passes an empty array instead.
    if isinstance(rng, types.NumPyRandomGeneratorType):
        return lambda rng, p, layout, nb, MK: draw_dropout_masks(rng, p, layout, nb, MK)
    return lambda rng, p, layout, nb, MK: None



@njit(cache=True, error_model="numpy", fastmath=REDUCE_FASTMATH)
def delta_norms(D, layout, nb, out):
    """``out[l]`` = batch mean of the row norms ``||delta_l[i, :]||`` (``D`` as in dense)."""
    for l in range(layout.shape[0]):
        out[l] = delta_row_norm_sum(D, layout, nb, l) / nb


@njit(cache=True, error_model="numpy", fastmath=REDUCE_FASTMATH)
def delta_row_norm_sum(D, layout, nb, l):
    """Sum over the ``nb`` rows of ``||delta_l[i, :]||`` (squares summed in float64)."""
    delta = block(D, nb, layout, l)
    total = 0.0
    for i in range(nb):
        total += np.sqrt(sumsq64(delta[i]))
    return total


@njit(cache=True)
def _gather(X, Y, order, first, rows, xb, yb):
    """Rows ``order[first:first + rows]`` of ``X`` and ``Y`` into ``xb`` and ``yb``."""
    for i in range(rows):
        k = order[first + i]
        for j in range(X.shape[1]):
            xb[i, j] = X[k, j]
        for j in range(Y.shape[1]):
            yb[i, j] = Y[k, j]


@njit(cache=True, error_model="numpy", fastmath=REDUCE_FASTMATH)
def combine_shards(grads, w0, w1, start, stop, clip_value, with_sumsq):
    """``grads[0] = w0 grads[0] + w1 grads[1]`` on ``[start, stop)``, with the float64 sum of
    squares of the value-clipped result (0 unless ``with_sumsq``, as in
    :func:`.optim.clipped_sumsq`) and a finiteness probe (0, or NaN) of the same range."""
    g0 = grads[0, start:stop]
    g1 = grads[1, start:stop]
    a = like(grads, w0)
    b = like(grads, w1)
    zero = like(grads, 0.0)
    total = 0.0
    probe = zero
    if with_sumsq:
        for i in range(g0.shape[0]):
            g = a * g0[i] + b * g1[i]
            g0[i] = g
            probe += g * zero
            c = np.float64(min(max(g, -clip_value), clip_value))
            total += c * c
    else:
        for i in range(g0.shape[0]):
            g = a * g0[i] + b * g1[i]
            g0[i] = g
            probe += g * zero
    return total, probe


@njit(cache=True, nogil=True, error_model="numpy")
def train_epoch(tid, n_threads, sync, shared, layout, act_params, params, grads, X, Y, order,
                batch_size, chunked, loss_code, opt_code, lr, hyper, s1, s2, step0, weight_decay,
                clip_norm, clip_value, dropout_p, rng0, rng1, bn_eps, bn_momentum, bn_state,
                record_every, rec_steps, rec_loss, rec_grad, rec_delta, rec0,
                XB, YB, H, U, A, XH, ST, MK, D, G0, G1, E):
    """Run the optimizer steps of one epoch in place (this thread's part of them).

    Parameters
    ----------
    tid, n_threads : int
        This thread's index and the number of threads running the epoch together.
    sync : ndarray of int64, shape (SYNC_SIZE,)
        Barrier state, zero at the start; ``sync[SYNC_ABORT] != 0`` makes every thread return.
    shared : ndarray of float64, shape (shared_size(L),)
        Values exchanged between threads.
    layout, act_params, params
        Network description and flat parameter buffer (:mod:`.dense`).
    grads : ndarray, shape (S, P)
        Per-shard gradients; ``grads[0]`` holds the minibatch gradient after each step.
    X, Y : ndarray, shapes (n, n_0), (n, n_L)
        Training data in the network's float type.
    order : ndarray of int64, shape (n,)
        Sample order of this epoch; batches are consecutive slices of it (the last may be
        shorter).
    batch_size : int
    chunked : bool
        Compute each minibatch gradient whole (``S = 1``), every layer split into column
        chunks that the threads share (:func:`.chunked.forward_backward_chunked`), instead of
        shard by shard. The results depend on ``chunked`` but not on ``T``.
    loss_code : int
    opt_code, lr, hyper, s1, s2
        Optimizer (:func:`.optim.optimizer_step`) and its state.
    step0 : int
        Optimizer steps taken before this epoch (step numbers are global, from 0).
    weight_decay : float
    clip_norm : float
        Global-norm clipping threshold, or 0 for none.
    clip_value : float
        Value clipping threshold, or ``inf`` for none.
    dropout_p : float
    rng0, rng1 : numpy.random.Generator or ndarray
        Dropout masks of shards 0 and 1; :data:`NO_RNG` for a net without dropout.
    bn_eps, bn_momentum : float
    bn_state : ndarray
        Running batch-norm statistics, updated after every step (batch norm needs ``S = 1``).
    record_every : int
    rec_steps, rec_loss, rec_grad, rec_delta : ndarray
        Record arrays (shapes (R,), (R,), (R, L), (R, L)), written by thread 0 from row
        ``rec0``: every step ``s`` with ``s % record_every == 0`` gets its step number,
        minibatch loss, ``||dL/dW_l||_F`` and batch-mean ``||delta_l||``.
    rec0 : int
    XB, YB : ndarray, shapes (S, rows, n_0), (S, rows, n_L)
        Shard inputs and targets, ``rows = ceil(batch_size / S)``.
    H, U, A, XH, ST, MK, D, G0, G1, E : ndarray, shape (S, size)
        Per-shard workspaces for ``rows`` samples (:mod:`.dense`); ``A`` may be ``U``.

    Returns
    -------
    steps : int
        Steps completed (applied) in this epoch.
    n_rec : int
        Records written.
    status : int
        0: the epoch ran to its end; 1: a step gave a non-finite loss, gradient or update
        and the epoch stopped there, as step ``step0 + steps`` (a non-finite loss or gradient
        is not applied; a non-finite update leaves the parameters concerned at their old
        values); 2: another thread aborted.
    """
    n = X.shape[0]
    n_layers = layout.shape[0]
    n_shards = grads.shape[0]
    n_params = params.shape[0]
    has_dropout = dropout_p > 0.0
    has_bn = bn_state.shape[0] > 0
    cv = like(params, clip_value)
    with_sumsq = clip_norm > 0.0  # the gradient's norm is needed only to clip it
    rec = rec0
    steps = 0
    training = record_every > 0  # a run-time value: a literal would compile a second variant
    for start in range(0, n, batch_size):
        nb = min(batch_size, n - start)
        step = step0 + steps
        record = step % record_every == 0 and tid == 0
        active = min(n_shards, nb)  # a batch smaller than S leaves shards empty
        base, extra = divmod(nb, active)
        if chunked:
            if tid == 0:
                _gather(X, Y, order, start, nb, XB[0], YB[0])
                if has_dropout:
                    _masks_from(rng0, dropout_p, layout, nb, MK[0])
            if not barrier(sync, n_threads):
                return steps, rec - rec0, 2
            if not forward_backward_chunked(
                    tid, n_threads, sync, layout, act_params, params, XB[0, :nb], YB[0, :nb],
                    loss_code, training, H[0], U[0], A[0], MK[0], D[0], G0[0], G1[0], grads[0],
                    cv, with_sumsq, shared[SH_SLOPE:SH_SLOPE + MAX_CHUNKS],
                    shared[SH_SUMSQ:SH_SUMSQ + 2 * MAX_RANGES].reshape((2, MAX_RANGES)),
                    shared[SH_LOSS:SH_LOSS + 1]):
                return steps, rec - rec0, 2
        else:
            # forward and backward, shard by shard
            for s in range(tid, active, n_threads):
                rows = base + (1 if s < extra else 0)
                first = start + s * base + min(s, extra)
                _gather(X, Y, order, first, rows, XB[s], YB[s])
                if has_dropout:
                    _masks_from(rng0 if s == 0 else rng1, dropout_p, layout, rows, MK[s])
                shared[SH_LOSS + s] = forward_backward(
                    layout, act_params, params, XB[s, :rows], YB[s, :rows], loss_code, training,
                    bn_eps, bn_state, H[s], U[s], A[s], XH[s], ST[s], MK[s], D[s], G0[s], G1[s],
                    E[s], grads[s])
                if active > 1 and step % record_every == 0:
                    for l in range(n_layers):
                        shared[SH_DELTA + s * n_layers + l] = delta_row_norm_sum(D[s], layout,
                                                                                 rows, l)
            if not barrier(sync, n_threads):
                return steps, rec - rec0, 2
        # the minibatch gradient and its checks, chunk by chunk
        loss = shared[SH_LOSS]
        w0 = 1.0
        w1 = 0.0
        n_parts = MAX_CHUNKS if chunked else active  # ranges of the flat passes below
        if not chunked:  # (chunked steps took the checks during the backward pass)
            if active == 1:
                if tid == 0:
                    total, finite = clipped_sumsq(grads[0], cv, with_sumsq)
                    shared[SH_SUMSQ] = total
                    shared[SH_PROBE] = 0.0 if finite else np.nan
            else:
                w0 = (base + (1 if extra > 0 else 0)) / nb
                w1 = 1.0 - w0
                loss = w0 * shared[SH_LOSS] + w1 * shared[SH_LOSS + 1]
                for c in range(tid, active, n_threads):
                    total, probe = combine_shards(grads, w0, w1, c * n_params // active,
                                                  (c + 1) * n_params // active, cv, with_sumsq)
                    shared[SH_SUMSQ + c] = total
                    shared[SH_PROBE + c] = probe
            if not barrier(sync, n_threads):
                return steps, rec - rec0, 2
        finite = np.isfinite(loss)
        total_sq = 0.0
        for c in range(n_parts):
            finite = finite and shared[SH_PROBE + c] == 0.0
            total_sq += shared[SH_SUMSQ + c]
        if record:
            rec_steps[rec] = step
            rec_loss[rec] = loss
            if np.isfinite(loss):
                weight_grad_norms(grads[0], layout, rec_grad[rec])
                if active == 1:
                    delta_norms(D[0], layout, nb, rec_delta[rec])
                else:
                    for l in range(n_layers):
                        rec_delta[rec, l] = (w0 * shared[SH_DELTA + l] + w1 * shared[
                            SH_DELTA + n_layers + l]) / nb
            else:
                for l in range(n_layers):
                    rec_grad[rec, l] = np.nan
                    rec_delta[rec, l] = np.nan
        if step % record_every == 0:
            rec += 1
        if not finite:
            return steps, rec - rec0, 1
        gscale = 1.0
        if clip_norm > 0.0:
            norm = np.sqrt(total_sq)
            if norm > clip_norm:
                gscale = clip_norm / norm
        # the update, chunk by chunk
        if n_parts == 1:
            if tid == 0:
                shared[SH_OK] = 1.0 if optimizer_step(
                    opt_code, params, grads[0], s1, s2, lr, hyper, step + 1, weight_decay,
                    gscale, clip_value) else 0.0
        else:
            for c in range(tid, n_parts, n_threads):
                lo = c * n_params // n_parts
                hi = (c + 1) * n_params // n_parts
                ok = optimizer_step(opt_code, params[lo:hi], grads[0, lo:hi],
                                    s1[lo:hi] if s1.shape[0] > 0 else s1,
                                    s2[lo:hi] if s2.shape[0] > 0 else s2, lr, hyper, step + 1,
                                    weight_decay, gscale, clip_value)
                shared[SH_OK + c] = 1.0 if ok else 0.0
        if has_bn and tid == 0:
            for l in range(n_layers):
                ro = layout[l, BN_RUN_OFF]
                if ro >= 0:
                    so = layout[l, BN_STAT_OFF]
                    m = layout[l, N_OUT]
                    update_running_stats(ST[0, so:so + m], ST[0, so + m:so + 2 * m], nb,
                                         like(bn_state, bn_momentum), bn_state[ro:ro + m],
                                         bn_state[ro + m:ro + 2 * m])
        if not barrier(sync, n_threads):
            return steps, rec - rec0, 2
        for c in range(n_parts):
            if shared[SH_OK + c] == 0.0:
                return steps, rec - rec0, 1
        steps += 1
    return steps, rec - rec0, 0

"""The compiled minibatch loop of MLP training.

One call of :func:`train_epoch` runs every optimizer step of one epoch: gather the batch, draw
dropout masks, forward and backward (:func:`neurosim.kernels.dense.forward_backward`), record,
check for divergence, clip, update (:func:`neurosim.kernels.optim.optimizer_step`) and update
batch-norm running statistics. Workspaces are allocated by the caller once per run; a step
allocates nothing.
"""

import numpy as np
from numba import njit

from .dense import (
    BN_RUN_OFF,
    BN_STAT_OFF,
    N_OUT,
    block,
    draw_dropout_masks,
    forward_backward,
    update_running_stats,
)
from .optim import REDUCE_FASTMATH, clipped_sumsq, optimizer_step, weight_grad_norms
from .scalar import like


@njit(cache=True, error_model="numpy", fastmath=REDUCE_FASTMATH)
def delta_norms(D, layout, nb, out):
    """``out[l]`` = batch mean of the row norms ``||delta_l[i, :]||`` (``D`` as in dense)."""
    for l in range(layout.shape[0]):
        delta = block(D, nb, layout, l)
        total = 0.0
        for i in range(nb):
            s = like(D, 0.0)
            for j in range(delta.shape[1]):
                s += delta[i, j] * delta[i, j]
            total += np.sqrt(np.float64(s))
        out[l] = total / nb


@njit(cache=True, error_model="numpy")
def train_epoch(layout, act_params, params, grad, X, Y, order, batch_size, loss_code,
                opt_code, lr, hyper, s1, s2, step0, weight_decay, clip_norm, clip_value,
                dropout_p, rng, bn_eps, bn_momentum, bn_state,
                record_every, rec_steps, rec_loss, rec_grad, rec_delta, rec0,
                XB, YB, H, U, A, XH, ST, MK, D, G0, G1, E):
    """Run the optimizer steps of one epoch in place.

    Parameters
    ----------
    layout, act_params, params, grad
        Network description and flat parameter / gradient buffers (:mod:`.dense`).
    X, Y : ndarray, shapes (n, n_0), (n, n_L)
        Training data in the network's float type.
    order : ndarray of int64, shape (n,)
        Sample order of this epoch; batches are consecutive slices of it (the last may be
        shorter).
    batch_size : int
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
    rng : numpy.random.Generator
        Source of the dropout masks.
    bn_eps, bn_momentum : float
    bn_state : ndarray
        Running batch-norm statistics, updated after every step.
    record_every : int
    rec_steps, rec_loss, rec_grad, rec_delta : ndarray
        Record arrays (shapes (R,), (R,), (R, L), (R, L)), written from row ``rec0``: every step
        ``s`` with ``s % record_every == 0`` gets its step number, minibatch loss,
        ``||dL/dW_l||_F`` and batch-mean ``||delta_l||``.
    rec0 : int
    XB, YB, H, U, A, XH, ST, MK, D, G0, G1, E : ndarray
        Workspaces for ``batch_size`` samples.

    Returns
    -------
    steps : int
        Steps completed (applied) in this epoch.
    n_rec : int
        Records written.
    diverged : bool
        True when a step gave a non-finite loss, gradient or update and the epoch stopped
        there, as step ``step0 + steps``. A non-finite loss or gradient is not applied; a
        non-finite update leaves the parameters concerned at their old values.
    """
    n = X.shape[0]
    n_layers = layout.shape[0]
    has_dropout = dropout_p > 0.0
    has_bn = bn_state.shape[0] > 0
    rec = rec0
    steps = 0
    training = record_every > 0  # a run-time value: a literal would compile a second variant
    for start in range(0, n, batch_size):
        nb = min(batch_size, n - start)
        step = step0 + steps
        xb = XB[:nb]
        yb = YB[:nb]
        for i in range(nb):
            k = order[start + i]
            for j in range(X.shape[1]):
                xb[i, j] = X[k, j]
            for j in range(Y.shape[1]):
                yb[i, j] = Y[k, j]
        if has_dropout:
            draw_dropout_masks(rng, dropout_p, layout, nb, MK)
        loss = forward_backward(layout, act_params, params, xb, yb, loss_code, training, bn_eps,
                                bn_state, H, U, A, XH, ST, MK, D, G0, G1, E, grad)
        finite = np.isfinite(loss)
        total_sq = like(grad, 0.0)
        if finite:
            total_sq, finite = clipped_sumsq(grad, like(grad, clip_value))
        if step % record_every == 0:
            rec_steps[rec] = step
            rec_loss[rec] = loss
            if np.isfinite(loss):
                weight_grad_norms(grad, layout, rec_grad[rec])
                delta_norms(D, layout, nb, rec_delta[rec])
            else:
                for l in range(n_layers):
                    rec_grad[rec, l] = np.nan
                    rec_delta[rec, l] = np.nan
            rec += 1
        if not finite:
            return steps, rec - rec0, True
        gscale = 1.0
        if clip_norm > 0.0:
            norm = np.sqrt(np.float64(total_sq))
            if norm > clip_norm:
                gscale = clip_norm / norm
        if not optimizer_step(opt_code, params, grad, s1, s2, lr, hyper, step + 1,
                              weight_decay, gscale, clip_value):
            return steps, rec - rec0, True
        if has_bn:
            for l in range(n_layers):
                ro = layout[l, BN_RUN_OFF]
                if ro >= 0:
                    so = layout[l, BN_STAT_OFF]
                    m = layout[l, N_OUT]
                    update_running_stats(ST[so:so + m], ST[so + m:so + 2 * m], nb,
                                         like(bn_state, bn_momentum), bn_state[ro:ro + m],
                                         bn_state[ro + m:ro + 2 * m])
        steps += 1
    return steps, rec - rec0, False

"""CUDA twins of :mod:`neurosim.kernels.mlp_train`: the minibatch loop and batched evaluation.

:func:`train_epoch` takes the CPU twin's arguments in the same order, less the CPU's threading
ones (``tid``, ``n_threads``, ``sync``, ``shared``: one launch sequence computes the whole batch,
so there are no shards), with one device generator ``rng`` in place of the per-shard ``rng0``,
``rng1``, batch buffers and workspaces for one batch (no shard axis), and the parameters,
optimizer state, data, workspaces and record buffers on the device (``layout``, ``act_params``,
``hyper``, ``order`` and ``rec_steps`` stay on the host).

A step launches its kernels without waiting for the device: the loss, the clipping factor and
the divergence decision are made on the device (:mod:`neurosim.kernels.cuda.optim`), and the
host reads the outcome once, at the end of the epoch. After a divergent step the remaining
updates of the epoch are no-ops and their records are dropped, so the result is the CPU loop's:
records up to and including the step that diverged, parameters at their last finite values.

The record buffers (``rec_loss``, ``rec_grad``, ``rec_delta``) are in the network's float type.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
from numba import cuda, float64

from ..dense import BN_RUN_OFF, BN_STAT_OFF, N_OUT, UNIT_OFF
from ._launch import (
    BLOCK_1D,
    BLOCK_REDUCE,
    check_float_arrays,
    grid_1d,
    grid_rows,
    numba_float,
    specialise,
)
from .dense import draw_dropout_masks, forward_backward, mlp_forward, update_running_stats
from .losses import loss_and_output_grad, loss_workspace
from .optim import (
    STATUS_SIZE,
    STOP,
    STOP_STEP,
    SUMSQ_PARTS,
    clipped_sumsq,
    finish_step,
    new_control,
    optimizer_step,
    step_control,
    weight_grad_norms,
    weight_segments,
)
from .reduce import block_sum, segment_workspace

__all__ = ["delta_norms", "train_epoch", "evaluate", "train_workspace"]


@specialise
def _row_norms_kernel(dtype_name):
    dt = numba_float(dtype_name)
    shape = (BLOCK_REDUCE,)

    @cuda.jit
    def kernel(D, starts, widths, nb, rows):
        # block (i, l): rows[l, i] = ||delta_l[i, :]||, squares summed in float64 (as on the
        # CPU: float32 squares of a vanishing delta underflow)
        sh = cuda.shared.array(shape, float64)
        l = cuda.blockIdx.y
        n = widths[l]
        for i in range(cuda.blockIdx.x, nb, cuda.gridDim.x):
            start = starts[l] + i * n
            acc = float64(0.0)
            for j in range(start + cuda.threadIdx.x, start + n, cuda.blockDim.x):
                acc += float64(D[j]) * float64(D[j])
            total = block_sum(sh, acc)
            if cuda.threadIdx.x == 0:
                rows[l, i] = dt(math.sqrt(total))

    return kernel


@specialise
def _row_mean_kernel(dtype_name):
    dt = numba_float(dtype_name)
    shape = (BLOCK_REDUCE,)

    @cuda.jit
    def kernel(rows, nb, out, index, guard, guard_index):
        sh = cuda.shared.array(shape, dt)
        l = cuda.blockIdx.x
        acc = dt(0.0)
        for i in range(cuda.threadIdx.x, nb, cuda.blockDim.x):
            acc += rows[l, i]
        total = block_sum(sh, acc)
        if cuda.threadIdx.x == 0:
            value = total / dt(nb)
            if guard.shape[0] > 0 and not math.isfinite(guard[guard_index]):
                value = dt(math.nan)
            out[index, l] = value

    return kernel


def delta_norms(D, layout, nb, out, index=0, work=None, guard=None, guard_index=0):
    """``out[l]`` = batch mean of the row norms ``||delta_l[i, :]||`` (see the CPU twin).

    ``out`` may be a (L,) vector or a (records, L) buffer (row ``index``); ``work`` is a device
    array of shape (L, >= nb); ``guard`` as in :func:`neurosim.kernels.cuda.reduce.segment_sumsq`.
    """
    dtype = check_float_arrays(("D", "out"), (D, out))
    layout = np.asarray(layout)
    L = layout.shape[0]
    if out.ndim == 1:
        out, index = out.reshape(1, out.shape[0]), 0
    if work is None:
        work = cuda.device_array((L, nb), dtype=dtype)
    starts = cuda.to_device((nb * layout[:, UNIT_OFF]).astype(np.int64))
    widths = cuda.to_device(layout[:, N_OUT].astype(np.int64))
    _delta_norms(D, starts, widths, nb, out, index, work, guard, guard_index)


def _delta_norms(D, starts, widths, nb, out, index, work, guard, guard_index):
    name = np.dtype(D.dtype).name
    L = starts.shape[0]
    if guard is None:
        guard = cuda.device_array(0, dtype=name)
    _row_norms_kernel(name)[(grid_rows(nb), L), BLOCK_REDUCE](D, starts, widths, nb, work)
    _row_mean_kernel(name)[L, BLOCK_REDUCE](work, nb, out, index, guard, guard_index)


@cuda.jit
def _gather_kernel(X, Y, order, start, XB, YB):
    nb, n_in = XB.shape
    n_out = YB.shape[1]
    for k in range(cuda.grid(1), nb * (n_in + n_out), cuda.gridsize(1)):
        if k < nb * n_in:
            i, j = k // n_in, k % n_in
            XB[i, j] = X[order[start + i], j]
        else:
            k -= nb * n_in
            i, j = k // n_out, k % n_out
            YB[i, j] = Y[order[start + i], j]


def train_workspace(layout, batch, dtype):
    """Device buffers :func:`train_epoch` reuses across epochs (allocate once per run)."""
    layout = np.asarray(layout)
    L = layout.shape[0]
    starts, stops = weight_segments(layout)
    return SimpleNamespace(
        control=new_control(dtype),
        status=cuda.to_device(np.zeros(STATUS_SIZE, dtype=np.int64)),
        loss_work=loss_workspace(batch, dtype),
        step_loss=cuda.device_array(1, dtype=dtype),
        sumsq_work=cuda.device_array((2, SUMSQ_PARTS), dtype=dtype),
        segments=(starts, stops),
        segment_work=segment_workspace(L),
        row_work=cuda.device_array((L, batch), dtype=dtype),
        unit_off=layout[:, UNIT_OFF].astype(np.int64),
        block_starts={},  # batch size -> device offsets of each layer's block in D
        widths=cuda.to_device(layout[:, N_OUT].astype(np.int64)),
        order=cuda.device_array(0, dtype=np.int64),
    )


def train_epoch(layout, act_params, params, grad, X, Y, order, batch_size, loss_code,
                opt_code, lr, hyper, s1, s2, step0, weight_decay, clip_norm, clip_value,
                dropout_p, rng, bn_eps, bn_momentum, bn_state,
                record_every, rec_steps, rec_loss, rec_grad, rec_delta, rec0,
                XB, YB, H, U, A, XH, ST, MK, D, G0, G1, E, work=None):
    """Run the optimizer steps of one epoch on the device (arguments as in the CPU twin).

    ``rng`` is a device generator (:func:`neurosim.kernels.cuda.dense.device_rng`), used only
    with dropout; ``work`` comes from :func:`train_workspace` (built per call when omitted).
    The status is reset at the start of the call.

    Returns
    -------
    steps, n_rec, status
        As the CPU twin (read from the device once, at the end): ``status`` is 0 when the epoch
        ran to its end, 1 when it stopped at a step that diverged.
    """
    layout = np.asarray(layout)
    n = X.shape[0]
    n_layers = layout.shape[0]
    dtype = np.dtype(params.dtype)
    if work is None:
        work = train_workspace(layout, batch_size, dtype)
    work.status.copy_to_device(np.zeros(STATUS_SIZE, dtype=np.int64))
    order = np.ascontiguousarray(order, dtype=np.int64)
    if work.order.shape[0] != order.shape[0]:
        work.order = cuda.device_array(order.shape[0], dtype=np.int64)
    work.order.copy_to_device(order)
    hyper = np.asarray(hyper)
    has_dropout = dropout_p > 0.0
    has_bn = bn_state.shape[0] > 0
    clip_value = dtype.type(clip_value)
    rec = rec0
    record_rows = []
    n_steps = 0
    for start in range(0, n, batch_size):
        nb = min(batch_size, n - start)
        step = step0 + n_steps
        xb, yb = XB[:nb], YB[:nb]
        _gather_kernel[grid_1d(nb * (xb.shape[1] + yb.shape[1])), BLOCK_1D](
            X, Y, work.order, start, xb, yb)
        if has_dropout:
            draw_dropout_masks(rng, dropout_p, layout, nb, MK)
        recording = step % record_every == 0
        losses, li = (rec_loss, rec) if recording else (work.step_loss, 0)
        forward_backward(layout, act_params, params, xb, yb, loss_code, True, bn_eps, bn_state,
                         H, U, A, XH, ST, MK, D, G0, G1, E, grad, loss_out=losses,
                         loss_index=li, loss_work=work.loss_work[:nb])
        clipped_sumsq(grad, clip_value, control=work.control, work=work.sumsq_work)
        if recording:
            rec_steps[rec] = step
            weight_grad_norms(grad, layout, rec_grad, index=rec, segments=work.segments,
                              work=work.segment_work, guard=rec_loss, guard_index=rec)
            if nb not in work.block_starts:
                work.block_starts[nb] = cuda.to_device(nb * work.unit_off)
            _delta_norms(D, work.block_starts[nb], work.widths, nb, rec_delta, rec,
                         work.row_work, rec_loss, rec)
            record_rows.append(step)
            rec += 1
        step_control(work.control, work.status, losses, li, clip_norm, step)
        optimizer_step(opt_code, params, grad, s1, s2, lr, hyper, step + 1, weight_decay, 1.0,
                       clip_value, control=work.control, status=work.status)
        finish_step(work.status, step)
        if has_bn:
            for l in range(n_layers):
                ro = int(layout[l, BN_RUN_OFF])
                if ro >= 0:
                    so = int(layout[l, BN_STAT_OFF])
                    m = int(layout[l, N_OUT])
                    update_running_stats(ST[so:so + m], ST[so + m:so + 2 * m], nb, bn_momentum,
                                         bn_state[ro:ro + m], bn_state[ro + m:ro + 2 * m],
                                         status=work.status)
        n_steps += 1
    status = work.status.copy_to_host()
    if status[STOP]:
        stop = int(status[STOP_STEP])
        kept = sum(1 for s in record_rows if s <= stop)
        return stop - step0, kept, 1
    return n_steps, rec - rec0, 0


@cuda.jit
def _argmax_match_kernel(out, Y, counter):
    nb, n_out = out.shape
    hits = 0
    for i in range(cuda.grid(1), nb, cuda.gridsize(1)):
        best_o, best_y = 0, 0
        for j in range(1, n_out):
            if out[i, j] > out[i, best_o]:
                best_o = j
            if Y[i, j] > Y[i, best_y]:
                best_y = j
        if best_o == best_y:
            hits += 1
    if hits > 0:
        cuda.atomic.add(counter, 0, hits)


def evaluate(layout, act_params, params, X, Y, loss_code, classify, bn_eps, bn_state, chunk,
             H, U, A, XH, ST, MK, G0, work=None):
    """Mean loss and accuracy over a device data set in inference mode (see the CPU twin).

    The chunk losses and the hit count stay on the device until the end (one copy back).
    """
    n = X.shape[0]
    n_out = Y.shape[1]
    dtype = np.dtype(params.dtype)
    n_chunks = math.ceil(n / chunk)
    chunk_loss = cuda.device_array(n_chunks, dtype=dtype)
    hits = cuda.to_device(np.zeros(1, dtype=np.int64))
    loss_work = work.loss_work if work is not None else loss_workspace(chunk, dtype)
    sizes = []
    for k, start in enumerate(range(0, n, chunk)):
        nb = min(chunk, n - start)
        out = mlp_forward(layout, act_params, params, X[start:start + nb], False, bn_eps,
                          bn_state, H, U, A, XH, ST, MK)
        loss_and_output_grad(loss_code, out, Y[start:start + nb],
                             G0[:nb * n_out].reshape((nb, n_out)), loss_out=chunk_loss,
                             index=k, work=loss_work[:nb])
        if classify:
            _argmax_match_kernel[grid_1d(nb), BLOCK_1D](out, Y[start:start + nb], hits)
        sizes.append(nb)
    losses = chunk_loss.copy_to_host().astype(np.float64)
    total = float(np.sum(losses * np.asarray(sizes, dtype=np.float64)))
    accuracy = int(hits.copy_to_host()[0]) / n if classify else np.nan
    return total / n, accuracy


def _signatures(dt, int_t, bool_t):
    name, v, m = str(dt), dt[::1], dt[:, ::1]
    iv = int_t[::1]
    return [("row_norms", _row_norms_kernel(name).py_func, (v, iv, iv, int_t, m)),
            ("row_mean", _row_mean_kernel(name).py_func, (m, int_t, m, int_t, v, int_t)),
            ("gather", _gather_kernel.py_func, (m, m, iv, int_t, m, m)),
            ("argmax_match", _argmax_match_kernel.py_func, (m, m, iv))]

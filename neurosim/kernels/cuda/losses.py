"""CUDA twins of :mod:`neurosim.kernels.losses` (same definitions, codes and argument order).

One block per row computes the row's loss and writes ``dL/d out`` (coalesced over the columns);
a second single-block kernel sums the row losses in a fixed order, so the loss is deterministic.
The loss can stay on the device: pass ``loss_out`` (and ``index``) to have it written there instead
of returned, which is what a training loop that records on the device does.
"""

from __future__ import annotations

import math

from numba import cuda

from ..losses import CROSS_ENTROPY, MSE
from ._launch import (
    BLOCK_REDUCE,
    check_float_arrays,
    check_shape,
    grid_rows,
    numba_float,
    specialise,
)
from .reduce import block_max, block_sum

__all__ = ["MSE", "CROSS_ENTROPY", "loss_and_output_grad", "loss_value", "loss_workspace"]


@specialise
def _row_loss_kernel(dtype_name):
    dt = numba_float(dtype_name)
    shape = (BLOCK_REDUCE,)

    @cuda.jit
    def kernel(loss_code, out, Y, grad, row_loss, inv_batch):
        sh = cuda.shared.array(shape, dt)
        t = cuda.threadIdx.x
        nt = cuda.blockDim.x
        batch, n_out = out.shape
        for i in range(cuda.blockIdx.x, batch, cuda.gridDim.x):
            if loss_code == MSE:
                acc = dt(0.0)
                for j in range(t, n_out, nt):
                    e = out[i, j] - Y[i, j]
                    acc += e * e
                    grad[i, j] = e * inv_batch
                total = block_sum(sh, acc)
                if t == 0:
                    row_loss[i] = dt(0.5) * total
            else:
                zmax = dt(-math.inf)
                for j in range(t, n_out, nt):
                    zmax = max(zmax, out[i, j])
                zmax = block_max(sh, zmax)
                acc = dt(0.0)
                for j in range(t, n_out, nt):
                    acc += math.exp(out[i, j] - zmax)
                log_norm = zmax + math.log(block_sum(sh, acc))
                acc = dt(0.0)
                y_acc = dt(0.0)
                for j in range(t, n_out, nt):
                    acc += Y[i, j] * (log_norm - out[i, j])
                    y_acc += Y[i, j]
                total = block_sum(sh, acc)
                y_total = block_sum(sh, y_acc)
                for j in range(t, n_out, nt):
                    grad[i, j] = (y_total * math.exp(out[i, j] - log_norm) - Y[i, j]) * inv_batch
                if t == 0:
                    row_loss[i] = total

    return kernel


@specialise
def _sum_kernel(dtype_name):
    dt = numba_float(dtype_name)
    shape = (BLOCK_REDUCE,)

    @cuda.jit
    def kernel(values, scale, out, index):
        # out[index] = scale * sum(values), one block, fixed order
        sh = cuda.shared.array(shape, dt)
        t = cuda.threadIdx.x
        acc = dt(0.0)
        for i in range(t, values.shape[0], cuda.blockDim.x):
            acc += values[i]
        total = block_sum(sh, acc)
        if t == 0:
            out[index] = total * scale

    return kernel


def loss_workspace(batch: int, dtype):
    """Device workspace (row losses) for :func:`loss_and_output_grad`; allocate once per run."""
    return cuda.device_array(batch, dtype=dtype)


def loss_and_output_grad(loss_code, out, Y, grad, loss_out=None, index=0, work=None):
    """Loss and its gradient with respect to the network output, on the device.

    Parameters
    ----------
    loss_code : int
        ``MSE`` or ``CROSS_ENTROPY``.
    out, Y, grad : device arrays, shape (batch, n_out)
        Network output (logits for cross entropy), targets, and the array that receives
        dL/d out (already divided by the batch size).
    loss_out : device array, shape (n,), optional
        When given, the batch-mean loss is written to ``loss_out[index]`` on the device and
        nothing is copied back; otherwise it is returned.
    index : int
        Slot of ``loss_out``.
    work : device array, shape (batch,), optional
        Row-loss workspace from :func:`loss_workspace` (allocated per call when omitted).

    Returns
    -------
    float or None
        The batch-mean loss (in ``out``'s dtype) when ``loss_out`` is None.
    """
    if loss_code not in (MSE, CROSS_ENTROPY):
        raise ValueError(f"loss_code must be {MSE} (mse) or {CROSS_ENTROPY} (cross_entropy), "
                         f"got {loss_code!r}")
    dtype = check_float_arrays(("out", "Y", "grad"), (out, Y, grad))
    if out.ndim != 2:
        raise ValueError(f"out must have shape (batch, n_out), got {tuple(out.shape)}")
    check_shape("Y", Y, out.shape)
    check_shape("grad", grad, out.shape)
    batch = out.shape[0]
    if work is None:
        work = loss_workspace(batch, dtype)
    check_shape("work", work, (batch,))
    returned = loss_out is None
    if returned:
        loss_out, index = cuda.device_array(1, dtype=dtype), 0
    elif not 0 <= index < loss_out.shape[0]:
        raise ValueError(f"index {index} is outside loss_out of length {loss_out.shape[0]}")
    check_float_arrays(("out", "loss_out"), (out, loss_out))
    inv_batch = dtype.type(1.0 / batch)
    _row_loss_kernel(dtype.name)[grid_rows(batch), BLOCK_REDUCE](
        loss_code, out, Y, grad, work, inv_batch)
    _sum_kernel(dtype.name)[1, BLOCK_REDUCE](work, inv_batch, loss_out, index)
    if returned:
        return loss_out.copy_to_host()[0]
    return None


def loss_value(loss_code, out, Y):
    """Batch-mean loss only (returned to the host), same definitions as the CPU twin."""
    grad = cuda.device_array(out.shape, dtype=out.dtype)
    return loss_and_output_grad(loss_code, out, Y, grad)


def _signatures(dt, int_t, bool_t):
    name, v, m = str(dt), dt[::1], dt[:, ::1]
    return [("row_loss", _row_loss_kernel(name).py_func, (int_t, m, m, m, v, dt)),
            ("sum", _sum_kernel(name).py_func, (v, dt, v, int_t))]

"""Deterministic block reductions and the sum / sum-of-squares kernels built on them.

Every reduction runs in a fixed order (strided per-thread partial sums, then a shared-memory tree
of a power-of-two block), so the same inputs and launch give bit-identical results: no atomics.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
from numba import cuda, float64

from ._launch import (
    BLOCK_REDUCE,
    SIMULATOR,
    check_float_arrays,
    check_shape,
    numba_float,
    specialise,
)

#: blocks that share one segment in :func:`segment_sumsq`
SEGMENT_PARTS = 2 if SIMULATOR else 64

__all__ = ["block_sum", "block_max", "segment_sumsq", "segment_workspace",
           "segment_unit_distances"]


@cuda.jit(device=True)
def block_sum(sh, v):
    """Sum of ``v`` over the block's threads, returned to every thread.

    ``sh`` is a shared array with one slot per thread (a power of two); every thread of the block
    must call this (it synchronises).
    """
    t = cuda.threadIdx.x
    cuda.syncthreads()
    sh[t] = v
    cuda.syncthreads()
    step = sh.shape[0] // 2
    while step > 0:
        if t < step:
            sh[t] += sh[t + step]
        cuda.syncthreads()
        step //= 2
    return sh[0]


@cuda.jit(device=True)
def block_max(sh, v):
    """Maximum of ``v`` over the block's threads, returned to every thread (see block_sum)."""
    t = cuda.threadIdx.x
    cuda.syncthreads()
    sh[t] = v
    cuda.syncthreads()
    step = sh.shape[0] // 2
    while step > 0:
        if t < step:
            sh[t] = max(sh[t], sh[t + step])
        cuda.syncthreads()
        step //= 2
    return sh[0]


@specialise
def _segment_partials_kernel(dtype_name):
    shape = (BLOCK_REDUCE,)

    @cuda.jit
    def kernel(x, y, starts, stops, partials):
        # block (b, s) sums x * y (y = x when empty) over a strided share of segment s, in
        # float64: float32 squares of a vanishing gradient (below 1e-19) would underflow
        sh = cuda.shared.array(shape, float64)
        t = cuda.threadIdx.x
        s = cuda.blockIdx.y
        stride = cuda.gridDim.x * cuda.blockDim.x
        other = y.shape[0] > 0
        acc = float64(0.0)
        for i in range(starts[s] + cuda.blockIdx.x * cuda.blockDim.x + t, stops[s], stride):
            acc += float64(x[i]) * float64(y[i] if other else x[i])
        total = block_sum(sh, acc)
        if t == 0:
            partials[s, cuda.blockIdx.x] = total

    return kernel


@specialise
def _segment_finish_kernel(dtype_name):
    dt = numba_float(dtype_name)
    shape = (BLOCK_REDUCE,)

    @cuda.jit
    def kernel(partials, out, index, squared, guard, guard_index):
        # partials are float64; the result is rounded once, to out's type
        sh = cuda.shared.array(shape, float64)
        t = cuda.threadIdx.x
        s = cuda.blockIdx.x
        acc = float64(0.0)
        for b in range(t, partials.shape[1], cuda.blockDim.x):
            acc += partials[s, b]
        total = block_sum(sh, acc)
        if t == 0:
            value = total if squared else math.sqrt(total)
            if guard.shape[0] > 0 and not math.isfinite(guard[guard_index]):
                value = math.nan
            out[index, s] = dt(value)

    return kernel


def segment_workspace(n_segments: int):
    """Device workspace (float64 partial sums) for :func:`segment_sumsq` (allocate once per
    run)."""
    return cuda.device_array((n_segments, SEGMENT_PARTS), dtype=np.float64)


def segment_sumsq(x, starts, stops, out, index=0, squared=False, work=None, guard=None,
                  guard_index=0, y=None):
    """Per-segment sum of squares (or its square root) of a flat device vector.

    Parameters
    ----------
    x : device array, shape (n,)
        Flat vector (e.g. a model's flat gradient buffer).
    starts, stops : device arrays of int64, shape (n_segments,)
        Segment ``s`` is ``x[starts[s]:stops[s]]``.
    out : device array, shape (n_rows, n_segments) or (n_segments,)
        Row ``index`` receives the result (record buffers are filled row by row on the device).
    index : int
        Row of ``out`` to write (ignored for a 1-D ``out``).
    squared : bool
        Write the sum of squares instead of its square root (the Euclidean norm).
    work : device array of float64, shape (n_segments, SEGMENT_PARTS), optional
        Workspace from :func:`segment_workspace`; allocated per call when omitted. The squares
        are summed in float64 whatever the type of ``x``.
    guard : device array, optional
        When ``guard[guard_index]`` is not finite the results are NaN (a record of a step whose
        loss was not finite, as on the CPU).
    y : device array, shape (n,), optional
        Sum ``x * y`` instead of ``x * x`` (per-segment dot products; use ``squared=True``).
    """
    check_float_arrays(("x", "out"), (x, out))
    n_seg = starts.shape[0]
    check_shape("stops", stops, (n_seg,))
    if out.ndim == 1:
        out, index = out.reshape(1, out.shape[0]), 0
    if out.ndim != 2 or out.shape[1] != n_seg or not 0 <= index < out.shape[0]:
        raise ValueError(
            f"out has shape {tuple(out.shape)}; expected (rows > {index}, {n_seg}) for "
            f"{n_seg} segments"
        )
    if n_seg == 0:
        return
    if work is None:
        work = segment_workspace(n_seg)
    check_shape("work", work, (n_seg, SEGMENT_PARTS))
    name = np.dtype(x.dtype).name
    if guard is None:
        guard = _no_guard(name)
    if y is None:
        y = _no_guard(name)
    else:
        check_shape("y", y, x.shape)
    _segment_partials_kernel(name)[(SEGMENT_PARTS, n_seg), BLOCK_REDUCE](x, y, starts, stops,
                                                                          work)
    _segment_finish_kernel(name)[n_seg, BLOCK_REDUCE](work, out, index, squared, guard,
                                                      guard_index)


@specialise
def _unit_partials_kernel(dtype_name):
    dt = numba_float(dtype_name)
    shape = (BLOCK_REDUCE,)

    @cuda.jit
    def kernel(x, y, starts, stops, nx, ny, index, partials):
        # block (b, s): sums of (x/|x| - y/|y|)^2 and (x/|x| + y/|y|)^2 over segment s
        sh = cuda.shared.array(shape, dt)
        t = cuda.threadIdx.x
        s = cuda.blockIdx.y
        stride = cuda.gridDim.x * cuda.blockDim.x
        a, b = nx[index, s], ny[index, s]
        minus = dt(0.0)
        plus = dt(0.0)
        if a > minus and b > minus:
            for i in range(starts[s] + cuda.blockIdx.x * cuda.blockDim.x + t, stops[s], stride):
                u, g = x[i] / a, y[i] / b
                minus += (u - g) * (u - g)
                plus += (u + g) * (u + g)
        minus = block_sum(sh, minus)
        plus = block_sum(sh, plus)
        if t == 0:
            partials[s, cuda.blockIdx.x] = minus
            partials[s + starts.shape[0], cuda.blockIdx.x] = plus

    return kernel


def segment_unit_distances(x, y, starts, stops, nx, ny, out_minus, out_plus, index=0,
                           work=None):
    """Per segment ``|x/|x| - y/|y||`` and ``|x/|x| + y/|y||`` (their Euclidean norms).

    The angle between two vectors is ``2 atan2(minus, plus)``, accurate near 0 and 180 degrees
    (``arccos`` of the cosine is not).

    Parameters
    ----------
    x, y : device arrays, shape (n,)
    starts, stops : device arrays of int64, shape (n_segments,)
    nx, ny : device arrays, shape (n_rows, n_segments)
        Row ``index`` holds the segment norms of ``x`` and ``y`` (e.g. from
        :func:`segment_sumsq`); a zero norm gives zero distances.
    out_minus, out_plus : device arrays, shape (n_rows, n_segments)
        Row ``index`` receives the distances.
    work : device array of float64, shape (2 * n_segments, SEGMENT_PARTS), optional
    """
    check_float_arrays(("x", "y", "nx", "ny", "out_minus", "out_plus"),
                       (x, y, nx, ny, out_minus, out_plus))
    n_seg = starts.shape[0]
    if n_seg == 0:
        return
    if work is None:
        work = cuda.device_array((2 * n_seg, SEGMENT_PARTS), dtype=np.float64)
    check_shape("work", work, (2 * n_seg, SEGMENT_PARTS))
    name = np.dtype(x.dtype).name
    _unit_partials_kernel(name)[(SEGMENT_PARTS, n_seg), BLOCK_REDUCE](x, y, starts, stops, nx,
                                                                       ny, index, work)
    no_guard = _no_guard(name)
    finish = _segment_finish_kernel(name)[n_seg, BLOCK_REDUCE]
    finish(work[:n_seg], out_minus, index, False, no_guard, 0)
    finish(work[n_seg:], out_plus, index, False, no_guard, 0)


@cache
def _no_guard(dtype_name):
    return cuda.device_array(0, dtype=dtype_name)


def _signatures(dt, int_t, bool_t):
    name, v, m = str(dt), dt[::1], dt[:, ::1]
    iv = int_t[::1]
    p = float64[:, ::1]  # partial sums
    return [("segment_partials", _segment_partials_kernel(name).py_func, (v, v, iv, iv, p)),
            ("unit_partials", _unit_partials_kernel(name).py_func,
             (v, v, iv, iv, m, m, int_t, p)),
            ("segment_finish", _segment_finish_kernel(name).py_func,
             (p, m, int_t, bool_t, v, int_t))]

"""Tiled shared-memory matrix product with fused epilogues (numba's CUDA target has no cuBLAS).

``C = op(A) @ op(B)``, ``op`` = identity or transpose, accumulated in the arrays' dtype. Each
block computes a ``BM x BN`` tile of ``C`` from ``BK``-deep slabs staged in shared memory; each
thread keeps a ``TM x TN`` register tile. A thread's rows and columns are strided by the number of
thread rows/columns, so warps read shared memory without bank conflicts and store ``C``
coalesced. Tiles at the edges are guarded: any M, N, K works.

Epilogues (compile-time, fused into the store):

- ``STORE``: ``C = alpha * acc + beta * R`` (``R`` may be C; not read when beta == 0).
- ``BIAS_ACT``: ``H = alpha * acc + bias[n]`` and ``C = phi(H)`` (dense forward; H is written when
  ``aux`` has rows, so inference can skip it).
- ``DPHI``: ``C = alpha * acc * phi'(h)`` with ``h`` (and ``phi(h)``) of the layer below
  (backprop of the error through a dense layer).
- ``RATE_STEP`` / ``CURRENT_STEP``: one Euler step ``r + a (phi(s) - r)`` / ``v + a (s - v)`` of
  rate dynamics, ``s`` the product plus optional bias, input and noise.

Global loads of the next ``BK`` slab are issued before the products on the current one, so their
latency hides behind arithmetic. Activation parameters are kernel scalars; a learnable PReLU slope
is read from the device.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
from numba import cuda

from ._launch import SIMULATOR, check_float_arrays, check_shape, numba_float, specialise
from .activations import dphi, phi

__all__ = ["STORE", "BIAS_ACT", "DPHI", "RATE_STEP", "CURRENT_STEP", "TILES", "gemm", "gemm_add",
           "gemm_bias_act", "gemm_dphi", "gemm_step"]

STORE = 0
BIAS_ACT = 1
DPHI = 2
RATE_STEP = 3
CURRENT_STEP = 4

#: (BM, BN, BK, TM, TN) per dtype: register-blocked tiles for a GPU, tiny ones for the simulator
TILES = {
    "float32": (128, 128, 8, 8, 8),
    "float64": (64, 64, 8, 4, 4),
}
SIMULATOR_TILES = (8, 8, 4, 2, 2)


def tiles_for(dtype_name: str) -> tuple[int, int, int, int, int]:
    """Tile configuration used for a dtype on this machine."""
    return SIMULATOR_TILES if SIMULATOR else TILES[dtype_name]


@specialise
def _epilogue(epilogue):
    """Device function storing ``v`` (the product at ``(m, n)`` times alpha) into ``C``."""

    @cuda.jit(device=True, inline="always")
    def store(C, m, n, v, bias, X1, X2, X3, code, p0, p1, p2, beta):
        if epilogue == STORE:
            if bias.shape[0] > 0:
                v += bias[n]
            C[m, n] = v if beta == 0 else v + beta * X1[m, n]
        elif epilogue == BIAS_ACT:
            h = v + bias[n]
            if X1.shape[0] > 0:
                X1[m, n] = h
            C[m, n] = phi(code, h, p0, p1, p2)
        elif epilogue == DPHI:
            C[m, n] = v * dphi(code, X1[m, n], X2[m, n], p0, p1, p2)
        else:
            if bias.shape[0] > 0:
                v += bias[n]
            if X2.shape[0] > 0:
                v += X2[m, n]
            if X3.shape[0] > 0:
                v += X3[m, n]
            old = X1[m, n]
            if epilogue == RATE_STEP:
                C[m, n] = old + beta * (phi(code, v, p0, p1, p2) - old)
            else:
                C[m, n] = old + beta * (v - old)

    return store


@specialise
def _gemm_kernel(dtype_name, trans_a, trans_b, epilogue, tiles):
    dt = numba_float(dtype_name)
    BM, BN, BK, TM, TN = tiles
    RY, RX = BM // TM, BN // TN  # thread rows / columns
    THREADS = RY * RX
    A_LOADS, B_LOADS = BM * BK // THREADS, BK * BN // THREADS
    if A_LOADS * THREADS != BM * BK or B_LOADS * THREADS != BK * BN:
        raise ValueError(f"tiles {tiles}: a BMxBK or BKxBN slab must split evenly over threads")
    # one column of padding keeps the transposing shared-memory stores free of bank conflicts
    A_SHAPE, B_SHAPE, ACC_SHAPE = (BK, BM + 1), (BK, BN + 1), (TM, TN)
    store = _epilogue(epilogue)

    @cuda.jit
    def kernel(A, B, C, bias, X1, X2, X3, code, p0, p1, p2, slope, alpha, beta):
        As = cuda.shared.array(A_SHAPE, dt)  # As[k, m] = op(A)[m0 + m, k0 + k]
        Bs = cuda.shared.array(B_SHAPE, dt)  # Bs[k, n] = op(B)[k0 + k, n0 + n]
        acc = cuda.local.array(ACC_SHAPE, dt)
        a_frag = cuda.local.array(TM, dt)
        b_frag = cuda.local.array(TN, dt)
        a_next = cuda.local.array(A_LOADS, dt)  # the next slab, loaded while this one is used
        b_next = cuda.local.array(B_LOADS, dt)
        M, N = C.shape
        K = A.shape[0] if trans_a else A.shape[1]
        t = cuda.threadIdx.x
        ty, tx = t // RX, t % RX
        m0 = cuda.blockIdx.y * BM
        n0 = cuda.blockIdx.x * BN
        zero = dt(0.0)
        for i in range(TM):
            for j in range(TN):
                acc[i, j] = zero
        for k0 in range(0, K + BK, BK):
            if k0 > 0:  # stage the slab loaded in the previous round, then compute on it
                for r in range(A_LOADS):
                    idx = t + r * THREADS
                    if trans_a:
                        As[idx // BM, idx % BM] = a_next[r]
                    else:
                        As[idx % BK, idx // BK] = a_next[r]
                for r in range(B_LOADS):
                    idx = t + r * THREADS
                    if trans_b:
                        Bs[idx % BK, idx // BK] = b_next[r]
                    else:
                        Bs[idx // BN, idx % BN] = b_next[r]
                cuda.syncthreads()
            if k0 < K:  # global loads of the next slab, in flight during the products below
                for r in range(A_LOADS):
                    idx = t + r * THREADS
                    if trans_a:  # A stored (K, M): consecutive threads walk m
                        gk, gm = k0 + idx // BM, m0 + idx % BM
                        a_next[r] = A[gk, gm] if (gk < K and gm < M) else zero
                    else:  # A stored (M, K): consecutive threads walk k
                        gk, gm = k0 + idx % BK, m0 + idx // BK
                        a_next[r] = A[gm, gk] if (gk < K and gm < M) else zero
                for r in range(B_LOADS):
                    idx = t + r * THREADS
                    if trans_b:  # B stored (N, K)
                        gk, gn = k0 + idx % BK, n0 + idx // BK
                        b_next[r] = B[gn, gk] if (gk < K and gn < N) else zero
                    else:  # B stored (K, N)
                        gk, gn = k0 + idx // BN, n0 + idx % BN
                        b_next[r] = B[gk, gn] if (gk < K and gn < N) else zero
            if k0 > 0:
                for kk in range(BK):
                    for i in range(TM):
                        a_frag[i] = As[kk, ty + i * RY]
                    for j in range(TN):
                        b_frag[j] = Bs[kk, tx + j * RX]
                    for i in range(TM):
                        for j in range(TN):
                            acc[i, j] += a_frag[i] * b_frag[j]
                cuda.syncthreads()
        if slope.shape[0] > 0:
            p0 = slope[0]
        for i in range(TM):
            m = m0 + ty + i * RY
            if m < M:
                for j in range(TN):
                    n = n0 + tx + j * RX
                    if n < N:
                        store(C, m, n, alpha * acc[i, j], bias, X1, X2, X3, code, p0, p1, p2,
                              beta)

    return kernel, THREADS


@specialise
def _gemv_kernel(dtype_name, epilogue, rows, warps):
    """``C = A @ B.T`` for a few rows of A (at most ``rows``), B stored (N, K) row-major.

    Memory-bound products (a single trial of a recurrent network: the whole coupling matrix is
    read per step) want every byte of B read once, coalesced: one warp per output column ``n``
    walks row ``n`` of B, keeping one partial sum per row of A, then the warp's lanes are summed
    in shared memory.
    """
    dt = numba_float(dtype_name)
    W = 32 if not SIMULATOR else 4  # lanes per output column
    SH = (rows, warps, W)
    store = _epilogue(epilogue)

    @cuda.jit
    def kernel(A, B, C, bias, X1, X2, X3, code, p0, p1, p2, slope, alpha, beta):
        sh = cuda.shared.array(SH, dt)
        part = cuda.local.array(rows, dt)
        lane = cuda.threadIdx.x % W
        warp = cuda.threadIdx.x // W
        M, N = C.shape
        K = A.shape[1]
        if slope.shape[0] > 0:
            p0 = slope[0]
        for n0 in range(cuda.blockIdx.x * warps, N, cuda.gridDim.x * warps):
            n = n0 + warp
            for r in range(rows):
                part[r] = dt(0.0)
            if n < N:
                for k in range(lane, K, W):
                    b = B[n, k]
                    for r in range(rows):
                        if r < M:
                            part[r] += A[r, k] * b
            for r in range(rows):
                sh[r, warp, lane] = part[r]
            cuda.syncthreads()
            step = W // 2
            while step > 0:
                if lane < step:
                    for r in range(rows):
                        sh[r, warp, lane] += sh[r, warp, lane + step]
                cuda.syncthreads()
                step //= 2
            if lane == 0 and n < N:
                for r in range(rows):
                    if r < M:
                        store(C, r, n, alpha * sh[r, warp, 0], bias, X1, X2, X3, code, p0, p1,
                              p2, beta)
            cuda.syncthreads()

    return kernel, W * warps


#: products with at most this many rows of A and a transposed B use the GEMV kernel
GEMV_MAX_ROWS = 4
GEMV_WARPS = 2 if SIMULATOR else 8


def _launch(A, B, C, bias, X1, X2, X3, code, params, slope, alpha, beta, trans_a, trans_b,
            epilogue):
    dtype = check_float_arrays(("A", "B", "C"), (A, B, C))
    for name, arr in (("A", A), ("B", B), ("C", C)):
        if arr.ndim != 2:
            raise ValueError(f"{name} must be 2-D, got shape {tuple(arr.shape)}")
    M, K = (A.shape[1], A.shape[0]) if trans_a else A.shape
    Kb, N = (B.shape[1], B.shape[0]) if trans_b else B.shape
    if Kb != K:
        raise ValueError(f"inner dimensions differ: op(A) is {M}x{K} but op(B) is {Kb}x{N}")
    check_shape("C", C, (M, N))
    if M == 0 or N == 0:
        return
    p0, p1, p2 = (dtype.type(v) for v in _host_params(params))
    if slope is None:
        slope = _placeholders(dtype.name)[0]
    check_float_arrays(("C", "slope"), (C, slope))
    if trans_b and not trans_a and M <= GEMV_MAX_ROWS:
        rows = 1 if M == 1 else GEMV_MAX_ROWS
        kernel, threads = _gemv_kernel(dtype.name, epilogue, rows, GEMV_WARPS)
        blocks = min(math.ceil(N / GEMV_WARPS), 4 if SIMULATOR else 65535)
        kernel[blocks, threads](A, B, C, bias, X1, X2, X3, code, p0, p1, p2, slope,
                                dtype.type(alpha), dtype.type(beta))
        return
    tiles = tiles_for(dtype.name)
    kernel, threads = _gemm_kernel(dtype.name, bool(trans_a), bool(trans_b), epilogue, tiles)
    grid = (math.ceil(N / tiles[1]), math.ceil(M / tiles[0]))
    if grid[1] > 65535:
        raise ValueError(f"{M} rows exceed the launch grid ({65535 * tiles[0]} rows at most)")
    kernel[grid, threads](A, B, C, bias, X1, X2, X3, code, p0, p1, p2, slope, dtype.type(alpha),
                          dtype.type(beta))


def _host_params(params):
    if hasattr(params, "copy_to_host"):
        raise TypeError("params must be a host array of shape (3,) (a learnable PReLU slope on "
                        "the device goes in slope=)")
    params = np.asarray(params)
    if params.shape != (3,):
        raise ValueError(f"params has shape {params.shape}; expected (3,)")
    return params


@cache
def _placeholders(dtype_name):
    # stand-ins for the vector / matrix arguments an epilogue does not use
    return cuda.device_array(0, dtype=dtype_name), cuda.device_array((0, 0), dtype=dtype_name)


def gemm(A, B, C, trans_a=False, trans_b=False, alpha=1.0, beta=0.0):
    """``C = alpha * op(A) @ op(B) + beta * C`` on the device.

    Parameters
    ----------
    A : device array, shape (M, K), or (K, M) with ``trans_a``
    B : device array, shape (K, N), or (N, K) with ``trans_b``
    C : device array, shape (M, N)
        Output; only read when ``beta != 0``.
    trans_a, trans_b : bool
        Use the transpose of A / B.
    alpha, beta : float
    """
    gemm_add(A, B, C, C, trans_a, trans_b, alpha, beta)


def gemm_add(A, B, R, C, trans_a=False, trans_b=False, alpha=1.0, beta=1.0, bias=None):
    """``C = alpha * op(A) @ op(B) (+ bias[None, :]) + beta * R``.

    ``R`` may be ``C`` (it is not read when beta == 0); ``bias`` is an optional (N,) vector.
    """
    vec, mat = _placeholders(np.dtype(C.dtype).name)
    check_shape("R", R, C.shape)
    if bias is not None:
        check_shape("bias", bias, (C.shape[1],))
    _launch(A, B, C, vec if bias is None else bias, R, mat, mat, 0, _ZEROS3, None, alpha, beta,
            trans_a, trans_b, STORE)


def gemm_step(A, B, C, R_old, a, code, params, form, bias=None, I=None, noise=None,
              trans_b=False, slope=None):
    """One integration step of a rate dynamics with the product fused in.

    ``s = op(A) @ op(B) (+ bias) (+ I) (+ noise)`` and then ``C = r + a (phi(s) - r)``
    (``form == RATE_STEP``) or ``C = r + a (s - r)`` (``form == CURRENT_STEP``), with
    ``r = R_old``. ``C`` may be ``R_old`` when the product does not read it.

    Parameters
    ----------
    A : device array, shape (M, K)
    B : device array, shape (K, N), or (N, K) with ``trans_b``
    C, R_old : device arrays, shape (M, N)
    a : float
        Integration coefficient.
    code, params, slope
        Activation (RATE_STEP only).
    form : int
        ``RATE_STEP`` or ``CURRENT_STEP``.
    bias : device array, shape (N,), optional
    I, noise : device arrays, shape (M, N), optional
    """
    if form not in (RATE_STEP, CURRENT_STEP):
        raise ValueError(f"form must be RATE_STEP or CURRENT_STEP, got {form!r}")
    vec, mat = _placeholders(np.dtype(C.dtype).name)
    check_shape("R_old", R_old, C.shape)
    for name, arr in (("I", I), ("noise", noise)):
        if arr is not None:
            check_shape(name, arr, C.shape)
    if bias is not None:
        check_shape("bias", bias, (C.shape[1],))
    _launch(A, B, C, vec if bias is None else bias, R_old, mat if I is None else I,
            mat if noise is None else noise, code, params, slope, 1.0, a, False, trans_b, form)


def gemm_bias_act(A, W, bias, code, params, H, out, trans_b=False, slope=None):
    """Dense forward on the device: ``H = A @ W + bias`` and ``out = phi(H)`` in one pass.

    Parameters
    ----------
    A : device array, shape (batch, n_in)
    W : device array, shape (n_in, n_out), or (n_out, n_in) with ``trans_b``
    bias : device array, shape (n_out,)
    code : int
        Activation code.
    params : ndarray, shape (3,)
        Activation parameters (host array; passed to the kernel as scalars).
    H : device array, shape (batch, n_out), or shape (0, 0) to skip storing the pre-activation
    out : device array, shape (batch, n_out)
    slope : device array, shape (1,), optional
        A learnable PReLU slope on the device; replaces ``params[0]``.
    """
    n_out = out.shape[1]
    check_float_arrays(("out", "bias", "H"), (out, bias, H))
    check_shape("bias", bias, (n_out,))
    if H.shape[0]:
        check_shape("H", H, out.shape)
    _launch(A, W, out, bias, H, H, H, code, params, slope, 1.0, 0.0, False, trans_b, BIAS_ACT)


def gemm_dphi(D, W, H_prev, U_prev, code, params, out, trans_b=True, slope=None):
    """Error through a dense layer: ``out = (D @ W.T) * phi'(H_prev)`` in one pass.

    Parameters
    ----------
    D : device array, shape (batch, n_out)
        Error at the layer's pre-activation.
    W : device array, shape (n_in, n_out) (used transposed; ``trans_b=False`` takes W as
        (n_out, n_in), e.g. a feedback matrix stored that way)
    H_prev, U_prev : device arrays, shape (batch, n_in)
        Pre-activation of the layer below and ``phi`` of it.
    code : int
        Activation code of the layer below.
    params : ndarray, shape (3,)
    out : device array, shape (batch, n_in)
    slope : device array, shape (1,), optional
    """
    check_float_arrays(("out", "H_prev", "U_prev"), (out, H_prev, U_prev))
    check_shape("H_prev", H_prev, out.shape)
    check_shape("U_prev", U_prev, out.shape)
    vec, _ = _placeholders(np.dtype(out.dtype).name)
    _launch(D, W, out, vec, H_prev, U_prev, U_prev, code, params, slope, 1.0, 0.0, False, trans_b,
            DPHI)


_ZEROS3 = np.zeros(3)


def _signatures(dt, int_t, bool_t):
    name, v, m = str(dt), dt[::1], dt[:, ::1]
    out = []
    for epilogue, label in ((STORE, "store"), (BIAS_ACT, "bias_act"), (DPHI, "dphi"),
                            (RATE_STEP, "rate_step"), (CURRENT_STEP, "current_step")):
        for trans_a, trans_b in ((False, False), (False, True), (True, False), (True, True)):
            kernel, _ = _gemm_kernel(name, trans_a, trans_b, epilogue, TILES[name])
            out.append((f"gemm_{label}_{'NT'[trans_a]}{'NT'[trans_b]}", kernel.py_func,
                        (m, m, m, v, m, m, m, int_t, dt, dt, dt, v, dt, dt)))
        for rows in (1, GEMV_MAX_ROWS):
            kernel, _ = _gemv_kernel(name, epilogue, rows, 8)
            out.append((f"gemv_{label}_{rows}", kernel.py_func,
                        (m, m, m, v, m, m, m, int_t, dt, dt, dt, v, dt, dt)))
    return out

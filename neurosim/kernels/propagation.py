"""Per-layer norms of the backpropagated signal of an MLP, without forming weight gradients.

:func:`backward_norms` runs the backward pass of :func:`neurosim.kernels.dense.mlp_backward` on
the workspaces of :func:`neurosim.kernels.dense.mlp_forward` (with the engine's own layer
kernel, :func:`neurosim.kernels.dense.activation_backward`) but keeps only what a propagation
profile needs: ``||dL/dW_l||_F^2``, ``||dL/db_l||^2``, the batch mean of ``||delta_l||`` and of
``||delta_l||^2``, and the mean of ``phi'(h_l)^2``. The weight-gradient norm comes from the
identity ``||A^T E||_F^2 = sum((A A^T) * (E E^T))`` when the two ``nb x nb`` Gram matrices are
cheaper than the ``n_in x n`` product (``nb (n_in + n) < 2 n_in n``, e.g. batch 64 and width
256), so a layer costs the forward product, the product that carries the error down, and two
symmetric rank-k updates (BLAS ``syrk``, half a Gram product each).

``syrk`` is reached through SciPy's Cython BLAS, the library numba's own ``np.dot`` calls: its
address is registered with LLVM under a fixed symbol name at import, so compiled code refers to
the name and stays cacheable.
"""

import math

import llvmlite.binding as ll
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import get_cython_function_address, intrinsic

from .activations import TANH, dphi
from .dense import (
    ACT,
    B_OFF,
    DROPOUT,
    FASTMATH,
    N_IN,
    N_OUT,
    W_OFF,
    _act_params,
    activation_backward,
    block,
    error_below,
    has_separate_outputs,
    layer_input,
)
from .optim import REDUCE_FASTMATH, sumsq64
from .scalar import like
from .smallgemm import matmul_into

for _name in ("dsyrk", "ssyrk"):
    ll.add_symbol(f"neurosim_{_name}",
                  get_cython_function_address("scipy.linalg.cython_blas", _name))


@intrinsic
def _syrk(typingctx, a, out, chars, ints, scalars):
    """Fortran ``?syrk(uplo, trans, n, k, alpha, a, lda, beta, c, ldc)`` with every argument
    taken from the data of small arrays: ``chars`` (uint8: uplo, trans), ``ints`` (int32: n, k,
    lda, ldc), ``scalars`` (alpha, beta in the dtype of ``a``)."""
    if (not isinstance(a, types.Array) or a.dtype not in (types.float32, types.float64)
            or out.dtype != a.dtype or scalars.dtype != a.dtype):
        return None
    symbol = "neurosim_dsyrk" if a.dtype == types.float64 else "neurosim_ssyrk"
    width = 8 if a.dtype == types.float64 else 4

    def codegen(context, builder, signature, args):
        i8p = ir.IntType(8).as_pointer()
        ptrs = [builder.bitcast(context.make_array(ty)(context, builder, val).data, i8p)
                for ty, val in zip(signature.args, args, strict=True)]
        pa, pc, pch, pint, psc = ptrs

        def at(ptr, index, size):
            return builder.gep(ptr, [ir.Constant(ir.IntType(64), index * size)])

        fn = cgutils.get_or_insert_function(builder.module,
                                            ir.FunctionType(ir.VoidType(), [i8p] * 10), symbol)
        builder.call(fn, [at(pch, 0, 1), at(pch, 1, 1), at(pint, 0, 4), at(pint, 1, 4),
                          at(psc, 0, width), pa, at(pint, 2, 4), at(psc, 1, width), pc,
                          at(pint, 3, 4)])
        return context.get_dummy_value()

    return types.void(a, out, chars, ints, scalars), codegen


@njit(cache=True)
def gram_lower(a, out, chars, ints, scalars):
    """Lower triangle (C order) of ``out = a a^T`` for a C-contiguous ``a`` of shape (m, k).

    ``chars``, ``ints``, ``scalars``: scratch arrays of sizes 2 (uint8), 4 (int32) and 2 (the
    dtype of ``a``). The strict upper triangle of ``out`` is left untouched.
    """
    m, k = a.shape
    chars[0] = 85  # "U": the upper triangle of the column-major (m, m) result
    chars[1] = 84  # "T": a is a column-major (k, m) matrix, so a a^T = a_F^T a_F
    ints[0] = m
    ints[1] = k
    ints[2] = k
    ints[3] = m
    scalars[0] = 1.0
    scalars[1] = 0.0
    _syrk(a, out, chars, ints, scalars)


@njit(cache=True, error_model="numpy", fastmath=FASTMATH)
def _signal_stats(delta, delta_sum, h, u, code, p0, p1, p2, scratch, out, l):
    """Writes ``out[1:5, l]``: ``||delta_sum||^2``, the batch means of ``||delta_i||`` and
    ``||delta_i||^2``, and the mean of ``phi'(h)^2`` (``a = u``) over the batch and units.

    The elementwise pass has no reductions (so it vectorises); the sums of squares of the
    signal are accumulated in float64. ``scratch`` holds at least ``nb * n`` values.
    """
    nb, n = h.shape
    d2 = scratch[:nb * n].reshape((nb, n))
    if code == TANH:
        one = like(h, 1.0)
        for i in range(nb):
            for j in range(n):
                d2[i, j] = one - u[i, j] * u[i, j]
    else:
        for i in range(nb):
            for j in range(n):
                d2[i, j] = dphi(code, h[i, j], u[i, j], p0, p1, p2)
    norm_sum = 0.0
    sq_sum = 0.0
    d2_sum = 0.0
    for i in range(nb):
        row = sumsq64(delta[i])  # float64: a vanishing float32 delta squares below 1e-38
        norm_sum += np.sqrt(row)
        sq_sum += row
        d2_sum += np.float64(np.dot(d2[i], d2[i]))
    out[1, l] = sumsq64(delta_sum)
    out[2, l] = norm_sum / nb
    out[3, l] = sq_sum / nb
    out[4, l] = d2_sum / (nb * n)


@njit(cache=True, error_model="numpy", fastmath=FASTMATH)
def _frobenius_sq_of_product(a, e, ga, ge, scratch, e_scaled):
    """``||a^T e||_F^2`` for ``a`` (nb, n_in), ``e`` (nb, n); Gram form when it is cheaper.

    When the squares of ``e`` would underflow or overflow (a vanishing or exploding float32
    signal), the Gram matrix ``e e^T`` is formed from ``e`` times a power of two that brings its
    largest entry near 1 (written to ``e_scaled``, ``>= nb * n`` values; the scaling is exact).
    """
    nb, n_in = a.shape
    n = e.shape[1]
    total = 0.0
    if nb * (n_in + n) < 2 * n_in * n:
        gA = ga[:nb * nb].reshape((nb, nb))
        gE = ge[:nb * nb].reshape((nb, nb))
        chars = np.empty(2, np.uint8)
        ints = np.empty(4, np.int32)
        scalars = np.empty(2, a.dtype)
        gram_lower(a, gA, chars, ints, scalars)
        scale = _power_of_two_scale(e)
        if scale != 1.0:
            es = e_scaled[:nb * n].reshape((nb, n))
            factor = like(e, scale)
            for i in range(nb):
                for j in range(n):
                    es[i, j] = e[i, j] * factor
            gram_lower(es, gE, chars, ints, scalars)
        else:
            gram_lower(e, gE, chars, ints, scalars)
        off = 0.0
        for i in range(nb):
            total += np.float64(gA[i, i]) * np.float64(gE[i, i])
            for k in range(i):
                off += np.float64(gA[i, k]) * np.float64(gE[i, k])
        return (total + 2.0 * off) / (scale * scale)
    prod = scratch[:n_in * n].reshape((n_in, n))
    matmul_into(a.T, e, prod)
    for i in range(n_in):
        for j in range(n):
            total += np.float64(prod[i, j]) * np.float64(prod[i, j])
    return total


@njit(cache=True, error_model="numpy", fastmath=REDUCE_FASTMATH)
def _power_of_two_scale(x):
    """1 when the squares of ``x`` are safely inside its float type's range (largest entry in
    [2^-40, 2^40]); otherwise ``2^-e`` with ``2^(e-1) <= max|x| < 2^e``, ``e`` clamped to
    [-100, 100] (exact in float32 and float64). 1 for an all-zero ``x`` or one with NaN or inf.
    """
    largest = like(x, 0.0)
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            largest = max(largest, abs(x[i, j]))
    if not (largest > 0.0 and np.isfinite(largest)):
        return 1.0
    exponent = math.frexp(np.float64(largest))[1]
    if -40 <= exponent <= 40:
        return 1.0
    return math.ldexp(1.0, -min(max(exponent, -100), 100))


@njit(cache=True, nogil=True, error_model="numpy", fastmath=FASTMATH)
def backward_norms(layout, act_params, params, X, training, H, U, A, MK, G0, G1, DL, GA, GE, P,
                   out):
    """Backward pass that records per-layer norms instead of gradients (no batch norm).

    Takes the arguments of :func:`neurosim.kernels.dense.mlp_backward` after the same
    :func:`~neurosim.kernels.dense.mlp_forward`, without the batch-norm workspaces (``XH``,
    ``ST``, ``E``) and with these scratch buffers in place of ``D`` and ``grad``:

    DL : ndarray, shape (>= nb * max(n_l),)
        ``delta_l`` of the current layer.
    GA, GE : ndarray, shape (>= nb * nb,)
        The Gram matrices.
    P : ndarray
        ``max(n_in n)`` values over the layers whose gradient norm is formed directly (may be
        empty when every layer uses the Gram form).
    out : ndarray of float64, shape (7, L)
        Written per layer: ``||dL/dW_l||_F^2``, ``||dL/db_l||^2``, batch mean of
        ``||delta_l||``, batch mean of ``||delta_l||^2``, mean of ``phi'(h_l)^2`` over the
        batch and units, and the parameters' ``||W_l||_F^2`` and ``||b_l||^2`` (read just
        before the product that carries the error down reads ``W_l`` again: one pass over
        the weights fewer than a separate norm).
    """
    nb = X.shape[0]
    separate = has_separate_outputs(layout)
    widest = 0
    for l in range(layout.shape[0]):
        widest = max(widest, layout[l, N_OUT])
    delta_sum = np.empty(widest, X.dtype)
    cur = G0
    nxt = G1
    for l in range(layout.shape[0] - 1, -1, -1):
        n = layout[l, N_OUT]
        n_in = layout[l, N_IN]
        g = cur[:nb * n].reshape((nb, n))
        delta = DL[:nb * n].reshape((nb, n))
        use_mask = training and layout[l, DROPOUT] == 1
        p0, p1, p2 = _act_params(layout, act_params, params, l)
        h = block(H, nb, layout, l)
        u = block(U, nb, layout, l)
        code = layout[l, ACT]
        activation_backward(g, block(MK, nb, layout, l) if use_mask else g, use_mask, h, u,
                            code, p0, p1, p2, delta, delta_sum[:n])
        _signal_stats(delta, delta_sum[:n], h, u, code, p0, p1, p2, nxt, out, l)
        a_prev = layer_input(X, A, U, nb, layout, l, separate)
        out[0, l] = _frobenius_sq_of_product(a_prev, delta, GA, GE, P, nxt)
        w_flat = params[layout[l, W_OFF]:layout[l, W_OFF] + n_in * n]
        b_flat = params[layout[l, B_OFF]:layout[l, B_OFF] + n]
        out[5, l] = np.float64(np.dot(w_flat, w_flat))
        out[6, l] = np.float64(np.dot(b_flat, b_flat))
        if l > 0:
            error_below(delta, g, params, layout, l, nxt[:nb * n_in].reshape((nb, n_in)))
            cur, nxt = nxt, cur

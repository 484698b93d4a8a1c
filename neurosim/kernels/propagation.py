"""Per-layer norms of the backpropagated signal of an MLP, without forming weight gradients.

:func:`profile_pass` runs the forward pass of :func:`neurosim.kernels.dense.mlp_forward`, the
loss, and the backward pass of :func:`neurosim.kernels.dense.mlp_backward` (with the engine's
own layer kernels) but keeps only what a propagation profile needs: ``||dL/dW_l||_F^2``,
``||dL/db_l||^2``, the batch mean of ``||delta_l||`` and of ``||delta_l||^2``, and the mean of
``phi'(h_l)^2``. The weight-gradient norm comes from the identity
``||A^T E||_F^2 = sum((A A^T) * (E E^T))`` when the two ``nb x nb`` Gram matrices are cheaper
than the ``n_in x n`` product (``nb (n_in + n) < 2 n_in n``, e.g. batch 64 and width 256), so a
layer costs the forward product, the product that carries the error down, and two symmetric
rank-k updates (BLAS ``syrk``, half a Gram product each).

Each layer's products and passes are split into two column chunks that threads share (one
thread takes both in turn); sums are formed per chunk and added in chunk order, so the numbers
are the same on any number of threads.

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
from .chunked import MAX_CHUNKS, chunk_bounds, error_below_chunked, forward_loss_chunked
from .dense import (
    ACT,
    B_OFF,
    DROPOUT,
    FASTMATH,
    N_IN,
    N_OUT,
    SKIP,
    W_OFF,
    _act_params,
    activation_backward_cols,
    block,
    has_separate_outputs,
    layer_input,
    weight,
)
from .optim import REDUCE_FASTMATH, sumsq64
from .scalar import like
from .smallgemm import fits_block_kernels, matmul_part_into
from .sync import barrier

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
    """Lower triangle (C order) of ``out = a a^T`` for ``a`` of shape (m, k) with contiguous
    rows (a column slice of a C-contiguous array is fine).

    ``chars``, ``ints``, ``scalars``: scratch arrays of sizes 2 (uint8), 4 (int32) and 2 (the
    dtype of ``a``). Entries of the strict upper triangle may be written too.

    When ``m`` splits into two halves that are whole panels of the block kernels, ``out`` is
    formed by two of their products, the left half of the columns and the lower right block
    (3/4 of a full product, and faster than BLAS ``syrk`` on such small matrices: 10 against
    15 us at 64 x 128 in float32 with AVX2 kernels); otherwise by ``syrk``.
    """
    m, k = a.shape
    half = m // 2
    if m % 2 == 0 and half > 0:
        left = out[:, :half]
        lower = a[half:]
        if fits_block_kernels(a, a[:half].T, left) and fits_block_kernels(
                lower, lower.T, out[half:, half:]):
            matmul_part_into(a, a[:half].T, left)
            matmul_part_into(lower, lower.T, out[half:, half:])
            return
    chars[0] = 85  # "U": the upper triangle of the column-major (m, m) result
    chars[1] = 84  # "T": a is a column-major (k, m) matrix, so a a^T = a_F^T a_F
    ints[0] = m
    ints[1] = k
    ints[2] = max(a.strides[0] // a.itemsize, k) if m > 1 else max(k, 1)
    ints[3] = m
    scalars[0] = 1.0
    scalars[1] = 0.0
    _syrk(a, out, chars, ints, scalars)


# Per-chunk values of the current layer: float64 array ``parts`` of shape (MAX_CHUNKS, N_PARTS).
PART_DSUM = 0  # ||sum_i delta[i, chunk]||^2
PART_DPHI = 1  # sum of phi'(h)^2 over the batch and the chunk's units
PART_WSQ = 2  # ||W[chunk of inputs, :]||_F^2
PART_BSQ = 3  # ||b[chunk]||^2
PART_GRAD = 4  # ||a^T delta[:, chunk]||_F^2 (direct form)
PART_SCALE = 5  # power of two delta[:, chunk] was scaled by before its Gram matrix
N_PARTS = 6


@njit(cache=True)
def uses_gram_form(nb, n_in, n):
    """True when ``||a^T delta||_F^2`` of a layer is formed from two ``nb x nb`` Gram matrices
    (cheaper than the ``n_in x n`` product)."""
    return nb * (n_in + n) < 2 * n_in * n


@njit(cache=True, error_model="numpy", fastmath=FASTMATH)
def _backward_chunk(g, mask, use_mask, h, u, code, p0, p1, p2, delta, delta_sum, scratch, b,
                    a_prev, gram, lo, hi, ge, prod, row_sq, parts, syrk_args):
    """Statistics of the units ``lo:hi`` of a layer's error signal (``g``, ``mask``, ``h``,
    ``u``, ``delta``, ``scratch``: whole ``(nb, n)`` arrays; ``delta_sum``, ``b``: ``(n,)``);
    ``a_prev`` is the layer's input.

    Writes those columns of ``delta`` and ``delta_sum``, ``row_sq[i] = ||delta[i, lo:hi]||^2``
    (float64) and the ``parts`` entries but ``PART_WSQ``; in Gram form ``ge`` gets the lower
    triangle of ``delta[:, lo:hi] delta[:, lo:hi]^T`` (``delta`` scaled by
    ``parts[PART_SCALE]``), otherwise ``prod = a_prev^T delta[:, lo:hi]``.
    """
    nb = h.shape[0]
    activation_backward_cols(g, mask, use_mask, h, u, code, p0, p1, p2, delta, delta_sum, lo,
                             hi)
    one = like(h, 1.0)
    dphi_sq = 0.0
    for i in range(nb):  # rows as slices indexed from 0 (see dense.bias_activation_cols)
        d2 = scratch[i, lo:hi]
        ur = u[i, lo:hi]
        if code == TANH:
            for j in range(d2.shape[0]):
                d2[j] = one - ur[j] * ur[j]
        else:
            hr = h[i, lo:hi]
            for j in range(d2.shape[0]):
                d2[j] = dphi(code, hr[j], ur[j], p0, p1, p2)
        row_sq[i] = sumsq64(delta[i, lo:hi])  # float64: float32 squares underflow below 1e-38
        dphi_sq += sumsq64(d2)
    parts[PART_DSUM] = sumsq64(delta_sum[lo:hi])
    parts[PART_DPHI] = dphi_sq
    parts[PART_BSQ] = sumsq64(b[lo:hi])
    if not gram:
        matmul_part_into(a_prev.T, delta[:, lo:hi], prod)
        total = 0.0
        for r in range(prod.shape[0]):
            total += sumsq64(prod[r])
        parts[PART_GRAD] = total
        return
    chars, ints, scalars = syrk_args
    scale = _power_of_two_scale(delta, lo, hi)
    parts[PART_SCALE] = scale
    if scale == 1.0:
        gram_lower(delta[:, lo:hi], ge, chars, ints, scalars)
        return
    factor = like(delta, scale)
    for i in range(nb):
        dr = delta[i, lo:hi]
        sr = scratch[i, lo:hi]
        for j in range(dr.shape[0]):
            sr[j] = dr[j] * factor
    gram_lower(scratch[:, lo:hi], ge, chars, ints, scalars)


@njit(cache=True, error_model="numpy", fastmath=REDUCE_FASTMATH)
def _combine_chunks(n, n_in, nb, gram, GA, GE, parts, row_sq, out, l):
    """Writes ``out[0:7, l]`` (see :func:`profile_pass`) from the layer's chunk values, summed
    in chunk order."""
    d_sum = 0.0
    dphi_sq = 0.0
    w_sq = 0.0
    b_sq = 0.0
    grad = 0.0
    chunks = 0
    for c in range(MAX_CHUNKS):
        lo, hi = chunk_bounds(n, c)
        if lo == hi:
            continue
        chunks += 1
        d_sum += parts[c, PART_DSUM]
        dphi_sq += parts[c, PART_DPHI]
        b_sq += parts[c, PART_BSQ]
        grad += parts[c, PART_GRAD]
    for c in range(MAX_CHUNKS):  # the weights' chunks follow the inputs (0 when empty)
        w_sq += parts[c, PART_WSQ]
    norm_sum = 0.0
    sq_sum = 0.0
    for i in range(nb):
        row = 0.0
        for c in range(chunks):
            row += row_sq[c, i]
        norm_sum += np.sqrt(row)
        sq_sum += row
    if gram:
        # ||A^T E||_F^2 = sum((A A^T) * (E E^T)), both Gram matrices summed over their chunks
        inputs = 0
        for c in range(MAX_CHUNKS):
            lo, hi = chunk_bounds(n_in, c)
            inputs += 1 if hi > lo else 0
        grad = 0.0
        for c in range(chunks):
            ge = GE[c, :nb * nb].reshape((nb, nb))
            diag = 0.0
            off = 0.0
            for i in range(nb):
                for k in range(i + 1):
                    a_ik = 0.0
                    for ci in range(inputs):
                        a_ik += np.float64(GA[ci, i * nb + k])
                    if k == i:
                        diag += a_ik * np.float64(ge[i, k])
                    else:
                        off += a_ik * np.float64(ge[i, k])
            scale = parts[c, PART_SCALE]
            grad += (diag + 2.0 * off) / (scale * scale)
    out[0, l] = grad
    out[1, l] = d_sum
    out[2, l] = norm_sum / nb
    out[3, l] = sq_sum / nb
    out[4, l] = dphi_sq / (nb * n)
    out[5, l] = w_sq
    out[6, l] = b_sq


@njit(cache=True, error_model="numpy", fastmath=REDUCE_FASTMATH)
def _power_of_two_scale(x, lo, hi):
    """1 when the squares of ``x[:, lo:hi]`` are safely inside its float type's range (largest
    entry in [2^-40, 2^40]); otherwise ``2^-e`` with ``2^(e-1) <= max|x| < 2^e``, ``e`` clamped
    to [-100, 100] (exact in float32 and float64). 1 for an all-zero ``x`` or one with NaN or
    inf."""
    largest = like(x, 0.0)
    for i in range(x.shape[0]):
        row = x[i, lo:hi]
        for j in range(row.shape[0]):
            largest = max(largest, abs(row[j]))
    if not (largest > 0.0 and np.isfinite(largest)):
        return 1.0
    exponent = math.frexp(np.float64(largest))[1]
    if -40 <= exponent <= 40:
        return 1.0
    return math.ldexp(1.0, -min(max(exponent, -100), 100))


@njit(cache=True, nogil=True, error_model="numpy", fastmath=FASTMATH)
def profile_pass(tid, n_threads, sync, layout, act_params, params, X, Y, loss_code, training,
                 H, U, A, MK, G0, G1, DL, DS, GA, GE, P, parts, row_sq, loss, out):
    """Forward pass, loss and a backward pass that records per-layer norms instead of
    gradients (no batch norm), run by ``n_threads`` threads (this one is ``tid``).

    Every matrix product and elementwise pass of a layer is split into column chunks
    (:func:`chunk_bounds`) that the threads share; they meet at one barrier per layer forward
    and two per layer backward. The sums are formed per chunk and added in chunk order, so the
    results do not depend on ``n_threads``. BLAS, where it is called, must run on one thread
    (the caller arranges it).

    Parameters
    ----------
    tid, n_threads : int
    sync : ndarray of int64, shape (SYNC_SIZE,)
        Barrier state (:func:`neurosim.kernels.sync.barrier`), zero at the start.
    layout, act_params, params
        The network (:mod:`.dense`).
    X, Y : ndarray, shapes (nb, n_0), (nb, n_L)
        Inputs and targets (C-contiguous, the network's float type).
    loss_code : int
    training : bool
        Dropout masks from ``MK`` (True) or none (False).
    H, U, A, MK : ndarray
        Forward workspaces of :func:`neurosim.kernels.dense.mlp_forward` (``A`` may be ``U``
        when no layer has a skip or dropout; ``MK`` holds the masks when training with
        dropout).
    G0, G1, DL : ndarray, shape (>= nb * max(n_l),)
        dL/da of the current and the next layer down, and ``delta_l``.
    DS : ndarray, shape (>= max(n_l),)
        Column sums of ``delta_l``.
    GA, GE : ndarray, shape (MAX_CHUNKS, >= nb * nb)
        Per-chunk Gram matrices of the layer's input and of ``delta_l``.
    P : ndarray, shape (MAX_CHUNKS, >= max(n_in * chunk))
        Per-chunk ``a^T delta`` for layers whose gradient norm is formed directly (may have
        no columns when every layer uses the Gram form).
    parts : ndarray of float64, shape (MAX_CHUNKS, N_PARTS)
    row_sq : ndarray of float64, shape (MAX_CHUNKS, nb)
    loss : ndarray of float64, shape (1,)
        Written by thread 0 with the loss.
    out : ndarray of float64, shape (7, L)
        Written per layer: ``||dL/dW_l||_F^2``, ``||dL/db_l||^2``, batch mean of
        ``||delta_l||``, batch mean of ``||delta_l||^2``, mean of ``phi'(h_l)^2`` over the
        batch and units, and the parameters' ``||W_l||_F^2`` and ``||b_l||^2``. The squares
        are summed in float64; in the Gram form a float32 signal whose squares would leave the
        float range is first scaled by an exact power of two.

    Returns
    -------
    bool
        False when another thread aborted (``sync[SYNC_ABORT]``).
    """
    syrk_args = (np.empty(2, np.uint8), np.empty(4, np.int32), np.empty(2, X.dtype))
    if not forward_loss_chunked(tid, n_threads, sync, layout, act_params, params, X, Y,
                                loss_code, training, H, U, A, MK, G0, loss):
        return False
    nb = X.shape[0]
    last = layout.shape[0] - 1
    separate = has_separate_outputs(layout)
    cur = G0
    nxt = G1
    for l in range(last, -1, -1):
        n = layout[l, N_OUT]
        n_in = layout[l, N_IN]
        gram = uses_gram_form(nb, n_in, n)
        g = cur[:nb * n].reshape((nb, n))
        delta = DL[:nb * n].reshape((nb, n))
        scratch = nxt[:nb * n].reshape((nb, n))  # free until the error below is written
        use_mask = training and layout[l, DROPOUT] == 1
        h = block(H, nb, layout, l)
        u = block(U, nb, layout, l)
        mk = block(MK, nb, layout, l) if use_mask else g
        w = weight(params, layout, l)
        w_off = layout[l, W_OFF]
        b = params[layout[l, B_OFF]:layout[l, B_OFF] + n]
        a_prev = layer_input(X, A, U, nb, layout, l, separate)
        p0, p1, p2 = _act_params(layout, act_params, params, l)
        for c in range(tid, MAX_CHUNKS, n_threads):
            lo, hi = chunk_bounds(n, c)
            if lo < hi:
                prod = P[c, :0 if gram else n_in * (hi - lo)].reshape((0 if gram else n_in,
                                                                       hi - lo))
                _backward_chunk(g, mk, use_mask, h, u, layout[l, ACT], p0, p1, p2, delta, DS,
                                scratch, b, a_prev, gram, lo, hi,
                                GE[c, :nb * nb].reshape((nb, nb)), prod, row_sq[c], parts[c],
                                syrk_args)
            # W_l's rows of this chunk of inputs: read again just below by the error product
            lo, hi = chunk_bounds(n_in, c)
            parts[c, PART_WSQ] = sumsq64(params[w_off + lo * n:w_off + hi * n])
            if gram and lo < hi:
                gram_lower(a_prev[:, lo:hi], GA[c, :nb * nb].reshape((nb, nb)), *syrk_args)
        if not barrier(sync, n_threads):
            return False
        if tid == l % n_threads:  # threads take turns, so neither waits for the other
            _combine_chunks(n, n_in, nb, gram, GA, GE, parts, row_sq, out, l)
        if l > 0:
            error_below_chunked(tid, n_threads, delta, w, g, layout[l, SKIP] == 1,
                                nxt[:nb * n_in].reshape((nb, n_in)))
            cur, nxt = nxt, cur
        if not barrier(sync, n_threads):
            return False
    return True

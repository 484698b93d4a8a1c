"""Dense-layer kernels of the MLP engine, on flat parameter and workspace buffers.

Building blocks (pure array functions; the CUDA twins keep the same names and arguments):

- ``tanh_fast``: a tanh that LLVM vectorises (the libm call it replaces does not), within
  1.1 ulp of the exact value in float32 and float64;
- ``bias_activation`` / ``activation_backward``: fused bias add + phi, and ``delta = g * phi'(h)``
  (times a dropout mask when there is one), both keeping the input's float type;
- ``batchnorm_forward`` / ``batchnorm_backward``: batch normalisation over the batch axis,
  training (batch statistics) and inference (running statistics) modes (the shift ``beta``
  enters as the bias of ``bias_activation``);
- ``mlp_forward`` / ``mlp_backward`` / ``forward_backward``: the whole network, with matrix
  products through :func:`neurosim.kernels.smallgemm.matmul_into` (register-blocked kernels for
  small products, BLAS for large ones).

Layout
------
A network with layers ``l = 1..L`` (row ``l - 1`` here) is described by an int64 table
``layout`` of shape ``(L, N_LAYOUT_COLS)``; its columns are the module constants below:

``N_IN, N_OUT``       fan-in and fan-out of the layer.
``W_OFF, B_OFF``      offsets of ``W_l`` (row-major, shape ``(N_IN, N_OUT)``) and ``b_l`` in the
                      flat parameter buffer.
``ACT``               activation code (:mod:`neurosim.kernels.activations`).
``SLOPE_OFF``         offset of the learnable PReLU slope of the layer in the parameter buffer,
                      or -1.
``BN_OFF``            offset of the batch-norm scale ``gamma_l`` (``beta_l`` follows it), or -1.
``BN_RUN_OFF``        offset of the layer's running mean and running variance (``N_OUT`` values
                      each, one after the other) in the buffer ``bn_state``, or -1.
``BN_STAT_OFF``       offset of the statistics the last forward pass used (mean, variance and
                      ``1 / sqrt(variance + eps)``, ``N_OUT`` values each) in ``ST``, or -1.
``SKIP``              1 if the layer adds its input (identity skip): ``a_l = a_{l-1} + ...``.
``DROPOUT``           1 if inverted dropout acts on ``phi(h_l)`` in training mode.
``UNIT_OFF``          ``n_1 + ... + n_{l-1}``: a workspace of batch ``nb`` holds the layer's
                      ``(nb, N_OUT)`` block at ``nb * UNIT_OFF``.

Float parameters of the activations (``p0, p1, p2``) are a ``(L, 3)`` array ``act_params`` in
the network's float type; a PReLU layer reads its slope from the parameter buffer instead.

Per-layer workspaces (flat, ``nb * sum(n_l)`` values, blocks as above):
``H`` pre-activations ``h_l`` (the input of phi: after batch norm where there is one);
``U`` ``phi(h_l)``; ``A`` layer outputs ``a_l`` (the same array as ``U`` when no layer has a
skip or dropout); ``XH`` normalised batch-norm inputs; ``MK`` dropout masks holding 0 or
``1 / (1 - p)``; ``D`` the error signals ``delta_l = dL/dh_l``.
"""

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

from .activations import (
    HARD_TANH,
    LEAKY_RELU,
    LINEAR,
    PRELU,
    RELU,
    SOFTSIGN,
    TANH,
    dphi,
    phi,
)
from .fastexp import exp64
from .losses import loss_and_output_grad
from .scalar import like
from .smallgemm import matmul_into

N_IN = 0
N_OUT = 1
W_OFF = 2
B_OFF = 3
ACT = 4
SLOPE_OFF = 5
BN_OFF = 6
BN_RUN_OFF = 7
BN_STAT_OFF = 8
SKIP = 9
DROPOUT = 10
UNIT_OFF = 11
N_LAYOUT_COLS = 12

# FMA contraction only: no reassociation, so results do not depend on vector width.
FASTMATH = {"contract"}

# ---------------------------------------------------------------------------------------------
# Vectorisable tanh
#
# |x| < 0.7: tanh(x) = x + x^3 P(x^2), P the Chebyshev interpolant of (tanh(x) - x) / x^3 on
# x^2 in [0, 0.49] (degree 12 in float64, 5 in float32; interpolation error below 3e-17 and
# 3e-8 relative). |x| >= 0.7: tanh(|x|) = 1 - 2 / (exp(2|x|) + 1), exp by Cody-Waite reduction
# 2|x| = k ln2 + r, |r| <= ln2 / 2, a Taylor polynomial for exp(r) and 2^k built from its bits
# (float64: :func:`neurosim.kernels.fastexp.exp64`; float32: the same scheme to r^7, inline).
# |x| is clamped where tanh rounds to 1 (20 / 10) so that exp cannot overflow.
# Both branches are computed and one selected, which keeps the loop free of branches.
# ---------------------------------------------------------------------------------------------

_TANH_P64 = (-0.3333333333333333, 0.13333333333333183, -0.05396825396808037,
             0.0218694885283181, -0.00886323534557735, 0.0035921254479696534,
             -0.0014558109507053411, 0.0005898843923888812, -0.0002385260361392742,
             9.514406287829865e-05, -3.567392597709144e-05, 1.0938896099319773e-05,
             -1.935265368692235e-06)
_TANH_P32 = tuple(np.float32(c) for c in (-0.3333333, 0.1333325, -0.05394817, 0.021689406,
                                          -0.008113507, 0.0020606215))
_LOG2E = 1.4426950408889634
_LN2_HI32 = np.float32(0.69314575)  # ln 2 to 16 bits
_LN2_LO32 = np.float32(1.4286068e-06)


@intrinsic
def _f32_from_bits(typingctx, bits):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


def tanh_fast(x):
    """tanh(x) (Python fallback; compiled code uses the vectorisable overloads)."""
    return np.tanh(x)


def _tanh64(x):
    c = _TANH_P64
    ax = abs(x)
    ax = ax if ax < 20.0 else 20.0
    s = ax * ax
    p = c[12]
    p = p * s + c[11]
    p = p * s + c[10]
    p = p * s + c[9]
    p = p * s + c[8]
    p = p * s + c[7]
    p = p * s + c[6]
    p = p * s + c[5]
    p = p * s + c[4]
    p = p * s + c[3]
    p = p * s + c[2]
    p = p * s + c[1]
    p = p * s + c[0]
    small = ax + ax * s * p
    big = exp64(2.0 * ax)
    large = 1.0 - 2.0 / (big + 1.0)
    y = np.copysign(small if ax < 0.7 else large, x)
    return y if x == x else x


def _tanh32(x):
    c = _TANH_P32
    one = np.float32(1.0)
    two = np.float32(2.0)
    ax = abs(x)
    ax = ax if ax < np.float32(10.0) else np.float32(10.0)
    s = ax * ax
    p = c[5]
    p = p * s + c[4]
    p = p * s + c[3]
    p = p * s + c[2]
    p = p * s + c[1]
    p = p * s + c[0]
    small = ax + ax * s * p
    u = two * ax
    k = np.floor(u * np.float32(_LOG2E) + np.float32(0.5))
    r = (u - k * _LN2_HI32) - k * _LN2_LO32
    e = np.float32(1.0 / 5040.0)
    e = e * r + np.float32(1.0 / 720.0)
    e = e * r + np.float32(1.0 / 120.0)
    e = e * r + np.float32(1.0 / 24.0)
    e = e * r + np.float32(1.0 / 6.0)
    e = e * r + np.float32(0.5)
    e = e * r + one
    e = e * r + one
    big = e * _f32_from_bits((np.int32(k) + np.int32(127)) << np.int32(23))
    large = one - two / (big + one)
    y = np.copysign(small if ax < np.float32(0.7) else large, x)
    return y if x == x else x


@overload(tanh_fast, inline="always")
def _tanh_fast_overload(x):
    if isinstance(x, types.Float):
        return _tanh64 if x.bitwidth == 64 else _tanh32
    return None


@njit(cache=True, error_model="numpy", fastmath=FASTMATH)
def apply_tanh_fast(x, out):
    """``out[i] = tanh(x[i])`` over 1-D arrays with the vectorised tanh."""
    for i in range(x.shape[0]):
        out[i] = tanh_fast(x[i])


# ---------------------------------------------------------------------------------------------
# Layer building blocks
# ---------------------------------------------------------------------------------------------


@njit(cache=True, error_model="numpy", fastmath=FASTMATH)
def bias_activation(h, b, code, p0, p1, p2, out):
    """``h += b`` (in place, broadcast over rows), then ``out = phi(h)``.

    Parameters
    ----------
    h : ndarray, shape (nb, n)
        Pre-activations without bias (typically a matrix product); updated in place.
    b : ndarray, shape (n,)
        Bias.
    code : int
        Activation code.
    p0, p1, p2 : float
        Activation parameters in the float type of ``h``.
    out : ndarray, shape (nb, n)
        ``phi(h)``.
    """
    bias_activation_cols(h, b, code, p0, p1, p2, out, 0, h.shape[1])


@njit(cache=True, error_model="numpy", fastmath=FASTMATH)
def bias_activation_cols(h, b, code, p0, p1, p2, out, lo, hi):
    """:func:`bias_activation` on the columns ``lo:hi`` of ``h``, ``b`` and ``out`` only.

    Rows are taken as contiguous slices indexed from 0: an index that LLVM cannot prove
    non-negative keeps numba's wraparound check, which stops the loop from vectorising. The
    cheap activations get a loop each, with the code a constant, so that the branches of
    :func:`~neurosim.kernels.activations.phi` fold away and the loop vectorises (ReLU: 0.1
    against 3.5 ns per element with the code known only at run time).
    """
    if code == TANH:
        _bias_phi_rows(TANH, h, b, out, lo, hi, p0, p1, p2)
    elif code == RELU:
        _bias_phi_rows(RELU, h, b, out, lo, hi, p0, p1, p2)
    elif code == LINEAR:
        _bias_phi_rows(LINEAR, h, b, out, lo, hi, p0, p1, p2)
    elif code == LEAKY_RELU or code == PRELU:  # the same map (PRELU's slope arrives in p0)
        _bias_phi_rows(LEAKY_RELU, h, b, out, lo, hi, p0, p1, p2)
    elif code == HARD_TANH:
        _bias_phi_rows(HARD_TANH, h, b, out, lo, hi, p0, p1, p2)
    elif code == SOFTSIGN:
        _bias_phi_rows(SOFTSIGN, h, b, out, lo, hi, p0, p1, p2)
    else:
        _bias_phi_rows(code, h, b, out, lo, hi, p0, p1, p2)


@njit(cache=True, inline="always")
def _bias_phi_rows(code, h, b, out, lo, hi, p0, p1, p2):
    bc = b[lo:hi]
    for i in range(h.shape[0]):
        hr = h[i, lo:hi]
        ur = out[i, lo:hi]
        for j in range(hr.shape[0]):
            v = hr[j] + bc[j]
            hr[j] = v
            ur[j] = _phi_fast(code, v, p0, p1, p2)


@njit(cache=True, error_model="numpy", fastmath=FASTMATH)
def _phi_fast(code, x, p0, p1, p2):
    """phi(x) with the vectorisable tanh; with a constant ``code`` the branches fold."""
    if code == TANH:
        return tanh_fast(x)
    return phi(code, x, p0, p1, p2)


@njit(cache=True, error_model="numpy", fastmath=FASTMATH)
def activation_backward(g, mask, use_mask, h, u, code, p0, p1, p2, delta, delta_sum):
    """``delta = g * mask * phi'(h)`` and its column sums; returns the PReLU slope gradient.

    Parameters
    ----------
    g : ndarray, shape (nb, n)
        dL/d(layer output).
    mask : ndarray, shape (nb, n)
        Dropout mask (0 or 1 / (1 - p)); read only when ``use_mask``.
    use_mask : bool
    h, u : ndarray, shape (nb, n)
        Pre-activation and ``phi(h)``.
    code : int
    p0, p1, p2 : float
    delta : ndarray, shape (nb, n)
        Written with dL/dh.
    delta_sum : ndarray, shape (n,)
        Written with ``sum_i delta[i, :]`` (the bias gradient of a layer without batch norm,
        dL/dbeta of one with).

    Returns
    -------
    float
        ``sum(g * mask * min(h, 0))`` for PReLU (the slope gradient), else 0.
    """
    return activation_backward_cols(g, mask, use_mask, h, u, code, p0, p1, p2, delta,
                                    delta_sum, 0, h.shape[1])


@njit(cache=True, error_model="numpy", fastmath=FASTMATH)
def activation_backward_cols(g, mask, use_mask, h, u, code, p0, p1, p2, delta, delta_sum, lo,
                             hi):
    """:func:`activation_backward` on the columns ``lo:hi`` of every array only (rows as
    slices indexed from 0 and a loop per cheap activation, as in
    :func:`bias_activation_cols`); the slope gradient returned is the sum over those columns."""
    ds = delta_sum[lo:hi]
    for j in range(ds.shape[0]):
        ds[j] = like(h, 0.0)
    if code == TANH:
        return _delta_rows(TANH, g, mask, use_mask, h, u, delta, ds, lo, hi, p0, p1, p2)
    if code == RELU:
        return _delta_rows(RELU, g, mask, use_mask, h, u, delta, ds, lo, hi, p0, p1, p2)
    if code == LINEAR:
        return _delta_rows(LINEAR, g, mask, use_mask, h, u, delta, ds, lo, hi, p0, p1, p2)
    if code == LEAKY_RELU:
        return _delta_rows(LEAKY_RELU, g, mask, use_mask, h, u, delta, ds, lo, hi, p0, p1, p2)
    if code == PRELU:  # leaky ReLU's loop plus the slope gradient's sum
        return _delta_rows(PRELU, g, mask, use_mask, h, u, delta, ds, lo, hi, p0, p1, p2)
    if code == HARD_TANH:
        return _delta_rows(HARD_TANH, g, mask, use_mask, h, u, delta, ds, lo, hi, p0, p1, p2)
    if code == SOFTSIGN:
        return _delta_rows(SOFTSIGN, g, mask, use_mask, h, u, delta, ds, lo, hi, p0, p1, p2)
    return _delta_rows(code, g, mask, use_mask, h, u, delta, ds, lo, hi, p0, p1, p2)


@njit(cache=True, inline="always")
def _delta_rows(code, g, mask, use_mask, h, u, delta, ds, lo, hi, p0, p1, p2):
    zero = like(h, 0.0)
    slope_grad = zero
    for i in range(h.shape[0]):
        gr = g[i, lo:hi]
        mr = mask[i, lo:hi]
        hr = h[i, lo:hi]
        ur = u[i, lo:hi]
        dr = delta[i, lo:hi]
        for j in range(ds.shape[0]):
            gij = gr[j] * mr[j] if use_mask else gr[j]
            hij = hr[j]
            d = gij * dphi(code, hij, ur[j], p0, p1, p2)
            dr[j] = d
            ds[j] += d
            if code == PRELU and hij <= zero:
                slope_grad += gij * hij
    return slope_grad


@njit(cache=True, error_model="numpy", fastmath=FASTMATH)
def combine_output(u, mask, use_mask, skip_in, use_skip, a):
    """``a = u * mask (if use_mask) + skip_in (if use_skip)``; all arrays (nb, n)."""
    combine_output_cols(u, mask, use_mask, skip_in, use_skip, a, 0, u.shape[1])


@njit(cache=True, error_model="numpy", fastmath=FASTMATH)
def combine_output_cols(u, mask, use_mask, skip_in, use_skip, a, lo, hi):
    """:func:`combine_output` on the columns ``lo:hi`` only (rows as slices indexed from 0)."""
    for i in range(u.shape[0]):
        ur = u[i, lo:hi]
        mr = mask[i, lo:hi]
        sr = skip_in[i, lo:hi]
        ar = a[i, lo:hi]
        for j in range(ur.shape[0]):
            v = ur[j] * mr[j] if use_mask else ur[j]
            ar[j] = v + sr[j] if use_skip else v


@njit(cache=True, error_model="numpy", fastmath=FASTMATH)
def batchnorm_forward(z, b, gamma, training, eps, run_mean, run_var, xhat, mean, var, inv_std,
                      h):
    """Batch normalisation over the batch axis without the shift: ``h = gamma * xhat``,
    ``xhat`` the normalised ``z + b`` (the shift ``beta`` is added by :func:`bias_activation`).

    Parameters
    ----------
    z : ndarray, shape (nb, n)
        Input without bias (``a_{l-1} W_l``). May be the same array as ``h``.
    b : ndarray, shape (n,)
        Linear-layer bias, added before normalising (it cancels in training mode).
    gamma : ndarray, shape (n,)
        Learnable scale.
    training : bool
        True: normalise with the batch mean and (biased) variance; False: with the running
        averages ``run_mean``, ``run_var``.
    eps : float
        Added to the variance.
    run_mean, run_var : ndarray, shape (n,)
        Running statistics (read in inference mode only).
    xhat : ndarray, shape (nb, n)
        Written with the normalised input.
    mean, var, inv_std : ndarray, shape (n,)
        Written with the statistics used (batch or running) and ``1 / sqrt(var + eps)``.
    h : ndarray, shape (nb, n)
        Output.
    """
    nb, n = z.shape
    one = like(z, 1.0)
    zero = like(z, 0.0)
    if training:
        inv_nb = one / like(z, nb)
        for j in range(n):
            mean[j] = zero
            var[j] = zero
        for i in range(nb):
            for j in range(n):
                mean[j] += z[i, j]
        for j in range(n):
            mean[j] = mean[j] * inv_nb + b[j]
        for i in range(nb):
            for j in range(n):
                d = z[i, j] + b[j] - mean[j]
                var[j] += d * d
        for j in range(n):
            var[j] *= inv_nb
    else:
        for j in range(n):
            mean[j] = run_mean[j]
            var[j] = run_var[j]
    for j in range(n):
        inv_std[j] = one / np.sqrt(var[j] + eps)
    for i in range(nb):
        for j in range(n):
            x = (z[i, j] + b[j] - mean[j]) * inv_std[j]
            xhat[i, j] = x
            h[i, j] = gamma[j] * x


@njit(cache=True, error_model="numpy", fastmath=FASTMATH)
def batchnorm_backward(delta, xhat, gamma, inv_std, training, dbeta, dgamma, e, db):
    """Backward of :func:`batchnorm_forward`: ``e = dL/dz`` from ``delta = dL/dh``.

    In training mode the batch statistics depend on ``z``:
    ``e = gamma * inv_std * (delta - mean(delta) - xhat * mean(delta * xhat))`` (means over
    the batch); in inference mode ``e = gamma * inv_std * delta``.

    Parameters
    ----------
    delta, xhat : ndarray, shape (nb, n)
    gamma, inv_std : ndarray, shape (n,)
    training : bool
    dbeta : ndarray, shape (n,)
        ``sum_i delta[i, :]`` (from :func:`activation_backward`), read.
    dgamma : ndarray, shape (n,)
        Written with ``sum_i delta[i, :] * xhat[i, :]``.
    e : ndarray, shape (nb, n)
        Written with dL/dz.
    db : ndarray, shape (n,)
        Written with ``sum_i e[i, :]``, the gradient of the bias added before normalising.
    """
    nb, n = delta.shape
    zero = like(delta, 0.0)
    for j in range(n):
        dgamma[j] = zero
        db[j] = zero
    for i in range(nb):
        for j in range(n):
            dgamma[j] += delta[i, j] * xhat[i, j]
    inv_nb = like(delta, 1.0) / like(delta, nb) if training else zero
    for i in range(nb):
        for j in range(n):
            v = gamma[j] * inv_std[j] * (
                delta[i, j] - (dbeta[j] + xhat[i, j] * dgamma[j]) * inv_nb)
            e[i, j] = v
            db[j] += v


@njit(cache=True, error_model="numpy", fastmath=FASTMATH)
def update_running_stats(mean, var, nb, momentum, run_mean, run_var):
    """Running averages after a training-mode batch: ``r = (1 - m) r + m * batch value``.

    The batch variance enters unbiased (times ``nb / (nb - 1)``, as PyTorch does), except for a
    batch of one, where it enters as is (zero).
    """
    one = like(run_mean, 1.0)
    keep = one - momentum
    correction = like(run_mean, nb) / like(run_mean, nb - 1) if nb > 1 else one
    for j in range(run_mean.shape[0]):
        run_mean[j] = keep * run_mean[j] + momentum * mean[j]
        run_var[j] = keep * run_var[j] + momentum * var[j] * correction


@njit(cache=True)
def draw_dropout_masks(rng, p, layout, nb, MK):
    """Fill the mask blocks of the dropout layers: 0 with probability ``p``, else 1/(1-p)."""
    scale = like(MK, 1.0) / (like(MK, 1.0) - like(MK, p))
    zero = like(MK, 0.0)
    for l in range(layout.shape[0]):
        if layout[l, DROPOUT] == 0:
            continue
        masks = block(MK, nb, layout, l)
        for i in range(nb):
            for j in range(masks.shape[1]):
                masks[i, j] = zero if rng.random() < p else scale


# ---------------------------------------------------------------------------------------------
# Whole network
# ---------------------------------------------------------------------------------------------


@njit(cache=True)
def block(buf, nb, layout, l):
    """The ``(nb, n_l)`` block of layer ``l`` (0-based) in a flat workspace."""
    start = nb * layout[l, UNIT_OFF]
    return buf[start:start + nb * layout[l, N_OUT]].reshape((nb, layout[l, N_OUT]))


@njit(cache=True)
def weight(params, layout, l):
    """``W_l`` as a ``(n_in, n_out)`` view of the flat parameter buffer."""
    start = layout[l, W_OFF]
    n_in = layout[l, N_IN]
    n_out = layout[l, N_OUT]
    return params[start:start + n_in * n_out].reshape((n_in, n_out))


@njit(cache=True)
def vector(buf, start, n):
    return buf[start:start + n]


@njit(cache=True)
def _act_params(layout, act_params, params, l):
    p0 = act_params[l, 0]
    if layout[l, SLOPE_OFF] >= 0:
        p0 = params[layout[l, SLOPE_OFF]]
    return p0, act_params[l, 1], act_params[l, 2]


@njit(cache=True)
def layer_input(X, A, U, nb, layout, l, separate):
    """``a_{l-1}``, the ``(nb, n_in)`` input of layer ``l`` (0-based): ``X`` for the first layer,
    else the previous layer's output block (``A`` when outputs are stored apart from ``U``)."""
    if l == 0:
        return X
    if separate:
        return block(A, nb, layout, l - 1)
    return block(U, nb, layout, l - 1)


@njit(cache=True, error_model="numpy", fastmath=FASTMATH)
def error_below(err, g, params, layout, l, g_prev):
    """``g_prev = err @ W_l^T`` (+ ``g``, the gradient at layer ``l``'s output, through an
    identity skip): dL/da_{l-1} for layer ``l >= 1``; shapes ``(nb, n_out)`` -> ``(nb, n_in)``."""
    matmul_into(err, weight(params, layout, l).T, g_prev)
    if layout[l, SKIP] == 1:
        add_cols(g, g_prev, 0, g.shape[1])


@njit(cache=True, error_model="numpy", fastmath=FASTMATH)
def add_cols(x, out, lo, hi):
    """``out[:, lo:hi] += x[:, lo:hi]`` for (m, n) arrays (the gradient through a skip; rows as
    slices indexed from 0, as in :func:`bias_activation_cols`)."""
    for i in range(x.shape[0]):
        xr = x[i, lo:hi]
        outr = out[i, lo:hi]
        for j in range(xr.shape[0]):
            outr[j] += xr[j]


@njit(cache=True)
def has_separate_outputs(layout):
    """True when some layer has a skip or dropout, so that ``A`` must differ from ``U``."""
    for l in range(layout.shape[0]):
        if layout[l, SKIP] == 1 or layout[l, DROPOUT] == 1:
            return True
    return False


@njit(cache=True, nogil=True, error_model="numpy", fastmath=FASTMATH)
def mlp_forward(layout, act_params, params, X, training, bn_eps, bn_state, H, U, A, XH, ST, MK):
    """Forward pass of a batch through every layer.

    Parameters
    ----------
    layout : ndarray of int64, shape (L, N_LAYOUT_COLS)
    act_params : ndarray, shape (L, 3)
    params : ndarray, shape (P,)
        Flat parameter buffer.
    X : ndarray, shape (nb, n_0)
        Inputs (C-contiguous, the network's float type).
    training : bool
        Batch statistics for batch norm and the dropout masks in ``MK`` (True), or running
        statistics and no dropout (False).
    bn_eps : float
        Batch-norm epsilon (network float type).
    bn_state : ndarray
        Running means and variances (see ``BN_RUN_OFF``); size 0 without batch norm.
    H, U, A, XH, ST, MK : ndarray
        Workspaces (module docstring). ``A`` must be a separate array when
        :func:`has_separate_outputs`, and may be ``U`` otherwise; ``XH``, ``ST`` and ``MK`` may
        be empty when unused.

    Returns
    -------
    ndarray, shape (nb, n_L)
        The network output (a view into ``A`` or ``U``).
    """
    nb = X.shape[0]
    separate = has_separate_outputs(layout)
    a_prev = X
    for l in range(layout.shape[0]):
        n = layout[l, N_OUT]
        h = block(H, nb, layout, l)
        u = block(U, nb, layout, l)
        matmul_into(a_prev, weight(params, layout, l), h)
        b = vector(params, layout[l, B_OFF], n)
        p0, p1, p2 = _act_params(layout, act_params, params, l)
        bn = layout[l, BN_OFF]
        if bn >= 0:
            ro = layout[l, BN_RUN_OFF]
            so = layout[l, BN_STAT_OFF]
            batchnorm_forward(h, b, vector(params, bn, n), training, bn_eps,
                              vector(bn_state, ro, n), vector(bn_state, ro + n, n),
                              block(XH, nb, layout, l), vector(ST, so, n),
                              vector(ST, so + n, n), vector(ST, so + 2 * n, n), h)
            b = vector(params, bn + n, n)  # beta, the shift after normalising
        bias_activation(h, b, layout[l, ACT], p0, p1, p2, u)
        if separate:
            a = block(A, nb, layout, l)
            use_mask = training and layout[l, DROPOUT] == 1
            use_skip = layout[l, SKIP] == 1
            combine_output(u, block(MK, nb, layout, l) if use_mask else u, use_mask,
                           a_prev if use_skip else u, use_skip, a)
            a_prev = a
        else:
            a_prev = u
    return a_prev


@njit(cache=True, error_model="numpy", fastmath=FASTMATH)
def mlp_backward(layout, act_params, params, X, training, H, U, A, XH, ST, MK, D, G0, G1, E,
                 grad):
    """Backward pass: every parameter gradient and ``delta_l``, from dL/d(output).

    Parameters
    ----------
    layout, act_params, params, X, training
        As in :func:`mlp_forward` (same batch, after it ran).
    H, U, A, XH, ST, MK : ndarray
        The workspaces :func:`mlp_forward` filled.
    D : ndarray
        Workspace written with ``delta_l = dL/dh_l`` (blocks as ``H``).
    G0, G1 : ndarray, shape (>= nb * max(n_l),)
        Scratch; on entry ``G0[:nb * n_L]`` holds dL/d(output) row-major.
    E : ndarray
        Scratch of the same size for batch-norm layers (may be empty without batch norm).
    grad : ndarray, shape (P,)
        Written with the gradient of every parameter (same layout as ``params``).
    """
    nb = X.shape[0]
    separate = has_separate_outputs(layout)
    cur = G0
    nxt = G1
    for l in range(layout.shape[0] - 1, -1, -1):
        n = layout[l, N_OUT]
        n_in = layout[l, N_IN]
        g = cur[:nb * n].reshape((nb, n))
        delta = block(D, nb, layout, l)
        use_mask = training and layout[l, DROPOUT] == 1
        p0, p1, p2 = _act_params(layout, act_params, params, l)
        bias_grad = vector(grad, layout[l, B_OFF], n)
        bn = layout[l, BN_OFF]
        # The column sums of delta are the bias gradient, or dL/dbeta with batch norm.
        delta_sum = bias_grad if bn < 0 else vector(grad, bn + n, n)
        slope_grad = activation_backward(g, block(MK, nb, layout, l) if use_mask else g,
                                         use_mask, block(H, nb, layout, l),
                                         block(U, nb, layout, l), layout[l, ACT], p0, p1, p2,
                                         delta, delta_sum)
        if layout[l, SLOPE_OFF] >= 0:
            grad[layout[l, SLOPE_OFF]] = slope_grad
        err = delta
        if bn >= 0:
            so = layout[l, BN_STAT_OFF]
            err = E[:nb * n].reshape((nb, n))
            batchnorm_backward(delta, block(XH, nb, layout, l), vector(params, bn, n),
                               vector(ST, so + 2 * n, n), training, delta_sum,
                               vector(grad, bn, n), err, bias_grad)
        a_prev = layer_input(X, A, U, nb, layout, l, separate)
        matmul_into(a_prev.T, err, weight(grad, layout, l))
        if l > 0:
            error_below(err, g, params, layout, l, nxt[:nb * n_in].reshape((nb, n_in)))
            cur, nxt = nxt, cur


@njit(cache=True, error_model="numpy", fastmath=FASTMATH)
def forward_backward(layout, act_params, params, X, Y, loss_code, training, bn_eps, bn_state,
                     H, U, A, XH, ST, MK, D, G0, G1, E, grad):
    """Loss and gradients of one batch: :func:`mlp_forward`, the loss, :func:`mlp_backward`.

    ``Y`` has shape (nb, n_L); ``loss_code`` is a :mod:`neurosim.kernels.losses` code.

    Returns
    -------
    float
        The batch-mean loss.
    """
    nb = X.shape[0]
    out = mlp_forward(layout, act_params, params, X, training, bn_eps, bn_state, H, U, A, XH,
                      ST, MK)
    n_out = out.shape[1]
    loss = loss_and_output_grad(loss_code, out, Y, G0[:nb * n_out].reshape((nb, n_out)))
    mlp_backward(layout, act_params, params, X, training, H, U, A, XH, ST, MK, D, G0, G1, E,
                 grad)
    return loss

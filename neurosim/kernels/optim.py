"""Optimizer, clipping and gradient-norm kernels on a flat parameter buffer (one pass each).

Every optimizer step works on the raw gradient ``g`` of the loss in this order:
clip each entry to ``[-clip_value, clip_value]``, scale by ``gscale`` (global-norm clipping,
computed by the caller from :func:`clipped_sumsq`), add ``weight_decay * p`` (L2 penalty
``weight_decay / 2 * ||p||^2`` coupled into the gradient), then the rule (PyTorch's
definitions; ``t`` counts steps from 1):

==========  ==================================================================================
sgd         ``p -= lr * g``
momentum    ``v = mu v + g;  p -= lr * v``
nesterov    ``v = mu v + g;  p -= lr * (g + mu v)``
rmsprop     ``s = rho s + (1 - rho) g^2;  p -= lr * g / (sqrt(s) + eps)``
adagrad     ``s += g^2;  p -= lr * g / (sqrt(s) + eps)``
adam        ``m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
            p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)``
==========  ==================================================================================

A parameter whose new value is not finite keeps its old value and the step reports failure,
so that training can stop with every parameter at its last finite value. (The caller checks
the gradient first, so this only catches an update that overflows.)
"""

import numpy as np
from numba import njit

from .dense import N_IN, N_OUT, W_OFF
from .scalar import like

SGD = 0
MOMENTUM = 1
NESTEROV = 2
RMSPROP = 3
ADAGRAD = 4
ADAM = 5

# Positions in the hyper-parameter array.
H_MOMENTUM = 0
H_RHO = 1
H_BETA1 = 2
H_BETA2 = 3
H_EPS = 4
N_HYPER = 5

# Reassociation lets LLVM vectorise the sums (and the finiteness probe of the updates); no flag
# that assumes away NaN or inf.
REDUCE_FASTMATH = {"reassoc", "contract"}


@njit(cache=True, error_model="numpy", fastmath=REDUCE_FASTMATH)
def clipped_sumsq(grad, clip_value, with_sumsq=True):
    """Sum of squares of the value-clipped gradient, and whether every entry is finite.

    Parameters
    ----------
    grad : ndarray, shape (P,)
    clip_value : float
        Entries are clipped to ``[-clip_value, clip_value]`` first (``inf``: no clipping).
    with_sumsq : bool
        False: only the finiteness check (the sum, which only global-norm clipping needs, is
        returned as 0; the float64 squares cost twice the check's time on float32 data).

    Returns
    -------
    sumsq : float
        Accumulated in float64 (no overflow of float32 squares above 1e19).
    finite : bool
        False when some entry of ``grad`` is NaN or infinite.
    """
    total = 0.0
    probe = like(grad, 0.0)
    if with_sumsq:
        for i in range(grad.shape[0]):
            g = grad[i]
            probe += g * like(grad, 0.0)
            c = np.float64(min(max(g, -clip_value), clip_value))
            total += c * c
    else:
        for i in range(grad.shape[0]):
            probe += grad[i] * like(grad, 0.0)
    return total, probe == like(grad, 0.0)


@njit(cache=True, error_model="numpy", fastmath=REDUCE_FASTMATH)
def sumsq64(x):
    """Sum of squares of a 1-D array, accumulated in float64.

    A float32 sum of squares underflows for entries below about 1e-19 and overflows above
    about 1e19, inside the range of gradients of a deep net that vanish or explode; squared in
    float64 they stay exact to 1e-154.
    """
    total = 0.0
    for i in range(x.shape[0]):
        v = np.float64(x[i])
        total += v * v
    return total


@njit(cache=True, error_model="numpy", fastmath=REDUCE_FASTMATH)
def weight_grad_norms(grad, layout, out):
    """``out[l] = ||dL/dW_l||_F`` for every layer (weights only, not biases; float64 sums)."""
    for l in range(layout.shape[0]):
        start = layout[l, W_OFF]
        out[l] = np.sqrt(sumsq64(grad[start:start + layout[l, N_IN] * layout[l, N_OUT]]))


@njit(cache=True, error_model="numpy", fastmath=REDUCE_FASTMATH)
def optimizer_step(code, params, grad, s1, s2, lr, hyper, t, weight_decay, gscale, clip_value):
    """One optimizer update of the flat buffer ``params`` in place.

    Parameters
    ----------
    code : int
        Optimizer code (module constants).
    params, grad : ndarray, shape (P,)
    s1, s2 : ndarray, shape (P,)
        Optimizer state (velocity / first moment, second moment); unused ones may be empty.
    lr : float
    hyper : ndarray, shape (N_HYPER,)
        Hyper-parameters at the ``H_*`` positions, in the parameters' float type.
    t : int
        Step number, from 1 (Adam's bias correction).
    weight_decay, gscale, clip_value : float
        See the module docstring; ``clip_value = inf`` disables value clipping.
    Returns
    -------
    bool
        True when every new value is finite; otherwise the parameters whose new value is not
        finite kept their old value.
    """
    one = like(params, 1.0)
    zero = like(params, 0.0)
    lr = like(params, lr)
    wd = like(params, weight_decay)
    gs = like(params, gscale)
    cv = like(params, clip_value)
    mu = hyper[H_MOMENTUM]
    eps = hyper[H_EPS]
    probe = zero
    n = params.shape[0]
    if code == SGD:
        # Check a chunk, then store it unconditionally (it is still in L1): storing "new if
        # finite else old" in one pass compiles to a masked vector store, about 4x slower on
        # AMD Zen cores.
        ok = True
        for start in range(0, n, _SGD_CHUNK):
            p = params[start:start + _SGD_CHUNK]
            g = grad[start:start + _SGD_CHUNK]
            if _sgd_pass(_CHECK, p, g, lr, wd, gs, cv):
                _sgd_pass(_STORE, p, g, lr, wd, gs, cv)
            else:
                _sgd_pass(_GUARDED, p, g, lr, wd, gs, cv)
                ok = False
        return ok
    if code == MOMENTUM or code == NESTEROV:
        # momentum: p -= lr * v; nesterov: p -= lr * (g + mu v); exact in both forms
        cg = one if code == NESTEROV else zero
        cv_ = mu if code == NESTEROV else one
        for i in range(n):
            p = params[i]
            g = min(max(grad[i], -cv), cv) * gs + wd * p
            v = mu * s1[i] + g
            s1[i] = v
            new = p - lr * (cg * g + cv_ * v)
            d = new - new  # 0, or NaN when new is not finite
            params[i] = new if d == zero else p
            probe += d
    elif code == RMSPROP:
        rho = hyper[H_RHO]
        for i in range(n):
            p = params[i]
            g = min(max(grad[i], -cv), cv) * gs + wd * p
            s = rho * s1[i] + (one - rho) * g * g
            s1[i] = s
            new = p - lr * g / (np.sqrt(s) + eps)
            d = new - new  # 0, or NaN when new is not finite
            params[i] = new if d == zero else p
            probe += d
    elif code == ADAGRAD:
        for i in range(n):
            p = params[i]
            g = min(max(grad[i], -cv), cv) * gs + wd * p
            s = s1[i] + g * g
            s1[i] = s
            new = p - lr * g / (np.sqrt(s) + eps)
            d = new - new  # 0, or NaN when new is not finite
            params[i] = new if d == zero else p
            probe += d
    else:
        b1 = hyper[H_BETA1]
        b2 = hyper[H_BETA2]
        tt = like(params, t)
        c1 = one / (one - b1**tt)
        c2 = one / (one - b2**tt)
        for i in range(n):
            p = params[i]
            g = min(max(grad[i], -cv), cv) * gs + wd * p
            m = b1 * s1[i] + (one - b1) * g
            v = b2 * s2[i] + (one - b2) * g * g
            s1[i] = m
            s2[i] = v
            new = p - lr * (m * c1) / (np.sqrt(v * c2) + eps)
            d = new - new  # 0, or NaN when new is not finite
            params[i] = new if d == zero else p
            probe += d
    return probe == zero


# Modes of _sgd_pass: compute only, store every new value, store only the finite new values.
_SGD_CHUNK = 2048  # values per chunk of the SGD update (two 8 KiB slices stay in L1)
_CHECK = 0
_STORE = 1
_GUARDED = 2


@njit(inline="always", error_model="numpy", fastmath=REDUCE_FASTMATH)
def _sgd_pass(mode, params, grad, lr, wd, gs, cv):
    """One pass of ``p -= lr * g`` (``g`` clipped, scaled, weight decay added) over the buffer;
    True when every new value is finite. Inlined with a constant ``mode``: one loop per mode."""
    zero = like(params, 0.0)
    probe = zero
    for i in range(params.shape[0]):
        p = params[i]
        g = min(max(grad[i], -cv), cv) * gs + wd * p
        new = p - lr * g
        d = new - new  # 0, or NaN when new is not finite
        probe += d
        if mode == _STORE:
            params[i] = new
        elif mode == _GUARDED:
            params[i] = new if d == zero else p
    return probe == zero

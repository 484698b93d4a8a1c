"""A float64 exp written as plain arithmetic, so that loops calling it vectorise.

libm's exp is a scalar call that stops LLVM from vectorising a loop; :func:`exp64` inlines into
the caller's loop instead. Used by the logistic rate transfer function
(:mod:`neurosim.kernels.rate`) and the MLP's fast tanh (:mod:`neurosim.kernels.dense`).
"""

import numpy as np
from numba import njit

# exp(x) = 2^k exp(r), k = round(x / ln 2), |r| <= ln(2) / 2; Taylor to degree 13 leaves a
# truncation error below 2e-17. Over the whole range [-708, 709] the result is within one ulp of
# np.exp (94 % of values bit-identical; tests/test_bio_models.py checks it on dense and random
# arguments); arguments outside are clamped to it.
_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_ROUND = 6755399441055744.0  # 1.5 * 2^52: adding it rounds to an integer held in the low bits

# Throughput-bound loops allow fused multiply-adds (one rounding instead of two; nothing is
# reassociated, which keeps the error analysis above).
_FMA = {"contract"}


@njit(cache=True, inline="always", error_model="numpy", fastmath=_FMA)
def exp64(x):
    """exp of a float64 in plain arithmetic that LLVM vectorises (libm's exp is a scalar call).

    The argument is clamped to [-708, 709], which keeps 2^k a normal number; NaN stays NaN.
    """
    v = min(max(x, -708.0), 709.0)
    t = v * _LOG2E + _ROUND
    kf = t - _ROUND
    r = (v - kf * _LN2_HI) - kf * _LN2_LO  # kf * _LN2_HI is exact (Cody and Waite)
    # 1 + r + r^2/2 + r^3 Q(r): the outer terms, which set the rounding, by Horner; the
    # small Q(r) = sum_{i<=10} r^i / (i + 3)! by Estrin's scheme, for a shorter dependency chain.
    r2 = r * r
    r4 = r2 * r2
    q03 = (1.0 / 6 + r * (1.0 / 24)) + r2 * (1.0 / 120 + r * (1.0 / 720))
    q47 = (1.0 / 5040 + r * (1.0 / 40320)) + r2 * (1.0 / 362880 + r * (1.0 / 3628800))
    q810 = (1.0 / 39916800 + r * (1.0 / 479001600)) + r2 * (1.0 / 6227020800)
    p = 1.0 + r * (1.0 + r * (0.5 + r * (q03 + r4 * (q47 + r4 * q810))))
    scale = np.int64((np.float64(t).view(np.int64) + 1023) << 52).view(np.float64)  # 2^k
    return (p if x == x else x) * scale

"""Singular values of the input-output Jacobian, beside the free-probability prediction.

For a layered network ``h_l = a_{l-1} W_l + b_l``, ``a_l = phi_l(h_l)`` the Jacobian of the
output ``a_L`` with respect to the input ``x`` is (in the row-vector convention)
``J = W_1 D_1 W_2 D_2 ... W_L D_L`` with ``D_l = diag(phi_l'(h_l))``. Pennington, Schoenholz &
Ganguli (2017): in wide networks the mean of the squared singular values is
``prod_l sigma_{w,l}^2 E[phi_l'(h_l)^2]`` and, since the layers are asymptotically free, the
normalised variance of the squared singular values adds up over the factors,
``var / mean^2 = sum_l (mu_2 / mu_1^2 - 1) - sum_l s_1`` with ``mu_k = E[phi'^(2k)]`` and
``s_1 = -1`` for Gaussian, 0 for orthogonal weights. Only orthogonal weights with a sigmoidal
activation at small ``q*`` keep it near 0 (dynamical isometry).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .._validation import check_int
from . import meanfield as _mf
from .propagation import _feedforward, _pre, _q0

BAND = (0.5, 2.0)


@dataclass
class JacobianSpectrum:
    """Singular values of ``d a_L / d x`` for each input, their summary and the prediction.

    Attributes
    ----------
    singular_values : ndarray, shape (batch, min(n_0, n_L))
        Per input, descending.
    mean_squared : float
        Mean of the squared singular values over all inputs.
    variance : float
        Variance of the squared singular values.
    normalized_variance : float
        ``variance / mean_squared^2``.
    max_singular_value : float
    fraction_in_band : float
        Share of singular values in ``[0.5, 2]``.
    predicted_mean_squared : float
        ``(n_L / min(n_0, n_L)) prod_l sigma_{w,l}^2 E[phi_l'(h_l)^2]`` (mean field, weight
        scales measured per layer, ``q^l`` from the inputs' mean ``||x||^2 / n_0``).
    predicted_normalized_variance : float
        ``sum_l (mu_2 / mu_1^2 - 1) - sum_l s_1`` (free probability; equal widths).
    s1 : ndarray, shape (L,)
        Per layer: 0 where ``W_l`` is (a multiple of) an orthogonal matrix, else -1.
    depth : int
    """

    singular_values: np.ndarray
    mean_squared: float
    variance: float
    normalized_variance: float
    max_singular_value: float
    fraction_in_band: float
    predicted_mean_squared: float
    predicted_normalized_variance: float
    s1: np.ndarray
    depth: int


def _is_orthogonal(W: np.ndarray, rng) -> bool:
    """Whether ``W^T W`` (or ``W W^T``, the smaller) is a multiple of the identity."""
    W = np.asarray(W, dtype=np.float64)
    A = W if W.shape[0] >= W.shape[1] else W.T
    n = A.shape[1]
    c = float(np.sum(A * A)) / n
    if c == 0.0:
        return False
    v = rng.standard_normal((n, 4))
    r = A.T @ (A @ v) - c * v
    tol = 1e-6 if W.dtype == np.float64 else 1e-4
    return float(np.linalg.norm(r)) <= tol * c * float(np.linalg.norm(v))


def _jacobians(layered, X, pre) -> np.ndarray:
    """Stacked Jacobians, shape (batch, n_0, n_L) or its transpose (the smaller product)."""
    B = X.shape[0]
    n0 = X.shape[1]
    nL = layered.weights[-1].shape[1]
    dphi = [np.asarray(a.derivative(h), np.float64) for a, h in zip(layered.acts, pre,
                                                                    strict=True)]
    Ws = [np.asarray(W, np.float64) for W in layered.weights]
    if n0 <= nL or any(layered.skips):
        M = np.broadcast_to(np.eye(n0), (B, n0, n0)).copy()
        for l, W in enumerate(Ws):
            prod = (M.reshape(-1, W.shape[0]) @ W).reshape(B, n0, W.shape[1])
            prod *= dphi[l][:, None, :]
            M = prod + M if layered.skips[l] else prod
        return M
    # From the output side: J^T = D_L W_L^T ... D_1 W_1^T, a product with nL rows.
    M = np.broadcast_to(np.eye(nL), (B, nL, nL)).copy()
    for l in range(len(Ws) - 1, -1, -1):
        W = Ws[l]
        M = M * dphi[l][:, None, :]
        M = (M.reshape(-1, W.shape[1]) @ W.T).reshape(B, nL, W.shape[0])
    return M


def jacobian_spectrum(model, X, *, theory=True, chunk=None) -> JacobianSpectrum:
    """Singular values of the input-output Jacobian at each input, with the prediction beside.

    Parameters
    ----------
    model : MLP or RateNetwork
        A layered network (plain or residual MLP, inference mode; RateNetwork without feedback).
    X : array_like, shape (batch, n_0)
    theory : bool
        Compute the mean-field / free-probability prediction.
    chunk : int, optional
        Inputs per stacked product (default: as many as fit in about 64 MB).

    Returns
    -------
    JacobianSpectrum
    """
    layered, X = _feedforward(model, X, "jacobian_spectrum")
    n0, nL = model.sizes[0], model.sizes[-1]
    per_input = 8 * max(n0, nL) * max(model.sizes) * 3
    chunk = max(1, (64 << 20) // per_input) if chunk is None else check_int("chunk", chunk, 1)
    pre = [np.asarray(h, np.float64) for h in _pre(layered, X)]
    svals = []
    for start in range(0, X.shape[0], chunk):
        sl = slice(start, start + chunk)
        M = _jacobians(layered, X[sl], [h[sl] for h in pre])
        svals.append(np.linalg.svd(M, compute_uv=False))
    sv = np.concatenate(svals, axis=0)
    lam = sv.astype(np.float64) ** 2
    mean = float(lam.mean())
    var = float(lam.var())
    rng = np.random.default_rng(0)
    s1 = np.array([0.0 if _is_orthogonal(W, rng) else -1.0 for W in layered.weights])
    pred_mean = pred_var = math.nan
    # Inference mode: dropout plays no part; skips break the product form of the prediction.
    if theory and not any(layered.skips):
        sw, sb = layered.sigmas()
        stats = _mf.network_statistics(layered.acts, sw, sb, _q0(X), fourth=True)
        mu1, mu2 = stats.dphi_sq, stats.dphi_4th
        pred_mean = float(np.prod(sw**2 * mu1)) * nL / min(n0, nL)
        pred_var = float(np.sum(mu2 / mu1**2 - 1.0) - np.sum(s1))
    in_band = float(np.mean((sv >= BAND[0]) & (sv <= BAND[1])))
    return JacobianSpectrum(sv, mean, var, var / mean**2 if mean > 0 else math.nan,
                            float(sv.max()), in_band, pred_mean, pred_var, s1,
                            layered.n_layers)

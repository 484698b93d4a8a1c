"""Loss kernels: value and gradient with respect to the network output.

``mse``: batch mean of ``0.5 * ||yhat - y||^2``. ``cross_entropy``: batch mean of the softmax
negative log-likelihood ``logsumexp(z) - z . y`` computed from logits ``z`` (stable for any finite
logits; ``y`` rows are class probabilities, usually one-hot).
"""

import numpy as np
from numba import njit

from .scalar import like

MSE = 0
CROSS_ENTROPY = 1


@njit(cache=True, nogil=True)
def loss_and_output_grad(loss_code, out, Y, grad):
    """Loss and its gradient with respect to the network output.

    Parameters
    ----------
    loss_code : int
        ``MSE`` or ``CROSS_ENTROPY``.
    out : ndarray, shape (batch, n_out)
        Network output (logits for cross entropy).
    Y : ndarray, shape (batch, n_out)
        Targets.
    grad : ndarray, shape (batch, n_out)
        Written with dL/d out (already divided by the batch size).

    Returns
    -------
    float
        The batch-mean loss, in the dtype of ``out``.
    """
    batch, n_out = out.shape
    inv_batch = like(out, 1.0 / batch)
    half = like(out, 0.5)
    total = like(out, 0.0)
    if loss_code == MSE:
        for i in range(batch):
            for j in range(n_out):
                e = out[i, j] - Y[i, j]
                total += half * e * e
                grad[i, j] = e * inv_batch
        return total * inv_batch
    for i in range(batch):
        zmax = out[i, 0]
        for j in range(1, n_out):
            if out[i, j] > zmax:
                zmax = out[i, j]
        s = like(out, 0.0)
        for j in range(n_out):
            s += np.exp(out[i, j] - zmax)
        log_norm = zmax + np.log(s)
        y_total = like(out, 0.0)
        for j in range(n_out):
            total += Y[i, j] * (log_norm - out[i, j])
            y_total += Y[i, j]
        for j in range(n_out):
            grad[i, j] = (y_total * np.exp(out[i, j] - log_norm) - Y[i, j]) * inv_batch
    return total * inv_batch


@njit(cache=True)
def loss_value(loss_code, out, Y):
    """Batch-mean loss only (no gradient), same definitions as :func:`loss_and_output_grad`."""
    grad = np.empty_like(out)
    return loss_and_output_grad(loss_code, out, Y, grad)

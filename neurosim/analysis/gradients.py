"""Per-layer gradient signal: ``||dL/dW_l||_F`` and the batch-mean norm of ``delta_l``.

Both measure, layer by layer ``l = 1..L``, how large the learning signal is that reaches a
layer (DESIGN.md: "gradient signal at layer l" means both).
"""

from __future__ import annotations

import numpy as np


def _true_gradients(model, X, Y, loss):
    """(weight gradients, deltas) per layer: the model's own backprop, or the rules module's
    exact gradient for rate networks."""
    if hasattr(model, "gradients"):
        _, grads = model.gradients(X, Y, loss=loss)
        return grads.weights, grads.deltas
    from ..rules import compare_to_gradient

    sig = compare_to_gradient(model, X, Y, "backprop", loss=loss)
    return sig.true_grads, sig.true_deltas


def layer_gradient_norms(model, X, Y, loss: str = "mse") -> np.ndarray:
    """Frobenius norm of the gradient of the batch-mean loss with respect to each ``W_l``.

    Parameters
    ----------
    model : MLP or RateNetwork
        An MLP is differentiated in training mode (what :func:`neurosim.train` follows); a
        rate network through its steady state.
    X : array_like, shape (batch, n_0)
    Y : array_like, shape (batch, n_L)
    loss : {"mse", "cross_entropy"}

    Returns
    -------
    ndarray, shape (L,)
        ``||dL/dW_l||_F`` for l = 1..L.
    """
    weights, _ = _true_gradients(model, X, Y, loss)
    return np.array([np.sqrt(np.sum(np.square(w, dtype=np.float64))) for w in weights])


def layer_delta_norms(model, X, Y, loss: str = "mse") -> np.ndarray:
    """Batch mean of ``||delta_l[i, :]||`` with ``delta_l = dL/dh_l`` (the batch-mean loss).

    Returns
    -------
    ndarray, shape (L,)
    """
    _, deltas = _true_gradients(model, X, Y, loss)
    return np.array([np.mean(np.sqrt(np.sum(np.square(d, dtype=np.float64), axis=1)))
                     for d in deltas])

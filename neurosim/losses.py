"""Registry of losses (the names users type), wrapping :mod:`neurosim.kernels.losses`.

=============  ===============================================================================
name           definition (batch mean over the rows of ``output`` and targets ``Y``)
=============  ===============================================================================
mse            ``0.5 * ||output - y||^2``
cross_entropy  ``logsumexp(z) - z . y`` with logits ``z = output`` (softmax negative
               log-likelihood; rows of ``Y`` are class probabilities, usually one-hot)
=============  ===============================================================================
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._validation import check_data, check_same_batch, unknown_name_error
from .kernels import losses as _k


@dataclass(frozen=True)
class Loss:
    """A registered loss: its name and kernel code."""

    name: str
    code: int
    description: str

    def value(self, output, Y) -> float:
        """Batch-mean loss of ``output`` (batch, n_out) against ``Y`` (batch, n_out)."""
        return self.value_and_gradient(output, Y)[0]

    def value_and_gradient(self, output, Y) -> tuple[float, np.ndarray]:
        """Batch-mean loss and its gradient with respect to ``output`` (same shape and float
        type as ``output``; float64 unless ``output`` is float32)."""
        out = check_data("output", output)
        dtype = out.dtype if out.dtype in (np.float32, np.float64) else np.float64
        out = np.ascontiguousarray(out, dtype=dtype)
        Y = check_data("Y", Y, n_features=out.shape[1], dtype=dtype)
        check_same_batch("output", out, "Y", Y)
        grad = np.empty_like(out)
        loss = _k.loss_and_output_grad(self.code, out, Y, grad)
        return float(loss), grad


_LOSSES = {
    loss.name: loss
    for loss in (
        Loss("mse", _k.MSE, "batch mean of 0.5 * ||output - y||^2"),
        Loss("cross_entropy", _k.CROSS_ENTROPY,
             "batch mean of the softmax negative log-likelihood of logits"),
    )
}


def names() -> tuple[str, ...]:
    """Registered loss names."""
    return tuple(_LOSSES)


def get(name: str | Loss) -> Loss:
    """Resolve a loss by name (a :class:`Loss` passes through).

    Raises
    ------
    ValueError
        Unknown name; the message lists the valid ones.
    """
    if isinstance(name, Loss):
        return name
    if not isinstance(name, str) or name not in _LOSSES:
        raise unknown_name_error("loss", name, _LOSSES)
    return _LOSSES[name]

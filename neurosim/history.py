"""The record of one training run, shared by MLPs and rate networks."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np


def _empty(*shape: int) -> np.ndarray:
    return np.zeros(shape, dtype=np.float64)


@dataclass
class History:
    """What :func:`neurosim.train` records.

    Per-epoch arrays have shape ``(epochs_run,)``; per-record arrays have one row per recorded step
    (every ``record_every`` optimizer steps) and one column per layer ``l = 1..L`` (column ``l-1``).

    Attributes
    ----------
    loss, test_loss : ndarray, shape (epochs_run,)
        Mean training / test loss after each epoch (``loss`` is the training loss).
    accuracy, test_accuracy : ndarray, shape (epochs_run,)
        Classification accuracy in [0, 1]; NaN for regression tasks.
    steps : ndarray of int, shape (n_records,)
        Optimizer step index (0-based, counted over the whole run) of each record.
    step_loss : ndarray, shape (n_records,)
        Minibatch loss at each recorded step.
    grad_norms : ndarray, shape (n_records, L)
        Frobenius norm of the true gradient dL/dW_l.
    delta_norms : ndarray, shape (n_records, L)
        Batch-mean Euclidean norm of the true error signal delta_l = dL/dh_l.
    signal_norms : ndarray, shape (n_records, L)
        Batch-mean norm of the error signal the learning rule delivers to layer l (equal to
        ``delta_norms`` for backprop; rate-network rules only).
    update_norms : ndarray, shape (n_records, L)
        Frobenius norm of the rule's weight update direction for layer l.
    angles : ndarray, shape (n_records, L)
        Angle in degrees between the rule's weight update and the true gradient (negative
        gradient direction = 0 degrees).
    diverged : bool
        True when a step produced NaN or inf; training stopped there.
    diverged_step : int or None
        The optimizer step that diverged.
    epochs_run : int
    """

    loss: np.ndarray = field(default_factory=lambda: _empty(0))
    test_loss: np.ndarray = field(default_factory=lambda: _empty(0))
    accuracy: np.ndarray = field(default_factory=lambda: _empty(0))
    test_accuracy: np.ndarray = field(default_factory=lambda: _empty(0))
    steps: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    step_loss: np.ndarray = field(default_factory=lambda: _empty(0))
    grad_norms: np.ndarray = field(default_factory=lambda: _empty(0, 0))
    delta_norms: np.ndarray = field(default_factory=lambda: _empty(0, 0))
    signal_norms: np.ndarray = field(default_factory=lambda: _empty(0, 0))
    update_norms: np.ndarray = field(default_factory=lambda: _empty(0, 0))
    angles: np.ndarray = field(default_factory=lambda: _empty(0, 0))
    diverged: bool = False
    diverged_step: int | None = None
    epochs_run: int = 0
    rule: str = "backprop"

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Every field as a NumPy array (for saving with ``np.savez``; no pickling needed)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "diverged_step":
                value = -1 if value is None else value
            out[f.name] = np.asarray(value)
        return out

    @classmethod
    def from_arrays(cls, arrays) -> History:
        """Inverse of :meth:`to_arrays`."""
        kwargs = {}
        for f in fields(cls):
            if f.name not in arrays:
                continue
            value = np.asarray(arrays[f.name])
            if f.name == "diverged":
                value = bool(value)
            elif f.name in ("diverged_step", "epochs_run"):
                value = int(value)
                if f.name == "diverged_step" and value < 0:
                    value = None
            elif f.name == "rule":
                value = str(value)
            kwargs[f.name] = value
        return cls(**kwargs)

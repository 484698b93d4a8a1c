"""Angles between a learning rule's updates and the true gradient, layer by layer."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..history import History


@dataclass
class AlignmentAngles:
    """Per-layer alignment of a rule with backprop (layers 1..L).

    Attributes
    ----------
    rule : str
    layers : ndarray of int, shape (L,)
    angles : ndarray, shape (L,) or (n_records, L)
        Angle in degrees between the rule's weight update and the true gradient ``dL/dW_l``
        (0: the same direction, 90: orthogonal, NaN where either is zero).
    signal_angles : ndarray, shape (L,) or (n_records, L)
        Angle between the error signal the rule delivers to layer l and the true
        ``delta_l`` over the whole batch (NaN for unsupervised rules and for a History).
    update_norms, grad_norms : ndarray, shape (L,) or (n_records, L)
        Frobenius norms of the rule's update and of the true gradient.
    steps : ndarray or None
        Optimizer steps of the records (History only).
    """

    rule: str
    layers: np.ndarray
    angles: np.ndarray
    signal_angles: np.ndarray
    update_norms: np.ndarray
    grad_norms: np.ndarray
    steps: np.ndarray | None = None

    def to_arrays(self) -> dict[str, np.ndarray]:
        out = {k: np.asarray(v) for k, v in self.__dict__.items() if v is not None}
        return out


def angle_between(u, v) -> float:
    """Angle in degrees between two arrays seen as flat vectors (NaN if either is zero).

    Computed as ``2 atan2(|u' - v'|, |u' + v'|)`` of the unit vectors, accurate near 0 and 180
    degrees where ``arccos`` of a dot product is not.
    """
    u = np.asarray(u, dtype=np.float64).ravel()
    v = np.asarray(v, dtype=np.float64).ravel()
    nu = float(np.linalg.norm(u))
    nv = float(np.linalg.norm(v))
    if nu == 0.0 or nv == 0.0 or not (np.isfinite(nu) and np.isfinite(nv)):
        return float("nan")
    a, b = u / nu, v / nv
    return float(np.degrees(2.0 * np.arctan2(np.linalg.norm(a - b), np.linalg.norm(a + b))))


def alignment_angles(model, X=None, Y=None, rule=None, loss="mse", seed=0,
                     **rule_params) -> AlignmentAngles:
    """Per-layer angle between a rule's update and the true gradient.

    Parameters
    ----------
    model : RateNetwork or History
        A RateNetwork: the rule is applied to ``(X, Y)`` by
        :func:`neurosim.rules.compare_to_gradient`. A History: its recorded angles over training
        (pass nothing else).
    X : array_like, shape (batch, n_in)
    Y : array_like, shape (batch, n_out)
    rule : str
        A rule of :data:`neurosim.rules.RULES`.
    loss : {"mse", "cross_entropy"}
    seed : int
        Seed of a stochastic rule's draws.
    **rule_params
        The rule's parameters.

    Returns
    -------
    AlignmentAngles
    """
    if isinstance(model, History):
        if X is not None or Y is not None or rule is not None or rule_params:
            raise ValueError("a History carries its own records: pass no X, Y, rule or rule "
                             "parameters")
        angles = np.asarray(model.angles, dtype=np.float64)
        if angles.ndim != 2:
            raise ValueError(f"history.angles must have shape (n_records, L), got "
                             f"{angles.shape}")
        L = angles.shape[1]
        return AlignmentAngles(str(model.rule), np.arange(1, L + 1), angles,
                               np.full_like(angles, np.nan),
                               np.asarray(model.update_norms, np.float64),
                               np.asarray(model.grad_norms, np.float64),
                               np.asarray(model.steps))
    if rule is None:
        raise ValueError("alignment_angles needs rule= (a learning rule name, e.g. "
                         "'feedback_alignment')")
    if X is None or Y is None:
        raise ValueError("alignment_angles needs inputs X and targets Y for a model")
    from ..rules import compare_to_gradient

    sig = compare_to_gradient(model, X, Y, rule, loss=loss, seed=seed, **rule_params)
    signal_angles = np.array([angle_between(s, d) for s, d in
                              zip(sig.signals, sig.true_deltas, strict=True)])
    L = len(sig.updates)
    return AlignmentAngles(
        rule, np.arange(1, L + 1), np.asarray(sig.angles, np.float64), signal_angles,
        np.array([float(np.linalg.norm(np.asarray(u, np.float64))) for u in sig.updates]),
        np.array([float(np.linalg.norm(np.asarray(g, np.float64))) for g in sig.true_grads]),
    )

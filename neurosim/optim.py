"""Registry of optimizers (the names users type) and their hyper-parameters.

The update rules are in :mod:`neurosim.kernels.optim` (PyTorch's definitions). Every optimizer
takes ``weight_decay`` (an L2 penalty coupled into the gradient, passed to
:func:`neurosim.train`), and these hyper-parameters:

==========  ==================================  =============================================
name        hyper-parameters (defaults)         state per parameter
==========  ==================================  =============================================
sgd         -                                   -
momentum    momentum=0.9                        velocity
nesterov    momentum=0.9                        velocity
rmsprop     rho=0.99, eps=1e-8                  running mean of g^2
adagrad     eps=1e-10                           sum of g^2
adam        beta1=0.9, beta2=0.999, eps=1e-8    first and second moments
==========  ==================================  =============================================
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._validation import check_in_range, check_positive, unknown_name_error
from .kernels import optim as _k


@dataclass(frozen=True)
class _Kind:
    name: str
    code: int
    defaults: dict
    n_state: int


_KINDS = {
    kind.name: kind
    for kind in (
        _Kind("sgd", _k.SGD, {}, 0),
        _Kind("momentum", _k.MOMENTUM, {"momentum": 0.9}, 1),
        _Kind("nesterov", _k.NESTEROV, {"momentum": 0.9}, 1),
        _Kind("rmsprop", _k.RMSPROP, {"rho": 0.99, "eps": 1e-8}, 1),
        _Kind("adagrad", _k.ADAGRAD, {"eps": 1e-10}, 1),
        _Kind("adam", _k.ADAM, {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8}, 2),
    )
}

_SLOTS = {"momentum": _k.H_MOMENTUM, "rho": _k.H_RHO, "beta1": _k.H_BETA1,
          "beta2": _k.H_BETA2, "eps": _k.H_EPS}


def names() -> tuple[str, ...]:
    """Registered optimizer names."""
    return tuple(_KINDS)


@dataclass(frozen=True)
class Optimizer:
    """A resolved optimizer: name, kernel code and hyper-parameter values."""

    name: str
    code: int
    params: dict = field(default_factory=dict)
    n_state: int = 0

    def hyper_array(self, dtype=np.float64) -> np.ndarray:
        """Hyper-parameters packed as the kernel takes them, in ``dtype``."""
        out = np.zeros(_k.N_HYPER, dtype=dtype)
        for key, value in self.params.items():
            out[_SLOTS[key]] = value
        return out

    def init_state(self, n_params: int, dtype=np.float64) -> tuple[np.ndarray, np.ndarray]:
        """Zeroed state buffers ``(s1, s2)`` for ``n_params`` parameters (unused ones empty)."""
        s1 = np.zeros(n_params if self.n_state >= 1 else 0, dtype=dtype)
        s2 = np.zeros(n_params if self.n_state >= 2 else 0, dtype=dtype)
        return s1, s2


def get(name: str | Optimizer, **params) -> Optimizer:
    """Resolve an optimizer by name with hyper-parameter overrides.

    Raises
    ------
    ValueError
        Unknown optimizer or hyper-parameter name (the message lists the valid ones), or a
        value outside its range: ``momentum``, ``rho``, ``beta1``, ``beta2`` in [0, 1),
        ``eps`` > 0.
    """
    if isinstance(name, Optimizer):
        if not params:
            return name
        return get(name.name, **{**name.params, **params})
    if not isinstance(name, str) or name not in _KINDS:
        raise unknown_name_error("optimizer", name, _KINDS)
    kind = _KINDS[name]
    values = dict(kind.defaults)
    for key, value in params.items():
        if key not in kind.defaults:
            allowed = ", ".join(kind.defaults) or "none"
            raise ValueError(
                f"optimizer {name!r} has no hyper-parameter {key!r}; allowed: {allowed} "
                "(plus weight_decay, clip_norm, clip_value, passed to train)"
            )
        if key == "eps":
            values[key] = check_positive(f"{name} eps", value)
        else:
            values[key] = check_in_range(f"{name} {key}", value, 0.0, 1.0, high_closed=False)
    return Optimizer(name, kind.code, values, kind.n_state)

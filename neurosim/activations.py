"""Registry of activation functions: names users type, kernel codes, parameters and ranges.

Every activation has a value, a first and a second derivative (compiled kernels in
:mod:`neurosim.kernels.activations`) and an output range that may depend on its parameters.

==================  ==========================================  =============================
name                parameters (defaults)                       output range
==================  ==========================================  =============================
linear              -                                           (-inf, inf)
sigmoid             -                                           (0, 1)
tanh                -                                           (-1, 1)
relu                -                                           [0, inf)
leaky_relu          slope=0.01                                  (-inf, inf)
prelu               slope=0.25 (initial; learnable per layer)   (-inf, inf)
elu                 alpha=1.0                                   (-alpha, inf)
softsign            -                                           (-1, 1)
hard_tanh           -                                           [-1, 1]
erf                 -                                           (-1, 1)
logistic            r_max=1.0, gain=1.0, threshold=0.0          (0, r_max)
saturating_linear   r_max=1.0, gain=1.0, threshold=0.0          [0, r_max]
naka_rushton        r_max=1.0, exponent=2.0, c50=1.0            [0, r_max)
==================  ==========================================  =============================

``logistic`` is ``r_max / (1 + exp(-gain (x - threshold)))``; ``saturating_linear`` is
``clip(gain (x - threshold), 0, r_max)``; ``naka_rushton`` is
``r_max x^n / (x^n + c50^n)`` for ``x > 0`` and 0 otherwise. The last three are the bounded
firing-rate transfer functions of rate networks (rates in units of ``r_max``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._validation import check_real, unknown_name_error
from .kernels import activations as _k


@dataclass(frozen=True)
class ActivationKind:
    """One registered activation family."""

    name: str
    code: int
    param_names: tuple[str, ...] = ()
    defaults: tuple[float, ...] = ()
    bounded_rate: bool = False
    smooth: bool = True

    def output_range(self, params: dict[str, float]) -> tuple[float, float]:
        name = self.name
        if name in ("linear", "leaky_relu", "prelu"):
            return (-np.inf, np.inf)
        if name == "relu":
            return (0.0, np.inf)
        if name == "sigmoid":
            return (0.0, 1.0)
        if name in ("tanh", "softsign", "hard_tanh", "erf"):
            return (-1.0, 1.0)
        if name == "elu":
            return (-params["alpha"], np.inf)
        return (0.0, params["r_max"])


_KINDS = {
    kind.name: kind
    for kind in (
        ActivationKind("linear", _k.LINEAR),
        ActivationKind("sigmoid", _k.SIGMOID),
        ActivationKind("tanh", _k.TANH),
        ActivationKind("relu", _k.RELU, smooth=False),
        ActivationKind("leaky_relu", _k.LEAKY_RELU, ("slope",), (0.01,), smooth=False),
        ActivationKind("prelu", _k.PRELU, ("slope",), (0.25,), smooth=False),
        ActivationKind("elu", _k.ELU, ("alpha",), (1.0,)),
        ActivationKind("softsign", _k.SOFTSIGN),
        ActivationKind("hard_tanh", _k.HARD_TANH, smooth=False),
        ActivationKind("erf", _k.ERF),
        ActivationKind("logistic", _k.LOGISTIC, ("r_max", "gain", "threshold"), (1.0, 1.0, 0.0),
                       bounded_rate=True),
        ActivationKind("saturating_linear", _k.SATURATING_LINEAR,
                       ("r_max", "gain", "threshold"), (1.0, 1.0, 0.0), bounded_rate=True,
                       smooth=False),
        ActivationKind("naka_rushton", _k.NAKA_RUSHTON, ("r_max", "exponent", "c50"),
                       (1.0, 2.0, 1.0), bounded_rate=True),
    )
}

MLP_ACTIVATIONS = tuple(name for name, kind in _KINDS.items() if not kind.bounded_rate)
RATE_ACTIVATIONS = ("logistic", "saturating_linear", "naka_rushton", "tanh")


def names() -> tuple[str, ...]:
    """All registered activation names."""
    return tuple(_KINDS)


@dataclass(frozen=True)
class Activation:
    """A resolved activation: family plus parameter values.

    Attributes
    ----------
    name : str
    code : int
        Kernel dispatch code.
    params : dict
        Parameter values by name.
    """

    name: str
    code: int
    params: dict = field(default_factory=dict)

    @property
    def kind(self) -> ActivationKind:
        return _KINDS[self.name]

    @property
    def output_range(self) -> tuple[float, float]:
        return self.kind.output_range(self.params)

    def param_array(self, dtype=np.float64) -> np.ndarray:
        """Parameters packed as the (3,) array the kernels take."""
        out = np.zeros(3, dtype=dtype)
        for i, pname in enumerate(self.kind.param_names):
            out[i] = self.params[pname]
        return out

    def _apply(self, kernel, x, *extra):
        x = np.asarray(x)
        dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.float64
        flat = np.ascontiguousarray(x, dtype=dtype).reshape(-1)
        out = np.empty_like(flat)
        kernel(self.code, self.param_array(dtype), flat, *extra, out)
        return out.reshape(np.shape(x))

    def value(self, x) -> np.ndarray:
        """phi(x), elementwise, in x's floating type."""
        return self._apply(_k.apply_phi, x)

    def derivative(self, x) -> np.ndarray:
        """phi'(x), elementwise."""
        a = self.value(x).reshape(-1)
        return self._apply(_k.apply_dphi, x, a)

    def second_derivative(self, x) -> np.ndarray:
        """phi''(x), elementwise (zero at the kinks of piecewise-linear maps)."""
        a = self.value(x).reshape(-1)
        return self._apply(_k.apply_d2phi, x, a)

    __call__ = value


def get(spec: str | Activation, **params) -> Activation:
    """Resolve an activation by name (or pass an :class:`Activation` through).

    Parameters
    ----------
    spec : str or Activation
        A registered name (see :func:`names`).
    **params
        Parameter overrides, e.g. ``get("leaky_relu", slope=0.2)``,
        ``get("logistic", r_max=50.0, gain=0.2)``.

    Raises
    ------
    ValueError
        Unknown name, unknown parameter, or a parameter outside its domain.
    """
    if isinstance(spec, Activation):
        if not params:
            return spec
        merged = {**spec.params, **params}
        return get(spec.name, **merged)
    if not isinstance(spec, str) or spec not in _KINDS:
        raise unknown_name_error("activation", spec, _KINDS)
    kind = _KINDS[spec]
    unknown = set(params) - set(kind.param_names)
    if unknown:
        allowed = ", ".join(kind.param_names) or "none"
        raise ValueError(
            f"activation {spec!r} has no parameter {sorted(unknown)[0]!r}; allowed: {allowed}"
        )
    values = dict(zip(kind.param_names, kind.defaults, strict=True))
    for pname, val in params.items():
        values[pname] = check_real(f"{spec} parameter {pname}", val)
    for pname in ("r_max", "c50", "exponent", "gain"):
        if pname in values and values[pname] <= 0:
            raise ValueError(f"activation {spec!r} needs {pname} > 0, got {values[pname]!r}")
    if "alpha" in values and values["alpha"] < 0:
        raise ValueError(f"activation 'elu' needs alpha >= 0, got {values['alpha']!r}")
    return Activation(spec, kind.code, values)

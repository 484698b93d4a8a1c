"""Analysis of signal and gradient propagation: arrays or models in, plain data out.

Submodules load on first use: ``meanfield`` (theory), ``gradients``, ``propagation``,
``jacobian``, ``alignment``, ``dynamics``, ``trainability``.
"""

from importlib import import_module

_NAMES = {
    "layer_gradient_norms": "gradients",
    "propagation_profile": "propagation",
    "perturbation_profile": "propagation",
    "jacobian_spectrum": "jacobian",
    "alignment_angles": "alignment",
    "lyapunov_exponent": "dynamics",
    "trainable_depth": "trainability",
}
_SUBMODULES = ("meanfield", "gradients", "propagation", "jacobian", "alignment", "dynamics",
               "trainability")

__all__ = sorted([*_NAMES, *_SUBMODULES])


def __getattr__(name):
    if name in _NAMES:
        value = getattr(import_module(f"neurosim.analysis.{_NAMES[name]}"), name)
    elif name in _SUBMODULES:
        value = import_module(f"neurosim.analysis.{name}")
    else:
        raise AttributeError(f"module 'neurosim.analysis' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return __all__

"""neurosim: how learning signals travel across depth in backprop MLPs and bounded rate networks.

Public names are loaded on first use so that ``import neurosim`` stays cheap (no kernel is compiled
or loaded from cache until a model needs it).
"""

from importlib import import_module

__version__ = "0.1.0"

_LAZY_NAMES = {
    "MLP": ("neurosim.ann", "MLP"),
    "RateNetwork": ("neurosim.bio", "RateNetwork"),
    "RecurrentRateNetwork": ("neurosim.bio", "RecurrentRateNetwork"),
    "train": ("neurosim.train", "train"),
    "History": ("neurosim.history", "History"),
    "Task": ("neurosim.tasks", "Task"),
}
_SUBMODULES = (
    "activations", "analysis", "tasks", "losses", "optim", "init", "rules", "experiments",
    "sweep", "results", "plotting", "report",
)

__all__ = sorted([*_LAZY_NAMES, *_SUBMODULES, "__version__"])


def __getattr__(name):
    if name in _LAZY_NAMES:
        module_name, attr = _LAZY_NAMES[name]
        value = getattr(import_module(module_name), attr)
    elif name in _SUBMODULES:
        value = import_module(f"neurosim.{name}")
    else:
        raise AttributeError(f"module 'neurosim' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return __all__

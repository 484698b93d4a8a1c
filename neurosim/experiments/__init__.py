"""Named experiments: each a config dataclass (defaults sized for a 2-core laptop) and a function
config -> results.

==================  =========================================================================
name                what it measures
==================  =========================================================================
depth_gradients     per-layer gradient norms at init and in training: 4 activations x 4 inits
phase_diagram       chi_1, xi_c and measured gradient growth over (sigma_w^2, sigma_b^2); tanh
                    trainable depth against 6 xi_c
isometry            input-output Jacobian spectra: Gaussian vs orthogonal, tanh vs relu, depth
remedies            one deep net with and without each remedy: gradient profile, learning curve
ann_vs_bio          MLP vs bounded rate network: signal profiles of BP, FA, DFA, EP; bounds,
                    r_max and Dale's law; accuracy vs depth for every rule
recurrent_chaos     Lyapunov exponent and activity vs gain, with and without bounded synapses
==================  =========================================================================

Use from Python::

    from neurosim import experiments
    cfg = experiments.config("phase_diagram", preset="quick", width=64)
    data = experiments.get("phase_diagram").run(cfg)          # in memory, serial
    experiments.run_to_disk("phase_diagram", cfg, "results/pd", workers=2)   # saved, resumable

or from the shell: ``neurosim run phase_diagram --preset quick --set width=64 --workers 2``.
"""

from __future__ import annotations

from importlib import import_module

from ._base import PRESETS, Experiment
from ._config import ConfigError
from ._runner import RunOutcome, run_suite, run_to_disk

_MODULES = {
    "depth_gradients": "depth_gradients",
    "phase_diagram": "phase_diagram",
    "isometry": "isometry",
    "remedies": "remedies",
    "ann_vs_bio": "ann_vs_bio",
    "recurrent_chaos": "recurrent_chaos",
}

#: Suites: name -> (experiments, preset). ``default`` is the README's main job.
SUITES = {
    "all": (tuple(_MODULES), "full"),
    "default": (tuple(_MODULES), "quick"),
}

__all__ = ["PRESETS", "SUITES", "ConfigError", "Experiment", "RunOutcome", "config", "get",
           "names", "run_suite", "run_to_disk"]


def names() -> tuple[str, ...]:
    """Registered experiment names, in suite order."""
    return tuple(_MODULES)


def get(name: str) -> Experiment:
    """The experiment registered as ``name``.

    Raises
    ------
    ValueError
        Unknown name (the message lists the valid ones and the closest match).
    """
    from .._validation import unknown_name_error

    if name not in _MODULES:
        raise unknown_name_error("experiment", name, _MODULES)
    return import_module(f"neurosim.experiments.{_MODULES[name]}").EXPERIMENT


def config(name: str, preset: str = "full", **overrides):
    """A validated config of experiment ``name``: defaults < ``preset`` < ``overrides``."""
    return get(name).config(preset, overrides)

"""``recurrent_chaos``: the transition to chaos in a random recurrent rate network
(Sompolinsky, Crisanti & Sommers 1988), with and without bounded synapses.

``tau dx/dt = -x + J tanh(x)``, ``J_ij ~ N(0, g^2/n)``. Below ``g = 1`` the quiet fixed point is
stable and the largest Lyapunov exponent is ``g - 1`` (in units of ``1/tau``); above it the
activity is chaotic and the exponent is positive. Bounding every synapse at
``|J_ij| <= c / sqrt(n)`` clips the large couplings: the effective gain
``g_eff = sqrt(E[clip(g z, -c, c)^2])`` (z standard normal) can never exceed ``c``, so bounded
synapses delay the transition and cap how chaotic the network can become.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import sweep
from . import _common as C
from ._base import Experiment
from ._config import param


@dataclass
class RecurrentChaosConfig:
    gains: list[float] = param([0.5, 0.75, 0.9, 1.1, 1.25, 1.5, 2.0, 2.5, 3.0],
                               "gains g of J ~ N(0, g^2/n)", min=0.0)
    bounds: list[float] = param([1.5], "synaptic bounds c (|J_ij| <= c/sqrt(n)) compared with "
                                "the unbounded network", min=0.0, min_exclusive=True)
    n: int = param(400, "neurons", min=2)
    tau: float = param(0.01, "time constant (s)", min=0.0, min_exclusive=True)
    dt: float = param(0.001, "integration step (s)", min=0.0, min_exclusive=True)
    transient: float = param(50.0, "transient discarded before measuring (units of tau)",
                             min=0.0)
    duration: float = param(200.0, "measurement time (units of tau)", min=0.0,
                            min_exclusive=True)
    replicates: int = param(2, "independent networks per (gain, bound)", min=1)
    seed: int = param(0, "run seed", min=0)


def effective_gain(gain: float, bound: float | None) -> float:
    """Gain left after clipping ``J_ij ~ N(0, g^2/n)`` at ``|J_ij| <= c/sqrt(n)``:
    ``sqrt(E[clip(g z, -c, c)^2])`` for standard normal z (``g`` itself when unbounded)."""
    from ..analysis import meanfield

    if bound is None or gain == 0:
        return float(gain)
    return float(meanfield.effective_sigma_w(gain, bound / gain))


class RecurrentChaos(Experiment):
    name = "recurrent_chaos"
    title = "Transition to chaos in recurrent rate networks, with and without bounded synapses"
    summary = ("largest Lyapunov exponent and activity vs gain for the recurrent rate network, "
               "with and without bounded synapses")
    Config = RecurrentChaosConfig
    presets = {
        "tiny": {"gains": [0.5, 2.0], "bounds": [1.5], "n": 40, "transient": 5.0,
                 "duration": 10.0, "replicates": 1},
        "quick": {"gains": [0.5, 0.9, 1.25, 1.5, 2.0, 3.0], "n": 200, "transient": 30.0,
                  "duration": 100.0, "replicates": 1},
    }

    def validate(self, cfg):
        from ._config import ConfigError

        if not cfg.dt < cfg.tau:
            raise ConfigError(f"{self.name}.dt must be smaller than tau ({cfg.tau}), got "
                              f"{cfg.dt}")

    def points(self, cfg):
        return sweep.grid({"gain": cfg.gains, "bound": [0.0, *cfg.bounds]},
                          replicates=cfg.replicates, run_seed=cfg.seed)

    def point(self, cfg, coords, seed):
        import neurosim as ns

        from ..analysis import lyapunov_exponent

        model_seed, sim_seed = C.child_seeds(seed, 2)
        c = coords["bound"]
        w_bounds = None if c == 0 else (-c / np.sqrt(cfg.n), c / np.sqrt(cfg.n))
        rec = ns.RecurrentRateNetwork(n=cfg.n, gain=coords["gain"], activation="tanh",
                                      seed=model_seed, tau=cfg.tau, dt=cfg.dt,
                                      w_bounds=w_bounds)
        steps_per_tau = cfg.tau / cfg.dt
        transient = int(round(cfg.transient * steps_per_tau))
        measure = int(round(cfg.duration * steps_per_tau))
        lam = lyapunov_exponent(rec, duration=cfg.duration, transient=cfg.transient,
                                seed=sim_seed)
        trace = rec.simulate(steps=transient + measure, record_every=max(1, int(steps_per_tau)),
                             seed=sim_seed)
        rates = np.asarray(trace.rates[0])[:, 0, :]  # (records, n)
        late = rates[trace.times >= cfg.transient * cfg.tau]
        return {"lyapunov": np.array(float(lam.exponent)),
                "lyapunov_stderr": np.array(float(lam.stderr[0])),
                "temporal_std": np.array(float(np.mean(np.std(late, axis=0)))),
                "mean_abs_rate": np.array(float(np.mean(np.abs(late)))),
                "j_std": np.array(float(np.std(rec.J) * np.sqrt(cfg.n)))}

    def assemble(self, cfg, points, arrays):
        bounds = [0.0, *cfg.bounds]
        G, B, R = len(cfg.gains), len(bounds), cfg.replicates
        out = {k: np.full((G, B, R), np.nan)
               for k in ("lyapunov", "lyapunov_stderr", "temporal_std", "mean_abs_rate",
                         "j_std")}
        for p, a in zip(points, arrays, strict=True):
            idx = (cfg.gains.index(p.coords["gain"]), bounds.index(p.coords["bound"]),
                   p.coords["replicate"])
            for k in out:
                out[k][idx] = a[k]
        fine = np.linspace(0.0, max(cfg.gains) * 1.02, 200)
        g_eff = np.array([[effective_gain(g, None if c == 0 else c) for c in bounds]
                          for g in fine])
        out.update({"gains": np.array(cfg.gains), "bounds": np.array(bounds),
                    "fine_gains": fine, "fine_effective_gain": g_eff,
                    "effective_gain": np.array([[effective_gain(g, None if c == 0 else c)
                                                 for c in bounds] for g in cfg.gains])})
        return out

    def figures(self, data, cfg):
        bounds = data["bounds"]
        gains = data["gains"]
        fig, axes = C.new_figure(1, 2, width=3.9, height=3.1)
        for ib, c in enumerate(bounds):
            label = "unbounded" if c == 0 else f"|J| <= {C.fmt(c)}/sqrt(n)"
            color = C.PALETTE[ib % 8]
            lam = data["lyapunov"][:, ib]
            # spread over networks, or the time-average's standard error for a single network
            err = np.nanstd(lam, axis=1) if lam.shape[1] > 1 else data["lyapunov_stderr"][:, ib, 0]
            axes[0, 0].errorbar(gains, np.nanmean(lam, axis=1), yerr=err,
                                ls="none", marker=C.MARKERS[ib], color=color, capsize=2,
                                label=label)
            g_eff = data["fine_effective_gain"][:, ib]
            quiet = g_eff < 1
            axes[0, 0].plot(data["fine_gains"][quiet], g_eff[quiet] - 1, color=color, lw=1,
                            ls="--")
            axes[0, 1].plot(gains, np.nanmean(data["temporal_std"][:, ib], axis=1),
                            marker=C.MARKERS[ib], color=color, label=label)
        ax = axes[0, 0]
        ax.axhline(0, color="0.5", lw=0.8)
        ax.axvline(1, color="0.5", lw=0.8, ls=":")
        ax.set_xlabel("gain g")
        ax.set_ylabel(r"largest Lyapunov exponent ($1/\tau$)")
        ax.set_title(r"dashed: $g_{eff} - 1$ (quiet phase)", fontsize=9)
        ax.legend(fontsize=7)
        ax = axes[0, 1]
        ax.axvline(1, color="0.5", lw=0.8, ls=":")
        ax.set_xlabel("gain g")
        ax.set_ylabel("temporal std of rates tanh(x)")
        ax.set_title(f"n = {cfg.n}, after {C.fmt(cfg.transient)} tau", fontsize=9)
        return {"chaos": fig}

    def captions(self, data, cfg):
        gains, bounds = data["gains"], data["bounds"]
        lam = np.nanmean(data["lyapunov"], axis=2)
        parts = []
        for ib, c in enumerate(bounds):
            label = "unbounded" if c == 0 else f"bounded at {C.fmt(c)}/sqrt(n)"
            vals = ", ".join(f"g={C.fmt(g)}: {C.fmt(v, 2)}" for g, v in zip(gains, lam[:, ib],
                                                                            strict=True))
            parts.append(f"{label}: {vals}")
        caps = ", ".join(f"{C.fmt(c)} (g_eff <= {C.fmt(c)})" for c in bounds if c > 0)
        return {"chaos": (
            f"Largest Lyapunov exponent (Benettin/QR, units of 1/tau) of a {cfg.n}-neuron "
            f"tanh network over {C.fmt(cfg.duration)} tau after a {C.fmt(cfg.transient)} tau "
            f"transient, mean of {cfg.replicates} network(s) (left, dashed: g_eff - 1), and the "
            f"temporal standard deviation of the rates (right). Bounds {caps}. "
            + "; ".join(parts) + ".")}

    def headline(self, data, cfg):
        lam = np.nanmean(data["lyapunov"], axis=2)
        gains = data["gains"]
        above = gains > 1
        if above.any() and lam.shape[1] > 1:
            i = int(np.flatnonzero(above)[-1])
            return (f"At g = {C.fmt(gains[i])} the unbounded network's exponent is "
                    f"{C.fmt(lam[i, 0], 2)}/tau; with bounded synapses it is "
                    f"{C.fmt(lam[i, 1], 2)}/tau.")
        return ""


EXPERIMENT = RecurrentChaos()

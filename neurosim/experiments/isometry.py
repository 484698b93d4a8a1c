"""``isometry``: singular values of the input-output Jacobian of deep networks at criticality,
Gaussian vs orthogonal weights, tanh vs relu, across depth (Pennington, Schoenholz & Ganguli
2017 style).

Every network sits on the critical line (``chi_1 = 1``): tanh at the point of the line where the
fixed-point variance is ``q* = tanh_q_star`` (small ``q*`` keeps ``phi'`` near 1), relu at
``sigma_w^2 = 2, sigma_b = 0``. All layers, the last included, have the same width and the same
activation, so ``J = prod_l D_l W_l^T``. Inputs are drawn so that the first layer already sits
at ``q*``. Free probability predicts a mean squared singular value ``chi_1^L = 1`` and a
relative variance ``var(lambda)/mean(lambda)^2 = L (mu2/mu1^2 - 1 - s1)`` of the squared
singular values ``lambda``, with ``mu_k = E[phi'(h)^(2k)]``, ``s1 = -1`` for Gaussian and 0 for
orthogonal weights: only orthogonal tanh networks stay near-isometric as depth grows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import sweep
from . import _common as C
from ._base import Experiment
from ._config import param

ACTIVATIONS = ("tanh", "relu", "hard_tanh", "erf", "linear")
_SV_FLOOR = 1e-8
INITS = ("gaussian", "orthogonal")


@dataclass
class IsometryConfig:
    activations: list[str] = param(["tanh", "relu"], "activations compared", choices=ACTIVATIONS)
    inits: list[str] = param(["gaussian", "orthogonal"], "weight ensembles compared",
                             choices=INITS)
    depths: list[int] = param([4, 8, 16, 32, 64], "numbers of layers L", min=1)
    width: int = param(256, "units per layer N", min=2)
    n_inputs: int = param(8, "inputs per network at which the Jacobian is taken", min=1)
    tanh_q_star: float = param(0.05, "fixed-point variance q* of the critical tanh networks "
                               "(sets sigma_w^2 and sigma_b^2 on the critical line)",
                               min=0.0, min_exclusive=True, max=10.0)
    replicates: int = param(2, "independent networks per (activation, init, depth)", min=1)
    seed: int = param(0, "run seed", min=0)


def critical_point(activation: str, q_star: float) -> tuple[float, float, float]:
    """(sigma_w^2, sigma_b^2, q*) on the critical line of ``activation``.

    relu and linear: ``sigma_w^2 = 2`` (resp. 1), ``sigma_b = 0``, and ``q`` is preserved, so
    ``q*`` is the input variance. Smooth odd activations: the point of the line whose fixed
    point is ``q_star``: ``sigma_w^2 = 1 / E[phi'(sqrt(q) z)^2]`` and
    ``sigma_b^2 = q - sigma_w^2 E[phi(sqrt(q) z)^2]``.
    """
    from ..analysis import meanfield

    if activation == "relu":
        return 2.0, 0.0, q_star
    if activation == "linear":
        return 1.0, 0.0, q_star
    sigma_w2 = 1.0 / meanfield.gaussian_expectation(activation, q_star, phi_power=0,
                                                      dphi_power=2)
    sigma_b2 = q_star - sigma_w2 * meanfield.gaussian_expectation(activation, q_star,
                                                                  phi_power=2)
    if sigma_b2 < 0:
        raise ValueError(f"{activation} has no critical point with q* = {q_star}")
    return sigma_w2, sigma_b2, q_star


class Isometry(Experiment):
    name = "isometry"
    title = "Dynamical isometry: Jacobian spectra across depth"
    summary = ("input-output Jacobian spectra at criticality: Gaussian vs orthogonal weights, "
               "tanh vs relu, depth 4 to 64")
    Config = IsometryConfig
    presets = {
        "tiny": {"depths": [2, 8], "width": 24, "n_inputs": 2, "replicates": 1},
        "quick": {"depths": [4, 16, 64], "width": 128, "n_inputs": 4, "replicates": 1},
    }

    def points(self, cfg):
        return sweep.grid({"activation": cfg.activations, "init": cfg.inits,
                           "depth": cfg.depths}, replicates=cfg.replicates, run_seed=cfg.seed)

    def point(self, cfg, coords, seed):
        import neurosim as ns

        from .. import activations
        from ..analysis import jacobian_spectrum

        act = coords["activation"]
        sigma_w2, sigma_b2, q_star = critical_point(act, cfg.tanh_q_star)
        model_seed, data_seed = C.child_seeds(seed, 2)
        n = cfg.width
        net = ns.MLP([n] * (coords["depth"] + 1), activation=act, output_activation=act,
                     init=coords["init"], sigma_w=float(np.sqrt(sigma_w2)),
                     sigma_b=float(np.sqrt(sigma_b2)), seed=model_seed)
        # a_0 = phi(h_0) with h_0 ~ N(0, q*): then h_1 has variance q* from the first layer on
        rng = np.random.default_rng(data_seed)
        X = activations.get(act).value(rng.standard_normal((cfg.n_inputs, n)) * np.sqrt(q_star))
        spectrum = jacobian_spectrum(net, X, theory=False)
        sv = np.asarray(spectrum.singular_values, dtype=np.float64).reshape(cfg.n_inputs, -1)
        return {"singular_values": sv}

    def assemble(self, cfg, points, arrays):
        A, I, D, R = len(cfg.activations), len(cfg.inits), len(cfg.depths), cfg.replicates
        n_sv = arrays[0]["singular_values"].shape[1]
        sv = np.full((A, I, D, R, cfg.n_inputs, n_sv), np.nan)
        for p, a in zip(points, arrays, strict=True):
            c = p.coords
            sv[cfg.activations.index(c["activation"]), cfg.inits.index(c["init"]),
               cfg.depths.index(c["depth"]), c["replicate"]] = a["singular_values"]
        lam = sv**2
        flat = lam.reshape(A, I, D, -1)
        mean = flat.mean(axis=-1)
        rel_var = flat.var(axis=-1) / mean**2
        in_band = np.mean((sv >= 0.5) & (sv <= 2.0), axis=(-3, -2, -1))
        from ..analysis import meanfield

        predicted = np.empty((A, I, D))
        predicted_mean = np.empty((A, I, D))
        mus = np.empty((A, 2))
        params = np.empty((A, 3))
        for ia, act in enumerate(cfg.activations):
            sigma_w2, sigma_b2, q_star = critical_point(act, cfg.tanh_q_star)
            params[ia] = sigma_w2, sigma_b2, q_star
            for ii, init in enumerate(cfg.inits):
                for idp, depth in enumerate(cfg.depths):
                    pred = meanfield.jacobian_prediction(
                        act, float(np.sqrt(sigma_w2)), float(np.sqrt(sigma_b2)), depth,
                        weights=init, q=q_star)
                    predicted[ia, ii, idp] = pred.normalized_variance
                    predicted_mean[ia, ii, idp] = pred.mean_squared_singular_value
                    mus[ia] = pred.mu1, pred.mu2
        return {"activations": np.array(cfg.activations), "inits": np.array(cfg.inits),
                "depths": np.array(cfg.depths), "singular_values": sv,
                "mean_sq_sv": mean, "rel_var": rel_var, "predicted_rel_var": predicted,
                "predicted_mean_sq_sv": predicted_mean,
                "fraction_in_band": in_band, "max_sv": np.nanmax(sv, axis=(-3, -2, -1)),
                "moments": mus, "critical_params": params}

    # -- figures ------------------------------------------------------------------------------
    def figures(self, data, cfg):
        acts, inits, depths = list(data["activations"]), list(data["inits"]), data["depths"]
        figs = {}
        fig, axes = C.new_figure(1, len(acts), width=3.6, sharey=True)
        deepest = len(depths) - 1
        for ia, act in enumerate(acts):
            ax = axes[0, ia]
            sv_all = data["singular_values"][ia, :, deepest].reshape(len(inits), -1)
            # singular values below 1e-8 (rank lost to dead relu units, or underflow) are
            # gathered in the leftmost bin
            logs = np.log10(np.maximum(sv_all, _SV_FLOOR))
            edges = np.linspace(min(np.nanmin(logs), np.log10(0.5)) - 0.05,
                                max(np.nanmax(logs), np.log10(2.0)) + 0.05, 61)
            for ii, init in enumerate(inits):
                counts, _ = np.histogram(logs[ii][np.isfinite(logs[ii])], bins=edges)
                density = counts / (max(counts.sum(), 1) * np.diff(edges))
                ax.stairs(density, 10.0**edges, lw=1.5, color=C.PALETTE[ii],
                          label=f"{init}: {100 * data['fraction_in_band'][ia, ii, deepest]:.0f}% "
                                "in [0.5, 2]")
            ax.axvspan(0.5, 2.0, color="0.85", zorder=0)
            ax.set_xscale("log")
            ax.set_xlabel("singular value of J")
            ax.set_title(f"{act}, L = {depths[deepest]}", fontsize=9)
            ax.legend(fontsize=7)
        axes[0, 0].set_ylabel(r"density per decade of $\sigma$")
        figs["spectra"] = fig

        fig, axes = C.new_figure(1, 2, width=3.8)
        for ia, act in enumerate(acts):
            for ii, init in enumerate(inits):
                k = ia * len(inits) + ii
                color, marker = C.PALETTE[k % 8], C.MARKERS[k % 8]
                label = f"{act}, {init}"
                axes[0, 0].plot(depths, data["rel_var"][ia, ii], ls="none", marker=marker,
                                color=color, label=label)
                axes[0, 0].plot(depths, data["predicted_rel_var"][ia, ii], color=color, lw=1,
                                ls="--")
                axes[0, 1].plot(depths, data["fraction_in_band"][ia, ii], marker=marker,
                                color=color, label=label)
        ax = axes[0, 0]
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(depths, [str(d) for d in depths])
        ax.minorticks_off()
        ax.set_xlabel("depth L")
        ax.set_ylabel(r"var$(\lambda)$ / mean$(\lambda)^2$ of $\lambda=\sigma^2$")
        ax.set_title("markers measured, dashed free probability", fontsize=9)
        ax.legend(fontsize=7)
        ax = axes[0, 1]
        ax.set_xscale("log", base=2)
        ax.set_xticks(depths, [str(d) for d in depths])
        ax.minorticks_off()
        ax.set_xlabel("depth L")
        ax.set_ylabel("share of singular values in [0.5, 2]")
        ax.set_ylim(0, 1.02)
        figs["isometry_vs_depth"] = fig
        return figs

    def captions(self, data, cfg):
        acts, inits, depths = list(data["activations"]), list(data["inits"]), data["depths"]
        deepest = len(depths) - 1
        band = "; ".join(f"{a} {i} {100 * data['fraction_in_band'][ia, ii, deepest]:.0f}%"
                         for ia, a in enumerate(acts) for ii, i in enumerate(inits))
        params = "; ".join(
            f"{a}: sigma_w^2={C.fmt(data['critical_params'][ia, 0], 4)}, "
            f"sigma_b^2={C.fmt(data['critical_params'][ia, 1], 3)}, "
            f"q*={C.fmt(data['critical_params'][ia, 2])}" for ia, a in enumerate(acts))
        ratio = data["rel_var"][..., deepest] / data["predicted_rel_var"][..., deepest]
        ratio_text = "; ".join(f"{a} {i} {C.fmt(ratio[ia, ii])}" for ia, a in enumerate(acts)
                               for ii, i in enumerate(inits))
        mean_sq = "; ".join(f"{a} {i} {C.fmt(data['mean_sq_sv'][ia, ii, deepest])}"
                            for ia, a in enumerate(acts) for ii, i in enumerate(inits))
        return {
            "spectra": (
                f"Distribution of the singular values of the input-output Jacobian of "
                f"{depths[deepest]}-layer width-{cfg.width} networks at criticality ({params}), "
                f"pooled over {cfg.replicates} network(s) x {cfg.n_inputs} inputs; the shaded "
                f"band is [0.5, 2] and values below 1e-8 are gathered in the leftmost bin. "
                f"Share of singular values in the band: {band}. Mean squared "
                f"singular value (theory 1): {mean_sq}."),
            "isometry_vs_depth": (
                "Left: relative variance of the squared singular values against depth "
                "(markers) and the free-probability prediction L (mu2/mu1^2 - 1 - s1) "
                f"(dashed); measured/predicted at L = {depths[deepest]}: {ratio_text}. "
                "Right: share of singular values within [0.5, 2]."),
        }

    def headline(self, data, cfg):
        acts, inits = list(data["activations"]), list(data["inits"])
        if "tanh" in acts and "orthogonal" in inits:
            ia, ii = acts.index("tanh"), inits.index("orthogonal")
            deepest = len(data["depths"]) - 1
            return (f"Orthogonal tanh networks at q* = {C.fmt(cfg.tanh_q_star)} keep "
                    f"{100 * data['fraction_in_band'][ia, ii, deepest]:.0f}% of their Jacobian "
                    f"singular values in [0.5, 2] at depth {data['depths'][deepest]}.")
        return ""


EXPERIMENT = Isometry()

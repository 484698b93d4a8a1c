"""``phase_diagram``: the order-to-chaos phase diagram of a deep tanh network (Schoenholz et al.
2017 style).

Three parts, each a set of independent sweep points:

- ``theory``: mean-field ``q*``, ``chi_1``, ``c*`` and ``xi_c`` on a fine
  ``(sigma_w^2, sigma_b^2)`` grid, and the critical line ``chi_1 = 1``;
- ``growth``: measured per-layer factor of the batch-mean squared error signal in wide random
  networks at initialisation (inputs scaled so that the first layer starts at ``q*``), to set
  against ``chi_1``;
- ``train``: whether networks of depth ``L`` at ``(sigma_w^2, train_sigma_b2)`` train on a
  classification task within a fixed budget, to set against ``6 xi_c``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import sweep
from ..activations import MLP_ACTIVATIONS
from . import _common as C
from ._base import Experiment, concat_grids
from ._config import ConfigError, param

OPTIMIZERS = ("sgd", "momentum", "nesterov", "rmsprop", "adagrad", "adam")


@dataclass
class PhaseDiagramConfig:
    activation: str = param("tanh", "activation of every hidden layer", choices=MLP_ACTIVATIONS)
    theory_sigma_w2: list[float] = param([0.25, 4.5], "theory grid: sigma_w^2 range (min, max)",
                                         min=0.0, min_exclusive=True, min_items=2)
    theory_sigma_b2: list[float] = param([0.0, 1.0], "theory grid: sigma_b^2 range (min, max)",
                                         min=0.0, min_items=2)
    theory_points: list[int] = param([40, 16], "theory grid points along sigma_w^2, sigma_b^2",
                                     min=2, min_items=2)
    sigma_w2: list[float] = param([0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0],
                                  "sigma_w^2 values of the measured points", min=0.0,
                                  min_exclusive=True)
    sigma_b2: list[float] = param([0.0, 0.05, 0.3, 1.0], "sigma_b^2 values of the gradient "
                                  "growth measurements", min=0.0)
    growth_depth: int = param(24, "hidden layers of the gradient-growth networks", min=2)
    growth_width: int = param(256, "width of the gradient-growth networks", min=2)
    growth_batch: int = param(16, "inputs per gradient-growth network", min=1)
    train_sigma_b2: float = param(0.05, "sigma_b^2 of the trainability networks", min=0.0)
    depths: list[int] = param([5, 10, 20, 40, 80], "hidden-layer counts of the trainability "
                              "networks", min=1)
    train_width: int = param(64, "width of the trainability networks", min=2)
    n_inputs: int = param(16, "input dimension of the classification task", min=1)
    n_classes: int = param(4, "classes of the classification task", min=2)
    n_train: int = param(1024, "training samples", min=8)
    n_test: int = param(256, "test samples", min=1)
    optimizer: str = param("sgd", "optimizer", choices=OPTIMIZERS)
    lr: float = param(0.01, "learning rate", min=0.0, min_exclusive=True)
    epochs: int = param(10, "training epochs", min=1)
    batch_size: int = param(32, "minibatch size", min=1)
    trained_accuracy: float = param(0.9, "training accuracy that counts as trained", min=0.0,
                                    max=1.0)
    replicates: int = param(2, "independent networks per measured point", min=1)
    seed: int = param(0, "run seed", min=0)


def _theory_axes(cfg):
    sw2 = np.linspace(min(cfg.theory_sigma_w2), max(cfg.theory_sigma_w2), cfg.theory_points[0])
    sb2 = np.linspace(min(cfg.theory_sigma_b2), max(cfg.theory_sigma_b2), cfg.theory_points[1])
    return sw2, sb2


class PhaseDiagram(Experiment):
    name = "phase_diagram"
    title = "Order-to-chaos phase diagram and trainable depth"
    summary = ("chi_1, xi_c and measured gradient growth over (sigma_w^2, sigma_b^2) for tanh, "
               "with trainable depth against 6 xi_c")
    Config = PhaseDiagramConfig
    presets = {
        "tiny": {"theory_points": [5, 2], "theory_sigma_b2": [0.0, 0.2], "sigma_w2": [0.5, 2.5],
                 "sigma_b2": [0.05], "growth_depth": 4, "growth_width": 32, "growth_batch": 4,
                 "depths": [2, 6], "train_width": 16, "n_train": 64, "n_test": 32, "epochs": 2,
                 "batch_size": 16, "replicates": 1},
        "quick": {"theory_points": [20, 8], "sigma_w2": [0.5, 1.0, 1.5, 2.0, 2.5, 3.5],
                  "sigma_b2": [0.0, 0.05, 0.3], "growth_depth": 16, "growth_width": 128,
                  "growth_batch": 8, "depths": [4, 8, 16, 32], "train_width": 32,
                  "n_train": 512, "n_test": 128, "epochs": 5, "replicates": 1},
    }

    def validate(self, cfg):
        for key in ("theory_sigma_w2", "theory_sigma_b2", "theory_points"):
            if len(getattr(cfg, key)) != 2:
                raise ConfigError(f"{self.name}.{key} must have exactly 2 items, got "
                                  f"{getattr(cfg, key)!r}")
        for key in ("theory_sigma_w2", "theory_sigma_b2"):
            lo, hi = getattr(cfg, key)
            if not hi > lo:
                raise ConfigError(f"{self.name}.{key} must be (min, max) with max > min, got "
                                  f"{getattr(cfg, key)!r}")

    def points(self, cfg):
        _, sb2 = _theory_axes(cfg)
        theory = sweep.grid({"part": ["theory"], "sigma_b2": [float(v) for v in sb2]},
                            run_seed=cfg.seed)
        line = sweep.grid({"part": ["xi_line"]}, run_seed=cfg.seed)
        growth = sweep.grid({"part": ["growth"], "sigma_w2": cfg.sigma_w2,
                             "sigma_b2": cfg.sigma_b2}, replicates=cfg.replicates,
                            run_seed=cfg.seed)
        train = sweep.grid({"part": ["train"], "sigma_w2": cfg.sigma_w2, "depth": cfg.depths},
                           replicates=cfg.replicates, run_seed=cfg.seed)
        return concat_grids(theory, line, growth, train)

    def point(self, cfg, coords, seed):
        return {"theory": self._theory_row, "xi_line": self._xi_line, "growth": self._growth,
                "train": self._train}[coords["part"]](cfg, coords, seed)

    @staticmethod
    def _xi_line(cfg, coords, seed):
        """xi_c along sigma_w^2 at the trainability networks' sigma_b^2 (for 6 xi_c)."""
        from ..analysis import meanfield

        fine = np.linspace(min(cfg.sigma_w2), max(cfg.sigma_w2), 3 * cfg.theory_points[0])
        sb = float(np.sqrt(cfg.train_sigma_b2))
        xi = np.array([meanfield.xi_c(cfg.activation, float(np.sqrt(s2)), sb) for s2 in fine])
        return {"sigma_w2": fine, "xi_c": xi}

    @staticmethod
    def _theory_row(cfg, coords, seed):
        from ..analysis import meanfield

        sw2, _ = _theory_axes(cfg)
        row = meanfield.phase_diagram(cfg.activation, sw2, [coords["sigma_b2"]])
        return {"q_star": row.q_star[0], "chi1": row.chi1[0], "c_star": row.c_star[0],
                "xi_c": row.xi_c[0], "critical_sigma_w2": np.array(row.critical_sigma_w2[0])}

    @staticmethod
    def _growth(cfg, coords, seed):
        import neurosim as ns

        from ..analysis import meanfield

        sw, sb = float(np.sqrt(coords["sigma_w2"])), float(np.sqrt(coords["sigma_b2"]))
        q_star = float(meanfield.q_star(cfg.activation, sw, sb))
        model_seed, data_seed = C.child_seeds(seed, 2)
        n = cfg.growth_width
        net = ns.MLP([n] * (cfg.growth_depth + 1) + [n], activation=cfg.activation,
                     init="gaussian", sigma_w=sw, sigma_b=sb, seed=model_seed)
        rng = np.random.default_rng(data_seed)
        # inputs with E||x||^2 / n = (q* - sigma_b^2) / sigma_w^2 put layer 1 at q* already
        scale = np.sqrt(max(q_star - coords["sigma_b2"], 0.0) / coords["sigma_w2"])
        X = rng.standard_normal((cfg.growth_batch, n)) * scale
        Y = rng.standard_normal((cfg.growth_batch, n))
        _, grads = net.gradients(X, Y, loss="mse")
        pre, _ = net.layer_outputs(X)
        return {"delta_sq": C.batch_mean_sq_norms(grads.deltas),
                "q": np.array([float(np.mean(np.square(h))) for h in pre])}

    @staticmethod
    def _train(cfg, coords, seed):
        import neurosim as ns

        model_seed, train_seed = C.child_seeds(seed, 2)
        task = C.classification_task(cfg.n_inputs, cfg.n_classes, cfg.n_train, cfg.n_test,
                                     seed=cfg.seed)
        sizes = [cfg.n_inputs] + [cfg.train_width] * coords["depth"] + [cfg.n_classes]
        net = ns.MLP(sizes, activation=cfg.activation, init="gaussian",
                     sigma_w=float(np.sqrt(coords["sigma_w2"])),
                     sigma_b=float(np.sqrt(cfg.train_sigma_b2)), seed=model_seed)
        history = ns.train(net, task, optimizer=cfg.optimizer, lr=cfg.lr, epochs=cfg.epochs,
                           batch_size=cfg.batch_size, loss="cross_entropy",
                           record_every=10**9, seed=train_seed)
        acc = np.asarray(history.accuracy, dtype=np.float64)
        test_acc = np.asarray(history.test_accuracy, dtype=np.float64)
        return {"train_accuracy": np.array(acc[-1] if acc.size else np.nan),
                "test_accuracy": np.array(test_acc[-1] if test_acc.size else np.nan),
                "final_loss": np.array(history.loss[-1] if len(history.loss) else np.nan),
                "diverged": np.array(bool(history.diverged))}

    def assemble(self, cfg, points, arrays):
        from ..analysis import meanfield

        sw2_t, sb2_t = _theory_axes(cfg)
        out = {"theory_sigma_w2": sw2_t, "theory_sigma_b2": sb2_t,
               "sigma_w2": np.array(cfg.sigma_w2), "sigma_b2": np.array(cfg.sigma_b2),
               "depths": np.array(cfg.depths), "train_sigma_b2": np.array(cfg.train_sigma_b2)}
        for key in ("q_star", "chi1", "c_star", "xi_c"):
            out[f"theory_{key}"] = np.full((sb2_t.size, sw2_t.size), np.nan)
        out["critical_sigma_w2"] = np.full(sb2_t.size, np.nan)
        W, B, D, R = len(cfg.sigma_w2), len(cfg.sigma_b2), len(cfg.depths), cfg.replicates
        L = cfg.growth_depth + 1
        out["delta_sq"] = np.full((W, B, R, L), np.nan)
        out["q_measured"] = np.full((W, B, R, L), np.nan)
        for key in ("train_accuracy", "test_accuracy", "final_loss"):
            out[key] = np.full((W, D, R), np.nan)
        out["diverged"] = np.zeros((W, D, R), dtype=bool)
        sb2_index = {float(v): i for i, v in enumerate(sb2_t)}
        for p, a in zip(points, arrays, strict=True):
            c = p.coords
            if c["part"] == "theory":
                i = sb2_index[float(c["sigma_b2"])]
                for key in ("q_star", "chi1", "c_star", "xi_c"):
                    out[f"theory_{key}"][i] = a[key]
                out["critical_sigma_w2"][i] = a["critical_sigma_w2"]
            elif c["part"] == "xi_line":
                out["fine_sigma_w2"], out["fine_xi_c"] = a["sigma_w2"], a["xi_c"]
            elif c["part"] == "growth":
                idx = (cfg.sigma_w2.index(c["sigma_w2"]), cfg.sigma_b2.index(c["sigma_b2"]),
                       c["replicate"])
                out["delta_sq"][idx] = a["delta_sq"]
                out["q_measured"][idx] = a["q"]
            else:
                idx = (cfg.sigma_w2.index(c["sigma_w2"]), cfg.depths.index(c["depth"]),
                       c["replicate"])
                for key in ("train_accuracy", "test_accuracy", "final_loss", "diverged"):
                    out[key][idx] = a[key]
        # measured per-layer factor of E||delta_l||^2 toward the input, hidden layers only
        hidden = slice(0, L - 1)
        mean_sq = C.geometric_mean(out["delta_sq"], axis=2)[..., hidden]
        out["measured_chi1"] = np.array([[C.log_slope(mean_sq[i, j][::-1]) for j in range(B)]
                                         for i in range(W)])
        predicted = np.empty((W, B))
        q_star = np.empty((W, B))
        for i, s2 in enumerate(cfg.sigma_w2):
            for j, b2 in enumerate(cfg.sigma_b2):
                sw, sb = float(np.sqrt(s2)), float(np.sqrt(b2))
                predicted[i, j] = meanfield.chi1(cfg.activation, sw, sb)
                q_star[i, j] = meanfield.q_star(cfg.activation, sw, sb)
        out["predicted_chi1"], out["predicted_q_star"] = predicted, q_star
        sb_train = float(np.sqrt(cfg.train_sigma_b2))
        out["train_xi_c"] = np.array([meanfield.xi_c(cfg.activation, float(np.sqrt(s2)),
                                                     sb_train) for s2 in cfg.sigma_w2])
        return out

    # -- figures ------------------------------------------------------------------------------
    def figures(self, data, cfg):
        from matplotlib.colors import LogNorm, TwoSlopeNorm

        figs = {}
        sw2_t, sb2_t = data["theory_sigma_w2"], data["theory_sigma_b2"]
        fig, axes = C.new_figure(1, 3, width=3.6, height=3.1)
        chi1 = data["theory_chi1"]
        lo = min(np.nanmin(chi1), np.nanmin(data["measured_chi1"]), 0.99)
        hi = max(np.nanmax(chi1), np.nanmax(data["measured_chi1"]), 1.01)
        norm = TwoSlopeNorm(vcenter=1.0, vmin=lo, vmax=hi)
        ax = axes[0, 0]
        mesh = ax.pcolormesh(sw2_t, sb2_t, chi1, cmap="RdBu_r", norm=norm, shading="nearest")
        sw_grid, sb_grid = np.meshgrid(data["sigma_w2"], data["sigma_b2"], indexing="ij")
        ax.scatter(sw_grid.ravel(), sb_grid.ravel(), c=data["measured_chi1"].ravel(),
                   cmap="RdBu_r", norm=norm, edgecolors="k", s=40, zorder=3,
                   label="measured")
        fig.colorbar(mesh, ax=ax, label=r"$\chi_1$ (circles: measured)")
        self._critical_line(ax, data)
        ax.set_title(r"$\chi_1$: ordered (<1) vs chaotic (>1)", fontsize=9)
        ax.legend(fontsize=7, loc="upper left")

        ax = axes[0, 1]
        xi = np.where(np.isfinite(data["theory_xi_c"]), data["theory_xi_c"], np.nan)
        positive = xi[xi > 0]
        xi_norm = LogNorm(vmin=max(np.nanmin(positive), 0.3), vmax=max(np.nanmax(positive), 1.0)) \
            if positive.size else None
        mesh = ax.pcolormesh(sw2_t, sb2_t, xi, cmap="viridis", norm=xi_norm, shading="nearest")
        fig.colorbar(mesh, ax=ax, label=r"$\xi_c$ (layers)")
        self._critical_line(ax, data)
        ax.set_title(r"correlation depth scale $\xi_c$", fontsize=9)

        ax = axes[0, 2]
        for j, b2 in enumerate(data["sigma_b2"]):
            ax.plot(data["predicted_chi1"][:, j], data["measured_chi1"][:, j],
                    ls="none", marker=C.MARKERS[j % 8], color=C.PALETTE[j % 8],
                    label=fr"$\sigma_b^2$={b2:g}")
        span = [min(lo, 0.3), hi]
        ax.plot(span, span, color="0.5", lw=1, ls="--", label="measured = theory")
        ax.set_xlabel(r"mean-field $\chi_1$")
        ax.set_ylabel(r"measured per-layer factor of $E\|\delta_l\|^2$")
        ax.set_title(f"width {cfg.growth_width}, {cfg.growth_depth} layers", fontsize=9)
        ax.legend(fontsize=7)
        figs["phase_diagram"] = fig

        fig, axes = C.new_figure(1, 1, width=5.0, height=3.6)
        ax = axes[0, 0]
        acc = np.nanmean(data["train_accuracy"], axis=2)
        x_edges = _edges(np.asarray(data["sigma_w2"], dtype=float), log=False)
        y_edges = _edges(np.asarray(data["depths"], dtype=float), log=True)
        mesh = ax.pcolormesh(x_edges, y_edges, acc.T, cmap="magma", vmin=1.0 / cfg.n_classes,
                             vmax=1.0)
        fig.colorbar(mesh, ax=ax, label="training accuracy")
        fine, xi_fine = data["fine_sigma_w2"], data["fine_xi_c"]
        ax.plot(fine, np.where(np.isfinite(xi_fine), 6 * xi_fine, np.nan), color="w", lw=2,
                label=r"$6\,\xi_c$")
        ax.plot(fine, np.where(np.isfinite(xi_fine), xi_fine, np.nan), color="w", lw=1,
                ls="--", label=r"$\xi_c$")
        ax.set_yscale("log")
        ax.set_ylim(y_edges[0], y_edges[-1])
        ax.set_xlim(x_edges[0], x_edges[-1])
        ax.set_yticks(data["depths"], [str(d) for d in data["depths"]])
        ax.minorticks_off()
        ax.set_xlabel(r"$\sigma_w^2$")
        ax.set_ylabel("hidden layers L")
        ax.set_title(f"{cfg.activation}, $\\sigma_b^2$={cfg.train_sigma_b2:g}: "
                     f"{cfg.epochs} epochs of {cfg.optimizer}", fontsize=9)
        ax.legend(fontsize=7, loc="upper right", facecolor="0.3", labelcolor="w")
        figs["trainable_depth"] = fig
        return figs

    @staticmethod
    def _critical_line(ax, data):
        crit = data["critical_sigma_w2"]
        ok = np.isfinite(crit)
        ax.plot(crit[ok], data["theory_sigma_b2"][ok], color="k", lw=1.5,
                label=r"critical line $\chi_1=1$")
        ax.set_xlabel(r"$\sigma_w^2$")
        ax.set_ylabel(r"$\sigma_b^2$")
        ax.set_xlim(data["theory_sigma_w2"][0], data["theory_sigma_w2"][-1])
        ax.set_ylim(data["theory_sigma_b2"][0], data["theory_sigma_b2"][-1])

    def _trained_beyond(self, data, cfg):
        """Per sigma_w^2: deepest trained depth, and 6 xi_c."""
        acc = np.nanmean(data["train_accuracy"], axis=2)
        deepest = []
        for i in range(acc.shape[0]):
            ok = np.flatnonzero(acc[i] >= cfg.trained_accuracy)
            deepest.append(int(data["depths"][ok].max()) if ok.size else 0)
        return np.array(deepest), 6 * data["train_xi_c"]

    def captions(self, data, cfg):
        err = np.abs(data["measured_chi1"] / data["predicted_chi1"] - 1)
        i, j = np.unravel_index(np.nanargmax(err), err.shape)
        crit = data["critical_sigma_w2"]
        sb2 = data["theory_sigma_b2"]
        every = max(1, len(sb2) // 4)
        crit_text = ", ".join(f"{C.fmt(c, 4)} at sigma_b^2={C.fmt(b)}"
                              for c, b in list(zip(crit, sb2, strict=True))[::every]
                              if np.isfinite(c))
        deepest, six_xi = self._trained_beyond(data, cfg)
        rows = "; ".join(f"sigma_w^2={C.fmt(s)}: trained to L={d}, 6 xi_c={C.fmt(x)}"
                         for s, d, x in zip(data["sigma_w2"], deepest, six_xi, strict=True))
        return {
            "phase_diagram": (
                f"Left: mean-field chi_1 for {cfg.activation} over the (sigma_w^2, sigma_b^2) "
                f"plane with the critical line chi_1 = 1 (black; sigma_w^2 = {crit_text}); "
                "circles: per-layer factor of the batch-mean squared error signal measured in "
                f"width-{cfg.growth_width}, {cfg.growth_depth}-layer networks at init "
                f"({cfg.replicates} network(s) x {cfg.growth_batch} inputs, log-linear fit over "
                "hidden layers). Middle: correlation depth scale xi_c. Right: measured vs "
                f"theory; largest relative deviation {C.fmt(100 * err[i, j], 2)}% at "
                f"sigma_w^2={C.fmt(data['sigma_w2'][i])}, "
                f"sigma_b^2={C.fmt(data['sigma_b2'][j])} (finite width: about sqrt(2/N) per "
                "layer)."),
            "trainable_depth": (
                f"Training accuracy after {cfg.epochs} epochs ({cfg.optimizer}, lr {cfg.lr}, "
                f"cross-entropy, {cfg.n_classes}-class Gaussian clusters in {cfg.n_inputs} "
                f"dimensions, width {cfg.train_width}) over sigma_w^2 and depth, mean of "
                f"{cfg.replicates} network(s); white: 6 xi_c and xi_c (dashed) at sigma_b^2 = "
                f"{cfg.train_sigma_b2}. Deepest network reaching "
                f"{C.fmt(cfg.trained_accuracy)} accuracy: {rows}."),
        }

    def headline(self, data, cfg):
        err = np.abs(data["measured_chi1"] / data["predicted_chi1"] - 1)
        return (f"Measured gradient growth follows mean-field chi_1 within "
                f"{C.fmt(100 * np.nanmedian(err), 2)}% (median over "
                f"{err.size} (sigma_w^2, sigma_b^2) points).")


def _edges(centres: np.ndarray, log: bool) -> np.ndarray:
    """Cell edges around sorted cell centres (geometric midpoints on a log axis)."""
    c = np.log(centres) if log else centres
    if c.size == 1:
        mid = np.array([c[0] - 0.5, c[0] + 0.5])
    else:
        inner = (c[1:] + c[:-1]) / 2
        mid = np.concatenate([[c[0] - (inner[0] - c[0])], inner, [c[-1] + (c[-1] - inner[-1])]])
    return np.exp(mid) if log else mid


EXPERIMENT = PhaseDiagram()

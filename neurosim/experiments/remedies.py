"""``remedies``: one deep network with and without each remedy the literature names against
vanishing and exploding gradients: ReLU (with He init), batch normalisation, residual
connections, gradient clipping, Glorot / He / orthogonal initialisation, Adam instead of SGD.

Two baselines share the architecture (``depth`` hidden layers of ``width`` units of
``activation``), the task, the optimizer and the learning rate: a *vanishing* one with Gaussian
weights of ``sigma_w^2 = vanishing_sigma_w2`` (mean-field ``chi_1 < 1``) and an *exploding* one
with ``sigma_w^2 = exploding_sigma_w2`` (``chi_1 > 1``). Each remedy changes exactly one thing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import sweep
from . import _common as C
from ._base import Experiment
from ._config import param

REMEDIES = ("none", "relu_he", "batchnorm", "residual", "clip_norm", "glorot", "he",
            "orthogonal", "adam")
REGIMES = ("vanishing", "exploding")
LABELS = {"none": "baseline", "relu_he": "ReLU + He init", "batchnorm": "batch norm",
          "residual": "residual", "clip_norm": "clip grad norm", "glorot": "Glorot init",
          "he": "He init", "orthogonal": "orthogonal init", "adam": "Adam"}


@dataclass
class RemediesConfig:
    remedies: list[str] = param(list(REMEDIES), "remedies compared ('none' is the baseline)",
                                choices=REMEDIES)
    regimes: list[str] = param(list(REGIMES), "baselines", choices=REGIMES)
    activation: str = param("tanh", "baseline activation", choices=("tanh", "sigmoid",
                                                                    "hard_tanh", "erf",
                                                                    "softsign"))
    vanishing_sigma_w2: float = param(1 / 3, "sigma_w^2 of the vanishing baseline", min=0.0,
                                      min_exclusive=True)
    exploding_sigma_w2: float = param(4.0, "sigma_w^2 of the exploding baseline", min=0.0,
                                      min_exclusive=True)
    sigma_b2: float = param(0.0, "sigma_b^2 of every Gaussian init", min=0.0)
    depth: int = param(20, "hidden layers", min=1)
    width: int = param(64, "units per hidden layer", min=2)
    n_inputs: int = param(16, "input dimension", min=1)
    n_classes: int = param(4, "classes", min=2)
    n_train: int = param(1024, "training samples", min=8)
    n_test: int = param(256, "test samples", min=1)
    probe_batch: int = param(256, "inputs used for the gradient profile at init", min=1)
    lr: float = param(0.01, "learning rate (SGD and Adam)", min=0.0, min_exclusive=True)
    clip_norm: float = param(1.0, "global gradient-norm limit of the clip_norm remedy",
                             min=0.0, min_exclusive=True)
    epochs: int = param(10, "training epochs", min=1)
    batch_size: int = param(32, "minibatch size", min=1)
    record_every: int = param(8, "record per-layer gradient norms every this many steps", min=1)
    replicates: int = param(2, "independent networks per (regime, remedy)", min=1)
    seed: int = param(0, "run seed", min=0)


def _setup(cfg, regime: str, remedy: str) -> tuple[dict, dict]:
    """(MLP keyword arguments, train keyword arguments) of one variant."""
    sigma_w2 = cfg.vanishing_sigma_w2 if regime == "vanishing" else cfg.exploding_sigma_w2
    model = {"activation": cfg.activation, "init": "gaussian",
             "sigma_w": float(np.sqrt(sigma_w2)), "sigma_b": float(np.sqrt(cfg.sigma_b2))}
    train = {"optimizer": "sgd", "clip_norm": None}
    if remedy == "relu_he":
        model.update(activation="relu", init="he", sigma_w=1.0)
    elif remedy == "batchnorm":
        model["batchnorm"] = True
    elif remedy == "residual":
        model["residual"] = True
    elif remedy == "clip_norm":
        train["clip_norm"] = cfg.clip_norm
    elif remedy in ("glorot", "he"):
        model.update(init=remedy, sigma_w=1.0)
    elif remedy == "orthogonal":
        model.update(init="orthogonal", sigma_w=1.0)
    elif remedy == "adam":
        train["optimizer"] = "adam"
    return model, train


class Remedies(Experiment):
    name = "remedies"
    title = "Remedies for vanishing and exploding gradients"
    summary = ("one deep net with and without relu, batch norm, residual connections, "
               "clipping, Glorot/He/orthogonal init, Adam: gradient profile and learning curve")
    Config = RemediesConfig
    presets = {
        "tiny": {"remedies": ["none", "batchnorm", "residual", "adam"], "regimes": ["vanishing"],
                 "depth": 4, "width": 16, "n_train": 64, "n_test": 32, "probe_batch": 32,
                 "epochs": 2, "batch_size": 16, "record_every": 1, "replicates": 1},
        "quick": {"depth": 16, "width": 48, "n_train": 512, "n_test": 128, "probe_batch": 128,
                  "epochs": 6, "record_every": 4, "replicates": 1},
    }

    def points(self, cfg):
        return sweep.grid({"regime": cfg.regimes, "remedy": cfg.remedies},
                          replicates=cfg.replicates, run_seed=cfg.seed)

    def point(self, cfg, coords, seed):
        import neurosim as ns

        model_seed, train_seed = C.child_seeds(seed, 2)
        task = C.classification_task(cfg.n_inputs, cfg.n_classes, cfg.n_train, cfg.n_test,
                                     seed=cfg.seed)
        model_kw, train_kw = _setup(cfg, coords["regime"], coords["remedy"])
        sizes = [cfg.n_inputs] + [cfg.width] * cfg.depth + [cfg.n_classes]
        net = ns.MLP(sizes, seed=model_seed, **model_kw)
        return C.probe_then_train(net, task, probe_batch=cfg.probe_batch,
                                  loss="cross_entropy", epochs=cfg.epochs, lr=cfg.lr,
                                  batch_size=cfg.batch_size, record_every=cfg.record_every,
                                  seed=train_seed, **train_kw)

    def assemble(self, cfg, points, arrays):
        from ..analysis import meanfield

        G, M, R, L = len(cfg.regimes), len(cfg.remedies), cfg.replicates, cfg.depth + 1
        n_rec = max(a["grad_train"].shape[0] for a in arrays)
        out = {k: np.full((G, M, R, L), np.nan) for k in ("grad_init", "delta_init")}
        out["grad_train"] = np.full((G, M, R, n_rec, L), np.nan)
        for k in ("loss", "test_loss", "accuracy", "test_accuracy"):
            out[k] = np.full((G, M, R, cfg.epochs), np.nan)
        out["diverged"] = np.zeros((G, M, R), dtype=bool)
        for p, a in zip(points, arrays, strict=True):
            idx = (cfg.regimes.index(p.coords["regime"]), cfg.remedies.index(p.coords["remedy"]),
                   p.coords["replicate"])
            for k in ("grad_init", "delta_init", "loss", "test_loss", "accuracy",
                      "test_accuracy", "diverged"):
                out[k][idx] = a[k]
            out["grad_train"][idx] = C.pad_rows(a["grad_train"], n_rec)
        sb = float(np.sqrt(cfg.sigma_b2))
        out["baseline_chi1"] = np.array([
            meanfield.chi1(cfg.activation, float(np.sqrt(
                cfg.vanishing_sigma_w2 if g == "vanishing" else cfg.exploding_sigma_w2)), sb)
            for g in cfg.regimes])
        out.update({"regimes": np.array(cfg.regimes), "remedies": np.array(cfg.remedies),
                    "layers": np.arange(1, L + 1)})
        return out

    # -- figures ------------------------------------------------------------------------------
    def figures(self, data, cfg):
        regimes, remedies = list(data["regimes"]), list(data["remedies"])
        layers = data["layers"]
        fig, axes = C.new_figure(2, len(regimes), width=4.2, height=3.2)
        epochs = np.arange(1, data["test_accuracy"].shape[-1] + 1)
        for ig, regime in enumerate(regimes):
            ax = axes[0, ig]
            for im, remedy in enumerate(remedies):
                style = C.LINESTYLES[im // 8 % 4]
                ax.plot(layers, C.geometric_mean(data["delta_init"][ig, im], axis=0),
                        color=C.PALETTE[im % 8], ls=style, marker=C.MARKERS[im % 8], ms=3,
                        label=LABELS[remedy])
            ax.set_yscale("log")
            C.layer_axis(ax, layers.size)
            ax.set_ylabel(r"$\langle\|\delta_l\|\rangle$ at init")
            ax.set_title(f"{regime} baseline ($\\chi_1$ = {data['baseline_chi1'][ig]:.3g})",
                         fontsize=9)
            ax = axes[1, ig]
            for im, remedy in enumerate(remedies):
                style = C.LINESTYLES[im // 8 % 4]
                ax.plot(epochs, np.nanmean(data["test_accuracy"][ig, im], axis=0),
                        color=C.PALETTE[im % 8], ls=style, marker=C.MARKERS[im % 8], ms=3,
                        label=LABELS[remedy])
            ax.set_xlabel("epoch")
            ax.set_ylabel("test accuracy")
            ax.set_ylim(0, 1.02)
        axes[0, -1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
        return {"remedies": fig}

    def captions(self, data, cfg):
        regimes, remedies = list(data["regimes"]), list(data["remedies"])
        L = int(data["layers"].size)
        parts = []
        for ig, regime in enumerate(regimes):
            spread = C.geometric_mean(data["delta_init"][ig, :, :, 0]
                                      / data["delta_init"][ig, :, :, L - 2], axis=1)
            final = np.nanmean(data["test_accuracy"][ig, :, :, -1], axis=1)
            items = [f"{LABELS[r]} {C.fmt(s)} / {C.fmt(100 * a, 3)}%"
                     for r, s, a in zip(remedies, spread, final, strict=True)]
            parts.append(f"{regime} (chi_1 = {C.fmt(data['baseline_chi1'][ig])}): "
                         + ", ".join(items))
        n_div = int(data["diverged"].sum())
        return {"remedies": (
            f"Top: batch-mean norm of the error signal delta_l = dL/dh_l at initialisation "
            f"for a {cfg.depth}-hidden-layer width-{cfg.width} {cfg.activation} network "
            f"(cross-entropy, {cfg.n_classes}-class Gaussian clusters) with each remedy; "
            f"bottom: test accuracy per epoch (SGD, lr {cfg.lr}, except Adam). Per variant, "
            f"||delta_1|| / ||delta_{L - 1}|| at init / final test accuracy: "
            + "; ".join(parts) + "."
            + (f" {n_div} run(s) diverged." if n_div else ""))}


EXPERIMENT = Remedies()

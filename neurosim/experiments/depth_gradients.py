"""``depth_gradients``: per-layer gradient norms at initialisation and during training, for four
activations under four initialisations, beside the mean-field prediction (Glorot & Bengio 2010
style).

Every hidden layer has the same width, so mean-field theory predicts that the batch-mean squared
error signal shrinks or grows by the same factor ``chi_1 = sigma_w^2 E[phi'(h)^2]`` per layer
toward the input. The 'gaussian' init uses the variance of the old ``U[-1/sqrt(n), 1/sqrt(n)]``
rule (``sigma_w^2 = 1/3``); Glorot gives ``sigma_w^2 = 1`` and He ``sigma_w^2 = 2`` for equal
widths; orthogonal matrices are scaled by ``orthogonal_gain``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import sweep
from ..activations import MLP_ACTIVATIONS
from . import _common as C
from ._base import Experiment
from ._config import param

INITS = ("gaussian", "glorot", "he", "orthogonal")
OPTIMIZERS = ("sgd", "momentum", "nesterov", "rmsprop", "adagrad", "adam")


@dataclass
class DepthGradientsConfig:
    activations: list[str] = param(["sigmoid", "tanh", "relu", "hard_tanh"],
                                   "hidden-layer activations compared", choices=MLP_ACTIVATIONS)
    inits: list[str] = param(list(INITS), "initialisations compared", choices=INITS)
    gaussian_sigma_w2: float = param(1 / 3, "sigma_w^2 of the 'gaussian' init (1/3: the "
                                     "variance of the old U[-1/sqrt(n), 1/sqrt(n)] rule)",
                                     min=0.0, min_exclusive=True)
    orthogonal_gain: float = param(1.0, "scale of the orthogonal init (sigma_w^2 = gain^2)",
                                   min=0.0, min_exclusive=True)
    depth: int = param(10, "hidden layers", min=1)
    width: int = param(128, "units per hidden layer (and input dimension)", min=2)
    n_outputs: int = param(10, "linear output units", min=1)
    n_train: int = param(2048, "training samples (teacher-student regression)", min=8)
    n_test: int = param(512, "test samples", min=1)
    probe_batch: int = param(256, "inputs used to measure gradients at initialisation", min=1)
    optimizer: str = param("sgd", "optimizer", choices=OPTIMIZERS)
    lr: float = param(0.05, "learning rate", min=0.0, min_exclusive=True)
    epochs: int = param(10, "training epochs", min=1)
    batch_size: int = param(32, "minibatch size", min=1)
    record_every: int = param(8, "record per-layer gradient norms every this many steps", min=1)
    replicates: int = param(3, "independent networks per (activation, init)", min=1)
    seed: int = param(0, "run seed (task data and every network derive from it)", min=0)


def _init_scale(cfg, init: str) -> tuple[float, float]:
    """(sigma_w passed to the MLP, effective hidden-layer sigma_w^2)."""
    if init == "gaussian":
        return float(np.sqrt(cfg.gaussian_sigma_w2)), cfg.gaussian_sigma_w2
    if init == "orthogonal":
        return cfg.orthogonal_gain, cfg.orthogonal_gain**2
    return 1.0, {"glorot": 1.0, "he": 2.0}[init]


def _task(cfg):
    from .. import tasks

    return tasks.teacher_student(depth=2, width=32, n_train=cfg.n_train, n_test=cfg.n_test,
                                 n_inputs=cfg.width, n_outputs=cfg.n_outputs,
                                 activation="tanh", sigma_w=1.0, sigma_b=0.0, seed=cfg.seed)


class DepthGradients(Experiment):
    name = "depth_gradients"
    title = "Gradient norms across depth: activations x initialisations"
    summary = ("per-layer gradient norms at init and during training for sigmoid, tanh, relu, "
               "hard_tanh under gaussian (1/3), glorot, he and orthogonal init, with chi_1 "
               "theory lines")
    Config = DepthGradientsConfig
    presets = {
        "tiny": {"activations": ["tanh", "relu"], "inits": ["gaussian", "he"], "depth": 4,
                 "width": 16, "n_train": 64, "n_test": 32, "probe_batch": 32, "epochs": 2,
                 "batch_size": 16, "record_every": 1, "replicates": 1},
        "quick": {"depth": 8, "width": 64, "n_train": 512, "n_test": 256, "probe_batch": 128,
                  "epochs": 4, "batch_size": 32, "record_every": 2, "replicates": 2},
    }

    def points(self, cfg):
        return sweep.grid({"activation": cfg.activations, "init": cfg.inits},
                          replicates=cfg.replicates, run_seed=cfg.seed)

    def point(self, cfg, coords, seed):
        import neurosim as ns

        model_seed, train_seed = C.child_seeds(seed, 2)
        sigma_w, _ = _init_scale(cfg, coords["init"])
        task = _task(cfg)
        sizes = [cfg.width] * (cfg.depth + 1) + [cfg.n_outputs]
        net = ns.MLP(sizes, activation=coords["activation"], init=coords["init"],
                     sigma_w=sigma_w, sigma_b=0.0, seed=model_seed)
        return C.probe_then_train(net, task, probe_batch=cfg.probe_batch, loss="mse",
                                  epochs=cfg.epochs, optimizer=cfg.optimizer, lr=cfg.lr,
                                  batch_size=cfg.batch_size, record_every=cfg.record_every,
                                  seed=train_seed)

    def assemble(self, cfg, points, arrays):
        from ..analysis import meanfield

        A, I, R, L = len(cfg.activations), len(cfg.inits), cfg.replicates, cfg.depth + 1
        n_rec = max(a["grad_train"].shape[0] for a in arrays)
        steps = max((a["steps"] for a in arrays), key=len)
        out = {name: np.full((A, I, R, L), np.nan)
               for name in ("grad_init", "delta_init", "delta_sq_init")}
        out["grad_train"] = np.full((A, I, R, n_rec, L), np.nan)
        out["loss"] = np.full((A, I, R, cfg.epochs), np.nan)
        out["test_loss"] = np.full((A, I, R, cfg.epochs), np.nan)
        out["diverged"] = np.zeros((A, I, R), dtype=bool)
        for p, a in zip(points, arrays, strict=True):
            ia = cfg.activations.index(p.coords["activation"])
            ii = cfg.inits.index(p.coords["init"])
            r = p.coords["replicate"]
            for name in ("grad_init", "delta_init", "delta_sq_init", "loss", "test_loss"):
                out[name][ia, ii, r] = a[name]
            out["grad_train"][ia, ii, r] = C.pad_rows(a["grad_train"], n_rec)
            out["diverged"][ia, ii, r] = bool(a["diverged"])
        sigma_w2 = np.array([_init_scale(cfg, init)[1] for init in cfg.inits])
        chi1 = np.array([[meanfield.chi1(act, float(np.sqrt(s2)), 0.0) for s2 in sigma_w2]
                         for act in cfg.activations])
        # layer-by-layer prediction from the input variance q0 = 1 (standard normal inputs)
        profile = np.array([[meanfield.gradient_profile(act, float(np.sqrt(s2)), 0.0, L - 1,
                                                        q0=1.0) for s2 in sigma_w2]
                            for act in cfg.activations])
        hidden = np.arange(1, L)  # layers 1..L-1 share the width; layer L is the readout
        mean_sq = C.geometric_mean(out["delta_sq_init"], axis=2)
        measured = np.array([[C.log_slope(mean_sq[ia, ii, hidden - 1][::-1])
                              for ii in range(I)] for ia in range(A)])
        predicted = np.array([[C.log_slope(profile[ia, ii][::-1]) for ii in range(I)]
                              for ia in range(A)])
        out.update({
            "predicted_ratio": predicted,
            "activations": np.array(cfg.activations), "inits": np.array(cfg.inits),
            "layers": np.arange(1, L + 1), "steps": pad_steps(steps, n_rec),
            "sigma_w2": sigma_w2, "chi1": chi1, "measured_ratio": measured,
            "predicted_profile": profile,
        })
        return out

    # -- figures ------------------------------------------------------------------------------
    def figures(self, data, cfg):
        acts, inits = list(data["activations"]), list(data["inits"])
        layers = data["layers"]
        L = layers.size
        figs = {}

        fig, axes = C.new_figure(2, len(acts), sharey="row")
        last = _last_finite_record(data["grad_train"])
        for ia, act in enumerate(acts):
            for row, (values, when) in enumerate(((data["grad_init"], "at initialisation"),
                                                  (last, "after training"))):
                ax = axes[row, ia]
                for ii, init in enumerate(inits):
                    v = values[ia, ii]
                    mid = C.geometric_mean(v, axis=0)
                    ax.plot(layers, mid, color=C.PALETTE[ii], marker=C.MARKERS[ii], ms=3,
                            label=f"{init} ($\\sigma_w^2$={data['sigma_w2'][ii]:.3g})")
                    ax.fill_between(layers, np.nanmin(v, axis=0), np.nanmax(v, axis=0),
                                    color=C.PALETTE[ii], alpha=0.15, lw=0)
                ax.set_yscale("log")
                ax.set_title(f"{act}, {when}", fontsize=9)
                C.layer_axis(ax, L)
                if ia == 0:
                    ax.set_ylabel(r"$\|\partial L/\partial W_l\|_F$")
        axes[0, 0].legend(fontsize=7)
        figs["gradient_profile"] = fig

        fig, axes = C.new_figure(1, len(acts), sharey=True)
        hidden = layers[:-1]
        for ia, act in enumerate(acts):
            ax = axes[0, ia]
            for ii, init in enumerate(inits):
                mean_sq = C.geometric_mean(data["delta_sq_init"][ia, ii], axis=0)[:-1]
                rel = mean_sq / mean_sq[-1]
                ax.plot(hidden, rel, ls="none", marker=C.MARKERS[ii], ms=4, color=C.PALETTE[ii],
                        label=f"{init}: $\\chi_1$={data['chi1'][ia, ii]:.3g}")
                ax.plot(hidden, data["predicted_profile"][ia, ii], color=C.PALETTE[ii], lw=1,
                        ls="--")
            ax.set_yscale("log")
            ax.set_title(act, fontsize=9)
            C.layer_axis(ax, L - 1)
            ax.legend(fontsize=7)
        axes[0, 0].set_ylabel(r"$E\|\delta_l\|^2 / E\|\delta_{L-1}\|^2$")
        fig.suptitle("Error signal at initialisation: markers measured, dashed lines mean-field "
                     "prediction", fontsize=9)
        figs["delta_vs_theory"] = fig

        fig, axes = C.new_figure(1, len(acts), sharey=True)
        epochs = np.arange(1, data["test_loss"].shape[-1] + 1)
        for ia, act in enumerate(acts):
            ax = axes[0, ia]
            for ii, init in enumerate(inits):
                ax.plot(epochs, np.nanmean(data["test_loss"][ia, ii], axis=0),
                        color=C.PALETTE[ii], marker=C.MARKERS[ii], ms=3, label=init)
            ax.set_yscale("log")
            ax.set_xlabel("epoch")
            ax.set_title(act, fontsize=9)
        axes[0, 0].set_ylabel("test loss (mse)")
        axes[0, 0].legend(fontsize=7)
        figs["learning_curves"] = fig
        return figs

    def captions(self, data, cfg):
        acts, inits = list(data["activations"]), list(data["inits"])
        L = int(data["layers"].size)
        parts = []
        for ia, act in enumerate(acts):
            items = [f"{init} {C.fmt(data['measured_ratio'][ia, ii])} "
                     f"(theory {C.fmt(data['predicted_ratio'][ia, ii])}, chi_1(q*) "
                     f"{C.fmt(data['chi1'][ia, ii])})" for ii, init in enumerate(inits)]
            parts.append(f"{act}: " + ", ".join(items))
        spread = data["grad_init"][..., 0] / data["grad_init"][..., L - 2]
        spread = C.geometric_mean(spread, axis=2)
        worst = np.unravel_index(np.nanargmin(spread), spread.shape)
        n_div = int(data["diverged"].sum())
        return {
            "gradient_profile": (
                f"Frobenius norm of dL/dW_l for layers 1..{L} ({L - 1} hidden layers of width "
                f"{cfg.width}, linear readout, teacher-student regression, mse) at "
                f"initialisation (top) and at the last record of {cfg.epochs} epochs of "
                f"{cfg.optimizer} (bottom); lines: geometric mean over {cfg.replicates} "
                f"network(s), bands: min-max. Largest imbalance at init: "
                f"{acts[worst[0]]} with {inits[worst[1]]} init, "
                f"||dW_1||/||dW_{L - 1}|| = {C.fmt(spread[worst])}."
                + (f" {n_div} run(s) diverged (NaN/inf) and stopped early." if n_div else "")),
            "delta_vs_theory": (
                "Batch-mean squared error signal E||delta_l||^2 at initialisation relative to "
                f"the last hidden layer, measured on {cfg.probe_batch} inputs (markers), and "
                "the mean-field prediction (dashed: product of sigma_w^2 E[phi'(h_k)^2] over "
                "the layers in between, with the pre-activation variance q^k iterated from the "
                "standard-normal inputs). Per-layer factor from a log-linear fit over the hidden "
                "layers, measured (theory, and chi_1 at the fixed point q*): "
                + "; ".join(parts) + "."),
            "learning_curves": (
                f"Test loss (mse) per epoch, mean over {cfg.replicates} network(s), for every "
                f"activation and init ({cfg.optimizer}, lr {cfg.lr}, batch {cfg.batch_size})."),
        }

    def headline(self, data, cfg):
        acts, inits = list(data["activations"]), list(data["inits"])
        if "tanh" in acts and "gaussian" in inits:
            ia, ii = acts.index("tanh"), inits.index("gaussian")
            return (f"With the old init (sigma_w^2 = {C.fmt(cfg.gaussian_sigma_w2)}) tanh's "
                    f"squared error signal shrinks by a measured factor "
                    f"{C.fmt(data['measured_ratio'][ia, ii])} per layer toward the input "
                    f"(mean field: {C.fmt(data['predicted_ratio'][ia, ii])}).")
        return ""


def pad_steps(steps, n: int) -> np.ndarray:
    steps = np.asarray(steps, dtype=np.int64)
    out = np.full(n, -1, dtype=np.int64)
    out[:min(n, steps.size)] = steps[:n]
    return out


def _last_finite_record(grad_train: np.ndarray) -> np.ndarray:
    """(A, I, R, L): each run's last record whose norms are all finite."""
    A, I, R, T, L = grad_train.shape
    out = np.full((A, I, R, L), np.nan)
    finite = np.all(np.isfinite(grad_train), axis=-1)
    for idx in np.ndindex(A, I, R):
        rows = np.flatnonzero(finite[idx])
        if rows.size:
            out[idx] = grad_train[idx][rows[-1]]
    return out


EXPERIMENT = DepthGradients()

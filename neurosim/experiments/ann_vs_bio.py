"""``ann_vs_bio``: the central comparison. An MLP trained by backprop and a rate network with
bounded rates and bounded synapses, of the same architecture and on the same task, with the
learning signals of backprop, feedback alignment (FA), direct feedback alignment (DFA) and
equilibrium propagation (EP) measured layer by layer.

Three parts:

- ``profile``: per-layer norm of the error signal each rule delivers (and of the true gradient
  signal through the same network) at initialisation and after training, plus the alignment
  angle between each rule's update and the true gradient over training;
- ``constraint``: how synaptic bounds (``|W| <= k sigma_w / sqrt(fan_in)``), the rate ceiling
  ``r_max`` and Dale's law change the per-layer profile of the rate network at initialisation;
- ``depth``: test accuracy against the number of hidden layers for every model and rule.

Inputs are scaled to [0, 1] (they are the clamped rates of layer 0) and targets are one-hot;
both models minimise the mean squared error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import sweep
from . import _common as C
from ._base import Experiment, concat_grids
from ._config import ConfigError, param

RULES = ("backprop", "feedback_alignment", "direct_feedback_alignment",
         "equilibrium_propagation")
SHORT = {"backprop": "BP", "feedback_alignment": "FA", "direct_feedback_alignment": "DFA",
         "equilibrium_propagation": "EP"}
TASKS = ("blobs", "digits")


@dataclass
class AnnVsBioConfig:
    rules: list[str] = param(list(RULES), "rate-network learning rules", choices=RULES)
    rule_lrs: list[float] = param([2.0], "learning rate of each rule in 'rules' (one value: "
                                  "the same for every rule)", min=0.0, min_exclusive=True)
    mlp_activation: str = param("tanh", "activation of the MLP's hidden layers",
                                choices=("tanh", "sigmoid", "relu", "hard_tanh", "erf"))
    mlp_lr: float = param(0.1, "learning rate of the MLP (SGD)", min=0.0, min_exclusive=True)
    activation: str = param("logistic", "rate transfer function",
                            choices=("logistic", "saturating_linear", "naka_rushton"))
    r_max: float = param(1.0, "largest firing rate of the reference rate network", min=0.0,
                         min_exclusive=True)
    gain: float = param(1.0, "slope parameter of the rate transfer function", min=0.0,
                        min_exclusive=True)
    threshold: float = param(0.0, "threshold of the rate transfer function")
    sigma_w: float = param(1.0, "initial weight scale: W ~ N(0, sigma_w^2 / fan_in)", min=0.0,
                           min_exclusive=True)
    w_bound: float = param(6.0, "synaptic bound of the reference rate network in units of "
                           "sigma_w / sqrt(width)", min=0.0, min_exclusive=True)
    tau: float = param(0.01, "rate time constant (s)", min=0.0, min_exclusive=True)
    dt: float = param(0.005, "integration step of the relaxation (s)", min=0.0,
                      min_exclusive=True)
    ep_beta: float = param(0.5, "equilibrium propagation: nudging strength beta", min=0.0,
                           min_exclusive=True)
    ep_nudge: str = param("symmetric", "equilibrium propagation: nudge with +beta only "
                          "('positive') or with +beta and -beta ('symmetric')",
                          choices=("positive", "symmetric"))
    ep_tol: float = param(1e-4, "equilibrium propagation: relaxation tolerance (rate units)",
                          min=0.0, min_exclusive=True)
    bound_scales: list[float] = param([2.0, 1.0, 0.5], "bounds compared (units of sigma_w / "
                                      "sqrt(width))", min=0.0, min_exclusive=True)
    r_max_values: list[float] = param([0.5, 2.0], "r_max values compared", min=0.0,
                                      min_exclusive=True)
    dale_fractions: list[float] = param([0.8, 0.5], "excitatory fractions compared under "
                                        "Dale's law", min=0.0, max=1.0)
    task: str = param("blobs", "task: Gaussian clusters, or scikit-learn's 8x8 digits",
                      choices=TASKS)
    n_inputs: int = param(16, "input dimension of the cluster task", min=1)
    n_classes: int = param(4, "classes of the cluster task", min=2)
    n_train: int = param(1024, "training samples of the cluster task", min=8)
    n_test: int = param(256, "test samples of the cluster task", min=1)
    separation: float = param(1.0, "scale of the cluster centres (cluster spread 1)", min=0.0,
                              min_exclusive=True)
    depth: int = param(4, "hidden layers of the profile and constraint networks", min=1)
    width: int = param(64, "units per hidden layer", min=2)
    depths: list[int] = param([1, 2, 3, 4, 6], "hidden-layer counts of the accuracy-vs-depth "
                              "part", min=1)
    probe_batch: int = param(128, "inputs used for the profiles at initialisation", min=1)
    epochs: int = param(10, "training epochs", min=1)
    batch_size: int = param(16, "minibatch size", min=1)
    record_every: int = param(8, "record per-layer signals every this many steps", min=1)
    replicates: int = param(2, "independent networks per measured point", min=1)
    seed: int = param(0, "run seed", min=0)


def _variants(cfg) -> list[str]:
    """'mlp' plus one 'rate:<rule>' per rule."""
    return ["mlp"] + [f"rate:{r}" for r in cfg.rules]


def _label(variant: str) -> str:
    return "MLP, BP" if variant == "mlp" else f"rate, {SHORT[variant.split(':', 1)[1]]}"


def _task(cfg):
    from .. import tasks

    if cfg.task == "digits":
        task = tasks.digits(seed=cfg.seed)
    else:
        task = C.classification_task(cfg.n_inputs, cfg.n_classes, cfg.n_train, cfg.n_test,
                                     seed=cfg.seed, separation=cfg.separation)
    lo, hi = task.X_train.min(axis=0), task.X_train.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    task.X_train = np.clip((task.X_train - lo) / span, 0.0, 1.0)
    task.X_test = np.clip((task.X_test - lo) / span, 0.0, 1.0)
    return task


def _rate_network(cfg, sizes, seed, *, w_bound=None, r_max=None, dale=None, rule=None):
    import neurosim as ns

    k = _absolute_bound(cfg, cfg.w_bound if w_bound is None else w_bound)
    return ns.RateNetwork(
        sizes, activation=cfg.activation, r_max=cfg.r_max if r_max is None else r_max,
        w_bounds=(-k, k), dale=dale, sigma_w=cfg.sigma_w, sigma_b=0.0, seed=seed,
        tau=cfg.tau, dt=cfg.dt, activation_params=_activation_params(cfg),
        feedback="symmetric" if rule == "equilibrium_propagation" else None)


def _absolute_bound(cfg, scale: float) -> float:
    """One bound for every layer: ``scale`` weight standard deviations of a hidden layer."""
    return scale * cfg.sigma_w / np.sqrt(cfg.width)


def _rule_params(cfg, rule: str) -> dict:
    if rule == "equilibrium_propagation":
        return {"beta": cfg.ep_beta, "nudge": cfg.ep_nudge, "tol": cfg.ep_tol}
    return {}


def _activation_params(cfg) -> dict:
    if cfg.activation == "naka_rushton":
        return {}
    return {"gain": cfg.gain, "threshold": cfg.threshold}


def _profile(cfg, model, X, Y, rule):
    """(delivered signal norms, true delta norms, angles) per layer at the current weights."""
    from .. import rules

    sig = rules.compare_to_gradient(model, X, Y, rule, loss="mse", **_rule_params(cfg, rule))
    return (C.batch_mean_norms(sig.signals), C.batch_mean_norms(sig.true_deltas),
            np.asarray(sig.angles, dtype=np.float64))


def _mlp_profile(net, X, Y):
    _, grads = net.gradients(X, Y, loss="mse")
    norms = C.batch_mean_norms(grads.deltas)
    return norms, norms, np.zeros(norms.size)


def _predicted_profile(cfg, model, X, kind: str) -> np.ndarray:
    """Mean-field ``sqrt(E||delta_l||^2 / E||delta_{L-1}||^2)`` over the hidden layers of a rate
    network with zero-mean weights (NaN under Dale's law, whose weights have a non-zero mean).

    Bounded weights enter through their clipped standard deviation; the pre-activation
    variance starts from the inputs' ``||x||^2 / n_in``.
    """
    from ..analysis import meanfield

    n_hidden = model.n_layers - 1
    if kind == "dale" or n_hidden < 1:
        return np.full(max(n_hidden, 0), np.nan)
    k = model.w_bounds[1] / (cfg.sigma_w / np.sqrt(cfg.width))
    sigma_eff = meanfield.effective_sigma_w(cfg.sigma_w, k)
    q0 = float(np.mean(np.sum(np.square(X), axis=1)) / X.shape[1])
    profile = meanfield.gradient_profile(model.activation, sigma_eff, 0.0, n_hidden, q0=q0)
    return np.sqrt(profile)


class AnnVsBio(Experiment):
    name = "ann_vs_bio"
    title = "Backprop MLP vs bounded rate network: learning signals across depth"
    summary = ("MLP vs bounded rate network on one task: per-layer signal profiles of BP, FA, "
               "DFA and EP; effect of synaptic bounds, r_max and Dale's law; accuracy vs depth")
    Config = AnnVsBioConfig
    presets = {
        "tiny": {"rules": ["backprop", "feedback_alignment", "direct_feedback_alignment",
                           "equilibrium_propagation"],
                 "bound_scales": [1.0], "r_max_values": [2.0], "dale_fractions": [0.8],
                 "n_inputs": 4, "n_classes": 2, "n_train": 32, "n_test": 16, "depth": 2,
                 "width": 8, "depths": [1, 2], "probe_batch": 8, "epochs": 1, "batch_size": 16,
                 "record_every": 1, "replicates": 1},
        "quick": {"n_train": 512, "n_test": 128, "depth": 3, "width": 32, "depths": [1, 2, 4],
                  "probe_batch": 64, "epochs": 6, "record_every": 4, "replicates": 2,
                  "bound_scales": [2.0, 0.5], "r_max_values": [2.0], "dale_fractions": [0.8]},
    }

    def validate(self, cfg):
        if len(cfg.rule_lrs) != len(cfg.rules):
            if len(cfg.rule_lrs) == 1:
                cfg.rule_lrs = cfg.rule_lrs * len(cfg.rules)
            else:
                raise ConfigError(f"{self.name}.rule_lrs needs one learning rate per rule "
                                  f"({len(cfg.rules)}), got {cfg.rule_lrs!r}")

    def points(self, cfg):
        variants = _variants(cfg)
        profile = sweep.grid({"part": ["profile"], "variant": variants},
                             replicates=cfg.replicates, run_seed=cfg.seed)
        settings = [("reference", 0.0)] + [("bound", v) for v in cfg.bound_scales] \
            + [("r_max", v) for v in cfg.r_max_values] + [("dale", v) for v in cfg.dale_fractions]
        constraint = [sweep.grid({"part": ["constraint"], "kind": [k], "value": [v]},
                                 replicates=cfg.replicates, run_seed=cfg.seed)
                      for k, v in settings]
        depth = sweep.grid({"part": ["depth"], "variant": variants, "depth": cfg.depths},
                           replicates=cfg.replicates, run_seed=cfg.seed)
        return concat_grids(profile, *constraint, depth)

    def point(self, cfg, coords, seed):
        part = coords["part"]
        if part == "profile":
            return self._train_variant(cfg, coords["variant"], cfg.depth, seed, record=True)
        if part == "depth":
            return self._train_variant(cfg, coords["variant"], coords["depth"], seed,
                                       record=False)
        return self._constraint(cfg, coords, seed)

    @staticmethod
    def _train_variant(cfg, variant, depth, seed, record):
        import neurosim as ns

        model_seed, train_seed = C.child_seeds(seed, 2)
        task = _task(cfg)
        sizes = [task.n_inputs] + [cfg.width] * depth + [task.n_outputs]
        X, Y = task.X_train[:cfg.probe_batch], task.Y_train[:cfg.probe_batch]
        every = cfg.record_every if record else 10**9
        if variant == "mlp":
            model = ns.MLP(sizes, activation=cfg.mlp_activation, init="gaussian",
                           sigma_w=cfg.sigma_w, sigma_b=0.0, seed=model_seed)
            before = _mlp_profile(model, X, Y) if record else None
            history = ns.train(model, task, optimizer="sgd", lr=cfg.mlp_lr, epochs=cfg.epochs,
                               batch_size=cfg.batch_size, loss="mse", record_every=every,
                               seed=train_seed)
            after = _mlp_profile(model, X, Y) if record else None
        else:
            rule = variant.split(":", 1)[1]
            lr = cfg.rule_lrs[cfg.rules.index(rule)]
            model = _rate_network(cfg, sizes, model_seed, rule=rule)
            before = _profile(cfg, model, X, Y, rule) if record else None
            history = ns.train(model, task, rule=rule, lr=lr, epochs=cfg.epochs,
                               batch_size=cfg.batch_size, loss="mse", record_every=every,
                               seed=train_seed, **_rule_params(cfg, rule))
            after = _profile(cfg, model, X, Y, rule) if record else None
        out = {"test_accuracy": C.pad_rows(history.test_accuracy, cfg.epochs),
               "accuracy": C.pad_rows(history.accuracy, cfg.epochs),
               "loss": C.pad_rows(history.loss, cfg.epochs),
               "diverged": np.array(bool(history.diverged))}
        if record:
            out.update({"signal_init": before[0], "delta_init": before[1],
                        "angle_init": before[2], "signal_final": after[0],
                        "delta_final": after[1], "angle_final": after[2],
                        "angles": np.asarray(history.angles, dtype=np.float64),
                        "steps": np.asarray(history.steps, dtype=np.int64)})
        return out

    @staticmethod
    def _constraint(cfg, coords, seed):
        model_seed = C.child_seeds(seed, 1)[0]
        task = _task(cfg)
        sizes = [task.n_inputs] + [cfg.width] * cfg.depth + [task.n_outputs]
        kind, value = coords["kind"], coords["value"]
        kwargs = {"bound": {"w_bound": value}, "r_max": {"r_max": value},
                  "dale": {"dale": value}}.get(kind, {})
        model = _rate_network(cfg, sizes, model_seed, **kwargs)
        X, Y = task.X_train[:cfg.probe_batch], task.Y_train[:cfg.probe_batch]
        _, delta, _ = _profile(cfg, model, X, Y, "backprop")
        fa_signal, _, _ = _profile(cfg, model, X, Y, "feedback_alignment")
        _, rates = model.layer_outputs(X)
        return {"delta": delta, "fa_signal": fa_signal,
                "predicted": _predicted_profile(cfg, model, X, kind),
                "mean_rate": np.array([float(np.mean(r)) for r in rates]),
                "weight_std": np.array([float(np.std(w)) for w in model.weights])}

    # -- assembly -----------------------------------------------------------------------------
    def assemble(self, cfg, points, arrays):
        variants = _variants(cfg)
        V, R, L, E = len(variants), cfg.replicates, cfg.depth + 1, cfg.epochs
        out = {"variants": np.array(variants), "rules": np.array(cfg.rules),
               "depths": np.array(cfg.depths), "layers": np.arange(1, L + 1)}
        for k in ("signal_init", "delta_init", "angle_init", "signal_final", "delta_final",
                  "angle_final"):
            out[k] = np.full((V, R, L), np.nan)
        for k in ("test_accuracy", "accuracy", "loss"):
            out[f"profile_{k}"] = np.full((V, R, E), np.nan)
        profile = [(p, a) for p, a in zip(points, arrays, strict=True)
                   if p.coords["part"] == "profile"]
        n_rec = max(a["angles"].shape[0] for _, a in profile)
        out["angles"] = np.full((V, R, n_rec, L), np.nan)
        out["angle_steps"] = np.full(n_rec, -1, dtype=np.int64)
        for p, a in profile:
            idx = (variants.index(p.coords["variant"]), p.coords["replicate"])
            for k in ("signal_init", "delta_init", "angle_init", "signal_final",
                      "delta_final", "angle_final"):
                out[k][idx] = a[k]
            for k in ("test_accuracy", "accuracy", "loss"):
                out[f"profile_{k}"][idx] = a[k]
            if a["angles"].size:
                out["angles"][idx] = C.pad_rows(a["angles"], n_rec)
            if a["steps"].size > (out["angle_steps"] >= 0).sum():
                out["angle_steps"][:a["steps"].size] = a["steps"][:n_rec]

        kinds = ["reference"] + ["bound"] * len(cfg.bound_scales) \
            + ["r_max"] * len(cfg.r_max_values) + ["dale"] * len(cfg.dale_fractions)
        values = [0.0, *cfg.bound_scales, *cfg.r_max_values, *cfg.dale_fractions]
        S = len(kinds)
        out["constraint_kinds"], out["constraint_values"] = np.array(kinds), np.array(values)
        for k in ("constraint_delta", "constraint_fa_signal", "constraint_mean_rate"):
            out[k] = np.full((S, R, L), np.nan)
        out["constraint_predicted"] = np.full((S, L - 1), np.nan)
        out["constraint_weight_std"] = np.full((S, R, L), np.nan)
        settings = list(zip(kinds, values, strict=True))
        for p, a in zip(points, arrays, strict=True):
            if p.coords["part"] != "constraint":
                continue
            idx = (settings.index((p.coords["kind"], p.coords["value"])), p.coords["replicate"])
            out["constraint_delta"][idx] = a["delta"]
            out["constraint_fa_signal"][idx] = a["fa_signal"]
            out["constraint_mean_rate"][idx] = a["mean_rate"]
            out["constraint_weight_std"][idx] = a["weight_std"]
            out["constraint_predicted"][idx[0]] = a["predicted"]

        D = len(cfg.depths)
        out["depth_test_accuracy"] = np.full((V, D, R), np.nan)
        out["depth_diverged"] = np.zeros((V, D, R), dtype=bool)
        for p, a in zip(points, arrays, strict=True):
            if p.coords["part"] != "depth":
                continue
            idx = (variants.index(p.coords["variant"]), cfg.depths.index(p.coords["depth"]),
                   p.coords["replicate"])
            acc = a["test_accuracy"][np.isfinite(a["test_accuracy"])]
            out["depth_test_accuracy"][idx] = acc[-1] if acc.size else np.nan
            out["depth_diverged"][idx] = bool(a["diverged"])
        out["chance"] = np.array(1.0 / (cfg.n_classes if cfg.task == "blobs" else 10))
        return out

    # -- figures ------------------------------------------------------------------------------
    def figures(self, data, cfg):
        variants = list(data["variants"])
        layers = data["layers"]
        L = layers.size
        figs = {}

        fig, axes = C.new_figure(1, 2, width=4.0, height=3.2, sharey=True)
        for col, (key, true_key, when) in enumerate((("signal_init", "delta_init",
                                                      "at initialisation"),
                                                     ("signal_final", "delta_final",
                                                      "after training"))):
            ax = axes[0, col]
            for iv, variant in enumerate(variants):
                sig = C.geometric_mean(data[key][iv], axis=0)
                ax.plot(layers, sig / sig[-1], color=C.PALETTE[iv], marker=C.MARKERS[iv], ms=4,
                        label=_label(variant))
                if variant != "mlp" and not variant.endswith("backprop"):
                    true = C.geometric_mean(data[true_key][iv], axis=0)
                    ax.plot(layers, true / sig[-1], color=C.PALETTE[iv], lw=0.8, ls=":")
            ax.set_yscale("log")
            C.layer_axis(ax, L)
            ax.set_title(when, fontsize=9)
        axes[0, 0].set_ylabel(r"$\langle\|\delta_l\|\rangle$ / output layer")
        axes[0, 0].legend(fontsize=7)
        fig.suptitle("Error signal delivered to each layer (solid); dotted: true gradient "
                     "signal through the same rate network", fontsize=9)
        figs["signal_profiles"] = fig

        kinds = list(data["constraint_kinds"])
        values = data["constraint_values"]
        groups = [("bound", "synaptic bound k (|W| <= k sigma_w/sqrt(n))"),
                  ("r_max", r"rate ceiling $r_{max}$"), ("dale", "Dale's law, excitatory share")]
        groups = [g for g in groups if g[0] in kinds]
        fig, axes = C.new_figure(1, max(1, len(groups)), width=3.4, sharey=True)
        ref = kinds.index("reference")
        hidden = layers[:-1]
        for col, (kind, title) in enumerate(groups):
            ax = axes[0, col]
            rows = [ref] + [i for i, k in enumerate(kinds) if k == kind]
            for n, i in enumerate(rows):
                prof = C.geometric_mean(data["constraint_delta"][i], axis=0)[:-1]
                label = (f"reference (k={C.fmt(cfg.w_bound)}, r_max={C.fmt(cfg.r_max)}, no Dale)"
                         if i == ref else f"{C.fmt(values[i])}")
                color = C.PALETTE[n % 8]
                ax.plot(hidden, prof / prof[-1], color=color, ls="none",
                        marker=C.MARKERS[n % 8], ms=4, label=label)
                ax.plot(hidden, data["constraint_predicted"][i], color=color, lw=1, ls="--")
            ax.set_yscale("log")
            C.layer_axis(ax, L - 1)
            ax.set_title(title, fontsize=9)
            ax.legend(fontsize=7)
        axes[0, 0].set_ylabel(r"true $\langle\|\delta_l\|\rangle$ / last hidden layer")
        fig.suptitle("Rate network at initialisation: markers measured, dashed mean field "
                     "(none under Dale's law)", fontsize=9)
        figs["constraints"] = fig

        fig, axes = C.new_figure(1, 1, width=4.4, height=3.3)
        ax = axes[0, 0]
        for iv, variant in enumerate(variants):
            acc = data["depth_test_accuracy"][iv]
            ax.errorbar(data["depths"], np.nanmean(acc, axis=1),
                        yerr=np.nanstd(acc, axis=1) if acc.shape[1] > 1 else None,
                        color=C.PALETTE[iv], marker=C.MARKERS[iv], ms=4, capsize=2,
                        label=_label(variant))
        ax.axhline(float(data["chance"]), color="0.5", lw=1, ls="--", label="chance")
        ax.set_xlabel("hidden layers")
        ax.set_ylabel("test accuracy")
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=7)
        figs["accuracy_vs_depth"] = fig

        rule_rows = [iv for iv, v in enumerate(variants)
                     if v != "mlp" and not v.endswith("backprop")]
        if rule_rows and np.isfinite(data["angles"]).any():
            fig, axes = C.new_figure(1, len(rule_rows), width=3.2, sharey=True)
            steps = data["angle_steps"]
            ok = steps >= 0
            for col, iv in enumerate(rule_rows):
                ax = axes[0, col]
                ang = np.nanmean(data["angles"][iv], axis=0)
                for layer in range(L):
                    ax.plot(steps[ok], ang[ok, layer], color=C.PALETTE[layer % 8],
                            label=f"layer {layer + 1}")
                ax.axhline(90, color="0.5", lw=0.8, ls="--")
                ax.set_xlabel("training step")
                ax.set_title(_label(variants[iv]), fontsize=9)
            axes[0, 0].set_ylabel("angle to true gradient (degrees)")
            axes[0, 0].set_ylim(0, 120)
            axes[0, -1].legend(fontsize=7)
            figs["alignment"] = fig
        return figs

    def captions(self, data, cfg):
        variants = list(data["variants"])
        L = int(data["layers"].size)
        task = ("scikit-learn digits" if cfg.task == "digits"
                else f"{cfg.n_classes}-class Gaussian clusters in {cfg.n_inputs} dimensions")
        first_last = []
        for iv, variant in enumerate(variants):
            sig = C.geometric_mean(data["signal_init"][iv], axis=0)
            sig_f = C.geometric_mean(data["signal_final"][iv], axis=0)
            first_last.append(f"{_label(variant)} {C.fmt(sig[0] / sig[-1])} -> "
                              f"{C.fmt(sig_f[0] / sig_f[-1])}")
        acc = np.nanmean(data["depth_test_accuracy"], axis=2)
        acc_text = "; ".join(
            f"{_label(v)} " + ", ".join(f"{C.fmt(100 * a, 3)}%" for a in acc[iv])
            for iv, v in enumerate(variants))
        kinds = list(data["constraint_kinds"])
        cons = []
        for i, (kind, value) in enumerate(zip(kinds, data["constraint_values"], strict=True)):
            prof = C.geometric_mean(data["constraint_delta"][i], axis=0)[:-1]
            name = "reference" if kind == "reference" else f"{kind}={C.fmt(value)}"
            theory = data["constraint_predicted"][i][0]
            cons.append(f"{name} {C.fmt(prof[0] / prof[-1])}"
                        + ("" if not np.isfinite(theory) else f" (theory {C.fmt(theory)})"))
        captions = {
            "signal_profiles": (
                f"Batch-mean norm of the error signal each rule delivers to layers 1..{L} "
                f"(relative to the output layer) in a {cfg.depth}-hidden-layer width-"
                f"{cfg.width} {cfg.mlp_activation} MLP (backprop) and a {cfg.activation} rate "
                f"network (r_max={C.fmt(cfg.r_max)}, gain {C.fmt(cfg.gain)}, synapses bounded "
                f"at {C.fmt(cfg.w_bound)} sigma_w/sqrt(n)) on {task}, at initialisation and "
                f"after {cfg.epochs} epochs; dotted: the true gradient signal dL/dh_l through "
                "the same rate network. Layer-1 / output-layer signal ratio, init -> trained: "
                + "; ".join(first_last) + "."),
            "constraints": (
                "True gradient signal per hidden layer (relative to the last hidden layer) of "
                "the rate network at initialisation as one constraint changes (geometric mean "
                f"over {cfg.replicates} network(s)); dashed: mean field with the clipped weight "
                "variance and the activation's r_max. Layer-1 / last-hidden ratio: "
                + "; ".join(cons) + "."),
            "accuracy_vs_depth": (
                f"Test accuracy after {cfg.epochs} epochs against the number of hidden layers "
                f"(width {cfg.width}) for every model and rule; chance "
                f"{C.fmt(100 * float(data['chance']), 3)}%. Accuracy at depths "
                f"{', '.join(str(d) for d in cfg.depths)}: {acc_text}."),
        }
        rule_rows = [iv for iv, v in enumerate(variants)
                     if v != "mlp" and not v.endswith("backprop")]
        if rule_rows and np.isfinite(data["angles"]).any():
            text = []
            for iv in rule_rows:
                a0 = np.nanmean(data["angle_init"][iv][:, :-1])
                a1 = np.nanmean(data["angle_final"][iv][:, :-1])
                text.append(f"{_label(variants[iv])} {C.fmt(a0, 3)} -> {C.fmt(a1, 3)} degrees")
            captions["alignment"] = (
                "Angle between each rule's weight update and the true gradient, per layer, over "
                "training (90 degrees: orthogonal, no useful signal). Mean over hidden layers, "
                "init -> trained: " + "; ".join(text) + ".")
        return captions

    def headline(self, data, cfg):
        variants = list(data["variants"])
        acc = np.nanmean(data["depth_test_accuracy"], axis=2)[:, -1]
        best = variants[int(np.nanargmax(acc))]
        return (f"At {cfg.depths[-1]} hidden layers the best test accuracy is "
                f"{C.fmt(100 * np.nanmax(acc), 3)}% ({_label(best)}); see the depth figure for "
                "how each rule falls behind as depth grows.")


EXPERIMENT = AnnVsBio()

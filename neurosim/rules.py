"""Learning rules for rate networks and their comparison with the true gradient.

Every rule produces, for a minibatch, an update direction ``U_l`` for each layer's weights with
the sign of a gradient (the weights move by ``-lr * U_l``, then back inside their bounds and Dale
signs), and, for supervised rules, the error signal it delivers to each layer. The true gradient
is the exact derivative of the batch-mean loss of the network's output rates at its fixed point:
backprop through the feedforward map, or, for the energy-based network
(``RateNetwork(feedback="symmetric")``), implicit differentiation of its fixed point (the adjoint
relaxed by the linearised network dynamics, as in recurrent backprop).

=============================  ==========================================================
rule                           error signal delivered to layer l (per sample)
=============================  ==========================================================
backprop                       ``delta_l = F'(h_l) * (delta_{l+1} W_{l+1}^T)``, exact
feedback_alignment             ``F'(h_l) * (delta_{l+1} B_{l+1}^T)``, fixed random B
direct_feedback_alignment      ``F'(h_l) * (delta_L B_l)``, output error sent directly
equilibrium_propagation        ``-(r_l^beta - r_l^0) / beta`` from free and nudged phases
node_perturbation              ``(loss(xi) - loss(0)) xi_l / sigma^2``, noise ``xi`` in units
hebbian, oja, bcm              none (unsupervised; signals are NaN)
=============================  ==========================================================

Signals and ``true_deltas`` follow the MLP convention: ``delta_l = dL/dh_l`` of the batch-mean
loss ``L``, so row ``s`` carries the factor ``1 / batch`` of sample ``s``'s loss; ``true_grads``
and ``updates`` refer to the batch-mean loss too.
"""

from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass, field

import numpy as np

from ._validation import (
    check_choice,
    check_data,
    check_int,
    check_nonnegative,
    check_positive,
    check_real,
    check_same_batch,
    unknown_name_error,
)
from .bio import ConvergenceWarning, RateNetwork
from .history import History
from .kernels import losses as _loss_k
from .kernels import rate as _rate_k
from .kernels import rules as _k
from .tasks import as_task

LOSSES = {"mse": _loss_k.MSE, "cross_entropy": _loss_k.CROSS_ENTROPY}


@dataclass(frozen=True)
class Rule:
    """A registered learning rule.

    Attributes
    ----------
    name : str
    supervised : bool
        Uses targets (unsupervised rules ignore them).
    needs : {"any", "feedforward", "symmetric"}
        The network kind the rule fits.
    params : dict
        Rule parameters and their defaults.
    summary : str
    """

    name: str
    supervised: bool
    needs: str
    params: dict = field(default_factory=dict)
    summary: str = ""


RULES = {
    rule.name: rule
    for rule in (
        Rule("backprop", True, "any", {},
             "exact gradient through the fixed point (the reference)"),
        Rule("feedback_alignment", True, "feedforward", {"feedback_scale": None},
             "errors sent down through fixed random matrices (Lillicrap et al. 2016)"),
        Rule("direct_feedback_alignment", True, "feedforward", {"feedback_scale": None},
             "output error sent to every layer through fixed random matrices (Nokland 2016)"),
        Rule("equilibrium_propagation", True, "symmetric",
             {"beta": 0.5, "nudge": "positive", "tol": 1e-9, "max_steps": 20000},
             "free and nudged relaxations of the energy-based network (Scellier & Bengio 2017)"),
        Rule("node_perturbation", True, "any", {"sigma": 1e-2, "n_perturbations": 1},
             "noise injected into units, update from the loss change (Werfel et al. 2005)"),
        Rule("hebbian", False, "any", {"decay": 0.0, "center": False},
             "dW = <x y> (minus decay * W); covariance rule with center=True"),
        Rule("oja", False, "any", {}, "dW_ij = <y_j (x_i - W_ij y_j)> (Oja 1982)"),
        Rule("bcm", False, "any", {"theta_rate": 0.1},
             "dW_ij = <x_i y_j (y_j - theta_j)>, sliding threshold theta = <y^2> "
             "(Bienenstock, Cooper & Munro 1982)"),
    )
}
NUDGES = ("positive", "symmetric")
#: rules with CUDA kernels (feedforward networks only)
CUDA_RULES = ("backprop", "feedback_alignment", "direct_feedback_alignment")


def _resolve_rule(model, rule, loss, rule_params):
    if not isinstance(model, RateNetwork):
        raise TypeError(
            f"learning rules train a neurosim RateNetwork, got {type(model).__name__}; MLPs train "
            "with neurosim.train(..., optimizer=...)"
        )
    if not isinstance(rule, str) or rule not in RULES:
        raise unknown_name_error("rule", rule, RULES)
    spec = RULES[rule]
    check_choice("loss", loss, LOSSES)
    unknown = set(rule_params) - set(spec.params)
    if unknown:
        allowed = ", ".join(sorted(spec.params)) or "none"
        raise ValueError(f"rule {rule!r} has no parameter {sorted(unknown)[0]!r}; its "
                         f"parameters: {allowed}")
    params = {**spec.params, **rule_params}
    if spec.needs == "feedforward" and model.feedback is not None:
        raise ValueError(f"rule {rule!r} fits feedforward rate networks (feedback=None); this "
                         f"network has feedback={model.feedback!r}")
    if spec.needs == "symmetric" and model.feedback != "symmetric":
        raise ValueError(
            f"rule {rule!r} trains the energy-based network with symmetric feedback: build it "
            "with RateNetwork(..., feedback='symmetric')"
        )
    if model.device == "cuda" and (rule not in CUDA_RULES or model.feedback is not None):
        raise ValueError(
            f"rule {rule!r} does not run on device='cuda': the CUDA kernels cover "
            f"{', '.join(CUDA_RULES)} on feedforward networks; use device='cpu'"
        )
    if rule == "equilibrium_propagation":
        if loss != "mse":
            raise ValueError("equilibrium_propagation nudges the output toward the target and "
                             f"needs loss='mse', got loss={loss!r}")
        params["beta"] = check_positive("beta", params["beta"])
        check_choice("nudge", params["nudge"], NUDGES)
        params["tol"] = check_positive("tol", params["tol"])
        params["max_steps"] = check_int("max_steps", params["max_steps"], minimum=1)
    elif rule in ("feedback_alignment", "direct_feedback_alignment"):
        if params["feedback_scale"] is not None:
            params["feedback_scale"] = check_positive("feedback_scale", params["feedback_scale"])
    elif rule == "node_perturbation":
        params["sigma"] = check_positive("sigma", params["sigma"])
        params["n_perturbations"] = check_int("n_perturbations", params["n_perturbations"],
                                              minimum=1)
    elif rule == "hebbian":
        params["decay"] = check_nonnegative("decay", params["decay"])
        params["center"] = bool(params["center"])
    elif rule == "bcm":
        params["theta_rate"] = check_positive("theta_rate", params["theta_rate"])
        if params["theta_rate"] > 1:
            raise ValueError(f"theta_rate must lie in (0, 1], got {params['theta_rate']!r}")
    return spec, params


@dataclass
class GradientComparison:
    """What :func:`compare_to_gradient` returns; lists run over layers 1..L.

    Attributes
    ----------
    rule : str
    loss : float
        Batch-mean loss at the network's fixed point.
    signals : list of ndarray, each (batch, n_l)
        Error signal the rule delivers to layer l (NaN for unsupervised rules).
    true_deltas : list of ndarray, each (batch, n_l)
        ``dL/dh_l`` of the batch-mean loss (for the energy-based network, the adjoint
        ``dL/db_l`` per sample); row ``s`` carries the factor ``1 / batch``.
    updates : list of ndarray, each (n_{l-1}, n_l)
        The rule's estimate of ``dL/dW_l`` (weights move by ``-lr * update``).
    true_grads : list of ndarray, each (n_{l-1}, n_l)
        ``dL/dW_l``.
    bias_updates, true_bias_grads : list of ndarray, each (n_l,)
    angles : ndarray, shape (L,)
        Angle between ``updates[l]`` and ``true_grads[l]`` in degrees (NaN if either is 0).
    """

    rule: str
    loss: float
    signals: list
    true_deltas: list
    updates: list
    true_grads: list
    bias_updates: list
    true_bias_grads: list
    angles: np.ndarray


def _angle(u, g):
    nu = np.linalg.norm(u)
    ng = np.linalg.norm(g)
    if nu == 0 or ng == 0 or not (np.isfinite(nu) and np.isfinite(ng)):
        return np.nan
    # 2 atan2(|u' - g'|, |u' + g'|) of the unit vectors stays accurate near 0 and 180 degrees.
    uu = u / nu
    gg = g / ng
    return float(np.degrees(2.0 * np.arctan2(np.linalg.norm(uu - gg), np.linalg.norm(uu + gg))))


class _Engine:
    """Workspaces and rule state for one model, loss and rule."""

    def __init__(self, model, rule, loss, params, rng):
        self.model = model
        self.rule = rule
        self.loss = loss
        self.loss_code = LOSSES[loss]
        self.params = params
        self.rng = rng
        self.dtype = model.dtype
        self.code = model.activation.code
        self.bcm_theta = None
        self.be = be = model._backend
        # Device copies (on the CPU these are the model's own arrays, updated in place).
        self.P = be.put(model._params)
        self.lo, self.hi = be.put(model._lo), be.put(model._hi)
        self.mode = {"backprop": _k.BACKPROP, "feedback_alignment": _k.FEEDBACK_ALIGNMENT,
                     "direct_feedback_alignment": _k.DIRECT_FEEDBACK_ALIGNMENT}.get(rule)
        self.M = np.zeros(1, dtype=self.dtype)
        self.m_off = np.zeros(model.n_layers, dtype=np.int64)
        if rule in ("feedback_alignment", "direct_feedback_alignment"):
            mats = model.feedback_matrices(rule, params["feedback_scale"])
            self.M = np.ascontiguousarray(np.concatenate([m.ravel() for m in mats]),
                                          dtype=self.dtype)
            self.m_off = np.cumsum([0] + [m.size for m in mats[:-1]]).astype(np.int64)
        self.M = be.put(self.M)
        self.vel = be.put(np.zeros(model.n_params, dtype=self.dtype))

    def sync(self):
        """Copy device parameters back into the model (nothing to do on the CPU)."""
        self.be.back(self.P, self.model._params)

    # ---------------------------------------------------------------- states and gradients
    def _flat(self, batch):
        return np.empty(batch * sum(self.model.sizes[1:]), dtype=self.dtype)

    def _t_buf(self, batch):
        return np.empty(batch * max(self.model.sizes[1:]), dtype=self.dtype)

    def free_state(self, X, tol=None, max_steps=200000):
        """Currents H and rates R (flat) at the network's (free) fixed point."""
        m = self.model
        batch = X.shape[0]
        if m.feedback is None:
            n = batch * sum(m.sizes[1:])
            H, R = self.be.empty(n, self.dtype), self.be.empty(n, self.dtype)
            self.be.rate.feedforward(self.code, m._ap, self.P, m._w_off, m._b_off, m._sizes,
                                     self.be.put(X), H, R)
            return H, R
        H, R = self._flat(batch), self._flat(batch)
        R[:] = 0
        tol = self._tol(tol)
        _, residual = m._relax_flat(X, R, tol, max_steps)
        if residual >= tol:
            warnings.warn(f"free phase did not converge (residual {residual:.3g} >= {tol:.3g})",
                          ConvergenceWarning, stacklevel=3)
        D = np.empty_like(H)
        _k.currents_and_slopes(self.code, m._ap, m._params, m._w_off, m._b_off, m._sizes, X, R,
                               H, self._t_buf(batch), self.dtype.type(1.0), D)
        return H, R

    def _tol(self, tol):
        if tol is not None:
            return tol
        if self.rule == "equilibrium_propagation":
            return self.params["tol"]
        low, high = self.model.rate_range
        return (1e-12 if self.dtype == np.float64 else 1e-6) * (high - low)

    def output(self, R, batch):
        n_L = self.model.sizes[-1]
        return R[R.shape[0] - batch * n_L:].reshape(batch, n_L)

    def loss_grad(self, R, Y):
        batch = Y.shape[0]
        E = np.empty_like(Y)
        out = self.be.host(self.output(R, batch))
        loss = _loss_k.loss_and_output_grad(self.loss_code, out, Y, E)
        return float(loss), E

    def true_gradient(self, X, Y, H, R):
        """(loss, grads flat, deltas flat) of the batch-mean loss."""
        m = self.model
        batch = X.shape[0]
        loss, E = self.loss_grad(R, Y)
        if m.feedback is None:
            be = self.be
            grads = be.empty(m.n_params, self.dtype)
            delta = be.empty(H.shape[0], self.dtype)
            be.rules.backward(self.code, m._ap, self.P, m._w_off, m._b_off, m._sizes, self.M,
                              self.m_off, _k.BACKPROP, be.put(X), H, R, be.put(E), delta, grads)
        else:
            grads = np.empty(m.n_params, dtype=self.dtype)
            delta = np.empty_like(H)
            D = np.empty_like(H)
            _k.currents_and_slopes(self.code, m._ap, m._params, m._w_off, m._b_off, m._sizes, X,
                                   R, H, self._t_buf(batch), self.dtype.type(1.0), D)
            G = np.zeros_like(H)
            G[G.shape[0] - E.size:] = E.ravel()
            delta[:] = 0
            tol = (1e-13 if self.dtype == np.float64 else 1e-7) * float(np.abs(E).max() + 1e-300)
            t = self.dtype.type
            _, residual = _k.adjoint_relax(m._params, m._w_off, m._sizes, batch, D, G, delta,
                                           np.empty_like(H), t(m.integration_coefficient),
                                           t(1.0), t(tol), 200000)
            if residual >= tol:
                warnings.warn(f"adjoint relaxation did not converge (residual {residual:.3g})",
                              ConvergenceWarning, stacklevel=3)
            _k.adjoint_grads(m._params, m._w_off, m._b_off, m._sizes, X, R, delta,
                             self.dtype.type(1.0), grads)
        return loss, grads, delta

    # ---------------------------------------------------------------- rule estimates
    def estimate(self, X, Y, H, R, true=None):
        """The rule's (U flat, signals flat or None, update_biases)."""
        m = self.model
        rule = self.rule
        if rule == "backprop":
            if true is None:
                true = self.true_gradient(X, Y, H, R)
            return true[1], true[2], True
        if rule in ("feedback_alignment", "direct_feedback_alignment"):
            _, E = self.loss_grad(R, Y)
            be = self.be
            U = be.empty(m.n_params, self.dtype)
            delta = be.empty(H.shape[0], self.dtype)
            be.rules.backward(self.code, m._ap, self.P, m._w_off, m._b_off, m._sizes, self.M,
                              self.m_off, self.mode, be.put(X), H, R, be.put(E), delta, U)
            return U, delta, True
        if rule == "equilibrium_propagation":
            return self._equilibrium_propagation(X, Y, R)
        if rule == "node_perturbation":
            return self._node_perturbation(X, Y, R)
        return self._local(X, R)

    def _nudged(self, X, Y, R0, beta):
        R = R0.copy()
        p = self.params
        _, residual = self.model._relax_flat(X, R, p["tol"], p["max_steps"], Y=Y, beta=beta)
        if residual >= p["tol"]:
            warnings.warn(f"nudged phase did not converge (residual {residual:.3g})",
                          ConvergenceWarning, stacklevel=4)
        return R

    def _equilibrium_propagation(self, X, Y, R0):
        m = self.model
        beta = self.params["beta"]
        batch = X.shape[0]
        Rp = self._nudged(X, Y, R0, beta)
        if self.params["nudge"] == "symmetric":
            Rm = self._nudged(X, Y, R0, -beta)
            width = 2.0 * beta
        else:
            Rm = R0
            width = beta
        U = np.empty(m.n_params, dtype=self.dtype)
        _k.coactivation_difference(m._params, m._w_off, m._b_off, m._sizes, X, Rp, Rm,
                                   self.dtype.type(1.0 / (width * batch)), U)
        return U, -(Rp - Rm) / (width * batch), True

    def _node_perturbation(self, X, Y, R0):
        m = self.model
        sigma = self.params["sigma"]
        K = self.params["n_perturbations"]
        batch = X.shape[0]
        clean = np.empty(batch, dtype=self.dtype)
        _k.per_sample_loss(self.loss_code, self.output(R0, batch), Y, clean)
        Xr = np.ascontiguousarray(np.tile(X, (K, 1)))
        Yr = np.ascontiguousarray(np.tile(Y, (K, 1)))
        n_units = sum(m.sizes[1:])
        # Noise laid out like the flat state of a batch of K * batch trials.
        Xi = (self.rng.standard_normal(K * batch * n_units) * sigma).astype(self.dtype)
        H = np.empty_like(Xi)
        R = np.empty_like(Xi)
        _k.perturbed_forward(self.code, m._ap, m._params, m._w_off, m._b_off, m._sizes, Xr, Xi,
                             H, R)
        noisy = np.empty(K * batch, dtype=self.dtype)
        _k.per_sample_loss(self.loss_code, self.output(R, K * batch), Yr, noisy)
        gain = (noisy - np.tile(clean, K)) / sigma**2
        delta = np.empty_like(Xi)
        signals = np.empty(batch * n_units, dtype=self.dtype)
        so = _rate_k.state_offsets(m._sizes, K * batch)
        so1 = _rate_k.state_offsets(m._sizes, batch)
        for l, n in enumerate(m.sizes[1:]):
            xi = Xi[so[l]:so[l + 1]].reshape(K * batch, n)
            d = gain[:, None] * xi
            delta[so[l]:so[l + 1]] = d.ravel() / (K * batch)
            signals[so1[l]:so1[l + 1]] = d.reshape(K, batch, n).mean(axis=0).ravel() / batch
        U = np.empty(m.n_params, dtype=self.dtype)
        _k.layer_grads(m._params, m._w_off, m._b_off, m._sizes, Xr, R, delta, U)
        return U, signals, True

    def _local(self, X, R):
        m = self.model
        batch = X.shape[0]
        kind = {"hebbian": _k.HEBBIAN, "oja": _k.OJA, "bcm": _k.BCM}[self.rule]
        U = np.zeros(m.n_params, dtype=self.dtype)
        so = _rate_k.state_offsets(m._sizes, batch)
        posts = [R[so[l]:so[l + 1]].reshape(batch, n) for l, n in enumerate(m.sizes[1:])]
        if kind == _k.BCM:
            y2 = [np.mean(p * p, axis=0) for p in posts]
            if self.bcm_theta is None:
                self.bcm_theta = [t.copy() for t in y2]
            else:
                rate = self.params["theta_rate"]
                for t, v in zip(self.bcm_theta, y2, strict=True):
                    t += rate * (v - t)
        for l, W in enumerate(m.weights):
            pre = X if l == 0 else posts[l - 1]
            post = posts[l]
            if self.rule == "hebbian" and self.params["center"]:
                pre = pre - pre.mean(axis=0)
                post = post - post.mean(axis=0)
            theta = (self.bcm_theta[l] if kind == _k.BCM
                     else np.zeros(post.shape[1], dtype=self.dtype))
            Ul = U[m._w_off[l]:m._w_off[l] + W.size].reshape(W.shape)
            _k.local_update(kind, W, np.ascontiguousarray(pre), np.ascontiguousarray(post),
                            theta.astype(self.dtype), Ul)
            if self.rule == "hebbian" and self.params["decay"] > 0:
                Ul += self.params["decay"] * W
        return U, None, False

    # ---------------------------------------------------------------- application
    def apply(self, U, lr_w, momentum, update_biases):
        m = self.model
        self.be.rules.apply_update(self.P, U, self.vel, self.dtype.type(momentum), lr_w, lr_w,
                                   m._w_off, m._b_off, m._sizes, self.lo, self.hi,
                                   m.bound_mode == "soft", update_biases)


def _layer_split(model, flat, batch):
    so = _rate_k.state_offsets(model._sizes, batch)
    return [flat[so[l]:so[l + 1]].reshape(batch, n).copy()
            for l, n in enumerate(model.sizes[1:])]


def _param_split(model, flat):
    Ws, bs = [], []
    for l, (n_in, n_out) in enumerate(zip(model.sizes[:-1], model.sizes[1:], strict=True)):
        o = model._w_off[l]
        Ws.append(flat[o:o + n_in * n_out].reshape(n_in, n_out).copy())
        ob = model._b_off[l]
        bs.append(flat[ob:ob + n_out].copy())
    return Ws, bs


def _check_xy(model, X, Y):
    X = check_data("X", X, n_features=model.sizes[0], dtype=model.dtype)
    Y = check_data("Y", Y, n_features=model.sizes[-1], dtype=model.dtype)
    check_same_batch("X", X, "Y", Y)
    return X, Y


def compare_to_gradient(model, X, Y, rule, loss="mse", seed=0, **rule_params):
    """Set a rule's error signals and weight updates beside the true gradient, layer by layer.

    Parameters
    ----------
    model : RateNetwork
    X : array_like, shape (batch, n_in)
    Y : array_like, shape (batch, n_out)
    rule : str
        A name in :data:`RULES`.
    loss : {"mse", "cross_entropy"}
        Loss of the output rates (cross entropy treats them as logits).
    seed : int
        Seed of the rule's random draws (node perturbation).
    **rule_params
        Rule parameters (see :data:`RULES`).

    Returns
    -------
    GradientComparison
    """
    spec, params = _resolve_rule(model, rule, loss, rule_params)
    X, Y = _check_xy(model, X, Y)
    eng = _Engine(model, rule, loss, params, np.random.default_rng(check_int("seed", seed, 0)))
    H, R = eng.free_state(X)
    true = eng.true_gradient(X, Y, H, R)
    U, signals, _ = eng.estimate(X, Y, H, R, true)
    batch = X.shape[0]
    host = eng.be.host
    loss_value, G, deltas = true[0], host(true[1]), host(true[2])
    U = host(U)
    signals = None if signals is None else host(signals)
    updates, bias_updates = _param_split(model, U)
    grads, bias_grads = _param_split(model, G)
    if signals is None:
        sig = [np.full((batch, n), np.nan) for n in model.sizes[1:]]
    else:
        sig = _layer_split(model, signals, batch)
    angles = np.array([_angle(u, g) for u, g in zip(updates, grads, strict=True)])
    return GradientComparison(rule, loss_value, sig, _layer_split(model, deltas, batch), updates,
                              grads, bias_updates, bias_grads, angles)


def _check_lr(lr, n_layers):
    if isinstance(lr, numbers.Real) and not isinstance(lr, bool):
        lr = check_positive("lr", lr)
        return np.full(n_layers, lr)
    try:
        values = [check_positive(f"lr[{i}]", v) for i, v in enumerate(lr)]
    except TypeError:
        raise TypeError(f"lr must be a positive number or a sequence of {n_layers} (one per "
                        f"layer), got {lr!r}") from None
    if len(values) != n_layers:
        raise ValueError(f"lr needs one value per layer ({n_layers}), got {len(values)}")
    return np.asarray(values)


def _evaluate(eng, X, Y, kind, chunk=4096):
    """(mean loss, accuracy) of the network's fixed point on a whole data set."""
    total, correct = 0.0, 0
    n = X.shape[0]
    for start in range(0, n, chunk):
        Xc, Yc = X[start:start + chunk], Y[start:start + chunk]
        _, R = eng.free_state(Xc)
        out = eng.be.host(eng.output(R, Xc.shape[0]))
        total += float(_loss_k.loss_value(eng.loss_code, out, Yc)) * Xc.shape[0]
        if kind == "classification":
            correct += int(np.sum(np.argmax(out, axis=1) == np.argmax(Yc, axis=1)))
    acc = correct / n if kind == "classification" else np.nan
    return total / n, acc


def train_rate_network(model, task, *, rule="backprop", lr=0.01, epochs=10, batch_size=32,
                       loss="mse", seed=0, record_every=1, progress=False, momentum=0.0,
                       **rule_params) -> History:
    """Train a rate network with a learning rule, recording how its signals compare to backprop.

    Parameters
    ----------
    model : RateNetwork
        Trained in place.
    task : Task or (X, Y)
    rule : str
        A name in :data:`RULES`.
    lr : float or sequence of float
        Learning rate, or one per layer (e.g. larger toward the input for equilibrium
        propagation, whose nudge weakens layer by layer).
    epochs, batch_size : int
    loss : {"mse", "cross_entropy"}
    seed : int
        Seed of the minibatch order and the rule's random draws.
    record_every : int
        Record gradient statistics every ``record_every`` minibatch steps.
    progress : bool
        Show a progress bar over epochs (tqdm).
    momentum : float
        Heavy-ball momentum in [0, 1).
    **rule_params
        Rule parameters (see :data:`RULES`).

    Returns
    -------
    History
        Per epoch: ``loss``, ``test_loss``, ``accuracy``, ``test_accuracy``; per record and layer:
        ``grad_norms`` (true ``||dL/dW_l||``), ``delta_norms`` (true, batch mean of the row
        norms of ``delta_l = dL/dh_l``), ``signal_norms`` (the rule's), ``update_norms`` and
        ``angles`` (degrees).
    """
    spec, params = _resolve_rule(model, rule, loss, rule_params)
    task = as_task(task)
    Xtr, Ytr = _check_xy(model, task.X_train, task.Y_train)
    Xte, Yte = _check_xy(model, task.X_test, task.Y_test)
    lr_w = _check_lr(lr, model.n_layers).astype(model.dtype)
    epochs = check_int("epochs", epochs, minimum=0)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    record_every = check_int("record_every", record_every, minimum=1)
    momentum = check_real("momentum", momentum)
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum must lie in [0, 1), got {momentum!r}")
    seed = check_int("seed", seed, 0)
    if model.device == "cuda":  # parameters, state and records stay on the device
        from ._cuda_models import train_rate_network as train_on_device

        return train_on_device(model, (Xtr, Ytr, Xte, Yte, task.kind), rule=rule, lr=lr_w,
                               epochs=epochs, batch_size=batch_size, loss=loss, seed=seed,
                               record_every=record_every, progress=progress, momentum=momentum,
                               rule_params=params)
    rng = np.random.default_rng(seed)
    eng = _Engine(model, rule, loss, params, rng)
    L = model.n_layers
    rec = {k: [] for k in ("steps", "step_loss", "grad_norms", "delta_norms", "signal_norms",
                           "update_norms", "angles")}
    per_epoch = {k: [] for k in ("loss", "test_loss", "accuracy", "test_accuracy")}
    n = Xtr.shape[0]
    step = 0
    diverged, diverged_step = False, None
    epoch_iter = range(epochs)
    if progress:
        from tqdm.auto import tqdm

        epoch_iter = tqdm(epoch_iter, desc=f"{rule}", unit="epoch")
    for _epoch in epoch_iter:
        order = rng.permutation(n)
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            X = np.ascontiguousarray(Xtr[idx])
            Y = np.ascontiguousarray(Ytr[idx])
            batch = X.shape[0]
            H, R = eng.free_state(X)
            recording = step % record_every == 0
            true = eng.true_gradient(X, Y, H, R) if (recording or rule == "backprop") else None
            U, signals, update_biases = eng.estimate(X, Y, H, R, true)
            host = eng.be.host
            if recording:
                loss_value, G, deltas = true[0], host(true[1]), host(true[2])
                U_host = host(U)
                signals = None if signals is None else host(signals)
                so = _rate_k.state_offsets(model._sizes, batch)
                gn, dn, sn, un, an = (np.empty(L) for _ in range(5))
                for l, (n_in, n_out) in enumerate(zip(model.sizes[:-1], model.sizes[1:],
                                                      strict=True)):
                    o = model._w_off[l]
                    g = G[o:o + n_in * n_out]
                    u = U_host[o:o + n_in * n_out]
                    gn[l] = np.linalg.norm(g)
                    un[l] = np.linalg.norm(u)
                    an[l] = _angle(u, g)
                    d = deltas[so[l]:so[l + 1]].reshape(batch, n_out)
                    dn[l] = np.mean(np.linalg.norm(d, axis=1))
                    if signals is None:
                        sn[l] = np.nan
                    else:
                        s = signals[so[l]:so[l + 1]].reshape(batch, n_out)
                        sn[l] = np.mean(np.linalg.norm(s, axis=1))
                for key, value in zip(("steps", "step_loss", "grad_norms", "delta_norms",
                                       "signal_norms", "update_norms", "angles"),
                                      (step, loss_value, gn, dn, sn, un, an), strict=True):
                    rec[key].append(value)
            if not np.all(np.isfinite(U_host if recording else host(U))):
                diverged, diverged_step = True, step
                break
            eng.apply(U, lr_w, momentum, update_biases)
            step += 1
        if diverged:
            break
        tr_loss, tr_acc = _evaluate(eng, Xtr, Ytr, task.kind)
        te_loss, te_acc = _evaluate(eng, Xte, Yte, task.kind)
        for key, value in zip(("loss", "test_loss", "accuracy", "test_accuracy"),
                              (tr_loss, te_loss, tr_acc, te_acc), strict=True):
            per_epoch[key].append(value)
        if not np.isfinite(tr_loss):
            diverged, diverged_step = True, step
            break
    eng.sync()

    def rows(key):
        return np.asarray(rec[key], dtype=np.float64).reshape(len(rec["steps"]), L)

    return History(
        loss=np.asarray(per_epoch["loss"], dtype=np.float64),
        test_loss=np.asarray(per_epoch["test_loss"], dtype=np.float64),
        accuracy=np.asarray(per_epoch["accuracy"], dtype=np.float64),
        test_accuracy=np.asarray(per_epoch["test_accuracy"], dtype=np.float64),
        steps=np.asarray(rec["steps"], dtype=np.int64),
        step_loss=np.asarray(rec["step_loss"], dtype=np.float64),
        grad_norms=rows("grad_norms"),
        delta_norms=rows("delta_norms"),
        signal_norms=rows("signal_norms"),
        update_norms=rows("update_norms"),
        angles=rows("angles"),
        diverged=diverged,
        diverged_step=diverged_step,
        epochs_run=len(per_epoch["loss"]),
        rule=rule,
    )

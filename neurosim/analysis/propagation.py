"""How learning signals and input perturbations grow or fade across depth, beside the theory.

:func:`propagation_profile` measures, for every layer ``l = 1..L``, the gradient norm
``||dL/dW_l||_F`` and the error-signal norm ``||delta_l||`` (``delta_l = dL/dh_l``), their
layer-to-layer ratios and an exponential fit of the depth scale, and sets the mean-field
prediction beside them. It takes an :class:`~neurosim.ann.MLP` (backprop's signal), a
:class:`~neurosim.bio.RateNetwork` (a learning rule's delivered signal beside the true gradient
through the same network) or a :class:`~neurosim.history.History` (the recorded norms over
training).

:func:`perturbation_profile` follows an input perturbation forward through a layered network.

Conventions: layers are numbered 1..L; ``delta_l`` rows carry the ``1 / batch`` of the batch-mean
loss (as :meth:`MLP.gradients` and :func:`neurosim.train` record them); "batch-mean norm" is the
mean over samples of the per-sample Euclidean norm. Squared ratios compare with ``chi_1``:
``ratio_l = E||delta_l||^2 / E||delta_{l+1}||^2`` (l = 1..L-1) is below 1 when the signal fades
toward the input.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, fields

import numpy as np

from .. import activations as _activations
from .._validation import check_choice, check_data, check_int, check_positive, check_same_batch
from ..history import History
from . import meanfield as _mf

REGIMES = ("vanishing", "critical", "exploding", "undefined")


# ----------------------------------------------------------------------------------------------
# Exponential fit of norms across depth
# ----------------------------------------------------------------------------------------------

@dataclass
class DepthFit:
    """Least-squares fit ``ln(norm_l^2) = a + s l`` over the layers.

    Attributes (scalars for one profile, arrays of shape (n_records,) over training)
    ----------
    ratio : float
        ``exp(-s)``: the fitted per-layer factor of the squared norm from layer ``l + 1`` to
        layer ``l`` (compare with ``chi_1``; below 1 the signal fades toward the input).
    ratio_err : float
        Its standard error (NaN with fewer than three layers).
    depth_scale : float
        ``1 / |s|``: layers over which the squared norm changes by a factor e (inf when flat).
    depth_scale_err : float
        Its standard error, ``se(s) / s^2``.
    regime : str
        ``"vanishing"`` (the norm shrinks toward the input), ``"exploding"`` (it grows), or
        ``"critical"`` when the fitted change over all fitted layers is below a factor e or the
        slope is within two standard errors of zero; ``"undefined"`` without two finite,
        non-zero norms.
    """

    ratio: float | np.ndarray
    ratio_err: float | np.ndarray
    depth_scale: float | np.ndarray
    depth_scale_err: float | np.ndarray
    regime: str | np.ndarray


def _fit_row(norms: np.ndarray) -> tuple[float, float, float, float, str]:
    layers = np.arange(1, norms.shape[0] + 1, dtype=np.float64)
    ok = np.isfinite(norms) & (norms > 0)
    x = layers[ok]
    if x.size < 2:
        return math.nan, math.nan, math.nan, math.nan, "undefined"
    y = 2.0 * np.log(norms[ok])
    xm = x.mean()
    sxx = float(np.sum((x - xm) ** 2))
    s = float(np.sum((x - xm) * (y - y.mean())) / sxx)
    if x.size > 2:
        resid = y - y.mean() - s * (x - xm)
        se = math.sqrt(float(np.sum(resid**2)) / (x.size - 2) / sxx)
    else:
        se = math.nan
    ratio = math.exp(-s)
    depth = math.inf if s == 0.0 else 1.0 / abs(s)
    depth_err = se / (s * s) if s != 0.0 else math.nan
    flat = abs(s) * (x[-1] - x[0]) < 1.0 or (math.isfinite(se) and abs(s) < 2.0 * se)
    regime = "critical" if flat else ("vanishing" if s > 0 else "exploding")
    return ratio, ratio * se, depth, depth_err, regime


def fit_depth_scale(norms) -> DepthFit:
    """Fit the exponential growth or decay of per-layer norms (see :class:`DepthFit`).

    Parameters
    ----------
    norms : array_like, shape (L,) or (n_records, L)
        Norms of layers 1..L (not squared); zero or non-finite entries are left out of the fit.

    Returns
    -------
    DepthFit
        Scalars for a 1-D input, arrays of shape (n_records,) for a 2-D one.
    """
    arr = np.asarray(norms, dtype=np.float64)
    if arr.ndim not in (1, 2) or arr.shape[-1] == 0:
        raise ValueError(f"norms must have shape (L,) or (n_records, L), got {arr.shape}")
    if arr.ndim == 1:
        return DepthFit(*_fit_row(arr))
    rows = [_fit_row(r) for r in arr]
    if not rows:
        empty = np.zeros(0)
        return DepthFit(empty, empty, empty, empty, np.zeros(0, dtype="<U10"))
    cols = list(zip(*rows, strict=True))
    return DepthFit(*(np.array(c, dtype=np.float64) for c in cols[:4]),
                    np.array(cols[4], dtype="<U10"))


def anchored_theory(norms, sq_ratios, anchor: str = "output") -> np.ndarray:
    """Norms predicted from squared layer-to-layer ratios, pinned to one measured layer.

    Parameters
    ----------
    norms : array_like, shape (L,)
        Measured norms of layers 1..L.
    sq_ratios : array_like, shape (L-1,)
        Predicted ``E||x_l||^2 / E||x_{l+1}||^2``.
    anchor : {"output", "input"}
        The prediction equals ``norms`` at layer L (the error enters there and travels down)
        or at layer 1.

    Returns
    -------
    ndarray, shape (L,)
    """
    check_choice("anchor", anchor, ("output", "input"))
    norms = np.asarray(norms, dtype=np.float64)
    r = np.asarray(sq_ratios, dtype=np.float64)
    if norms.ndim != 1 or r.shape != (norms.shape[0] - 1,):
        raise ValueError(f"need norms of shape (L,) and ratios of shape (L-1,), got "
                         f"{norms.shape} and {r.shape}")
    with np.errstate(invalid="ignore"):
        log_rel = np.concatenate([np.cumsum(0.5 * np.log(r)[::-1])[::-1], [0.0]])
    rel = np.exp(log_rel)
    ref = norms.shape[0] - 1 if anchor == "output" else 0
    return rel / rel[ref] * norms[ref]


def _sq_ratios(norms_sq: np.ndarray) -> np.ndarray:
    """``x_l / x_{l+1}`` along the last axis (NaN where the denominator is 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = norms_sq[..., :-1] / norms_sq[..., 1:]
    return np.where(np.isfinite(out), out, np.nan)


# ----------------------------------------------------------------------------------------------
# The models as plain layered maps
# ----------------------------------------------------------------------------------------------

@dataclass
class _Layered:
    """A layered network seen as ``h_l = a_{l-1} W_l + b_l``, ``a_l = phi_l(h_l) (+ a_{l-1})``."""

    kind: str
    weights: list
    biases: list
    acts: list
    skips: list
    theory_ok: bool
    model: object

    @property
    def n_layers(self) -> int:
        return len(self.weights)

    def pre_activations(self, X) -> list:
        return self.model.layer_outputs(X)[0]

    def sigmas(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-layer ``sigma_w = sqrt(fan_in * mean(W^2))`` and ``sigma_b = sqrt(mean(b^2))``."""
        sw = np.empty(self.n_layers)
        sb = np.empty(self.n_layers)
        for l, (W, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            flat = W.reshape(-1)
            sw[l] = math.sqrt(float(np.dot(flat, flat)) / W.shape[1])
            sb[l] = math.sqrt(float(np.dot(b, b)) / b.shape[0])
        return sw, sb


def _layered(model) -> _Layered:
    from ..ann import MLP
    from ..bio import RateNetwork

    if isinstance(model, MLP):
        L = model.n_layers
        acts = [model.activation] * (L - 1) + [model.output_activation]
        slopes = model.slopes
        acts = [a if slopes[l] is None else _activations.get(a, slope=float(slopes[l]))
                for l, a in enumerate(acts)]
        skips = [bool(model.residual and l < L - 1 and model.sizes[l] == model.sizes[l + 1])
                 for l in range(L)]
        ok = not (model.batchnorm or model.residual or model.dropout > 0)
        return _Layered("MLP", list(model.weights), list(model.biases), acts, skips, ok, model)
    if isinstance(model, RateNetwork):
        L = model.n_layers
        return _Layered("RateNetwork", list(model.weights), list(model.biases),
                        [model.activation] * L, [False] * L, model.feedback is None, model)
    raise TypeError(f"expected a neurosim MLP or RateNetwork, got {type(model).__name__}")


def _feedforward(model, X, caller: str) -> tuple[_Layered, np.ndarray]:
    """The layered view of a feedforward model (no batch norm, no feedback) and ``X`` checked
    against it as float64; ``caller`` names the function in error messages."""
    layered = _layered(model)
    if getattr(model, "batchnorm", False):
        raise ValueError(f"{caller} does not support batch-normalised MLPs")
    if layered.kind == "RateNetwork" and model.feedback is not None:
        raise ValueError(f"{caller} needs a layered feedforward RateNetwork (feedback=None)")
    return layered, check_data("X", X, n_features=model.sizes[0], dtype=np.float64)


def _q0(X: np.ndarray) -> float:
    return float(np.mean(np.sum(np.asarray(X, dtype=np.float64) ** 2, axis=1)) / X.shape[1])


def _theory(net: _Layered, X, sigmas=None) -> tuple[_mf.LayerStatistics, np.ndarray,
                                                    np.ndarray]:
    sw, sb = net.sigmas() if sigmas is None else sigmas
    return _mf.network_statistics(net.acts, sw, sb, _q0(X)), sw, sb


# ----------------------------------------------------------------------------------------------
# propagation_profile
# ----------------------------------------------------------------------------------------------

@dataclass
class PropagationProfile:
    """Per-layer learning-signal norms, ratios, depth-scale fits and mean-field predictions.

    Arrays over layers have shape ``(L,)`` for a model and ``(n_records, L)`` for a History
    (ratios: ``L - 1`` columns, ratio ``l`` between layers ``l`` and ``l + 1``).

    Attributes
    ----------
    source : {"MLP", "RateNetwork", "History"}
    rule : str
        The learning rule whose signal is profiled ("backprop" for an MLP).
    layers : ndarray of int, shape (L,)
        1..L.
    loss : float or ndarray
        Batch-mean loss (per record: the recorded step loss).
    steps : ndarray or None
        Optimizer steps of the records (History only).
    grad_norms, delta_norms : ndarray
        True gradient ``||dL/dW_l||_F`` and batch-mean ``||delta_l||`` (exact backprop through
        the same network).
    signal_norms, update_norms : ndarray
        Batch-mean norm of the error signal the rule delivers and Frobenius norm of its weight
        update (equal to the two above for backprop; NaN for unsupervised rules).
    delta_sq_ratios, grad_sq_ratios, signal_sq_ratios : ndarray
        ``E||delta_l||^2 / E||delta_{l+1}||^2`` (batch means of squared norms; from the recorded
        batch-mean norms for a History), the same for ``||dL/dW_l||_F^2`` and for the rule's
        signal.
    theory_sq_ratios : ndarray, shape (L-1,)
        Mean-field prediction of ``delta_sq_ratios``: ``sigma_{w,l+1}^2 E[phi_l'(h_l)^2]`` with
        ``h_l ~ N(0, q^l)``, ``q^l`` propagated from the inputs' ``||x||^2 / n_0`` through the
        network's measured per-layer weight and bias scales (``sigma_{w,l}^2 = fan_in
        mean(W_l^2)``, ``sigma_{b,l}^2 = mean(b_l^2)``; zero-mean i.i.d. weights assumed). NaN
        where the theory does not apply (batch norm, residual, dropout, feedback networks,
        History).
    theory_grad_sq_ratios : ndarray, shape (L-1,)
        Prediction of ``grad_sq_ratios`` for a single input, ``theory_sq_ratios`` times
        ``E||a_{l-1}||^2 / E||a_l||^2`` (for a batch it also holds once the forward signal has
        reached its fixed point).
    rule_theory_sq_ratios : ndarray, shape (L-1,)
        Prediction of ``signal_sq_ratios``: backprop as above; feedback alignment
        ``sigma_{B,l+1}^2 E[phi'(h_l)^2]`` from its feedback matrices; direct feedback alignment
        ``n_l E[phi'(h_l)^2] mean(B_l^2) / (n_{l+1} E[phi'(h_{l+1})^2] mean(B_{l+1}^2))`` (1 at
        the fixed point with equal widths: no compounding); NaN for other rules.
    local_sq_ratios : ndarray, shape (L-1,)
        The backward factor from the measured pre-activations, ``sigma_{w,l+1}^2
        mean(phi'(h_l)^2)`` (``sigma_B`` for feedback alignment): the mean-field step with the
        actual ``h_l`` in place of a Gaussian, which stays meaningful after training.
    delta_fit, grad_fit, signal_fit : DepthFit
        Exponential fits of ``delta_norms``, ``grad_norms`` and ``signal_norms``.
    theory_depth_scale : float
        ``1 / |mean ln theory_sq_ratios|`` (layers per factor e of the squared norm).
    """

    source: str
    rule: str
    layers: np.ndarray
    loss: float | np.ndarray
    steps: np.ndarray | None
    grad_norms: np.ndarray
    delta_norms: np.ndarray
    signal_norms: np.ndarray
    update_norms: np.ndarray
    delta_sq_ratios: np.ndarray
    grad_sq_ratios: np.ndarray
    signal_sq_ratios: np.ndarray
    theory_sq_ratios: np.ndarray
    theory_grad_sq_ratios: np.ndarray
    rule_theory_sq_ratios: np.ndarray
    local_sq_ratios: np.ndarray
    delta_fit: DepthFit
    grad_fit: DepthFit
    signal_fit: DepthFit
    theory_depth_scale: float

    @property
    def n_layers(self) -> int:
        return int(self.layers.shape[0])

    @property
    def regime(self):
        """Regime of the profiled signal (:attr:`signal_fit`)."""
        return self.signal_fit.regime

    def theory_norms(self, anchor: str = "output") -> np.ndarray:
        """Predicted ``delta_norms`` for layers 1..L, pinned to the measurement at one layer
        (see :func:`anchored_theory`)."""
        measured = np.asarray(self.delta_norms, dtype=np.float64)
        if measured.ndim != 1:
            raise ValueError("theory_norms needs a single profile (not one over training)")
        return anchored_theory(measured, self.theory_sq_ratios, anchor)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Every field as NumPy arrays (fits flattened to ``<fit>_<field>``), for ``np.savez``."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, DepthFit):
                for g in fields(DepthFit):
                    out[f"{f.name}_{g.name}"] = np.asarray(getattr(value, g.name))
            elif value is None:
                out[f.name] = np.zeros(0)
            else:
                out[f.name] = np.asarray(value)
        return out

    @classmethod
    def from_arrays(cls, arrays) -> PropagationProfile:
        """Inverse of :meth:`to_arrays`."""
        kwargs = {}
        for f in fields(cls):
            if f.name in ("delta_fit", "grad_fit", "signal_fit"):
                parts = {}
                for g in fields(DepthFit):
                    v = np.asarray(arrays[f"{f.name}_{g.name}"])
                    parts[g.name] = v.item() if v.ndim == 0 else v
                kwargs[f.name] = DepthFit(**parts)
                continue
            v = np.asarray(arrays[f.name])
            if f.name in ("source", "rule"):
                v = str(v)
            elif f.name == "steps":
                v = None if v.size == 0 and v.ndim == 1 else v
            elif f.name in ("loss", "theory_depth_scale") and v.ndim == 0:
                v = float(v)
            kwargs[f.name] = v
        return cls(**kwargs)


def _depth_scale_of(ratios: np.ndarray) -> float:
    gm = _geometric_mean(ratios)
    if not math.isfinite(gm):
        return math.nan
    return math.inf if gm == 1.0 else 1.0 / abs(math.log(gm))


def _row_norm_stats(arrs) -> tuple[np.ndarray, np.ndarray]:
    """Batch-mean row norm and batch-mean squared row norm of each (batch, n) array."""
    mean, sq = np.empty(len(arrs)), np.empty(len(arrs))
    for l, a in enumerate(arrs):
        rows = np.einsum("ij,ij->i", a, a, dtype=np.float64)
        mean[l] = float(np.mean(np.sqrt(rows)))
        sq[l] = float(np.mean(rows))
    return mean, sq


def _nan(n: int) -> np.ndarray:
    return np.full(n, np.nan)


def _mlp_measure(net, X, Y, loss, training, threads):
    """Loss and a (7, L) table (see :func:`neurosim.kernels.propagation.profile_pass`): compiled
    forward and norm-only backward on ``threads`` threads (None: as training would use);
    batch-normalised networks go through :meth:`MLP.gradients` (their ``phi'`` statistics are
    left NaN)."""
    from .. import losses as _losses
    from ..kernels import propagation as _prop
    from ..kernels.sync import SYNC_SIZE
    from ..train import _run_team, default_threads, worth_threading

    loss_code = _losses.get(loss).code
    X = check_data("X", X, n_features=net.sizes[0], dtype=net.dtype)
    Y = check_data("Y", Y, n_features=net.sizes[-1], dtype=net.dtype)
    check_same_batch("X", X, "Y", Y)
    nb = X.shape[0]
    table = np.zeros((7, net.n_layers))
    if net.batchnorm:
        value, g = net.gradients(X, Y, loss=loss, training=bool(training))
        for l in range(net.n_layers):
            rows = np.einsum("ij,ij->i", g.deltas[l], g.deltas[l], dtype=np.float64)
            table[:, l] = (_sumsq(g.weights[l]), _sumsq(g.biases[l]),
                           float(np.mean(np.sqrt(rows))), float(np.mean(rows)), np.nan,
                           _sumsq(net.weights[l]), _sumsq(net.biases[l]))
        return float(value), table, X
    if threads is None:
        threads = default_threads() if worth_threading(net, nb) else 1
    threads = min(threads, _prop.MAX_CHUNKS)
    use_masks = bool(training) and net.dropout > 0
    H, U, A, MK, *work = _profile_workspace(net, nb, use_masks)
    if use_masks:
        net._fill_masks(MK, nb, None)
    value = np.zeros(1)
    sync = np.zeros(SYNC_SIZE, np.int64)
    args = (sync, net.layout, net.act_params, net.params, X, Y, loss_code, bool(training),
            H, U, A, MK, *work, value, table)

    def run(tid):
        return _prop.profile_pass(tid, threads, *args)

    if not all(_run_team(threads, run, sync)):
        raise RuntimeError("propagation_profile: a thread of the backward pass stopped early")
    return float(value[0]), table, X


_WORKSPACES = threading.local()
# Largest set of workspaces kept for the next profile (bytes): beyond it the pass's arithmetic
# outweighs faulting fresh pages in, and keeping them would hold the memory indefinitely.
MAX_KEPT_WORKSPACE_BYTES = 64 * 2**20


def _profile_workspace(net, nb, use_masks):
    """Workspaces of :func:`neurosim.kernels.propagation.profile_pass` (``H, U, A, MK``, then
    its scratch arrays), kept per thread for the next profile of a network of the same shape
    (up to ``MAX_KEPT_WORKSPACE_BYTES``): fresh pages cost about a tenth of the pass at depth
    100, width 256, batch 64, and more on two threads, which fault pages in under one lock."""
    from ..kernels import propagation as _prop

    key = (net.dtype.str, nb, tuple(net.sizes), net._separate, use_masks)
    cached = getattr(_WORKSPACES, "last", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    dt = net.dtype
    H, U, A, _, _, MK = net._workspace(nb, use_masks)
    width = max(net.sizes)
    chunks = _prop.MAX_CHUNKS
    direct = [a * max(hi - lo for lo, hi in (_prop.chunk_bounds(b, c) for c in range(chunks)))
              for a, b in zip(net.sizes[:-1], net.sizes[1:], strict=True)
              if not _prop.uses_gram_form(nb, a, b)]
    arrays = (H, U, A, MK, np.empty(nb * width, dt), np.empty(nb * width, dt),
              np.empty(nb * width, dt), np.empty(width, dt), np.empty((chunks, nb * nb), dt),
              np.empty((chunks, nb * nb), dt), np.empty((chunks, max(direct, default=0)), dt),
              np.zeros((chunks, _prop.N_PARTS)), np.zeros((chunks, nb)))
    _WORKSPACES.last = None
    if sum({id(a): a.nbytes for a in arrays}.values()) <= MAX_KEPT_WORKSPACE_BYTES:  # A may be U
        _WORKSPACES.last = (key, arrays)
    return arrays


def _sumsq(a) -> float:
    flat = np.asarray(a).reshape(-1)
    return float(np.dot(flat.astype(np.float64), flat.astype(np.float64)))


def _profile_mlp(net, X, Y, rule, loss, training, theory, sigmas=None, threads=None):
    """``sigmas``: the per-layer ``(sigma_w, sigma_b)`` of :meth:`_Layered.sigmas` when the
    caller already knows them."""
    if rule not in (None, "backprop"):
        raise ValueError(f"an MLP's signal is backprop's; rule must be None or 'backprop', got "
                         f"{rule!r} (learning rules train a RateNetwork)")
    value, table, X = _mlp_measure(net, X, Y, loss, training, threads)
    L = net.n_layers
    grad = np.sqrt(table[0])
    delta, delta_sq = table[2], table[3]
    layered = _layered(net)
    if sigmas is None:  # as _Layered.sigmas, from the norms the backward pass took
        sigmas = (np.sqrt(table[5] / np.asarray(net.sizes[1:], dtype=np.float64)),
                  np.sqrt(table[6] / np.asarray(net.sizes[1:], dtype=np.float64)))
    local = sigmas[0][1:] ** 2 * table[4, :-1]
    th, th_grad = _nan(L - 1), _nan(L - 1)
    if theory and layered.theory_ok:
        th, th_grad = _theory_ratios(layered, X, sigmas)
    return _assemble("MLP", "backprop", value, None, grad, delta, grad, delta,
                     _sq_ratios(delta_sq), _sq_ratios(table[0]), _sq_ratios(delta_sq),
                     th, th_grad, th, local)


def _theory_ratios(layered: _Layered, X, sigmas=None) -> tuple[np.ndarray, np.ndarray]:
    stats, sw, _ = _theory(layered, X, sigmas)
    ratios = sw[1:] ** 2 * stats.dphi_sq[:-1]
    a_sq = np.concatenate([[_q0(X)], stats.phi_sq]) * np.asarray(
        [X.shape[1], *(w.shape[1] for w in layered.weights)], dtype=np.float64)
    # a_sq[l] = E||a_l||^2 (a_0 = x); ratio l compares ||a_{l-1}||^2 ||delta_l||^2 with
    # ||a_l||^2 ||delta_{l+1}||^2.
    grad = ratios * a_sq[:-2] / a_sq[1:-1]
    return ratios, grad


def _rule_theory(model, layered: _Layered, rule, rule_params, X, local_dphi):
    """Mean-field and local predictions of a rule's signal ratios (FA and DFA)."""
    L = layered.n_layers
    nan = _nan(L - 1)
    if rule not in ("feedback_alignment", "direct_feedback_alignment"):
        return None, None
    B = model.feedback_matrices(rule, rule_params.get("feedback_scale"))
    stats, _, _ = _theory(layered, X)
    widths = np.asarray([w.shape[1] for w in layered.weights], dtype=np.float64)
    if rule == "feedback_alignment":
        sB2 = np.array([np.mean(np.asarray(b, np.float64) ** 2) * b.shape[0] for b in B])
        mf = sB2[1:] * stats.dphi_sq[:-1]
        return (mf if layered.theory_ok else nan), sB2[1:] * local_dphi[:-1]
    mean_b2 = np.array([np.mean(np.asarray(b, np.float64) ** 2) for b in B])

    def dfa(dphi):
        size = widths * dphi * mean_b2
        size[-1] = 1.0  # the output layer's signal is the output error itself
        return size[:-1] / size[1:]

    return (dfa(stats.dphi_sq) if layered.theory_ok else nan), dfa(local_dphi)


def _profile_rate(model, X, Y, rule, loss, theory, seed, rule_params):
    from ..rules import compare_to_gradient

    rule = "backprop" if rule is None else rule
    sig = compare_to_gradient(model, X, Y, rule, loss=loss, seed=seed, **rule_params)
    L = model.n_layers
    delta, delta_sq = _row_norm_stats(sig.true_deltas)
    signal, signal_sq = _row_norm_stats(sig.signals)
    grad_sq = np.array([float(np.sum(np.asarray(g, np.float64) ** 2)) for g in sig.true_grads])
    upd = np.array([float(np.linalg.norm(np.asarray(u, np.float64))) for u in sig.updates])
    layered = _layered(model)
    X = check_data("X", X, n_features=model.sizes[0], dtype=np.float64)
    sigmas = layered.sigmas()
    sw = sigmas[0]
    pre = layered.pre_activations(X) if layered.theory_ok else None
    local_dphi = (np.array([float(np.mean(model.activation.derivative(h).astype(np.float64)
                                          ** 2)) for h in pre])
                  if pre is not None else _nan(L))
    local = sw[1:] ** 2 * local_dphi[:-1]
    th, th_grad = _nan(L - 1), _nan(L - 1)
    if theory and layered.theory_ok:
        th, th_grad = _theory_ratios(layered, X, sigmas)
    rule_th, rule_local = th, local
    if rule != "backprop":
        mf, loc = _rule_theory(model, layered, rule, rule_params, X, local_dphi)
        if mf is None:
            rule_th, rule_local = _nan(L - 1), _nan(L - 1)
        else:
            rule_th = mf if theory else _nan(L - 1)
            rule_local = loc
    # local_sq_ratios describe the profiled (rule's) signal
    return _assemble("RateNetwork", rule, float(sig.loss), None, np.sqrt(grad_sq), delta, upd,
                     signal, _sq_ratios(delta_sq), _sq_ratios(grad_sq), _sq_ratios(signal_sq),
                     th, th_grad, rule_th, rule_local)


def _profile_history(history: History):
    grad = np.asarray(history.grad_norms, dtype=np.float64)
    if grad.ndim != 2 or grad.shape[1] == 0:
        raise ValueError(f"history.grad_norms must have shape (n_records, L) with L >= 1, got "
                         f"{grad.shape}: was anything recorded?")
    L = grad.shape[1]
    delta = np.asarray(history.delta_norms, dtype=np.float64)
    signal = np.asarray(history.signal_norms, dtype=np.float64)
    upd = np.asarray(history.update_norms, dtype=np.float64)
    if signal.shape != grad.shape:
        signal = delta.copy()
    if upd.shape != grad.shape:
        upd = grad.copy()
    nan = _nan(L - 1)
    return _assemble("History", str(history.rule), np.asarray(history.step_loss, np.float64),
                     np.asarray(history.steps), grad, delta, upd, signal,
                     _sq_ratios(delta**2), _sq_ratios(grad**2), _sq_ratios(signal**2),
                     nan, nan, nan, nan)


def _assemble(source, rule, loss, steps, grad, delta, upd, signal, delta_r, grad_r, signal_r,
              th, th_grad, rule_th, local):
    L = grad.shape[-1]
    return PropagationProfile(
        source=source, rule=rule, layers=np.arange(1, L + 1), loss=loss, steps=steps,
        grad_norms=grad, delta_norms=delta, signal_norms=signal, update_norms=upd,
        delta_sq_ratios=delta_r, grad_sq_ratios=grad_r, signal_sq_ratios=signal_r,
        theory_sq_ratios=th, theory_grad_sq_ratios=th_grad, rule_theory_sq_ratios=rule_th,
        local_sq_ratios=local, delta_fit=fit_depth_scale(delta), grad_fit=fit_depth_scale(grad),
        signal_fit=fit_depth_scale(signal), theory_depth_scale=_depth_scale_of(th),
    )


def propagation_profile(model, X=None, Y=None, rule=None, loss="mse", *, training=True,
                        theory=True, seed=0, threads=None, **rule_params) -> PropagationProfile:
    """Per-layer gradient and error-signal norms with their depth scale and the theory beside.

    Parameters
    ----------
    model : MLP, RateNetwork or History
        An MLP profiles backprop; a RateNetwork profiles ``rule``'s delivered signal beside the
        true gradient through the same network (:func:`neurosim.rules.compare_to_gradient`); a
        History profiles its recorded norms over training (``X``, ``Y`` not used).
    X : array_like, shape (batch, n_0)
    Y : array_like, shape (batch, n_L)
    rule : str, optional
        RateNetwork: a rule of :data:`neurosim.rules.RULES` (default backprop). MLP: None or
        ``"backprop"``.
    loss : {"mse", "cross_entropy"}
    training : bool
        MLP: differentiate in training mode (batch statistics, dropout), as training does.
    theory : bool
        Compute the mean-field predictions (a Gaussian expectation per layer).
    seed : int
        Seed of a stochastic rule's draws (node perturbation).
    threads : int, optional
        MLP: threads that share each layer's products (at most 2 are used; default: as many
        as training uses, :func:`neurosim.train.default_threads`, or 1 for a network whose
        products are too small to share). The numbers do not depend on it. Not used for
        other models.
    **rule_params
        Parameters of the rule (e.g. ``feedback_scale``, ``beta``).

    Returns
    -------
    PropagationProfile
    """
    from ..ann import MLP
    from ..bio import RateNetwork

    if threads is not None:
        threads = check_int("threads", threads, minimum=1)
    if isinstance(model, History):
        if X is not None or Y is not None or rule is not None or rule_params:
            raise ValueError("a History carries its own records: pass no X, Y, rule or rule "
                             "parameters")
        return _profile_history(model)
    if X is None or Y is None:
        raise ValueError("propagation_profile needs inputs X and targets Y for a model")
    if isinstance(model, MLP):
        if rule_params:
            raise ValueError(f"an MLP takes no rule parameters, got {sorted(rule_params)}")
        return _profile_mlp(model, X, Y, rule, loss, training, bool(theory), threads=threads)
    if isinstance(model, RateNetwork):
        return _profile_rate(model, X, Y, rule, loss, bool(theory), seed, rule_params)
    raise TypeError(f"propagation_profile takes an MLP, a RateNetwork or a History, got "
                    f"{type(model).__name__}")


# ----------------------------------------------------------------------------------------------
# Sweeps of probes over sigma_w and seeds
# ----------------------------------------------------------------------------------------------

@dataclass
class ProfileSweep:
    """Backprop profiles of freshly initialised MLPs over a grid of weight scales and seeds.

    Attributes
    ----------
    sigma_w : ndarray, shape (n_w,)
    seeds : ndarray of int, shape (n_s,)
    layers : ndarray of int, shape (L,)
    loss : ndarray, shape (n_s, n_w)
    grad_norms, delta_norms : ndarray, shape (n_s, n_w, L)
    delta_sq_ratios, theory_sq_ratios : ndarray, shape (n_s, n_w, L-1)
    ratio, ratio_err, depth_scale, depth_scale_err : ndarray, shape (n_s, n_w)
        The exponential fit of ``delta_norms`` (:class:`DepthFit`).
    regime : ndarray of str, shape (n_s, n_w)
    theory_ratio : ndarray, shape (n_s, n_w)
        Geometric mean of ``theory_sq_ratios`` (compare with ``ratio``).
    """

    sigma_w: np.ndarray
    seeds: np.ndarray
    layers: np.ndarray
    loss: np.ndarray
    grad_norms: np.ndarray
    delta_norms: np.ndarray
    delta_sq_ratios: np.ndarray
    theory_sq_ratios: np.ndarray
    ratio: np.ndarray
    ratio_err: np.ndarray
    depth_scale: np.ndarray
    depth_scale_err: np.ndarray
    regime: np.ndarray
    theory_ratio: np.ndarray

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(v) for k, v in self.__dict__.items()}


def propagation_sweep(sizes, sigma_w, seeds, X, Y, *, loss="mse", theory=True,
                      progress=False, threads=None, **mlp_params) -> ProfileSweep:
    """:func:`propagation_profile` of an MLP at initialisation for every ``(seed, sigma_w)``.

    Every initializer scales one set of random draws by ``sigma_w``, so each seed's network is
    built once and its weights rescaled for each ``sigma_w``: the probes are those of
    ``MLP(sizes, sigma_w=s, seed=seed, **mlp_params)`` (to rounding) at the cost of one
    initialisation per seed. Probes run concurrently on ``threads`` threads, each probe on one
    thread with BLAS limited to one thread (where threadpoolctl is installed), so the numbers
    do not depend on ``threads``.

    Parameters
    ----------
    sizes : sequence of int
    sigma_w : array_like, shape (n_w,)
        Weight scales (> 0).
    seeds : sequence of int
    X, Y : array_like
        Inputs and targets of every probe.
    loss : {"mse", "cross_entropy"}
    theory : bool
        Mean-field predictions beside each probe.
    progress : bool
        A tqdm bar over the probes.
    threads : int, optional
        Probes computed at the same time (default: :func:`neurosim.train.default_threads`, as
        in training); each thread holds one extra copy of a network.
    **mlp_params
        Further :class:`neurosim.MLP` arguments (activation, init, sigma_b, dtype, ...), not
        ``sigma_w`` or ``seed``.

    Returns
    -------
    ProfileSweep
    """
    from ..ann import MLP
    from ..train import _run_team, default_threads

    for key in ("sigma_w", "seed"):
        if key in mlp_params:
            raise ValueError(f"{key} is swept; do not pass it among the MLP parameters")
    sw = np.atleast_1d(np.asarray(sigma_w, dtype=np.float64))
    if sw.ndim != 1 or sw.size == 0 or not np.all(np.isfinite(sw)) or np.any(sw <= 0):
        raise ValueError(f"sigma_w must be a non-empty 1-D sequence of values > 0, got "
                         f"{sigma_w!r}")
    seeds = [check_int(f"seeds[{i}]", s, minimum=0)
             for i, s in enumerate(np.atleast_1d(np.asarray(seeds)).tolist())]
    if not seeds:
        raise ValueError("seeds must hold at least one seed")
    threads = default_threads() if threads is None else check_int("threads", threads,
                                                                    minimum=1)
    n_probes = len(seeds) * sw.size
    threads = min(threads, n_probes)
    nets = [MLP(sizes, sigma_w=1.0, seed=seed, **mlp_params) for seed in seeds]
    # The measured scales of a rescaled network are those of its base times s.
    base_sigmas = [_layered(net).sigmas() for net in nets]
    probes = [None] * n_probes
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_probes, desc="propagation_sweep", unit="probe")

    def work(tid):
        # Thread tid takes probes tid, tid + threads, ... on its own copy of the seed's network.
        net, net_seed = None, -1
        for i in range(tid, n_probes, threads):
            j, q = divmod(i, sw.size)
            if net_seed != j:
                net, net_seed = nets[j].copy(), j
            s = sw[q]
            for view, w in zip(net.weights, nets[j].weights, strict=True):
                np.multiply(w, net.dtype.type(s), out=view)
            base_sw, base_sb = base_sigmas[j]
            probes[i] = _profile_mlp(net, X, Y, None, loss, True, bool(theory),
                                     sigmas=(base_sw * s, base_sb), threads=1)
            if bar is not None:
                bar.update(1)

    try:
        _run_team(threads, work)
    finally:
        if bar is not None:
            bar.close()
    rows = [probes[j * sw.size:(j + 1) * sw.size] for j in range(len(seeds))]

    def stack(get):
        return np.array([[get(p) for p in row] for row in rows])

    return ProfileSweep(
        sigma_w=sw, seeds=np.asarray(seeds), layers=rows[0][0].layers,
        loss=stack(lambda p: p.loss), grad_norms=stack(lambda p: p.grad_norms),
        delta_norms=stack(lambda p: p.delta_norms),
        delta_sq_ratios=stack(lambda p: p.delta_sq_ratios),
        theory_sq_ratios=stack(lambda p: p.theory_sq_ratios),
        ratio=stack(lambda p: p.delta_fit.ratio), ratio_err=stack(lambda p: p.delta_fit.ratio_err),
        depth_scale=stack(lambda p: p.delta_fit.depth_scale),
        depth_scale_err=stack(lambda p: p.delta_fit.depth_scale_err),
        regime=stack(lambda p: p.delta_fit.regime).astype("<U10"),
        theory_ratio=stack(lambda p: _geometric_mean(p.theory_sq_ratios)),
    )


def _geometric_mean(r) -> float:
    r = np.asarray(r, dtype=np.float64)
    r = r[np.isfinite(r) & (r > 0)]
    return float(np.exp(np.mean(np.log(r)))) if r.size else math.nan


# ----------------------------------------------------------------------------------------------
# perturbation_profile
# ----------------------------------------------------------------------------------------------

@dataclass
class PerturbationProfile:
    """How an input perturbation grows or shrinks through layers 1..L.

    Attributes
    ----------
    eps : float or None
        None: infinitesimal perturbations (Jacobian-vector products); else the size of the
        finite input perturbation ``||x' - x|| = eps``.
    layers : ndarray of int, shape (L,)
    sizes : ndarray, shape (batch, L)
        ``||dh_l|| / ||dx||`` for every sample: the pre-activation perturbation per unit input
        perturbation.
    per_unit_sq : ndarray, shape (L,)
        ``mean_b ||dh_l||^2 / (n_l ||dx||^2)``: squared perturbation per unit of layer l.
    growth : ndarray, shape (L,)
        ``per_unit_sq[l] / per_unit_sq[l-1]`` (layer 1 relative to the input's
        ``||dx||^2 / n_0``).
    theory_growth : ndarray, shape (L,)
        Mean-field prediction of ``growth``: ``sigma_{w,1}^2`` for layer 1, then
        ``sigma_{w,l}^2 E[phi_{l-1}'(h_{l-1})^2]`` (infinitesimal perturbations; for finite ones
        the two-input mean-field iterates). NaN where the theory does not apply.
    local_growth : ndarray, shape (L,)
        ``sigma_{w,l}^2 mean(phi_{l-1}'(h_{l-1})^2)`` from the measured pre-activations
        (infinitesimal perturbations only).
    fit : DepthFit
        Exponential fit of ``sqrt(per_unit_sq)`` (``fit.ratio`` is the per-layer factor going
        *down* the layers: below 1 means the perturbation grows with depth).
    """

    eps: float | None
    layers: np.ndarray
    sizes: np.ndarray
    per_unit_sq: np.ndarray
    growth: np.ndarray
    theory_growth: np.ndarray
    local_growth: np.ndarray
    fit: DepthFit


def _derivative(act, h):
    return act.derivative(h)


def perturbation_profile(model, X, eps=None, seed=0, theory=True) -> PerturbationProfile:
    """Follow random input perturbations forward through a layered network.

    Parameters
    ----------
    model : MLP or RateNetwork
        A layered network (no batch norm; a RateNetwork without feedback). Inference mode.
    X : array_like, shape (batch, n_0)
        Inputs; each gets its own random direction.
    eps : float, optional
        None (default): infinitesimal perturbations, propagated exactly by Jacobian-vector
        products ``dh_l = (dh_{l-1} phi'_{l-1}) W_l``; a float: finite perturbations of that
        norm, measured by two forward passes.
    seed : int
        Seed of the random directions.
    theory : bool
        Compute the mean-field predictions.

    Returns
    -------
    PerturbationProfile
    """
    layered, X = _feedforward(model, X, "perturbation_profile")
    seed = check_int("seed", seed, minimum=0)
    if eps is not None:
        eps = check_positive("eps", eps)
    # A spawned stream, so that the directions never coincide with data drawn from ``seed``.
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1,)))
    U = rng.standard_normal(X.shape)
    U /= np.linalg.norm(U, axis=1, keepdims=True)
    L = layered.n_layers
    widths = np.asarray([w.shape[1] for w in layered.weights], dtype=np.float64)
    pre = [np.asarray(h, np.float64) for h in _pre(layered, X)]
    if eps is None:
        sizes = np.empty((X.shape[0], L))
        v = U
        for l in range(L):
            dh = v @ np.asarray(layered.weights[l], np.float64)
            sizes[:, l] = np.linalg.norm(dh, axis=1)
            dv = dh * _derivative(layered.acts[l], pre[l])
            v = dv + v if layered.skips[l] else dv
    else:
        pre2 = [np.asarray(h, np.float64) for h in _pre(layered, X + eps * U)]
        sizes = np.stack([np.linalg.norm(b - a, axis=1) for a, b in zip(pre, pre2, strict=True)],
                         axis=1) / eps
    per_unit = np.mean(sizes**2, axis=0) / widths
    prev = np.concatenate([[1.0 / X.shape[1]], per_unit[:-1]])
    growth = per_unit / prev
    sw, sb = layered.sigmas()
    dphi_local = np.array([float(np.mean(_derivative(a, h) ** 2))
                           for a, h in zip(layered.acts, pre, strict=True)])
    local = sw**2 * np.concatenate([[1.0], dphi_local[:-1]])
    if eps is not None or any(layered.skips):
        local = _nan(L)
    th = _nan(L)
    if theory and layered.theory_ok and not any(layered.skips):
        if eps is None:
            stats = _mf.network_statistics(layered.acts, sw, sb, _q0(X))
            th = sw**2 * np.concatenate([[1.0], stats.dphi_sq[:-1]])
        else:
            th = _finite_theory(layered, X, X + eps * U, sw, sb, eps)
    return PerturbationProfile(eps, np.arange(1, L + 1), sizes, per_unit, growth, th, local,
                               fit_depth_scale(np.sqrt(per_unit)))


def _pre(layered: _Layered, X):
    if layered.kind == "MLP":
        return layered.model.layer_outputs(X, training=False)[0]
    return layered.model.layer_outputs(X)[0]


def _finite_theory(layered, X, X2, sw, sb, eps):
    """Mean-field growth of finite perturbations: two-input iterates per sample, averaged."""
    L = layered.n_layers
    per_unit = np.zeros(L)
    for x, x2 in zip(X, X2, strict=True):
        qa0 = float(x @ x) / x.size
        qb0 = float(x2 @ x2) / x.size
        cab0 = float(x @ x2) / x.size
        for l in range(L):
            act = _mf._resolve(layered.acts[l])
            qa = sw[l] ** 2 * qa0 + sb[l] ** 2
            qb = sw[l] ** 2 * qb0 + sb[l] ** 2
            qab = sw[l] ** 2 * cab0 + sb[l] ** 2
            per_unit[l] += qa + qb - 2.0 * qab
            c = max(-1.0, min(1.0, qab / math.sqrt(qa * qb))) if qa > 0 and qb > 0 else 1.0
            qa0 = _mf._e1(act, qa, 2)
            qb0 = _mf._e1(act, qb, 2)
            cab0 = _mf._e2(act, qa, qb, c)
    per_unit /= X.shape[0] * eps * eps
    prev = np.concatenate([[1.0 / X.shape[1]], per_unit[:-1]])
    return per_unit / prev

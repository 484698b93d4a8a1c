"""Which (sigma_w, depth) networks train, to set beside the correlation depth scale.

Schoenholz et al. (2017): a deep network at initialisation passes information about its inputs
only over about ``xi_c`` layers, and trains when its depth is below about ``6 xi_c``; at the
order-chaos edge ``xi_c`` diverges and arbitrarily deep networks train.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import activations as _activations
from .._validation import check_choice, check_int, check_nonnegative, check_positive, check_real
from ..tasks import as_task
from . import meanfield as _mf

METRICS = ("accuracy", "loss_ratio", "loss")


@dataclass
class Trainability:
    """Outcome of training a grid of networks.

    Attributes
    ----------
    activation : str
    sigma_w : ndarray, shape (n_w,)
        Weight standard deviations.
    sigma_b : float
    depths : ndarray of int, shape (n_d,)
        Numbers of hidden layers.
    seeds : ndarray of int, shape (n_s,)
    metric : str
        ``"accuracy"`` (final training accuracy >= target), ``"loss_ratio"`` (final over
        initial training loss <= target) or ``"loss"`` (final training loss <= target).
    target : float
    score : ndarray, shape (n_s, n_w, n_d)
        The metric's value at the end of training (NaN after divergence).
    trained : ndarray of bool, shape (n_s, n_w, n_d)
    initial_loss, final_loss : ndarray, shape (n_s, n_w, n_d)
        Training loss before and after training.
    diverged : ndarray of bool, shape (n_s, n_w, n_d)
    xi_c : ndarray, shape (n_w,)
        Mean-field correlation depth scale at each ``sigma_w`` (inf at criticality).
    critical_sigma_w : float
        Where ``chi_1 = 1`` (NaN if none).
    """

    activation: str
    sigma_w: np.ndarray
    sigma_b: float
    depths: np.ndarray
    seeds: np.ndarray
    metric: str
    target: float
    score: np.ndarray
    trained: np.ndarray
    initial_loss: np.ndarray
    final_loss: np.ndarray
    diverged: np.ndarray
    xi_c: np.ndarray
    critical_sigma_w: float

    @property
    def fraction_trained(self) -> np.ndarray:
        """Share of seeds that trained, shape (n_w, n_d)."""
        return self.trained.mean(axis=0)

    @property
    def six_xi_c(self) -> np.ndarray:
        """``6 xi_c`` per ``sigma_w``: the predicted largest trainable depth."""
        return 6.0 * self.xi_c

    def max_trainable_depth(self, fraction: float = 0.5) -> np.ndarray:
        """Per ``sigma_w`` the largest depth where at least ``fraction`` of the seeds trained
        (0 where none did), shape (n_w,)."""
        ok = self.fraction_trained >= fraction
        out = np.zeros(self.sigma_w.shape[0])
        for i in range(out.shape[0]):
            if ok[i].any():
                out[i] = self.depths[ok[i]].max()
        return out

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(v) for k, v in self.__dict__.items()}

    @classmethod
    def from_arrays(cls, arrays) -> Trainability:
        kw = {k: np.asarray(arrays[k]) for k in cls.__dataclass_fields__}
        for k in ("activation", "metric"):
            kw[k] = str(kw[k])
        for k in ("sigma_b", "target", "critical_sigma_w"):
            kw[k] = float(kw[k])
        return cls(**kw)


def _loss_of(net, X, Y, loss) -> float:
    from .. import losses as _losses
    from ..kernels import losses as _loss_k

    out = np.ascontiguousarray(net.forward(X))
    return float(_loss_k.loss_value(_losses.get(loss).code, out,
                                    np.ascontiguousarray(Y, dtype=out.dtype)))


def trainable_depth(task, sigma_w, depths, *, activation="tanh", sigma_b=0.05, width=64,
                    init="gaussian", optimizer="sgd", lr=1e-3, epochs=10, batch_size=32,
                    loss="mse", metric=None, target=None, seeds=(0,), dtype="float64",
                    progress=False, **optimizer_params) -> Trainability:
    """Train an MLP for every ``(sigma_w, depth)`` and record whether it reaches a target.

    Parameters
    ----------
    task : Task or (X, Y)
        Training data (the network has ``task.n_inputs`` inputs and ``task.n_outputs``
        outputs).
    sigma_w : array_like, shape (n_w,)
        Weight standard deviations (``W ~ N(0, sigma_w^2 / fan_in)`` for gaussian init).
    depths : array_like of int, shape (n_d,)
        Numbers of hidden layers of ``width`` units.
    activation : str or Activation
    sigma_b : float
        Bias standard deviation.
    width : int
    init, optimizer, lr, epochs, batch_size, loss, dtype, **optimizer_params
        As for :class:`neurosim.MLP` and :func:`neurosim.train` (the budget).
    metric : {"accuracy", "loss_ratio", "loss"}, optional
        Default ``"accuracy"`` for classification tasks, ``"loss_ratio"`` otherwise.
    target : float, optional
        Default: for accuracy, halfway from chance ``1 / n_classes`` to 1; for loss_ratio 0.5;
        loss needs an explicit target.
    seeds : sequence of int
        Network seeds (initialisation and sample order).
    progress : bool
        Show a tqdm bar over the grid.

    Returns
    -------
    Trainability
    """
    import neurosim as ns

    task = as_task(task)
    act = _activations.get(activation)
    sw = np.atleast_1d(np.asarray(sigma_w, dtype=np.float64))
    if sw.ndim != 1 or sw.size == 0 or not np.all(np.isfinite(sw)) or np.any(sw <= 0):
        raise ValueError(f"sigma_w must be a non-empty 1-D sequence of values > 0, got "
                         f"{sigma_w!r}")
    ds = [check_int(f"depths[{i}]", d, minimum=0) for i, d in
          enumerate(np.atleast_1d(np.asarray(depths)).tolist())]
    if not ds:
        raise ValueError("depths must hold at least one depth")
    seeds = [check_int(f"seeds[{i}]", s, minimum=0) for i, s in
             enumerate(np.atleast_1d(np.asarray(seeds)).tolist())]
    if not seeds:
        raise ValueError("seeds must hold at least one seed")
    sigma_b = check_nonnegative("sigma_b", sigma_b)
    width = check_int("width", width, minimum=1)
    classification = task.kind == "classification"
    metric = check_choice("metric", metric or ("accuracy" if classification else "loss_ratio"),
                          METRICS)
    if metric == "accuracy" and not classification:
        raise ValueError("metric='accuracy' needs a classification task")
    if target is None:
        if metric == "loss":
            raise ValueError("metric='loss' needs an explicit target loss")
        target = (0.5 * (1.0 + 1.0 / task.n_outputs) if metric == "accuracy" else 0.5)
    target = check_real("target", target)
    check_positive("lr", lr)
    shape = (len(seeds), sw.size, len(ds))
    score = np.full(shape, np.nan)
    initial = np.full(shape, np.nan)
    final = np.full(shape, np.nan)
    diverged = np.zeros(shape, dtype=bool)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=int(np.prod(shape)), desc="trainable_depth", unit="net")
    try:
        for s, seed in enumerate(seeds):
            for i, w in enumerate(sw):
                for j, depth in enumerate(ds):
                    sizes = [task.n_inputs] + [width] * depth + [task.n_outputs]
                    net = ns.MLP(sizes, activation=act, init=init, sigma_w=float(w),
                                 sigma_b=sigma_b, seed=seed, dtype=dtype)
                    initial[s, i, j] = _loss_of(net, task.X_train, task.Y_train, loss)
                    hist = ns.train(net, task, optimizer=optimizer, lr=lr, epochs=epochs,
                                    batch_size=batch_size, loss=loss, seed=seed,
                                    record_every=1 << 30, **optimizer_params)
                    diverged[s, i, j] = hist.diverged
                    if not hist.diverged and hist.loss.size:
                        final[s, i, j] = hist.loss[-1]
                        if metric == "accuracy":
                            score[s, i, j] = hist.accuracy[-1]
                        elif metric == "loss":
                            score[s, i, j] = hist.loss[-1]
                        else:
                            score[s, i, j] = hist.loss[-1] / initial[s, i, j]
                    if bar is not None:
                        bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    with np.errstate(invalid="ignore"):
        trained = score >= target if metric == "accuracy" else score <= target
    trained &= np.isfinite(score)
    xi = np.array([_mf.xi_c(act, float(w), sigma_b) for w in sw])
    try:
        crit = _mf.critical_sigma_w(act, sigma_b)
    except ValueError:
        crit = math.nan
    return Trainability(act.name, sw, sigma_b, np.asarray(ds), np.asarray(seeds), metric,
                        target, score, trained, initial, final, diverged, xi, crit)

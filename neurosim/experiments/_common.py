"""Helpers shared by the experiments: seeds, tasks, per-layer norms, padding, figure styling."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Okabe & Ito (2008) colour-blind-safe palette.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442",
           "#000000")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES = ("-", "--", "-.", ":")


def child_seeds(seed: int, n: int) -> list[int]:
    """``n`` independent integer seeds derived from one point seed."""
    states = np.random.SeedSequence(int(seed)).generate_state(n, np.uint64)
    return [int(s >> np.uint64(1)) for s in states]


def batch_mean_norms(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Batch-mean Euclidean norm of each (batch, n_l) array: shape (L,)."""
    return np.array([float(np.mean(np.linalg.norm(a, axis=1))) for a in arrays])


def batch_mean_sq_norms(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Batch mean of the squared Euclidean norm of each (batch, n_l) array: shape (L,)."""
    return np.array([float(np.mean(np.sum(np.square(a), axis=1))) for a in arrays])


def frobenius_norms(arrays: Sequence[np.ndarray]) -> np.ndarray:
    return np.array([float(np.linalg.norm(a)) for a in arrays])


def pad_rows(array, rows: int) -> np.ndarray:
    """``array`` (n, ...) as float with NaN rows appended (or rows cut) to exactly ``rows``."""
    array = np.asarray(array, dtype=np.float64)
    out = np.full((rows, *array.shape[1:]), np.nan)
    n = min(rows, array.shape[0])
    out[:n] = array[:n]
    return out


def probe_then_train(net, task, *, probe_batch: int, loss: str, epochs: int, **train_kwargs):
    """Per-layer gradient signals of ``net`` at initialisation, then train it with ``ns.train``.

    Parameters
    ----------
    net : neurosim.MLP
        Freshly initialised network; it is trained in place.
    task : neurosim.tasks.Task
    probe_batch : int
        The first ``probe_batch`` training examples give the at-init gradients.
    loss : {"mse", "cross_entropy"}
    epochs : int
    **train_kwargs
        Passed to :func:`neurosim.train` (optimizer, lr, batch_size, record_every, seed, ...).

    Returns
    -------
    dict of str to ndarray
        ``grad_init`` / ``delta_init`` / ``delta_sq_init`` (L,): ||dL/dW_l||_F, batch-mean
        ||delta_l|| and batch-mean ||delta_l||^2 at init; ``grad_train`` (n_records, L) and
        ``steps`` (n_records,) over training; ``loss``, ``test_loss``, ``accuracy``,
        ``test_accuracy`` (epochs,), NaN-padded after a divergence; ``diverged`` (scalar bool).
    """
    import neurosim as ns

    X, Y = task.X_train[:probe_batch], task.Y_train[:probe_batch]
    _, grads = net.gradients(X, Y, loss=loss)
    history = ns.train(net, task, loss=loss, epochs=epochs, **train_kwargs)
    return {
        "grad_init": frobenius_norms(grads.weights),
        "delta_init": batch_mean_norms(grads.deltas),
        "delta_sq_init": batch_mean_sq_norms(grads.deltas),
        "grad_train": np.asarray(history.grad_norms, dtype=np.float64),
        "steps": np.asarray(history.steps, dtype=np.int64),
        "loss": pad_rows(history.loss, epochs),
        "test_loss": pad_rows(history.test_loss, epochs),
        "accuracy": pad_rows(history.accuracy, epochs),
        "test_accuracy": pad_rows(history.test_accuracy, epochs),
        "diverged": np.array(bool(history.diverged)),
    }


def log_slope(values: np.ndarray, layers: np.ndarray | None = None) -> float:
    """exp of the least-squares slope of log(values) against layer: the per-layer factor."""
    values = np.asarray(values, dtype=np.float64)
    if layers is None:
        layers = np.arange(values.size, dtype=np.float64)
    ok = np.isfinite(values) & (values > 0)
    if ok.sum() < 2:
        return float("nan")
    slope = np.polyfit(np.asarray(layers, dtype=np.float64)[ok], np.log(values[ok]), 1)[0]
    return float(np.exp(slope))


def geometric_mean(values, axis=None):
    values = np.asarray(values, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.exp(np.nanmean(np.log(values), axis=axis))


def classification_task(n_inputs: int, n_classes: int, n_train: int, n_test: int,
                        seed: int, separation: float = 2.5):
    """Gaussian clusters in ``n_inputs`` dimensions (no optional dependencies needed)."""
    from .. import tasks

    total = n_train + n_test
    return tasks.gaussian_blobs(n_classes=n_classes, n_features=n_inputs, n_samples=total,
                                spread=1.0, separation=separation,
                                test_fraction=n_test / total, seed=seed)


def new_figure(nrows: int, ncols: int, width: float = 3.2, height: float = 2.7, **kwargs):
    """A matplotlib Figure (no pyplot state) with a grid of axes, sized per panel in inches."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kwargs)
    return fig, axes


def layer_axis(ax, n_layers: int, label: str = "layer l") -> None:
    ax.set_xlabel(label)
    step = max(1, int(np.ceil(n_layers / 8)))
    ax.set_xticks(np.arange(1, n_layers + 1, step))
    ax.set_xlim(0.5, n_layers + 0.5)


def fmt(x, digits: int = 3) -> str:
    """Compact number for captions (NaN as 'n/a')."""
    x = float(x)
    if not np.isfinite(x):
        return "n/a"
    return f"{x:.{digits}g}"

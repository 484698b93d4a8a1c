"""Seeded benchmark tasks with train/test splits.

Every task returns a :class:`Task`. Classification targets are one-hot float arrays (so both
``mse`` and ``cross_entropy`` apply); ``task.labels_train`` / ``task.labels_test`` give the
integer classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import activations
from ._validation import (
    check_data,
    check_in_range,
    check_int,
    check_nonnegative,
    check_positive,
    check_same_batch,
)


@dataclass
class Task:
    """A supervised data set.

    Attributes
    ----------
    name : str
    X_train, Y_train : ndarray, shapes (n_train, n_in), (n_train, n_out)
    X_test, Y_test : ndarray, shapes (n_test, n_in), (n_test, n_out)
    kind : {"classification", "regression"}
    info : dict
        How the task was made (for provenance).
    """

    name: str
    X_train: np.ndarray
    Y_train: np.ndarray
    X_test: np.ndarray
    Y_test: np.ndarray
    kind: str = "classification"
    info: dict = field(default_factory=dict)

    @property
    def n_inputs(self) -> int:
        return self.X_train.shape[1]

    @property
    def n_outputs(self) -> int:
        return self.Y_train.shape[1]

    @property
    def labels_train(self) -> np.ndarray:
        return np.argmax(self.Y_train, axis=1)

    @property
    def labels_test(self) -> np.ndarray:
        return np.argmax(self.Y_test, axis=1)


def one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    out = np.zeros((labels.shape[0], n_classes))
    out[np.arange(labels.shape[0]), labels] = 1.0
    return out


def as_task(data) -> Task:
    """Accept a :class:`Task` or a plain ``(X, Y)`` tuple (used for both training and testing)."""
    if isinstance(data, Task):
        return data
    if isinstance(data, tuple) and len(data) == 2:
        X = check_data("X", data[0])
        Y = check_data("Y", data[1])
        check_same_batch("X", X, "Y", Y)
        is_onehot = bool(np.all((Y == 0) | (Y == 1)) and np.all(Y.sum(axis=1) == 1))
        kind = "classification" if is_onehot and Y.shape[1] > 1 else "regression"
        return Task("arrays", X, Y, X, Y, kind=kind)
    raise TypeError(
        f"task must be a neurosim.tasks.Task or an (X, Y) tuple, got {type(data).__name__}"
    )


def _split(X, Y, test_fraction, rng, name, kind, info) -> Task:
    n = X.shape[0]
    order = rng.permutation(n)
    n_test = int(round(test_fraction * n))
    test, train = order[:n_test], order[n_test:]
    return Task(name, X[train], Y[train], X[test], Y[test], kind=kind, info=info)


def xor() -> Task:
    """The four XOR patterns in {-1, +1}^2, two classes; train and test are the same four points."""
    X = np.array([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]])
    labels = np.array([0, 1, 1, 0])
    Y = one_hot(labels, 2)
    return Task("xor", X, Y, X.copy(), Y.copy(), info={"name": "xor"})


def parity(n_bits: int = 4) -> Task:
    """All 2^n_bits patterns in {-1, +1}^n_bits labelled by the parity of their +1 count."""
    n_bits = check_int("n_bits", n_bits, minimum=1)
    if n_bits > 20:
        raise ValueError(f"n_bits must be <= 20 (2^n_bits patterns are enumerated), got {n_bits}")
    codes = np.arange(2**n_bits)
    bits = (codes[:, None] >> np.arange(n_bits)[None, :]) & 1
    X = 2.0 * bits - 1.0
    Y = one_hot(bits.sum(axis=1) % 2, 2)
    return Task(f"parity{n_bits}", X, Y, X.copy(), Y.copy(), info={"n_bits": n_bits})


def two_spirals(n_per_class: int = 200, noise: float = 0.0, turns: float = 1.75,
                test_fraction: float = 0.2, seed: int = 0) -> Task:
    """Two interleaved spirals in the plane (Lang & Witbrock 1988 style), coordinates in [-1, 1]."""
    n_per_class = check_int("n_per_class", n_per_class, minimum=2)
    noise = check_nonnegative("noise", noise)
    turns = check_positive("turns", turns)
    test_fraction = check_in_range("test_fraction", test_fraction, 0.0, 1.0, high_closed=False)
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 1.0, n_per_class, endpoint=False) + 0.5 / n_per_class
    angle = 2.0 * np.pi * turns * t
    radius = 0.05 + 0.95 * t
    arm = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    X = np.concatenate([arm, -arm]) + noise * rng.standard_normal((2 * n_per_class, 2))
    labels = np.repeat([0, 1], n_per_class)
    info = {"n_per_class": n_per_class, "noise": noise, "turns": turns, "seed": seed}
    return _split(X, one_hot(labels, 2), test_fraction, rng, "two_spirals", "classification",
                  info)


def gaussian_blobs(n_classes: int = 3, n_features: int = 2, n_samples: int = 600,
                   spread: float = 1.0, separation: float = 4.0, test_fraction: float = 0.2,
                   seed: int = 0) -> Task:
    """Isotropic Gaussian clusters with centres drawn at scale ``separation``."""
    n_classes = check_int("n_classes", n_classes, minimum=2)
    n_features = check_int("n_features", n_features, minimum=1)
    n_samples = check_int("n_samples", n_samples, minimum=n_classes)
    spread = check_positive("spread", spread)
    separation = check_nonnegative("separation", separation)
    test_fraction = check_in_range("test_fraction", test_fraction, 0.0, 1.0, high_closed=False)
    rng = np.random.default_rng(seed)
    centres = separation * rng.standard_normal((n_classes, n_features))
    labels = np.arange(n_samples) % n_classes
    X = centres[labels] + spread * rng.standard_normal((n_samples, n_features))
    info = {"n_classes": n_classes, "n_features": n_features, "n_samples": n_samples,
            "spread": spread, "separation": separation, "seed": seed}
    return _split(X, one_hot(labels, n_classes), test_fraction, rng, "gaussian_blobs",
                  "classification", info)


def teacher_student(depth: int = 3, width: int = 32, n_train: int = 2000, n_test: int = 500,
                    n_inputs: int | None = None, n_outputs: int = 10,
                    activation: str = "tanh", sigma_w: float = 1.0, sigma_b: float = 0.0,
                    noise: float = 0.0, seed: int = 0) -> Task:
    """Regression onto a random teacher MLP.

    The teacher has ``depth`` hidden layers of ``width`` units with Gaussian weights
    ``N(0, sigma_w^2 / fan_in)``, biases ``N(0, sigma_b^2)``, the given activation and a linear
    readout of ``n_outputs`` units; inputs are standard normal. Targets get optional Gaussian
    noise of standard deviation ``noise``.
    """
    depth = check_int("depth", depth, minimum=0)
    width = check_int("width", width, minimum=1)
    n_train = check_int("n_train", n_train, minimum=1)
    n_test = check_int("n_test", n_test, minimum=1)
    n_inputs = width if n_inputs is None else check_int("n_inputs", n_inputs, minimum=1)
    n_outputs = check_int("n_outputs", n_outputs, minimum=1)
    sigma_w = check_positive("sigma_w", sigma_w)
    sigma_b = check_nonnegative("sigma_b", sigma_b)
    noise = check_nonnegative("noise", noise)
    act = activations.get(activation)
    rng = np.random.default_rng(seed)
    sizes = [n_inputs] + [width] * depth + [n_outputs]
    layers = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
        W = rng.standard_normal((fan_in, fan_out)) * (sigma_w / np.sqrt(fan_in))
        b = rng.standard_normal(fan_out) * sigma_b
        layers.append((W, b))
    X = rng.standard_normal((n_train + n_test, n_inputs))
    a = X
    for i, (W, b) in enumerate(layers):
        h = a @ W + b
        a = h if i == len(layers) - 1 else act.value(h)
    Y = a + noise * rng.standard_normal(a.shape)
    info = {"depth": depth, "width": width, "n_inputs": n_inputs, "n_outputs": n_outputs,
            "activation": act.name, "sigma_w": sigma_w, "sigma_b": sigma_b, "noise": noise,
            "seed": seed}
    return Task("teacher_student", X[:n_train], Y[:n_train], X[n_train:], Y[n_train:],
                kind="regression", info=info)


def digits(test_fraction: float = 0.2, seed: int = 0) -> Task:
    """scikit-learn's bundled 8x8 handwritten digits (1797 images), pixels scaled to [0, 1].

    Needs scikit-learn: ``pip install 'neurosim[datasets]'``.
    """
    test_fraction = check_in_range("test_fraction", test_fraction, 0.0, 1.0, high_closed=False)
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise ImportError(
            "the digits task needs scikit-learn; install it with "
            "`pip install 'neurosim[datasets]'` (or `pip install scikit-learn`)"
        ) from exc
    data = load_digits()
    X = data.data.astype(np.float64) / 16.0
    rng = np.random.default_rng(seed)
    return _split(X, one_hot(data.target, 10), test_fraction, rng, "digits", "classification",
                  {"test_fraction": test_fraction, "seed": seed})


REGISTRY = {
    "xor": xor,
    "parity": parity,
    "two_spirals": two_spirals,
    "gaussian_blobs": gaussian_blobs,
    "teacher_student": teacher_student,
    "digits": digits,
}


def get(name: str, **kwargs) -> Task:
    """Build a task by registry name."""
    from ._validation import unknown_name_error

    if name not in REGISTRY:
        raise unknown_name_error("task", name, REGISTRY)
    return REGISTRY[name](**kwargs)

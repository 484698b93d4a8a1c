"""Registry of weight initializers (the names users type).

For a layer with ``fan_in`` inputs and ``fan_out`` outputs (``W`` has shape (fan_in, fan_out)):

==========  =================================================================================
name        weights
==========  =================================================================================
gaussian    ``N(0, sigma_w^2 / fan_in)`` (mean-field convention of Poole et al. 2016)
glorot      ``U[-s, s]``, ``s = sigma_w * sqrt(6 / (fan_in + fan_out))`` (Glorot & Bengio 2010,
            "normalized initialization"; variance ``2 sigma_w^2 / (fan_in + fan_out)``)
he          ``N(0, 2 sigma_w^2 / fan_in)`` (He et al. 2015)
orthogonal  ``sigma_w * Q``, ``Q`` Haar-random with orthonormal columns (fan_in >= fan_out)
            or rows (fan_in < fan_out), so every singular value is ``sigma_w`` (Saxe et al. 2014)
==========  =================================================================================

``sigma_w`` is a gain: with ``sigma_w = 1`` glorot and he are exactly the papers' schemes.
Every initializer draws biases ``N(0, sigma_b^2)`` (``sigma_b = 0``: zero biases, as in the
papers). Draws come from the generator passed in, layer by layer: ``W_1, b_1, W_2, ...``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ._validation import check_int, check_nonnegative, unknown_name_error


def gaussian(rng: np.random.Generator, fan_in: int, fan_out: int, sigma_w: float) -> np.ndarray:
    """``N(0, sigma_w^2 / fan_in)`` weights, shape (fan_in, fan_out)."""
    return rng.standard_normal((fan_in, fan_out)) * (sigma_w / np.sqrt(fan_in))


def glorot(rng: np.random.Generator, fan_in: int, fan_out: int, sigma_w: float) -> np.ndarray:
    """Glorot-uniform weights scaled by the gain ``sigma_w``."""
    limit = sigma_w * np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=(fan_in, fan_out))


def he(rng: np.random.Generator, fan_in: int, fan_out: int, sigma_w: float) -> np.ndarray:
    """He-normal weights ``N(0, 2 sigma_w^2 / fan_in)``."""
    return rng.standard_normal((fan_in, fan_out)) * (sigma_w * np.sqrt(2.0 / fan_in))


def orthogonal(rng: np.random.Generator, fan_in: int, fan_out: int,
               sigma_w: float) -> np.ndarray:
    """``sigma_w`` times a Haar-random matrix with orthonormal columns or rows."""
    tall = max(fan_in, fan_out)
    wide = min(fan_in, fan_out)
    q, r = np.linalg.qr(rng.standard_normal((tall, wide)))
    # Fixing the signs of R's diagonal makes Q Haar distributed (Mezzadri 2007).
    signs = np.sign(np.diag(r))
    signs[signs == 0] = 1.0
    q *= signs
    if fan_in < fan_out:
        q = q.T
    return sigma_w * np.ascontiguousarray(q)


INITIALIZERS: dict[str, Callable] = {
    "gaussian": gaussian,
    "glorot": glorot,
    "he": he,
    "orthogonal": orthogonal,
}


def names() -> tuple[str, ...]:
    """Registered initializer names."""
    return tuple(INITIALIZERS)


def get(name: str) -> Callable:
    """The initializer function registered under ``name``."""
    if not isinstance(name, str) or name not in INITIALIZERS:
        raise unknown_name_error("init", name, INITIALIZERS)
    return INITIALIZERS[name]


def initialize(name: str, sizes, sigma_w: float, sigma_b: float,
               rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """Draw ``(W_l, b_l)`` in float64 for every layer of a network with layer ``sizes``.

    Parameters
    ----------
    name : str
        Initializer name.
    sizes : sequence of int
        Layer widths ``n_0, ..., n_L``.
    sigma_w, sigma_b : float
        Weight gain and bias standard deviation (both >= 0).
    rng : numpy.random.Generator

    Returns
    -------
    list of (ndarray, ndarray)
        ``W_l`` of shape (n_{l-1}, n_l) and ``b_l`` of shape (n_l,), for l = 1..L.
    """
    draw = get(name)
    sigma_w = check_nonnegative("sigma_w", sigma_w)
    sigma_b = check_nonnegative("sigma_b", sigma_b)
    sizes = [check_int(f"sizes[{i}]", n, minimum=1) for i, n in enumerate(sizes)]
    layers = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
        W = draw(rng, fan_in, fan_out, sigma_w)
        b = rng.standard_normal(fan_out) * sigma_b
        layers.append((W, b))
    return layers

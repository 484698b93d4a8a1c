"""Argument checks shared by every public entry point.

Each check raises before any compute, with a message that names the parameter, the value it got
and what is allowed.
"""

from __future__ import annotations

import difflib
import numbers
from collections.abc import Iterable

import numpy as np

FLOAT_DTYPES = ("float32", "float64")


def unknown_name_error(kind: str, name: object, valid: Iterable[str]) -> ValueError:
    """Build the error for a name missing from a registry, listing the valid names."""
    valid = sorted(valid)
    hint = ""
    if isinstance(name, str):
        close = difflib.get_close_matches(name, valid, n=1)
        if close:
            hint = f" (did you mean {close[0]!r}?)"
    return ValueError(f"unknown {kind} {name!r}{hint}; valid names: {', '.join(valid)}")


def check_choice(param: str, value: object, allowed: Iterable[str]) -> str:
    allowed = list(allowed)
    if not isinstance(value, str) or value not in allowed:
        raise unknown_name_error(param, value, allowed)
    return value


def check_real(param: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{param} must be a real number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{param} must be finite, got {value!r}")
    return value


def check_positive(param: str, value: object) -> float:
    value = check_real(param, value)
    if value <= 0:
        raise ValueError(f"{param} must be > 0, got {value!r}")
    return value


def check_nonnegative(param: str, value: object) -> float:
    value = check_real(param, value)
    if value < 0:
        raise ValueError(f"{param} must be >= 0, got {value!r}")
    return value


def check_in_range(param: str, value: object, low: float, high: float, *,
                   low_closed: bool = True, high_closed: bool = True) -> float:
    value = check_real(param, value)
    ok_low = value >= low if low_closed else value > low
    ok_high = value <= high if high_closed else value < high
    if not (ok_low and ok_high):
        interval = ("[" if low_closed else "(") + f"{low}, {high}" + ("]" if high_closed else ")")
        raise ValueError(f"{param} must lie in {interval}, got {value!r}")
    return value


def check_int(param: str, value: object, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{param} must be an integer, got {value!r} ({type(value).__name__})")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{param} must be >= {minimum}, got {value!r}")
    return value


def check_dtype(param: str, value: object) -> np.dtype:
    try:
        dtype = np.dtype(value)
    except TypeError:
        dtype = None
    if dtype is None or dtype.name not in FLOAT_DTYPES:
        raise ValueError(f"{param} must be one of {FLOAT_DTYPES}, got {value!r}")
    return dtype


def check_sizes(param: str, sizes: object, minimum_length: int = 2) -> list[int]:
    """Layer sizes: a sequence of at least ``minimum_length`` positive integers."""
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Iterable):
        raise TypeError(f"{param} must be a sequence of positive integers, got {sizes!r}")
    sizes = list(sizes)
    if len(sizes) < minimum_length:
        raise ValueError(
            f"{param} needs at least {minimum_length} layer sizes (input and output), got {sizes!r}"
        )
    for i, n in enumerate(sizes):
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n <= 0:
            raise ValueError(f"{param}[{i}] must be a positive integer, got {n!r} in {sizes!r}")
    return [int(n) for n in sizes]


def check_data(param: str, array: object, n_features: int | None = None,
               dtype: np.dtype | None = None) -> np.ndarray:
    """A finite 2-D array (batch, features); a 1-D array is one sample."""
    try:
        arr = np.asarray(array)
    except Exception as exc:  # pragma: no cover - numpy's own message is kept
        raise TypeError(f"{param} must be array-like: {exc}") from exc
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"{param} must hold numbers, got dtype {arr.dtype}")
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ValueError(f"{param} must have shape (batch, features), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{param} is empty (shape {arr.shape}); need at least one sample")
    if n_features is not None and arr.shape[1] != n_features:
        raise ValueError(
            f"{param} has {arr.shape[1]} features (shape {arr.shape}) but the network expects "
            f"{n_features}"
        )
    if not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(f"{param} contains {bad} NaN or inf values; data must be finite")
    if dtype is not None:
        arr = np.ascontiguousarray(arr, dtype=dtype)
    return arr


def check_same_batch(x_param: str, X: np.ndarray, y_param: str, Y: np.ndarray) -> None:
    if X.shape[0] != Y.shape[0]:
        raise ValueError(
            f"{x_param} has {X.shape[0]} samples but {y_param} has {Y.shape[0]}; they must match"
        )

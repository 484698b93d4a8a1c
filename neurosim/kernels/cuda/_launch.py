"""Launch geometry, dtype dispatch and shape checks shared by the CUDA kernels.

Launch sizes are chosen once, at import: on a GPU they fill the device; under numba's CUDA
simulator (about 1 ms per simulated thread) they are tiny, which also makes every grid-stride loop
and tile tail run in the tests.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numba
import numpy as np
from numba import cuda

from ..._device import simulator_active

SIMULATOR = simulator_active()

#: threads per block of the 1-D elementwise kernels (a multiple of the warp size on a GPU)
BLOCK_1D = 8 if SIMULATOR else 256
#: most blocks an elementwise (grid-stride) launch uses
MAX_BLOCKS_1D = 2 if SIMULATOR else 8192
#: threads per block of row-wise reductions; a power of two
BLOCK_REDUCE = 4 if SIMULATOR else 256
#: most blocks a row-wise (grid-stride over rows) launch uses
MAX_BLOCKS_ROWS = 2 if SIMULATOR else 65535

_NUMBA_FLOATS = {np.dtype(np.float32): numba.float32, np.dtype(np.float64): numba.float64}


def numba_float(dtype) -> numba.types.Float:
    """The numba scalar type of a float32/float64 NumPy dtype."""
    dtype = np.dtype(dtype)
    if dtype not in _NUMBA_FLOATS:
        raise TypeError(f"CUDA kernels take float32 or float64 arrays, got dtype {dtype}")
    return _NUMBA_FLOATS[dtype]


def specialise(factory):
    """Memoise a kernel factory keyed by its (hashable) arguments: one compile per variant."""
    return lru_cache(maxsize=None)(factory)


def grid_1d(n: int) -> int:
    """Blocks for a grid-stride loop over ``n`` elements (``n`` > 0)."""
    return max(1, min(math.ceil(n / BLOCK_1D), MAX_BLOCKS_1D))


def grid_rows(n_rows: int) -> int:
    """Blocks for a one-block-per-row launch that strides over ``n_rows`` rows."""
    return max(1, min(n_rows, MAX_BLOCKS_ROWS))


def check_float_arrays(names: tuple[str, ...], arrays: tuple, dtype=None) -> np.dtype:
    """Check that arrays share one float dtype (``dtype`` if given) and return it."""
    dtype = np.dtype(arrays[0].dtype if dtype is None else dtype)
    numba_float(dtype)
    for name, arr in zip(names, arrays, strict=True):
        if np.dtype(arr.dtype) != dtype:
            raise TypeError(f"{name} has dtype {arr.dtype}; expected {dtype} like {names[0]}")
    return dtype


def check_shape(name: str, arr, shape: tuple[int, ...]) -> None:
    """Raise ValueError unless ``arr.shape == shape`` (a device kernel would read out of bounds)."""
    if tuple(arr.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(arr.shape)}; expected {tuple(shape)}")


def is_device_array(obj) -> bool:
    """True for a numba device array (real or simulated) or any CUDA-array-interface object."""
    return bool(getattr(obj, "__cuda_ndarray__", False)) or hasattr(
        obj, "__cuda_array_interface__"
    )


def device_params(params, dtype):
    """Activation parameters, shape (3,), as a device array of ``dtype``.

    A device array passes through (it must already have ``dtype``: learnable parameters live on
    the device); a host array is converted and copied over.
    """
    check_shape("params", params, (3,))
    if is_device_array(params):
        if np.dtype(params.dtype) != np.dtype(dtype):
            raise TypeError(f"params has dtype {params.dtype}; expected {np.dtype(dtype)}")
        return params
    return cuda.to_device(np.asarray(params, dtype=dtype))

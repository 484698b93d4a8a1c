"""Dtype-preserving constants for kernels.

A Python float literal inside a float32 kernel promotes the expression to float64. ``like(x, c)``
returns the constant ``c`` in the floating type of ``x`` (a scalar or an array), so
``like(x, 0.5) * x`` stays float32 when ``x`` is float32.
"""

from numba import types
from numba.extending import overload
from numba.np.numpy_support import as_dtype


def like(x, value):
    """Return ``value`` cast to the floating type of ``x`` (plain Python fallback)."""
    dtype = getattr(x, "dtype", None)
    return dtype.type(value) if dtype is not None else type(x)(value)


@overload(like, inline="always")
def _like_overload(x, value):
    if isinstance(x, types.Array):
        cast = as_dtype(x.dtype).type
    elif isinstance(x, types.Float):
        cast = as_dtype(x).type
    else:
        return None

    def impl(x, value):
        return cast(value)

    return impl

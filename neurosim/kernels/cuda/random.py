"""Device random numbers from numba's xoroshiro128+ states, float32-pure where asked for.

numba's float32 draws convert through float64, which costs float64 instructions in otherwise
float32 kernels; these stay in float32: 24 random bits per uniform, and normals by Marsaglia's
polar method (no trigonometric function, whose slow path uses float64).
"""

import math

from numba import cuda, float32, uint32
from numba.cuda.random import (
    xoroshiro128p_next,
    xoroshiro128p_normal_float64,
    xoroshiro128p_uniform_float64,
)

__all__ = ["uniform_float32", "normal_float32", "uniform_for", "normal_for"]

_TWO_POW_M24 = float32(1.0 / (1 << 24))


@cuda.jit(device=True, inline="always")
def uniform_float32(states, index):
    """A float32 uniform on [0, 1) from the top 24 bits of the next state output."""
    return float32(xoroshiro128p_next(states, index) >> uint32(40)) * _TWO_POW_M24


@cuda.jit(device=True)
def normal_float32(states, index):
    """A standard normal float32 (Marsaglia's polar method: no trigonometric slow paths)."""
    one = float32(1.0)
    two = float32(2.0)
    while True:
        u = two * uniform_float32(states, index) - one
        v = two * uniform_float32(states, index) - one
        s = u * u + v * v
        if s < one and s > float32(0.0):
            return u * math.sqrt(float32(-2.0) * math.log(s) / s)


def uniform_for(dtype_name):
    """The uniform device draw for a dtype name."""
    return uniform_float32 if dtype_name == "float32" else xoroshiro128p_uniform_float64


def normal_for(dtype_name):
    """The standard-normal device draw for a dtype name."""
    return normal_float32 if dtype_name == "float32" else xoroshiro128p_normal_float64

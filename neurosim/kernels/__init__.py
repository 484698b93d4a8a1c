"""Pure-array Numba kernels (CPU). No classes, no config objects, no I/O."""

from . import _cache  # noqa: F401  (before any kernel: their cache entries follow all sources)

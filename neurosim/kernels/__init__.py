"""Pure-array Numba kernels (CPU). No classes, no config objects, no I/O."""

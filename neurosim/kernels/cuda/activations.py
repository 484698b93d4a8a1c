"""CUDA twins of :mod:`neurosim.kernels.activations`.

``phi``, ``dphi`` and ``d2phi`` *are* the CPU scalar kernels: numba's CUDA target compiles a
CPU ``@njit`` function called from a kernel as a device function (the CPU module writes its
transcendental functions as ``math.exp``/``math.tanh``/... and its constants through
:func:`~neurosim.kernels.scalar.like`, which both targets compile, so float32 stays float32 on
the device; ``tests/test_cuda_ptx.py`` checks the PTX). One definition serves both devices, so
the formulas cannot drift apart. ``apply_phi``, ``apply_dphi`` and ``apply_d2phi`` launch
elementwise kernels over 1-D device arrays; ``params`` is a (3,) array on the device or the
host.
"""

from numba import cuda

from ..activations import d2phi, dphi, phi
from ._launch import BLOCK_1D, check_float_arrays, check_shape, device_params, grid_1d

__all__ = ["phi", "dphi", "d2phi", "apply_phi", "apply_dphi", "apply_d2phi"]


@cuda.jit
def _phi_kernel(code, params, h, out):
    p0, p1, p2 = params[0], params[1], params[2]
    for i in range(cuda.grid(1), h.shape[0], cuda.gridsize(1)):
        out[i] = phi(code, h[i], p0, p1, p2)


@cuda.jit
def _dphi_kernel(code, params, h, a, out):
    p0, p1, p2 = params[0], params[1], params[2]
    for i in range(cuda.grid(1), h.shape[0], cuda.gridsize(1)):
        out[i] = dphi(code, h[i], a[i], p0, p1, p2)


@cuda.jit
def _d2phi_kernel(code, params, h, a, out):
    p0, p1, p2 = params[0], params[1], params[2]
    for i in range(cuda.grid(1), h.shape[0], cuda.gridsize(1)):
        out[i] = d2phi(code, h[i], a[i], p0, p1, p2)


def _check(params, arrays, names):
    dtype = check_float_arrays(names, arrays)
    for name, arr in zip(names, arrays, strict=True):
        if arr.ndim != 1:
            raise ValueError(f"{name} must be 1-D, got shape {tuple(arr.shape)}")
        check_shape(name, arr, arrays[0].shape)
    return device_params(params, dtype)


def apply_phi(code, params, h, out):
    """Elementwise ``out[i] = phi(h[i])`` on the device; 1-D arrays, ``params`` shape (3,)."""
    params = _check(params, (h, out), ("h", "out"))
    if h.shape[0]:
        _phi_kernel[grid_1d(h.shape[0]), BLOCK_1D](code, params, h, out)


def apply_dphi(code, params, h, a, out):
    """Elementwise ``out[i] = phi'(h[i])`` given ``a = phi(h)`` on the device; 1-D arrays."""
    params = _check(params, (h, a, out), ("h", "a", "out"))
    if h.shape[0]:
        _dphi_kernel[grid_1d(h.shape[0]), BLOCK_1D](code, params, h, a, out)


def apply_d2phi(code, params, h, a, out):
    """Elementwise ``out[i] = phi''(h[i])`` given ``a = phi(h)`` on the device; 1-D arrays."""
    params = _check(params, (h, a, out), ("h", "a", "out"))
    if h.shape[0]:
        _d2phi_kernel[grid_1d(h.shape[0]), BLOCK_1D](code, params, h, a, out)


def _signatures(dt, int_t, bool_t):
    v = dt[::1]
    return [("apply_phi", _phi_kernel.py_func, (int_t, v, v, v)),
            ("apply_dphi", _dphi_kernel.py_func, (int_t, v, v, v, v)),
            ("apply_d2phi", _d2phi_kernel.py_func, (int_t, v, v, v, v))]

"""Compute-device resolution: ``device="cpu"`` or ``device="cuda"``.

``numba.cuda`` is imported only when a CUDA path is asked for, so ``import neurosim`` and every
CPU model never touch it. A CUDA request on a machine without a usable CUDA device raises
:class:`CudaUnavailableError`; there is never a silent fallback to the CPU.

Tests select numba's CUDA simulator by setting ``NUMBA_ENABLE_CUDASIM=1`` before numba is first
imported; the simulator then counts as an available (very slow) device.
"""

from __future__ import annotations

from ._validation import check_choice

DEVICES = ("cpu", "cuda")

INSTALL_HINT = (
    'install an NVIDIA driver and the CUDA extra: pip install "neurosim[cuda]" (or use '
    'device="cpu")'
)


class CudaUnavailableError(RuntimeError):
    """``device="cuda"`` was asked for but no CUDA device can be used."""


def resolve_device(device: object) -> str:
    """Validate a device name and, for ``"cuda"``, check that a device is usable.

    Parameters
    ----------
    device : str
        ``"cpu"`` or ``"cuda"``.

    Returns
    -------
    str
        The device name.

    Raises
    ------
    ValueError
        Unknown device name.
    CudaUnavailableError
        ``"cuda"`` with no CUDA device (and no simulator), or without numba's CUDA support.
    """
    device = check_choice("device", device, DEVICES)
    if device == "cuda":
        cuda_api()
    return device


def cuda_api():
    """The ``numba.cuda`` module, imported on first use, after checking a device is usable.

    Raises
    ------
    CudaUnavailableError
        numba's CUDA support is missing or no CUDA device (and no simulator) is found.
    """
    try:
        from numba import cuda
    except ImportError as exc:  # numba built without CUDA support and numba-cuda absent
        raise CudaUnavailableError(
            f'device="cuda" needs numba\'s CUDA support, which failed to import ({exc}); '
            + INSTALL_HINT
        ) from exc
    if not cuda.is_available():
        raise CudaUnavailableError(
            'device="cuda" was requested but no CUDA device was found (numba.cuda.is_available() '
            "is False: no NVIDIA GPU, no driver, or a CUDA toolkit numba cannot load); "
            + INSTALL_HINT
        )
    return cuda


def simulator_active() -> bool:
    """True when numba's CUDA simulator is selected (``NUMBA_ENABLE_CUDASIM=1`` at numba import)."""
    from numba.core import config

    return bool(config.ENABLE_CUDASIM)

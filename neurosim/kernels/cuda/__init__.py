"""CUDA twins of the CPU kernels, through numba's CUDA target (optional: ``neurosim[cuda]``).

Each module mirrors the CPU module of the same name: same function names, same argument order,
arrays on the device. Importing this package imports ``numba.cuda``; nothing on a CPU path imports
it (models import it only for ``device="cuda"``, through :mod:`neurosim._device`).

Modules: ``activations`` (device functions phi/dphi/d2phi and apply_* kernels), ``losses``,
``gemm`` (tiled matrix product and matrix-vector kernel with fused epilogues), ``reduce``
(deterministic norms), ``dense``, ``optim`` and ``mlp_train`` (MLP training), ``rate`` and
``rules`` (rate networks), ``random`` (float32-pure device random numbers).
"""

from importlib import import_module

_MODULES = ("activations", "losses", "gemm", "reduce", "dense", "optim", "mlp_train", "rate",
            "rules", "random")


def __getattr__(name):
    if name in _MODULES:
        return import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def kernel_signatures(dt, int_t, bool_t):
    """Every kernel with one representative argument-type tuple for float type ``dt``.

    Used to compile all kernels ahead of time (``tests/test_cuda_ptx.py`` checks that each compiles
    for a GPU and that float32 kernels contain no float64 instruction).

    Returns
    -------
    list of (name, python function, tuple of numba types)
    """
    out = []
    for module_name in _MODULES:
        module = import_module(f"{__name__}.{module_name}")
        describe = getattr(module, "_signatures", None)
        if describe is not None:
            for name, func, args in describe(dt, int_t, bool_t):
                out.append((f"{module_name}.{name}", func, args))
    return out

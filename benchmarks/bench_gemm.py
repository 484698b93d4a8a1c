"""The engine's small matrix products: neurosim's block kernels against BLAS, in one process.

For each (m, k, n) and float type, the three products of a dense layer's training step, all
called from compiled code the way the engine calls them:

- ``forward``: ``h = a @ W`` (``a`` (m, k), ``W`` (k, n), both C-contiguous);
- ``weight grad``: ``dW = a.T @ delta`` (``a`` (k, m) read transposed, ``delta`` (k, n)): the
  shapes are given as the product's (m, k, n);
- ``error below``: ``g = delta @ W.T`` (``W`` (n, k) read transposed, packed into panels).

Candidates: :func:`neurosim.kernels.smallgemm.matmul_into` and ``np.dot`` inside ``@njit``
(SciPy's OpenBLAS, the library the engine would otherwise call), both single-threaded
(threadpoolctl), timed in alternating rounds; GFLOP/s from medians (2 m k n FLOPs).

Run: ``python benchmarks/bench_gemm.py`` (``--help`` for options).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(_HERE), _HERE]

from _common import format_table, interleaved, machine_summary, pin_threads  # noqa: E402

SHAPES = [(32, 64, 64), (64, 128, 128), (64, 256, 256), (128, 256, 256)]
# --large: the products of wide layers and big batches (a (10, 1024, 256) training step has
# 128 x 1024 x 1024 shards), where the AVX-512 kernels still take them.
LARGE_SHAPES = [(128, 512, 512), (128, 1024, 1024), (256, 1024, 1024), (64, 2048, 2048)]


def _loops():
    from numba import njit

    from neurosim.kernels.smallgemm import matmul_into

    @njit(cache=True)
    def ours(a, b, c, reps):
        for _ in range(reps):
            matmul_into(a, b, c)

    @njit(cache=True)
    def blas(a, b, c, reps):
        for _ in range(reps):
            np.dot(a, b, c)

    return ours, blas


def operands(kind, m, k, n, dtype, rng):
    """``(a, b, c)`` of one product kind with result shape (m, n) and shared dimension k."""
    if kind == "forward":
        a, b = rng.standard_normal((m, k)), rng.standard_normal((k, n))
    elif kind == "weight grad":
        a, b = rng.standard_normal((k, m)).T, rng.standard_normal((k, n))
    else:
        a, b = rng.standard_normal((m, k)), rng.standard_normal((n, k)).T
    # astype keeps the memory order: the transposed views stay column-major
    return a.astype(dtype), b.astype(dtype), np.empty((m, n), dtype)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=30, help="timed calls per candidate")
    parser.add_argument("--large", action="store_true",
                        help="also the products of wide layers (LARGE_SHAPES)")
    args = parser.parse_args(argv)
    from neurosim.kernels.smallgemm import ENABLED, VECTOR_BYTES

    print(f"# bench_gemm: {machine_summary(1)}; block kernels enabled: {ENABLED} "
          f"({VECTOR_BYTES}-byte vectors)", flush=True)
    ours, blas = _loops()
    rng = np.random.default_rng(0)
    rows = []
    with pin_threads(1):
        for dtype in (np.float32, np.float64):
            for m, k, n in SHAPES + (LARGE_SHAPES if args.large else []):
                for kind in ("forward", "weight grad", "error below"):
                    a, b, c = operands(kind, m, k, n, dtype, rng)
                    reps = max(1, int(2e8 // (2 * m * k * n)))
                    args_ = (a, b, c, reps)
                    res = interleaved({"neurosim": lambda x=args_: ours(*x),
                                       "blas": lambda x=args_: blas(*x)},
                                      samples=args.samples, rounds=5, warmup=2)
                    rate = {name: 2.0 * m * k * n * reps / r["median"] / 1e9
                            for name, r in res.items()}
                    rows.append([np.dtype(dtype).name, f"{m} x {k} x {n}", kind,
                                 f"{rate['neurosim']:.0f}", f"{rate['blas']:.0f}",
                                 f"{rate['neurosim'] / rate['blas']:.2f}x"])
    print(format_table(["dtype", "m x k x n", "product", "neurosim GFLOP/s", "BLAS GFLOP/s",
                        "ratio"], rows))


if __name__ == "__main__":
    main()

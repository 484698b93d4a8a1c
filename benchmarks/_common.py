"""Shared benchmark utilities: thread pinning, interleaved timing, GEMM rate, tables.

Benchmarks compare neurosim with peers (NumPy, PyTorch) in one process, so every library must
use the same number of threads: :func:`pin_threads` limits the BLAS and OpenMP pools through
threadpoolctl and sets PyTorch's intra-op threads. Shared machines are noisy, so
:func:`interleaved` times the candidates in alternating rounds and reports medians: slow
phases of the machine then hit every candidate alike and the ratios stay meaningful.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np


@contextlib.contextmanager
def pin_threads(n: int):
    """Limit BLAS/OpenMP pools (threadpoolctl) and PyTorch (if imported) to ``n`` threads.

    threadpoolctl only sees libraries already loaded, so the BLAS that numba's ``np.dot``
    calls (SciPy's) is loaded first.
    """
    import scipy.linalg.cython_blas  # noqa: F401
    from threadpoolctl import threadpool_limits

    torch_threads = None
    torch = _torch_if_loaded()
    if torch is not None:
        torch_threads = torch.get_num_threads()
        torch.set_num_threads(n)
    with threadpool_limits(limits=n):
        try:
            yield
        finally:
            if torch is not None:
                torch.set_num_threads(torch_threads)


def _torch_if_loaded():
    import sys

    return sys.modules.get("torch")


def try_import_torch():
    """PyTorch, or None when it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def time_calls(fn: Callable[[], object], n: int) -> list[float]:
    """Wall-clock seconds of ``n`` consecutive calls of ``fn``, one sample per call."""
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return samples


def interleaved(candidates: dict[str, Callable[[], object]], *, samples: int = 60,
                rounds: int = 6, warmup: int = 5, max_seconds: float = 60.0,
                per_call: dict[str, int] | None = None, settle: float = 0.0) -> dict[str, dict]:
    """Time several candidates in alternating rounds.

    Parameters
    ----------
    candidates : dict of name -> callable
        Each call runs ``per_call[name]`` units of work (default 1; e.g. training steps).
    samples : int
        Units of work timed per candidate in total (split over ``rounds``, at least one call
        per round); at least 50 for the reports.
    rounds : int
        Rounds of alternation.
    warmup : int
        Untimed units of work per candidate before the first round (rounded up to whole
        calls).
    max_seconds : float
        Stop adding rounds (keeping at least one) once a candidate has used this much time.
    per_call : dict of name -> int, optional
        Units of work per call; times are divided by it.
    settle : float
        Seconds of sleep before each candidate's turn, so that the spinning worker threads of
        the previous candidate's BLAS or OpenMP pool do not take the cores from the next one.

    Returns
    -------
    dict of name -> {"median", "q1", "q3", "n"} (seconds per unit of work; ``n`` units timed)
    """
    per_call = per_call or {}
    for name, fn in candidates.items():
        for _ in range(-(-warmup // per_call.get(name, 1))):
            fn()
    collected = {name: [] for name in candidates}
    spent = dict.fromkeys(candidates, 0.0)
    for r in range(rounds):
        for name, fn in candidates.items():
            if r > 0 and spent[name] > max_seconds:
                continue
            k = per_call.get(name, 1)
            time.sleep(settle)
            got = time_calls(fn, max(1, -(-samples // (k * rounds))))
            spent[name] += sum(got)
            collected[name].extend(t / k for t in got)
    out = {}
    for name, values in collected.items():
        q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
        out[name] = {"median": statistics.median(values), "q1": q[0], "q3": q[2],
                     "n": len(values) * per_call.get(name, 1)}
    return out


def mlp_sizes(D: int, H: int) -> list[int]:
    """Layer widths of the benchmark MLP: input H, D hidden tanh layers of width H, 10 outputs."""
    return [H] + [H] * D + [10]


def mlp_flops(D: int, H: int, B: int) -> float:
    """FLOPs of one training step of that MLP on a batch of B: 6 x B x sum(fan_in x fan_out)."""
    sizes = mlp_sizes(D, H)
    return 6.0 * B * sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))


def torch_mlp_step(torch, D: int, H: int, X, Y, lr: float) -> Callable[[], object]:
    """One PyTorch eager SGD step (forward, mse = batch mean of 0.5||yhat - y||^2, backward,
    update) of the benchmark MLP, on the device of the tensors ``X`` (B, H) and ``Y`` (B, 10)."""
    torch.manual_seed(0)
    sizes = mlp_sizes(D, H)
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(torch.nn.Tanh())
    model = torch.nn.Sequential(*layers).to(device=X.device, dtype=X.dtype)
    opt = torch.optim.SGD(model.parameters(), lr=lr)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = 0.5 * ((model(X) - Y) ** 2).sum(dim=1).mean()
        loss.backward()
        opt.step()

    return step


def square_operands(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two random float32 ``n x n`` matrices and an output buffer for their product."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, n)).astype(np.float32)
    b = rng.standard_normal((n, n)).astype(np.float32)
    return a, b, np.empty((n, n), np.float32)


def numba_product(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> Callable[[], object]:
    """``out = a @ b`` through ``np.dot`` inside ``@njit``: the BLAS (SciPy's) that neurosim's
    kernels call."""
    from numba import njit

    @njit(cache=True)
    def _dot(a, b, out):
        np.dot(a, b, out)

    return lambda: _dot(a, b, out)


def block_kernel_product(a: np.ndarray, b: np.ndarray, out: np.ndarray,
                         threads: int) -> Callable[[], object] | None:
    """``out = a @ b`` through neurosim's own block kernels
    (:func:`neurosim.kernels.smallgemm.matmul_part_into`), the columns split into ``threads``
    parts of whole panels, one per thread; None where the block kernels are disabled."""
    from numba import njit

    from neurosim.kernels.smallgemm import ENABLED, matmul_part_into, panel_width
    from neurosim.train import _run_team

    if not ENABLED:
        return None

    @njit(cache=True, nogil=True)
    def _columns(a, b, out, lo, hi):
        matmul_part_into(a, b[:, lo:hi], out[:, lo:hi])

    panels = b.shape[1] // panel_width(a.itemsize)
    bounds = [b.shape[1] * (panels * t // threads) // panels for t in range(threads + 1)]
    return lambda: _run_team(threads, lambda t: _columns(a, b, out, bounds[t], bounds[t + 1]))


def gemm_rates(n: int = 2048, threads: int = 2, repeats: int = 7) -> dict[str, float]:
    """Float32 GEMM rate (FLOP/s) of an ``n x n x n`` product through each available BLAS and
    through neurosim's block kernels.

    Keys: ``"numba"`` (:func:`numba_product`), ``"numpy"``, ``"torch"`` when installed and
    ``"neurosim"`` (:func:`block_kernel_product`) where the block kernels run. Medians of
    ``repeats`` after a warm-up.
    """
    a, b, out = square_operands(n)
    flops = 2.0 * n**3
    fns = {"numba": numba_product(a, b, out), "numpy": lambda: np.matmul(a, b, out=out)}
    ours = block_kernel_product(a, b, out, threads)
    if ours is not None:
        fns["neurosim"] = ours
    torch = try_import_torch()
    if torch is not None:
        ta, tb, tout = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(out)
        fns["torch"] = lambda: torch.mm(ta, tb, out=tout)
    with pin_threads(threads):
        res = interleaved(fns, samples=repeats * 3, rounds=3, warmup=2)
    return {name: flops / r["median"] for name, r in res.items()}


def machine_summary(threads: int) -> str:
    """One line describing the machine and library versions."""
    import numba

    parts = [platform.processor() or platform.machine(), f"{os.cpu_count()} cpus",
             f"threads={threads}", f"numpy {np.__version__}", f"numba {numba.__version__}"]
    torch = try_import_torch()
    if torch is not None:
        parts.append(f"torch {torch.__version__}")
    with contextlib.suppress(Exception):
        load = os.getloadavg()[0]
        parts.append(f"load {load:.1f}")
    return ", ".join(parts)


def format_table(headers: list[str], rows: list[list[object]]) -> str:
    """A Markdown table (numbers already formatted by the caller)."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) + " |"
            for r in cells]
    return "\n".join([line, rule, *body])


def fmt_time(seconds: float) -> str:
    """Seconds as a short string in us / ms / s."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    if seconds < 1.0:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"

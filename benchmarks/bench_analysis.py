"""Propagation probes: neurosim's ``propagation_profile`` against PyTorch autograd.

A probe measures, for every layer of a depth-100, width-256 tanh MLP on a batch of 64,
``||dL/dW_l||_F`` and the batch-mean ``||delta_l||`` (mse loss). Candidates, timed in
alternating rounds (medians) with BLAS, OpenMP and PyTorch limited to the same number of
threads:

- ``neurosim profile``: :func:`neurosim.analysis.propagation_profile` on ``threads`` threads,
  the full result (norms, ratios, exponential fits, mean-field theory beside);
- ``neurosim profile, no theory``: the same with ``theory=False``;
- ``neurosim fwd+bwd``: :meth:`neurosim.MLP.gradients`, one forward and one backward pass of the
  compiled engine (the cost the profile must not exceed);
- ``torch``: eager autograd, ``retain_grad`` on every pre-activation, ``backward``, then the
  per-parameter ``.grad`` norms and per-layer delta norms.

Sweep: 20 weight scales in [0.5, 3] x 3 seeds, each a fresh network and one probe.
``neurosim sweep`` is :func:`neurosim.analysis.propagation.propagation_sweep` (one
initialisation per seed, weights rescaled per scale: the same networks; as many probes at a
time as threads, each on one thread); ``torch sweep`` builds every network from scratch, as a
PyTorch user would; ``torch sweep, rescaled`` gives PyTorch the same reuse of random draws.

Targets (issue 4): profile >= 1.5x faster than torch, sweep >= 2x.

Run: ``python benchmarks/bench_analysis.py`` (``--help`` for options).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

_HERE = os.path.dirname(os.path.abspath(__file__))
# The working tree's neurosim, not an installed copy that may be older than it.
sys.path[:0] = [os.path.dirname(_HERE), _HERE]

from _common import (  # noqa: E402
    fmt_time,
    format_table,
    interleaved,
    machine_summary,
    pin_threads,
    try_import_torch,
)

DEPTH, WIDTH, BATCH, N_OUT = 100, 256, 64, 10
SIGMA_B = 0.05
SWEEP_SIGMAS = np.linspace(0.5, 3.0, 20)
SWEEP_SEEDS = (0, 1, 2)
TARGET_PROFILE, TARGET_SWEEP = 1.5, 2.0


def sizes():
    return [WIDTH] + [WIDTH] * DEPTH + [N_OUT]


def batch(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((BATCH, WIDTH)).astype(dtype),
            rng.standard_normal((BATCH, N_OUT)).astype(dtype))


def torch_probe(torch, Ws, bs, X, Y):
    """Autograd probe: per-parameter .grad norms and per-layer batch-mean delta norms."""
    a, hs = X, []
    for l, (W, b) in enumerate(zip(Ws, bs, strict=True)):
        h = torch.addmm(b, a, W)
        h.retain_grad()
        hs.append(h)
        a = torch.tanh(h) if l < len(Ws) - 1 else h
    loss = 0.5 * ((a - Y) ** 2).sum(dim=1).mean()
    for p in (*Ws, *bs):
        p.grad = None
    loss.backward()
    with torch.no_grad():
        grad = torch.stack([W.grad.norm() for W in Ws]).numpy()
        bias = torch.stack([b.grad.norm() for b in bs]).numpy()
        delta = torch.stack([h.grad.norm(dim=1).mean() for h in hs]).numpy()
    return loss.item(), grad, bias, delta


def torch_params(torch, sigma_w, seed, dtype, base=None):
    """Gaussian init N(0, sigma_w^2 / fan_in), N(0, sigma_b^2) from a seeded generator."""
    if base is None:
        gen = torch.Generator().manual_seed(seed)
        s = sizes()
        Ws = [torch.randn(a, b, generator=gen, dtype=dtype) * (sigma_w / np.sqrt(a))
              for a, b in zip(s[:-1], s[1:], strict=True)]
        bs = [torch.randn(b, generator=gen, dtype=dtype) * SIGMA_B for b in s[1:]]
    else:
        Ws = [w * sigma_w for w in base[0]]
        bs = [b.clone() for b in base[1]]
    for p in (*Ws, *bs):
        p.requires_grad_(True)
    return Ws, bs


def profile_rows(torch, dtype, threads, samples):
    import neurosim as ns
    from neurosim.analysis import propagation_profile

    X, Y = batch(dtype)
    net = ns.MLP(sizes(), activation="tanh", sigma_w=1.0, sigma_b=SIGMA_B, seed=0, dtype=dtype)
    tdt = torch.float64 if dtype == "float64" else torch.float32
    Ws = [torch.tensor(w.copy(), dtype=tdt, requires_grad=True) for w in net.weights]
    bs = [torch.tensor(b.copy(), dtype=tdt, requires_grad=True) for b in net.biases]
    tX, tY = torch.from_numpy(X), torch.from_numpy(Y)
    prof = propagation_profile(net, X, Y)
    _, grad, _, delta = torch_probe(torch, Ws, bs, tX, tY)
    tol = 1e-9 if dtype == "float64" else 1e-3
    np.testing.assert_allclose(prof.grad_norms, grad, rtol=tol)
    np.testing.assert_allclose(prof.delta_norms, delta, rtol=tol)
    cands = {
        "neurosim profile": lambda: propagation_profile(net, X, Y, threads=threads),
        "neurosim profile, no theory": lambda: propagation_profile(net, X, Y, theory=False,
                                                                   threads=threads),
        "neurosim fwd+bwd": lambda: net.gradients(X, Y),
        "torch": lambda: torch_probe(torch, Ws, bs, tX, tY),
    }
    with pin_threads(threads):
        res = interleaved(cands, samples=samples, rounds=5, warmup=3, max_seconds=60.0,
                          settle=0.2)
    ref = res["torch"]["median"]
    rows = [[name, dtype, threads, fmt_time(r["median"]), f"{ref / r['median']:.2f}x", r["n"]]
            for name, r in res.items()]
    prof = res["neurosim profile"]["median"]
    return rows, ref / prof, res["neurosim fwd+bwd"]["median"] / prof


def sweep_rows(torch, dtype, threads, repeats):
    from neurosim.analysis.propagation import propagation_sweep

    X, Y = batch(dtype)
    tdt = torch.float64 if dtype == "float64" else torch.float32
    tX, tY = torch.from_numpy(X), torch.from_numpy(Y)

    def ns_sweep():
        return propagation_sweep(sizes(), SWEEP_SIGMAS, SWEEP_SEEDS, X, Y, activation="tanh",
                                 sigma_b=SIGMA_B, dtype=dtype, threads=threads)

    def torch_sweep():
        for seed in SWEEP_SEEDS:
            for s in SWEEP_SIGMAS:
                torch_probe(torch, *torch_params(torch, s, seed, tdt), tX, tY)

    def torch_sweep_rescaled():
        for seed in SWEEP_SEEDS:
            base = [[p.detach() for p in group]
                    for group in torch_params(torch, 1.0, seed, tdt)]
            for s in SWEEP_SIGMAS:
                torch_probe(torch, *torch_params(torch, s, seed, tdt, base), tX, tY)

    cands = {"neurosim sweep": ns_sweep, "torch sweep": torch_sweep,
             "torch sweep, rescaled": torch_sweep_rescaled}
    with pin_threads(threads):
        res = interleaved(cands, samples=repeats, rounds=repeats, warmup=1, settle=0.2,
                          max_seconds=300.0)
    ref = res["torch sweep"]["median"]
    rows = [[name, dtype, threads, fmt_time(r["median"]), f"{ref / r['median']:.2f}x", r["n"]]
            for name, r in res.items()]
    return rows, ref / res["neurosim sweep"]["median"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", default="1,2",
                        help="comma-separated thread counts (default 1,2)")
    parser.add_argument("--dtypes", default="float64,float32")
    parser.add_argument("--samples", type=int, default=50,
                        help="timed profile calls per candidate (default 50)")
    parser.add_argument("--sweep-repeats", type=int, default=3)
    parser.add_argument("--no-sweep", action="store_true")
    parser.add_argument("--no-profile", action="store_true", help="only the sweep")
    args = parser.parse_args(argv)
    torch = try_import_torch()
    if torch is None:
        sys.exit("PyTorch is the peer of this benchmark: pip install 'neurosim[bench]'")
    threads = [int(t) for t in args.threads.split(",")]
    dtypes = args.dtypes.split(",")
    import neurosim

    print(f"# propagation probe: depth {DEPTH}, width {WIDTH}, batch {BATCH}, tanh, mse")
    print(f"# neurosim from {os.path.dirname(neurosim.__file__)}")
    print(machine_summary(max(threads)))
    headers = ["candidate", "dtype", "threads", "median", "vs torch", "n"]
    verdicts = []
    costs = []
    rows = []
    if not args.no_profile:
        for dtype in dtypes:
            for t in threads:
                r, speed, engine = profile_rows(torch, dtype, t, args.samples)
                rows += r
                verdicts.append(("profile", dtype, t, speed, TARGET_PROFILE))
                costs.append((dtype, t, engine))
        print(format_table(headers, rows))
    if not args.no_sweep:
        print(f"\n# sweep: {SWEEP_SIGMAS.size} sigma_w x {len(SWEEP_SEEDS)} seeds")
        rows = []
        for dtype in dtypes:
            for t in threads:
                r, speed = sweep_rows(torch, dtype, t, args.sweep_repeats)
                rows += r
                verdicts.append(("sweep", dtype, t, speed, TARGET_SWEEP))
        print(format_table(headers, rows))
    print()
    for dtype, t, engine in costs:
        status = "met" if engine >= 1.0 else "NOT met"
        print(f"profile  {dtype} threads={t}: engine fwd+bwd / profile = {engine:.2f} "
              f"(target >= 1: costs no more than one forward + backward) {status}")
    for what, dtype, t, speed, target in verdicts:
        status = "met" if speed >= target else "NOT met"
        print(f"{what:8s} {dtype} threads={t}: {speed:.2f}x vs torch (target {target}x) {status}")


if __name__ == "__main__":
    main()

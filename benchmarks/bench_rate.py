"""Rate-network simulation speed against NumPy, PyTorch and (when installed) Brian2 and ANNarchy.

Workloads (issue 3), all float64, forward Euler:

- W3: recurrent network of n neurons, fully connected, ``tau dr/dt = -r + r_max sigmoid(J r + I)``,
  tau = 10 ms, dt = 0.1 ms, gain 1.5 (``J ~ N(0, 1.5^2 / n)``), one trial, 10,000 steps, for
  n in {100, 1000, 4000};
- W3sim: W3 with n = 1000 in the dedicated simulators Brian2 (Cython target, synapses summed into
  the neuron group) and ANNarchy (rate-coded population, dense all-to-all projection, explicit
  Euler), beside neurosim and NumPy; code generation and compilation are excluded;
- W3b: the same with 64 trials at once, n = 1000, 2,000 steps;
- W4: layered network of 10 layers x 256 neurons relaxing for 200 Euler steps, batch 64.

Every implementation runs the same update from the same state, and the table shows how far
their final states differ. Peers run in the same process with the same thread count (BLAS and
OpenMP pools pinned with threadpoolctl, ``torch.set_num_threads``, ANNarchy's ``num_threads``;
Brian2's Cython target is single-threaded); samples are interleaved and medians reported. Times
are per full workload; long runs are timed on fewer steps and scaled (the cost per step is
constant, and the label says so, e.g. ``(500 steps x4)``).

With ``--threads 2`` the BLAS products of every candidate use both cores, while NumPy's and
neurosim's elementwise work stays on one thread (PyTorch's may use two).

Brian2 and ANNarchy are not dependencies: install them in a separate virtual environment
(README, "Development") and run this script with that environment's interpreter::

    python -m venv --system-site-packages ~/neurosim-peers
    ~/neurosim-peers/bin/pip install brian2 ANNarchy "numpy<2.4"   # ANNarchy needs g++, cmake
    NUMBA_CACHE_DIR=/tmp/peers-numba-cache ~/neurosim-peers/bin/python \
        benchmarks/bench_rate.py --only W3sim

(``numpy<2.4``: Brian2 2.9.0 fails to import on NumPy 2.4, which removed ``ndarray.ptp``.)

Run::

    python benchmarks/bench_rate.py             # W3, W3b, W4 (and W3sim when importable), 1 thread
    python benchmarks/bench_rate.py --threads 2
    python benchmarks/bench_rate.py --only W3b  # one workload
    python benchmarks/bench_rate.py --quick     # 10x fewer steps, for a smoke run
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _common import (  # noqa: E402
    fmt_time,
    format_table,
    interleaved,
    machine_summary,
    pin_threads,
    try_import_torch,
)

import neurosim as ns  # noqa: E402

TAU, DT, GAIN = 0.01, 1e-4, 1.5
A = DT / TAU


# ----------------------------------------------------------------------------- W3 / W3b
def w3_setup(n, trials, seed=0):
    rec = ns.RecurrentRateNetwork(n=n, gain=GAIN, activation="logistic", form="rate", tau=TAU,
                                  dt=DT, seed=seed)
    rng = np.random.default_rng(seed + 1)
    r0 = rng.random((trials, n))
    I = 0.5 * rng.standard_normal((trials, n))
    return rec, r0, I


def w3_neurosim(rec, r0, I, steps):
    def run():
        return rec.simulate(steps=steps, x0=r0, I=I, trials=r0.shape[0],
                            record_every=steps).states[-1]
    return run


def _numpy_euler(h, drive, r):
    """``r += A (sigmoid(h + drive) - r)`` in place with NumPy ufuncs (``h`` is scratch)."""
    h += drive
    np.negative(h, out=h)
    np.exp(h, out=h)
    h += 1.0
    np.reciprocal(h, out=h)
    h -= r
    h *= A
    r += h


def w3_numpy(J, r0, I, steps):
    if r0.shape[0] == 1:  # a matrix-vector product per step
        def run():
            r = r0[0].copy()
            h = np.empty_like(r)
            for _ in range(steps):
                np.dot(J, r, out=h)
                _numpy_euler(h, I[0], r)
            return r[None]
        return run
    JT = np.ascontiguousarray(J.T)

    def run_batch():
        r = r0.copy()
        h = np.empty_like(r)
        for _ in range(steps):
            np.matmul(r, JT, out=h)
            _numpy_euler(h, I, r)
        return r
    return run_batch


def w3_torch(torch, J, r0, I, steps):
    tJ = torch.from_numpy(J)
    tJT = torch.from_numpy(np.ascontiguousarray(J.T))
    tI = torch.from_numpy(I)

    def run():
        with torch.no_grad():
            r = torch.from_numpy(r0.copy())
            h = torch.empty_like(r)
            if r.shape[0] == 1:
                rv, hv, Iv = r[0], h[0], tI[0]
                for _ in range(steps):
                    torch.addmv(Iv, tJ, rv, out=hv)
                    torch.sigmoid_(hv)
                    hv.sub_(rv).mul_(A)
                    rv.add_(hv)
            else:
                for _ in range(steps):
                    torch.addmm(tI, r, tJT, out=h)
                    torch.sigmoid_(h)
                    h.sub_(r).mul_(A)
                    r.add_(h)
            return r.numpy()
    return run


def w3_brian2(J, r0, I, steps):
    import brian2 as b2

    b2.prefs.codegen.target = "cython"
    n = J.shape[0]
    b2.start_scope()
    b2.defaultclock.dt = DT * b2.second
    G = b2.NeuronGroup(n, """dr/dt = (-r + 1/(1 + exp(-(s + I_ext))))/tau : 1
                             s : 1
                             I_ext : 1
                             tau : second (shared, constant)""", method="euler")
    S = b2.Synapses(G, G, "w : 1\ns_post = w * r_pre : 1 (summed)")
    pre, post = np.meshgrid(np.arange(n), np.arange(n))
    S.connect(i=pre.ravel(), j=post.ravel())
    S.w[:] = J.ravel()  # row-major over (post, pre) matches J[post, pre]
    G.tau = TAU * b2.second
    G.I_ext = I[0]
    net = b2.Network(G, S)

    def run():
        G.r = r0[0]
        net.run(steps * DT * b2.second)
        return np.asarray(G.r)[None]
    net.run(10 * DT * b2.second)  # code generation and compilation, excluded
    return run


def w3_annarchy(J, r0, I, steps, threads, workdir):
    # CMake's FindPython prefers the active virtual environment; without this it can pick the
    # base interpreter, which lacks the venv's nanobind, and the generated build fails.
    if sys.prefix != sys.base_prefix:
        os.environ.setdefault("VIRTUAL_ENV", sys.prefix)
    import ANNarchy as ann

    net = ann.Network(dt=DT * 1000.0)  # milliseconds
    net.config(num_threads=threads)
    neuron = ann.Neuron(parameters="tau = 10.0 : population\nI_ext = 0.0",
                        equations="tau * dr/dt = -r + 1.0 / (1.0 + exp(-(sum(exc) + I_ext)))"
                                  " : explicit")
    pop = net.create(J.shape[0], neuron)
    proj = net.connect(pop, pop, "exc")
    proj.from_matrix(J, storage_format="dense")  # rows are postsynaptic neurons
    net.compile(directory=os.path.join(workdir, "annarchy"), silent=True)
    pop.I_ext = I[0]

    def run():
        pop.r = r0[0]
        net.simulate(steps * DT * 1000.0)
        return np.asarray(pop.r)[None]
    return run


# ----------------------------------------------------------------------------- W4
def w4_setup(seed=0, layers=10, width=256, batch=64):
    rn = ns.RateNetwork([width] * (layers + 1), activation="logistic", w_bounds=None,
                        tau=TAU, dt=DT, seed=seed, sigma_w=4.0, sigma_b=0.5)
    X = np.random.default_rng(seed + 1).random((batch, width))
    return rn, X


def w4_neurosim(rn, X, steps):
    def run():
        return rn.simulate(X, steps=steps, record_every=steps).rates[-1][-1]
    return run


def w4_numpy(rn, X, steps):
    Ws = [np.ascontiguousarray(W) for W in rn.weights]
    bs = [b.copy() for b in rn.biases]
    L = len(Ws)
    batch = X.shape[0]

    def run():
        R = [np.zeros((batch, W.shape[1])) for W in Ws]
        H = [np.empty_like(r) for r in R]
        for _ in range(steps):
            for l in range(L - 1, -1, -1):  # top-down: layer l reads the old rates below
                np.matmul(X if l == 0 else R[l - 1], Ws[l], out=H[l])
                _numpy_euler(H[l], bs[l], R[l])
        return R[-1]
    return run


def w4_torch(torch, rn, X, steps):
    Ws = [torch.from_numpy(np.ascontiguousarray(W)) for W in rn.weights]
    bs = [torch.from_numpy(b.copy()) for b in rn.biases]
    tX = torch.from_numpy(X)
    L = len(Ws)

    def run():
        with torch.no_grad():
            R = [torch.zeros((X.shape[0], W.shape[1]), dtype=torch.float64) for W in Ws]
            H = [torch.empty_like(r) for r in R]
            for _ in range(steps):
                for l in range(L - 1, -1, -1):
                    torch.addmm(bs[l], tX if l == 0 else R[l - 1], Ws[l], out=H[l])
                    torch.sigmoid_(H[l])
                    H[l].sub_(R[l]).mul_(A)
                    R[l].add_(H[l])
            return R[-1].numpy()
    return run


# ----------------------------------------------------------------------------- driver
HEADERS = ["workload", "impl", "time", "n", "vs neurosim", "max |diff|"]


def bench(name, candidates, scale, samples, max_seconds=120.0):
    """Time candidates, print and return rows (time per workload, ratio to neurosim's time).

    ``scale`` converts the timed call to the full workload (full steps / timed steps).
    """
    refs = {k: np.asarray(fn()) for k, fn in candidates.items()}  # also warms up / compiles
    # One call of each candidate per round: load swings on a shared machine hit all alike.
    res = interleaved(candidates, samples=samples, rounds=samples, warmup=0,
                      max_seconds=max_seconds)
    ours = res["neurosim"]["median"]
    rows = []
    for k, r in res.items():
        diff = float(np.max(np.abs(refs[k] - refs["neurosim"])))
        rows.append([name, k, fmt_time(r["median"] * scale), r["n"],
                     f"{r['median'] / ours:.2f}x", f"{diff:.1e}"])
    print(format_table(HEADERS, rows), flush=True)
    return rows


def _label(name, steps, full):
    return name + (f" ({steps} steps x{full // steps})" if steps < full else "")


def _simulators(J, r0, I, steps, threads):
    """Brian2 and ANNarchy candidates for W3, for those that are importable and build here."""
    out = {}
    if importlib.util.find_spec("brian2") is not None:
        try:
            out["brian2"] = w3_brian2(J, r0, I, steps)
        except Exception as exc:  # report, keep benchmarking
            print(f"brian2 failed: {exc!r}")
    if importlib.util.find_spec("ANNarchy") is not None:
        try:
            workdir = os.path.join(tempfile.gettempdir(), "neurosim-bench")
            out["annarchy"] = w3_annarchy(J, r0, I, steps, threads, workdir)
        except Exception as exc:
            print(f"ANNarchy failed: {exc!r}")
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="10x fewer steps (smoke run)")
    parser.add_argument("--only", choices=["W3", "W3sim", "W3b", "W4"], default=None)
    parser.add_argument("--sizes", type=int, nargs="*", default=[100, 1000, 4000])
    args = parser.parse_args(argv)
    div = 10 if args.quick else 1
    torch = try_import_torch()
    rows = []

    def w3_cands(rec, r0, I, steps):
        cands = {"neurosim": w3_neurosim(rec, r0, I, steps),
                 "numpy": w3_numpy(rec.J, r0, I, steps)}
        if torch is not None:
            cands["torch"] = w3_torch(torch, rec.J, r0, I, steps)
        return cands

    with pin_threads(args.threads):
        print(machine_summary(args.threads))
        if args.only in (None, "W3"):
            for n in args.sizes:
                full = 10_000 // div
                # Large single trials stream J from memory every step (~9 ms at n = 4000):
                # time fewer steps and scale.
                steps = full if n <= 1000 else max(full // 25, 40)
                rec, r0, I = w3_setup(n, 1)
                cands = w3_cands(rec, r0, I, steps)
                samples = 15 if n <= 100 else (5 if n <= 1000 else 3)
                rows += bench(_label(f"W3 n={n}", steps, full), cands, full / steps, samples)
        if args.only in (None, "W3sim"):
            # Dedicated simulators on W3 n = 1000; Brian2 needs ~10 ms a step, so time 1/10.
            full = 10_000 // div
            steps = full // 10
            rec, r0, I = w3_setup(1000, 1)
            sims = _simulators(rec.J, r0, I, steps, args.threads)
            print(f"simulators: {', '.join(sims) or 'none importable'}", flush=True)
            if sims:
                cands = {"neurosim": w3_neurosim(rec, r0, I, steps),
                         "numpy": w3_numpy(rec.J, r0, I, steps), **sims}
                rows += bench(_label("W3 n=1000 sims", steps, full), cands, full / steps, 3)
        if args.only in (None, "W3b"):
            # 64 x 1000 x 1000 GEMM per step: time a quarter of the steps and scale.
            full = 2000 // div
            steps = full // 4
            rec, r0, I = w3_setup(1000, 64)
            cands = w3_cands(rec, r0, I, steps)
            rows += bench(_label("W3b 64x1000", steps, full), cands, full / steps, 5)
        if args.only in (None, "W4"):
            steps = 200 // div
            rn, X = w4_setup()
            cands = {"neurosim": w4_neurosim(rn, X, steps), "numpy": w4_numpy(rn, X, steps)}
            if torch is not None:
                cands["torch"] = w4_torch(torch, rn, X, steps)
            rows += bench("W4 10x256 b64", cands, 1.0, 21)
    print()
    print(format_table(HEADERS, rows))
    print(f"\n'vs neurosim' = time / neurosim's time (> 1: neurosim is faster). "
          f"{time.strftime('%Y-%m-%d %H:%M')}, load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

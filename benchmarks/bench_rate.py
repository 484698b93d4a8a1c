"""Rate-network simulation speed against NumPy, PyTorch and (when installed) Brian2 and ANNarchy.

Workloads (issue 3), all float64, forward Euler:

- W3: recurrent network of n neurons, fully connected, ``tau dr/dt = -r + r_max sigmoid(J r + I)``,
  tau = 10 ms, dt = 0.1 ms, gain 1.5 (``J ~ N(0, 1.5^2 / n)``), one trial, 10,000 steps, for
  n in {100, 1000, 4000};
- W3b: the same with 64 trials at once, n = 1000, 2,000 steps;
- W4: layered network of 10 layers x 256 neurons relaxing for 200 Euler steps, batch 64.

Every implementation runs the same update from the same state, and the table shows how far
their final states differ. Peers run in the same process with the same thread count (BLAS and
OpenMP pools pinned with threadpoolctl, ``torch.set_num_threads``); samples are interleaved and
medians reported. Times are per full workload; long W3 runs are timed on fewer steps and scaled
(the cost per step is constant, and the table says so).

Brian2 (``pip install brian2``; Cython target) and ANNarchy (``pip install ANNarchy``; needs a
C++ compiler) are used when importable; their compile/code-generation time is excluded.

Run::

    python benchmarks/bench_rate.py             # full workloads, 1 thread
    python benchmarks/bench_rate.py --threads 2
    python benchmarks/bench_rate.py --quick     # 10x fewer steps, for a smoke run
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time

import numpy as np
import scipy.linalg  # noqa: F401  (loads the BLAS numba calls now, so pin_threads limits it too)

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


def w3_numpy(J, r0, I, steps):
    trials = r0.shape[0]
    if trials == 1:
        def run():
            r = r0[0].copy()
            h = np.empty_like(r)
            Iv = I[0]
            for _ in range(steps):
                np.dot(J, r, out=h)
                h += Iv
                np.negative(h, out=h)
                np.exp(h, out=h)
                h += 1.0
                np.reciprocal(h, out=h)
                h -= r
                h *= A
                r += h
            return r[None]
        return run
    JT = np.ascontiguousarray(J.T)

    def run_batch():
        r = r0.copy()
        h = np.empty_like(r)
        for _ in range(steps):
            np.matmul(r, JT, out=h)
            h += I
            np.negative(h, out=h)
            np.exp(h, out=h)
            h += 1.0
            np.reciprocal(h, out=h)
            h -= r
            h *= A
            r += h
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
    run()  # code generation and compilation, excluded
    return run


def w3_annarchy(J, r0, I, steps):
    import ANNarchy as ann

    ann.clear()
    ann.setup(dt=DT * 1000.0)  # milliseconds
    neuron = ann.Neuron(parameters="tau = 10.0 : population\nI_ext = 0.0",
                        equations="tau * dr/dt = -r + 1.0 / (1.0 + exp(-(sum(exc) + I_ext)))"
                                  " : explicit")
    pop = ann.Population(J.shape[0], neuron)
    proj = ann.Projection(pop, pop, "exc")
    proj.connect_from_matrix(J)  # rows are postsynaptic neurons
    ann.compile(silent=True)
    pop.I_ext = I[0]

    def run():
        pop.r = r0[0]
        ann.simulate(steps * DT * 1000.0)
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
                h = H[l]
                np.matmul(X if l == 0 else R[l - 1], Ws[l], out=h)
                h += bs[l]
                np.negative(h, out=h)
                np.exp(h, out=h)
                h += 1.0
                np.reciprocal(h, out=h)
                h -= R[l]
                h *= A
                R[l] += h
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
def bench(name, candidates, scale, samples, max_seconds):
    """Time candidates; returns rows (time per workload) with ratios against neurosim."""
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
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="10x fewer steps (smoke run)")
    parser.add_argument("--only", choices=["W3", "W3b", "W4"], default=None)
    parser.add_argument("--sizes", type=int, nargs="*", default=[100, 1000, 4000])
    args = parser.parse_args(argv)
    div = 10 if args.quick else 1
    torch = try_import_torch()
    have_brian = importlib.util.find_spec("brian2") is not None
    have_annarchy = importlib.util.find_spec("ANNarchy") is not None
    rows = []
    with pin_threads(args.threads):
        print(machine_summary(args.threads))
        print(f"brian2: {'yes' if have_brian else 'not installed'}, "
              f"ANNarchy: {'yes' if have_annarchy else 'not installed'}")
        if args.only in (None, "W3"):
            for n in args.sizes:
                full = 10_000 // div
                # Single trials of large n are memory bound: time fewer steps and scale.
                steps = full if n <= 1000 else max(full // 10, 100)
                rec, r0, I = w3_setup(n, 1)
                cands = {"neurosim": w3_neurosim(rec, r0, I, steps),
                         "numpy": w3_numpy(rec.J, r0, I, steps)}
                if torch is not None:
                    cands["torch"] = w3_torch(torch, rec.J, r0, I, steps)
                if n == 1000 and have_brian:
                    try:
                        cands["brian2"] = w3_brian2(rec.J, r0, I, steps)
                    except Exception as exc:  # report, keep benchmarking
                        print(f"brian2 failed: {exc!r}")
                if n == 1000 and have_annarchy:
                    try:
                        cands["annarchy"] = w3_annarchy(rec.J, r0, I, steps)
                    except Exception as exc:
                        print(f"ANNarchy failed: {exc!r}")
                samples = 15 if n <= 100 else (5 if n <= 1000 else 3)
                label = f"W3 n={n}" + (f" ({steps} steps x{full // steps})" if steps < full
                                      else "")
                rows += bench(label, cands, full / steps, samples, 120.0)
                print(format_table(["workload", "impl", "time", "n", "vs neurosim",
                                    "max |diff|"], rows[-len(cands):]), flush=True)
        if args.only in (None, "W3b"):
            steps = 2000 // div
            rec, r0, I = w3_setup(1000, 64)
            cands = {"neurosim": w3_neurosim(rec, r0, I, steps),
                     "numpy": w3_numpy(rec.J, r0, I, steps)}
            if torch is not None:
                cands["torch"] = w3_torch(torch, rec.J, r0, I, steps)
            rows += bench("W3b 64x1000", cands, 1.0, 5, 120.0)
            print(format_table(["workload", "impl", "time", "n", "vs neurosim", "max |diff|"],
                               rows[-len(cands):]), flush=True)
        if args.only in (None, "W4"):
            steps = 200 // div if args.quick else 200
            rn, X = w4_setup()
            cands = {"neurosim": w4_neurosim(rn, X, steps), "numpy": w4_numpy(rn, X, steps)}
            if torch is not None:
                cands["torch"] = w4_torch(torch, rn, X, steps)
            rows += bench("W4 10x256 b64", cands, 1.0, 21, 120.0)
            print(format_table(["workload", "impl", "time", "n", "vs neurosim", "max |diff|"],
                               rows[-len(cands):]), flush=True)
    print()
    print(format_table(["workload", "impl", "time", "n", "vs neurosim", "max |diff|"], rows))
    print(f"\n'vs neurosim' = time / neurosim's time (> 1: neurosim is faster). "
          f"{time.strftime('%Y-%m-%d %H:%M')}")


if __name__ == "__main__":
    main()

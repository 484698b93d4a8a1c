"""One MLP training step: neurosim against plain NumPy and PyTorch eager, in one process.

The step: fully connected net with D hidden layers of width H, tanh, input width H, 10 linear
outputs, mse, plain SGD, batch B, float32; forward, loss, backward and update. For each
(D, H, B) the candidates run in alternating rounds (medians over >= 50 steps after warm-up):

- ``neurosim``: :class:`neurosim.train.MLPTrainer` on a training set of exactly B samples, so
  every compiled call runs one step (the Python call overhead is included);
- ``neurosim/epoch``: the same on 20 B samples, 20 steps per call (the per-step cost inside an
  epoch, how :func:`neurosim.train` runs);
- ``neurosim+rec``: one step per call with the per-layer gradient and delta norms recorded;
- ``numpy``: a plain NumPy implementation;
- ``torch``: ``nn.Sequential`` of ``Linear``/``Tanh``, ``torch.optim.SGD``, eager mode, with
  ``torch.set_num_threads`` equal to ours;
- ``gemm``: only the step's three matrix products per layer through the BLAS neurosim calls
  (``np.dot`` in ``@njit``): the floor for any implementation on that BLAS.

FLOPs per step are counted as ``6 B sum(fan_in fan_out)``. The GEMM rate of the machine is that
of a 2048^3 float32 product, measured through each available BLAS. Finally a fresh process
imports neurosim and runs its first training step with the on-disk cache warm.

Run: ``python benchmarks/bench_mlp.py`` (``--help`` for options).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (  # noqa: E402
    fmt_time,
    format_table,
    gemm_rates,
    interleaved,
    machine_summary,
    pin_threads,
    try_import_torch,
)

CONFIGS = [(20, 64, 32), (20, 256, 128), (10, 1024, 256), (100, 128, 64)]
# Targets of issue 2 as (minimum speed-up over PyTorch eager, minimum share of the GEMM rate).
TARGETS = {(20, 64, 32): (5.0, None), (100, 128, 64): (2.0, None),
           (20, 256, 128): (1.3, None), (10, 1024, 256): (1.0, 0.85)}
LR = 1e-3
EPOCH_STEPS = 20


def sizes_of(D, H):
    return [H] + [H] * D + [10]


def flops_per_step(D, H, B):
    sizes = sizes_of(D, H)
    return 6.0 * B * sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))


def data(H, B, n, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, H)).astype(np.float32),
            rng.standard_normal((n, 10)).astype(np.float32))


def neurosim_candidates(D, H, B):
    import neurosim as ns
    from neurosim.train import MLPTrainer

    X, Y = data(H, B, EPOCH_STEPS * B)
    out = {}
    for name, n, record_every in (("neurosim", B, 10**12), ("neurosim/epoch", EPOCH_STEPS * B,
                                                            10**12),
                                  ("neurosim+rec", B, 1)):
        net = ns.MLP(sizes_of(D, H), activation="tanh", seed=0, dtype="float32")
        trainer = MLPTrainer(net, X[:n], Y[:n], optimizer="sgd", lr=LR, batch_size=B,
                             record_every=record_every)
        trainer.run_epoch()  # compile or load from the cache
        out[name] = trainer.run_epoch
    return out


def numpy_candidate(D, H, B):
    rng = np.random.default_rng(1)
    sizes = sizes_of(D, H)
    Ws = [(rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32)
          for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
    bs = [np.zeros(b, np.float32) for b in sizes[1:]]
    X, Y = data(H, B, B)
    lr = np.float32(LR)

    def step():
        acts = [X]
        a = X
        for W, b in zip(Ws[:-1], bs[:-1], strict=True):
            a = np.tanh(a @ W + b)
            acts.append(a)
        out = a @ Ws[-1] + bs[-1]
        g = (out - Y) / np.float32(B)
        for l in range(len(Ws) - 1, -1, -1):
            gW = acts[l].T @ g
            gb = g.sum(axis=0)
            if l > 0:
                g = (g @ Ws[l].T) * (1.0 - acts[l] * acts[l])
            Ws[l] -= lr * gW
            bs[l] -= lr * gb

    return step


def torch_candidate(torch, D, H, B):
    torch.manual_seed(0)
    sizes = sizes_of(D, H)
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(torch.nn.Tanh())
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    X, Y = (torch.from_numpy(a) for a in data(H, B, B))

    def step():
        opt.zero_grad(set_to_none=True)
        out = model(X)
        loss = 0.5 * ((out - Y) ** 2).sum(dim=1).mean()
        loss.backward()
        opt.step()

    return step


def gemm_candidate(D, H, B):
    from numba import njit

    @njit(cache=True)
    def gemms(acts, Ws, grads, deltas, gprev):
        for l in range(len(Ws)):
            np.dot(acts[l], Ws[l], acts[l + 1])
        for l in range(len(Ws) - 1, -1, -1):
            np.dot(acts[l].T, deltas[l], grads[l])
            if l > 0:
                np.dot(deltas[l], Ws[l].T, gprev[l - 1])

    from numba.typed import List

    rng = np.random.default_rng(2)
    sizes = sizes_of(D, H)
    f32 = np.float32

    def typed(arrays):
        out = List()
        for a in arrays:
            out.append(a)
        return out

    acts = typed([rng.standard_normal((B, n)).astype(f32) for n in sizes])
    Ws = typed([rng.standard_normal((a, b)).astype(f32) for a, b in zip(sizes[:-1], sizes[1:],
                                                                      strict=True)])
    grads = typed([np.empty_like(w) for w in Ws])
    deltas = typed([rng.standard_normal((B, n)).astype(f32) for n in sizes[1:]])
    gprev = typed([np.empty((B, n), f32) for n in sizes[1:-1]])
    return lambda: gemms(acts, Ws, grads, deltas, gprev)


COLD_START = """
import time
t0 = time.perf_counter()
import numpy as np
import neurosim as ns
from neurosim.train import MLPTrainer
net = ns.MLP([64] * 21 + [10], activation="tanh", seed=0, dtype="float32")
rng = np.random.default_rng(0)
X = rng.standard_normal((32, 64)).astype(np.float32)
Y = rng.standard_normal((32, 10)).astype(np.float32)
MLPTrainer(net, X, Y, lr=1e-3, batch_size=32).run_epoch()
print(time.perf_counter() - t0)
"""


def cold_start(repeats=3):
    """Wall time of a fresh interpreter: start, import, first training step (warm cache)."""
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    subprocess.run([sys.executable, "-c", COLD_START], env=env, check=True,
                   capture_output=True)  # warms the cache if needed
    walls, inner = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = subprocess.run([sys.executable, "-c", COLD_START], env=env, check=True,
                             capture_output=True, text=True)
        walls.append(time.perf_counter() - t0)
        inner.append(float(res.stdout.strip().splitlines()[-1]))
    return float(np.median(walls)), float(np.median(inner))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="threads for every library (default: all cores)")
    parser.add_argument("--samples", type=int, default=60, help="timed steps per candidate")
    parser.add_argument("--rounds", type=int, default=6, help="alternation rounds")
    parser.add_argument("--configs", default="all",
                        help="comma-separated D:H:B triples, e.g. 20:64:32 (default all four)")
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch")
    parser.add_argument("--no-cold-start", action="store_true", help="skip the cold start")
    args = parser.parse_args(argv)
    configs = CONFIGS if args.configs == "all" else [
        tuple(int(v) for v in c.split(":")) for c in args.configs.split(",")]
    torch = None if args.no_torch else try_import_torch()

    print(f"# bench_mlp: {machine_summary(args.threads)}")
    rates = gemm_rates(threads=args.threads)
    rate_text = ", ".join(f"{k} {v / 1e9:.1f}" for k, v in rates.items())
    machine_rate = max(rates.values())
    print(f"float32 GEMM rate, 2048^3 (GFLOP/s): {rate_text}; machine rate = "
          f"{machine_rate / 1e9:.1f} (best), neurosim's BLAS = {rates['numba'] / 1e9:.1f}")

    rows, verdicts = [], []
    with pin_threads(args.threads):
        for D, H, B in configs:
            cands = neurosim_candidates(D, H, B)
            cands["numpy"] = numpy_candidate(D, H, B)
            if torch is not None:
                cands["torch"] = torch_candidate(torch, D, H, B)
            cands["gemm"] = gemm_candidate(D, H, B)
            res = interleaved(cands, samples=args.samples, rounds=args.rounds,
                              per_call={"neurosim/epoch": EPOCH_STEPS})
            t = {k: v["median"] for k, v in res.items()}
            fl = flops_per_step(D, H, B)
            ours = t["neurosim"]
            torch_t = t.get("torch", float("nan"))
            share = fl / ours / machine_rate
            rows.append([
                f"({D}, {H}, {B})", fmt_time(ours), fmt_time(t["neurosim/epoch"]),
                fmt_time(t["neurosim+rec"]), fmt_time(t["numpy"]), fmt_time(torch_t),
                f"{torch_t / ours:.2f}x", f"{t['numpy'] / ours:.2f}x",
                f"{fl / ours / 1e9:.1f}", f"{share:.0%}", f"{fl / ours / rates['numba']:.0%}",
                f"{t['gemm'] / ours:.0%}",
            ])
            want_speedup, want_share = TARGETS.get((D, H, B), (None, None))
            if want_speedup is not None and torch is not None:
                ok = torch_t / ours >= want_speedup
                verdicts.append(f"({D}, {H}, {B}): {torch_t / ours:.2f}x PyTorch eager "
                                f"(target >= {want_speedup}x): {'met' if ok else 'NOT met'}")
            if want_share is not None:
                ok = share >= want_share
                verdicts.append(f"({D}, {H}, {B}): {share:.0%} of the machine GEMM rate "
                                f"(target >= {want_share:.0%}): {'met' if ok else 'NOT met'}")
            print(f"  done ({D}, {H}, {B}): " + ", ".join(
                f"{k} {fmt_time(v['median'])} [{fmt_time(v['q1'])}, {fmt_time(v['q3'])}] "
                f"n={v['n']}" for k, v in res.items()), flush=True)

    headers = ["(D, H, B)", "neurosim", "neurosim/epoch", "neurosim+rec", "numpy", "torch",
               "vs torch", "vs numpy", "GFLOP/s", "of GEMM rate", "of own BLAS",
               "GEMM-only/step"]
    print()
    print(format_table(headers, rows))
    print()
    for line in verdicts:
        print(line)
    if not args.no_cold_start:
        wall, inner = cold_start()
        print(f"cold start (fresh process, warm cache): {wall:.2f} s wall from interpreter "
              f"start ({inner:.2f} s import + first step); target < 2 s: "
              f"{'met' if wall < 2.0 else 'NOT met'}")


if __name__ == "__main__":
    main()

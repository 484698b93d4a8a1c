"""Cold start: a fresh process imports neurosim and runs its first training step (warm cache).

Each measurement spawns a new interpreter that imports neurosim, builds the (20, 64, 32) net of
``bench_mlp.py`` (20 hidden tanh layers of width 64, float32) and trains it on one batch of 32
samples, so exactly one optimizer step runs. Two ways of running that step are timed:

- ``step``: :class:`neurosim.train.MLPTrainer` ``.run_epoch()`` (the compiled training loop only);
- ``train``: ``ns.train(net, (X, Y), epochs=1, batch_size=32)`` (the step plus the evaluation of
  the epoch's train and test loss, as a user's first call runs it).

The first spawn of each kind fills numba's on-disk cache if it is cold and is not timed. Every
timed spawn reports the seconds its imports took (numpy, numba, neurosim.train), the seconds
of its first step (numba loading the kernels from the cache, then running them) and how long
the interpreter took to shut down after its last line. The wall time is measured by this
process from spawn to exit, so it also holds interpreter start-up and shut-down. The target of
issue 2 is a wall time under 2 s.

Run: ``python benchmarks/bench_coldstart.py`` (``--help`` for options).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET_S = 2.0

CHILD = """
import json, sys, time
t0 = time.perf_counter()
import numpy as np
import neurosim as ns
from neurosim.train import MLPTrainer
t_import = time.perf_counter() - t0
net = ns.MLP([64] * 21 + [10], activation="tanh", seed=0, dtype="float32")
rng = np.random.default_rng(0)
X = rng.standard_normal((32, 64)).astype(np.float32)
Y = rng.standard_normal((32, 10)).astype(np.float32)
t1 = time.perf_counter()
if sys.argv[1] == "step":
    MLPTrainer(net, X, Y, lr=1e-3, batch_size=32).run_epoch()
else:
    ns.train(net, (X, Y), lr=1e-3, epochs=1, batch_size=32)
t_step = time.perf_counter() - t1
print(json.dumps({"import": t_import, "first_step": t_step,
                  "total": time.perf_counter() - t0, "end": time.time()}))
"""


def spawn(mode: str) -> dict:
    """Run the child once; its own timings plus ``wall`` (spawn to exit, seconds)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", CHILD, mode], env=env, check=True,
                         capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["wall"] = wall
    out["exit"] = time.time() - out.pop("end")  # interpreter shut-down after the last line
    return out


def baseline() -> float:
    """Wall seconds of ``python -c pass``: the interpreter's own start-up and shut-down."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - t0


def cold_start(repeats: int = 5, modes: tuple[str, ...] = ("step", "train")) -> dict:
    """Median timings over ``repeats`` fresh processes per mode (after one warming spawn)."""
    results = {}
    for mode in modes:
        spawn(mode)  # fills the cache if it is cold
    runs = {mode: [] for mode in modes}
    for _ in range(repeats):  # alternate, so that load changes hit both modes alike
        for mode in modes:
            runs[mode].append(spawn(mode))
    for mode, rs in runs.items():
        results[mode] = {key: statistics.median(r[key] for r in rs)
                         for key in ("import", "first_step", "total", "exit", "wall")}
        results[mode]["max_wall"] = max(r["wall"] for r in rs)
    return results


def report(results: dict, python_s: float) -> list[str]:
    lines = [f"cold start, fresh process with a warm cache (medians; 'python -c pass' takes "
             f"{python_s:.2f} s):"]
    for mode, r in results.items():
        ok = "met" if r["wall"] < TARGET_S else "NOT met"
        lines.append(f"  {mode:5s}: import {r['import']:.2f} s + first step "
                     f"{r['first_step']:.2f} s = {r['total']:.2f} s in the process; shut-down "
                     f"{r['exit']:.2f} s; wall {r['wall']:.2f} s from spawn to exit (worst "
                     f"{r['max_wall']:.2f} s); target < {TARGET_S:.0f} s wall: {ok}")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed spawns per mode")
    args = parser.parse_args(argv)
    load = os.getloadavg()
    python_s = statistics.median(baseline() for _ in range(3))
    for line in report(cold_start(args.repeats), python_s):
        print(line)
    print(f"load average {load[0]:.2f} (start), {os.getloadavg()[0]:.2f} (end)")


if __name__ == "__main__":
    main()

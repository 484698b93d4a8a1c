"""neurosim's CUDA kernels on a GPU: against the device's own limits and against PyTorch.

Workloads (float32, sizes that fill a data-centre GPU; ``--scale`` shrinks them):

- ``MLP``: the training step of ``bench_mlp.py`` (D hidden tanh layers of width H, input width H,
  10 linear outputs, mse, plain SGD, batch B) at D = 4, H = 4096, B = 4096, on
  ``ns.MLP(..., device="cuda")`` through :class:`neurosim._cuda_models.CudaMLPTrainer`, the
  trainer ``ns.train`` runs for such a network (one epoch of 20 steps per call; records off, as
  in ``bench_mlp``'s ``neurosim/epoch``), and through PyTorch eager on the same GPU (TF32 off,
  so both do float32 arithmetic);
- ``W3``: the recurrent network of ``bench_rate.py`` (``tau dr/dt = -r + sigmoid(J r + I)``)
  with n = 16384: 256 trials at once (one matrix product per step, compute bound) and a single
  trial (one matrix-vector product per step, memory bound: J, 1 GiB, is read every step);
- ``W4``: the layered network of ``bench_rate.py`` relaxing with Euler steps, 10 layers of 4096,
  batch 4096.

The device's float32 matrix-product rate (a 8192^3 product through PyTorch's cuBLAS, or CuPy) and
its copy bandwidth (a 1 GiB device-to-device copy, 2 GiB moved) are measured in the same run;
each workload reports time per step (median of >= 50 steps after warm-up, timed with device
synchronisation), achieved FLOP/s and bytes/s, their share of those limits, and the ratio to
PyTorch. Targets (issue 5): MLP step within 1.5x of PyTorch; memory-bound W3 at >= 60% of copy
bandwidth.

Without a CUDA GPU the script says so and exits with status 0. ``--smoke`` runs every code path
at toy sizes under numba's CUDA simulator (about a minute; its timings mean nothing).

Run: ``python benchmarks/bench_cuda.py`` (``--help`` for options).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(1, os.path.dirname(HERE))  # the repository, when neurosim is not installed

from _common import (  # noqa: E402
    fmt_time,
    format_table,
    mlp_flops,
    mlp_sizes,
    torch_mlp_step,
    try_import_torch,
)

MLP_SHAPE = (4, 4096, 4096)  # D, H, B
W3_N, W3_TRIALS = 16384, 256
W4_LAYERS, W4_WIDTH, W4_BATCH = 10, 4096, 4096
LR = 1e-3
TAU, DT = 0.01, 0.001
GAIN = 1.5
LIMIT_N = 8192  # side of the reference matrix product
COPY_ELEMS = (1 << 30) // 4  # float32 elements of the reference copy (1 GiB)


def gpu_or_exit(smoke=False):
    """numba.cuda when a real GPU is usable; otherwise print why and exit 0."""
    if smoke:  # exercise the code paths under the CUDA simulator (no numbers worth reading)
        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
        from numba import cuda

        return cuda
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        print("bench_cuda: NUMBA_ENABLE_CUDASIM is set (the simulator is not a GPU); nothing to "
              "measure")
        sys.exit(0)
    try:
        from numba import cuda
    except ImportError as exc:
        print(f"bench_cuda: numba's CUDA support is missing ({exc}); nothing to measure")
        sys.exit(0)
    if not cuda.is_available():
        print("bench_cuda: no CUDA GPU found (numba.cuda.is_available() is False); nothing to "
              "measure. On a GPU machine: pip install \"neurosim[cuda]\"")
        sys.exit(0)
    return cuda


def timed(fn, sync, samples, warmup=2, per_call=1):
    """Median seconds per unit of work: ``fn`` does ``per_call`` units; ``sync`` waits for them."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(samples):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) / per_call)
    return statistics.median(times)


# ----------------------------------------------------------------------------- device limits
def device_limits(cuda, torch, cupy):
    """(float32 GEMM FLOP/s, copy bytes/s, who measured them)."""
    n = LIMIT_N
    copy_elems = COPY_ELEMS
    if torch is not None and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = False
        a = torch.randn(n, n, device="cuda")
        b = torch.randn(n, n, device="cuda")
        c = torch.empty(n, n, device="cuda")
        t_mm = timed(lambda: torch.mm(a, b, out=c), torch.cuda.synchronize, 10)
        src = torch.empty(copy_elems, device="cuda")
        dst = torch.empty_like(src)
        t_cp = timed(lambda: dst.copy_(src), torch.cuda.synchronize, 20)
        who = "torch"
    elif cupy is not None:
        a = cupy.random.standard_normal((n, n), dtype=cupy.float32)
        b = cupy.random.standard_normal((n, n), dtype=cupy.float32)
        t_mm = timed(lambda: a @ b, cupy.cuda.Device().synchronize, 10)
        src = cupy.empty(copy_elems, cupy.float32)
        dst = cupy.empty_like(src)
        t_cp = timed(lambda: dst.__setitem__(Ellipsis, src), cupy.cuda.Device().synchronize, 20)
        who = "cupy"
    else:  # neurosim's own kernels: a lower bound of the device's limits
        from neurosim.kernels.cuda.gemm import gemm

        a = cuda.to_device(np.random.default_rng(0).standard_normal((n, n), np.float32))
        c = cuda.device_array((n, n), np.float32)
        t_mm = timed(lambda: gemm(a, a, c), cuda.synchronize, 5)
        src = cuda.device_array(copy_elems, np.float32)
        dst = cuda.device_array(copy_elems, np.float32)
        t_cp = timed(lambda: dst.copy_to_device(src), cuda.synchronize, 20)
        who = "neurosim (no torch or cupy: lower bounds)"
    return 2.0 * n**3 / t_mm, 2.0 * copy_elems * 4 / t_cp, who


def own_gemm_rate(cuda):
    from neurosim.kernels.cuda.gemm import gemm

    n = LIMIT_N
    rng = np.random.default_rng(0)
    a = cuda.to_device(rng.standard_normal((n, n), np.float32))
    b = cuda.to_device(rng.standard_normal((n, n), np.float32))
    c = cuda.device_array((n, n), np.float32)
    return 2.0 * n**3 / timed(lambda: gemm(a, b, c), cuda.synchronize, 5)


# ----------------------------------------------------------------------------- MLP
def mlp_neurosim(cuda, D, H, B, steps_per_call):
    import neurosim as ns
    from neurosim._cuda_models import CudaMLPTrainer

    rng = np.random.default_rng(0)
    n = steps_per_call * B
    X = rng.standard_normal((n, H)).astype(np.float32)
    Y = rng.standard_normal((n, 10)).astype(np.float32)
    net = ns.MLP(mlp_sizes(D, H), activation="tanh", seed=0, dtype="float32", device="cuda")
    trainer = CudaMLPTrainer(net, X, Y, optimizer="sgd", lr=LR, batch_size=B,
                             record_every=10**12)
    return trainer.run_epoch


def mlp_torch(torch, D, H, B):
    torch.manual_seed(0)
    X = torch.randn(B, H, device="cuda")
    Y = torch.randn(B, 10, device="cuda")
    return torch_mlp_step(torch, D, H, X, Y, LR)


# ----------------------------------------------------------------------------- W3 / W4
def w3_neurosim(cuda, n, trials, steps):
    from neurosim import activations
    from neurosim.kernels.cuda import rate as gr

    rng = np.random.default_rng(0)
    J = cuda.to_device((GAIN * rng.standard_normal((n, n)) / np.sqrt(n)).astype(np.float32))
    I = cuda.to_device((0.5 * rng.standard_normal((trials, n))).astype(np.float32))
    V = cuda.to_device(rng.random((trials, n)).astype(np.float32))
    Z = cuda.device_array((trials, n), np.float32)
    trace = cuda.device_array((2, trials, n), np.float32)
    act = activations.get("logistic")
    a = np.float32(DT / TAU)

    def run():
        gr.recurrent_simulate(act.code, act.param_array(np.float32), J, I, V, a, gr.FORM_RATE,
                              steps, steps, gr.NOISE_NONE, 0.0, 0.0, Z, None, trace)

    return run


def w3_torch(torch, n, trials, steps):
    g = torch.Generator(device="cuda").manual_seed(0)
    J = GAIN * torch.randn(n, n, device="cuda", generator=g) / n**0.5
    I = 0.5 * torch.randn(trials, n, device="cuda", generator=g)
    r = torch.rand(trials, n, device="cuda", generator=g)
    a = DT / TAU
    JT = J.t()

    def run():
        nonlocal r
        for _ in range(steps):
            r = r + a * (torch.sigmoid(r @ JT + I) - r)

    return run


def w4_neurosim(cuda, steps):
    import neurosim as ns
    from neurosim.kernels.cuda import rate as gr

    rn = ns.RateNetwork([W4_WIDTH] * (W4_LAYERS + 1), activation="logistic", w_bounds=None,
                        seed=0, dtype="float32")
    rng = np.random.default_rng(1)
    X = cuda.to_device(rng.random((W4_BATCH, W4_WIDTH)).astype(np.float32))
    units = W4_BATCH * W4_WIDTH * W4_LAYERS
    R = cuda.to_device(np.zeros(units, np.float32))
    H = cuda.device_array(units, np.float32)
    Z = cuda.device_array(units, np.float32)
    trace = cuda.device_array((2, units), np.float32)
    params = cuda.to_device(rn._params)
    a = np.float32(rn.integration_coefficient)

    def run():
        gr.simulate(rn.activation.code, rn._ap, params, rn._w_off, rn._b_off, rn._sizes, X, R,
                    H, None, Z, a, np.float32(0.0), steps, steps, gr.NOISE_NONE, 0.0, 0.0, None,
                    trace)

    return run


def w4_torch(torch, steps):
    g = torch.Generator(device="cuda").manual_seed(0)
    Ws = [torch.randn(W4_WIDTH, W4_WIDTH, device="cuda", generator=g) / W4_WIDTH**0.5
          for _ in range(W4_LAYERS)]
    bs = [torch.zeros(W4_WIDTH, device="cuda") for _ in range(W4_LAYERS)]
    X = torch.rand(W4_BATCH, W4_WIDTH, device="cuda", generator=g)
    Rs = [torch.zeros(W4_BATCH, W4_WIDTH, device="cuda") for _ in range(W4_LAYERS)]
    a = DT / TAU

    def run():
        for _ in range(steps):
            for l in range(W4_LAYERS - 1, -1, -1):
                prev = X if l == 0 else Rs[l - 1]
                Rs[l] = Rs[l] + a * (torch.sigmoid(prev @ Ws[l] + bs[l]) - Rs[l])

    return run


# ----------------------------------------------------------------------------- main
def main(argv=None):
    global W3_N, W3_TRIALS, W4_WIDTH, W4_BATCH, LIMIT_N, COPY_ELEMS
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply the widths, batches and n by this (e.g. 0.25 for a small "
                             "GPU)")
    parser.add_argument("--samples", type=int, default=50, help="timed samples per candidate")
    parser.add_argument("--smoke", action="store_true",
                        help="run every code path at toy sizes under the CUDA simulator")
    args = parser.parse_args(argv)
    if args.smoke:
        args.scale, args.samples = 8 / 4096, 1
    cuda = gpu_or_exit(args.smoke)
    torch = try_import_torch()
    if torch is not None and not torch.cuda.is_available():
        torch = None
    try:
        import cupy
    except ImportError:
        cupy = None

    D, H, B = MLP_SHAPE
    H, B = int(H * args.scale), int(B * args.scale)
    W3_N, W3_TRIALS = int(W3_N * args.scale), max(2, int(W3_TRIALS * args.scale))
    W4_WIDTH, W4_BATCH = int(W4_WIDTH * args.scale), int(W4_BATCH * args.scale)
    if args.smoke:
        LIMIT_N, COPY_ELEMS = 8, 64

    dev = cuda.get_current_device()
    name = getattr(dev, "name", "CUDA simulator")
    print(f"device: {name.decode() if isinstance(name, bytes) else name}, "
          f"compute capability {getattr(dev, 'compute_capability', '-')}; torch "
          f"{torch.__version__ if torch else 'absent'}; cupy "
          f"{cupy.__version__ if cupy else 'absent'}")
    gemm_rate, copy_bw, who = device_limits(cuda, torch, cupy)
    own = own_gemm_rate(cuda)
    print(f"float32 matrix product: {gemm_rate / 1e12:.1f} TFLOP/s ({who}); neurosim's tiled "
          f"kernel: {own / 1e12:.1f} TFLOP/s ({own / gemm_rate:.0%})")
    print(f"copy bandwidth: {copy_bw / 1e9:.0f} GB/s ({who})\n")

    rows = []
    torch_sync = torch.cuda.synchronize if torch is not None else None

    def add(name, work, unit_flops, unit_bytes, ours, peer):
        t_ours = timed(ours[0], cuda.synchronize, args.samples, per_call=ours[1])
        t_peer = (timed(peer[0], torch_sync, args.samples, per_call=peer[1])
                  if peer is not None else None)
        flops = unit_flops / t_ours
        bw = unit_bytes / t_ours
        rows.append([name, work, fmt_time(t_ours), f"{flops / 1e12:.2f}",
                     f"{flops / gemm_rate:.0%}", f"{bw / 1e9:.0f}", f"{bw / copy_bw:.0%}",
                     fmt_time(t_peer) if t_peer else "-",
                     f"{t_ours / t_peer:.2f}" if t_peer else "-"])

    steps = 2 if args.smoke else 20  # MLP steps per timed call (one epoch of the trainer)
    add(f"MLP D={D} H={H} B={B}", "train step", mlp_flops(D, H, B),
        4.0 * 3 * sum(a * b for a, b in zip(mlp_sizes(D, H)[:-1], mlp_sizes(D, H)[1:],
                                            strict=True)),
        (mlp_neurosim(cuda, D, H, B, steps), steps),
        (mlp_torch(torch, D, H, B), 1) if torch else None)
    w3_steps = 2 if args.smoke else 20
    for trials in (W3_TRIALS, 1):
        add(f"W3 n={W3_N} trials={trials}", "Euler step", 2.0 * trials * W3_N**2,
            4.0 * (W3_N**2 + 3 * trials * W3_N),
            (w3_neurosim(cuda, W3_N, trials, w3_steps), w3_steps),
            (w3_torch(torch, W3_N, trials, w3_steps), w3_steps) if torch else None)
    w4_steps = 1 if args.smoke else 5
    add(f"W4 {W4_LAYERS}x{W4_WIDTH} b={W4_BATCH}", "Euler step",
        2.0 * W4_LAYERS * W4_BATCH * W4_WIDTH**2,
        4.0 * W4_LAYERS * (W4_WIDTH**2 + 3 * W4_BATCH * W4_WIDTH),
        (w4_neurosim(cuda, w4_steps), w4_steps),
        (w4_torch(torch, w4_steps), w4_steps) if torch else None)
    print(format_table(["workload", "unit", "neurosim", "TFLOP/s", "of GEMM", "GB/s",
                        "of copy BW", "torch", "neurosim/torch"], rows))
    print("\ntargets: MLP neurosim/torch <= 1.5; W3 trials=1 at >= 60% of copy bandwidth")


if __name__ == "__main__":
    main()

"""Every CUDA kernel compiles for a real GPU, and float32 kernels contain no float64 instruction.

The simulator runs kernels as Python, so it cannot see typing errors of the CUDA target or a
constant that silently promotes float32 arithmetic to float64 (a 2x-64x slowdown on GPUs). This
check compiles each kernel to PTX with numba's real CUDA compiler (NVVM) and scans the float32 PTX.

It needs the CUDA compilers NVVM and NVRTC (``pip install "numba-cuda[cu12]"`` or ``[cu13]``) but
no GPU:

    python tests/test_cuda_ptx.py          # compile everything, print a table
    python tests/test_cuda_ptx.py gemm float32]   # only names containing both strings

Under pytest the whole table runs with ``--gpu`` (in a subprocess, since pytest's process uses
the simulator); the activation kernels, which call the CPU scalar functions, compile in every run
where both are installed (and are skipped, naming the missing library, where one is not).
"""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
F64 = re.compile(r"\.f64\b|%fd\d")


def _kernel_table():
    """(name, python function, argument types) for every kernel, per dtype."""
    from numba import boolean, float32, float64, int64

    from neurosim.kernels.cuda import kernel_signatures

    table = []
    for numba_dtype in (float32, float64):
        for name, func, args in kernel_signatures(numba_dtype, int64, boolean):
            table.append((f"{name}[{numba_dtype}]", func, args, numba_dtype is float32))
    return table


def compile_all(only=()):
    """Compile every kernel (whose name contains every string in ``only``) to PTX; return
    {name: {"seconds", "f64_lines"}}."""
    from types import SimpleNamespace

    from numba import cuda
    from numba.cuda import dispatcher

    if not cuda.is_available():  # no driver: device functions ask for the current device's CC
        dispatcher.get_current_device = lambda: SimpleNamespace(compute_capability=(9, 0))
    results = {}
    for name, func, args, is_float32 in _kernel_table():
        if any(part not in name for part in only):
            continue
        start = time.perf_counter()
        ptx, _ = cuda.compile_ptx(func, args, cc=(9, 0))
        lines = [ln.strip() for ln in ptx.splitlines()
                 if F64.search(ln) and not ln.strip().startswith("//")]
        results[name] = {"seconds": time.perf_counter() - start,
                         "f64_lines": lines[:3] if is_float32 else []}
    return results


def _compile_in_subprocess(*args):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, __file__, "--json", *args], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=1200)
    if "NVVM not found" in proc.stderr or "DynamicLibNotFoundError" in proc.stderr:
        # the CUDA toolchain (NVVM, NVRTC) is not installed: nothing to compile with
        pytest.skip(proc.stderr.strip().splitlines()[-1])
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert results, "no kernel was compiled"
    promoted = {name: r["f64_lines"] for name, r in results.items() if r["f64_lines"]}
    assert not promoted, f"float32 kernels with float64 instructions: {promoted}"
    return results


@pytest.mark.gpu
def test_kernels_compile_to_ptx_and_float32_stays_float32():
    _compile_in_subprocess()


def test_cpu_activation_functions_compile_as_device_functions():
    # kernels/cuda/activations.py reuses the CPU @njit phi/dphi/d2phi as device functions: a
    # NumPy ufunc or a float64 literal slipped into the CPU module must fail here, without a GPU
    results = _compile_in_subprocess("activations.apply_", "[float32]")
    assert len(results) == 3  # apply_phi, apply_dphi, apply_d2phi


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    from numba.cuda.cudadrv import nvvm

    if not nvvm.is_available():
        sys.exit('NVVM not found: pip install "numba-cuda[cu12]" (or [cu13]) to compile PTX')
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    res = compile_all(args)
    if "--json" in sys.argv:
        print(json.dumps(res))
    else:
        for name, r in res.items():
            flag = "  FLOAT64 in float32 kernel: " + "; ".join(r["f64_lines"]) if r["f64_lines"] \
                else ""
            print(f"{name:60s} {r['seconds']:6.2f} s{flag}")
        print(f"{len(res)} kernels compiled, "
              f"{sum(bool(r['f64_lines']) for r in res.values())} float32 kernels promoted")

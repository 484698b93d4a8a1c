"""Device resolution: numba.cuda stays unimported on CPU paths; a missing GPU is a clear error."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from neurosim._device import CudaUnavailableError, resolve_device

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str, **env_overrides) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_ENABLE_CUDASIM")}
    env.update(env_overrides)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)


CUDA_MODULES = "[m for m in sys.modules if m == 'numba_cuda' or m.startswith(('numba.cuda', " \
               "'numba_cuda.'))]"


def test_cpu_paths_never_import_numba_cuda():
    code = f"""
import sys, json
import numpy as np
import neurosim as ns
after_import = {CUDA_MODULES}
X = np.random.default_rng(0).normal(size=(4, 3))
net = ns.MLP([3, 5, 2], seed=0)
net.forward(X)
net.gradients(X, np.zeros((4, 2)))
rn = ns.RateNetwork([3, 5, 2], seed=0)
rn.forward(X)
ns.activations.get("tanh").value(X)
print(json.dumps({{"import": after_import, "models": {CUDA_MODULES}}}))
"""
    proc = _run(code)
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert loaded == {"import": [], "models": []}


def test_unknown_device_names_the_choices():
    with pytest.raises(ValueError, match="device 'gpu'.*cpu, cuda"):
        resolve_device("gpu")
    with pytest.raises(ValueError, match="device"):
        resolve_device(None)
    assert resolve_device("cpu") == "cpu"


def test_cuda_without_a_device_is_an_error_with_the_install_hint():
    code = """
import neurosim as ns
from neurosim._device import resolve_device, CudaUnavailableError
for build in (lambda: resolve_device("cuda"), lambda: ns.MLP([3, 4, 2], device="cuda"),
              lambda: ns.RateNetwork([3, 4, 2], device="cuda"),
              lambda: ns.RecurrentRateNetwork(n=4, device="cuda")):
    try:
        build()
    except CudaUnavailableError as exc:
        print("ERROR:", exc)
    else:
        print("NO ERROR")
"""
    # NUMBA_DISABLE_CUDA makes the driver unusable even on a GPU machine
    proc = _run(code, NUMBA_DISABLE_CUDA="1")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 4, proc.stdout
    for line in lines:  # never a silent fallback to the CPU
        assert line.startswith("ERROR:"), line
        assert "no CUDA device was found" in line
        assert 'pip install "neurosim[cuda]"' in line


def test_missing_numba_cuda_package_is_reported():
    code = """
import sys
sys.modules["numba.cuda"] = None  # as if numba's CUDA support were not installed
from neurosim._device import resolve_device, CudaUnavailableError
try:
    resolve_device("cuda")
except CudaUnavailableError as exc:
    print("ERROR:", exc)
"""
    proc = _run(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ERROR:") and 'pip install "neurosim[cuda]"' in proc.stdout


def test_simulator_counts_as_a_device():
    # conftest selects the simulator unless --gpu; either way a CUDA device is usable here
    if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
        pytest.skip("running on a real GPU")
    assert resolve_device("cuda") == "cuda"
    assert issubclass(CudaUnavailableError, RuntimeError)

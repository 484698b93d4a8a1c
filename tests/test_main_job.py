"""The README's main job in a fresh virtual environment: ``pip install .`` then
``python scripts/main.py`` (at its tiny size), from a cold compile cache.

Takes one to three minutes (creating the environment, installing the runtime dependencies,
compiling every kernel). Skip it locally with ``NEUROSIM_SKIP_VENV_TEST=1``; CI runs it.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("NEUROSIM_SKIP_VENV_TEST") == "1",
                       reason="NEUROSIM_SKIP_VENV_TEST=1"),
]


def _copy_source(dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc", "*.pyc", "*.egg-info")
    for name in ("neurosim", "scripts"):
        shutil.copytree(ROOT / name, dest / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)


def test_readme_main_job_in_fresh_venv(tmp_path):
    readme = (ROOT / "README.md").read_text()
    assert "python -m pip install . && python scripts/main.py" in readme
    src = tmp_path / "src"
    _copy_source(src)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / ("Scripts" if os.name == "nt" else "bin") / "python"
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "NUMBA_ENABLE_CUDASIM", "VIRTUAL_ENV")}
    env["MPLBACKEND"] = "Agg"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "."], cwd=src, env=env,
                   check=True, timeout=600)
    job = subprocess.run([str(python), "scripts/main.py", "--preset", "tiny", "--no-progress"],
                         cwd=src, env=env, capture_output=True, text=True, timeout=600)
    assert job.returncode == 0, job.stdout + job.stderr
    assert "neurosim: complete" in job.stdout

    out = src / "results" / "default"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    location = subprocess.run([str(python), "-c", "import neurosim; print(neurosim.__file__)"],
                              cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert str(venv) in location.stdout  # the installed copy ran, not the source tree
    for name in manifest["experiments"]:
        assert (out / name / "data.npz").is_file()
        assert list((out / name / "figures").glob("*.png"))
    assert (out / "report.md").read_text().count("![") >= len(manifest["experiments"])

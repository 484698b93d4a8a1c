"""Test configuration.

CUDA kernels are tested under numba's CUDA simulator unless ``--gpu`` is given (then on a real
device). The simulator must be chosen before numba is first imported, which is why this happens
here, at conftest import time.
"""

import os
import sys


def _wants_gpu(argv) -> bool:
    return "--gpu" in argv


if not _wants_gpu(sys.argv):
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import matplotlib  # noqa: E402

matplotlib.use("Agg")


def pytest_addoption(parser):
    parser.addoption("--gpu", action="store_true", default=False,
                     help="run CUDA tests on a real GPU instead of the CUDA simulator")


def pytest_collection_modifyitems(config, items):
    import pytest

    if config.getoption("--gpu"):
        return
    skip_gpu = pytest.mark.skip(reason="needs a real GPU: run pytest --gpu on a GPU machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)

"""Shared by the scripts in this folder: run ``neurosim`` with a fixed first argument list.

The scripts are thin wrappers around the ``neurosim`` command (same code, same options); extra
command-line arguments are passed through, e.g. ``--preset quick --workers 2 --out DIR``.
"""

import sys
from pathlib import Path


def run(*args: str) -> int:
    try:
        from neurosim.cli import main
    except ImportError:  # running from a source checkout that is not installed
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from neurosim.cli import main
    return main([*args, *sys.argv[1:]])

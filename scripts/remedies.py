"""Figures of the ``remedies`` experiment: one deep network with and without each remedy for
vanishing and exploding gradients: gradient profile and learning curve.

Same as ``neurosim run remedies``; extra arguments are passed through (``--preset quick``,
``--set key=value``, ``--workers N``, ``--out DIR``). Writes ``results/remedies/`` by default.
"""

import sys

from _run import run

if __name__ == "__main__":
    sys.exit(run("run", "remedies"))

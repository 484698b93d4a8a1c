"""Figures of the ``phase_diagram`` experiment: the order-to-chaos phase diagram of tanh networks
(chi_1, xi_c, measured gradient growth) and trainable depth against 6 xi_c (Schoenholz et al.
2017 style).

Same as ``neurosim run phase_diagram``; extra arguments are passed through (``--preset quick``,
``--set key=value``, ``--workers N``, ``--out DIR``). Writes ``results/phase_diagram/`` by
default.
"""

import sys

from _run import run

if __name__ == "__main__":
    sys.exit(run("run", "phase_diagram"))

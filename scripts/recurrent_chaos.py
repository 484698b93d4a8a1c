"""Figures of the ``recurrent_chaos`` experiment: largest Lyapunov exponent and activity against
gain for a recurrent rate network, with and without bounded synapses.

Same as ``neurosim run recurrent_chaos``; extra arguments are passed through (``--preset
quick``, ``--set key=value``, ``--workers N``, ``--out DIR``). Writes
``results/recurrent_chaos/`` by default.
"""

import sys

from _run import run

if __name__ == "__main__":
    sys.exit(run("run", "recurrent_chaos"))

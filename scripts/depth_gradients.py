"""Figures of the ``depth_gradients`` experiment: per-layer gradient norms at initialisation and
during training for four activations under four initialisations, with mean-field theory lines
(Glorot & Bengio 2010 style).

Same as ``neurosim run depth_gradients``; extra arguments are passed through (``--preset
quick``, ``--set key=value``, ``--workers N``, ``--out DIR``). Writes
``results/depth_gradients/`` by default.
"""

import sys

from _run import run

if __name__ == "__main__":
    sys.exit(run("run", "depth_gradients"))

"""Figures of the ``ann_vs_bio`` experiment: a backprop MLP against a bounded rate network: per-
layer signal profiles of BP, FA, DFA and EP, the effect of synaptic bounds, r_max and Dale's
law, and accuracy vs depth.

Same as ``neurosim run ann_vs_bio``; extra arguments are passed through (``--preset quick``,
``--set key=value``, ``--workers N``, ``--out DIR``). Writes ``results/ann_vs_bio/`` by default.
"""

import sys

from _run import run

if __name__ == "__main__":
    sys.exit(run("run", "ann_vs_bio"))

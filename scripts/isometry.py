"""Figures of the ``isometry`` experiment: input-output Jacobian spectra at criticality, Gaussian
vs orthogonal weights, tanh vs relu, across depth (Pennington et al. 2017 style).

Same as ``neurosim run isometry``; extra arguments are passed through (``--preset quick``,
``--set key=value``, ``--workers N``, ``--out DIR``). Writes ``results/isometry/`` by default.
"""

import sys

from _run import run

if __name__ == "__main__":
    sys.exit(run("run", "isometry"))

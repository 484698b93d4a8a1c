"""The main job: the default experiment suite (every experiment at its 'quick' size).

Writes ``results/default/`` (data, manifest, figures and ``report.md``) in about 5 minutes on a
2-core laptop from a cold compile cache, with progress bars. Running it again reuses the finished
points and only redraws the figures and the report. Extra arguments go to ``neurosim run``, e.g.
``python scripts/main.py --workers 2`` or ``python scripts/main.py --preset tiny --out /tmp/x``.
"""

import sys

from _run import run

if __name__ == "__main__":
    sys.exit(run("run", "default"))

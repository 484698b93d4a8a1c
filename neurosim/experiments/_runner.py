"""Saved, resumable runs of experiments and suites: sweep -> point files -> data.npz -> figures
and report, with the manifest kept up to date along the way."""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .. import results, sweep


@dataclass
class RunOutcome:
    """What :func:`run_to_disk` (or :func:`run_suite`) did.

    Attributes
    ----------
    path : Path
        The run (or suite) directory.
    status : str
        ``complete`` or ``incomplete`` (some points failed: rerun to retry them). An interrupt
        (Ctrl-C) propagates as KeyboardInterrupt after the manifest records ``interrupted``.
    computed, skipped, failed : int
        Points run in this call (failed ones included), found finished on disk, and failed.
    failures : list of dict
        Status records of the failed points (coordinates, seed, error).
    seconds : float
    children : list of RunOutcome
        Per-experiment outcomes of a suite.
    """

    path: Path
    status: str
    computed: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0
    failures: list = field(default_factory=list)
    children: list = field(default_factory=list)


def evaluate_point(name: str, config: dict, coords: dict, seed: int) -> dict:
    """Module-level (picklable) entry for one point of experiment ``name``."""
    from . import get

    exp = get(name)
    return exp.point(exp.config_from_dict(config), coords, seed)


class _ManifestUpdater:
    """Rewrites the manifest's point table after finished points, at most every ``interval``
    seconds (the point files are the ground truth; the manifest is a readable summary)."""

    def __init__(self, run: results.RunDir, interval: float = 0.5):
        self.run, self.interval, self.last = run, interval, 0.0

    def __call__(self, statuses, force: bool = False):
        now = time.monotonic()
        if not force and now - self.last < self.interval:
            return
        self.last = now
        self.run.manifest["points"] = [s.to_dict() for s in statuses]
        self.run.save_manifest()


def run_to_disk(name: str, cfg, out, *, workers: int | None = None, scheduler=None,
                executor=None, progress: bool = True, figures: bool = True,
                extra: Mapping | None = None) -> RunOutcome:
    """Run experiment ``name`` with the resolved config ``cfg`` into directory ``out``.

    A new directory starts a run; a directory holding the same experiment and config resumes
    it (finished points are kept, failed ones retried); anything else raises
    :class:`neurosim.results.ResultsError` before writing. When every point is done the data
    are assembled into ``data.npz`` and, with ``figures=True``, the figures and ``report.md``
    are drawn from that file.
    """
    from . import get

    exp = get(name)
    start = time.perf_counter()
    config = exp.as_dict(cfg)
    if results.check_target(out, "experiment", name, config) == "resume" and \
            _up_to_date(out, figures):
        n = len(exp.points(cfg))
        return RunOutcome(Path(out), "complete", skipped=n,
                          seconds=time.perf_counter() - start)
    owns = executor is None
    if owns:  # connect (Dask) before anything is written
        executor = sweep.make_executor(workers, scheduler)
    try:
        run = results.RunDir.open(out, kind="experiment", name=name, config=config,
                                  seed=cfg.seed, extra={"title": exp.title, **(extra or {})})
        points = exp.points(cfg)
        updater = _ManifestUpdater(run)
        fn = functools.partial(evaluate_point, name, config)
        try:
            outcome = sweep.run_sweep(fn, points, run.points_dir, executor=executor,
                                      progress=progress, description=name, on_update=updater)
        except KeyboardInterrupt:
            run.finish("interrupted")
            raise
    finally:
        if owns:
            executor.close()
    updater(outcome.statuses, force=True)
    run.manifest["executor"] = outcome.executor
    run.set_timing("sweep_s", outcome.seconds)
    run.set_timing("points_total_s", sum(s.seconds or 0.0 for s in outcome.statuses))
    failures = [s.to_dict() for s in outcome.statuses if s.status != "done"]
    result = RunOutcome(run.path, "complete", computed=outcome.computed,
                        skipped=len(points) - outcome.computed, failed=len(failures),
                        failures=failures)
    if failures:
        run.set_timing("total_s", time.perf_counter() - start)
        run.finish("incomplete")
        result.status, result.seconds = "incomplete", time.perf_counter() - start
        return result
    t0 = time.perf_counter()
    store = sweep.PointStore(run.points_dir)
    data = exp.assemble(cfg, points, [store.load(p) for p in points])
    run.save_data(data)
    run.set_timing("assemble_s", time.perf_counter() - t0)
    run.set_timing("total_s", time.perf_counter() - start)
    run.finish("complete")
    if figures:
        from .. import report

        t0 = time.perf_counter()
        report.write_report(run.path)
        run.set_timing("figures_and_report_s", time.perf_counter() - t0)
        run.save_manifest()
    result.seconds = time.perf_counter() - start
    return result


def _up_to_date(path, figures: bool) -> bool:
    """A finished run whose data (and, if asked for, report) are in place: nothing to do."""
    path = Path(path)
    manifest = results.read_manifest(path)
    has_data = manifest.get("kind") == "suite" or (path / results.DATA).is_file()
    return (manifest.get("status") == "complete" and has_data
            and (not figures or (path / results.REPORT).is_file()))


def run_suite(suite: str, configs: Mapping[str, object], out, *, workers: int | None = None,
              scheduler=None, progress: bool = True, figures: bool = True,
              preset: str | None = None) -> RunOutcome:
    """Run several experiments (``configs``: name -> resolved config, in order) into one suite
    directory, one sub-directory per experiment, with a combined report."""
    from . import get

    start = time.perf_counter()
    out = Path(out)
    suite_config = {name: get(name).as_dict(cfg) for name, cfg in configs.items()}
    seeds = sorted({cfg.seed for cfg in configs.values()})
    if check_suite_targets(out, suite, configs) == "resume" and _up_to_date(out, figures) \
            and all(_up_to_date(out / name, figures) for name in configs):
        n = sum(len(get(name).points(cfg)) for name, cfg in configs.items())
        return RunOutcome(out, "complete", skipped=n, seconds=time.perf_counter() - start)
    executor = sweep.make_executor(workers, scheduler)
    children, suite_run = [], None
    try:
        suite_run = results.RunDir.open(out, kind="suite", name=suite, config=suite_config,
                                        seed=seeds[0] if len(seeds) == 1 else None,
                                        extra={"experiments": list(configs), "preset": preset})
        for name, cfg in configs.items():
            child = run_to_disk(name, cfg, out / name, executor=executor, progress=progress,
                                figures=figures, extra={"suite": suite, "preset": preset})
            children.append(child)
            suite_run.set_timing(f"{name}_s", child.seconds)
            suite_run.save_manifest()
    except KeyboardInterrupt:
        if suite_run is not None:
            suite_run.finish("interrupted")
        raise
    finally:
        executor.close()
    suite_run.manifest["executor"] = executor.describe()
    suite_run.manifest["n_points"] = sum(c.computed + c.skipped + c.failed for c in children)
    suite_run.set_timing("points_total_s", sum(
        results.read_manifest(out / name).get("timings", {}).get("points_total_s", 0.0)
        for name in configs))
    status = "complete" if all(c.status == "complete" for c in children) else "incomplete"
    suite_run.set_timing("total_s", time.perf_counter() - start)
    suite_run.finish(status)
    if figures and status == "complete":
        from .. import report

        t0 = time.perf_counter()
        report.write_suite_report(out, redraw=False)  # each experiment drew its own
        suite_run.set_timing("report_s", time.perf_counter() - t0)
        suite_run.save_manifest()
    return RunOutcome(out, status, computed=sum(c.computed for c in children),
                      skipped=sum(c.skipped for c in children),
                      failed=sum(c.failed for c in children),
                      seconds=time.perf_counter() - start,
                      failures=[f for c in children for f in c.failures], children=children)


def check_suite_targets(out, suite: str, configs: Mapping[str, object]) -> str:
    """``"new"`` or ``"resume"``; raises :class:`neurosim.results.ResultsError` if ``out``
    cannot take this suite (nothing is written)."""
    from . import get

    suite_config = {name: get(name).as_dict(cfg) for name, cfg in configs.items()}
    state = results.check_target(out, "suite", suite, suite_config)
    if state == "resume":
        for name, cfg in configs.items():
            results.check_target(Path(out) / name, "experiment", name, get(name).as_dict(cfg))
    return state


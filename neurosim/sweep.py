"""Parameter sweeps: a grid of config values x seeds, run serially, on local processes or on Dask.

Every grid point is an independent task ``fn(coords, seed) -> {name: array}`` whose seed is
derived from the run seed and the point's coordinates alone (:func:`derive_seed`), so the numbers
do not depend on the executor, the number of workers or the order in which points finish. Each
finished point is saved at once, atomically, as its own ``.npz`` file; running the same sweep
again into the same directory skips the finished points, which makes an interrupted sweep
(Ctrl-C, SIGKILL, a lost node) resumable. A point that raises is recorded with its error and
traceback and the sweep goes on; failed points are retried on the next run.

Local processes use the spawn start method (forked children that run OpenMP-parallel Numba
kernels are killed) and each worker caps its Numba, OpenMP and BLAS threads at
``cores // workers`` before Numba loads. This module imports only the standard library at import
time so that worker start-up can set those limits first.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import results

_THREAD_ENV = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")
_META_PREFIX = "__neurosim_"


# --------------------------------------------------------------------------------------------
# grid points and seeds
# --------------------------------------------------------------------------------------------

def _canonical(coords: Mapping) -> str:
    return json.dumps(results.to_jsonable(coords), sort_keys=True, separators=(",", ":"),
                      allow_nan=False)


def coords_key(coords: Mapping) -> str:
    """A stable 12-hex-digit hash of a point's coordinates (independent of key order)."""
    return hashlib.sha256(_canonical(coords).encode("utf-8")).hexdigest()[:12]


def derive_seed(run_seed: int, coords: Mapping) -> int:
    """The seed of one grid point: a function of the run seed and the coordinates only.

    Built with :class:`numpy.random.SeedSequence` (entropy = ``run_seed``, spawn key = the
    SHA-256 of the canonical JSON of ``coords``), so it is the same on every machine, in every
    process and for every executor. Returns a non-negative integer below 2**63.
    """
    import numpy as np

    if isinstance(run_seed, bool) or not isinstance(run_seed, (int, np.integer)) or run_seed < 0:
        raise ValueError(f"run_seed must be a non-negative integer, got {run_seed!r}")
    digest = hashlib.sha256(_canonical(coords).encode("utf-8")).digest()
    words = tuple(int.from_bytes(digest[i:i + 4], "little") for i in range(0, 16, 4))
    sequence = np.random.SeedSequence(entropy=int(run_seed), spawn_key=words)
    return int(sequence.generate_state(1, np.uint64)[0] >> np.uint64(1))


@dataclass(frozen=True)
class Point:
    """One grid point.

    Attributes
    ----------
    index : int
        Position in the grid (row-major over the axes in the order given, replicate last).
    coords : dict
        Axis name -> value, plus ``"replicate"``.
    seed : int
        Derived with :func:`derive_seed`.
    """

    index: int
    coords: dict = field(hash=False)
    seed: int = 0

    @property
    def key(self) -> str:
        return coords_key(self.coords)

    @property
    def name(self) -> str:
        """File stem: grid index and coordinate hash, e.g. ``00003-1a2b3c4d5e6f``."""
        return f"{self.index:05d}-{self.key}"

    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.coords.items())


def grid(axes: Mapping[str, Sequence], *, replicates: int = 1, run_seed: int = 0) -> list[Point]:
    """Every combination of the axis values, ``replicates`` times each.

    Parameters
    ----------
    axes : mapping of str to sequence
        Config key -> values. The first axis varies slowest.
    replicates : int
        Independent repetitions (different derived seeds) of every combination.
    run_seed : int
        The run seed that every point seed derives from.

    Returns
    -------
    list of Point
    """
    import itertools

    if isinstance(replicates, bool) or not isinstance(replicates, int) or replicates < 1:
        raise ValueError(f"replicates must be an integer >= 1, got {replicates!r}")
    names = list(axes)
    if "replicate" in names:
        raise ValueError("'replicate' is reserved for the seed axis; rename that axis")
    values = []
    for name in names:
        axis = list(axes[name])
        if not axis:
            raise ValueError(f"sweep axis {name!r} has no values")
        values.append(axis)
    points = []
    for combo in itertools.product(*values, range(replicates)):
        coords = dict(zip(names, combo[:-1], strict=True))
        coords["replicate"] = combo[-1]
        coords = results.to_jsonable(coords)
        points.append(Point(len(points), coords, derive_seed(run_seed, coords)))
    return points


# --------------------------------------------------------------------------------------------
# point files
# --------------------------------------------------------------------------------------------

class PointStore:
    """The directory of finished (``NAME.npz``) and failed (``NAME.error.json``) points."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)

    def npz_path(self, point: Point) -> Path:
        return self.directory / f"{point.name}.npz"

    def error_path(self, point: Point) -> Path:
        return self.directory / f"{point.name}.error.json"

    def is_done(self, point: Point) -> bool:
        return self.npz_path(point).is_file()

    def save(self, point: Point, arrays: Mapping, seconds: float) -> Path:
        """Save a finished point (its arrays plus its coordinates, seed and run time)."""
        payload = {}
        for name, value in arrays.items():
            if name.startswith(_META_PREFIX):
                raise ValueError(f"array name {name!r} is reserved (prefix {_META_PREFIX!r})")
            payload[name] = value
        payload[_META_PREFIX + "coords"] = _canonical(point.coords)
        payload[_META_PREFIX + "seed"] = str(point.seed)
        payload[_META_PREFIX + "seconds"] = float(seconds)
        path = results.save_npz(self.npz_path(point), payload)
        error = self.error_path(point)
        if error.exists():
            error.unlink()
        return path

    def save_failure(self, point: Point, error: str, trace: str, seconds: float) -> Path:
        return results.write_json(self.error_path(point), {
            "coords": point.coords, "seed": point.seed, "error": error, "traceback": trace,
            "seconds": seconds, "time": results.now()})

    def load(self, point: Point) -> dict:
        """The arrays of a finished point (metadata stripped, coordinates checked)."""
        data = results.load_npz(self.npz_path(point))
        stored = str(data.get(_META_PREFIX + "coords", ""))
        if stored != _canonical(point.coords):
            raise results.ResultsError(
                f"point file {str(self.npz_path(point))!r} holds coordinates {stored}, expected "
                f"{_canonical(point.coords)}")
        return {k: v for k, v in data.items() if not k.startswith(_META_PREFIX)}

    def seconds(self, point: Point) -> float | None:
        data = results.load_npz(self.npz_path(point))
        value = data.get(_META_PREFIX + "seconds")
        return None if value is None else float(value)

    def failure(self, point: Point) -> dict | None:
        path = self.error_path(point)
        return results.read_json(path) if path.is_file() else None


# --------------------------------------------------------------------------------------------
# executors
# --------------------------------------------------------------------------------------------

def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS / Windows
        return os.cpu_count() or 1


def limit_threads(threads: int) -> None:
    """Cap Numba, OpenMP and BLAS threads of this process at ``threads``.

    Environment variables take effect for libraries not loaded yet; already-loaded Numba gets
    :func:`numba.set_num_threads` and loaded BLAS libraries get threadpoolctl (when installed).
    """
    for name in _THREAD_ENV:
        os.environ[name] = str(threads)
    if "numba" in sys.modules:
        import numba

        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    if "numpy" in sys.modules:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # pragma: no cover - optional
            return
        threadpool_limits(limits=threads)


def _evaluate(fn: Callable, coords: dict, seed: int):
    """Run one point; never raises (errors come back as data so the sweep goes on)."""
    start = time.perf_counter()
    try:
        arrays = fn(dict(coords), seed)
        if not isinstance(arrays, Mapping):
            raise TypeError(f"a sweep point must return a mapping of arrays, got "
                            f"{type(arrays).__name__}")
        return True, dict(arrays), None, None, time.perf_counter() - start
    except Exception as exc:
        return (False, None, f"{type(exc).__name__}: {exc}", traceback.format_exc(),
                time.perf_counter() - start)


class SerialExecutor:
    """Points one after another in this process."""

    name = "serial"
    workers = 1

    def describe(self) -> dict:
        return {"kind": self.name, "workers": 1}

    def imap_unordered(self, fn: Callable, points: Sequence[Point]) -> Iterator:
        for point in points:
            yield point, _evaluate(fn, point.coords, point.seed)

    def close(self) -> None:
        pass


class ProcessExecutor:
    """Points on ``workers`` local processes (spawn start method), ``threads`` threads each."""

    name = "processes"

    def __init__(self, workers: int, threads: int | None = None):
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
        self.workers = workers
        self.threads = threads if threads is not None else max(1, available_cores() // workers)
        self._pool = None

    def describe(self) -> dict:
        return {"kind": self.name, "workers": self.workers, "threads_per_worker": self.threads}

    def _ensure_pool(self):
        if self._pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(
                max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=limit_threads, initargs=(self.threads,))
        return self._pool

    def imap_unordered(self, fn: Callable, points: Sequence[Point]) -> Iterator:
        from concurrent.futures import as_completed

        pool = self._ensure_pool()
        futures = {pool.submit(_evaluate, fn, p.coords, p.seed): p for p in points}
        try:
            for future in as_completed(futures):
                yield futures[future], future.result()
        finally:
            for future in futures:
                future.cancel()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def _import_distributed():
    try:
        import distributed
    except ImportError as exc:
        raise ImportError(
            "running a sweep on a Dask cluster needs the 'distributed' extra: "
            "pip install 'neurosim[distributed]'") from exc
    return distributed


class DaskExecutor:
    """Points on a Dask distributed cluster given its scheduler address (or a ``Client``)."""

    name = "dask"

    def __init__(self, scheduler):
        distributed = _import_distributed()
        if isinstance(scheduler, distributed.Client):
            self.client, self._owns_client = scheduler, False
        else:
            if not isinstance(scheduler, str) or not scheduler:
                raise ValueError(f"scheduler must be an address such as 'tcp://host:8786', got "
                                 f"{scheduler!r}")
            try:
                self.client = distributed.Client(scheduler, timeout="20s")
            except OSError as exc:
                raise ConnectionError(
                    f"cannot connect to the Dask scheduler at {scheduler!r}: {exc}") from exc
            self._owns_client = True
        self.address = self.client.scheduler.address
        workers = self.client.scheduler_info().get("workers", {})
        self.workers = sum(w.get("nthreads", 1) for w in workers.values()) or 1
        # One BLAS/Numba thread per Dask task thread: the workers' cores are already shared.
        self.client.run(limit_threads, 1)

    def describe(self) -> dict:
        return {"kind": self.name, "scheduler": self.address, "workers": self.workers}

    def imap_unordered(self, fn: Callable, points: Sequence[Point]) -> Iterator:
        distributed = _import_distributed()
        token = hashlib.sha256(f"{time.time_ns()}-{os.getpid()}".encode()).hexdigest()[:8]
        futures = {}
        for p in points:
            future = self.client.submit(_evaluate, fn, p.coords, p.seed, pure=False,
                                        key=f"neurosim-point-{p.name}-{token}")
            futures[future] = p
        try:
            for future in distributed.as_completed(list(futures)):
                yield futures[future], future.result()
        finally:
            self.client.cancel(list(futures))

    def close(self) -> None:
        if self._owns_client:
            self.client.close()


def make_executor(workers: int | None = None, scheduler=None):
    """``scheduler`` -> Dask; ``workers`` > 1 -> local processes; otherwise serial."""
    if scheduler is not None and workers not in (None, 1):
        raise ValueError("give either workers (local processes) or scheduler (Dask), not both")
    if scheduler is not None:
        return DaskExecutor(scheduler)
    if workers is None or workers == 1:
        return SerialExecutor()
    return ProcessExecutor(workers)


# --------------------------------------------------------------------------------------------
# the sweep
# --------------------------------------------------------------------------------------------

@dataclass
class PointStatus:
    """Where one point stands after a sweep."""

    point: Point
    status: str  # "done", "failed" or "pending"
    seconds: float | None = None
    error: str | None = None
    computed_now: bool = False

    def to_dict(self) -> dict:
        return {"index": self.point.index, "name": self.point.name, "coords": self.point.coords,
                "seed": self.point.seed, "status": self.status, "seconds": self.seconds,
                "error": self.error}


@dataclass
class SweepResult:
    """Outcome of :func:`run_sweep`: one :class:`PointStatus` per point, in grid order."""

    statuses: list[PointStatus]
    executor: dict
    seconds: float

    @property
    def complete(self) -> bool:
        return all(s.status == "done" for s in self.statuses)

    def count(self, status: str) -> int:
        return sum(s.status == status for s in self.statuses)

    @property
    def computed(self) -> int:
        return sum(s.computed_now for s in self.statuses)


def run_sweep(fn: Callable, points: Sequence[Point], directory: str | os.PathLike, *,
              workers: int | None = None, scheduler=None, executor=None,
              progress: bool = True, description: str = "sweep",
              on_update: Callable[[list[PointStatus]], None] | None = None) -> SweepResult:
    """Run every unfinished point of a grid and save each one the moment it finishes.

    Parameters
    ----------
    fn : callable
        ``fn(coords: dict, seed: int) -> mapping of str to array``; must be picklable (a
        module-level function or a :func:`functools.partial` of one) for process and Dask runs.
    points : sequence of Point
        Usually from :func:`grid`.
    directory : path-like
        Where point files live. Points already saved there are skipped; failed ones are retried.
    workers : int, optional
        Local worker processes (1 or None: serial in this process).
    scheduler : str or distributed.Client, optional
        Dask scheduler address; exclusive with ``workers``.
    executor : optional
        A ready executor (overrides ``workers`` and ``scheduler``; not closed here).
    progress : bool
        Show a tqdm progress bar.
    description : str
        Progress bar label.
    on_update : callable, optional
        Called with the list of statuses after every finished or failed point (e.g. to rewrite
        a manifest).

    Returns
    -------
    SweepResult

    Notes
    -----
    On KeyboardInterrupt the points finished so far stay saved and the interrupt propagates.
    """
    start = time.perf_counter()
    store = PointStore(directory)
    store.directory.mkdir(parents=True, exist_ok=True)
    results.remove_stale_temporaries(store.directory)
    statuses = []
    for p in points:
        if store.is_done(p):
            statuses.append(PointStatus(p, "done", store.seconds(p)))
        else:
            failure = store.failure(p)
            statuses.append(PointStatus(p, "pending", None,
                                        None if failure is None else failure.get("error")))
    by_index = {s.point.index: s for s in statuses}
    todo = [s.point for s in statuses if s.status != "done"]

    owns = executor is None
    if owns:
        executor = make_executor(workers, scheduler)
    from tqdm.auto import tqdm

    bar = tqdm(total=len(points), initial=len(points) - len(todo), desc=description,
               unit="point", disable=not progress, dynamic_ncols=True, leave=True)
    try:
        if todo:
            for point, (ok, arrays, error, trace, seconds) in executor.imap_unordered(fn, todo):
                status = by_index[point.index]
                status.seconds, status.computed_now = seconds, True
                if ok:
                    store.save(point, arrays, seconds)
                    status.status, status.error = "done", None
                else:
                    store.save_failure(point, error, trace, seconds)
                    status.status, status.error = "failed", error
                    bar.write(f"{description}: point {point.index} ({point.label()}) failed: "
                              f"{error}")
                bar.update(1)
                if on_update is not None:
                    on_update(statuses)
    finally:
        bar.close()
        if owns:
            executor.close()
    return SweepResult(statuses, executor.describe(), time.perf_counter() - start)

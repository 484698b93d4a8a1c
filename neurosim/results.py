"""Run directories on disk: atomic writes, array data, the JSON manifest and its guards.

One experiment run lives in one directory::

    RUN/manifest.json        resolved config, seed, versions, git commit, times, point status
    RUN/points/*.npz         one file per finished sweep point (written the moment it finishes)
    RUN/points/*.error.json  one file per failed sweep point (its error and traceback)
    RUN/data.npz             the experiment's arrays, assembled from the points
    RUN/figures/*.png|.pdf   figures drawn from data.npz alone
    RUN/report.md            figures with captions

A suite (``neurosim run all`` / ``default``) is a directory with its own ``manifest.json``
(``kind = "suite"``), one run directory per experiment, and a combined ``report.md``.

Every file is written to a temporary file in the target directory, flushed, fsynced and renamed
into place (``os.replace``), so a reader (or a run resumed after SIGKILL) sees either the old
file or the complete new one, never a torn one. ``.npz`` files hold plain arrays only and load
with ``allow_pickle=False``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import io
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

FORMAT = "neurosim-results"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DATA = "data.npz"
POINTS = "points"
FIGURES = "figures"
REPORT = "report.md"
_TMP_PREFIX = ".tmp-"
_PACKAGES = ("neurosim", "numpy", "numba", "llvmlite", "scipy", "matplotlib", "tqdm")


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files readable by their owner only; results follow the umask instead
_FILE_MODE = 0o666 & ~_current_umask()


class ResultsError(ValueError):
    """A results directory cannot be used as asked (wrong experiment, other config, corrupt)."""


# --------------------------------------------------------------------------------------------
# atomic file writes
# --------------------------------------------------------------------------------------------

def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same directory + ``os.replace``).

    The parent directory is created if needed. The file and its directory entry are fsynced, so
    the new content survives a crash or SIGKILL right after this returns.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX + path.name + ".", dir=path.parent)
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def remove_stale_temporaries(directory: str | os.PathLike) -> int:
    """Delete temporary files left by writes that were killed mid-way; returns how many."""
    directory = Path(directory)
    if not directory.is_dir():
        return 0
    removed = 0
    for entry in directory.iterdir():
        if entry.name.startswith(_TMP_PREFIX) and entry.is_file():
            with contextlib.suppress(OSError):
                entry.unlink()
                removed += 1
    return removed


# --------------------------------------------------------------------------------------------
# arrays and JSON
# --------------------------------------------------------------------------------------------

def _as_plain_array(name: str, value):
    import numpy as np

    arr = np.asarray(value)
    if arr.dtype.hasobject:
        raise TypeError(
            f"array {name!r} has dtype object ({type(value).__name__}); only numeric, bool and "
            "string arrays can be saved (no pickling)"
        )
    return arr


def save_npz(path: str | os.PathLike, arrays: Mapping[str, object]) -> Path:
    """Save a mapping of arrays (or scalars / strings) atomically as an uncompressed ``.npz``.

    Raises
    ------
    TypeError
        A value would need pickling (object dtype).
    """
    import numpy as np

    plain = {}
    for name, value in arrays.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"array names must be non-empty strings, got {name!r}")
        plain[name] = _as_plain_array(name, value)
    buffer = io.BytesIO()
    np.savez(buffer, **plain)
    return atomic_write_bytes(path, buffer.getvalue())


def load_npz(path: str | os.PathLike) -> dict:
    """Load an ``.npz`` written by :func:`save_npz` into a dict (``allow_pickle=False``)."""
    import numpy as np

    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise ResultsError(f"cannot read array file {str(path)!r}: {exc}") from exc


def to_jsonable(value):
    """Convert config values, NumPy scalars/arrays, tuples and paths into plain JSON types.

    Non-finite floats become the strings ``"nan"``, ``"inf"``, ``"-inf"`` (strict JSON has no
    NaN).
    """
    import numpy as np

    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        return to_jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store {value!r} ({type(value).__name__}) in a JSON manifest")


def write_json(path: str | os.PathLike, obj) -> Path:
    """Write ``obj`` as indented, key-sorted strict JSON, atomically."""
    text = json.dumps(to_jsonable(obj), indent=2, sort_keys=True, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def read_json(path: str | os.PathLike):
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise ResultsError(f"cannot read JSON file {str(path)!r}: {exc}") from exc


def config_hash(config: Mapping) -> str:
    """SHA-256 of the canonical JSON of a resolved config (key order does not matter)."""
    text = json.dumps(to_jsonable(config), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------------------------
# provenance
# --------------------------------------------------------------------------------------------

def now() -> str:
    """The current time as an ISO 8601 string with the UTC offset."""
    return _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds")


def git_commit(directory: str | os.PathLike | None = None) -> dict | None:
    """Commit hash and dirty flag of the git checkout holding ``directory`` (default: the
    neurosim source tree), or None when it is not in a git checkout or git is missing.

    ``dirty`` says whether tracked files outside the top-level ``results/`` folder differ
    from the commit: a run that rewrites a committed results folder is still a clean run.
    """
    if directory is None:
        directory = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", os.fspath(directory), "rev-parse", "HEAD"],
                              capture_output=True, text=True, timeout=10, check=False)
        if head.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "-C", os.fspath(directory), "status", "--porcelain", "--untracked-files=no",
             "--", ":(top)", ":(top,exclude)results"],
            capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": head.stdout.strip(),
            "dirty": bool(status.stdout.strip()) if status.returncode == 0 else None}


def environment_info() -> dict:
    """Python, platform, CPU count and versions of neurosim and its dependencies."""
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    if versions["neurosim"] is None:
        from . import __version__

        versions["neurosim"] = __version__
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "packages": versions,
        "git": git_commit(),
    }


# --------------------------------------------------------------------------------------------
# run directories
# --------------------------------------------------------------------------------------------

def _describe_difference(old: Mapping, new: Mapping) -> str:
    keys = sorted(set(old) | set(new))
    diffs = [f"{k}: {old.get(k, '<missing>')!r} there, {new.get(k, '<missing>')!r} now"
             for k in keys if old.get(k) != new.get(k)]
    shown = "; ".join(diffs[:3])
    if len(diffs) > 3:
        shown += f"; and {len(diffs) - 3} more"
    return shown


def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def read_manifest(path: str | os.PathLike) -> dict:
    """The manifest of a run or suite directory.

    Raises
    ------
    ResultsError
        ``path`` is not a neurosim results directory, or its manifest is unreadable.
    """
    path = Path(path)
    if not path.is_dir():
        raise ResultsError(f"results directory {str(path)!r} does not exist")
    file = path / MANIFEST
    if not file.is_file():
        raise ResultsError(f"{str(path)!r} is not a neurosim results directory (no {MANIFEST})")
    manifest = read_json(file)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ResultsError(f"{str(file)!r} is not a neurosim manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ResultsError(
            f"{str(file)!r} has format version {manifest.get('format_version')!r}; this neurosim "
            f"reads version {FORMAT_VERSION}")
    return manifest


def check_target(path: str | os.PathLike, kind: str, name: str, config: Mapping) -> str:
    """Decide, without writing anything, whether a run may use ``path``.

    Parameters
    ----------
    path : path-like
        The output directory.
    kind : {"experiment", "suite"}
    name : str
        Experiment (or suite) name.
    config : mapping
        The fully resolved config (JSON-able).

    Returns
    -------
    str
        ``"new"`` (missing or empty directory) or ``"resume"`` (the same experiment and config).

    Raises
    ------
    ResultsError
        ``path`` is a file, a non-empty directory that is not a neurosim run, or a run of a
        different experiment or config.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ResultsError(f"output path {str(path)!r} exists and is not a directory")
    if not path.exists() or _is_empty_dir(path):
        return "new"
    if not (path / MANIFEST).is_file():
        raise ResultsError(
            f"output directory {str(path)!r} is not empty and holds no neurosim {MANIFEST}; "
            "choose another --out")
    manifest = read_manifest(path)
    there = (manifest.get("kind"), manifest.get("experiment"))
    if there != (kind, name):
        what = f"{there[0]} {there[1]!r}" if there[0] else "another kind of run"
        raise ResultsError(
            f"output directory {str(path)!r} holds results of {what}, not {kind} {name!r}; "
            "choose another --out")
    if manifest.get("config_hash") != config_hash(config):
        diff = _describe_difference(manifest.get("config", {}), to_jsonable(config))
        raise ResultsError(
            f"output directory {str(path)!r} holds {kind} {name!r} run with a different config "
            f"({diff}); rerun with the same settings to resume, or choose another --out")
    return "resume"


class RunDir:
    """One experiment (or suite) run directory and its manifest.

    Create with :meth:`open`, which applies the guards of :func:`check_target`. The manifest is
    rewritten atomically by :meth:`save_manifest`; point files are the ground truth for which
    sweep points are finished, so a manifest that lags behind after a SIGKILL is repaired on the
    next :meth:`open`.
    """

    def __init__(self, path: str | os.PathLike, manifest: dict):
        self.path = Path(path)
        self.manifest = manifest

    # -- layout -------------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    @property
    def data_path(self) -> Path:
        return self.path / DATA

    @property
    def points_dir(self) -> Path:
        return self.path / POINTS

    @property
    def figures_dir(self) -> Path:
        return self.path / FIGURES

    @property
    def report_path(self) -> Path:
        return self.path / REPORT

    @property
    def kind(self) -> str:
        return self.manifest["kind"]

    @property
    def name(self) -> str:
        return self.manifest["experiment"]

    @property
    def config(self) -> dict:
        return self.manifest["config"]

    # -- opening ------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike, *, kind: str, name: str, config: Mapping,
             seed: int | None = None, extra: Mapping | None = None) -> RunDir:
        """Start a new run in ``path`` or resume the one there (same kind, name and config)."""
        path = Path(path)
        state = check_target(path, kind, name, config)
        if state == "resume":
            run = cls(path, read_manifest(path))
            run.manifest["environment"] = environment_info()
            run.manifest["resumed"] = [*run.manifest.get("resumed", []), now()]
            run.manifest["status"] = "running"
            run.manifest["finished"] = None
            remove_stale_temporaries(path)
            remove_stale_temporaries(run.points_dir)
        else:
            manifest = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "kind": kind,
                "experiment": name,
                "config": to_jsonable(config),
                "config_hash": config_hash(config),
                "seed": seed,
                "environment": environment_info(),
                "started": now(),
                "finished": None,
                "status": "running",
                "timings": {},
                "points": [],
            }
            manifest.update(to_jsonable(dict(extra or {})))
            run = cls(path, manifest)
        run.save_manifest()
        return run

    @classmethod
    def load(cls, path: str | os.PathLike) -> RunDir:
        """Open an existing run read-only (for plotting and reports)."""
        return cls(path, read_manifest(path))

    # -- manifest -----------------------------------------------------------------------------
    def save_manifest(self) -> None:
        write_json(self.manifest_path, self.manifest)

    def set_timing(self, key: str, seconds: float) -> None:
        self.manifest.setdefault("timings", {})[key] = round(float(seconds), 6)

    def finish(self, status: str) -> None:
        """Record the end time and final status (``complete``, ``incomplete``, ``interrupted``)."""
        self.manifest["status"] = status
        self.manifest["finished"] = now()
        self.save_manifest()

    # -- data ---------------------------------------------------------------------------------
    def save_data(self, arrays: Mapping[str, object]) -> Path:
        return save_npz(self.data_path, arrays)

    def load_data(self) -> dict:
        if not self.data_path.is_file():
            raise ResultsError(
                f"{str(self.path)!r} has no {DATA}: the run did not finish; rerun the same "
                "command to complete it")
        return load_npz(self.data_path)

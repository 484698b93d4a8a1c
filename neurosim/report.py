"""Figures (PNG and PDF) and ``report.md`` for saved runs, drawn from ``data.npz`` and the
manifest alone: no simulation is ever rerun here."""

from __future__ import annotations

import io
import os
from pathlib import Path

from . import results


def _save_figure(fig, stem: Path) -> tuple[Path, Path]:
    """Write ``stem.png`` (150 dpi) and ``stem.pdf`` atomically; returns both paths."""
    paths = []
    for fmt, kwargs in (("png", {"dpi": 150}), ("pdf", {"metadata": {"CreationDate": None}})):
        buffer = io.BytesIO()
        fig.savefig(buffer, format=fmt, **kwargs)
        paths.append(results.atomic_write_bytes(stem.with_suffix(f".{fmt}"), buffer.getvalue()))
    return paths[0], paths[1]


def _close(fig) -> None:
    import matplotlib.pyplot as plt

    plt.close(fig)


def _experiment_of(run: results.RunDir):
    from . import experiments

    exp = experiments.get(run.name)
    return exp, exp.config_from_dict(run.config)


def write_figures(path: str | os.PathLike) -> list[tuple[str, Path, Path]]:
    """Draw every figure of the experiment run in ``path`` from its saved data.

    Returns
    -------
    list of (name, png_path, pdf_path)
    """
    run = results.RunDir.load(path)
    if run.kind != "experiment":
        raise results.ResultsError(f"{str(path)!r} is a {run.kind}, not an experiment run")
    exp, cfg = _experiment_of(run)
    data = run.load_data()
    written = []
    for name, fig in exp.figures(data, cfg).items():
        try:
            png, pdf = _save_figure(fig, run.figures_dir / name)
        finally:
            _close(fig)
        written.append((name, png, pdf))
    run.manifest["figures"] = [name for name, _, _ in written]
    run.save_manifest()
    return written


def _existing_figures(run: results.RunDir) -> list[str] | None:
    """Names of the figures already drawn for this run's data, or None if any is missing."""
    names = run.manifest.get("figures")
    if not names:
        return None
    for name in names:
        if not all((run.figures_dir / f"{name}.{ext}").is_file() for ext in ("png", "pdf")):
            return None
    return names


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


def _provenance_lines(manifest: dict) -> list[str]:
    env = manifest.get("environment", {})
    packages = env.get("packages", {})
    versions = ", ".join(f"{k} {v}" for k, v in packages.items() if v)
    git = env.get("git") or {}
    commit = git.get("commit")
    commit_text = "not a git checkout" if not commit else (
        commit[:12] + (" (uncommitted changes)" if git.get("dirty") else ""))
    lines = [
        f"- status: **{manifest.get('status')}**; started {manifest.get('started')}, finished "
        f"{manifest.get('finished')}",
        f"- seed: {manifest.get('seed')}; preset: {manifest.get('preset') or 'custom'}",
        f"- software: Python {env.get('python')}, {versions}; git {commit_text}",
        f"- machine: {env.get('platform')}, {env.get('cpu_count')} CPUs",
    ]
    timings = manifest.get("timings", {})
    if "total_s" in timings:
        executor = manifest.get("executor", {})
        n_points = manifest.get("n_points", len(manifest.get("points", [])))
        lines.append(
            f"- time: {timings['total_s']:.1f} s in all ({n_points} sweep points, "
            f"{timings.get('points_total_s', 0.0):.1f} s of point compute, executor "
            f"{executor.get('kind', '?')} with {executor.get('workers', '?')} worker(s))")
    return lines


def _figure_block(number: int, name: str, caption: str, prefix: str) -> list[str]:
    return [
        f"![{name}]({prefix}figures/{name}.png)",
        "",
        f"*Figure {number}.* {caption} ([PDF]({prefix}figures/{name}.pdf))",
        "",
    ]


def _draw(run: results.RunDir, redraw: bool = True) -> dict:
    """Draw the run's figures (or, with ``redraw=False``, reuse complete existing ones); return
    what a report section needs."""
    exp, cfg = _experiment_of(run)
    data = run.load_data()
    names = None if redraw else _existing_figures(run)
    if names is None:
        names = [name for name, _, _ in write_figures(run.path)]
    return {"exp": exp, "names": names, "captions": exp.captions(data, cfg),
            "headline": exp.headline(data, cfg)}


def _section(drawn: dict, heading: str, prefix: str, first_figure: int) -> tuple[list[str], int]:
    exp = drawn["exp"]
    lines = [f"{heading} {exp.title}", "", exp.summary, ""]
    if drawn["headline"]:
        lines += [drawn["headline"], ""]
    number = first_figure
    for name in drawn["names"]:
        lines += _figure_block(number, name, drawn["captions"].get(name, ""), prefix)
        number += 1
    return lines, number


def _config_table(config: dict) -> list[str]:
    lines = ["| key | value |", "|---|---|"]
    lines += [f"| `{k}` | {_fmt(v)} |" for k, v in sorted(config.items())]
    return lines


def write_report(path: str | os.PathLike, redraw: bool = True) -> Path:
    """Draw the figures of the run (or suite) in ``path`` and write its ``report.md``.

    With ``redraw=False`` figures already drawn from the current data are reused.
    """
    run = results.RunDir.load(path)
    if run.kind == "suite":
        return write_suite_report(path, redraw=redraw)
    return _write_experiment_report(run, _draw(run, redraw))


def _write_experiment_report(run: results.RunDir, drawn: dict) -> Path:
    lines, _ = _section(drawn, "#", "", 1)
    lines += ["## How this was run", "",
              f"`neurosim run {run.name}` wrote this directory; `neurosim report` on it redraws "
              "the figures and this page from `data.npz` and `manifest.json` alone.", ""]
    lines += _provenance_lines(run.manifest) + ["", "### Configuration", ""]
    lines += _config_table(run.config) + [""]
    return results.atomic_write_text(run.report_path, "\n".join(lines))


def write_suite_report(path: str | os.PathLike, redraw: bool = True) -> Path:
    """Figures of every experiment in the suite directory ``path`` and one combined report
    (``redraw=False`` reuses figures already drawn from the current data)."""
    suite = results.RunDir.load(path)
    if suite.kind != "suite":
        return write_report(path, redraw=redraw)
    names = suite.manifest.get("experiments", list(suite.config))
    runs = [results.RunDir.load(Path(path) / name) for name in names]
    lines = [f"# neurosim results: suite `{suite.name}`", "",
             "How learning signals travel across depth in backprop MLPs and in bounded "
             "rate-based neuron networks. Every figure below was drawn from the saved data in "
             "this directory; `neurosim report` regenerates this page without rerunning any "
             "simulation.", "",
             "| experiment | status | points | time (s) |", "|---|---|---|---|"]
    for run in runs:
        total = run.manifest.get("timings", {}).get("total_s")
        total = "-" if total is None else f"{total:.1f}"
        lines.append(f"| `{run.name}` | {run.manifest['status']} "
                     f"| {len(run.manifest.get('points', []))} | {total} |")
    lines += [""] + _provenance_lines(suite.manifest) + [""]
    number = 1
    for run in runs:
        drawn = _draw(run, redraw)
        _write_experiment_report(run, drawn)
        section, number = _section(drawn, f"## `{run.name}`:", f"{run.name}/", number)
        lines += section
    return results.atomic_write_text(Path(path) / results.REPORT, "\n".join(lines))


def plot(path: str | os.PathLike) -> list[Path]:
    """Redraw every figure of a run or suite directory; returns the PNG paths."""
    run = results.RunDir.load(path)
    if run.kind == "suite":
        names = run.manifest.get("experiments", list(run.config))
        return [png for name in names for _, png, _ in write_figures(Path(path) / name)]
    return [png for _, png, _ in write_figures(path)]

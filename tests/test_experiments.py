"""Every experiment end to end at its tiny size (data, manifest, figures, report), redrawing from
saved data only, bit-identical executors, and resume after SIGKILL of the ``neurosim`` command."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from neurosim import cli, experiments, results, sweep

NAMES = experiments.names()


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    """The default suite at its tiny size, run once through the command line (serially)."""
    out = tmp_path_factory.mktemp("suite") / "default"
    status = cli.main(["run", "default", "--preset", "tiny", "--out", str(out),
                       "--no-progress"])
    assert status == 0
    return out


def _arrays_equal(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def _png_ok(path):
    import matplotlib.image

    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert np.ptp(image[..., :3]) > 0  # not a blank canvas


@pytest.mark.parametrize("name", NAMES)
def test_experiment_end_to_end(suite, name):
    run_dir = suite / name
    manifest = json.loads((run_dir / "manifest.json").read_text())
    exp = experiments.get(name)
    cfg = exp.config("tiny")
    assert manifest["experiment"] == name and manifest["status"] == "complete"
    assert manifest["config"] == exp.as_dict(cfg) and manifest["seed"] == cfg.seed
    assert manifest["preset"] == "tiny" and manifest["suite"] == "default"
    assert manifest["finished"] >= manifest["started"]
    packages = manifest["environment"]["packages"]
    assert all(packages[p] for p in ("neurosim", "numpy", "numba", "scipy", "matplotlib"))
    points = exp.points(cfg)
    assert [p["name"] for p in manifest["points"]] == [p.name for p in points]
    assert all(p["status"] == "done" and p["seconds"] >= 0 for p in manifest["points"])
    assert {"sweep_s", "assemble_s", "total_s"} <= set(manifest["timings"])
    assert sorted(f.name for f in (run_dir / "points").iterdir()) == sorted(
        f"{p.name}.npz" for p in points)

    data = results.load_npz(run_dir / "data.npz")
    assert data and all(v.dtype != object for v in data.values())
    figures = exp.figures(data, cfg)
    captions = exp.captions(data, cfg)
    report = (run_dir / "report.md").read_text()
    for fig_name in figures:
        for ext in ("png", "pdf"):
            path = run_dir / "figures" / f"{fig_name}.{ext}"
            assert path.stat().st_size > 1000, path
        assert (run_dir / "figures" / f"{fig_name}.pdf").read_bytes().startswith(b"%PDF")
        assert f"![{fig_name}](figures/{fig_name}.png)" in report
        assert captions[fig_name] in report
        assert any(ch.isdigit() for ch in captions[fig_name])
    _png_ok(run_dir / "figures" / f"{next(iter(figures))}.png")


def test_suite_report_and_manifest(suite):
    manifest = json.loads((suite / "manifest.json").read_text())
    assert manifest["kind"] == "suite" and manifest["status"] == "complete"
    assert manifest["experiments"] == list(NAMES)
    report = (suite / "report.md").read_text()
    for name in NAMES:
        assert f"`{name}`" in report and f"]({name}/figures/" in report
    numbers = [int(line.split(".*")[0].split()[-1]) for line in report.splitlines()
               if line.startswith("*Figure ")]
    assert numbers == list(range(1, len(numbers) + 1))


def test_plot_and_report_redraw_from_saved_data_only(suite, tmp_path, monkeypatch):
    import shutil

    from neurosim import report

    copy = tmp_path / "copy"
    shutil.copytree(suite, copy)
    for name in ("isometry", "recurrent_chaos"):
        shutil.rmtree(copy / name / "figures")
        (copy / name / "report.md").unlink()
    (copy / "report.md").unlink()
    stamps = {p: p.stat().st_mtime_ns for p in copy.rglob("*.npz")}

    def no_compute(*args, **kwargs):
        raise AssertionError("a simulation ran during plot/report")

    for name in NAMES:
        monkeypatch.setattr(type(experiments.get(name)), "point", no_compute)
    assert cli.main(["plot", str(copy / "recurrent_chaos")]) == 0
    assert (copy / "recurrent_chaos" / "figures" / "chaos.png").is_file()
    assert cli.main(["report", str(copy / "isometry")]) == 0
    for name in ("isometry", "recurrent_chaos"):
        assert sorted(p.name for p in (copy / name / "figures").iterdir()) == sorted(
            p.name for p in (suite / name / "figures").iterdir())
    assert (copy / "isometry" / "report.md").read_text() == \
        (suite / "isometry" / "report.md").read_text()
    report.write_suite_report(copy, redraw=False)
    assert (copy / "report.md").read_text() == (suite / "report.md").read_text()
    assert {p: p.stat().st_mtime_ns for p in copy.rglob("*.npz")} == stamps


def test_rerun_reuses_every_point(suite, capsys):
    before = {p: p.stat().st_mtime_ns for p in suite.rglob("*") if p.is_file()}
    assert cli.main(["run", "default", "--preset", "tiny", "--out", str(suite),
                     "--no-progress"]) == 0
    n_points = len([p for p in before if p.parent.name == "points"])
    assert f"0 point(s) computed, {n_points} reused" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in suite.rglob("*") if p.is_file()} == before


def test_serial_processes_and_dask_are_bit_identical(suite, tmp_path):
    distributed = pytest.importorskip("distributed")
    name = "ann_vs_bio"  # MLP engine and every rate-network rule
    cfg = experiments.config(name, "tiny")
    reference = results.load_npz(suite / name / "data.npz")
    outcome = experiments.run_to_disk(name, cfg, tmp_path / "proc", workers=2, progress=False,
                                      figures=False)
    assert outcome.status == "complete" and outcome.computed == len(
        experiments.get(name).points(cfg))
    _arrays_equal(reference, results.load_npz(tmp_path / "proc" / "data.npz"))
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        experiments.run_to_disk(name, cfg, tmp_path / "dask", scheduler=cluster.scheduler_address,
                                progress=False, figures=False)
    _arrays_equal(reference, results.load_npz(tmp_path / "dask" / "data.npz"))
    manifest = json.loads((tmp_path / "dask" / "manifest.json").read_text())
    assert manifest["executor"]["kind"] == "dask"


def test_command_killed_with_sigkill_resumes(tmp_path):
    name, settings = "depth_gradients", ["--set", "replicates=4", "--set", "epochs=3"]
    out = tmp_path / "killed"
    argv = [sys.executable, "-m", "neurosim.cli", "run", name, "--preset", "tiny", "--out",
            str(out), "--no-progress", *settings]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [os.path.dirname(os.path.dirname(os.path.abspath(cli.__file__))),
         os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list((out / "points").glob("*.npz"))) >= 2:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    cfg = experiments.config(name, "tiny", replicates=4, epochs=3)
    points = experiments.get(name).points(cfg)
    done_before = {p.name: p.stat().st_mtime_ns for p in (out / "points").glob("*.npz")}
    assert 2 <= len(done_before) < len(points)
    assert not (out / "data.npz").exists()

    resumed = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    assert f"{len(points) - len(done_before)} point(s) computed, {len(done_before)} reused" \
        in resumed.stdout
    assert sorted(p.name for p in (out / "points").iterdir()) == sorted(
        f"{p.name}.npz" for p in points)
    assert {n: (out / "points" / n).stat().st_mtime_ns for n in done_before} == done_before
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and len(manifest["resumed"]) == 1

    fresh = tmp_path / "fresh"
    experiments.run_to_disk(name, cfg, fresh, progress=False, figures=False)
    _arrays_equal(results.load_npz(fresh / "data.npz"), results.load_npz(out / "data.npz"))


def test_failed_points_are_reported_and_retried(tmp_path, monkeypatch, capsys):
    exp = experiments.get("remedies")
    original = type(exp).point

    def flaky(self, cfg, coords, seed):
        if coords["remedy"] == "adam":
            raise FloatingPointError("simulated failure")
        return original(self, cfg, coords, seed)

    monkeypatch.setattr(type(exp), "point", flaky)
    out = tmp_path / "r"
    assert cli.main(["run", "remedies", "--preset", "tiny", "--out", str(out),
                     "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "FloatingPointError: simulated failure" in err and "run the same command" in err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "incomplete" and not (out / "data.npz").exists()
    assert [p["status"] for p in manifest["points"]].count("failed") == 1
    monkeypatch.setattr(type(exp), "point", original)
    assert cli.main(["run", "remedies", "--preset", "tiny", "--out", str(out),
                     "--no-progress"]) == 0
    assert "1 point(s) computed, 3 reused" in capsys.readouterr().out


def test_in_memory_run_matches_saved_data(suite):
    exp = experiments.get("remedies")
    data = exp.run(exp.config("tiny"))
    _arrays_equal(results.load_npz(suite / "remedies" / "data.npz"), data)


def test_point_seeds_depend_on_run_seed_only(suite):
    cfg = experiments.config("depth_gradients", "tiny")
    points = experiments.get("depth_gradients").points(cfg)
    assert points[0].seed == sweep.derive_seed(cfg.seed, points[0].coords)
    other = experiments.get("depth_gradients").points(
        experiments.config("depth_gradients", "tiny", seed=1))
    assert {p.seed for p in points}.isdisjoint({p.seed for p in other})


def test_isometry_critical_points_match_mean_field():
    from neurosim.analysis import meanfield
    from neurosim.experiments.isometry import critical_point

    sw2, sb2, q = critical_point("tanh", 0.05)
    assert meanfield.chi1("tanh", sw2**0.5, sb2**0.5) == pytest.approx(1.0, abs=1e-9)
    assert meanfield.q_star("tanh", sw2**0.5, sb2**0.5) == pytest.approx(0.05, rel=1e-8)
    assert critical_point("relu", 0.3) == (2.0, 0.0, 0.3)


def test_bounded_gain_matches_monte_carlo():
    from neurosim.experiments.recurrent_chaos import effective_gain

    z = np.random.default_rng(0).standard_normal(2_000_000)
    for g, c in ((0.8, 1.5), (3.0, 1.5), (2.0, 4.0)):
        mc = np.sqrt(np.mean(np.clip(g * z, -c, c) ** 2))
        assert effective_gain(g, c) == pytest.approx(mc, rel=2e-3)
        assert effective_gain(g, c) < min(g, c)
    assert effective_gain(1.7, None) == 1.7


@pytest.mark.parametrize("name", NAMES)
def test_every_preset_resolves_to_a_valid_grid(name):
    exp = experiments.get(name)
    sizes = {}
    for preset in experiments.PRESETS:
        cfg = exp.config(preset)
        points = exp.points(cfg)
        assert len({p.name for p in points}) == len(points) > 0
        assert exp.config_from_dict(exp.as_dict(cfg)) == cfg
        sizes[preset] = len(points)
    assert sizes["tiny"] <= sizes["quick"] <= sizes["full"]

"""Run directories: atomic writes, arrays without pickling, manifests and their guards."""

import json
import os
import shutil
import subprocess

import numpy as np
import pytest

from neurosim import results


def test_atomic_write_replaces_whole_file_and_leaves_no_temporaries(tmp_path):
    target = tmp_path / "sub" / "file.txt"
    results.atomic_write_text(target, "first")
    results.atomic_write_text(target, "second version")
    assert target.read_text() == "second version"
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.txt"]


def test_failed_write_keeps_old_content(tmp_path, monkeypatch):
    target = tmp_path / "file.txt"
    results.atomic_write_text(target, "old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(results.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        results.atomic_write_text(target, "new")
    monkeypatch.undo()
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.txt"]


def test_stale_temporaries_are_removed(tmp_path):
    (tmp_path / ".tmp-data.npz.abc").write_bytes(b"torn")
    (tmp_path / "keep.npz").write_bytes(b"x")
    assert results.remove_stale_temporaries(tmp_path) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["keep.npz"]


def test_npz_roundtrip_plain_arrays(tmp_path):
    arrays = {"a": np.arange(6.0).reshape(2, 3), "n": 3, "flag": True,
              "names": np.array(["tanh", "relu"]), "f32": np.ones(2, np.float32)}
    path = results.save_npz(tmp_path / "d.npz", arrays)
    back = results.load_npz(path)
    assert set(back) == set(arrays)
    np.testing.assert_array_equal(back["a"], arrays["a"])
    assert back["n"] == 3 and back["flag"].dtype == bool
    assert back["names"].tolist() == ["tanh", "relu"]
    assert back["f32"].dtype == np.float32


def test_npz_refuses_objects_both_ways(tmp_path):
    with pytest.raises(TypeError, match="object"):
        results.save_npz(tmp_path / "bad.npz", {"x": np.array([{"a": 1}], dtype=object)})
    assert not (tmp_path / "bad.npz").exists()
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, x=np.array([None, 1], dtype=object))
    with pytest.raises(results.ResultsError, match="pickled.npz"):
        results.load_npz(pickled)


def test_json_is_strict_and_handles_numpy(tmp_path):
    path = results.write_json(tmp_path / "m.json", {
        "x": np.float64(1.5), "n": np.int64(3), "bad": float("nan"), "inf": -np.inf,
        "arr": np.arange(3), "t": (1, 2)})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"x": 1.5, "n": 3, "bad": "nan", "inf": "-inf", "arr": [0, 1, 2],
                                "t": [1, 2]}
    with pytest.raises(TypeError, match="JSON"):
        results.to_jsonable({"f": object()})


def test_config_hash_ignores_key_order_but_not_values():
    a = results.config_hash({"x": 1, "y": [1.0, 2.0]})
    assert a == results.config_hash({"y": [1.0, 2.0], "x": 1})
    assert a != results.config_hash({"x": 2, "y": [1.0, 2.0]})


def test_environment_names_versions_and_commit():
    env = results.environment_info()
    for name in ("neurosim", "numpy", "numba", "scipy", "matplotlib"):
        assert env["packages"][name], name
    assert env["python"].count(".") == 2
    git = env["git"]
    assert git is None or (len(git["commit"]) == 40 and isinstance(git["dirty"], bool))


def _snapshot(path):
    return {p.relative_to(path).as_posix(): p.read_bytes()
            for p in sorted(path.rglob("*")) if p.is_file()}


def test_run_dir_new_resume_and_guards(tmp_path):
    out = tmp_path / "run"
    cfg = {"width": 8, "seeds": [0, 1]}
    assert results.check_target(out, "experiment", "exp_a", cfg) == "new"
    run = results.RunDir.open(out, kind="experiment", name="exp_a", config=cfg, seed=7,
                              extra={"preset": "tiny"})
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["experiment"] == "exp_a" and manifest["seed"] == 7
    assert manifest["status"] == "running" and manifest["preset"] == "tiny"
    assert manifest["config"] == cfg and manifest["finished"] is None
    assert manifest["environment"]["packages"]["numpy"] == np.__version__
    run.set_timing("sweep_s", 1.25)
    run.finish("complete")

    (out / "points").mkdir()
    (out / "points" / ".tmp-00001.npz.xyz").write_bytes(b"torn")
    assert results.check_target(out, "experiment", "exp_a", {"seeds": [0, 1], "width": 8}) \
        == "resume"
    again = results.RunDir.open(out, kind="experiment", name="exp_a", config=cfg)
    assert again.manifest["started"] == manifest["started"]
    assert len(again.manifest["resumed"]) == 1 and again.manifest["timings"]["sweep_s"] == 1.25
    assert not (out / "points" / ".tmp-00001.npz.xyz").exists()

    before = _snapshot(out)
    with pytest.raises(results.ResultsError, match="exp_a.*not experiment 'exp_b'"):
        results.RunDir.open(out, kind="experiment", name="exp_b", config=cfg)
    with pytest.raises(results.ResultsError, match=r"different config \(width: 8 there, 9 now"):
        results.RunDir.open(out, kind="experiment", name="exp_a", config={**cfg, "width": 9})
    with pytest.raises(results.ResultsError, match="suite"):
        results.check_target(out, "suite", "exp_a", cfg)
    assert _snapshot(out) == before


def test_foreign_directories_are_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(results.ResultsError, match="no neurosim manifest.json"):
        results.check_target(tmp_path, "experiment", "x", {})
    with pytest.raises(results.ResultsError, match="not a directory"):
        results.check_target(tmp_path / "notes.txt", "experiment", "x", {})
    (tmp_path / "empty").mkdir()
    assert results.check_target(tmp_path / "empty", "experiment", "x", {}) == "new"
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "manifest.json").write_text("{not json")
    with pytest.raises(results.ResultsError, match="cannot read JSON"):
        results.read_manifest(bad)
    (bad / "manifest.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(results.ResultsError, match="not a neurosim manifest"):
        results.read_manifest(bad)


def test_load_data_of_unfinished_run_says_so(tmp_path):
    run = results.RunDir.open(tmp_path / "r", kind="experiment", name="e", config={})
    with pytest.raises(results.ResultsError, match="did not finish"):
        run.load_data()
    run.save_data({"x": np.arange(3)})
    np.testing.assert_array_equal(results.RunDir.load(tmp_path / "r").load_data()["x"],
                                  np.arange(3))
    assert sorted(os.listdir(tmp_path / "r")) == ["data.npz", "manifest.json"]


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_dirty_flag_ignores_the_results_folder(tmp_path):
    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "data.txt").write_text("old\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    assert results.git_commit(tmp_path)["dirty"] is False
    (tmp_path / "results" / "data.txt").write_text("new\n")
    assert results.git_commit(tmp_path)["dirty"] is False
    (tmp_path / "code.py").write_text("x = 2\n")
    assert results.git_commit(tmp_path)["dirty"] is True

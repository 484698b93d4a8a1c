"""The ``neurosim`` command: listing, config resolution, and bad input -> one line, exit 2,
output directory untouched."""

import pytest

from neurosim import cli, experiments, results


def _tree(path):
    """Every file under ``path`` with its bytes and mtime (or None when missing)."""
    if not path.exists():
        return None
    return {p.relative_to(path).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture
def other_run(tmp_path):
    """A directory holding results of another experiment (isometry, tiny)."""
    out = tmp_path / "iso"
    cfg = experiments.config("isometry", "tiny")
    run = results.RunDir.open(out, kind="experiment", name="isometry",
                              config=experiments.get("isometry").as_dict(cfg), seed=cfg.seed)
    run.save_data({"x": [1.0]})
    run.finish("complete")
    return out


def _bad(capsys, argv, match, out=None):
    before = _tree(out) if out is not None else None
    status = cli.main(argv)
    captured = capsys.readouterr()
    assert status == 2, captured
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("neurosim: error: ")
    assert match in lines[0], lines[0]
    assert captured.out == ""
    if out is not None:
        assert _tree(out) == before
    return lines[0]


@pytest.mark.parametrize("argv, match", [
    (["run", "depth_gradient"], "unknown experiment 'depth_gradient' (did you mean "
                                "'depth_gradients'?)"),
    (["run", "depth_gradients", "--set", "epoch=3"], "did you mean 'epochs'?"),
    (["run", "depth_gradients", "--set", "width=abc"], "depth_gradients.width must be an "
                                                       "integer, got 'abc'"),
    (["run", "depth_gradients", "--set", "width=1"], "depth_gradients.width must be >= 2, "
                                                     "got 1"),
    (["run", "depth_gradients", "--set", "lr=-0.1"], "depth_gradients.lr must be > 0.0"),
    (["run", "depth_gradients", "--set", "lr=[1, 2]"], "depth_gradients.lr must be a number"),
    (["run", "depth_gradients", "--set", "activations=tanh,relux"],
     "got 'relux' (did you mean 'relu'?)"),
    (["run", "depth_gradients", "--set", "width"], "--set expects key=value"),
    (["run", "ann_vs_bio", "--set", "rule_lrs=0.1,0.2"], "needs one learning rate per rule"),
    (["run", "default", "--set", "widht=4"], "did you mean 'width'?"),
    (["run", "default", "--set", "isometri.width=4"], "did you mean 'isometry'?"),
    (["run", "default", "--set", "isometry.wdth=4"], "unknown config key 'wdth' for "
                                                     "experiment 'isometry'"),
    (["run", "recurrent_chaos", "--set", "dt=0.02"], "dt must be smaller than tau"),
    (["run", "isometry", "--workers", "0"], "--workers"),
    (["run", "isometry", "--workers", "2", "--scheduler", "tcp://127.0.0.1:1"],
     "not allowed with"),
    (["run", "isometry", "--seed", "-3"], "--seed"),
    (["run", "isometry", "--preset", "huge"], "--preset"),
    (["frobnicate"], "invalid choice"),
    (["run"], "required"),
])
def test_bad_arguments(capsys, tmp_path, argv, match):
    out = tmp_path / "out"
    _bad(capsys, [*argv, "--out", str(out)] if argv[0] == "run" and len(argv) > 1 else argv,
         match)
    assert not out.exists()


def test_bad_toml_files(capsys, tmp_path):
    out = tmp_path / "out"
    cases = {
        "syntax.toml": ("width = [1\n", "is not valid TOML"),
        "type.toml": ("[depth_gradients]\nwidth = 'wide'\n", "must be an integer"),
        "key.toml": ("widht = 3\n", "did you mean 'width'?"),
        "table.toml": ("[depth_gradient]\nwidth = 3\n", "did you mean 'depth_gradients'?"),
        "binary.toml": (b"\xff\xfe\x00", "config file"),
    }
    for name, (text, match) in cases.items():
        path = tmp_path / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        _bad(capsys, ["run", "depth_gradients", "--config", str(path), "--out", str(out)], match)
    _bad(capsys, ["run", "depth_gradients", "--config", str(tmp_path / "missing.toml")],
         "does not exist")
    assert not out.exists()


def test_out_dir_with_other_results_is_left_alone(capsys, tmp_path, other_run):
    _bad(capsys, ["run", "depth_gradients", "--preset", "tiny", "--out", str(other_run)],
         "holds results of experiment 'isometry', not experiment 'depth_gradients'", other_run)
    _bad(capsys, ["run", "isometry", "--preset", "tiny", "--set", "width=30", "--out",
                  str(other_run)], "different config (width: 24 there, 30 now)", other_run)
    _bad(capsys, ["run", "default", "--preset", "tiny", "--out", str(other_run)],
         "not suite 'default'", other_run)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    _bad(capsys, ["run", "isometry", "--out", str(foreign)], "holds no neurosim manifest.json",
         foreign)
    _bad(capsys, ["plot", str(foreign)], "not a neurosim results directory", foreign)
    _bad(capsys, ["report", str(tmp_path / "nowhere")], "does not exist")


def test_plot_refuses_unfinished_run(capsys, tmp_path):
    run = results.RunDir.open(tmp_path / "r", kind="experiment", name="isometry",
                              config=experiments.get("isometry").as_dict(
                                  experiments.config("isometry", "tiny")))
    _bad(capsys, ["report", str(run.path)], "has no data.npz", run.path)


def test_list_names_every_experiment_and_key(capsys):
    assert cli.main(["list", "-v"]) == 0
    out = capsys.readouterr().out
    for name in experiments.names():
        assert name in out
    assert "default" in out and "quick" in out
    assert "gaussian_sigma_w2 = 0.3333333333333333" in out


def test_config_layers_resolve_in_order(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text("seed = 4\nreplicates = 3\n[isometry]\ndepths = [2, 4]\nwidth = 12\n"
                    "[depth_gradients]\nepochs = 7\n")
    names, preset, cfgs = cli.resolve_configs("isometry", None, str(toml),
                                              ["width=16", "inits=orthogonal"], None)
    assert names == ["isometry"] and preset == "full"
    cfg = cfgs["isometry"]
    assert (cfg.depths, cfg.width, cfg.inits, cfg.seed, cfg.replicates) == \
        ([2, 4], 16, ["orthogonal"], 4, 3)
    names, preset, cfgs = cli.resolve_configs("default", None, str(toml),
                                              ["isometry.width=20"], 9)
    assert preset == "quick" and names == list(experiments.names())
    assert cfgs["isometry"].width == 20 and cfgs["depth_gradients"].epochs == 7
    assert cfgs["depth_gradients"].width == 64  # quick preset, untouched by isometry's table
    assert {c.seed for c in cfgs.values()} == {9}
    assert cfgs["remedies"].replicates == 3


def test_set_values_parse_like_toml():
    from neurosim.experiments._config import parse_assignment

    assert parse_assignment("a=3") == ("a", 3)
    assert parse_assignment("a = 0.5") == ("a", 0.5)
    assert parse_assignment("a=[1, 2]") == ("a", [1, 2])
    assert parse_assignment("a=tanh") == ("a", "tanh")
    assert parse_assignment("a='x=y'") == ("a", "x=y")
    assert parse_assignment("a=true") == ("a", True)
    cfg = experiments.config("isometry", "full", depths="2,4", tanh_q_star="0.1")
    assert cfg.depths == [2, 4] and cfg.tanh_q_star == 0.1

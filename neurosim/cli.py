"""The ``neurosim`` command: list, run, plot and report experiments.

::

    neurosim list [-v]
    neurosim run NAME|all|default [--preset tiny|quick|full] [--config FILE.toml]
                 [--set key=value ...] [--out DIR] [--workers N | --scheduler ADDRESS]
                 [--seed S] [--no-progress]
    neurosim plot RESULTS_DIR
    neurosim report RESULTS_DIR

Bad input (unknown experiment, unknown or mistyped key, a value of the wrong type or range, an
unreadable TOML file, an output directory holding other results) prints one line
``neurosim: error: ...`` and exits with status 2 before anything is written. Other exit
statuses: 0 done, 1 some sweep points failed (rerun the same command to retry them), 130
interrupted (rerun the same command to resume).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_OK, EXIT_FAILED_POINTS, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """Bad input: reported as one line, exit status 2, nothing written."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="neurosim", description=(
        "Compare how learning signals travel across depth in backprop MLPs and bounded "
        "rate-based neuron networks: run named experiments, save results, draw figures."))
    from . import __version__

    parser.add_argument("--version", action="version", version=f"neurosim {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("list", help="list experiments, suites and their config keys")
    p.add_argument("-v", "--verbose", action="store_true", help="show every config key")

    p = sub.add_parser("run", help="run an experiment or a suite (all, default)")
    p.add_argument("target", metavar="NAME", help="experiment name, 'all' or 'default'")
    p.add_argument("--preset", choices=("tiny", "quick", "full"),
                   help="size preset (default: full; 'default' suite: quick)")
    p.add_argument("--config", metavar="FILE.toml", help="TOML file of config values")
    p.add_argument("--set", dest="assignments", metavar="KEY=VALUE", action="append",
                   default=[], help="override one config value (repeatable); in a suite, "
                   "EXPERIMENT.KEY=VALUE targets one experiment")
    p.add_argument("--out", metavar="DIR", help="output directory (default: results/NAME)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=_positive_int, metavar="N",
                       help="local worker processes (default: 1, serial)")
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="Dask scheduler address, e.g. tcp://host:8786")
    p.add_argument("--seed", type=_seed, metavar="S", help="run seed (sets every config's seed)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")

    for name, text in (("plot", "redraw the figures of a results directory"),
                       ("report", "redraw figures and report.md of a results directory")):
        p = sub.add_parser(name, help=text)
        p.add_argument("directory", metavar="RESULTS_DIR")
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") \
            from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


# --------------------------------------------------------------------------------------------
# config resolution
# --------------------------------------------------------------------------------------------

def _read_toml(path: str) -> dict:
    from .experiments import _toml

    file = Path(path)
    if not file.is_file():
        raise UsageError(f"config file {path!r} does not exist")
    try:
        return _toml.load_file(file)
    except ImportError as exc:
        raise UsageError(str(exc)) from None
    except _toml.TOMLDecodeError as exc:
        raise UsageError(f"config file {path!r} is not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read config file {path!r}: {exc}") from None


def _split_layer(values: dict, names: list[str], source: str) -> dict[str, dict]:
    """Distribute one layer of config values (a TOML document or the --set pairs) over the
    experiments being run: ``{name: {...}}`` tables and ``name.key`` keys go to that experiment,
    bare keys to every experiment of the run that has them."""
    from . import experiments
    from .experiments._config import ConfigError, config_fields, unknown_key_error

    fields = {name: config_fields(experiments.get(name).Config) for name in names}
    out = {name: {} for name in names}
    for key, value in values.items():
        target, _, sub = key.partition(".")
        if isinstance(value, dict) or sub:
            table = value if isinstance(value, dict) else {sub: value}
            if target not in experiments.names():
                from ._validation import unknown_name_error

                raise ConfigError(str(unknown_name_error(f"experiment in {source}", target,
                                                         experiments.names())))
            if target not in names:
                continue  # a table for an experiment this run does not include
            for k, v in table.items():
                if k not in fields[target]:
                    raise unknown_key_error(f"experiment {target!r}", k, fields[target])
                out[target][k] = v
            continue
        owners = [name for name in names if key in fields[name]]
        if not owners:
            valid = sorted(set().union(*fields.values()))
            owner = f"experiment {names[0]!r}" if len(names) == 1 else "any experiment of the run"
            raise unknown_key_error(owner, key, valid)
        for name in owners:
            out[name][key] = value
    return out


def resolve_configs(target: str, preset: str | None, config_file: str | None,
                    assignments: list[str], seed: int | None):
    """(experiment names, preset, {name: config}) for a ``run`` command; raises UsageError."""
    from . import experiments
    from .experiments._config import ConfigError, parse_assignment

    if target in experiments.SUITES:
        names, suite_preset = experiments.SUITES[target]
        names = list(names)
        preset = preset or suite_preset
    else:
        try:
            experiments.get(target)
        except ValueError as exc:
            raise UsageError(f"{exc}; suites: {', '.join(experiments.SUITES)}") from None
        names, preset = [target], preset or "full"
    try:
        file_layer = _split_layer(_read_toml(config_file), names, f"config file {config_file!r}") \
            if config_file else {n: {} for n in names}
        pairs = dict(parse_assignment(a) for a in assignments)
        set_layer = _split_layer(pairs, names, "--set")
        configs = {}
        for name in names:
            seed_layer = {} if seed is None else {"seed": seed}
            configs[name] = experiments.get(name).config(preset, file_layer[name],
                                                         set_layer[name], seed_layer)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    return names, preset, configs


# --------------------------------------------------------------------------------------------
# commands
# --------------------------------------------------------------------------------------------

def _cmd_list(args) -> int:
    from . import experiments
    from .experiments._config import describe_fields

    width = max(len(n) for n in experiments.names())
    print("experiments:")
    for name in experiments.names():
        exp = experiments.get(name)
        print(f"  {name:<{width}}  {exp.summary}")
        if args.verbose:
            for key, default, text in describe_fields(exp.Config):
                print(f"      {key} = {default}    {text}")
    print("suites:")
    for name, (_members, preset) in experiments.SUITES.items():
        print(f"  {name:<{width}}  every experiment at the {preset!r} preset")
    print("run one with: neurosim run NAME [--preset tiny|quick|full] [--set key=value ...]")
    return EXIT_OK


def _cmd_run(args) -> int:
    from . import experiments, results, sweep

    names, preset, configs = resolve_configs(args.target, args.preset, args.config,
                                             args.assignments, args.seed)
    out = Path(args.out) if args.out else Path("results") / args.target
    suite = args.target in experiments.SUITES
    try:
        if suite:
            experiments._runner.check_suite_targets(out, args.target, configs)
        else:
            results.check_target(out, "experiment", args.target,
                                 experiments.get(args.target).as_dict(configs[args.target]))
    except results.ResultsError as exc:
        raise UsageError(str(exc)) from None
    if args.scheduler is not None:
        try:
            sweep._import_distributed()
        except ImportError as exc:
            raise UsageError(str(exc)) from None

    import matplotlib

    matplotlib.use("Agg")
    progress = not args.no_progress
    try:
        if suite:
            outcome = experiments.run_suite(args.target, configs, out, workers=args.workers,
                                            scheduler=args.scheduler, progress=progress,
                                            preset=preset)
        else:
            outcome = experiments.run_to_disk(args.target, configs[args.target], out,
                                              workers=args.workers, scheduler=args.scheduler,
                                              progress=progress, extra={"preset": preset})
    except KeyboardInterrupt:
        print(f"neurosim: interrupted; finished points are saved in {out}; run the same command "
              "again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ConnectionError as exc:
        raise UsageError(str(exc)) from None
    report = out / results.REPORT
    print(f"neurosim: {outcome.status}: {outcome.computed} point(s) computed, "
          f"{outcome.skipped} reused, {outcome.failed} failed in {outcome.seconds:.1f} s -> {out}")
    if outcome.status == "complete":
        print(f"neurosim: report: {report}")
        return EXIT_OK
    for failure in outcome.failures[:10]:
        print(f"neurosim: failed point {failure['name']} {failure['coords']}: "
              f"{failure['error']}", file=sys.stderr)
    print("neurosim: run the same command again to retry the failed points", file=sys.stderr)
    return EXIT_FAILED_POINTS


def _load_for_drawing(directory: str):
    from . import results

    try:
        run = results.RunDir.load(directory)
        runs = [run] if run.kind == "experiment" else [
            results.RunDir.load(Path(directory) / name)
            for name in run.manifest.get("experiments", [])]
        for r in runs:
            if not r.data_path.is_file():
                raise results.ResultsError(
                    f"{str(r.path)!r} has no {results.DATA} (status {r.manifest.get('status')}); "
                    "finish the run first by rerunning the same command")
    except results.ResultsError as exc:
        raise UsageError(str(exc)) from None
    import matplotlib

    matplotlib.use("Agg")
    return run


def _cmd_plot(args) -> int:
    from . import report

    _load_for_drawing(args.directory)
    paths = report.plot(args.directory)
    print(f"neurosim: drew {len(paths)} figure(s) (PNG and PDF) under {args.directory}")
    return EXIT_OK


def _cmd_report(args) -> int:
    from . import report

    _load_for_drawing(args.directory)
    path = report.write_report(args.directory)
    print(f"neurosim: report: {path}")
    return EXIT_OK


_COMMANDS = {"list": _cmd_list, "run": _cmd_run, "plot": _cmd_plot, "report": _cmd_report}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``neurosim`` console script; returns the exit status."""
    try:
        args = _build_parser().parse_args(argv)
        return _COMMANDS[args.command](args)
    except UsageError as exc:
        print(f"neurosim: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # output piped into e.g. `head`
        sys.stderr.close()
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

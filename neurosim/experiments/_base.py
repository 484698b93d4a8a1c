"""The experiment interface: a config dataclass, a sweep grid, a point function, assembly of the
points into arrays, and figures with captions drawn from those arrays alone."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from .. import sweep
from ._config import ConfigError, build_config

PRESETS = ("tiny", "quick", "full")


class Experiment:
    """Base class of a named experiment.

    Subclasses set the class attributes and implement :meth:`points`, :meth:`point`,
    :meth:`assemble`, :meth:`figures` and :meth:`captions`.

    Attributes
    ----------
    name : str
        Registry name (what users type).
    title : str
        Short title for reports.
    summary : str
        One line for ``neurosim list``.
    Config : type
        The config dataclass; its defaults are the ``full`` preset (sized for a 2-core laptop).
    presets : dict
        ``"tiny"`` (tests, seconds) and ``"quick"`` (the default suite) overrides of the
        defaults.
    """

    name: str = ""
    title: str = ""
    summary: str = ""
    Config: type = None
    presets: Mapping[str, Mapping] = {}

    # -- configs ------------------------------------------------------------------------------
    def config(self, preset: str = "full", *layers: Mapping):
        """Resolve a config: defaults < preset < each mapping in ``layers``; then validate."""
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
        cfg = build_config(self.Config, self.name, self.presets.get(preset, {}), *layers)
        self.validate(cfg)
        return cfg

    def config_from_dict(self, values: Mapping):
        """Rebuild a config from its saved dict (a manifest's ``config``)."""
        cfg = build_config(self.Config, self.name, values)
        self.validate(cfg)
        return cfg

    def validate(self, cfg) -> None:
        """Cross-field checks; raise :class:`ConfigError`. Field types and ranges are already
        checked by the field metadata."""

    @staticmethod
    def as_dict(cfg) -> dict:
        return dataclasses.asdict(cfg)

    # -- the sweep ----------------------------------------------------------------------------
    def points(self, cfg) -> list[sweep.Point]:
        """The grid of independent tasks."""
        raise NotImplementedError

    def point(self, cfg, coords: dict, seed: int) -> dict:
        """Compute one grid point: arrays only."""
        raise NotImplementedError

    def assemble(self, cfg, points: Sequence[sweep.Point], arrays: Sequence[dict]) -> dict:
        """Stack the point arrays (in grid order) into the experiment's data arrays."""
        raise NotImplementedError

    # -- figures and report -------------------------------------------------------------------
    def figures(self, data: Mapping, cfg) -> dict:
        """Figure name -> matplotlib Figure, from the assembled data alone."""
        raise NotImplementedError

    def captions(self, data: Mapping, cfg) -> dict:
        """Figure name -> caption stating what was measured and the key numbers."""
        raise NotImplementedError

    def headline(self, data: Mapping, cfg) -> str:
        """A sentence or two for the report's summary (optional)."""
        return ""

    # -- in-memory run ------------------------------------------------------------------------
    def run(self, cfg) -> dict:
        """Compute every point serially in this process and return the assembled data.

        Nothing is written to disk; use :func:`neurosim.experiments.run_to_disk` (or the
        ``neurosim run`` command) for saved, resumable, parallel runs.
        """
        points = self.points(cfg)
        arrays = [self.point(cfg, dict(p.coords), p.seed) for p in points]
        return self.assemble(cfg, points, arrays)


def concat_grids(*grids: Sequence[sweep.Point]) -> list[sweep.Point]:
    """Join several grids into one, re-indexing the points (seeds depend on coordinates only,
    so they are unchanged)."""
    out = []
    for g in grids:
        for p in g:
            out.append(sweep.Point(len(out), p.coords, p.seed))
    return out


def select(points: Sequence[sweep.Point], arrays: Sequence[dict], **match):
    """The (point, arrays) pairs whose coordinates match every ``key=value`` given."""
    return [(p, a) for p, a in zip(points, arrays, strict=True)
            if all(p.coords.get(k) == v for k, v in match.items())]

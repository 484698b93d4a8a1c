"""TOML reading: :mod:`tomllib` on Python 3.11+, the ``tomli`` package on 3.10."""

from __future__ import annotations

try:
    import tomllib as _toml
except ImportError:  # pragma: no cover - Python 3.10
    try:
        import tomli as _toml
    except ImportError:
        _toml = None

TOMLDecodeError = ValueError if _toml is None else _toml.TOMLDecodeError


def _require():
    if _toml is None:  # pragma: no cover - Python 3.10 without tomli
        raise ImportError("reading TOML needs Python 3.11+ or the 'tomli' package "
                          "(pip install tomli)")
    return _toml


def loads(text: str) -> dict:
    """Parse TOML text."""
    return _require().loads(text)


def load_file(path) -> dict:
    """Parse a TOML file (opened in binary mode, as the TOML readers require)."""
    toml = _require()
    with open(path, "rb") as fh:
        return toml.load(fh)

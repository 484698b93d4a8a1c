"""Experiment configs: typed dataclass fields with ranges, and their resolution from presets,
TOML files and ``key=value`` overrides, with errors that name the key, the value and what is
allowed (and the closest valid key for a typo)."""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
import types
import typing
from collections.abc import Mapping


class ConfigError(ValueError):
    """A config key or value that the experiment does not accept."""


def param(default, help: str, *, min=None, max=None, min_exclusive: bool = False,
          choices=None, min_items: int = 1):
    """A config field with its documentation and allowed values.

    Parameters
    ----------
    default
        Default value (lists are copied per instance).
    help : str
        One line: meaning and unit.
    min, max : float, optional
        Inclusive bounds for numbers (every item, for lists); ``min_exclusive`` makes ``min``
        strict.
    choices : sequence of str, optional
        Allowed strings (every item, for lists).
    min_items : int
        Minimum length of a list value.
    """
    meta = {"help": help, "min": min, "max": max, "min_exclusive": min_exclusive,
            "choices": None if choices is None else tuple(choices), "min_items": min_items}
    if isinstance(default, (list, tuple)):
        items = list(default)
        return dataclasses.field(default_factory=lambda: list(items), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}s"
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return f"{_type_name(inner[0])} or none"
    return {int: "integer", float: "number", bool: "boolean (true/false)", str: "string"}[tp]


def _coerce_scalar(where: str, value, tp):
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
    elif tp is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value)
    elif tp is float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            value = float(value)
            if math.isfinite(value):
                return value
            raise ConfigError(f"{where} must be finite, got {value!r}")
    elif tp is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - a config class using an unsupported type is a programming error
        raise TypeError(f"unsupported config type {tp!r} for {where}")
    name = _type_name(tp)
    article = "an" if name[0] in "aeiou" else "a"
    raise ConfigError(f"{where} must be {article} {name}, got {value!r} "
                      f"({type(value).__name__})")


def _parse_text_item(text: str):
    """A bare item from a comma-separated ``--set`` list: number, boolean or string."""
    text = text.strip()
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def _check_item(where: str, value, meta: Mapping):
    if meta.get("choices") is not None and value not in meta["choices"]:
        close = difflib.get_close_matches(str(value), meta["choices"], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{where} must be one of {', '.join(meta['choices'])}; got "
                          f"{value!r}{hint}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        low, high = meta.get("min"), meta.get("max")
        if low is not None:
            if meta.get("min_exclusive") and not value > low:
                raise ConfigError(f"{where} must be > {low}, got {value!r}")
            if not meta.get("min_exclusive") and not value >= low:
                raise ConfigError(f"{where} must be >= {low}, got {value!r}")
        if high is not None and not value <= high:
            raise ConfigError(f"{where} must be <= {high}, got {value!r}")
    return value


def coerce_value(where: str, value, tp, meta: Mapping):
    """Convert ``value`` to the field type ``tp`` and check it against the field's ``meta``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        return coerce_value(where, value, inner[0], meta)
    if origin is list:
        item_tp = typing.get_args(tp)[0]
        if isinstance(value, str):
            value = [_parse_text_item(part) for part in value.split(",")] if value else []
        elif not isinstance(value, (list, tuple)):
            value = [value]
        items = [_check_item(f"{where}[{i}]", _coerce_scalar(f"{where}[{i}]", v, item_tp), meta)
                 for i, v in enumerate(value)]
        if len(items) < meta.get("min_items", 1):
            raise ConfigError(f"{where} needs at least {meta.get('min_items', 1)} item(s), got "
                              f"{items!r}")
        return items
    if isinstance(value, str) and tp in (int, float):
        value = _parse_text_item(value)
    return _check_item(where, _coerce_scalar(where, value, tp), meta)


def config_fields(config_cls) -> dict:
    """Field name -> (type, metadata) of a config dataclass."""
    hints = typing.get_type_hints(config_cls)
    return {f.name: (hints[f.name], f.metadata) for f in dataclasses.fields(config_cls)}


def unknown_key_error(owner: str, key: str, valid) -> ConfigError:
    valid = sorted(valid)
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"unknown config key {key!r} for {owner}{hint}; valid keys: "
                       f"{', '.join(valid)}")


def build_config(config_cls, owner: str, *layers: Mapping):
    """Make a config instance from defaults overlaid by ``layers`` (later layers win).

    Every key must be a field; every value is coerced to the field type and range-checked.
    """
    fields = config_fields(config_cls)
    values = {}
    for layer in layers:
        for key, value in layer.items():
            if key not in fields:
                raise unknown_key_error(owner, key, fields)
            tp, meta = fields[key]
            values[key] = coerce_value(f"{owner}.{key}", value, tp, meta)
    return config_cls(**values)


def parse_assignment(text: str) -> tuple[str, object]:
    """``key=value`` from the command line; the value is read as a TOML value when it parses
    as one (numbers, true/false, quoted strings, [lists]), otherwise as a bare string (so
    ``activation=tanh`` and ``depths=4,8,16`` work unquoted)."""
    if "=" not in text:
        raise ConfigError(f"--set expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    key, raw = key.strip(), raw.strip()
    if not key:
        raise ConfigError(f"--set expects key=value, got {text!r} (empty key)")
    try:
        from ._toml import loads

        value = loads(f"v = {raw}")["v"]
    except Exception:
        value = raw
    return key, value


def describe_fields(config_cls) -> list[tuple[str, str, str]]:
    """(name, default, help) of every field, for ``neurosim list``."""
    rows = []
    for f in dataclasses.fields(config_cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        rows.append((f.name, repr(default), f.metadata.get("help", "")))
    return rows

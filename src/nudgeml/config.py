"""Configuration: read the YAML, validate it against the workflow's schema, and the time helpers.

The schema (``schemas/config.schema.yaml`` inside this package) is the single documentation of
every key; the Snakefile validates with this same file (:data:`SCHEMA_PATH`) and so does
:func:`validate_config`, so the library and the workflow reject the same mistakes with the same
message (the offending key's path). It ships as package data, so a wheel install finds it too.

This module is a leaf of the package (it imports only :mod:`nudgeml.errors`): the rules across
keys, which need the stage modules, live above it in :mod:`nudgeml.checks`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Final

import numpy as np
import yaml

from nudgeml.errors import ConfigError

# importlib.resources gives a real path: nudgeml is installed as files (its schemas $ref each other by
# relative path, which a zipped install could not resolve)
SCHEMA_PATH: Final = Path(str(resources.files("nudgeml").joinpath("schemas", "config.schema.yaml")))


def validate_config(config: Mapping[str, Any], schema_path: str | os.PathLike[str] = SCHEMA_PATH) -> None:
    """Raise :class:`ConfigError` naming the first key the schema rejects.

    Schema only: :func:`nudgeml.checks.validate` adds the rules across keys.
    """
    import jsonschema
    from referencing import Registry, Resource

    schema_path = Path(schema_path).resolve()
    schema = yaml.safe_load(schema_path.read_text())

    def retrieve(uri: str) -> Resource:
        # relative $refs name other YAML schema files (the lmdz block's, beside this one)
        target = Path(uri.removeprefix("file://"))
        return Resource.from_contents(yaml.safe_load(target.read_text()))

    base = schema_path.as_uri()
    registry = Registry(retrieve=retrieve)
    validator = jsonschema.Draft202012Validator({**schema, "$id": base}, registry=registry)
    errors = sorted(validator.iter_errors(dict(config)), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        where = ".".join(str(p) for p in err.absolute_path) or "<top level>"
        raise ConfigError(f"config key {where!r}: {err.message}")


def read_config(path: str | os.PathLike[str], overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Read a configuration file, deep-merge ``overrides`` into it and drop what they switched off.

    Not validated: :func:`nudgeml.checks.load_config` reads and validates.
    """
    config = yaml.safe_load(Path(path).read_text())
    if overrides:
        config = deep_merge(config, overrides)
    drop_switched_off(config)
    return config


def drop_switched_off(config: dict[str, Any]) -> None:
    """Remove the free runs, models and split kind an overlay switched off with ``name: null``, in place.

    Overlays merge into the configuration key by key, so without this an overlay could only add runs
    (``config/gap-*.yaml`` keep a few of science.yaml's 21). A model still named by ``train.models``
    or by a run stays an error (:func:`nudgeml.checks.check_consistency` names the key).
    """
    split = config.get("dataset", {}).get("split")
    # the split kind too: an overlay that uses another kind than its base says `dates: null`
    for section in (config.get("free_runs", {}).get("runs"), config.get("models"), split):
        if isinstance(section, dict):
            for name in [k for k, v in section.items() if v is None]:
                del section[name]


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def expand_path(value: str, key: str) -> str:
    """``value`` with ``~`` and ``$VAR``/``${VAR}`` expanded (Jean Zay: ``$WORK``, ``$SCRATCH``).

    Raise :class:`ConfigError` naming ``key`` and the variable when one is not set.
    """
    expanded = os.path.expanduser(os.path.expandvars(str(value)))
    unset = re.findall(r"\$\{?(\w+)", expanded)
    if unset:
        raise ConfigError(f"config key {key!r} ({value!r}): environment variable(s) {', '.join(unset)} not set")
    return expanded


def parse_time(value: str, key: str | None = None) -> np.datetime64:
    """``value`` as a date-time (s); with ``key``, a value that is not one raises :class:`ConfigError`
    naming the key (numpy's own message, e.g. "Month out of range", names none)."""
    try:
        return np.datetime64(str(value), "s")
    except ValueError as exc:
        if key is None:
            raise
        raise ConfigError(f"config key {key!r}: {value!r} is not a valid date-time, YYYY-MM-DDTHH:MM ({exc})") from None


def coerce_numbers(config: dict[str, Any], schema_path: str | os.PathLike[str] = SCHEMA_PATH) -> list[str]:
    """Turn strings into numbers where the schema wants a number (and ``'null'`` into ``None`` where it
    wants an object), in place; return the keys changed.

    Snakemake hands nested ``--config`` values over as strings (``--config 'nudging={tau_hours: 3}'``
    gives ``'3'``), so without this the schema rejected them as "not of type 'number'" and hid the
    real problem (a sign, a range). A string that is not a number is left for the schema to name.
    """
    schema = yaml.safe_load(Path(schema_path).read_text())
    defs = schema.get("$defs", {})
    changed: list[str] = []

    def resolve(node: Any) -> Any:
        while isinstance(node, dict) and str(node.get("$ref", "")).startswith("#/$defs/"):
            node = defs[node["$ref"].split("/")[-1]]
        return node

    def wants_number(node: Mapping[str, Any]) -> bool:
        types = node.get("type")
        types = types if isinstance(types, list) else [types]
        return "string" not in types and any(t in ("number", "integer") for t in types)

    def wants_object(node: Mapping[str, Any]) -> bool:
        types = node.get("type")
        return "string" not in (types if isinstance(types, list) else [types]) and (types == "object" or "properties" in node)

    def walk(value: Any, node: Any, path: list[str]) -> Any:
        node = resolve(node)
        if not isinstance(node, dict):
            return value
        if isinstance(value, str) and wants_number(node):
            try:
                parsed = yaml.safe_load(value)
            except yaml.YAMLError:
                return value
            if isinstance(parsed, (int, float)) and not isinstance(parsed, bool):
                changed.append(".".join(path))
                return parsed
            return value
        if isinstance(value, str) and value.strip() in ("null", "~") and wants_object(node):
            changed.append(".".join(path))  # `name: null` switches a run or a model off, as in an overlay
            return None
        if isinstance(value, dict):
            props, extra = node.get("properties", {}), node.get("additionalProperties")
            for k in list(value):
                sub = props.get(k, extra if isinstance(extra, dict) else None)
                if sub is not None:
                    value[k] = walk(value[k], sub, [*path, str(k)])
        elif isinstance(value, list) and isinstance(node.get("items"), dict):
            for i, v in enumerate(value):
                value[i] = walk(v, node["items"], [*path, str(i)])
        return value

    walk(config, schema, [])
    return changed


def analysis_times(start: str | np.datetime64, end: str | np.datetime64, hours: float = 6.0) -> np.ndarray:
    """6-hourly times from ``start`` to ``end``, both included."""
    t0, t1 = parse_time(str(start)), parse_time(str(end))
    step = np.timedelta64(int(hours * 3600), "s")
    return np.arange(t0, t1 + step, step)


def months_between(start: str | np.datetime64, end: str | np.datetime64) -> list[str]:
    """``YYYY-MM`` of every month touched by [start, end]."""
    m0 = parse_time(str(start)).astype("datetime64[M]")
    m1 = parse_time(str(end)).astype("datetime64[M]")
    return [str(m) for m in np.arange(m0, m1 + np.timedelta64(1, "M"))]


@dataclass(frozen=True)
class Period:
    start: np.datetime64
    end: np.datetime64

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> "Period":
        return cls(parse_time(section["start"]), parse_time(section["end"]))

    @property
    def times(self) -> np.ndarray:
        return analysis_times(self.start, self.end)

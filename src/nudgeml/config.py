"""Configuration: load the YAML, validate it against the workflow's schema, build typed settings.

The schema (``workflow/schemas/config.schema.yaml``) is the single documentation of every key; the
Snakefile validates with it and so does :func:`load_config`, so the library and the workflow reject
the same mistakes with the same message (the offending key's path).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """A configuration key is unknown, mistyped or inconsistent; the message names it."""


def validate_config(config: Mapping[str, Any], schema_path: str | os.PathLike[str] = SCHEMA_PATH) -> None:
    """Raise :class:`ConfigError` naming the first offending key."""
    import jsonschema
    from referencing import Registry, Resource

    schema_path = Path(schema_path).resolve()
    schema = yaml.safe_load(schema_path.read_text())

    def retrieve(uri: str) -> Resource:
        # relative $refs name other YAML schema files (the lmdz block's lives with the job kit)
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
    check_consistency(config)


def check_consistency(config: Mapping[str, Any]) -> None:
    """Cross-key rules a JSON schema cannot express."""
    start, end = parse_time(config["period"]["start"]), parse_time(config["period"]["end"])
    if end <= start:
        raise ConfigError(f"config key 'period.end' ({end}) must be after 'period.start' ({start})")
    for key, t in (("period.start", start), ("period.end", end)):
        if (t - t.astype("datetime64[D]")).astype(int) % (6 * 3600) != 0:
            raise ConfigError(f"config key {key!r} ({t}) must be on a 6-hourly analysis time (00, 06, 12, 18 UTC)")
    fstart, fend = parse_time(config["free_runs"]["start"]), parse_time(config["free_runs"]["end"])
    if not (start <= fstart < fend <= end):
        raise ConfigError(f"config keys 'free_runs.start'/'free_runs.end' ({fstart} - {fend}) must lie inside period ({start} - {end})")
    if config["era5"]["source"] == "standin" and "standin" not in config["era5"]:
        raise ConfigError("config key 'era5.standin' is required when era5.source is 'standin'")
    for name, run in config["free_runs"]["runs"].items():
        if run["correction"] == "ml" and run["model"] not in config.get("models", {}):
            raise ConfigError(f"config key 'free_runs.runs.{name}.model' names {run['model']!r}, which is not in 'models'")
    split = config.get("dataset", {}).get("split")
    if split:
        from nudgeml.split import check_out_of_sample

        problems = check_out_of_sample(split, start, fstart)
        if problems:
            raise ConfigError(problems[0])
    for name in config.get("train", {}).get("models", []):
        if name not in config.get("models", {}):
            raise ConfigError(f"config key 'train.models' names {name!r}, which is not in 'models' ({sorted(config.get('models', {}))})")
    from nudgeml.iterate import check_iterations

    check_iterations(config)
    if config["era5"]["source"] == "cds":
        from nudgeml.cds import check_cds_config

        check_cds_config(config)
    plev = config["era5"]["pressure_levels_hpa"]
    if len(set(plev)) != len(plev):
        raise ConfigError("config key 'era5.pressure_levels_hpa' has duplicate levels")


def drop_switched_off(config: dict[str, Any]) -> None:
    """Remove the free runs, models and split kind an overlay switched off with ``name: null``, in place.

    Overlays merge into the configuration key by key, so without this an overlay could only add runs
    (``config/gap-*.yaml`` keep a few of science.yaml's 21). A model still named by ``train.models``
    or by a run stays an error (:func:`check_consistency` names the key).
    """
    split = config.get("dataset", {}).get("split")
    # the split kind too: an overlay that uses another kind than its base says `dates: null`
    for section in (config.get("free_runs", {}).get("runs"), config.get("models"), split):
        if isinstance(section, dict):
            for name in [k for k, v in section.items() if v is None]:
                del section[name]


def load_config(path: str | os.PathLike[str], overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Read, deep-merge ``overrides`` into, and validate a configuration file."""
    config = yaml.safe_load(Path(path).read_text())
    if overrides:
        config = deep_merge(config, overrides)
    drop_switched_off(config)
    validate_config(config)
    return config


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


def parse_time(value: str) -> np.datetime64:
    return np.datetime64(str(value), "s")


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

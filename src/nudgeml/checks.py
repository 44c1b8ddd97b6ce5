"""The rules across configuration keys that a JSON schema cannot express, and the full validation.

Above :mod:`nudgeml.config` (a leaf): some rules belong to a stage (iterative training, the CDS
download) and live in its module, so checking them imports that module. The Snakefile calls
:func:`check_consistency` right after its schema validation; library callers use :func:`validate`
(schema, then these rules) or :func:`load_config` (read, then validate).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from nudgeml.config import parse_time, read_config, validate_config
from nudgeml.errors import ConfigError
from nudgeml.gcm.registry import check_backend
from nudgeml.split import check_out_of_sample


def validate(config: Mapping[str, Any]) -> None:
    """Raise :class:`ConfigError` naming the first offending key: the schema's, then the cross-key rules."""
    validate_config(config)
    check_consistency(config)


def load_config(path: str | os.PathLike[str], overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Read, deep-merge ``overrides`` into, and validate a configuration file."""
    config = read_config(path, overrides)
    validate(config)
    return config


def check_corrections(config: Mapping[str, Any]) -> None:
    """What the free runs correct can be backed: a mean run's ``variables`` are du, dv then dt and/or dq,
    each T / q one nudged (the mean file holds it only then); an ml run applies ``columns.targets`` in that
    order. Caught here, before the nudged run, not at the free run's start."""
    from nudgeml.targets import check_corrected
    from nudgeml.errors import InputError

    targets = list(config.get("columns", {}).get("targets", ()))
    for name, run in config["free_runs"]["runs"].items():
        key = f"free_runs.runs.{name}.variables"
        if run.get("variables") is not None:
            if run["correction"] != "mean":
                raise ConfigError(f"config key {key!r}: only a mean correction takes 'variables' (an ml run applies its model's targets)")
            try:
                check_corrected(run["variables"], f"config key {key!r}")
            except InputError as exc:
                raise ConfigError(str(exc)) from None
            for target, var in (("dt", "t"), ("dq", "q")):
                if target in run["variables"] and config.get("nudging", {}).get(var) is None:
                    raise ConfigError(f"config key {key!r} has {target!r}, which needs 'nudging.{var}' (the mean file holds '{target}_mean' only then)")
        for key in ("top_hpa", "bottom_hpa"):
            if key in run and not (run["correction"] == "ml" and (run.get("mean_residual") or run.get("add_mean"))):
                raise ConfigError(f"config key 'free_runs.runs.{name}.{key}': the model's part about the mean is kept on some levels and "
                                  "the mean on the others, so the run needs correction ml with mean_residual or add_mean")
        if "top_hpa" in run and "bottom_hpa" in run and float(run["top_hpa"]) > float(run["bottom_hpa"]):
            raise ConfigError(f"config key 'free_runs.runs.{name}.bottom_hpa' is {run['bottom_hpa']}, above its top_hpa {run['top_hpa']}: "
                              "the model's part is kept at top_hpa <= p <= bottom_hpa")
        if "model_targets" in run:
            key = f"free_runs.runs.{name}.model_targets"
            if not (run["correction"] == "ml" and (run.get("mean_residual") or run.get("add_mean"))):
                raise ConfigError(f"config key {key!r}: the model's part about the mean is kept on some targets and the mean on the "
                                  "others, so the run needs correction ml with mean_residual or add_mean")
            missing = [k for k in run["model_targets"] if k not in targets]
            if missing:
                raise ConfigError(f"config key {key!r} names {missing}, which the model does not predict (columns.targets: {targets})")
        if run.get("rotational_only") and run["correction"] != "ml":
            raise ConfigError(f"config key 'free_runs.runs.{name}.rotational_only': only an ml correction has a model part to filter")
        if run["correction"] == "ml" and targets:
            try:
                check_corrected(targets, "config key 'columns.targets'")
            except InputError as exc:
                raise ConfigError(f"{exc} (free run {name!r} applies them)") from None


def check_consistency(config: Mapping[str, Any]) -> None:
    """Cross-key rules a JSON schema cannot express."""
    start, end = parse_time(config["period"]["start"], "period.start"), parse_time(config["period"]["end"], "period.end")
    if end <= start:
        raise ConfigError(f"config key 'period.end' ({end}) must be after 'period.start' ({start})")
    for key, t in (("period.start", start), ("period.end", end)):
        if (t - t.astype("datetime64[D]")).astype(int) % (6 * 3600) != 0:
            raise ConfigError(f"config key {key!r} ({t}) must be on a 6-hourly analysis time (00, 06, 12, 18 UTC)")
    fstart, fend = parse_time(config["free_runs"]["start"], "free_runs.start"), parse_time(config["free_runs"]["end"], "free_runs.end")
    if fend <= fstart:
        raise ConfigError(f"config key 'free_runs.end' ({fend}) must be after 'free_runs.start' ({fstart})")
    if not (start <= fstart and fend <= end):
        raise ConfigError(f"config keys 'free_runs.start'/'free_runs.end' ({fstart} - {fend}) must lie inside period ({start} - {end})")
    check_backend(config)
    if config["era5"]["source"] == "standin" and "standin" not in config["era5"]:
        raise ConfigError("config key 'era5.standin' is required when era5.source is 'standin'")
    for name, run in config["free_runs"]["runs"].items():
        if run["correction"] == "ml" and run["model"] not in config.get("models", {}):
            raise ConfigError(f"config key 'free_runs.runs.{name}.model' names {run['model']!r}, which is not in 'models'")
        if run["correction"] == "ml" and run.get("backend") == "aoti" and not config["export"]["aoti"]:
            raise ConfigError(f"config key 'free_runs.runs.{name}.backend' is 'aoti', but 'export.aoti' is false: no model.pt2 is written (set export.aoti: true, or backend: torchscript)")
    split = config.get("dataset", {}).get("split")
    if split:
        for block, dates in (split.get("dates") or {}).items():
            for which, value in zip(("first", "last"), dates):
                parse_time(value, f"dataset.split.dates.{block} ({which})")
        problems = check_out_of_sample(split, start, fstart)
        if problems:
            raise ConfigError(problems[0])
    for name in config.get("train", {}).get("models", []):
        if name not in config.get("models", {}):
            raise ConfigError(f"config key 'train.models' names {name!r}, which is not in 'models' ({sorted(config.get('models', {}))})")
    for target, var in (("dt", "t"), ("dq", "q")):  # a T / q target is the T / q nudging's tendency
        if target in config.get("columns", {}).get("targets", ()) and config.get("nudging", {}).get(var) is None:
            raise ConfigError(f"config key 'columns.targets' has {target!r}, which needs 'nudging.{var}' (the {var} nudging it is the tendency of)")
    check_corrections(config)
    from nudgeml.calibrate import check_calibration_config
    from nudgeml.forecast import check_forecast_config

    check_forecast_config(config)
    check_calibration_config(config)
    from nudgeml.feedback import check_feedback_config

    check_feedback_config(config)
    from nudgeml.online import check_online_config

    check_online_config(config)
    # imported here, not at the top: iterate imports the GCM (JAX) and cds the download client, which
    # a library caller pays for only when it validates
    from nudgeml.iterate import check_iterations

    check_iterations(config)
    if config["era5"]["source"] == "cds":
        from nudgeml.cds import check_cds_config

        check_cds_config(config)
    plev = config["era5"]["pressure_levels_hpa"]
    if len(set(plev)) != len(plev):
        raise ConfigError("config key 'era5.pressure_levels_hpa' has duplicate levels")

"""Names the workflow builds its file paths and wildcards from: free-run members, iteration chains,
LMDZ nudging files.

Pure functions of the configuration, with light imports only (no JAX, torch or xarray): the rule files
import them at parse time, and ``snakemake -n`` should not pay for the GCM or the ML stack.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nudgeml.errors import ConfigError

MEMBER = re.compile(r"^(?P<name>.+?)\.m(?P<member>[0-9]+)$")

#: iteration chains of the time-mean correction -> their climatology
MEAN_CHAINS = {"mean-annual": "annual", "mean-monthly": "monthly"}


def split_member(run: str) -> tuple[str, int]:
    """``control.m2`` -> (``control``, 2); ``control`` -> (``control``, 0)."""
    m = MEMBER.match(run)
    return (m["name"], int(m["member"])) if m else (run, 0)


def run_names(runs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Every run and member of ``free_runs.runs`` (member 0 keeps the plain name)."""
    out = []
    for name, spec in runs.items():
        out.append(name)
        out += [f"{name}.m{k}" for k in range(1, int(spec.get("members", 1)))]
    return out


def mean_chain(climatology: str) -> str:
    """The chain name of an iterated mean correction with this climatology."""
    return f"mean-{climatology}"


def chains(config: Mapping[str, Any]) -> dict[str, int]:
    """Every iteration chain the configuration asks for -> its number of iterations (>= 1).

    ML chains are named after their model, mean chains after the climatology; two free runs with the
    same climatology share one chain, run to the larger of their iteration counts.
    """
    out: dict[str, int] = {}
    for name, spec in config.get("models", {}).items():
        if int(spec.get("iterations", 0)) > 0:
            out[name] = int(spec["iterations"])
    for spec in config["free_runs"]["runs"].values():
        n = int(spec.get("iterations", 0))
        if spec["correction"] == "mean" and n > 0:
            chain = mean_chain(spec.get("climatology", "annual"))
            out[chain] = max(out.get(chain, 0), n)
    return out


def chain_correction(chain: str, models: Mapping[str, Any]) -> dict[str, Any]:
    """The corrector spec (as a free run's) that iteration ``k >= 1`` of ``chain`` applies."""
    if chain in MEAN_CHAINS:
        return {"correction": "mean", "climatology": MEAN_CHAINS[chain]}
    if chain in models:
        # scale 1, no mean residual: the iteration learns the model's own total correction
        return {"correction": "ml", "model": chain, "backend": "torchscript"}
    raise ConfigError(f"iteration chain {chain!r} is neither a model in 'models' nor one of {sorted(MEAN_CHAINS)}")


def offline_root(models: Mapping[str, Any], name: str) -> str:
    """The offline model at the start of online model ``name``'s chain of ``models.<name>.online.init``
    stages (its columns, store and split are that model's); a chain that comes back on itself is
    refused by name."""
    seen = [name]
    while "online" in models[seen[-1]]:
        init = str(models[seen[-1]]["online"]["init"])
        if init in seen:
            raise ConfigError(f"config key 'models.{seen[-1]}.online.init' names {init!r}: the stages {' -> '.join([*seen, init])} come back on themselves")
        if init not in models:
            raise ConfigError(f"config key 'models.{seen[-1]}.online.init' names {init!r}, which is not in 'models' ({sorted(models)})")
        seen.append(init)
    return seen[-1]


def month_file_names(file_pattern: str, variables: Sequence[str], year: int, month: int, forcing_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """The LMDZ nudging files of one month: variable -> ``<forcing_dir>/<file_pattern>``."""
    root = Path(os.path.expandvars(str(forcing_dir)))
    return {v: root / file_pattern.format(var=v, year=year, month=month) for v in variables}


# Keys in which the runs of one ensemble may differ: the ML model (another seed), its file format, members.
SEED_KEYS = frozenset({"model", "backend", "members", "ensemble"})


def _method(spec: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in sorted(spec.items()) if k not in SEED_KEYS}


def ensembles(runs: Mapping[str, Mapping[str, Any]], members: Sequence[str]) -> dict[str, list[str]]:
    """Ensemble name -> its member runs (in ``members`` order). A run's members (``<name>.m<k>``) belong
    to its ensemble, which is the run's own name unless ``free_runs.runs.<name>.ensemble`` groups several
    runs (ML seeds, say) under one name. ``members``: every run and member name (``run_names``)."""
    group = {name: str(spec.get("ensemble", name)) for name, spec in runs.items()}
    for name, ens in group.items():
        if ens in runs and group[ens] != ens:
            raise ConfigError(f"config key 'free_runs.runs.{name}.ensemble' is {ens!r}, the name of a run that belongs to ensemble {group[ens]!r}")
        for other in (o for o, e in group.items() if e == ens and o != name):
            if _method(runs[other]) != _method(runs[name]):
                raise ConfigError(
                    f"config key 'free_runs.runs.{name}.ensemble': ensemble {ens!r} also holds run {other!r} with another method "
                    f"({_method(runs[name])} vs {_method(runs[other])}); the runs of one ensemble may differ only in {', '.join(sorted(SEED_KEYS))}"
                )
    out: dict[str, list[str]] = {}
    for m in members:
        out.setdefault(group[split_member(m)[0]], []).append(m)
    return out


#: LMDZ's horizontal grid (LMDZ6A, iim x jjm) unless the ``lmdz.grid`` keys say otherwise: the one place
#: this default is written.
DEFAULT_LMDZ_GRID: dict[str, int] = {"iim": 144, "jjm": 142}


def lmdz_grid_size(lmdz: Mapping[str, Any]) -> dict[str, int]:
    """``{"iim", "jjm"}`` of the ``lmdz:`` block: its ``grid`` keys over :data:`DEFAULT_LMDZ_GRID`."""
    return {**DEFAULT_LMDZ_GRID, **(lmdz.get("grid") or {})}


# ERA5 files: the CDS's two formats (era5.cds.data_format) and the suffix each is stored under
DATA_FORMAT_SUFFIX = {"netcdf": ".nc", "grib": ".grib"}


def era5_suffix(era5: Mapping[str, Any]) -> str:
    """Suffix of the ERA5 stage's files: ``.grib`` for ``source: cds`` with ``data_format: grib``, else ``.nc``
    (the stand-in writes netCDF)."""
    if era5.get("source") != "cds":
        return ".nc"
    return DATA_FORMAT_SUFFIX[(era5.get("cds") or {}).get("data_format", "netcdf")]

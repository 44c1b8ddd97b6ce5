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


def month_file_names(file_pattern: str, variables: Sequence[str], year: int, month: int, forcing_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """The LMDZ nudging files of one month: variable -> ``<forcing_dir>/<file_pattern>``."""
    root = Path(os.path.expandvars(str(forcing_dir)))
    return {v: root / file_pattern.format(var=v, year=year, month=month) for v in variables}

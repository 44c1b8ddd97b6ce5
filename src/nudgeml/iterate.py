"""Iterative training: nudge the corrected model again and learn what it still needs.

Iteration 0 is the plain nudged run. Iteration ``k >= 1`` is a nudged run of the model corrected by
iteration ``k - 1``'s correction (applied every 6 h, as in a free run, through the same
:class:`~nudgeml.coupled.Corrector`) while it relaxes toward the analysis. Its training target is the
applied correction plus the residual nudging tendency, i.e. the total correction the corrected model
still needed, and its inputs are that run's own states (:func:`nudgeml.conventions.read_target`):

    target_k = C_{k-1}(x_k) + N_k        x_k: the states of nudged run k

For the time-mean correction this is the LMDZ practice: ``mean_k = mean_{k-1} + mean(N_k)`` over the
training period. A learned correction changes the states the model visits (its feedback), and the
residual ``N_k`` is what that feedback left uncorrected; a fixed point has ``N_k = 0``.

Chains (the workflow's ``{chain}`` wildcard): a model name (``models.<name>.iterations``), or
``mean-annual`` / ``mean-monthly`` (free runs ``{correction: mean, iterations: N}``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nudgeml.coupled import make_corrector
from nudgeml.errors import ConfigError
from nudgeml.extract import ColumnSpec
from nudgeml.grid import read_model_grid
from nudgeml.nudged import run_nudged
from nudgeml.targets import TARGETS, target_of

log = logging.getLogger(__name__)

MEAN_CHAINS = {"mean-annual": "annual", "mean-monthly": "monthly"}


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


def check_iterations(config: Mapping[str, Any]) -> None:
    """Cross-key rules of iterative training (called by :func:`nudgeml.checks.check_consistency`)."""
    for name, spec in config.get("models", {}).items():
        if int(spec.get("iterations", 0)) > 0:
            if not target_of(spec).iterable:
                start = [t for t, target in TARGETS.items() if target.iterable]
                raise ConfigError(f"config key 'models.{name}.iterations': iterations need target {' or '.join(map(repr, start))} (iteration 0 is the plain nudged run), not {spec['target']!r}")
            if name in MEAN_CHAINS:
                raise ConfigError(f"config key 'models.{name}': the name {name!r} is reserved for the iterated mean correction; rename the model")
    for name, spec in config["free_runs"]["runs"].items():
        if int(spec.get("iterations", 0)) > 0 and spec["correction"] != "mean":
            raise ConfigError(f"config key 'free_runs.runs.{name}.iterations': only a mean correction is iterated in a free run's section; an ML model's iterations go in 'models.{spec.get('model', '<name>')}.iterations'")


def chain_correction(chain: str, models: Mapping[str, Any]) -> dict[str, Any]:
    """The corrector spec (as a free run's) that iteration ``k >= 1`` of ``chain`` applies."""
    if chain in MEAN_CHAINS:
        return {"correction": "mean", "climatology": MEAN_CHAINS[chain]}
    if chain in models:
        # scale 1, no mean residual: the iteration learns the model's own total correction
        return {"correction": "ml", "model": chain, "backend": "torchscript"}
    raise ConfigError(f"iteration chain {chain!r} is neither a model in 'models' nor one of {sorted(MEAN_CHAINS)}")


def run_corrected_nudged(
    config: Mapping[str, Any],
    correction: Mapping[str, Any],
    grid_path: str | Path,
    forcing_paths: Sequence[str | Path],
    out_histhf: str | Path,
    out_guide: str | Path,
    out_correction: str | Path,
    *,
    mean_file: str | Path,
    model_dir: str | Path | None = None,
) -> None:
    """One iteration's nudged run, corrected by ``correction`` (a free run's corrector spec).

    ``mean_file`` is the mean correction to apply (``correction: mean``) or the guard's fallback
    (``correction: ml``, with the exported model in ``model_dir``).
    """
    grid = read_model_grid(grid_path)
    columns = ColumnSpec.from_config(config["columns"])
    corrector = make_corrector(correction, columns=columns, grid=grid, mean_file=mean_file, model_dir=model_dir)
    log.info("corrected nudged run: %s (mean file %s, model %s)", dict(correction), mean_file, model_dir)
    run_nudged(config, grid_path, forcing_paths, out_histhf, out_guide, corrector=corrector, out_correction=out_correction)

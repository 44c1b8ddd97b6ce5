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
from nudgeml.naming import MEAN_CHAINS
from nudgeml.nudged import run_nudged
from nudgeml.targets import TARGETS, target_of

log = logging.getLogger(__name__)


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

"""Free runs: the model without relaxation, from the regridded ERA5 state at ``free_runs.start``.

``correction: none`` is the control. Every run writes the same LMDZ-convention ``histhf`` as the nudged
run, so one reader and one report serve all of them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nudgeml.config import ConfigError, Period
from nudgeml.grid import read_model_grid
from nudgeml.regrid import open_forcing
from nudgeml.simulate import HistoryWriter, RunFailed, check_finite, check_same_grid, model_gcm, select_times, state_at

log = logging.getLogger(__name__)


def run_free(config: Mapping[str, Any], run: str, grid_path: str | Path, forcing_paths: Sequence[str | Path], out_histhf: str | Path) -> None:
    runs = config["free_runs"]["runs"]
    if run not in runs:
        raise ConfigError(f"config key 'free_runs.runs' has no run {run!r} (has {sorted(runs)})")
    spec = runs[run]
    period = Period.from_config(config["free_runs"])
    forcing = select_times(open_forcing(forcing_paths), period.times[:1], forcing_paths[0])
    gcm = model_gcm(config, period.start)
    check_same_grid(gcm.grid, read_model_grid(grid_path), grid_path)
    gcm.start(state_at(forcing, period.start))
    hist = HistoryWriter(out_histhf, gcm.grid, period.start, {"run": run, "correction": spec["correction"], "model_truncation": gcm.grid.truncation})
    n_windows = len(period.times) - 1
    try:
        for i in range(n_windows):
            w = gcm.run_window()
            check_finite(w, run)
            hist.append(w)
            if i % 40 == 0:
                log.info("%s %s", run, w.start)
    except RunFailed:
        hist.abort(keep=True)
        raise
    except BaseException:
        hist.abort(keep=False)
        raise
    hist.close()

"""Initial-tendency (replay) targets: the physics' wind-tendency error, state by state.

For each sampled state ``x`` of the nudged run (the states the model actually visits), the model is
started from ``x`` twice — once with its own (perturbed) physics, once with the reference physics (the
truth's) — and integrated one step; the target is the difference of the two physics wind tendencies
at ``x``, as the dycore applies them:

    target(x) = P_reference(x) - P_model(x)        (m s-2, u and v, every level)

Both integrations start from the same state at the same resolution, so there is no initialisation
shock and no regression to the mean: the input is exactly the state the tendency is evaluated at (the
nudging tendency, in contrast, learns E[truth - state | state], which shrinks anomalies). This is the
one-step limit of the initial-tendency method; a 6-h replay mixes in 6 h of dynamical response (the
Coriolis force alone turns a wind increment by ~120 degrees in 6 h at mid-latitudes).

It sees only the *physics* part of the model error: resolution error (a truth finer than the model)
is invisible to it, which the report's "kinds of error" comparison makes explicit. It needs the
reference physics, so it exists for the stand-in only; for LMDZ the analogue is the 6-h replay from
the nudged states against the analysis.

Outputs, in the nudged run's conventions so the extract stage reads them unchanged: ``histhf.nc`` (the
input states) and ``guide_ins.nc`` (the targets as ``ucov``/``vcov``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from nudgeml.config import Period
from nudgeml.conventions import guide_record, open_guide_writer, read_histhf
from nudgeml.errors import InputError
from nudgeml.gcm.standin import GCMConfig, GridState, StandinGCM, enable_jax_compilation_cache
from nudgeml.grid import read_model_grid
from nudgeml.ncstream import seconds_since
from nudgeml.simulate import HistoryWriter, check_same_grid, lmdz_grid
from nudgeml.split import SplitSpec, split_times

log = logging.getLogger(__name__)


def sample_times(config: Mapping[str, Any], available: np.ndarray, every_hours: float | None = None) -> np.ndarray:
    """The nudged-run times inside the dataset's split blocks (any split: the store splits them later),
    every ``every_hours`` (default ``replay.every_hours``); never a time of the free-run period
    (:mod:`nudgeml.split`)."""
    have = np.asarray(available, dtype="datetime64[s]")
    spec = SplitSpec.from_config(config["dataset"]["split"], before=config["free_runs"]["start"])
    idx = np.unique(np.concatenate([np.asarray(v, dtype=int) for v in split_times(have, spec).values()]))
    have = have[idx]
    step = int(round(float(config["replay"]["every_hours"] if every_hours is None else every_hours) / 6.0))
    return have[:: max(step, 1)]


def run_replay(config: Mapping[str, Any], grid_path: str | Path, nudged_histhf: str | Path, out_histhf: str | Path, out_guide: str | Path) -> int:
    """Write the targets for every sampled state; return the number of states."""
    enable_jax_compilation_cache(config.get("jax_cache_dir"))
    period = Period.from_config(config["period"])
    hist = read_histhf(nudged_histhf)
    times = sample_times(config, hist["time"].values)
    if times.size == 0:
        raise InputError(f"{nudged_histhf}: no state inside the dataset's split dates")
    m = config["model"]
    reference = StandinGCM(GCMConfig(m["truncation"], m["layers"], config["replay"]["reference_physics"]), period.start)
    model = StandinGCM(GCMConfig(m["truncation"], m["layers"], m["physics"]), period.start)
    check_same_grid(model.grid, read_model_grid(grid_path), grid_path)
    grid = model.grid
    attrs = {"run": "replay", "target": "reference minus model physics wind tendency, first step", "reference_physics": str(dict(config["replay"]["reference_physics"])), "model_physics": str(dict(m["physics"]))}
    out_hist = HistoryWriter(out_histhf, grid, times[0], attrs)
    guide = open_guide_writer(out_guide, lmdz_grid(grid), epoch=times[0], alpha=0.0, window_hours=model.dt_seconds / 3600.0, attrs=attrs)
    step_h = model.dt_seconds / 3600.0
    try:
        for i, t in enumerate(times):
            snap = hist.sel(time=np.datetime64(t, "ns")).load()
            x = GridState(**{k: snap[k].values.astype(np.float32) for k in ("u", "v", "t", "q", "ps")})
            outs = []
            for gcm in (reference, model):
                gcm.start_at(x, t)
                outs.append(gcm.run_window(hours=step_h))
            ref, mod = outs
            du = ref.du_physics - mod.du_physics
            dv = ref.dv_physics - mod.dv_physics
            if not (np.isfinite(du).all() and np.isfinite(dv).all()):
                raise FloatingPointError(f"replay at {t}: non-finite physics tendency")
            out_hist.append(mod)
            s = mod.state
            guide.append(seconds_since([t], times[0])[0], **guide_record(lmdz_grid(grid), u=s.u, v=s.v, ua=s.u, va=s.v, du_ms2=du, dv_ms2=dv, pressure=grid.sigma[:, None, None] * s.ps[None]))
            if i % 100 == 0:
                log.info("replay %s (%d/%d): rms target u %.2e m s-2", t, i + 1, times.size, float(np.sqrt(np.mean(du**2))))
    except BaseException:
        out_hist.abort(keep=False)
        guide.abort()
        raise
    out_hist.close()
    guide.close()
    return int(times.size)

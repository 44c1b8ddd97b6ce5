"""Nudged run: the model relaxed toward the regridded ERA5 winds (u, v) with time scale tau.

The relaxation tendency (du, dv) *is* the model's error: it is recorded as the model applied it
(window means of the per-step term, see :mod:`nudgeml.gcm.standin`), toward a target first projected
into the model's own spectral space, so no unrepresentable detail of the finer analysis pollutes it.

Outputs, in LMDZ conventions: ``histhf.nc`` (state at each window start, precipitation over the
window) and ``guide_ins.nc`` (window-mean nudging increments ``ucov``/``vcov``, analysis and model
winds).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nudgeml.config import Period
from nudgeml.conventions import guide_record, open_guide_writer
from nudgeml.grid import read_model_grid
from nudgeml.ncstream import seconds_since
from nudgeml.regrid import open_forcing
from nudgeml.simulate import HistoryWriter, RunFailed, check_finite, check_same_grid, lmdz_grid, model_gcm, select_times, state_at

log = logging.getLogger(__name__)


def nudging_targets(gcm: Any, u: np.ndarray, v: np.ndarray, project: bool) -> tuple[np.ndarray, np.ndarray]:
    """Target winds ``(time, lev, lat, lon)``, optionally projected into the model's spectral space."""
    if not project:
        return u.astype(np.float32), v.astype(np.float32)
    up = np.empty_like(u, dtype=np.float32)
    vp = np.empty_like(v, dtype=np.float32)
    for i in range(u.shape[0]):
        up[i], vp[i] = gcm.project_winds(u[i], v[i])
    return up, vp


def run_nudged(config: Mapping[str, Any], grid_path: str | Path, forcing_paths: Sequence[str | Path], out_histhf: str | Path, out_guide: str | Path) -> None:
    period = Period.from_config(config["period"])
    times = period.times
    forcing = select_times(open_forcing(forcing_paths), times, forcing_paths[0])
    gcm = model_gcm(config, period.start)
    check_same_grid(gcm.grid, read_model_grid(grid_path), grid_path)
    tau_h = float(config["nudging"]["tau_hours"])
    u_an = forcing["u"].values
    v_an = forcing["v"].values
    ua, va = nudging_targets(gcm, u_an, v_an, bool(config["nudging"]["project_target"]))
    gcm.set_relaxation(times, ua, va, tau_h)
    gcm.start(state_at(forcing, period.start))
    attrs = {"run": "nudged", "tau_hours": tau_h, "model_truncation": gcm.grid.truncation, "physics": str(dict(config["model"]["physics"]))}
    hist = HistoryWriter(out_histhf, gcm.grid, period.start, attrs)
    alpha = gcm.dt_seconds / (tau_h * 3600.0)
    guide = open_guide_writer(out_guide, lmdz_grid(gcm.grid), epoch=period.start, alpha=alpha, window_hours=gcm.window_hours, attrs=attrs)
    sigma = gcm.grid.sigma
    try:
        for i in range(len(times) - 1):
            w = gcm.run_window()
            check_finite(w, "nudged")
            hist.append(w)
            s = w.state
            guide.append(
                seconds_since([w.start], period.start)[0],
                **guide_record(lmdz_grid(gcm.grid), u=s.u, v=s.v, ua=ua[i], va=va[i], du_ms2=w.du_nudge, dv_ms2=w.dv_nudge, pressure=sigma[:, None, None] * s.ps[None]),
            )
            if i % 40 == 0:
                log.info("nudged %s", w.start)
    except RunFailed:
        hist.abort(keep=True)
        guide.abort(Path(out_guide).with_suffix(".failed.nc"))
        raise
    except BaseException:
        hist.abort(keep=False)
        guide.abort()
        raise
    hist.close()
    guide.close()

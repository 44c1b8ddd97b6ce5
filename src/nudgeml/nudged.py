"""Nudged run: the model relaxed toward the regridded ERA5 winds (u, v) with time scale tau.

With ``nudging.t`` / ``nudging.q`` it relaxes temperature and specific humidity too, each with its own
time scale (LMDZ's ``guide_T``, ``guide_Q``); their applied tendencies are recorded in ``guide_ins.nc``
beside the winds' (``teta``, ``q``, with the analysis ``ta``, ``qa``).

The relaxation tendency (du, dv) *is* the model's error: it is recorded as the model applied it
(window means of the per-step term, see :mod:`nudgeml.gcm.standin`), toward a target first projected
into the model's own spectral space, so no unrepresentable detail of the finer analysis pollutes it.

Outputs, in LMDZ conventions: ``histhf.nc`` (state at each window start, precipitation over the
window) and ``guide_ins.nc`` (window-mean nudging increments ``ucov``/``vcov``, analysis and model
winds).

A *corrected* nudged run (iterative training, :mod:`nudgeml.iterate`) also applies a correction every
6 h, the same :class:`~nudgeml.coupled.Corrector` a free run uses, while it relaxes toward the
analysis; ``guide_ins.nc`` then holds the residual nudging and ``correction_ins.nc`` (same layout) the
correction as the model applied it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nudgeml.config import Period
from nudgeml.conventions import guide_record, open_guide_writer
from nudgeml.coupled import Correction, Corrector
from nudgeml.errors import RunFailed
from nudgeml.grid import read_model_grid
from nudgeml.ncstream import seconds_since
from nudgeml.regrid import open_forcing
from nudgeml.simulate import HistoryWriter, check_finite, check_same_grid, lmdz_grid, model_gcm, select_times, state_at

log = logging.getLogger(__name__)

#: the scalars the stand-in can relax besides the winds: config key -> what the analysis must hold
THERMO_VARIABLES = {"t": "temperature", "q": "specific humidity"}
#: their increments' names in guide_ins (LMDZ's guide_out)
GUIDE_NAMES = {"t": "teta", "q": "q"}


def thermo_nudging(nudging: Mapping[str, Any]) -> dict[str, float]:
    """``{"t": tau_hours, "q": tau_hours}`` for the scalars ``nudging`` asks to relax (absent/null: not)."""
    return {name: float(nudging[name]["tau_hours"]) for name in THERMO_VARIABLES if nudging.get(name) is not None}


def check_thermo_analysis(thermo: Mapping[str, float], forcing_paths: Sequence[str | Path]) -> None:
    """Before any run: every analysis file holds the variables the T / q nudging relaxes toward.

    A request the analysis cannot serve is one :class:`InputError` naming the key, the variable and
    the file, raised before the model is built (minutes of compilation on the science grid).
    """
    import xarray as xr

    from nudgeml.errors import InputError

    for path in forcing_paths if thermo else ():
        if not Path(path).exists():
            continue  # open_forcing names a missing file
        with xr.open_dataset(path) as ds:
            for name in thermo:
                if name not in ds.variables:
                    raise InputError(
                        f"nudging.{name}: relaxing {THERMO_VARIABLES[name]} needs the analysis variable {name!r}, "
                        f"which {path} does not hold (has {sorted(ds.data_vars)})"
                    )


def nudging_targets(gcm: Any, u: np.ndarray, v: np.ndarray, project: bool) -> tuple[np.ndarray, np.ndarray]:
    """Target winds ``(time, lev, lat, lon)``, optionally projected into the model's spectral space."""
    if not project:
        return u.astype(np.float32), v.astype(np.float32)
    up = np.empty_like(u, dtype=np.float32)
    vp = np.empty_like(v, dtype=np.float32)
    for i in range(u.shape[0]):
        up[i], vp[i] = gcm.project_winds(u[i], v[i])
    return up, vp


def set_nudging(
    gcm: Any, nudging: Mapping[str, Any], times: np.ndarray, u_an: np.ndarray, v_an: np.ndarray, scalars: Mapping[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Relax ``gcm`` toward the analysis series ``(time, lev, lat, lon)`` as config ``nudging`` asks: the
    winds, and the scalars of :func:`thermo_nudging` from ``scalars``; return the targets set (winds,
    then the scalars by name), projected into the model's spectral space where ``project_target``."""
    project = bool(nudging["project_target"])
    thermo = thermo_nudging(nudging)
    ua, va = nudging_targets(gcm, u_an, v_an, project)
    gcm.set_relaxation(times, ua, va, float(nudging["tau_hours"]))
    thermo_targets: dict[str, np.ndarray] = {}
    for name in thermo:
        series = np.asarray(scalars[name], np.float32)
        if project:  # as for the winds: only what the model's truncation can hold
            series = np.stack([gcm.project_scalar(a) for a in series])
        if name == "q":  # the truncation's ringing must not ask for negative humidity
            series = np.clip(series, 0.0, None)
        thermo_targets[name] = series
    if thermo:
        gcm.set_thermo_relaxation(
            times, t_target=thermo_targets.get("t"), tau_t_hours=thermo.get("t"), q_target=thermo_targets.get("q"), tau_q_hours=thermo.get("q")
        )
    return ua, va, thermo_targets


def precompile(config: Mapping[str, Any], grid_path: str | Path) -> dict[str, Any]:
    """Compile the stand-in's 6-h windows, nudged and free, into the persistent XLA cache
    (``jax_cache_dir``), so that the nudged run and the free runs read them instead of compiling.

    The nudged window's program depends on the length of the analysis series it is relaxed toward
    (``period``) and on which scalars are nudged, so the same :func:`set_nudging` is run on a zero
    series of the nudged run's times; the free window's has no series (nor a dependence on the date a
    free run starts at). The model is checked against ``grid_path`` first. The workflow runs this beside
    the truth run, on a core that would otherwise wait for it (``benchmarks/README.md``). Returns the
    seconds each part took.
    """
    t0 = time.monotonic()
    period = Period.from_config(config["period"])
    times = period.times
    gcm = model_gcm(config, period.start)
    check_same_grid(gcm.grid, read_model_grid(grid_path), grid_path)
    record: dict[str, Any] = {"jax_cache_dir": str(config.get("jax_cache_dir")), "n_times": len(times), "build_s": time.monotonic() - t0}
    zeros = np.zeros((len(times),) + gcm.grid.shape, np.float32)
    set_nudging(gcm, config["nudging"], times, zeros, zeros, {name: zeros for name in thermo_nudging(config["nudging"])})
    gcm.start(None)
    gcm.start(gcm.current_state())  # a gridded state, as the runs start from
    t = time.monotonic()
    gcm.run_window()
    record["nudged_window_s"] = time.monotonic() - t
    gcm.set_relaxation(None, None, None, None)
    gcm.set_thermo_relaxation(None)
    t = time.monotonic()
    gcm.run_window()
    record["free_window_s"] = time.monotonic() - t
    record["total_s"] = time.monotonic() - t0
    log.info("compiled: %s", record)
    return record


def run_nudged(
    config: Mapping[str, Any],
    grid_path: str | Path,
    forcing_paths: Sequence[str | Path],
    out_histhf: str | Path,
    out_guide: str | Path,
    *,
    corrector: Corrector | None = None,
    out_correction: str | Path | None = None,
) -> None:
    """The nudged run over ``period``; with ``corrector``, corrected too (needs ``out_correction``)."""
    if (corrector is None) != (out_correction is None):
        raise ValueError("a corrected nudged run needs both a corrector and a correction file")
    period = Period.from_config(config["period"])
    times = period.times
    thermo = thermo_nudging(config["nudging"])
    check_thermo_analysis(thermo, forcing_paths)
    forcing = select_times(open_forcing(forcing_paths), times, forcing_paths[0])
    gcm = model_gcm(config, period.start)
    check_same_grid(gcm.grid, read_model_grid(grid_path), grid_path)
    tau_h = float(config["nudging"]["tau_hours"])
    ua, va, thermo_targets = set_nudging(gcm, config["nudging"], times, forcing["u"].values, forcing["v"].values, {name: forcing[name].values for name in thermo})
    gcm.start(state_at(forcing, period.start))
    attrs = {"run": "nudged", "tau_hours": tau_h, "model_truncation": gcm.grid.truncation, "physics": str(dict(config["model"]["physics"]))}
    attrs.update({f"tau_hours_{name}": tau for name, tau in thermo.items()})
    if corrector is not None:
        attrs.update(run="nudged_corrected", correction=corrector.kind)
    hist = HistoryWriter(out_histhf, gcm.grid, period.start, attrs)
    alpha = gcm.dt_seconds / (tau_h * 3600.0)
    grid = lmdz_grid(gcm.grid)
    guide = open_guide_writer(out_guide, grid, epoch=period.start, alpha=alpha, window_hours=gcm.window_hours, attrs=attrs, thermo=tuple(thermo))
    writers = [guide]
    # the correction's T / q go into correction_ins where the run nudges them too (their analysis is the
    # record's companion, and the target, nudging + correction, is summed only where both exist)
    corr_thermo = tuple(name for name in thermo if corrector is not None and f"d{name}" in corrector.variables)
    if out_correction is not None:
        corr_attrs = {**attrs, "content": "applied correction (ucov/vcov" + "".join(f", {GUIDE_NAMES[n]}" for n in corr_thermo) + "), not nudging; target = this + guide_ins"}
        writers.append(open_guide_writer(out_correction, grid, epoch=period.start, alpha=alpha, window_hours=gcm.window_hours, attrs=corr_attrs, thermo=corr_thermo))
    sigma = gcm.grid.sigma
    try:
        for i in range(len(times) - 1):
            correction = corrector(gcm.time, gcm.current_state()) if corrector is not None else Correction()
            w = gcm.run_window(**correction.window_kwargs())
            check_finite(w, attrs["run"])
            hist.append(w)
            s = w.state
            when = seconds_since([w.start], period.start)[0]
            common = dict(u=s.u, v=s.v, ua=ua[i], va=va[i], pressure=sigma[:, None, None] * s.ps[None])
            scalars: dict[str, Any] = {}
            if "t" in thermo:
                scalars.update(dt_kps=w.dt_nudge, ta=thermo_targets["t"][i])
            if "q" in thermo:
                scalars.update(dq_per_s=w.dq_nudge, qa=thermo_targets["q"][i])
            guide.append(when, **guide_record(grid, du_ms2=w.du_nudge, dv_ms2=w.dv_nudge, **common, **scalars))
            if out_correction is not None:
                # the applied (projected) window mean, as for the nudging: the two add up to the target
                corr_scalars: dict[str, Any] = {}
                if "t" in corr_thermo:
                    corr_scalars.update(dt_kps=w.dt_extra, ta=thermo_targets["t"][i])
                if "q" in corr_thermo:
                    corr_scalars.update(dq_per_s=w.dq_extra, qa=thermo_targets["q"][i])
                writers[1].append(when, **guide_record(grid, du_ms2=w.du_extra, dv_ms2=w.dv_extra, **common, **corr_scalars))
            if i % 40 == 0:
                log.info("%s %s", attrs["run"], w.start)
    except RunFailed:
        hist.abort(keep=True)
        for writer, path in zip(writers, (out_guide, out_correction)):
            writer.abort(Path(path).with_suffix(".failed.nc"))
        raise
    except BaseException:
        hist.abort(keep=False)
        for writer in writers:
            writer.abort()
        raise
    hist.close()
    for writer in writers:
        writer.close()
    if corrector is not None:
        log.info("corrector status: %s", {k: v for k, v in corrector.status().items() if k != "guard_per_window"})

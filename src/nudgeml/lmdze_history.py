"""A guided LMDZE run's files -> ``histhf.nc`` and ``guide_ins.nc`` in LMDZ's conventions
(:mod:`nudgeml.conventions`), read back by the same readers as LMDZ's and the stand-in's.

``guide_ins.nc`` is written in LMDZ6's staggered ``guide_out`` layout (``LONU``/``LATU`` with the
periodic longitude repeated and the poles, ``LATV`` between them, ``cu``/``cv``), which
:func:`nudgeml.conventions.read_guide` destaggers onto the scalar points. One record per 6-hour window
``[k, k + 1)``, labelled by its start:

- ``ucov``, ``vcov``, ``teta``: the increments LMDZE's guide applied, summed over the window by the
  build's diagnostic (``du_guide.nc`` …, ``fortran/lmdze_guide``), as window means per day;
- ``u``, ``v``: the model's winds at the window start, before that step's relaxation (the
  diagnostic's ``ucov_guide_state.nc``/``vcov_guide_state.nc`` divided by ``cu``/``cv``);
- ``ua``, ``va``, ``ta``, ``qa``: the analysis at the window start (for q, LMDZE's target: the
  analysis' relative humidity times the model's saturation humidity). The window's first relaxation has
  ``tau = 0``, so its recorded increment is ``alpha (analysis - state)`` and the analysis is
  ``state + increment / alpha``: exact for every window, the first included (LMDZE writes only the
  next window's analysis, ``ucovrea2``);
- ``SP``: the pressure of each layer that converts LMDZE's potential temperature to temperature,
  ``preff (T / theta)^(1 / kappa)`` from LMDZE's dynamics history at the window start (exactly the
  Exner function LMDZE used).

``histhf.nc`` holds, on LMDZE's scalar points (poles included), the dynamics history's ``u``, ``v``
(destaggered as LMDZ's physics does), ``temp``, water vapour and ``ps`` at each window start, and the
physics history's precipitation averaged over the window. LMDZE's dynamics history starts after the
first step, so the first window's state is the one a step (``86400 / day_step`` s) after the start.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import xarray as xr

from nudgeml.atomic import atomic_path
from nudgeml.conventions import LMDZ_KAPPA, LMDZ_PREFF_PA, LmdzGrid, histhf_record, open_histhf_writer
from nudgeml.errors import InputError
from nudgeml.lmdz_forcing import lmdz_points
from nudgeml.lmdze_run import LmdzeSettings, nudging_alpha

#: LMDZE's Earth radius (m, dyn3d/comconst.f90: ra)
LMDZE_RADIUS_M = 6371229.0
SECONDS_PER_DAY = 86400.0
WINDOW_S = 6 * 3600.0


def lmdze_axes(iim: int, jjm: int) -> dict[str, np.ndarray]:
    """Degrees of LMDZE's regular grid: ``lonu``/``lonv`` (``iim + 1``, the periodic point repeated),
    ``latu`` (``jjm + 1``, north to south, poles included), ``latv`` (``jjm``)."""
    # LMDZE's grid is LMDZ's: the same points as the nudging files' writer uses
    lonu, latu = lmdz_points(iim, jjm, "u")
    lonv, latv = lmdz_points(iim, jjm, "v")
    return {"lonv": lonv, "lonu": lonu, "latu": latu, "latv": latv}


def histhf_grid(iim: int, jjm: int, presnivs_pa: np.ndarray) -> LmdzGrid:
    """The points of ``histhf.nc``: LMDZE's scalar points without the periodic longitude, poles included,
    in canonical order (latitudes ascending, longitudes ascending in [0, 360)); the ``lmdze`` model grid
    (:func:`nudgeml.lmdz_grid.lmdze_model_grid`) is on the same points."""
    ax = lmdze_axes(iim, jjm)
    return LmdzGrid(lat_deg=ax["latu"][::-1].copy(), lon_deg=np.sort(np.mod(ax["lonv"][:-1], 360.0)),
                    presnivs_pa=np.asarray(presnivs_pa, np.float64))


def metric(iim: int, jjm: int) -> tuple[np.ndarray, np.ndarray]:
    """LMDZE's ``cu`` ``(jjm + 1, iim + 1)`` and ``cv`` ``(jjm, iim + 1)`` on its regular grid (m)."""
    ax = lmdze_axes(iim, jjm)
    cu = LMDZE_RADIUS_M * np.cos(np.deg2rad(ax["latu"]))[:, None] * (2 * np.pi / iim) * np.ones((1, iim + 1))
    cv = LMDZE_RADIUS_M * (np.pi / jjm) * np.ones((jjm, iim + 1))
    return cu, cv


def _field(run: Path, name: str) -> np.ndarray:
    path = run / f"{name}.nc"
    if not path.is_file():
        raise InputError(f"{path}: LMDZE wrote no {name} (a guided run with the build's guide diagnostic writes it)")
    with xr.open_dataset(path) as ds:
        return ds[name].values.astype(np.float64)  # (window, level, lat north->south, lon)


def _history(run: Path, name: str) -> xr.Dataset:
    path = run / name
    if not path.is_file():
        raise InputError(f"{path}: LMDZE history missing")
    return xr.open_dataset(path, decode_times=False).load()


def write_guided_outputs(run_dir: str | os.PathLike[str], settings: LmdzeSettings, *, epoch: np.datetime64 | str,
                         histhf: str | os.PathLike[str], guide: str | os.PathLike[str]) -> int:
    """Write ``histhf`` and ``guide`` from the guided run in ``run_dir``; returns the number of windows.
    ``epoch`` is the run's start (the time labels' origin, in the workflow's calendar)."""
    run = Path(run_dir)
    s = settings
    if not {"u", "v"} <= set(s.guide):
        raise InputError(f"{run}: the workflow's guided LMDZE run nudges u and v (guide: {list(s.guide)})")
    alpha = nudging_alpha(s)
    cu, cv = metric(s.iim, s.jjm)
    ax = lmdze_axes(s.iim, s.jjm)
    du, dv, du0, dv0 = (_field(run, n) for n in ("du_guide", "dv_guide", "du_guide0", "dv_guide0"))
    ucov, vcov = _field(run, "ucov_guide_state"), _field(run, "vcov_guide_state")
    n = du.shape[0]
    if ucov.shape[0] < n or du0.shape[0] < n:
        raise InputError(f"{run}: {n} windows of increments but {ucov.shape[0]} states and {du0.shape[0]} first increments")
    dyn = _history(run, "dyn_hist.nc")
    rec = _window_records(run, dyn, s, n)
    temp, theta = dyn["temp"].values[rec].astype(np.float64), dyn["theta"].values[rec].astype(np.float64)
    p_layer = LMDZ_PREFF_PA * (temp / theta) ** (1.0 / LMDZ_KAPPA)  # (window, lev, latu, lonv)
    presnivs = 100.0 * dyn["presnivs"].values.astype(np.float64)  # mb -> Pa, surface first

    pole = np.abs(np.abs(ax["latu"]) - 90.0) < 1e-6
    safe_cu = np.where(pole[:, None], 1.0, cu)
    per_day = SECONDS_PER_DAY / WINDOW_S
    u = np.where(pole[None, None, :, None], 0.0, ucov[:n] / safe_cu)
    ua = np.where(pole[None, None, :, None], 0.0, (ucov[:n] + du0[:n] / alpha) / safe_cu)
    v, va = vcov[:n] / cv, (vcov[:n] + dv0[:n] / alpha) / cv
    epoch64 = np.datetime64(epoch, "s")
    times = np.arange(n) * WINDOW_S
    tattrs = {"units": f"seconds since {str(epoch64).replace('T', ' ')}", "calendar": "gregorian", "standard_name": "time"}
    f4 = np.float32
    data = {
        "ucov": (("TIME", "LEVEL", "LATU", "LONU"), (du * per_day).astype(f4), {"units": "covariant m/s per day", "long_name": "zonal nudging increment applied, window mean"}),
        "vcov": (("TIME", "LEVEL", "LATV", "LONV"), (dv * per_day).astype(f4), {"units": "covariant m/s per day", "long_name": "meridional nudging increment applied, window mean"}),
        "u": (("TIME", "LEVEL", "LATU", "LONU"), u.astype(f4), {"units": "m/s", "long_name": "model zonal wind at the window start"}),
        "ua": (("TIME", "LEVEL", "LATU", "LONU"), ua.astype(f4), {"units": "m/s", "long_name": "analysis zonal wind at the window start"}),
        "v": (("TIME", "LEVEL", "LATV", "LONV"), v.astype(f4), {"units": "m/s", "long_name": "model meridional wind at the window start"}),
        "va": (("TIME", "LEVEL", "LATV", "LONV"), va.astype(f4), {"units": "m/s", "long_name": "analysis meridional wind at the window start"}),
    }
    if "t" in s.guide:
        dteta, dteta0, teta = _field(run, "dteta_guide"), _field(run, "dteta_guide0"), _field(run, "teta_guide_state")
        exner = temp / theta  # (p / preff)^kappa on the scalar points (lon iim + 1)
        data["teta"] = (("TIME", "LEVEL", "LATU", "LONU"), (dteta[:n] * per_day).astype(f4), {"units": "K/day", "long_name": "potential-temperature nudging increment applied, window mean"})
        data["ta"] = (("TIME", "LEVEL", "LATU", "LONU"), ((teta[:n] + dteta0[:n] / nudging_alpha(s, "t")) * exner).astype(f4), {"units": "K", "long_name": "analysis temperature at the window start"})
    if "q" in s.guide:  # LMDZE relaxes q toward q_sat(model T) x the analysis' relative humidity
        dq, dq0, q_state = _field(run, "dq_guide"), _field(run, "dq_guide0"), _field(run, "q_guide_state")
        data["q"] = (("TIME", "LEVEL", "LATU", "LONU"), (dq[:n] * per_day).astype(f4), {"units": "kg/kg/day", "long_name": "specific-humidity nudging increment applied, window mean"})
        data["qa"] = (("TIME", "LEVEL", "LATU", "LONU"), (q_state[:n] + dq0[:n] / nudging_alpha(s, "q")).astype(f4), {"units": "kg/kg", "long_name": "nudging target of q at the window start"})
    data["SP"] = (("TIME", "LEVEL", "LATU", "LONU"), p_layer.astype(f4), {"units": "Pa", "long_name": "layer pressure of LMDZE's Exner function at the window start"})
    coords = {
        "TIME": ("TIME", times, tattrs),
        "LEVEL": ("LEVEL", presnivs.astype(f4), {"units": "Pa", "long_name": "presnivs"}),
        "LONU": ("LONU", ax["lonu"].astype(f4), {"units": "degrees_east"}),
        "LATU": ("LATU", ax["latu"].astype(f4), {"units": "degrees_north"}),
        "LONV": ("LONV", ax["lonv"].astype(f4), {"units": "degrees_east"}),
        "LATV": ("LATV", ax["latv"].astype(f4), {"units": "degrees_north"}),
        "cu": (("LATU", "LONU"), cu.astype(f4), {"long_name": "covariant metric factor of u (m)"}),
        "cv": (("LATV", "LONV"), cv.astype(f4), {"long_name": "covariant metric factor of v (m)"}),
        "au": (("LATU", "LONU"), np.full(cu.shape, alpha, f4), {"long_name": "nudging coefficient of u per call"}),
        "av": (("LATV", "LONV"), np.full(cv.shape, alpha, f4), {"long_name": "nudging coefficient of v per call"}),
    }
    ds = xr.Dataset(data, coords=coords, attrs={"file_name": "guide_ins", "window_hours": 6.0,
                                                  "production": "nudgeml from LMDZE's guided run (build diagnostic of the applied increments)"})
    with atomic_path(guide) as tmp:
        ds.to_netcdf(tmp, encoding={"TIME": {"dtype": "float64"}})

    write_history(run, s, epoch=epoch, histhf=histhf, windows=n)
    return n


def _window_records(run: Path, dyn: xr.Dataset, s: LmdzeSettings, n: int) -> list[int]:
    """The dynamics history's record at each window start (the first window's: one step in)."""
    step_s = SECONDS_PER_DAY / s.day_step
    t_dyn = dyn["time_counter"].values
    rec = [int(np.argmin(np.abs(t_dyn - max(k * WINDOW_S, step_s)))) for k in range(n)]
    if np.any(np.abs(t_dyn[rec] - np.maximum(np.arange(n) * WINDOW_S, step_s)) > 1.0):
        raise InputError(f"{run / 'dyn_hist.nc'}: no record at every window start (times {t_dyn[:3]} …)")
    return rec


def write_history(run_dir: str | os.PathLike[str], settings: LmdzeSettings, *, epoch: np.datetime64 | str,
                  histhf: str | os.PathLike[str], windows: int | None = None) -> int:
    """Write ``histhf`` from the LMDZE run in ``run_dir`` (guided or free): the state at each 6-hour
    window start and the window's mean precipitation, ``windows`` windows (default: the run's
    ``4 days``); returns their number."""
    run = Path(run_dir)
    s = settings
    n = 4 * s.days if windows is None else windows
    ax = lmdze_axes(s.iim, s.jjm)
    dyn, dyn_u, dyn_v = _history(run, "dyn_hist.nc"), _history(run, "dyn_histu.nc"), _history(run, "dyn_histv.nc")
    rec = _window_records(run, dyn, s, n)
    temp = dyn["temp"].values[rec].astype(np.float64)
    presnivs = 100.0 * dyn["presnivs"].values.astype(np.float64)  # mb -> Pa, surface first
    epoch64 = np.datetime64(epoch, "s")
    times = np.arange(n) * WINDOW_S

    # scalar points, canonical order in (lat ascending, lon in [0, 360))
    order = np.argsort(np.mod(ax["lonv"][:-1], 360.0))
    grid = histhf_grid(s.iim, s.jjm, presnivs)

    def canon(a: np.ndarray) -> np.ndarray:  # (..., latu N->S, lon iim + 1) -> (..., lat S->N, lon ascending)
        return np.asarray(a)[..., ::-1, :-1][..., order]

    u_nat = dyn_u["u"].values[rec].astype(np.float64)  # (window, lev, latu, lonu)
    v_nat = dyn_v["v"].values[rec].astype(np.float64)  # (window, lev, latv, lonv)
    u_s = 0.5 * (u_nat[..., :-1] + np.roll(u_nat[..., :-1], 1, axis=-1))  # scalar i between u points i-1 and i
    u_s = np.concatenate([u_s, u_s[..., :1]], axis=-1)
    v_s = np.concatenate([v_nat[..., :1, :], 0.5 * (v_nat[..., :-1, :] + v_nat[..., 1:, :]), v_nat[..., -1:, :]], axis=-2)
    q = dyn["H2OvVLH"].values[rec].astype(np.float64)
    ps = dyn["ps"].values[rec].astype(np.float64)
    phys = _history(run, "histins.nc")
    t_phys, precip = phys["time_counter"].values, phys["precip"].values.astype(np.float64)  # (time, lat, lon iim)
    writer = open_histhf_writer(histhf, grid, epoch=epoch64, window_hours=6.0, attrs={"production": f"nudgeml from LMDZE's {'guided' if s.guide else 'free'} run"})
    try:
        for k in range(n):
            inside = (t_phys > k * WINDOW_S) & (t_phys <= (k + 1) * WINDOW_S)  # physics instants in the window
            if not inside.any():
                raise InputError(f"{run / 'histins.nc'}: no precipitation record in window {k}")
            pr = precip[inside].mean(axis=0)
            pr_full = np.concatenate([pr, pr[..., :1]], axis=-1)  # add the repeated longitude, canon drops it
            writer.append(times[k], **histhf_record(grid, u=canon(u_s[k]), v=canon(v_s[k]), t=canon(temp[k]), q=canon(q[k]),
                                                     ps=canon(ps[k]), precip=canon(pr_full)))
    finally:
        writer.close()
    return n

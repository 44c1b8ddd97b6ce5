"""LMDZ's physics grid as the workflow's model grid (the ``lmdz`` and ``lmdze`` backends' ``grid/model_grid.nc``).

LMDZ's histories are on its physics grid: ``iim`` longitudes from -180 deg (the dynamics' periodic
point not repeated) by the ``jjm + 1`` scalar latitudes, poles included, over LMDZ's own orography,
on its hybrid sigma-pressure levels. Every stage that compares with or adds to those histories (the
truth's regrid, extract's land fraction, bias_check, the report, the mean tendency LMDZ reads back)
needs that grid, not the stand-in's, so the grid file is made from the reference files the runs start
from (``lmdz.reference_dir``):

- ``start.nc`` (written by LMDZ's ``dynredem0``): ``rlonv`` (iim + 1) and ``rlatu`` (jjm + 1), the
  scalar longitudes and latitudes in radians, north first; ``phisinit`` ``(rlatu, rlonv)``, the surface
  geopotential (m2 s-2); ``ap`` (Pa), ``bp`` on the ``llm + 1`` layer interfaces, surface first; and
  ``presnivs`` (Pa, ``llm``), the levels' nominal pressures, which label LMDZ's history levels.
- ``startphy.nc``: ``masque`` on ``points_physiques``, the land fraction (land ice included) the physics
  starts from.

The physics' column vector ``klon = iim (jjm - 1) + 2`` runs from the north pole (one point) along the
rows of the dynamics' scalar grid, west to east from -180 deg, to the south pole (one point).

LMDZE (the ``lmdze`` backend) writes the same files with the same layout, but names the orography
``phis`` (its ``dynredem0``), and has no reference files: its runs start from what its ``ce0l`` makes
from the truth at ``period.start`` (:func:`lmdze_model_grid` runs it, as the guided run does, and
reads its ``restart.nc`` and ``restartphy.nc``). The grid file is on the points of LMDZE's ``histhf.nc``
(:func:`nudgeml.lmdze_history.histhf_grid`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from nudgeml.atomic import atomic_path, write_text_atomic
from nudgeml.errors import InputError, RunFailed
from nudgeml.gcm.standin import PREFF_PA, ModelGrid
from nudgeml.grid import cdo_grid_description, grid_dataset
from nudgeml.lmdz_forcing import lmdz_points

log = logging.getLogger(__name__)

#: the start file's surface geopotential: LMDZ6's dynredem0 writes ``phisinit``, LMDZE's ``phis``
OROGRAPHY_NAMES = ("phisinit", "phis")


def klon(iim: int, jjm: int) -> int:
    """The physics' number of columns: every scalar point but the poles' repeated longitudes."""
    return iim * (jjm - 1) + 2


def physics_to_rows(values: np.ndarray, iim: int, jjm: int) -> np.ndarray:
    """``(..., klon)`` physics columns -> ``(..., jjm + 1, iim)`` in LMDZ's order (north first, from
    -180 deg), each pole's one value repeated along its row (as LMDZ's history files write them)."""
    a = np.asarray(values)
    if a.shape[-1] != klon(iim, jjm):
        raise ValueError(f"{a.shape[-1]} physics columns, not klon = iim (jjm - 1) + 2 = {klon(iim, jjm)} of the {iim}x{jjm} grid")
    lead = a.shape[:-1]
    inner = a[..., 1:-1].reshape(*lead, jjm - 1, iim)
    north = np.broadcast_to(a[..., :1, None], (*lead, 1, iim))
    south = np.broadcast_to(a[..., -1:, None], (*lead, 1, iim))
    return np.concatenate([north, inner, south], axis=-2)


def rows_to_physics(values: np.ndarray) -> np.ndarray:
    """``(..., jjm + 1, iim)`` in LMDZ's order -> ``(..., klon)`` physics columns; a pole row becomes its
    longitudes' mean (a pole is one column in the physics)."""
    a = np.asarray(values)
    lead = a.shape[:-2]
    north, south = a[..., 0, :].mean(axis=-1), a[..., -1, :].mean(axis=-1)
    inner = a[..., 1:-1, :].reshape(*lead, -1)
    return np.concatenate([north[..., None], inner, south[..., None]], axis=-1)


def _lon_order(iim: int) -> np.ndarray:
    """Indices that take LMDZ's longitudes (-180 deg first) to the canonical ascending [0, 360)."""
    lon = np.mod(lmdz_points(iim, 2, "scalar")[0][:iim], 360.0)
    return np.argsort(lon, kind="stable")


def rows_to_canonical(values: np.ndarray, iim: int) -> np.ndarray:
    """LMDZ's ``(..., jjm + 1, iim)`` (north first, from -180) -> canonical (lat and lon ascending)."""
    return np.asarray(values)[..., ::-1, :][..., _lon_order(iim)]


def canonical_to_rows(values: np.ndarray, iim: int) -> np.ndarray:
    """Canonical ``(..., lat, lon)`` -> LMDZ's ``(..., jjm + 1, iim)`` order (inverse of the above)."""
    a = np.asarray(values)
    out = np.empty_like(a)
    out[..., _lon_order(iim)] = a
    return out[..., ::-1, :]


def _open(path: Path, what: str, names: tuple[str, ...], origin: str) -> xr.Dataset:
    if not path.is_file():
        raise InputError(f"{path}: {what} not found ({origin})")
    try:
        ds = xr.open_dataset(path, decode_times=False)
    except Exception as exc:  # not NetCDF: say which file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise InputError(f"{path}: {what} cannot be read as NetCDF ({type(exc).__name__}: {first})") from None
    missing = [n for n in names if n not in ds.variables]
    if missing:
        ds.close()
        raise InputError(f"{path}: {what} has no variable(s) {missing} (has {sorted(ds.variables)})")
    return ds


def _degrees(values: np.ndarray) -> np.ndarray:
    """start.nc's coordinates are radians (dynredem0 writes rlonv, rlatu as the dynamics holds them)."""
    v = np.asarray(values, np.float64)
    return np.rad2deg(v) if np.abs(v).max() <= 2 * np.pi + 1e-6 else v


def read_lmdz_grid(start_nc: str | os.PathLike[str], startphy_nc: str | os.PathLike[str], iim: int, jjm: int, *,
                   model: str = "LMDZ", origin: str = "lmdz.reference_dir", grid_key: str = "lmdz.grid") -> tuple[ModelGrid, np.ndarray, np.ndarray]:
    """The model grid of an LMDZ-family start file and physics start file, and its layers' hybrid coefficients.

    Returns ``(grid, ap_mid_pa, bp_mid)``: ``grid`` canonical (see :class:`ModelGrid`; ``sigma`` is
    ``presnivs / preff``, so its ``presnivs_pa`` labels levels as LMDZ's histories do), and the layer
    mid-points' pressure ``ap_mid_pa + bp_mid * ps`` (the mean of the two interfaces), surface first.
    The orography is the first of :data:`OROGRAPHY_NAMES` the start file has (LMDZ6's or LMDZE's).
    Raises :class:`InputError` naming the file and variable when one is missing or is not the
    ``iim x jjm`` grid of ``grid_key`` (the grid the nudging files are written on); ``model`` and
    ``origin`` (where the files come from) word the messages.
    """
    start, startphy = Path(start_nc), Path(startphy_nc)
    with _open(start, f"{model} start file", ("rlonv", "rlatu", "ap", "bp", "presnivs"), origin) as ds:
        oro = next((n for n in OROGRAPHY_NAMES if n in ds.variables), None)
        if oro is None:
            raise InputError(f"{start}: {model} start file has no orography (none of {list(OROGRAPHY_NAMES)}; has {sorted(ds.variables)})")
        rlonv, rlatu = _degrees(ds["rlonv"].values), _degrees(ds["rlatu"].values)
        phis = np.asarray(ds[oro].values, np.float64)
        ap, bp = np.asarray(ds["ap"].values, np.float64), np.asarray(ds["bp"].values, np.float64)
        presnivs = np.asarray(ds["presnivs"].values, np.float64)
        phis_dims = ds[oro].dims
    lon_want, lat_want = lmdz_points(iim, jjm, "scalar")
    for name, got, want in (("rlonv", rlonv, lon_want), ("rlatu", rlatu, lat_want)):
        if got.size != want.size:
            raise InputError(f"{start}: {name} has {got.size} points; {grid_key} {{iim: {iim}, jjm: {jjm}}} has {want.size} "
                             "(the start files are for another grid)")
        if not np.allclose(got, want, atol=1e-3):
            raise InputError(f"{start}: {name} is not the regular {iim}x{jjm} grid the nudging files are written on "
                             f"(first points {got[:3].round(4).tolist()}, expected {want[:3].round(4).tolist()}; a zoomed grid is not supported)")
    if phis.shape != (jjm + 1, iim + 1):
        raise InputError(f"{start}: {oro} is {dict(zip(phis_dims, phis.shape))}, expected (rlatu: {jjm + 1}, rlonv: {iim + 1})")
    nlev = presnivs.size
    if ap.size != nlev + 1 or bp.size != nlev + 1:
        raise InputError(f"{start}: ap/bp have {ap.size}/{bp.size} interfaces, presnivs {nlev} layers (need presnivs + 1)")
    if not np.all(np.diff(presnivs) < 0):
        raise InputError(f"{start}: presnivs is not decreasing upward (surface first): {presnivs[:3].tolist()}...")
    with _open(startphy, f"{model} physics start file", ("masque",), origin) as ds:
        masque = np.asarray(ds["masque"].values, np.float64).reshape(-1)
        lat_phy = np.asarray(ds["latitude"].values, np.float64).reshape(-1) if "latitude" in ds.variables else None
    if masque.size != klon(iim, jjm):
        raise InputError(f"{startphy}: masque has {masque.size} points; the {iim}x{jjm} grid has klon = {klon(iim, jjm)}")
    if lat_phy is not None and not np.allclose(physics_to_rows(lat_phy, iim, jjm)[:, 0], lat_want, atol=1e-3):
        raise InputError(f"{startphy}: its latitudes are not those of {start} (rlatu)")
    if not (np.all(masque >= -1e-6) and np.all(masque <= 1 + 1e-6)):
        raise InputError(f"{startphy}: masque (land fraction) outside [0, 1]: {masque.min():.3g} .. {masque.max():.3g}")
    grid = ModelGrid(
        lat_deg=lat_want[::-1].copy(),
        lon_deg=np.sort(np.mod(lon_want[:iim], 360.0)),
        sigma=presnivs / PREFF_PA,
        surface_geopotential=rows_to_canonical(phis[:, :iim], iim),
        land_fraction=rows_to_canonical(physics_to_rows(np.clip(masque, 0.0, 1.0), iim, jjm), iim),
        truncation=0,
    )
    return grid, 0.5 * (ap[:-1] + ap[1:]), 0.5 * (bp[:-1] + bp[1:])


def lmdz_grid_dataset(grid: ModelGrid, ap_mid_pa: np.ndarray, bp_mid: np.ndarray, *, iim: int, jjm: int, sources: str,
                      backend: str = "lmdz") -> xr.Dataset:
    ds = grid_dataset(grid)
    ds["ap_mid_pa"] = (("lev",), ap_mid_pa, {"units": "Pa", "long_name": "hybrid coefficient A at layer mid-points: p = ap_mid_pa + bp_mid * ps"})
    ds["bp_mid"] = (("lev",), bp_mid, {"units": "1", "long_name": "hybrid coefficient B at layer mid-points"})
    ds["sigma"].attrs["long_name"] = "presnivs / preff (nominal; the levels are hybrid: ap_mid_pa, bp_mid)"
    model = {"lmdz": "LMDZ", "lmdze": "LMDZE"}.get(backend, backend)
    ds.attrs.update({"title": f"nudgeml model grid: {model} physics grid", "backend": backend, "iim": iim, "jjm": jjm, "source": sources})
    return ds


def lmdz_model_grid(cfg: Mapping[str, Any], inputs: Mapping[str, Any], nc_out: str | os.PathLike[str], cdo_out: str | os.PathLike[str]) -> None:
    """The ``lmdz`` backend's grid maker (:mod:`nudgeml.gcm.registry`): ``inputs`` ``start``, ``startphy``
    (the reference files), ``cfg`` ``{"lmdz": {"grid": {"iim", "jjm"}}}``."""
    iim, jjm = int(cfg["lmdz"]["grid"]["iim"]), int(cfg["lmdz"]["grid"]["jjm"])
    grid, ap_mid, bp_mid = read_lmdz_grid(inputs["start"], inputs["startphy"], iim, jjm)
    ds = lmdz_grid_dataset(grid, ap_mid, bp_mid, iim=iim, jjm=jjm, sources=f"{inputs['start']}, {inputs['startphy']}")
    _write_grid(ds, grid, nc_out, cdo_out)


def _write_grid(ds: xr.Dataset, grid: ModelGrid, nc_out: str | os.PathLike[str], cdo_out: str | os.PathLike[str]) -> None:
    with atomic_path(nc_out) as tmp:
        ds.to_netcdf(tmp)
    write_text_atomic(cdo_out, cdo_grid_description(grid))


def lmdze_model_grid(cfg: Mapping[str, Any], inputs: Mapping[str, Any], nc_out: str | os.PathLike[str], cdo_out: str | os.PathLike[str]) -> None:
    """The ``lmdze`` backend's grid maker (:mod:`nudgeml.gcm.registry`): LMDZE's start files made from the
    truth at ``period.start`` exactly as the guided run makes them (:func:`nudgeml.lmdze_run.run_ce0l`,
    same ``lmdze`` block, in ``cfg["run_dir"]``), read as LMDZ's (:func:`read_lmdz_grid`).

    ``inputs``: ``pressure_levels``, ``single_levels`` (the monthly ERA5 files, the start's month
    first), ``invariant``; ``cfg``: ``{"period": {"start"}, "lmdze": {...} (optional), "run_dir"}``.
    The grid is that of LMDZE's ``histhf.nc`` (:func:`nudgeml.lmdze_history.histhf_grid`): the scalar
    points, poles included, canonical order; its levels are the layers' ``presnivs`` (Pa).
    """
    from nudgeml.lmdze_build import executable
    from nudgeml.lmdze_run import LmdzeSettings, run_ce0l

    ce0l = executable("ce0l")
    if not ce0l.is_file():
        raise RunFailed(f"backend 'lmdze': the LMDZE build is missing: no {ce0l} (scripts/build_lmdze.sh builds it there; docs/lmdze.md)")
    # days does not enter ce0l's namelists: the start files depend on the start, the grid and the steps only
    settings = LmdzeSettings(start=str(np.datetime64(cfg["period"]["start"], "s")), days=1, **dict(cfg.get("lmdze") or {}))
    run, ce0l_s = run_ce0l(cfg["run_dir"], settings, ce0l=ce0l, pressure_levels=list(inputs["pressure_levels"]),
                           single_levels=list(inputs["single_levels"]), invariant=inputs["invariant"])
    log.info("LMDZE %dx%dx%d start files at %s: ce0l %.1f s in %s", settings.iim, settings.jjm, settings.llm, settings.start, ce0l_s, run)
    start, startphy = run / "restart.nc", run / "restartphy.nc"
    grid, ap_mid, bp_mid = read_lmdz_grid(start, startphy, settings.iim, settings.jjm, model="LMDZE", origin=f"written by ce0l in {run}",
                                          grid_key="lmdze")
    if grid.sigma.size != settings.llm:
        raise InputError(f"{start}: presnivs has {grid.sigma.size} levels, the lmdze block's llm is {settings.llm}")
    ds = lmdz_grid_dataset(grid, ap_mid, bp_mid, iim=settings.iim, jjm=settings.jjm, sources=f"{start}, {startphy}", backend="lmdze")
    _write_grid(ds, grid, nc_out, cdo_out)


def mean_on_physics_grid(mean: xr.Dataset, iim: int, jjm: int, names: tuple[str, ...] = ("du_mean", "dv_mean")) -> xr.Dataset:
    """The workflow's mean tendency (canonical ``du_mean``/``dv_mean`` ``(lev, lat, lon)``, m s-2) in the
    layout LMDZ's ``nudgeml_physiq_init`` reads: ``(presnivs, points_physiques)``, surface first, the
    physics' column order (``lmdz/INTEGRATION.md``); ``names`` are the fields converted (the model's
    mean of a mean-residual run is laid out the same way)."""
    out = {}
    for name in names:
        if name not in mean:
            raise InputError(f"mean tendency has no {name!r}")
        da = mean[name]
        if da.sizes.get("lat") != jjm + 1 or da.sizes.get("lon") != iim:
            raise InputError(f"mean tendency {name} is {dict(da.sizes)}: not LMDZ's {iim}x{jjm} physics grid "
                             f"(lat {jjm + 1} with the poles, lon {iim}); was it made from this LMDZ run's guide_ins?")
        a = da.transpose("lev", "lat", "lon").values.astype(np.float64)
        out[name] = (("presnivs", "points_physiques"), rows_to_physics(canonical_to_rows(a, iim)),
                     {"units": "m s-2", "long_name": f"{name}, LMDZ physics columns (north pole first)"})
    lev = mean["lev"].values if "lev" in mean.coords else np.arange(mean.sizes["lev"])
    return xr.Dataset(out, coords={"presnivs": ("presnivs", np.asarray(lev, np.float64), {"units": "Pa"})},
                      attrs={"title": "nudgeml mean nudging tendency for LMDZ (nudgeml_physiq_init)", "iim": iim, "jjm": jjm})

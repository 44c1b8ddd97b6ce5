"""LMDZ's physics grid as the workflow's model grid (the ``lmdz`` backend's ``grid/model_grid.nc``).

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
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from nudgeml.atomic import atomic_path, write_text_atomic
from nudgeml.errors import InputError
from nudgeml.gcm.standin import PREFF_PA, ModelGrid
from nudgeml.grid import cdo_grid_description, grid_dataset
from nudgeml.lmdz_forcing import lmdz_points


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


def _open(path: Path, what: str, names: tuple[str, ...]) -> xr.Dataset:
    if not path.is_file():
        raise InputError(f"{path}: LMDZ {what} not found (lmdz.reference_dir)")
    try:
        ds = xr.open_dataset(path, decode_times=False)
    except Exception as exc:  # not NetCDF: say which file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise InputError(f"{path}: LMDZ {what} cannot be read as NetCDF ({type(exc).__name__}: {first})") from None
    missing = [n for n in names if n not in ds.variables]
    if missing:
        ds.close()
        raise InputError(f"{path}: LMDZ {what} has no variable(s) {missing} (has {sorted(ds.variables)})")
    return ds


def _degrees(values: np.ndarray) -> np.ndarray:
    """start.nc's coordinates are radians (dynredem0 writes rlonv, rlatu as the dynamics holds them)."""
    v = np.asarray(values, np.float64)
    return np.rad2deg(v) if np.abs(v).max() <= 2 * np.pi + 1e-6 else v


def read_lmdz_grid(start_nc: str | os.PathLike[str], startphy_nc: str | os.PathLike[str], iim: int, jjm: int) -> tuple[ModelGrid, np.ndarray, np.ndarray]:
    """The model grid of LMDZ's reference files, and its layers' hybrid coefficients.

    Returns ``(grid, ap_mid_pa, bp_mid)``: ``grid`` canonical (see :class:`ModelGrid`; ``sigma`` is
    ``presnivs / preff``, so its ``presnivs_pa`` labels levels as LMDZ's histories do), and the layer
    mid-points' pressure ``ap_mid_pa + bp_mid * ps`` (the mean of the two interfaces), surface first.
    Raises :class:`InputError` naming the file and variable when one is missing or is not the
    ``iim x jjm`` grid of ``lmdz.grid`` (the grid the nudging files are written on).
    """
    start, startphy = Path(start_nc), Path(startphy_nc)
    with _open(start, "start file", ("rlonv", "rlatu", "phisinit", "ap", "bp", "presnivs")) as ds:
        rlonv, rlatu = _degrees(ds["rlonv"].values), _degrees(ds["rlatu"].values)
        phis = np.asarray(ds["phisinit"].values, np.float64)
        ap, bp = np.asarray(ds["ap"].values, np.float64), np.asarray(ds["bp"].values, np.float64)
        presnivs = np.asarray(ds["presnivs"].values, np.float64)
        phis_dims = ds["phisinit"].dims
    lon_want, lat_want = lmdz_points(iim, jjm, "scalar")
    for name, got, want in (("rlonv", rlonv, lon_want), ("rlatu", rlatu, lat_want)):
        if got.size != want.size:
            raise InputError(f"{start}: {name} has {got.size} points; lmdz.grid {{iim: {iim}, jjm: {jjm}}} has {want.size} "
                             "(the reference files are for another grid)")
        if not np.allclose(got, want, atol=1e-3):
            raise InputError(f"{start}: {name} is not the regular {iim}x{jjm} grid the nudging files are written on "
                             f"(first points {got[:3].round(4).tolist()}, expected {want[:3].round(4).tolist()}; a zoomed grid is not supported)")
    if phis.shape != (jjm + 1, iim + 1):
        raise InputError(f"{start}: phisinit is {dict(zip(phis_dims, phis.shape))}, expected (rlatu: {jjm + 1}, rlonv: {iim + 1})")
    nlev = presnivs.size
    if ap.size != nlev + 1 or bp.size != nlev + 1:
        raise InputError(f"{start}: ap/bp have {ap.size}/{bp.size} interfaces, presnivs {nlev} layers (need presnivs + 1)")
    if not np.all(np.diff(presnivs) < 0):
        raise InputError(f"{start}: presnivs is not decreasing upward (surface first): {presnivs[:3].tolist()}...")
    with _open(startphy, "physics start file", ("masque",)) as ds:
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


def lmdz_grid_dataset(grid: ModelGrid, ap_mid_pa: np.ndarray, bp_mid: np.ndarray, *, iim: int, jjm: int, sources: str) -> xr.Dataset:
    ds = grid_dataset(grid)
    ds["ap_mid_pa"] = (("lev",), ap_mid_pa, {"units": "Pa", "long_name": "hybrid coefficient A at layer mid-points: p = ap_mid_pa + bp_mid * ps"})
    ds["bp_mid"] = (("lev",), bp_mid, {"units": "1", "long_name": "hybrid coefficient B at layer mid-points"})
    ds["sigma"].attrs["long_name"] = "presnivs / preff (nominal; the levels are hybrid: ap_mid_pa, bp_mid)"
    ds.attrs.update({"title": "nudgeml model grid: LMDZ physics grid", "backend": "lmdz", "iim": iim, "jjm": jjm, "source": sources})
    return ds


def lmdz_model_grid(cfg: Mapping[str, Any], inputs: Mapping[str, Any], nc_out: str | os.PathLike[str], cdo_out: str | os.PathLike[str]) -> None:
    """The ``lmdz`` backend's grid maker (:mod:`nudgeml.gcm.registry`): ``inputs`` ``start``, ``startphy``
    (the reference files), ``cfg`` ``{"lmdz": {"grid": {"iim", "jjm"}}}``."""
    iim, jjm = int(cfg["lmdz"]["grid"]["iim"]), int(cfg["lmdz"]["grid"]["jjm"])
    grid, ap_mid, bp_mid = read_lmdz_grid(inputs["start"], inputs["startphy"], iim, jjm)
    ds = lmdz_grid_dataset(grid, ap_mid, bp_mid, iim=iim, jjm=jjm, sources=f"{inputs['start']}, {inputs['startphy']}")
    with atomic_path(nc_out) as tmp:
        ds.to_netcdf(tmp)
    write_text_atomic(cdo_out, cdo_grid_description(grid))


def mean_on_physics_grid(mean: xr.Dataset, iim: int, jjm: int) -> xr.Dataset:
    """The workflow's mean tendency (canonical ``du_mean``/``dv_mean`` ``(lev, lat, lon)``, m s-2) in the
    layout LMDZ's ``nudgeml_physiq_init`` reads: ``(presnivs, points_physiques)``, surface first, the
    physics' column order (``lmdz/INTEGRATION.md``)."""
    out = {}
    for name in ("du_mean", "dv_mean"):
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

"""The model grid as files: a NetCDF description (coordinates, levels, orography, land fraction) and the
CDO grid description that the regridding step targets.

Each GCM backend makes them its own way (``grid`` in :mod:`nudgeml.gcm.registry`): the stand-in from
jcm's coordinate system (:func:`standin_model_grid`), ``lmdz`` from LMDZ's reference files
(:func:`nudgeml.lmdz_grid.lmdz_model_grid`: its physics grid, orography, land fraction and hybrid
levels). Everything downstream (regrid, extract, bias_check, report) reads the grid from here.
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


def model_grid_from_config(config: Mapping[str, Any]) -> ModelGrid:
    """Build the stand-in model's grid (no integration, no compilation)."""
    from nudgeml.gcm.standin import GCMConfig, StandinGCM

    m = config["model"]
    gcm = StandinGCM(GCMConfig(truncation=m["truncation"], layers=m["layers"], physics=m["physics"]), np.datetime64(config["period"]["start"], "s"))
    return gcm.grid


def standin_model_grid(cfg: Mapping[str, Any], inputs: Mapping[str, Any], nc_out: str | os.PathLike[str], cdo_out: str | os.PathLike[str]) -> None:
    """The stand-in's grid maker (:mod:`nudgeml.gcm.registry`): from the config's ``model`` (no inputs)."""
    write_model_grid(model_grid_from_config(cfg), nc_out, cdo_out)


def grid_dataset(grid: ModelGrid) -> xr.Dataset:
    return xr.Dataset(
        {
            "sigma": (("lev",), grid.sigma, {"long_name": "sigma at layer mid-points, surface first", "units": "1"}),
            "surface_geopotential": (("lat", "lon"), grid.surface_geopotential.astype(np.float32), {"units": "m2 s-2", "long_name": "surface geopotential seen by the model"}),
            "land_fraction": (("lat", "lon"), grid.land_fraction.astype(np.float32), {"units": "1", "long_name": "land fraction"}),
        },
        coords={
            "lat": (("lat",), grid.lat_deg, {"units": "degrees_north"}),
            "lon": (("lon",), grid.lon_deg, {"units": "degrees_east"}),
            "lev": (("lev",), grid.presnivs_pa, {"units": "Pa", "long_name": "presnivs (sigma x preff)", "preff_pa": PREFF_PA}),
        },
        attrs={"truncation": grid.truncation, "title": "nudgeml model grid"},
    )


def cdo_grid_description(grid: ModelGrid) -> str:
    """A CDO grid description of the model's horizontal grid (longitudes regular, latitudes listed)."""
    lon = np.asarray(grid.lon_deg)
    dlon = np.diff(lon)
    if not np.allclose(dlon, dlon[0]):
        raise ValueError("model longitudes must be regularly spaced")
    yvals = " ".join(f"{v:.10f}" for v in grid.lat_deg)
    return "\n".join([
        "gridtype  = lonlat",
        f"gridsize  = {lon.size * grid.lat_deg.size}",
        f"xsize     = {lon.size}",
        f"ysize     = {grid.lat_deg.size}",
        "xname     = lon",
        'xunits    = "degrees_east"',
        "yname     = lat",
        'yunits    = "degrees_north"',
        f"xfirst    = {lon[0]:.10f}",
        f"xinc      = {dlon[0]:.10f}",
        f"yvals     = {yvals}",
        "",
    ])


def write_model_grid(grid: ModelGrid, nc_path: str | os.PathLike[str], cdo_path: str | os.PathLike[str]) -> None:
    with atomic_path(nc_path) as tmp:
        grid_dataset(grid).to_netcdf(tmp)
    write_text_atomic(cdo_path, cdo_grid_description(grid))


def read_model_grid(nc_path: str | os.PathLike[str]) -> ModelGrid:
    path = Path(nc_path)
    if not path.exists():
        raise InputError(f"{path}: model grid file not found")
    with xr.open_dataset(path) as ds:
        for name in ("sigma", "surface_geopotential", "land_fraction"):
            if name not in ds:
                raise InputError(f"{path}: model grid file has no variable {name!r}")
        return ModelGrid(
            lat_deg=ds["lat"].values.astype(np.float64),
            lon_deg=ds["lon"].values.astype(np.float64),
            sigma=ds["sigma"].values.astype(np.float64),
            surface_geopotential=ds["surface_geopotential"].values.astype(np.float64),
            land_fraction=ds["land_fraction"].values.astype(np.float64),
            truncation=int(ds.attrs.get("truncation", 0)),
        )


def read_hybrid_levels(nc_path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """The layers' hybrid coefficients ``(ap_mid_pa, bp_mid)`` (surface first; p = a + b ps) of a grid
    file that has them (LMDZ's, :mod:`nudgeml.lmdz_grid`); ``None`` for a sigma grid (the stand-in's)."""
    with xr.open_dataset(nc_path) as ds:
        if "ap_mid_pa" not in ds and "bp_mid" not in ds:
            return None
        for name in ("ap_mid_pa", "bp_mid"):
            if name not in ds:
                raise InputError(f"{nc_path}: model grid file has {'bp_mid' if name == 'ap_mid_pa' else 'ap_mid_pa'} but no {name!r}")
        return ds["ap_mid_pa"].values.astype(np.float64), ds["bp_mid"].values.astype(np.float64)

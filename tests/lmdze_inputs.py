"""Minimal synthetic inputs for LMDZE's ``ce0l`` (smoke runs only; the workflow builds real ones).

An idealised Earth on a 5° grid: one rectangular continent (500 m high, on a 1° relief grid), a
zonally symmetric atmosphere (temperature falling 6.5 K/km up to 11 km then isothermal, a westerly
jet, 50 % relative humidity) and a zonal SST with a seasonal shift. The files and variables are the
ones ``ce0l`` reads (coordinates found by their ``units``, latitudes pole to pole, 12 monthly records
for the boundary conditions), so that ``ce0l`` can write ``restart.nc``, ``restartphy.nc`` and
``limit.nc`` for a short ``gcm`` run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from netCDF4 import Dataset

G = 9.80665  # m s-2
PLEV_HPA = np.array([10, 20, 30, 50, 70, 100, 150, 200, 250, 300, 400, 500, 600, 700, 850, 925, 1000], float)


def _grid(step_deg: float) -> tuple[np.ndarray, np.ndarray]:
    lon = np.arange(-180.0, 180.0, step_deg)
    lat = np.linspace(90.0, -90.0, round(180 / step_deg) + 1)  # pole to pole, north first
    return lon, lat


def _land(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """(lat, lon) boolean: the continent, 0-60°E, 30°S-40°N."""
    lat2, lon2 = np.meshgrid(lat, lon, indexing="ij")
    return (lon2 >= 0) & (lon2 <= 60) & (lat2 >= -30) & (lat2 <= 40)


def _coords(nc: Dataset, lon: np.ndarray, lat: np.ndarray) -> None:
    nc.createDimension("longitude", lon.size)
    nc.createDimension("latitude", lat.size)
    v = nc.createVariable("longitude", "f4", ("longitude",))
    v.units = "degrees_east"
    v[:] = lon
    v = nc.createVariable("latitude", "f4", ("latitude",))
    v.units = "degrees_north"
    v[:] = lat


def _monthly(nc: Dataset, name: str, dim: str = "time") -> None:
    nc.createDimension(dim, 12)
    v = nc.createVariable(name, "f4", (dim,))
    v.units = "days since 2000-01-01"  # 360-day months, mid-month
    v[:] = 15.0 + 30.0 * np.arange(12)


def _temperature(p_hpa: np.ndarray, t_surf: np.ndarray) -> np.ndarray:
    """Temperature (K) at pressure p over a surface at t_surf: 6.5 K/km lapse rate, 216.65 K floor."""
    z_km = 7.0 * np.log(1000.0 / p_hpa)  # scale height 7 km
    return np.maximum(t_surf - 6.5 * z_km, 216.65)


def write_ce0l_inputs(folder: Path) -> list[Path]:
    """Write the eight files ``ce0l`` reads into ``folder``; returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lon, lat = _grid(5.0)
    land = _land(lon, lat)
    relief_m = np.where(land, 500.0, 0.0)
    t_surf = (300.0 - 50.0 * np.sin(np.deg2rad(lat)) ** 2)[:, None] * np.ones_like(lon)[None, :]
    written = []

    with Dataset(folder / "ECDYN.nc", "w") as nc:
        _coords(nc, lon, lat)
        nc.createDimension("plev", PLEV_HPA.size)
        v = nc.createVariable("plev", "f4", ("plev",))
        v.units = "hPa"
        v[:] = PLEV_HPA
        z = nc.createVariable("Z", "f4", ("latitude", "longitude"))
        z[:] = G * relief_m
        sp = nc.createVariable("SP", "f4", ("latitude", "longitude"))
        sp[:] = 101325.0 * np.exp(-relief_m / 8000.0)
        jet = 30.0 * np.cos(np.deg2rad(lat)) ** 2 * np.sin(np.deg2rad(2 * np.abs(lat))) ** 2
        u = nc.createVariable("U", "f4", ("plev", "latitude", "longitude"))
        # westerlies growing from 0 at 1000 hPa to the full jet at 200 hPa and above
        growth = np.clip((1000.0 - PLEV_HPA) / 800.0, 0.0, 1.0)
        u[:] = growth[:, None, None] * jet[None, :, None] * np.ones_like(lon)[None, None, :]
        nc.createVariable("V", "f4", ("plev", "latitude", "longitude"))[:] = 0.0
        nc.createVariable("TEMP", "f4", ("plev", "latitude", "longitude"))[:] = _temperature(
            PLEV_HPA[:, None, None], t_surf[None, :, :])
        nc.createVariable("R", "f4", ("plev", "latitude", "longitude"))[:] = 50.0
    written.append(folder / "ECDYN.nc")

    with Dataset(folder / "ECPHY.nc", "w") as nc:
        _coords(nc, lon, lat)
        nc.createVariable("ST", "f4", ("latitude", "longitude"))[:] = t_surf
        nc.createVariable("CDSW", "f4", ("latitude", "longitude"))[:] = np.where(land, 150.0, 0.0)
    written.append(folder / "ECPHY.nc")

    # relief on a finer grid than the model's (grid_noro computes subgrid statistics from it)
    lon1, lat1 = _grid(1.0)
    with Dataset(folder / "Relief.nc", "w") as nc:
        _coords(nc, lon1, lat1)
        nc.createVariable("RELIEF", "f4", ("latitude", "longitude"))[:] = np.where(_land(lon1, lat1), 500.0, 0.0)
    written.append(folder / "Relief.nc")

    with Dataset(folder / "landiceref.nc", "w") as nc:
        _coords(nc, lon, lat)
        nc.createVariable("landice", "f4", ("latitude", "longitude"))[:] = 0.0
    written.append(folder / "landiceref.nc")

    month = np.arange(12)
    seasonal = np.cos(2 * np.pi * (month - 6.5) / 12)  # +1 in northern summer
    for name, var, land_value, sea_value in (("Rugos.nc", "RUGOS", 0.1, 0.001), ("Albedo.nc", "ALBEDO", 0.2, 0.07)):
        with Dataset(folder / name, "w") as nc:
            _coords(nc, lon, lat)
            _monthly(nc, "temps", "temps")
            nc.createVariable(var, "f4", ("temps", "latitude", "longitude"))[:] = np.broadcast_to(
                np.where(land, land_value, sea_value), (12, lat.size, lon.size))
        written.append(folder / name)

    sst = t_surf[None, :, :] + 3.0 * seasonal[:, None, None] * np.sin(np.deg2rad(lat))[None, :, None]
    with Dataset(folder / "SST.nc", "w") as nc:
        _coords(nc, lon, lat)
        _monthly(nc, "time")
        v = nc.createVariable("tosbcs", "f4", ("time", "latitude", "longitude"))
        v.units = "K"
        v[:] = np.maximum(sst, 271.35)
    written.append(folder / "SST.nc")

    with Dataset(folder / "sea_ice.nc", "w") as nc:
        _coords(nc, lon, lat)
        _monthly(nc, "time")
        v = nc.createVariable("sicbcs", "f4", ("time", "latitude", "longitude"))
        v.units = "%"
        v[:] = np.where(np.abs(lat) >= 75, 100.0, 0.0)[None, :, None] * np.ones((12, 1, lon.size))
    written.append(folder / "sea_ice.nc")
    return written

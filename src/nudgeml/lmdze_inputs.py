"""The input files of LMDZE's ``ce0l`` built from the workflow's truth (the ``lmdze`` backend).

``ce0l`` makes LMDZE's start files (``restart.nc``, ``restartphy.nc``) and its boundary conditions
(``limit.nc``) from eight plain NetCDF files on any regular longitude-latitude grid whose latitudes run
pole to pole (LMDZE's ``conf_dat2d`` assumes both poles are rows of the grid), coordinates found by their
``units``:

- ``ECDYN.nc``: the atmosphere at the start date: ``Z`` (surface geopotential, m2 s-2), ``SP`` (Pa) and,
  on pressure levels ``plev`` (hPa), ``U``, ``V``, ``TEMP`` and ``R`` (relative humidity in %, which
  ``ce0l`` turns back into specific humidity with LMDZ's ``q_sat``: :func:`relative_humidity_pct` is its
  exact inverse, so the truth's q comes back);
- ``ECPHY.nc``: ``ST`` (surface temperature, K) and ``CDSW`` (soil water, mm);
- ``Relief.nc``: ``RELIEF`` (m) on a grid finer than the model's: LMDZE takes its land mask from
  ``RELIEF > 0`` and its orography statistics from it;
- ``landiceref.nc``: ``landice`` (fraction);
- ``Rugos.nc``, ``Albedo.nc``: ``RUGOS`` (m, > 0), ``ALBEDO`` (fraction), 12 records at ``temps``
  (day of a 360-day year);
- ``SST.nc``: ``tosbcs`` (K), ``sea_ice.nc``: ``sicbcs`` (%), 12 monthly records (``time``).

:func:`write_ce0l_inputs_from_truth` builds them from the stand-in ERA5 files (pressure levels u v t q,
single levels sp, invariant z and lsm at the start date) and the boundary data of jcm the stand-in
runs with (its monthly SST, sea ice, land-surface temperature and soil wetness, its annual albedo),
regridded with ``cdo``. What jcm does not have is said where it is set: no land ice (SPEEDY has no
land-ice surface), and a roughness length per surface type (SPEEDY uses drag coefficients).
The writers (``write_ecdyn`` ...) take arrays, so a synthetic case can use them too.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from nudgeml.atomic import atomic_path
from nudgeml.errors import InputError
from nudgeml.regrid import cdo

GRAVITY_M_S2 = 9.80665
#: LMDZ's soil-water bucket capacity (mm): jcm's soil wetness (a fraction of field capacity) times it
QSOL_MAX_MM = 150.0
#: the files ce0l reads, in the order written
CE0L_FILES = ("ECDYN.nc", "ECPHY.nc", "Relief.nc", "landiceref.nc", "Rugos.nc", "Albedo.nc", "SST.nc", "sea_ice.nc")
#: mid-month days of LMDZE's 360-day year (``Rugos.nc``/``Albedo.nc`` ``temps``)
MID_MONTH_DAYS_360 = 15.0 + 30.0 * np.arange(12)

Array = np.ndarray


# ------------------------------------------------------------------------------------------------
# LMDZ's saturation humidity (ECMWF formula), to write R so that ce0l gets the truth's q back
# ------------------------------------------------------------------------------------------------


def q_sat(t_k: Array, p_pa: Array) -> Array:
    """Saturation specific humidity (kg/kg) as LMDZ's ``q_sat`` computes it: the ECMWF (Tetens) vapour
    pressure over water above the triple point and over ice at or below it, with its 0.5 cap."""
    t_k, p_pa = np.asarray(t_k, np.float64), np.asarray(p_pa, np.float64)
    rtt, eps_ratio = 273.16, 18.0153 / 28.9644
    ice = t_k <= rtt
    a = np.where(ice, 21.875, 17.269)
    b = np.where(ice, 7.66, 35.86)
    qs = np.minimum(0.5, 611.14 * eps_ratio / p_pa * np.exp(a * (t_k - rtt) / (t_k - b)))
    return qs / (1.0 - (1.0 / eps_ratio - 1.0) * qs)


def relative_humidity_pct(q: Array, t_k: Array, p_pa: Array) -> Array:
    """``100 q / q_sat(T, p)``: what ``ce0l`` multiplies back by ``0.01 q_sat`` (not capped at 100:
    a cap would change the truth's humidity)."""
    return 100.0 * np.asarray(q, np.float64) / q_sat(t_k, p_pa)


# ------------------------------------------------------------------------------------------------
# Grids and writers
# ------------------------------------------------------------------------------------------------


def regular_grid(step_deg: float) -> tuple[Array, Array]:
    """Longitudes from -180 (ascending) and latitudes from 90 to -90, poles included, every ``step_deg``."""
    nlon, nlat = 360.0 / step_deg, 180.0 / step_deg
    if abs(nlon - round(nlon)) > 1e-9 or abs(nlat - round(nlat)) > 1e-9:
        raise ValueError(f"step_deg={step_deg} must divide 180")
    return -180.0 + step_deg * np.arange(round(nlon)), np.linspace(90.0, -90.0, round(nlat) + 1)


def cdo_lonlat_grid(lon: Array, lat: Array) -> str:
    return "\n".join(["gridtype = lonlat", f"xsize = {lon.size}", f"ysize = {lat.size}", f"xfirst = {lon[0]:.10f}",
                      f"xinc = {lon[1] - lon[0]:.10f}", f"yfirst = {lat[0]:.10f}", f"yinc = {lat[1] - lat[0]:.10f}", ""])


def _coords(lon: Array, lat: Array) -> dict[str, tuple]:
    lat = np.asarray(lat, np.float64)
    if not (np.isclose(abs(lat[0]), 90.0) and np.isclose(abs(lat[-1]), 90.0) and lat[0] * lat[-1] < 0):
        raise ValueError(f"ce0l needs latitudes pole to pole, got {lat[0]} .. {lat[-1]}")
    return {"longitude": ("longitude", np.asarray(lon, np.float32), {"units": "degrees_east"}),
            "latitude": ("latitude", lat.astype(np.float32), {"units": "degrees_north"})}


def _write(path: Path, ds: xr.Dataset) -> Path:
    encoding = {name: {"_FillValue": None} for name in list(ds.variables)}
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, encoding=encoding)
    return Path(path)


def _f4(a: Array) -> Array:
    return np.asarray(a, np.float32)


def _check_finite(path: Path, name: str, a: Array) -> None:
    if not np.all(np.isfinite(a)):
        raise InputError(f"{path}: {name} has {int(np.size(a) - np.isfinite(a).sum())} missing or non-finite values "
                         "(ce0l would spread them over the model grid)")


def write_ecdyn(path: Path, lon: Array, lat: Array, plev_hpa: Array, *, z: Array, sp: Array, u: Array, v: Array,
                temp: Array, r_pct: Array) -> Path:
    """``ECDYN.nc``: 2-D ``(lat, lon)`` ``z`` (m2 s-2) and ``sp`` (Pa), 3-D ``(plev, lat, lon)`` the rest."""
    fields = {"Z": z, "SP": sp, "U": u, "V": v, "TEMP": temp, "R": r_pct}
    for name, a in fields.items():
        _check_finite(Path(path), name, a)
    two, three = ("latitude", "longitude"), ("plev", "latitude", "longitude")
    ds = xr.Dataset({name: (two if np.ndim(a) == 2 else three, _f4(a)) for name, a in fields.items()},
                    coords={**_coords(lon, lat), "plev": ("plev", np.asarray(plev_hpa, np.float32), {"units": "hPa"})})
    for name, units in (("Z", "m2 s-2"), ("SP", "Pa"), ("U", "m s-1"), ("V", "m s-1"), ("TEMP", "K"), ("R", "%")):
        ds[name].attrs["units"] = units
    return _write(path, ds)


def write_ecphy(path: Path, lon: Array, lat: Array, *, st: Array, cdsw: Array) -> Path:
    """``ECPHY.nc``: surface temperature ``ST`` (K) and soil water ``CDSW`` (mm), ``(lat, lon)``."""
    for name, a in (("ST", st), ("CDSW", cdsw)):
        _check_finite(Path(path), name, a)
    ds = xr.Dataset({"ST": (("latitude", "longitude"), _f4(st), {"units": "K"}),
                     "CDSW": (("latitude", "longitude"), _f4(cdsw), {"units": "mm"})}, coords=_coords(lon, lat))
    return _write(path, ds)


def write_relief(path: Path, lon: Array, lat: Array, relief_m: Array) -> Path:
    """``Relief.nc``: ``RELIEF`` (m, ``(lat, lon)``); LMDZE's land is where it is > 0."""
    _check_finite(Path(path), "RELIEF", relief_m)
    return _write(path, xr.Dataset({"RELIEF": (("latitude", "longitude"), _f4(relief_m), {"units": "m"})}, coords=_coords(lon, lat)))


def write_landice(path: Path, lon: Array, lat: Array, landice: Array) -> Path:
    """``landiceref.nc``: land-ice fraction ``landice`` ``(lat, lon)``."""
    _check_finite(Path(path), "landice", landice)
    return _write(path, xr.Dataset({"landice": (("latitude", "longitude"), _f4(landice), {"units": "1"})}, coords=_coords(lon, lat)))


def write_monthly(path: Path, lon: Array, lat: Array, name: str, values: Array, units: str, *, time_name: str = "time") -> Path:
    """Twelve mid-month records ``(12, lat, lon)`` of ``name``: ``time_name="temps"`` for ``Rugos.nc`` and
    ``Albedo.nc`` (``ce0l`` reads the days from it), ``"time"`` for ``SST.nc`` and ``sea_ice.nc`` (it
    reads only the dimension's length and takes the records as the months)."""
    values = np.asarray(values)
    if values.shape[0] != 12:
        raise ValueError(f"{path}: {name} needs 12 monthly records, has {values.shape[0]}")
    _check_finite(Path(path), name, values)
    coords = {**_coords(lon, lat), time_name: (time_name, MID_MONTH_DAYS_360.astype(np.float32),
                                              {"units": "days since 2000-01-01", "calendar": "360_day"})}
    ds = xr.Dataset({name: ((time_name, "latitude", "longitude"), _f4(values), {"units": units})}, coords=coords)
    return _write(path, ds)


# ------------------------------------------------------------------------------------------------
# From the truth
# ------------------------------------------------------------------------------------------------


def _boundary_dir() -> Path:
    from nudgeml.gcm.standin import _boundary_dir as jcm_boundary_dir

    return jcm_boundary_dir()


def _remap_arrays(fields: Mapping[str, Array], src_lon: Array, src_lat: Array, grid_txt: Path, tmp: Path, tag: str,
                  method: str = "remapbil") -> dict[str, Array]:
    """Regrid ``(..., lat, lon)`` arrays (one leading ``time`` axis at most) with cdo; returns ``(..., lat, lon)``
    arrays on the grid of ``grid_txt`` (latitudes in its order)."""
    data = {}
    for name, a in fields.items():
        dims = ("time", "lat", "lon") if np.ndim(a) == 3 else ("lat", "lon")
        data[name] = (dims, np.asarray(a, np.float64))
    coords = {"lat": ("lat", np.asarray(src_lat, np.float64), {"units": "degrees_north", "standard_name": "latitude"}),
              "lon": ("lon", np.asarray(src_lon, np.float64), {"units": "degrees_east", "standard_name": "longitude"})}
    if any(np.ndim(a) == 3 for a in fields.values()):
        n = next(np.shape(a)[0] for a in fields.values() if np.ndim(a) == 3)
        coords["time"] = ("time", np.arange(n, dtype=np.float64), {"units": "days since 2000-01-01", "calendar": "360_day"})
    src, dst = tmp / f"{tag}_src.nc", tmp / f"{tag}_dst.nc"
    xr.Dataset(data, coords=coords).to_netcdf(src)
    cdo("-f", "nc4", f"{method},{grid_txt}", str(src), str(dst))
    with xr.open_dataset(dst) as ds:
        return {name: ds[name].values.astype(np.float64) for name in fields}


def _select_era5(path: Path, names: Sequence[str], when: np.datetime64, grid_txt: Path, tmp: Path, tag: str) -> xr.Dataset:
    """The record of ``path`` at ``when`` (netCDF or GRIB), variables ``names``, regridded bilinearly."""
    out = tmp / f"{tag}.nc"
    stamp = str(np.datetime64(when, "s"))
    try:
        cdo("-f", "nc4", f"remapbil,{grid_txt}", f"-seldate,{stamp}", f"-selname,{','.join(names)}", str(path), str(out))
    except Exception as exc:  # cdo's own message names no file the user gave
        raise InputError(f"{path}: cannot select {', '.join(names)} at {stamp} ({exc})") from exc
    ds = xr.open_dataset(out).load()
    tdim = next((d for d in ("valid_time", "time") if d in ds.dims), None)
    if tdim is None or ds.sizes[tdim] != 1:
        raise InputError(f"{path}: has no record at {stamp} (the start date must be one of its analyses)")
    for name in names:
        if name not in ds:
            raise InputError(f"{path}: no variable {name!r}")
    return ds.isel({tdim: 0})


def _jcm_boundary(boundary_dir: Path) -> tuple[Array, Array, dict[str, Array]]:
    """jcm's boundary fields as ``(time, lat, lon)`` (monthly, records at month starts) or ``(lat, lon)``."""
    fields = {}
    with xr.open_dataset(boundary_dir / "forcing.nc") as ds:
        lat, lon = ds["lat"].values, ds["lon"].values
        for name in ("sst", "stl", "icec", "soilw_am", "alb"):
            if name not in ds:
                raise InputError(f"{boundary_dir / 'forcing.nc'}: jcm boundary file has no variable {name!r}")
            da = ds[name]
            fields[name] = da.transpose(*(["time"] if "time" in da.dims else []), "lat", "lon").values.astype(np.float64)
    return lon, lat, fields


def _at_mid_months(month_starts: Array) -> Array:
    """Twelve month-start records -> the values at mid-month, linear in time as jcm interpolates them."""
    return 0.5 * (month_starts + np.roll(month_starts, -1, axis=0))


def _at_date(month_starts: Array, when: np.datetime64) -> Array:
    """Month-start records linearly interpolated to ``when`` (the year wraps)."""
    day = np.datetime64(when, "D")
    month0 = day.astype("datetime64[M]")
    frac = (day - month0.astype("datetime64[D]")) / ((month0 + 1).astype("datetime64[D]") - month0.astype("datetime64[D]"))
    m = int(str(month0)[5:7]) - 1
    return (1.0 - frac) * month_starts[m] + frac * month_starts[(m + 1) % 12]


def write_ce0l_inputs_from_truth(
    folder: str | os.PathLike[str],
    *,
    pressure_levels: str | os.PathLike[str],
    single_levels: str | os.PathLike[str],
    invariant: str | os.PathLike[str],
    start: np.datetime64 | str,
    step_deg: float = 2.5,
    relief_step_deg: float = 1.0,
    boundary_dir: str | os.PathLike[str] | None = None,
    roughness_land_m: float = 0.1,
    roughness_sea_m: float = 0.001,
) -> list[Path]:
    """Write the eight files ``ce0l`` reads into ``folder``, from the truth at ``start``.

    ``pressure_levels`` and ``single_levels`` are the ERA5 files (netCDF or GRIB) holding the analysis
    at ``start``; ``invariant`` the ERA5 invariant file (``z``, ``lsm``). The atmosphere, orography and
    land mask are the truth's, regridded bilinearly to a ``step_deg`` grid (``relief_step_deg`` for
    ``Relief.nc``). Relief: the truth's orography on land (``lsm >= 0.5``), at least 1 m there so that
    LMDZE's ``RELIEF > 0`` mask is the truth's, 0 at sea. Surface data: jcm's boundary files
    (``boundary_dir``, default the one the stand-in reads): SST, sea ice (% for ``sicbcs``), albedo
    (annual, repeated), at mid-months; ``ST`` at ``start`` is jcm's land-surface temperature on land
    and SST at sea, weighted by the truth's land fraction; ``CDSW`` jcm's soil wetness times LMDZ's
    150 mm bucket. jcm has no land ice (``landice`` = 0) and no roughness length (``roughness_land_m``,
    ``roughness_sea_m``; LMDZE sets 0.001 m at sea itself).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    when = np.datetime64(start, "s")
    bdir = Path(boundary_dir) if boundary_dir is not None else _boundary_dir()
    lon, lat = regular_grid(step_deg)
    rlon, rlat = regular_grid(relief_step_deg)
    written: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="lmdze-inputs.") as tmpdir:
        tmp = Path(tmpdir)
        grid_txt, relief_txt = tmp / "grid.txt", tmp / "relief.txt"
        grid_txt.write_text(cdo_lonlat_grid(lon, lat))
        relief_txt.write_text(cdo_lonlat_grid(rlon, rlat))

        pl = _select_era5(Path(pressure_levels), ["u", "v", "t", "q"], when, grid_txt, tmp, "pl")
        sl = _select_era5(Path(single_levels), ["sp"], when, grid_txt, tmp, "sl")
        inv_path = Path(invariant)
        try:
            cdo("-f", "nc4", f"remapbil,{grid_txt}", "-seltimestep,1", "-selname,z,lsm", str(inv_path), str(tmp / "inv.nc"))
            cdo("-f", "nc4", f"remapbil,{relief_txt}", "-seltimestep,1", "-selname,z,lsm", str(inv_path), str(tmp / "inv_fine.nc"))
        except Exception as exc:
            raise InputError(f"{inv_path}: cannot read the invariant z and lsm ({exc})") from exc
        with xr.open_dataset(tmp / "inv.nc") as ds:
            z_sfc, lsm = ds["z"].values.reshape(lat.size, lon.size), ds["lsm"].values.reshape(lat.size, lon.size)
        with xr.open_dataset(tmp / "inv_fine.nc") as ds:
            z_fine, lsm_fine = ds["z"].values.reshape(rlat.size, rlon.size), ds["lsm"].values.reshape(rlat.size, rlon.size)

        zdim = next(d for d in pl["u"].dims if d not in ("lat", "lon"))
        plev_hpa = np.asarray(pl[zdim].values, np.float64)
        if str(pl[zdim].attrs.get("units", "hPa")).lower() in ("pa", "pascal"):
            plev_hpa = plev_hpa / 100.0
        p_pa = (plev_hpa * 100.0)[:, None, None]
        r_pct = relative_humidity_pct(pl["q"].values, pl["t"].values, p_pa)
        written.append(write_ecdyn(folder / "ECDYN.nc", lon, lat, plev_hpa, z=z_sfc, sp=sl["sp"].values,
                                   u=pl["u"].values, v=pl["v"].values, temp=pl["t"].values, r_pct=r_pct))

        blon, blat, bnd = _jcm_boundary(bdir)
        on_grid = _remap_arrays({"sst": bnd["sst"], "stl": bnd["stl"], "icec": bnd["icec"], "soilw": bnd["soilw_am"],
                                 "alb": bnd["alb"]}, blon, blat, grid_txt, tmp, "jcm")
        land = np.clip(lsm, 0.0, 1.0)
        st = land * _at_date(on_grid["stl"], when) + (1.0 - land) * _at_date(on_grid["sst"], when)
        cdsw = QSOL_MAX_MM * np.clip(_at_date(on_grid["soilw"], when), 0.0, 1.0)
        written.append(write_ecphy(folder / "ECPHY.nc", lon, lat, st=st, cdsw=cdsw))

        relief = np.where(lsm_fine >= 0.5, np.maximum(z_fine / GRAVITY_M_S2, 1.0), 0.0)
        written.append(write_relief(folder / "Relief.nc", rlon, rlat, relief))
        written.append(write_landice(folder / "landiceref.nc", lon, lat, np.zeros_like(lsm)))

        rough = np.where(lsm >= 0.5, roughness_land_m, roughness_sea_m)
        written.append(write_monthly(folder / "Rugos.nc", lon, lat, "RUGOS", np.broadcast_to(rough, (12, *rough.shape)), "m", time_name="temps"))
        alb = np.clip(on_grid["alb"], 0.0, 1.0)
        written.append(write_monthly(folder / "Albedo.nc", lon, lat, "ALBEDO", np.broadcast_to(alb, (12, *alb.shape)), "1", time_name="temps"))
        written.append(write_monthly(folder / "SST.nc", lon, lat, "tosbcs", _at_mid_months(on_grid["sst"]), "K"))
        written.append(write_monthly(folder / "sea_ice.nc", lon, lat, "sicbcs", 100.0 * np.clip(_at_mid_months(on_grid["icec"]), 0.0, 1.0), "%"))
    return written


def lmdze_day_ref(when: np.datetime64 | str) -> tuple[int, int]:
    """``(day_ref, annee_ref)`` of ``dynetat0_nml`` for a start date. LMDZE's calendar has 360 days of
    twelve 30-day months (its histories date day 31 as February 1st), so the date keeps its month and
    the 31st becomes the 30th: the season (insolation, ``limit.nc``'s day) stays the truth's."""
    day = np.datetime64(when, "D")
    year, month, dom = int(str(day)[:4]), int(str(day)[5:7]), int(str(day)[8:10])
    return 30 * (month - 1) + min(dom, 30), year

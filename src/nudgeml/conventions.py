"""File conventions the project speaks: ERA5 as the CDS serves it, LMDZ history and nudging output.

* **ERA5 (CDS NetCDF, 2024+ service)**: dims ``valid_time`` (seconds since 1970), ``pressure_level``
  (hPa, decreasing), ``latitude`` (descending), ``longitude`` (0 -> 360); variables ``u v t q z`` on
  pressure levels, ``sp`` on single levels, ``tp`` (m, hourly accumulation ending at ``valid_time``),
  and the invariant ``z`` (surface geopotential) and ``lsm``. ERA5 as GRIB (``era5.cds.data_format:
  grib``) carries the same short names and is checked through cdo (:mod:`nudgeml.grib`).
* **LMDZ ``histhf``**: dims ``time_counter``, ``presnivs`` (Pa, surface first), ``lat`` (descending),
  ``lon`` (-180 -> 180); ``vitu vitv temp ovap psol precip``.
* **LMDZ ``guide_ins``**: dims ``TIME LEVEL LATU LONU LATV LONV``; nudging increments ``ucov``/``vcov``
  in covariant wind per day (divide by the metric factors ``cu``/``cv`` for m s-1 day-1), model wind
  ``u``/``v`` and analysis wind ``ua``/``va`` in m s-1 — the names and units of LMDZ's ``guide_out``.
  With temperature and humidity nudged (LMDZ's ``guide_T``, ``guide_Q``), also LMDZ's ``teta`` (the
  potential-temperature increment, K per day) and ``q`` (the specific-humidity increment, kg kg-1 per
  day), and, as stand-in extras, the analysis ``ta`` (K) and ``qa`` (kg kg-1).

Writers take canonical arrays (``(level, lat, lon)``, level 0 at the surface, latitudes and longitudes
ascending, longitudes in [0, 360)) and reorient them; readers return canonical datasets, so nothing
downstream depends on a file's orientation.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from nudgeml.errors import InputError
from nudgeml.grib import check_era5_grib, is_grib
from nudgeml.ncstream import StreamingNetCDF, VarSpec

EARTH_RADIUS_M = 6.371e6
SECONDS_PER_DAY = 86400.0
#: LMDZ's reference pressure and R/cp: its ``teta`` is T (preff / p)**kappa
LMDZ_PREFF_PA = 101325.0
LMDZ_KAPPA = 0.2857143
ERA5_EPOCH = np.datetime64("1970-01-01T00:00:00", "s")


# --------------------------------------------------------------------------------------------------
# ERA5
# --------------------------------------------------------------------------------------------------

#: CDS attributes of the variables we use (as served in the CDS NetCDF files).
ERA5_VARS: dict[str, dict[str, Any]] = {
    "u": {"long_name": "U component of wind", "units": "m s**-1", "standard_name": "eastward_wind", "GRIB_paramId": 131},
    "v": {"long_name": "V component of wind", "units": "m s**-1", "standard_name": "northward_wind", "GRIB_paramId": 132},
    "t": {"long_name": "Temperature", "units": "K", "standard_name": "air_temperature", "GRIB_paramId": 130},
    "q": {"long_name": "Specific humidity", "units": "kg kg**-1", "standard_name": "specific_humidity", "GRIB_paramId": 133},
    "z": {"long_name": "Geopotential", "units": "m**2 s**-2", "standard_name": "geopotential", "GRIB_paramId": 129},
    "sp": {"long_name": "Surface pressure", "units": "Pa", "standard_name": "surface_air_pressure", "GRIB_paramId": 134},
    "tp": {"long_name": "Total precipitation", "units": "m", "GRIB_paramId": 228},
    "lsm": {"long_name": "Land-sea mask", "units": "(0 - 1)", "standard_name": "land_binary_mask", "GRIB_paramId": 172},
}

#: Which variables each ERA5 file kind holds, and whether it has pressure levels.
ERA5_KINDS: dict[str, tuple[tuple[str, ...], bool]] = {
    "pressure_levels": (("u", "v", "t", "q", "z"), True),
    "single_levels": (("sp",), False),
    "precipitation": (("tp",), False),
    "invariant": (("z", "lsm"), False),
}

ERA5_GLOBAL_ATTRS = {
    "GRIB_centre": "ecmf",
    "GRIB_centreDescription": "European Centre for Medium-Range Weather Forecasts",
    "GRIB_subCentre": 0,
    "Conventions": "CF-1.7",
    "institution": "European Centre for Medium-Range Weather Forecasts",
}


def era5_coords(lat_desc: np.ndarray, lon: np.ndarray, plev_hpa: np.ndarray | None) -> dict[str, Any]:
    coords: dict[str, Any] = {
        "latitude": (("latitude",), np.asarray(lat_desc, np.float64), {"units": "degrees_north", "standard_name": "latitude", "long_name": "latitude", "stored_direction": "decreasing"}),
        "longitude": (("longitude",), np.asarray(lon, np.float64), {"units": "degrees_east", "standard_name": "longitude", "long_name": "longitude"}),
        "number": ((), np.int64(0), {"long_name": "ensemble member numerical id", "units": "1", "standard_name": "realization"}),
    }
    if plev_hpa is not None:
        coords["pressure_level"] = (("pressure_level",), np.asarray(plev_hpa, np.float64), {"units": "hPa", "standard_name": "air_pressure", "long_name": "pressure", "positive": "down", "stored_direction": "decreasing"})
    return coords


def open_era5_writer(
    path: str | os.PathLike[str], kind: str, *, lat_deg: np.ndarray, lon_deg: np.ndarray, plev_hpa: np.ndarray | None = None, history: str = ""
) -> StreamingNetCDF:
    """A streaming writer for one ERA5-like file of ``kind`` (see :data:`ERA5_KINDS`).

    ``lat_deg`` is given ascending (canonical) and written descending, as the CDS serves it; records
    passed to ``append`` are canonical ``(level, lat, lon)`` / ``(lat, lon)`` and get flipped by
    :func:`era5_record`.
    """
    names, has_levels = ERA5_KINDS[kind]
    if has_levels and plev_hpa is None:
        raise ValueError("pressure_levels needs plev_hpa")
    lat_desc = np.asarray(lat_deg)[::-1]
    coords = era5_coords(lat_desc, lon_deg, plev_hpa if has_levels else None)
    dims = {"latitude": lat_desc.size, "longitude": np.asarray(lon_deg).size}
    spatial = ("latitude", "longitude")
    if has_levels:
        dims["pressure_level"] = len(plev_hpa)  # type: ignore[arg-type]
        spatial = ("pressure_level",) + spatial
    records = {n: VarSpec(("valid_time",) + spatial, "f4", ERA5_VARS[n]) for n in names}
    if kind != "invariant":
        records["expver"] = VarSpec(("valid_time",), "str", {"long_name": "experiment version"})
    attrs = dict(ERA5_GLOBAL_ATTRS)
    attrs["history"] = history
    return StreamingNetCDF(
        path,
        time_dim="valid_time",
        time_var=VarSpec(("valid_time",), "i8", {"long_name": "time", "standard_name": "time", "units": "seconds since 1970-01-01", "calendar": "proleptic_gregorian"}),
        dims=dims,
        coords=coords,
        records=records,
        global_attrs=attrs,
    )


def era5_record(fields: Mapping[str, np.ndarray], *, with_expver: bool = True) -> dict[str, np.ndarray]:
    """Canonical fields -> ERA5 orientation (latitude flipped to descending)."""
    out = {name: np.asarray(a)[..., ::-1, :] for name, a in fields.items()}
    if with_expver:
        out["expver"] = "0001"  # type: ignore[assignment]
    return out


def check_era5_file(path: str | os.PathLike[str], kind: str) -> None:
    """Raise :class:`InputError` naming the file and variable if ``path`` is not an ERA5 ``kind`` file
    (CDS netCDF, or GRIB: :func:`nudgeml.grib.check_era5_grib`)."""
    names, has_levels = ERA5_KINDS[kind]
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: ERA5 {kind} file not found")
    if is_grib(path):  # era5.cds.data_format: grib -- read through cdo (nudgeml.grib)
        check_era5_grib(path, kind, names, has_levels)
        return
    try:
        ds = xr.open_dataset(path, decode_times=False)
    except Exception as exc:  # a truncated/corrupt file: say which
        raise InputError(f"{path}: cannot be read as NetCDF ({exc})") from exc
    with ds:
        dims = ["latitude", "longitude"] + (["pressure_level"] if has_levels else [])
        if kind != "invariant":
            dims.append("valid_time")
        for d in dims:
            if d not in ds.dims:
                raise InputError(f"{path}: ERA5 {kind} file has no dimension {d!r} (has {sorted(ds.dims)})")
        for name in names:
            if name not in ds.variables:
                raise InputError(f"{path}: ERA5 {kind} file has no variable {name!r} (has {sorted(ds.data_vars)})")
        if has_levels and ds["pressure_level"].attrs.get("units", "hPa") not in ("hPa", "millibars", "mbar"):
            raise InputError(f"{path}: 'pressure_level' must be in hPa, has units {ds['pressure_level'].attrs.get('units')!r}")


# --------------------------------------------------------------------------------------------------
# Canonical model-grid helpers
# --------------------------------------------------------------------------------------------------


def canonical(ds: xr.Dataset, *, lat: str = "lat", lon: str = "lon", lev: str | None = None, surface_first_coord_decreasing: bool = True) -> xr.Dataset:
    """Reorient ``ds``: latitudes ascending, longitudes ascending in [0, 360), levels surface first.

    ``lev`` names a pressure-like vertical coordinate (decreasing upwards), sorted decreasing so index 0
    is the surface.
    """
    if lon in ds.coords:
        ds = ds.assign_coords({lon: np.mod(ds[lon].values.astype(np.float64), 360.0)})
        ds = ds.sortby(lon)
    if lat in ds.coords:
        ds = ds.sortby(lat)
    if lev is not None and lev in ds.coords:
        ds = ds.sortby(lev, ascending=not surface_first_coord_decreasing)
    return ds


def open_netcdf(path: Path, what: str, chunks: Mapping[str, int] | None = None) -> xr.Dataset:
    """Open a NetCDF file lazily; a missing or unreadable file is an :class:`InputError` naming it."""
    if not path.exists():
        raise InputError(f"{path}: {what} not found")
    try:
        return xr.open_dataset(path, chunks=dict(chunks) if chunks is not None else None)
    except Exception as exc:  # a truncated/corrupt file: say which
        raise InputError(f"{path}: cannot be read as NetCDF ({exc})") from exc


def require_vars(ds: xr.Dataset, names: Iterable[str], path: str | os.PathLike[str], what: str) -> None:
    missing = [n for n in names if n not in ds.variables]
    if missing:
        raise InputError(f"{path}: {what} has no variable(s) {missing} (has {sorted(ds.data_vars)})")


# --------------------------------------------------------------------------------------------------
# LMDZ history (histhf) and nudging output (guide_ins)
# --------------------------------------------------------------------------------------------------

#: LMDZ histhf names -> (canonical name, units, long_name).
HISTHF_VARS: dict[str, tuple[str, str, str]] = {
    "vitu": ("u", "m/s", "Zonal wind"),
    "vitv": ("v", "m/s", "Meridional wind"),
    "temp": ("t", "K", "Air temperature"),
    "ovap": ("q", "kg/kg", "Specific humidity"),
    "psol": ("ps", "Pa", "Surface pressure"),
    "precip": ("precip", "kg/(s*m2)", "Precip Totale liq+sol"),
}

#: Optional histhf record of the stand-in's corrected free runs: the precipitation the applied humidity
#: correction implies (minus its column integral, window mean); the report adds it to ``precip`` for the
#: water-conserving total (``report.precipitation: total``). LMDZ's own histhf has no such record.
PRECIP_CORRECTION_VAR = ("precip_qcorr", "precip_correction", "kg/(s*m2)", "Precipitation implied by the humidity correction (minus its column integral)")


@dataclass(frozen=True)
class LmdzGrid:
    """Geometry written into LMDZ-convention files (canonical order in, LMDZ order out)."""

    lat_deg: np.ndarray  # ascending
    lon_deg: np.ndarray  # ascending, [0, 360)
    presnivs_pa: np.ndarray  # surface first

    def lon_order(self) -> np.ndarray:
        """Permutation taking canonical longitudes to LMDZ's -180 -> 180."""
        wrapped = np.where(self.lon_deg >= 180.0, self.lon_deg - 360.0, self.lon_deg)
        return np.argsort(wrapped, kind="stable")

    @property
    def lmdz_lon(self) -> np.ndarray:
        wrapped = np.where(self.lon_deg >= 180.0, self.lon_deg - 360.0, self.lon_deg)
        return wrapped[self.lon_order()]

    @property
    def lmdz_lat(self) -> np.ndarray:
        return np.asarray(self.lat_deg)[::-1]

    def to_lmdz(self, a: np.ndarray) -> np.ndarray:
        """Canonical ``(..., lat, lon)`` -> LMDZ orientation (lat descending, lon -180 -> 180)."""
        return np.asarray(a)[..., ::-1, :][..., self.lon_order()]


def _time_attrs(epoch: np.datetime64) -> dict[str, str]:
    stamp = str(np.datetime64(epoch, "s")).replace("T", " ")
    return {"standard_name": "time", "long_name": "Time axis", "units": f"seconds since {stamp}", "calendar": "gregorian", "axis": "T"}


def open_histhf_writer(
    path: str | os.PathLike[str], grid: LmdzGrid, *, epoch: np.datetime64, window_hours: float, attrs: Mapping[str, Any] | None = None, precip_correction: bool = False
) -> StreamingNetCDF:
    """Streaming writer for a ``histhf``-style file.

    ``time_counter`` labels the window start: ``vitu vitv temp ovap psol`` are instantaneous there;
    ``precip`` is the mean over the window that starts there (``online_operation = ave``), and so is
    ``precip_qcorr`` (:data:`PRECIP_CORRECTION_VAR`) when ``precip_correction``.
    """
    nlev, nlat, nlon = grid.presnivs_pa.size, grid.lat_deg.size, grid.lon_deg.size
    coords = {
        "presnivs": (("presnivs",), np.asarray(grid.presnivs_pa, np.float32), {"units": "Pa", "long_name": "Vertical levels", "positive": "down", "axis": "Z"}),
        "lat": (("lat",), grid.lmdz_lat.astype(np.float32), {"units": "degrees_north", "long_name": "Latitude", "axis": "Y"}),
        "lon": (("lon",), grid.lmdz_lon.astype(np.float32), {"units": "degrees_east", "long_name": "Longitude", "axis": "X"}),
    }
    inst = {"online_operation": "inst(X)", "interval_write": f"{window_hours:g} h"}
    ave = {"online_operation": "ave(X)", "interval_operation": "1 ts", "interval_write": f"{window_hours:g} h", "cell_methods": "time_counter: mean (interval: window starting at time_counter)"}
    records = {}
    for name, (_, units, long_name) in HISTHF_VARS.items():
        dims = ("time_counter", "lat", "lon") if name in ("psol", "precip") else ("time_counter", "presnivs", "lat", "lon")
        records[name] = VarSpec(dims, "f4", {"units": units, "long_name": long_name, **(ave if name == "precip" else inst)})
    if precip_correction:
        name, _, units, long_name = PRECIP_CORRECTION_VAR
        records[name] = VarSpec(("time_counter", "lat", "lon"), "f4", {"units": units, "long_name": long_name, **ave})
    gattrs = {"Conventions": "CF-1.1", "file_name": "histhf", "production": "nudgeml stand-in GCM, LMDZ histhf conventions"}
    gattrs.update(attrs or {})
    return StreamingNetCDF(
        path,
        time_dim="time_counter",
        time_var=VarSpec(("time_counter",), "f8", _time_attrs(epoch)),
        dims={"presnivs": nlev, "lat": nlat, "lon": nlon},
        coords=coords,
        records=records,
        global_attrs=gattrs,
    )


def histhf_record(grid: LmdzGrid, *, u: np.ndarray, v: np.ndarray, t: np.ndarray, q: np.ndarray, ps: np.ndarray, precip: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "vitu": grid.to_lmdz(u), "vitv": grid.to_lmdz(v), "temp": grid.to_lmdz(t),
        "ovap": grid.to_lmdz(q), "psol": grid.to_lmdz(ps), "precip": grid.to_lmdz(precip),
    }


def metric_factors(grid: LmdzGrid) -> tuple[np.ndarray, np.ndarray]:
    """LMDZ's covariant metric factors on a collocated grid, canonical ``(lat, lon)``.

    ``cu = a cos(lat) dlambda/di`` and ``cv = a dphi/dj``: a covariant wind component is the physical
    one times the factor. On LMDZ's regular grid ``dlambda/di = 2 pi / iim`` and ``dphi/dj = pi / jjm``.
    """
    nlat, nlon = grid.lat_deg.size, grid.lon_deg.size
    cu = EARTH_RADIUS_M * np.cos(np.deg2rad(grid.lat_deg))[:, None] * (2 * np.pi / nlon) * np.ones((1, nlon))
    cv = EARTH_RADIUS_M * (np.pi / nlat) * np.ones((nlat, nlon))
    return cu, cv


def open_guide_writer(
    path: str | os.PathLike[str],
    grid: LmdzGrid,
    *,
    epoch: np.datetime64,
    alpha: float,
    window_hours: float,
    attrs: Mapping[str, Any] | None = None,
    thermo: Iterable[str] = (),
) -> StreamingNetCDF:
    """Streaming writer for a ``guide_ins``-style file (LMDZ ``guide_out`` names and units).

    The stand-in's winds are collocated, so ``LATV``/``LONV`` equal ``LATU``/``LONU`` here; LMDZ's own
    file staggers them (``LATV`` has one point fewer), which :func:`read_guide` handles. ``TIME`` labels
    the window start; ``ucov``/``vcov`` are the window-mean increments (covariant wind per day).
    ``thermo`` names the nudged scalars among ``t``, ``q``: ``t`` adds LMDZ's ``teta`` (the window-mean
    temperature increment as potential temperature, K per day, converted with ``SP`` at the window
    start so :func:`read_guide` recovers the temperature increment exactly) and the analysis ``ta``;
    ``q`` adds LMDZ's ``q`` (kg kg-1 per day) and the analysis ``qa``.
    """
    thermo = tuple(thermo)
    unknown = sorted(set(thermo) - {"t", "q"})
    if unknown:
        raise ValueError(f"thermo variables must be among 't', 'q', got {unknown}")
    nlev, nlat, nlon = grid.presnivs_pa.size, grid.lat_deg.size, grid.lon_deg.size
    cu, cv = metric_factors(grid)
    coords = {
        "LONU": (("LONU",), grid.lmdz_lon.astype(np.float32), {"units": "degrees_east"}),
        "LATU": (("LATU",), grid.lmdz_lat.astype(np.float32), {"units": "degrees_north"}),
        "LONV": (("LONV",), grid.lmdz_lon.astype(np.float32), {"units": "degrees_east"}),
        "LATV": (("LATV",), grid.lmdz_lat.astype(np.float32), {"units": "degrees_north"}),
        "LEVEL": (("LEVEL",), np.asarray(grid.presnivs_pa, np.float32), {"units": "Pa", "long_name": "presnivs"}),
        "cu": (("LATU", "LONU"), grid.to_lmdz(cu).astype(np.float32), {"long_name": "covariant metric factor of u (m)"}),
        "cv": (("LATV", "LONV"), grid.to_lmdz(cv).astype(np.float32), {"long_name": "covariant metric factor of v (m)"}),
        "au": (("LATU", "LONU"), np.full((nlat, nlon), alpha, np.float32), {"long_name": "nudging coefficient of u per call (dt/tau)"}),
        "av": (("LATV", "LONV"), np.full((nlat, nlon), alpha, np.float32), {"long_name": "nudging coefficient of v per call (dt/tau)"}),
    }
    u4 = ("TIME", "LEVEL", "LATU", "LONU")
    v4 = ("TIME", "LEVEL", "LATV", "LONV")
    records = {
        "u": VarSpec(u4, "f4", {"units": "m/s", "long_name": "model zonal wind at the window start"}),
        "ua": VarSpec(u4, "f4", {"units": "m/s", "long_name": "analysis zonal wind (nudging target) at the window start"}),
        "ucov": VarSpec(u4, "f4", {"units": "covariant m/s per day", "long_name": "zonal nudging increment, window mean; divide by cu for m/s/day"}),
        "v": VarSpec(v4, "f4", {"units": "m/s", "long_name": "model meridional wind at the window start"}),
        "va": VarSpec(v4, "f4", {"units": "m/s", "long_name": "analysis meridional wind (nudging target) at the window start"}),
        "vcov": VarSpec(v4, "f4", {"units": "covariant m/s per day", "long_name": "meridional nudging increment, window mean; divide by cv for m/s/day"}),
        "SP": VarSpec(("TIME", "LEVEL", "LATU", "LONU"), "f4", {"units": "Pa", "long_name": "model pressure at the window start"}),
    }
    if "t" in thermo:
        records["teta"] = VarSpec(u4, "f4", {"units": "K/day", "long_name": "potential-temperature nudging increment, window mean: dT (preff/SP)**kappa", "preff_Pa": LMDZ_PREFF_PA, "kappa": LMDZ_KAPPA})
        records["ta"] = VarSpec(u4, "f4", {"units": "K", "long_name": "analysis temperature (nudging target) at the window start"})
    if "q" in thermo:
        records["q"] = VarSpec(u4, "f4", {"units": "kg/kg/day", "long_name": "specific-humidity nudging increment, window mean"})
        records["qa"] = VarSpec(u4, "f4", {"units": "kg/kg", "long_name": "analysis specific humidity (nudging target) at the window start"})
    gattrs = {"file_name": "guide_ins", "production": "nudgeml stand-in GCM, LMDZ guide_out conventions", "window_hours": window_hours}
    gattrs.update(attrs or {})
    return StreamingNetCDF(
        path,
        time_dim="TIME",
        time_var=VarSpec(("TIME",), "f8", _time_attrs(epoch)),
        dims={"LEVEL": nlev, "LATU": nlat, "LONU": nlon, "LATV": nlat, "LONV": nlon},
        coords=coords,
        records=records,
        global_attrs=gattrs,
    )


def guide_record(
    grid: LmdzGrid,
    *,
    u: np.ndarray,
    v: np.ndarray,
    ua: np.ndarray,
    va: np.ndarray,
    du_ms2: np.ndarray,
    dv_ms2: np.ndarray,
    pressure: np.ndarray,
    dt_kps: np.ndarray | None = None,
    ta: np.ndarray | None = None,
    dq_per_s: np.ndarray | None = None,
    qa: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Canonical fields (tendencies per second) -> one ``guide_ins`` record in LMDZ's units.

    ``dt_kps``/``ta`` and ``dq_per_s``/``qa`` go with a writer opened with ``thermo`` ``t`` / ``q``.
    """
    cu, cv = metric_factors(grid)
    rec = {
        "u": grid.to_lmdz(u), "ua": grid.to_lmdz(ua), "ucov": grid.to_lmdz(du_ms2 * SECONDS_PER_DAY * cu),
        "v": grid.to_lmdz(v), "va": grid.to_lmdz(va), "vcov": grid.to_lmdz(dv_ms2 * SECONDS_PER_DAY * cv),
        "SP": grid.to_lmdz(pressure),
    }
    if (dt_kps is None) != (ta is None) or (dq_per_s is None) != (qa is None):
        raise ValueError("a temperature or humidity increment goes with its analysis (dt_kps with ta, dq_per_s with qa)")
    if dt_kps is not None:
        exner_inv = (LMDZ_PREFF_PA / np.asarray(pressure, np.float64)) ** LMDZ_KAPPA
        rec["teta"] = grid.to_lmdz(dt_kps * SECONDS_PER_DAY * exner_inv)
        rec["ta"] = grid.to_lmdz(ta)
    if dq_per_s is not None:
        rec["q"] = grid.to_lmdz(dq_per_s * SECONDS_PER_DAY)
        rec["qa"] = grid.to_lmdz(qa)
    return rec


def read_histhf(path: str | os.PathLike[str], names: Mapping[str, str] | None = None, *, chunks: Mapping[str, int] | None = None) -> xr.Dataset:
    """Open a histhf-style file lazily, canonical orientation, canonical names.

    ``names`` maps canonical names (``u v t q ps precip``) to the file's names; LMDZ's by default.
    Returns dims ``(time, lev, lat, lon)`` with ``lev`` the presnivs value in Pa, surface first.
    """
    names = dict(names or {canon: lmdz for lmdz, (canon, _, _) in HISTHF_VARS.items()})
    path = Path(path)
    ds = open_netcdf(path, "history file", chunks)
    require_vars(ds, names.values(), path, "history file")
    for dim in ("time_counter", "presnivs", "lat", "lon"):
        if dim not in ds.dims:
            raise InputError(f"{path}: history file has no dimension {dim!r} (has {sorted(ds.dims)})")
    if PRECIP_CORRECTION_VAR[0] in ds.data_vars and PRECIP_CORRECTION_VAR[0] not in names.values():  # optional, kept when written
        names[PRECIP_CORRECTION_VAR[1]] = PRECIP_CORRECTION_VAR[0]
    out = ds[list(names.values())].rename({v: k for k, v in names.items()})
    out = out.rename({"time_counter": "time", "presnivs": "lev"})
    return canonical(out, lev="lev")


def read_guide(path: str | os.PathLike[str], grid_lat: np.ndarray | None = None, grid_lon: np.ndarray | None = None, *, chunks: Mapping[str, int] | None = None) -> xr.Dataset:
    """Open a guide_ins-style file; return the nudging tendency in m s-2 on the scalar grid.

    Returns ``du``, ``dv`` (m s-2), ``ua``, ``va``, ``u``, ``v`` with dims ``(time, lev, lat, lon)``,
    canonical orientation; with temperature / humidity nudged also ``dt`` (K s-1, from ``teta`` and
    ``SP``), ``ta``, ``dq`` (kg kg-1 s-1, from ``q``) and ``qa`` when the file has them. LMDZ's
    staggered layout (``LONU`` shifted by half a cell, ``LATV`` between ``LATU`` points, the periodic
    longitude repeated) is averaged onto the scalar points (the scalars, on LMDZ's scalar points
    already, only lose the repeated longitude); a collocated file (the stand-in's) passes through.
    """
    path = Path(path)
    ds = open_netcdf(path, "guide_ins file", chunks)
    require_vars(ds, ("ucov", "vcov", "cu", "cv"), path, "guide_ins file")
    for dim in ("TIME", "LEVEL", "LATU", "LONU", "LATV", "LONV"):
        if dim not in ds.dims:
            raise InputError(f"{path}: guide_ins file has no dimension {dim!r} (has {sorted(ds.dims)})")
    per_day = 1.0 / SECONDS_PER_DAY
    # LMDZ has no zonal wind at the poles: cu = a cos(lat) dlambda is 0 there (to rounding) and its
    # nudging sets ucov to 0 on the pole rows, so ucov / cu is 0/0 or noise over ~0. Those rows carry no
    # increment: 0, not NaN or a huge value that destaggering would spread to the polar scalar points.
    pole = np.abs(np.abs(ds["LATU"]) - 90.0) < 1e-6
    du = (ds["ucov"] / ds["cu"].where(~pole, 1.0)).where(~pole, 0.0).transpose(*ds["ucov"].dims)
    u_vars = {"du": du * per_day}
    v_vars = {"dv": ds["vcov"] / ds["cv"] * per_day}
    for name in ("u", "ua"):
        if name in ds:
            u_vars[name] = ds[name]
    for name in ("v", "va"):
        if name in ds:
            v_vars[name] = ds[name]
    s_vars = {}
    if "teta" in ds:
        require_vars(ds, ("SP",), path, "guide_ins file with 'teta' (its pressure converts theta to T)")
        s_vars["dt"] = ds["teta"] * per_day * (ds["SP"] / LMDZ_PREFF_PA) ** LMDZ_KAPPA
    if "q" in ds:
        s_vars["dq"] = ds["q"] * per_day
    for name in ("ta", "qa"):
        if name in ds:
            s_vars[name] = ds[name]
    u_ds = xr.Dataset(u_vars).rename({"LATU": "lat", "LONU": "lon"})
    v_ds = xr.Dataset(v_vars).rename({"LATV": "latv", "LONV": "lonv"})
    s_ds = None
    if s_vars:  # LMDZ's guide_out writes its scalars (teta, q, SP) on (LATU, LONV), the stand-in on (LATU, LONU)
        s_ds = xr.Dataset(s_vars)
        s_ds = s_ds.rename({d: n for d, n in (("LATU", "lat"), ("LONU", "lon"), ("LONV", "lon")) if d in s_ds.dims})
    staggered = ds.sizes["LATV"] != ds.sizes["LATU"] or not np.allclose(ds["LONV"].values, ds["LONU"].values)
    if staggered:
        u_ds, v_ds = _destagger(u_ds, v_ds, ds)
        if s_ds is not None:  # the scalars are on the scalar points already: drop the repeated longitude
            s_ds = s_ds.isel(lon=slice(0, u_ds.sizes["lon"])).assign_coords(lon=u_ds["lon"], lat=u_ds["lat"])
    else:
        v_ds = v_ds.rename({"latv": "lat", "lonv": "lon"}).assign_coords(lat=u_ds["lat"], lon=u_ds["lon"])
    out = xr.merge([u_ds, v_ds] + ([s_ds] if s_ds is not None else []), compat="override", join="override")
    out = out.rename({"TIME": "time", "LEVEL": "lev"})
    if "time" not in out.coords:
        out = out.assign_coords(time=np.arange(out.sizes["time"]))
    return canonical(out, lev="lev")


def read_target(guide: str | os.PathLike[str], correction: str | os.PathLike[str] | None = None, *, chunks: Mapping[str, int] | None = None) -> xr.Dataset:
    """The training target of a run: its nudging tendency, plus the correction it applied.

    A plain nudged run has no ``correction`` and its target is :func:`read_guide`'s ``du``, ``dv``. A
    nudged run of a corrected model (iterative training, :mod:`nudgeml.iterate`) records the residual
    nudging in ``guide`` and the applied correction in ``correction`` (same ``guide_ins`` layout); the
    target is their sum, the total correction the model still needed. Dims as :func:`read_guide`.
    """
    g = read_guide(guide, chunks=chunks)
    if correction is None:
        return g
    c = read_guide(correction, chunks=chunks)
    if g.sizes != c.sizes:
        raise InputError(f"{correction}: correction file is {dict(c.sizes)}, the nudging tendency {guide} is {dict(g.sizes)}")
    gt, ct = g["time"].values, c["time"].values
    if not np.array_equal(gt, ct):
        raise InputError(f"{correction}: correction times differ from those of {guide} (first {ct[:1]} vs {gt[:1]})")
    # same writer, same grid: add the arrays (.data keeps them lazy) rather than align coordinates;
    # T and q only where the correction applied them too (today's corrections are winds only)
    return g.assign({k: g[k] + c[k].data for k in ("du", "dv", "dt", "dq") if k in g and k in c})


def _destagger(u_ds: xr.Dataset, v_ds: xr.Dataset, ds: xr.Dataset) -> tuple[xr.Dataset, xr.Dataset]:
    """LMDZ staggered C-grid -> scalar points (LMDZ physics grid: lon without the repeated point).

    u lives at ``LONU`` (scalar lon + half a cell, ``iim+1`` points with the periodic one repeated):
    the scalar point ``i`` is the mean of u points ``i-1`` and ``i``. v lives at ``LATV`` (``jjm``
    points between the ``jjm+1`` scalar latitudes): interior scalar rows average the two neighbours,
    the pole rows take the nearest v row (LMDZ's physics sets the pole winds the same way, from the
    adjacent row).
    """
    nlon = ds.sizes["LONU"] - 1  # drop the repeated periodic point
    u = u_ds.isel(lon=slice(0, nlon))
    u_scalar = 0.5 * (u + u.roll(lon=1, roll_coords=False))
    lon_scalar = np.asarray(ds["LONV"].values[:nlon], np.float64)
    u_scalar = u_scalar.assign_coords(lon=lon_scalar)
    v = v_ds.isel(lonv=slice(0, nlon)).drop_vars(["latv", "lonv"], errors="ignore")
    lat_u = np.asarray(ds["LATU"].values, np.float64)
    nv = v.sizes["latv"]
    if nv != lat_u.size - 1:
        raise InputError(f"staggered guide_ins: LATV has {nv} points, expected LATU - 1 = {lat_u.size - 1}")
    interior = 0.5 * (v.isel(latv=slice(0, nv - 1)) + v.isel(latv=slice(1, nv)))
    v_scalar = xr.concat([v.isel(latv=[0]), interior, v.isel(latv=[nv - 1])], dim="latv")
    v_scalar = v_scalar.rename({"latv": "lat"}).assign_coords(lat=lat_u)
    v_scalar = v_scalar.rename({"lonv": "lon"}).assign_coords(lon=lon_scalar)
    u_scalar = u_scalar.assign_coords(lat=lat_u)
    return u_scalar, v_scalar


def daily_totals_mm(tp_m: xr.DataArray, time_dim: str = "valid_time") -> xr.DataArray:
    """ERA5 hourly accumulations (m, ending at ``valid_time``) -> daily totals (mm/day).

    The accumulation valid at ``D+1 00:00`` belongs to day ``D``: shift labels back one hour first.
    Only complete days (24 accumulations) are kept.
    """
    shifted = tp_m.assign_coords({time_dim: tp_m[time_dim] - np.timedelta64(1, "h")})
    grouped = shifted.resample({time_dim: "1D"})
    total = grouped.sum() * 1000.0
    complete = (grouped.count() == 24).compute()
    if "lat" in complete.dims:  # a day is complete everywhere or nowhere
        complete = complete.all([d for d in complete.dims if d != time_dim])
    return total.sel({time_dim: complete.values}).rename({time_dim: "time"})

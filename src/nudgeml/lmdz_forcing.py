"""ERA5 -> the nudging files LMDZ's ``guide_mod`` reads, with ``cdo`` (the ``lmdz`` backend's CDO stage).

LMDZ reads, per month, ``u.nc`` (``UWND``), ``v.nc`` (``VWND``), ``T.nc`` (``AIR``) and ``ps.nc``
(``SP``) already on its own horizontal grid, on pressure levels (``LEVEL``, hPa; it interpolates to
its model levels itself, ``guide_plevs = 0``). Its grid is a staggered C grid: for ``iim x jjm``,
u lives on ``iim + 1`` longitudes shifted by half a cell east (the periodic point repeated) and the
``jjm + 1`` scalar latitudes (poles included), v on the scalar longitudes and the ``jjm`` latitudes
between them, T and ps on the scalar points. Latitudes run north to south. Each monthly file also holds
the first analysis of the next month, so LMDZ can interpolate the month's last 6 hours.

Written as ``<forcing_dir>/<file_pattern>`` (``{var}_{year:04d}{month:02d}.nc`` by default); the job
kit (:mod:`nudgeml.lmdz`) links them as ``u.nc`` ... in the run directory.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from nudgeml.atomic import atomic_path
from nudgeml.conventions import check_era5_file
from nudgeml.errors import InputError
from nudgeml.regrid import CDO_METHODS, cdo


#: LMDZ nudging variable -> (ERA5 variable, file variable, grid points, kind of ERA5 file)
LMDZ_VARS = {
    "u": ("u", "UWND", "u", "pressure_levels"),
    "v": ("v", "VWND", "v", "pressure_levels"),
    "T": ("t", "AIR", "scalar", "pressure_levels"),
    "ps": ("sp", "SP", "scalar", "single_levels"),
}


#: LMDZE's nudging variables: LMDZ's winds and temperature, and relative humidity (``hur.nc``:``RH``,
#: %, from ERA5 q and t with LMDZ's q_sat: LMDZE's guide turns it back into q with the model's q_sat)
LMDZE_VARS = {
    "u": LMDZ_VARS["u"], "v": LMDZ_VARS["v"], "T": LMDZ_VARS["T"],
    "hur": ("r", "RH", "scalar", "pressure_levels"),
}


def lmdz_points(iim: int, jjm: int, point: str) -> tuple[np.ndarray, np.ndarray]:
    """Longitudes and latitudes (degrees, LMDZ order) of LMDZ's u, v or scalar points."""
    dlon = 360.0 / iim
    lon_scalar = -180.0 + dlon * np.arange(iim + 1)  # periodic point repeated
    lat_scalar = 90.0 - (180.0 / jjm) * np.arange(jjm + 1)  # poles included, north first
    if point == "u":
        return lon_scalar + 0.5 * dlon, lat_scalar
    if point == "v":
        return lon_scalar, 0.5 * (lat_scalar[:-1] + lat_scalar[1:])
    if point == "scalar":
        return lon_scalar, lat_scalar
    raise ValueError(f"unknown LMDZ grid point kind {point!r}")


def cdo_grid_text(lon: np.ndarray, lat: np.ndarray) -> str:
    return "\n".join([
        "gridtype = lonlat", f"xsize = {lon.size}", f"ysize = {lat.size}",
        f"xfirst = {lon[0]:.10f}", f"xinc = {lon[1] - lon[0]:.10f}",
        f"yfirst = {lat[0]:.10f}", f"yinc = {lat[1] - lat[0]:.10f}", "",
    ])


def write_lmdz_forcing(
    *,
    month_file: dict[str, Path],
    next_month_file: dict[str, Path] | None,
    out_paths: dict[str, Path],
    iim: int,
    jjm: int,
    method: str = "bilinear",
    invert_p: bool = False,
) -> None:
    """Write one month of LMDZ nudging files.

    ``month_file``/``next_month_file`` map ERA5 kinds (``pressure_levels``, ``single_levels``) to the
    month's files; ``out_paths`` maps LMDZ variables (``u v T ps``) to the files to write.
    ``next_month_file`` is required: LMDZ reads the records one after another and interpolates the
    month's last 6 hours toward the next month's first analysis; without it LMDZ would hold the last
    record (or read past the file's end). ``invert_p`` is the job kit's ``guide_invertp``: LMDZ's
    ``pres2lev`` wants the levels surface first, and reverses the file's order when ``guide_invertp=y``,
    so ``LEVEL`` is written top first (increasing pressure) then, surface first otherwise.
    """
    unknown = set(out_paths) - set(LMDZ_VARS)
    if unknown:
        raise InputError(f"LMDZ nudging variable(s) {sorted(unknown)} cannot be made from ERA5 here; use {sorted(LMDZ_VARS)}"
                         + (" ('hur' needs ERA5 relative humidity, not part of the download)" if "hur" in unknown else ""))
    if next_month_file is None:
        raise InputError(f"LMDZ nudging files {sorted(str(p) for p in out_paths.values())}: the next month's ERA5 file is missing; "
                         "the month's last 6 hours interpolate toward its first analysis (extend period.end to the next month's 00 UTC)")
    for var, path in out_paths.items():
        kind = LMDZ_VARS[var][3]
        check_era5_file(month_file[kind], kind)
        check_era5_file(next_month_file[kind], kind)
    with tempfile.TemporaryDirectory(prefix="lmdz-forcing.") as tmpdir:
        tmp = Path(tmpdir)
        for var, path in out_paths.items():
            era5_name, _, _, kind = LMDZ_VARS[var]
            merged = tmp / f"{var}_merged.nc"  # the month plus the next month's first analysis
            cdo("-f", "nc4", "mergetime", f"-selname,{era5_name}", str(month_file[kind]), "-seltimestep,1", f"-selname,{era5_name}", str(next_month_file[kind]), str(merged))

            def check_last_step(times: np.ndarray, kind: str = kind) -> None:
                if times.size < 2 or times[-1] - times[-2] != np.timedelta64(6, "h"):
                    raise InputError(f"{next_month_file[kind]}: its first record ({times[-1]}) is not the analysis 6 h after "
                                     f"the month's last ({times[-2] if times.size > 1 else 'none'}) in {month_file[kind]}: "
                                     "LMDZ would interpolate the month's last 6 hours toward the wrong state")

            write_nudging_var(merged, var, path, iim=iim, jjm=jjm, method=method, invert_p=invert_p, north_first=True,
                              source=month_file[kind], tmp=tmp, check_times=check_last_step)


def write_nudging_var(
    merged: Path,
    var: str,
    path: Path,
    *,
    iim: int,
    jjm: int,
    method: str,
    invert_p: bool,
    north_first: bool,
    source: Path,
    tmp: Path,
    check_times: Callable[[np.ndarray], None] | None = None,
    spec: tuple[str, str, str, str] | None = None,
) -> None:
    """Regrid one ERA5 variable (``merged``: the records to write, in order) to the ``var`` points of the
    ``iim x jjm`` grid and write it in the nudging file's names (``TIME``, ``LEVEL`` in hPa, ``LAT``,
    ``LON``). ``north_first``: latitudes north to south (LMDZ6) or south to north (LMDZE, whose
    ``read_reanalyse`` interpolates on model pressures laid out south first). ``invert_p``: the
    ``LEVEL`` order (see :func:`write_lmdz_forcing`). ``check_times`` sees the records' times.
    ``spec``: ``(variable in merged, file variable, points, kind)``, default ``LMDZ_VARS[var]``."""
    era5_name, lmdz_name, point, _ = spec or LMDZ_VARS[var]
    lon, lat = lmdz_points(iim, jjm, point)
    if not north_first:
        lat = lat[::-1]
    grid = tmp / f"grid_{point}_{'n' if north_first else 's'}.txt"
    grid.write_text(cdo_grid_text(lon, lat))
    remapped = tmp / f"{var}_remapped.nc"
    cdo("-f", "nc4", f"{CDO_METHODS[method]},{grid}", str(merged), str(remapped))
    with xr.open_dataset(remapped) as ds:
        tdim = next(d for d in ("valid_time", "time") if d in ds.dims)
        da = ds[era5_name].load()
        if check_times is not None:
            check_times(da[tdim].values)
        if "lat" in da.dims:
            da = da.sortby("lat", ascending=not north_first)
        dims = {tdim: "TIME", "lat": "LAT", "lon": "LON"}
        zdim = next((d for d in da.dims if d not in dims), None)
        if zdim is not None:
            dims[zdim] = "LEVEL"
        da = da.rename(dims)
        out = xr.Dataset({lmdz_name: da.astype(np.float32)})
        if zdim is not None:
            levels = np.asarray(ds[zdim].values if zdim in ds else da["LEVEL"].values, np.float64)
            units = str(ds[zdim].attrs.get("units", "hPa")).lower() if zdim in ds else "hpa"
            out = out.assign_coords(LEVEL=("LEVEL", levels / 100.0 if units in ("pa", "pascal") else levels, {"units": "hPa", "long_name": "pressure level"}))
    if zdim is not None:  # the order guide_invertp expects (write_lmdz_forcing), checked on what is written
        out = out.sortby("LEVEL", ascending=invert_p)
        step = np.diff(out["LEVEL"].values)
        if not (np.all(step > 0) if invert_p else np.all(step < 0)):
            raise InputError(f"{source}: pressure levels {out['LEVEL'].values.tolist()} are not distinct")
        out["LEVEL"].attrs["order"] = "top first (guide_invertp=y)" if invert_p else "surface first (guide_invertp=n)"
    out = out.assign_coords(LAT=("LAT", lat, {"units": "degrees_north"}), LON=("LON", lon, {"units": "degrees_east"}))
    out.attrs.update({"title": f"ERA5 {era5_name} for LMDZ nudging ({lmdz_name}), {point} points of the {iim}x{jjm} grid", "regrid": CDO_METHODS[method]})
    with atomic_path(path) as t:
        out.to_netcdf(t, encoding={"TIME": {"units": "hours since 1900-01-01 00:00:00", "calendar": "gregorian", "dtype": "float64"}})


def write_lmdze_guide(
    *,
    era5_files: dict[str, Sequence[Path]],
    start: np.datetime64 | str,
    days: int,
    out_paths: dict[str, Path],
    iim: int,
    jjm: int,
    method: str = "bilinear",
) -> None:
    """LMDZE's nudging files for a guided run of ``days`` days from ``start``: one file per variable
    (``u.nc``:``UWND``, ``v.nc``:``VWND``, ``T.nc``:``AIR``), the ``4 days + 1`` six-hourly analyses from
    ``start`` one after another. LMDZE's ``read_reanalyse`` reads record after record from the first
    without matching dates, so the records must be exactly these: checked here. Latitudes south to
    north; levels in hPa (either order: LMDZE's ``pres2lev`` sorts them). ``era5_files`` maps ERA5
    kinds (``pressure_levels``) to the monthly files covering the run."""
    unknown = set(out_paths) - set(LMDZE_VARS)
    if unknown:
        raise InputError(f"LMDZE nudging variable(s) {sorted(unknown)} are not written here; use {', '.join(LMDZE_VARS)}")
    t0 = np.datetime64(start, "s")
    want = t0 + np.timedelta64(6, "h") * np.arange(4 * days + 1)
    with tempfile.TemporaryDirectory(prefix="lmdze-guide.") as tmpdir:
        tmp = Path(tmpdir)
        for var, path in out_paths.items():
            era5_name, _, _, kind = LMDZE_VARS[var]
            files = [Path(f) for f in era5_files[kind]]
            for f in files:
                check_era5_file(f, kind)
            merged = tmp / f"{var}_merged.nc"
            names = "q,t" if var == "hur" else era5_name
            sources = [a for f in files for a in (f"-selname,{names}", str(f))]
            cdo("-f", "nc4", f"seldate,{want[0]},{want[-1]}", "-mergetime", *sources, str(merged))
            if var == "hur":
                merged = _relative_humidity_file(merged, tmp / "hur_rh.nc")

            def check_records(times: np.ndarray, files: list[Path] = files) -> None:
                got = times.astype("datetime64[s]")
                if got.size != want.size or np.any(got != want):
                    raise InputError(f"{', '.join(str(f) for f in files)}: LMDZE's nudging needs the {want.size} analyses "
                                     f"{want[0]} .. {want[-1]} every 6 h, found {got.size}"
                                     + (f" ({got[0]} .. {got[-1]})" if got.size else ""))

            write_nudging_var(merged, var, path, iim=iim, jjm=jjm, method=method, invert_p=False, north_first=False,
                              source=files[0], tmp=tmp, check_times=check_records, spec=LMDZE_VARS[var])


def _relative_humidity_file(qt: Path, out: Path) -> Path:
    """ERA5 q and t on pressure levels -> relative humidity ``r`` (%) with LMDZ's q_sat, same grid."""
    from nudgeml.lmdze_inputs import relative_humidity_pct

    with xr.open_dataset(qt) as ds:
        zdim = next(d for d in ds["q"].dims if d not in ("valid_time", "time", "lat", "lon", "latitude", "longitude"))
        p_hpa = ds[zdim].astype(np.float64)
        if str(ds[zdim].attrs.get("units", "hPa")).lower() in ("pa", "pascal"):
            p_hpa = p_hpa / 100.0
        r = xr.DataArray(relative_humidity_pct(ds["q"].values, ds["t"].values, (100.0 * p_hpa).broadcast_like(ds["q"]).values),
                         dims=ds["q"].dims, coords=ds["q"].coords, attrs={"units": "%", "long_name": "relative humidity (LMDZ q_sat)"})
        xr.Dataset({"r": r.astype(np.float32)}).to_netcdf(out)
    return out

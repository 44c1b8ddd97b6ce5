"""ERA5 (CDS NetCDF, or GRIB: cdo reads it natively and writes netCDF) -> the model's grid and levels,
with the real ``cdo`` binary.

Per month:

1. horizontal: ``cdo remapbil`` (or ``remapcon``) of ``u v t q`` (pressure levels), ``sp``, the
   surface geopotential and ``tp`` onto the model grid (the CDO grid description written by the
   grid stage);
2. surface pressure on the *model's* orography: ERA5's ``sp`` moved hydrostatically from ERA5's
   surface height to the model's (a 6.5 K/km layer starting from ERA5's near-surface temperature),
   as LMDZ's own ``ce0l`` does when it builds a start state from a reanalysis;
3. vertical: ``cdo intlevelx3d`` from the pressure levels to the model's sigma levels, linear in
   ln p, with ``ln(p / ps_model)`` as the 3-D source coordinate. CDO 2.1 reads the 3-D coordinate
   fields of ``intlevel3d`` once per call (time-varying coordinates are not followed), and
   ``ps_model`` changes every 6 h, so this step runs one CDO call per time step, in parallel. A grid
   with hybrid levels (LMDZ's, ``hybrid`` = ``(ap_mid_pa, bp_mid)`` from the grid file) has the target
   ``ln((a + b ps_model) / ps_model)``, which changes with ``ps_model`` too: one per time step as well.

Outputs: ``u v t q`` on model levels and ``ps`` (the nudging targets, the initial states of every
run, and the truth the report compares with), and ``tp`` hourly on the model grid.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import xarray as xr

from nudgeml.atomic import atomic_path
from nudgeml.conventions import check_era5_file
from nudgeml.errors import CdoError, InputError
from nudgeml.gcm.standin import ModelGrid
from nudgeml.gcm.vertical import GRAVITY_M_S2, LAPSE_RATE_K_M, RD_J_KG_K

log = logging.getLogger(__name__)

CDO_METHODS = {"bilinear": "remapbil", "conservative": "remapcon"}


def cdo(*args: str, cwd: str | Path | None = None) -> None:
    """Run ``cdo -s <args>``; raise :class:`CdoError` with cdo's message on failure."""
    exe = shutil.which("cdo")
    if exe is None:
        raise CdoError("the 'cdo' program is not on PATH (Debian: apt-get install cdo; Jean Zay: module load cdo)")
    cmd = [exe, "-s", *args]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    if res.returncode != 0:
        raise CdoError(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr.strip() or res.stdout.strip()}")


def remap(method: str, grid_txt: Path, variables: Sequence[str], src: Path, dst: Path) -> None:
    if method not in CDO_METHODS:
        raise ValueError(f"unknown regrid method {method!r}; use one of {sorted(CDO_METHODS)}")
    cdo("-f", "nc4", f"{CDO_METHODS[method]},{grid_txt}", f"-selname,{','.join(variables)}", str(src), str(dst))


def surface_pressure_on_model_orography(sp_pa: np.ndarray, phi_src: np.ndarray, phi_model: np.ndarray, t_pl: np.ndarray, plev_pa: np.ndarray) -> np.ndarray:
    """Move ``sp`` from the source surface geopotential to the model's, hydrostatically.

    ``sp_pa`` ``(time, y, x)``, ``phi_*`` ``(y, x)`` in m2 s-2, ``t_pl`` ``(time, plev, y, x)``.
    The near-surface temperature is the lowest above-ground pressure level's, brought to the surface
    with the standard lapse rate; the layer between the two surfaces has that lapse rate too.
    """
    plev = np.asarray(plev_pa, np.float64)
    order = np.argsort(plev)[::-1]  # high pressure first
    plev, t_pl = plev[order], np.asarray(t_pl, np.float64)[:, order]
    above = plev[None, :, None, None] <= sp_pa[:, None]  # (time, plev, y, x)
    k = np.argmax(above, axis=1)  # first level (from the bottom) above ground
    t_level = np.take_along_axis(t_pl, k[:, None], axis=1)[:, 0]
    p_level = plev[k]
    expo = RD_J_KG_K * LAPSE_RATE_K_M / GRAVITY_M_S2
    t_surface = t_level * (sp_pa / p_level) ** expo
    dz = (phi_src - phi_model)[None] / GRAVITY_M_S2  # m; >0 when the model surface is lower
    t_mean = t_surface + 0.5 * LAPSE_RATE_K_M * dz
    return (sp_pa * np.exp(GRAVITY_M_S2 * dz / (RD_J_KG_K * t_mean))).astype(np.float32)


def _split_times(src: Path, prefix: Path) -> list[Path]:
    cdo("splitsel,1", str(src), str(prefix))
    files = sorted(prefix.parent.glob(prefix.name + "*.nc"))
    if not files:
        raise CdoError(f"cdo splitsel produced no files from {src}")
    return files


def regrid_month(
    *,
    pressure_levels: Path,
    single_levels: Path,
    precipitation: Path,
    invariant: Path,
    grid: ModelGrid,
    grid_txt: Path,
    out_state: Path,
    out_precip: Path,
    method: str = "bilinear",
    precip_method: str = "conservative",
    threads: int = 2,
    hybrid: tuple[np.ndarray, np.ndarray] | None = None,
) -> None:
    """Regrid one month of ERA5 onto the model grid and levels (see the module docstring).

    ``hybrid``: the layers' ``(ap_mid_pa, bp_mid)`` (surface first) of a hybrid grid; ``None``: the
    grid's sigma levels.
    """
    if hybrid is not None and not (np.size(hybrid[0]) == np.size(hybrid[1]) == grid.sigma.size):
        raise InputError(f"hybrid coefficients have {np.size(hybrid[0])}/{np.size(hybrid[1])} levels, the model grid {grid.sigma.size}")
    for path, kind in ((pressure_levels, "pressure_levels"), (single_levels, "single_levels"), (precipitation, "precipitation"), (invariant, "invariant")):
        check_era5_file(path, kind)
    with tempfile.TemporaryDirectory(prefix="regrid.", dir=Path(out_state).parent if Path(out_state).parent.exists() else None) as tmpdir:
        tmp = Path(tmpdir)
        remap(method, grid_txt, ("u", "v", "t", "q"), pressure_levels, tmp / "pl.nc")
        remap(method, grid_txt, ("sp",), single_levels, tmp / "sp.nc")
        remap(method, grid_txt, ("z",), invariant, tmp / "orog.nc")
        remap(precip_method, grid_txt, ("tp",), precipitation, tmp / "tp.nc")

        with xr.open_dataset(tmp / "pl.nc") as pl, xr.open_dataset(tmp / "sp.nc") as spd, xr.open_dataset(tmp / "orog.nc") as orog:
            tdim = _time_dim(pl, pressure_levels)
            zdim = _level_dim(pl, pressure_levels)
            plev_pa = pl[zdim].values.astype(np.float64) * _to_pa(pl[zdim])
            pl = pl.sortby("lat").sortby("lon")
            spd, orog = spd.sortby("lat").sortby("lon"), orog.sortby("lat").sortby("lon")
            _check_grid(pl, grid, pressure_levels)
            times = pl[tdim].values
            sp_times = spd[_time_dim(spd, single_levels)].values
            if not np.array_equal(times, sp_times):
                raise InputError(f"{single_levels}: 'sp' times do not match the pressure-level times of {pressure_levels}")
            phi_src = orog["z"].values.reshape(orog["z"].shape[-2:]).astype(np.float64)
            ps_model = surface_pressure_on_model_orography(
                spd["sp"].values.astype(np.float64), phi_src, grid.surface_geopotential, pl["t"].values, plev_pa
            )
            # 3-D source coordinate ln(p / ps_model) on the pressure levels, target ln(sigma)
            lnsig_src = np.log(plev_pa[None, :, None, None] / ps_model[:, None].astype(np.float64)).astype(np.float32)
            src = xr.Dataset({"lnsig": ((tdim, zdim, "lat", "lon"), lnsig_src)}, coords={tdim: pl[tdim], zdim: pl[zdim], "lat": pl["lat"], "lon": pl["lon"]})
            src.to_netcdf(tmp / "coord.nc")
            state = pl[["u", "v", "t", "q"]]
            state.to_netcdf(tmp / "pl_sorted.nc")
            if hybrid is not None:  # ln(p / ps) of the model layers changes with ps: one target per time
                a, b = (np.asarray(x, np.float64)[None, :, None, None] for x in hybrid)
                ps4 = ps_model[:, None].astype(np.float64)
                lntgt = np.log((a + b * ps4) / ps4).astype(np.float32)
                tcoords = {tdim: pl[tdim], "lev": ("lev", np.arange(1, grid.sigma.size + 1, dtype=np.float64), {"axis": "Z"}), "lat": pl["lat"], "lon": pl["lon"]}
                xr.Dataset({"lnsig": ((tdim, "lev", "lat", "lon"), lntgt)}, coords=tcoords).to_netcdf(tmp / "target_t.nc")
        nlev = grid.sigma.size
        tgt = xr.Dataset(
            {"lnsig": (("lev", "lat", "lon"), np.broadcast_to(np.log(grid.sigma)[:, None, None], (nlev, grid.lat_deg.size, grid.lon_deg.size)).astype(np.float32))},
            coords={"lev": ("lev", np.arange(1, nlev + 1, dtype=np.float64), {"axis": "Z", "long_name": "model level, surface first"}), "lat": ("lat", grid.lat_deg, {"units": "degrees_north"}), "lon": ("lon", grid.lon_deg, {"units": "degrees_east"})},
        )
        tgt.to_netcdf(tmp / "target.nc")
        data_steps = _split_times(tmp / "pl_sorted.nc", tmp / "d_")
        coord_steps = _split_times(tmp / "coord.nc", tmp / "c_")
        if len(data_steps) != len(coord_steps):
            raise CdoError("cdo splitsel gave different numbers of time steps for data and coordinate")
        target_steps = [tmp / "target.nc"] * len(data_steps)
        if hybrid is not None:
            target_steps = _split_times(tmp / "target_t.nc", tmp / "t_")
            if len(target_steps) != len(data_steps):
                raise CdoError("cdo splitsel gave different numbers of time steps for data and hybrid target")
        outs = [tmp / f"m_{i:06d}.nc" for i in range(len(data_steps))]

        def one(i: int) -> None:
            cdo("-f", "nc4", f"intlevelx3d,{target_steps[i]}", str(data_steps[i]), str(coord_steps[i]), str(outs[i]))

        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            list(pool.map(one, range(len(outs))))
        cdo("-f", "nc4", "mergetime", *map(str, outs), str(tmp / "ml.nc"))

        with xr.open_dataset(tmp / "ml.nc") as ml:
            mdim = _time_dim(ml, tmp / "ml.nc")
            out = xr.Dataset(
                {
                    name: (("time", "lev", "lat", "lon"), ml[name].values.astype(np.float32), _attrs(name))
                    for name in ("u", "v", "t", "q")
                },
                coords={
                    "time": ("time", ml[mdim].values.astype("datetime64[ns]")),
                    "lev": ("lev", grid.presnivs_pa, {"units": "Pa", "long_name": "presnivs (sigma x preff), surface first"}),
                    "sigma": ("lev", grid.sigma),
                    "lat": ("lat", grid.lat_deg, {"units": "degrees_north"}),
                    "lon": ("lon", grid.lon_deg, {"units": "degrees_east"}),
                },
            )
            out["q"] = out["q"].clip(min=0.0)
            out["ps"] = (("time", "lat", "lon"), ps_model, {"units": "Pa", "long_name": "surface pressure on the model orography"})
            out.attrs.update({
                "title": "ERA5 on the model grid and levels (nudging target, initial states, evaluation truth)",
                "horizontal_method": method,
                "vertical_method": "cdo intlevelx3d, linear in ln p",
                "model_levels": "hybrid: p = ap_mid_pa + bp_mid * ps" if hybrid is not None else "sigma: p = sigma * ps",
                "source": f"{pressure_levels.name}, {single_levels.name}, {invariant.name}",
            })
            if not all(np.isfinite(out[v].values).all() for v in out.data_vars):
                raise InputError(f"{pressure_levels}: regridding produced non-finite values (levels not covering the model column?)")
            with atomic_path(out_state) as t:
                out.to_netcdf(t)

        with xr.open_dataset(tmp / "tp.nc") as tpd:
            tdim = _time_dim(tpd, precipitation)
            tpd = tpd.sortby("lat").sortby("lon")
            _check_grid(tpd, grid, precipitation)
            tp = xr.Dataset(
                {"tp": (("valid_time", "lat", "lon"), np.clip(tpd["tp"].values, 0.0, None).astype(np.float32), {"units": "m", "long_name": "total precipitation, hourly accumulation ending at valid_time"})},
                coords={"valid_time": tpd[tdim].values.astype("datetime64[ns]"), "lat": ("lat", grid.lat_deg), "lon": ("lon", grid.lon_deg)},
                attrs={"horizontal_method": precip_method},
            )
            with atomic_path(out_precip) as t:
                tp.to_netcdf(t)


def _attrs(name: str) -> dict[str, str]:
    return {
        "u": {"units": "m s-1", "long_name": "eastward wind"},
        "v": {"units": "m s-1", "long_name": "northward wind"},
        "t": {"units": "K", "long_name": "air temperature"},
        "q": {"units": "kg kg-1", "long_name": "specific humidity"},
    }[name]


def _time_dim(ds: xr.Dataset, path: Path) -> str:
    for name in ("valid_time", "time"):
        if name in ds.dims:
            return name
    raise InputError(f"{path}: no time dimension (valid_time/time) in {sorted(ds.dims)}")


def _level_dim(ds: xr.Dataset, path: Path) -> str:
    for name in ("pressure_level", "plev", "level", "lev"):
        if name in ds.dims:
            return name
    raise InputError(f"{path}: no pressure-level dimension in {sorted(ds.dims)}")


def _to_pa(coord: xr.DataArray) -> float:
    units = str(coord.attrs.get("units", "hPa")).lower()
    return 1.0 if units in ("pa", "pascal") else 100.0


def _check_grid(ds: xr.Dataset, grid: ModelGrid, path: Path) -> None:
    if ds.sizes.get("lat") != grid.lat_deg.size or ds.sizes.get("lon") != grid.lon_deg.size:
        raise InputError(f"{path}: regridded to {ds.sizes.get('lat')}x{ds.sizes.get('lon')}, model grid is {grid.lat_deg.size}x{grid.lon_deg.size}")
    if not (np.allclose(ds["lat"].values, grid.lat_deg, atol=1e-4) and np.allclose(ds["lon"].values, grid.lon_deg, atol=1e-4)):
        raise InputError(f"{path}: regridded coordinates differ from the model grid")


FORCING_VARIABLES = ("u", "v", "t", "q", "ps")


def check_forcing_file(path: str | Path) -> None:
    """Raise :class:`InputError` naming ``path`` and the problem if it is not a readable regridded
    ERA5 month: missing, unreadable (truncated, not NetCDF), no ``time`` or zero time steps, or a
    variable of :data:`FORCING_VARIABLES` missing.

    Checked file by file before the months are combined: the combined open reports an empty or
    corrupt member as a bare xarray/HDF error that names no file.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: regridded ERA5 file not found")
    try:
        ds = xr.open_dataset(path)
    except Exception as exc:  # truncated or not NetCDF: say which file, once
        raise InputError(f"{path}: cannot be read as NetCDF ({type(exc).__name__}: {exc}); rerun the regrid stage for it") from None
    with ds:
        if "time" not in ds.dims:
            raise InputError(f"{path}: regridded ERA5 file has no 'time' dimension (has {sorted(ds.dims)})")
        if ds.sizes["time"] == 0:
            raise InputError(f"{path}: regridded ERA5 file has zero time steps")
        for name in FORCING_VARIABLES:
            if name not in ds:
                raise InputError(f"{path}: regridded ERA5 file has no variable {name!r} (has {sorted(ds.data_vars)})")


def open_forcing(paths: Sequence[str | Path]) -> xr.Dataset:
    """The regridded ERA5 state over several months, one dataset (lazy); every file checked first
    (:func:`check_forcing_file`)."""
    if not paths:
        raise InputError("no regridded ERA5 file given")
    for path in paths:
        check_forcing_file(path)
    return xr.open_mfdataset([str(p) for p in paths], combine="by_coords", data_vars="minimal", coords="minimal", compat="override")


def check_on_truth_grid(hist: xr.Dataset, truth: xr.Dataset, hist_path: str | Path) -> None:
    """Raise :class:`InputError` naming ``hist_path`` unless the run's history (canonical, as
    :func:`nudgeml.conventions.read_histhf` returns it) is on the regridded truth's grid and levels.

    The truth is regridded to ``grid/model_grid.nc``, the backend's grid: a history on another grid
    (e.g. LMDZ's next to a stand-in grid file) would otherwise be compared point by point with the
    wrong points, or fail later in an unnamed broadcast.
    """
    shape = (hist.sizes.get("lev"), hist.sizes.get("lat"), hist.sizes.get("lon"))
    tshape = (truth.sizes.get("lev"), truth.sizes.get("lat"), truth.sizes.get("lon"))
    same = shape == tshape and np.allclose(hist["lat"].values, truth["lat"].values, atol=1e-3) and np.allclose(
        hist["lon"].values, truth["lon"].values, atol=1e-3)
    if not same:
        raise InputError(f"{hist_path}: history grid (lev x lat x lon {shape[0]}x{shape[1]}x{shape[2]}, lat {float(hist['lat'][0]):.2f}..) "
                         f"is not the regridded truth's ({tshape[0]}x{tshape[1]}x{tshape[2]}, lat {float(truth['lat'][0]):.2f}..): "
                         "the truth is regridded to grid/model_grid.nc, which must be the run's backend's grid")

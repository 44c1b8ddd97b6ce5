"""Synthetic LMDZ-convention history files written through the project's real writers."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from nudgeml.conventions import LmdzGrid, era5_record, guide_record, histhf_record, open_era5_writer, open_guide_writer, open_histhf_writer
from nudgeml.ncstream import seconds_since

T0 = np.datetime64("2000-01-01T00:00", "s")


def value_field(t: int, nlev: int, lat: np.ndarray, lon: np.ndarray, offset: float = 0.0) -> np.ndarray:
    """A field whose value encodes (time, level, lat, lon): each sample is recognisable."""
    k = np.arange(nlev)[:, None, None]
    return (offset + 1000.0 * t + 10.0 * k + lat[None, :, None] / 100.0 + lon[None, None, :] / 1e4).astype(np.float32)


def write_history(root: Path, *, nlat: int, nlon: int, nlev: int, ntime: int, guide_times_shift_h: int = 0, nan_at: tuple[int, int, int] | None = None) -> tuple[Path, Path, LmdzGrid]:
    """A histhf.nc + guide_ins.nc pair on a regular grid; ``nan_at=(t, lat, lon)`` poisons one column."""
    lat = np.linspace(-90 + 90 / nlat, 90 - 90 / nlat, nlat)
    lon = np.arange(nlon) * 360.0 / nlon
    presnivs = np.linspace(95000.0, 2500.0, nlev)
    grid = LmdzGrid(lat, lon, presnivs)
    root.mkdir(parents=True, exist_ok=True)
    hist = open_histhf_writer(root / "histhf.nc", grid, epoch=T0, window_hours=6)
    guide = open_guide_writer(root / "guide_ins.nc", grid, epoch=T0, alpha=1 / 12, window_hours=6)
    for t in range(ntime):
        u = value_field(t, nlev, lat, lon)
        if nan_at is not None and nan_at[0] == t:
            u = u.copy()
            u[:, nan_at[1], nan_at[2]] = np.nan
        ps = u[0] * 0 + 1e5 + t
        hist.append(seconds_since([T0 + np.timedelta64(6 * t, "h")], T0)[0], **histhf_record(grid, u=u, v=u + 1, t=u + 2, q=u * 1e-6, ps=ps, precip=ps * 0))
        du = value_field(t, nlev, lat, lon, offset=0.5) * 1e-8
        when = T0 + np.timedelta64(6 * t + guide_times_shift_h, "h")
        guide.append(seconds_since([when], T0)[0], **guide_record(grid, u=u, v=u, ua=u, va=u, du_ms2=du, dv_ms2=-du, pressure=u * 0 + 5e4))
    hist.close()
    guide.close()
    return root / "histhf.nc", root / "guide_ins.nc", grid


EPOCH = np.datetime64("1970-01-01T00:00", "s")
TIMES = np.array(["2000-02-01T00:00", "2000-02-01T06:00", "2000-02-01T12:00"], dtype="datetime64[s]")
PLEV = np.array([1000, 925, 850, 700, 500, 300, 200, 100, 50, 20, 10], dtype=float)


def fine_source():
    """A 2-degree ERA5-like grid (latitudes ascending here; the writer flips them)."""
    return np.linspace(-89.5, 89.5, 90), np.arange(180) * 2.0


def smooth(lat, lon):
    """A smooth analytic horizontal pattern (degrees in)."""
    la, lo = np.deg2rad(lat)[:, None], np.deg2rad(lon)[None, :]
    return 10.0 * np.cos(la) ** 2 * np.cos(2 * lo) + 5.0 * np.sin(la)


#: ECMWF parameter table 128: the paramIds of the short names (GRIB1 indicatorOfParameter, table2Version 128)
PARAM_IDS = {"z": 129, "t": 130, "u": 131, "v": 132, "q": 133, "sp": 134, "lsm": 172, "tp": 228}


def to_grib(nc_path: str | os.PathLike[str], grib_path: str | os.PathLike[str]) -> None:
    """Write the ERA5 netCDF ``nc_path`` as real GRIB1 with ``cdo -f grb copy``: ECMWF table 128 codes
    (``code``/``table`` attributes, which cdo turns into indicatorOfParameter/table2Version, centre
    ECMWF from the ``institution``), pressure levels as isobaricInhPa, 16-bit packing, as the CDS
    serves ERA5."""
    with xr.open_dataset(nc_path) as ds:
        ds = ds.drop_vars([v for v in ("expver", "number") if v in ds.variables]).load()
    for name in ds.data_vars:
        ds[name].attrs.update(code=PARAM_IDS[str(name)], table=128)
    coded = f"{grib_path}.coded.nc"
    ds.to_netcdf(coded)
    try:
        subprocess.run(["cdo", "-s", "-f", "grb", "-b", "P16", "copy", coded, str(grib_path)], check=True, capture_output=True, text=True)
    finally:
        os.unlink(coded)


def write_era5(root, lat, lon, *, ps_pa=1.0e5, drop=None, grib=False):
    """One month of ERA5-like files: u = smooth pattern + 2 ln(p), t, q, z; flat orography.
    ``grib``: the same files as GRIB (:func:`to_grib`), under ``.grib`` names."""
    root.mkdir(parents=True, exist_ok=True)
    horiz = smooth(lat, lon)
    lnp = np.log(PLEV * 100.0)[:, None, None]
    paths = {}
    for kind in ("pressure_levels", "single_levels", "precipitation"):
        paths[kind] = root / f"{kind}.nc"
    w = open_era5_writer(paths["pressure_levels"], "pressure_levels", lat_deg=lat, lon_deg=lon, plev_hpa=PLEV)
    for i, t in enumerate(TIMES):
        fields = {
            "u": horiz[None] + 2.0 * lnp + i,
            "v": -horiz[None] + 0 * lnp,
            "t": 250.0 + 10.0 * (lnp - lnp.mean()) + 0 * horiz[None],
            "q": 1e-3 * np.exp(lnp - lnp.max()) + 0 * horiz[None],
            "z": -287.0 * 250.0 * (lnp - np.log(1e5)) + 0 * horiz[None],
        }
        w.append(seconds_since([t], EPOCH)[0], **era5_record(fields))
    w.close()
    if drop:  # a file from a request that forgot a variable
        with xr.open_dataset(paths["pressure_levels"]) as full:
            bad = full.drop_vars(drop).load()
        bad.to_netcdf(paths["pressure_levels"])
    w = open_era5_writer(paths["single_levels"], "single_levels", lat_deg=lat, lon_deg=lon)
    for t in TIMES:
        w.append(seconds_since([t], EPOCH)[0], **era5_record({"sp": np.full(horiz.shape, ps_pa)}))
    w.close()
    w = open_era5_writer(paths["precipitation"], "precipitation", lat_deg=lat, lon_deg=lon)
    for h in range(1, 13):
        w.append(seconds_since([TIMES[0] + np.timedelta64(h, "h")], EPOCH)[0], **era5_record({"tp": 1e-4 * (1.0 + np.cos(np.deg2rad(lat))[:, None] * np.ones((1, lon.size)))}))
    w.close()
    paths["invariant"] = root / "invariant.nc"
    w = open_era5_writer(paths["invariant"], "invariant", lat_deg=lat, lon_deg=lon)
    w.append(0, **era5_record({"z": np.zeros(horiz.shape), "lsm": np.zeros(horiz.shape)}, with_expver=False))
    w.close()
    if grib:
        for kind, nc in list(paths.items()):
            paths[kind] = nc.with_suffix(".grib")
            to_grib(nc, paths[kind])
            nc.unlink()
    return paths


def spun_up_t21(at: np.datetime64, days: int = 5):
    """A default-physics T21 stand-in started from rest ``days`` before ``at`` and run up to ``at``
    (past the adjustment from rest, whose fast waves 6-hourly samples cannot follow)."""
    from nudgeml.gcm.standin import GCMConfig, StandinGCM

    g = StandinGCM(GCMConfig(21), at - np.timedelta64(days, "D"))
    g.start(None)
    for _ in range(days * 4):  # 6-h windows
        g.run_window()
    return g


def forced_truth(root, at: np.datetime64, a_ms2: float, windows: int):
    """A T21 truth that differs from the default model only by a constant zonal-wind forcing
    ``a = a_ms2 cos(lat)`` (solid-body acceleration, exact at T21): spun up, then ``windows`` 6-h
    windows from ``at`` written as regridded ERA5 (``root/forcing.nc``) with the model grid
    (``root/grid.nc``). Returns ``(grid, a)``, ``a`` canonical ``(lev, lat, lon)``."""
    import xarray as xr

    from nudgeml.gcm.standin import GCMConfig, StandinGCM
    from nudgeml.grid import write_model_grid

    spin = spun_up_t21(at)
    truth = StandinGCM(GCMConfig(21), at)
    truth.start(spin.current_state())  # a fresh start, as the nudged run's from the same state
    grid = truth.grid
    a = np.broadcast_to((a_ms2 * np.cos(np.deg2rad(grid.lat_deg)))[None, :, None], grid.shape).astype(np.float32)
    states = [truth.current_state()]
    for _ in range(windows):
        truth.run_window(a, np.zeros_like(a))
        states.append(truth.current_state())
    times = at + np.arange(windows + 1) * np.timedelta64(6, "h")
    ds = xr.Dataset(
        {k: (("time", "lev", "lat", "lon"), np.stack([getattr(s, k) for s in states])) for k in ("u", "v", "t", "q")}
        | {"ps": (("time", "lat", "lon"), np.stack([s.ps for s in states]))},
        coords={"time": times.astype("datetime64[ns]"), "lev": grid.presnivs_pa, "lat": grid.lat_deg, "lon": grid.lon_deg},
    )
    ds.to_netcdf(root / "forcing.nc")
    write_model_grid(grid, root / "grid.nc", root / "grid.txt")
    return grid, a


class FirstFeature(torch.nn.Module):
    """Every target = ``k`` x the first feature (u at the lowest level): a state-dependent model."""

    def __init__(self, n_targets: int, k: float) -> None:
        super().__init__()
        self.n, self.k = n_targets, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.k * x[:, :1].expand(-1, self.n)


class Constant(torch.nn.Module):
    def __init__(self, n_targets: int, value: float) -> None:
        super().__init__()
        self.register_buffer("value", torch.full((n_targets,), value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.value.expand(x.shape[0], -1) + 0.0 * x[:, :1]


def export_constant(root, grid, name, value, *, levels=None, targets=("du", "dv"), module=None):
    """An exported model (TorchScript) of ``Constant(value)`` or ``module`` on the stand-in grid, its
    guard wide open: what the coupled tests and the feedback's load."""
    from nudgeml.export import export_model
    from nudgeml.extract import ColumnSpec, expand_names
    from nudgeml.manifest import Block, Grid, Guard, Levels, Manifest

    spec = ColumnSpec(geo=("sin_lat", "cos_lat", "land_fraction"), targets=tuple(targets))
    nlev = grid.sigma.size
    fb, tb = spec.feature_blocks(nlev), spec.target_blocks(nlev)
    nf, nt = sum(b["levels"] for b in fb), sum(b["levels"] for b in tb)
    manifest = Manifest(
        name=name, kind="mlp",
        features=tuple(Block(b["name"], b["units"], b["levels"]) for b in fb),
        targets=tuple(Block(b["name"], b["units"], b["levels"]) for b in tb),
        levels=Levels(tuple(levels if levels is not None else grid.presnivs_pa)),
        guard=Guard(0.1, (-1e9,) * nf, (1e9,) * nf, (-1.0,) * nt, (1.0,) * nt),
        grid=Grid("t21", nlon=grid.lon_deg.size, nlat=grid.lat_deg.size),
    )
    out = root / name
    export_model(module if module is not None else Constant(nt, value), manifest, out, torch.zeros(4, nf), aoti=False)
    assert expand_names(fb) == manifest.feature_names
    return out

"""Synthetic training stores with a known relation between inputs and targets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import xarray as xr

from nudgeml.extract import ColumnSpec, expand_names
from nudgeml.shard import ShardConfig, shard_columns


def linear_store(path: Path, *, nlev: int = 3, ntime: int = 40, ncol: int = 300, seed: int = 0, noise: float = 0.0, chunk_samples: int = 256, shard_samples: int = 2048) -> tuple[Path, np.ndarray]:
    """A store whose targets are an exact linear function of the inputs; returns (path, W)."""
    rng = np.random.default_rng(seed)
    spec = ColumnSpec()
    fb, tb = spec.feature_blocks(nlev), spec.target_blocks(nlev)
    nf, nt = sum(b["levels"] for b in fb), sum(b["levels"] for b in tb)
    scale = np.concatenate([np.full(2 * nlev, 10.0), np.full(nlev, 30.0), np.full(nlev, 1e-3), [1e3]])
    offset = np.concatenate([np.zeros(2 * nlev), np.full(nlev, 260.0), np.full(nlev, 5e-3), [1e5]])
    x = (rng.normal(size=(ntime, ncol, nf)) * scale + offset).astype(np.float32)
    w = rng.normal(size=(nf, nt)) / np.sqrt(nf)
    y = (((x - offset) / scale) @ w * 1e-4 + noise * 1e-4 * rng.normal(size=(ntime, ncol, nt))).astype(np.float32)
    ds = xr.Dataset(
        {"inputs": (("time", "column", "feature"), x), "targets": (("time", "column", "target"), y)},
        coords={"time": np.datetime64("2000-01-01T00") + np.arange(ntime) * np.timedelta64(6, "h"),
                "feature": expand_names(fb), "target": expand_names(tb), "presnivs": ("lev", np.linspace(95000, 5000, nlev))},
        attrs={"feature_blocks": json.dumps(fb), "target_blocks": json.dumps(tb), "grid_shape": json.dumps([10, 30])},
    )
    cfg = ShardConfig(fractions={"train": 0.7, "val": 0.15, "test": 0.15}, gap_hours=0, chunk_samples=chunk_samples, shard_samples=shard_samples, seed=seed)
    shard_columns(ds, path, cfg, source_digest="synthetic")
    return path, w


def neighbour_fields(root: Path, *, nlat: int = 8, nlon: int = 16, nlev: int = 2, ntime: int = 72, seed: int = 0, cycle: dict[str, float] | None = None) -> tuple[Path, Path]:
    """A column table (``columns.nc``) and its store where each target needs a neighbouring column.

    Inputs are independent random fields; ``du`` at a cell is its eastern neighbour's ``u`` (across the
    date line at the last longitude), ``dv`` its northern neighbour's ``v`` (the pole row repeats
    itself, as replicate padding does), both x 1e-4. A column model cannot predict either.
    Returns (columns path, store path); splits 70/15/15 % of the times, or by ``cycle`` (days per split,
    repeated: an interleaved split).
    """
    from nudgeml.extract import write_columns

    rng = np.random.default_rng(seed)
    spec = ColumnSpec()
    fb, tb = spec.feature_blocks(nlev), spec.target_blocks(nlev)
    nf = sum(b["levels"] for b in fb)
    scale = np.concatenate([np.full(2 * nlev, 10.0), np.full(nlev, 30.0), np.full(nlev, 1e-3), [1e3]])
    offset = np.concatenate([np.zeros(2 * nlev), np.full(nlev, 260.0), np.full(nlev, 5e-3), [1e5]])
    x = (rng.normal(size=(ntime, nlat, nlon, nf)) * scale + offset).astype(np.float32)
    u, v = x[..., :nlev], x[..., nlev:2 * nlev]
    north = np.concatenate([v[:, 1:], v[:, -1:]], axis=1)  # latitudes ascending: row i+1 is north
    y = (np.concatenate([np.roll(u, -1, axis=2), north], axis=-1) * 1e-4).astype(np.float32)
    lat = np.linspace(-90 + 90 / nlat, 90 - 90 / nlat, nlat)
    lon = np.arange(nlon) * 360.0 / nlon
    lat2d, lon2d = np.meshgrid(lat, lon, indexing="ij")
    ds = xr.Dataset(
        {"inputs": (("time", "column", "feature"), x.reshape(ntime, nlat * nlon, nf)),
         "targets": (("time", "column", "target"), y.reshape(ntime, nlat * nlon, 2 * nlev))},
        coords={"time": np.datetime64("2000-01-01T00", "ns") + np.arange(ntime) * np.timedelta64(6, "h"),
                "column_lat": ("column", lat2d.ravel()), "column_lon": ("column", lon2d.ravel()),
                "feature": expand_names(fb), "target": expand_names(tb), "presnivs": ("lev", np.linspace(95000, 5000, nlev))},
        attrs={"feature_blocks": json.dumps(fb), "target_blocks": json.dumps(tb), "grid_shape": json.dumps([nlat, nlon]), "level_order": "surface_first"},
    )
    columns = write_columns(ds, root / "columns.nc")
    store = root / "dataset.zarr"
    split = {"cycle": cycle} if cycle else {"fractions": {"train": 0.7, "val": 0.15, "test": 0.15}}
    cfg = ShardConfig(**split, gap_hours=12, chunk_samples=256, shard_samples=2048, seed=seed)
    shard_columns(columns, store, cfg, source_digest="synthetic")
    return Path(columns), store


def lmdz_nudging_files(forcing: Path, months: list[str]) -> None:
    """LMDZ's monthly nudging files ``u_<YYYYMM>.nc``, ``v_<YYYYMM>.nc`` as the CDO stage writes them
    (6-hourly, ending with the next month's first analysis), zeros on a tiny grid: what the job kit's
    day-by-day runs cut with ``cdo``."""
    forcing.mkdir(exist_ok=True)
    for tag in months:
        t0 = np.datetime64(f"{tag[:4]}-{tag[4:]}-01T00:00")
        t1 = (t0.astype("datetime64[M]") + 1).astype("datetime64[m]")
        times = np.arange(t0, t1 + np.timedelta64(1, "m"), np.timedelta64(6, "h"))
        for var, name in (("u", "UWND"), ("v", "VWND")):
            xr.Dataset({name: (("time", "LEVEL", "lat", "lon"), np.zeros((times.size, 2, 3, 4), np.float32))},
                       coords={"time": times, "LEVEL": [1000.0, 500.0]}).to_netcdf(forcing / f"{var}_{tag}.nc")

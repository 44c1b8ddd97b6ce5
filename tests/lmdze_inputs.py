"""Synthetic inputs for LMDZE's ``ce0l`` (smoke runs of the build only; the workflow builds its own from
the truth with :func:`nudgeml.lmdze_inputs.write_ce0l_inputs_from_truth`).

An idealised Earth on a 5° grid: one rectangular continent (500 m high, on a 1° relief grid), a
zonally symmetric atmosphere (temperature falling 6.5 K/km up to 11 km then isothermal, a westerly
jet, 50 % relative humidity) and a zonal SST with a seasonal shift, written by the package's writers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nudgeml.lmdze_inputs import (GRAVITY_M_S2, regular_grid, write_ecdyn, write_ecphy, write_landice, write_monthly,
                                  write_relief)

PLEV_HPA = np.array([10, 20, 30, 50, 70, 100, 150, 200, 250, 300, 400, 500, 600, 700, 850, 925, 1000], float)


def _land(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """(lat, lon) boolean: the continent, 0-60°E, 30°S-40°N."""
    lat2, lon2 = np.meshgrid(lat, lon, indexing="ij")
    return (lon2 >= 0) & (lon2 <= 60) & (lat2 >= -30) & (lat2 <= 40)


def _temperature(p_hpa: np.ndarray, t_surf: np.ndarray) -> np.ndarray:
    """Temperature (K) at pressure p over a surface at t_surf: 6.5 K/km lapse rate, 216.65 K floor."""
    z_km = 7.0 * np.log(1000.0 / p_hpa)  # scale height 7 km
    return np.maximum(t_surf - 6.5 * z_km, 216.65)


def write_ce0l_inputs(folder: Path) -> list[Path]:
    """Write the eight files ``ce0l`` reads into ``folder``; returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lon, lat = regular_grid(5.0)
    land = _land(lon, lat)
    relief_m = np.where(land, 500.0, 0.0)
    t_surf = (300.0 - 50.0 * np.sin(np.deg2rad(lat)) ** 2)[:, None] * np.ones_like(lon)[None, :]
    jet = 30.0 * np.cos(np.deg2rad(lat)) ** 2 * np.sin(np.deg2rad(2 * np.abs(lat))) ** 2
    growth = np.clip((1000.0 - PLEV_HPA) / 800.0, 0.0, 1.0)  # westerlies from 0 at 1000 hPa to the jet at 200 hPa
    shape3 = (PLEV_HPA.size, lat.size, lon.size)
    written = [write_ecdyn(folder / "ECDYN.nc", lon, lat, PLEV_HPA, z=GRAVITY_M_S2 * relief_m,
                           sp=101325.0 * np.exp(-relief_m / 8000.0),
                           u=np.broadcast_to(growth[:, None, None] * jet[None, :, None], shape3), v=np.zeros(shape3),
                           temp=_temperature(PLEV_HPA[:, None, None], t_surf[None, :, :]), r_pct=np.full(shape3, 50.0)),
               write_ecphy(folder / "ECPHY.nc", lon, lat, st=t_surf, cdsw=np.where(land, 150.0, 0.0))]
    lon1, lat1 = regular_grid(1.0)  # relief finer than the model grid (grid_noro's subgrid statistics)
    written.append(write_relief(folder / "Relief.nc", lon1, lat1, np.where(_land(lon1, lat1), 500.0, 0.0)))
    written.append(write_landice(folder / "landiceref.nc", lon, lat, np.zeros(land.shape)))
    seasonal = np.cos(2 * np.pi * (np.arange(12) - 6.5) / 12)  # +1 in northern summer
    for name, var, land_value, sea_value in (("Rugos.nc", "RUGOS", 0.1, 0.001), ("Albedo.nc", "ALBEDO", 0.2, 0.07)):
        written.append(write_monthly(folder / name, lon, lat, var, np.broadcast_to(np.where(land, land_value, sea_value), (12, *land.shape)),
                                     "m" if var == "RUGOS" else "1", time_name="temps"))
    sst = t_surf[None, :, :] + 3.0 * seasonal[:, None, None] * np.sin(np.deg2rad(lat))[None, :, None]
    written.append(write_monthly(folder / "SST.nc", lon, lat, "tosbcs", np.maximum(sst, 271.35), "K"))
    written.append(write_monthly(folder / "sea_ice.nc", lon, lat, "sicbcs", np.broadcast_to(np.where(np.abs(lat) >= 75, 100.0, 0.0)[:, None], land.shape)[None].repeat(12, 0), "%"))
    return written


TRUTH_PLEV_HPA = np.array([1000, 925, 850, 700, 600, 500, 400, 300, 250, 200, 150, 100, 70, 50, 30, 20, 10], float)
RD = 287.05


def truth_lat_lon() -> tuple[np.ndarray, np.ndarray]:
    """A 2.5° ERA5-like grid without the poles (as the stand-in's Gaussian grid), latitudes ascending."""
    return np.arange(-88.75, 90.0, 2.5), np.arange(0.0, 360.0, 2.5)


def truth_fields(i: int, lat: np.ndarray, lon: np.ndarray) -> dict[str, np.ndarray]:
    """Record ``i`` (6-hourly) of a truth with a 1000 m continent: canonical ``(level, lat, lon)`` fields.
    The winds change from record to record so that nudging toward them moves a model."""
    from nudgeml.lmdze_inputs import q_sat

    la, lo = np.deg2rad(lat)[:, None], np.deg2rad(lon)[None, :]
    p = TRUTH_PLEV_HPA[:, None, None]
    t_surf = 300.0 - 50.0 * np.sin(la) ** 2 + 0 * lo
    temp = _temperature(p, t_surf[None])
    jet = 30.0 * np.cos(la) ** 2 * np.sin(2 * np.abs(la)) ** 2
    growth = np.clip((1000.0 - p) / 800.0, 0.0, 1.0)
    u = growth * jet[None] + (3.0 + i) * np.cos(la)[None] * np.cos(lo - 0.3 * i)[None]
    v = 4.0 * np.cos(la)[None] * np.sin(2 * (lo - 0.3 * i))[None] * np.ones_like(p)
    q = 0.6 * q_sat(temp, 100.0 * p)
    z = RD * temp * np.log(1000.0 / p)
    return {"u": u, "v": v, "t": temp, "q": q, "z": z}


def truth_orography(lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Land-sea mask and surface height (m): the continent of :func:`_land`, 1000 m high."""
    land = _land(np.where(lon >= 180.0, lon - 360.0, lon), lat)
    return land.astype(float), np.where(land, 1000.0, 0.0)


def write_truth_era5(root: Path, start: np.datetime64, records: int = 5) -> dict[str, Path]:
    """ERA5-like files (pressure levels, single levels, invariant) of the truth above, 6-hourly from ``start``."""
    from nudgeml.conventions import era5_record, open_era5_writer
    from nudgeml.ncstream import seconds_since

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    lat, lon = truth_lat_lon()
    lsm, height = truth_orography(lat, lon)
    epoch = np.datetime64("1970-01-01T00:00", "s")
    times = [np.datetime64(start, "s") + np.timedelta64(6 * i, "h") for i in range(records)]
    paths = {k: root / f"{k}.nc" for k in ("pressure_levels", "single_levels", "invariant")}
    w = open_era5_writer(paths["pressure_levels"], "pressure_levels", lat_deg=lat, lon_deg=lon, plev_hpa=TRUTH_PLEV_HPA)
    for i, t in enumerate(times):
        w.append(seconds_since([t], epoch)[0], **era5_record(truth_fields(i, lat, lon)))
    w.close()
    t_surf = 300.0 - 50.0 * np.sin(np.deg2rad(lat))[:, None] ** 2
    sp = 1.0e5 * np.exp(-GRAVITY_M_S2 * height / (RD * (t_surf - 0.0065 * height / 2)))
    w = open_era5_writer(paths["single_levels"], "single_levels", lat_deg=lat, lon_deg=lon)
    for t in times:
        w.append(seconds_since([t], epoch)[0], **era5_record({"sp": sp}))
    w.close()
    w = open_era5_writer(paths["invariant"], "invariant", lat_deg=lat, lon_deg=lon)
    w.append(0, **era5_record({"z": GRAVITY_M_S2 * height, "lsm": lsm}, with_expver=False))
    w.close()
    return paths


def export_untrained_mlp(cols, out_dir: Path, hidden=(16,), seed: int = 7) -> Path:
    """An untrained MLP on an LMDZE run's training columns (``nudgeml.extract.column_dataset``: u v t q
    on every level, ps, sin_lat, cos_lat -> du dv), normalised by them, its guard their range, exported
    as the training stage exports: what LMDZE's physics hook loads in an ML free run (its weights do
    not matter to the tests and the benchmark, its inputs, outputs and size do)."""
    import hashlib
    import json

    import numpy as np
    import torch

    from nudgeml import export as ex
    from nudgeml import manifest as mf
    from nudgeml.models import normalized as nn_models

    x = cols["inputs"].values.reshape(-1, cols.sizes["feature"]).astype(np.float32)
    y = cols["targets"].values.reshape(-1, cols.sizes["target"]).astype(np.float32)
    torch.manual_seed(seed)
    net = nn_models.mlp(x.shape[1], list(hidden), y.shape[1])
    model = nn_models.NormalizedModel(net, torch.from_numpy(x.mean(0)), torch.from_numpy(x.std(0) + 1e-6),
                                      y_mean=torch.from_numpy(y.mean(0)), y_std=torch.from_numpy(y.std(0) + 1e-9)).eval()
    with torch.no_grad():
        out = model(torch.from_numpy(x)).numpy().astype(np.float64)
    klev = len(cols["lev"])
    nlat, nlon = json.loads(str(cols.attrs["grid_shape"]))  # (lat, lon) as the export stage reads it
    feats = (*(mf.Block(v, u, klev) for v, u in (("u", "m s-1"), ("v", "m s-1"), ("t", "K"), ("q", "kg kg-1"))),
             mf.Block("ps", "Pa", 1), mf.Block("sin_lat", "1", 1), mf.Block("cos_lat", "1", 1))
    targs = (mf.Block("du", "m s-2", klev), mf.Block("dv", "m s-2", klev))
    manifest = mf.Manifest(
        name="lmdze-test", kind="mlp", features=feats, targets=targs,
        levels=mf.Levels(tuple(float(p) for p in cols["presnivs"].values)),
        guard=mf.Guard(margin=0.05, feature_min=tuple(map(float, x.min(0))), feature_max=tuple(map(float, x.max(0))),
                       target_min=tuple(map(float, np.percentile(out, 10, axis=0))),
                       target_max=tuple(map(float, np.percentile(out, 90, axis=0)))),
        grid=mf.Grid("lmdze", nlon=nlon, nlat=nlat), dataset_sha256=hashlib.sha256(x.tobytes()).hexdigest())
    ex.export_model(model, manifest, out_dir, aoti=False)
    return out_dir

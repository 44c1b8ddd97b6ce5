"""ERA5 stage: the reanalysis the model is nudged toward and evaluated against.

``source: standin`` runs the stand-in truth (a finer jcm model with default physics), discards its
spin-up, and writes what the CDS would serve for the same request, month by month:

* ``pressure_levels/YYYY-MM.nc``: ``u v t q z`` at 00/06/12/18 UTC on the configured pressure levels;
* ``single_levels/YYYY-MM.nc``: ``sp`` at the same times;
* ``precipitation/YYYY-MM.nc``: ``tp``, hourly accumulations (m) ending at ``valid_time``;
* ``invariant.nc``: surface geopotential ``z`` and land-sea mask ``lsm``.

Files are split by the month of ``valid_time``, as CDS requests are.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from nudgeml.config import Period, months_between
from nudgeml.conventions import era5_record, open_era5_writer
from nudgeml.errors import ConfigError
from nudgeml.gcm.standin import GCMConfig, GridState, StandinGCM
from nudgeml.gcm.vertical import sigma_to_pressure
from nudgeml.ncstream import StreamingNetCDF, seconds_since

log = logging.getLogger(__name__)

MONTHLY_KINDS = ("pressure_levels", "single_levels", "precipitation")
WATER_DENSITY_KG_M3 = 1000.0


def era5_paths(era5_dir: str | Path, start: str, end: str, suffix: str = ".nc") -> dict[str, list[Path] | Path]:
    """The files the ERA5 stage produces for [start, end] (by kind); ``suffix`` ``.grib`` for GRIB downloads."""
    root = Path(era5_dir)
    months = months_between(start, end)
    out: dict[str, list[Path] | Path] = {k: [root / k / f"{m}{suffix}" for m in months] for k in MONTHLY_KINDS}
    out["invariant"] = root / f"invariant{suffix}"
    return out


class _MonthlyWriters:
    """One open writer per kind for the current month; switching month closes the previous file."""

    def __init__(self, paths: Mapping[str, list[Path]], factory: Mapping[str, Any]) -> None:
        self._paths = {k: {p.stem: p for p in v} for k, v in paths.items()}
        self._factory = factory
        self._open: dict[str, tuple[str, StreamingNetCDF]] = {}
        self._done: set[Path] = set()

    def write(self, kind: str, time: np.datetime64, record: dict[str, np.ndarray]) -> None:
        month = str(np.datetime64(time, "M"))
        current = self._open.get(kind)
        if current is None or current[0] != month:
            if current is not None:
                self._done.add(current[1].close())
            path = self._paths[kind].get(month)
            if path is None:
                raise RuntimeError(f"no {kind} output declared for month {month}")
            self._open[kind] = (month, self._factory[kind](path))
        self._open[kind][1].append(seconds_since([time], np.datetime64("1970-01-01T00:00:00"))[0], **record)

    def close(self) -> None:
        for _, writer in self._open.values():
            self._done.add(writer.close())
        self._open.clear()
        expected = {p for v in self._paths.values() for p in v.values()}
        missing = expected - self._done
        if missing:
            raise RuntimeError(f"ERA5 stand-in wrote no data for {sorted(str(p) for p in missing)}")

    def abort(self) -> None:
        for _, writer in self._open.values():
            writer.abort()
        self._open.clear()
        for path in self._done:
            path.unlink(missing_ok=True)


def pressure_level_record(state: GridState, sigma: np.ndarray, plev_hpa: np.ndarray) -> dict[str, np.ndarray]:
    """Canonical pressure-level fields (u, v, t, q, z) of one model state."""
    plev_pa = np.asarray(plev_hpa, np.float64) * 100.0
    if state.z is None:
        raise ValueError("the truth state carries no geopotential")
    kw = dict(ps_pa=state.ps, sigma=sigma, plev_pa=plev_pa)
    return {
        "u": sigma_to_pressure(state.u, kind="wind", **kw),
        "v": sigma_to_pressure(state.v, kind="wind", **kw),
        "t": sigma_to_pressure(state.t, kind="temperature", **kw),
        "q": np.clip(sigma_to_pressure(state.q, kind="humidity", **kw), 0.0, None),
        "z": sigma_to_pressure(state.z, kind="geopotential", t_lowest=state.t[0], t_highest=state.t[-1], **kw),
    }


def generate_standin(config: Mapping[str, Any], era5_dir: str | Path) -> dict[str, list[Path] | Path]:
    """Run the stand-in truth and write the ERA5-like files; return their paths."""
    period = Period.from_config(config["period"])
    st = config["era5"]["standin"]
    window_h = 6.0
    n_spin = st["spinup_days"] * 24.0 / window_h
    if abs(n_spin - round(n_spin)) > 1e-9:
        raise ConfigError(f"config key 'era5.standin.spinup_days' ({st['spinup_days']}) must be a multiple of 6 h")
    n_spin = int(round(n_spin))
    plev = np.sort(np.asarray(config["era5"]["pressure_levels_hpa"], np.float64))[::-1]
    spin_start = period.start - np.timedelta64(n_spin * int(window_h * 3600), "s")
    gcm = StandinGCM(GCMConfig(st["truncation"], st["layers"], st["physics"]), spin_start, window_hours=window_h, sub_hours=1.0)
    sigma_top = gcm.grid.sigma[-1]
    if plev.min() * 100.0 > sigma_top * 0.9e5:
        raise ConfigError(
            f"config key 'era5.pressure_levels_hpa': the highest level ({plev.min()} hPa) must lie above the model top "
            f"(sigma {sigma_top:.3f} ~ {sigma_top * 1000:.0f} hPa)"
        )
    paths = era5_paths(era5_dir, str(period.start), str(period.end))
    history = f"nudgeml stand-in ERA5: jcm T{st['truncation']}L{st['layers']}, physics overrides {dict(st['physics'])}, spin-up {st['spinup_days']} d from {spin_start}"
    lat, lon = gcm.grid.lat_deg, gcm.grid.lon_deg
    factory = {
        "pressure_levels": lambda p: open_era5_writer(p, "pressure_levels", lat_deg=lat, lon_deg=lon, plev_hpa=plev, history=history),
        "single_levels": lambda p: open_era5_writer(p, "single_levels", lat_deg=lat, lon_deg=lon, history=history),
        "precipitation": lambda p: open_era5_writer(p, "precipitation", lat_deg=lat, lon_deg=lon, history=history),
    }
    writers = _MonthlyWriters({k: paths[k] for k in MONTHLY_KINDS}, factory)  # type: ignore[misc]
    try:
        gcm.start(None)
        log.info("truth spin-up: %d windows from %s", n_spin, spin_start)
        for _ in range(n_spin):
            gcm.run_window()
        times = period.times
        for i, t in enumerate(times):
            last = i == len(times) - 1
            if last:
                state, precip = gcm.current_state(), None
            else:
                w = gcm.run_window()
                state, precip = w.state, w.precip
            if not state.is_finite():
                raise FloatingPointError(f"stand-in truth produced non-finite values at {t}")
            writers.write("pressure_levels", t, era5_record(pressure_level_record(state, gcm.grid.sigma, plev)))
            writers.write("single_levels", t, era5_record({"sp": state.ps}))
            if precip is not None:
                for k, flux in enumerate(precip):
                    valid = t + np.timedelta64(k + 1, "h")
                    writers.write("precipitation", valid, era5_record({"tp": np.clip(flux, 0.0, None) * 3600.0 / WATER_DENSITY_KG_M3}))
            if i % 40 == 0:
                log.info("truth %s written", t)
        writers.close()
        inv = open_era5_writer(paths["invariant"], "invariant", lat_deg=lat, lon_deg=lon, history=history)  # type: ignore[arg-type]
        try:
            inv.append(seconds_since([period.start], np.datetime64("1970-01-01T00:00:00"))[0], **era5_record({"z": gcm.grid.surface_geopotential, "lsm": gcm.grid.land_fraction}, with_expver=False))
        except BaseException:
            inv.abort()
            raise
        inv.close()
    except BaseException:
        writers.abort()
        raise
    return paths

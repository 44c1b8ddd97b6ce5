"""Pieces shared by every stand-in model run (nudged and free): model set-up from config, the initial
state taken from the regridded ERA5, and the history output in LMDZ conventions."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from nudgeml.conventions import PRECIP_CORRECTION_VAR, LmdzGrid, histhf_record, open_histhf_writer
from nudgeml.errors import InputError, RunFailed
from nudgeml.gcm.standin import GCMConfig, GridState, ModelGrid, StandinGCM, WindowOutput, enable_jax_compilation_cache
from nudgeml.ncstream import StreamingNetCDF, seconds_since

log = logging.getLogger(__name__)

WINDOW_HOURS = 6.0


def model_gcm(config: Mapping[str, Any], start: np.datetime64) -> StandinGCM:
    enable_jax_compilation_cache(config.get("jax_cache_dir"))
    m = config["model"]
    return StandinGCM(GCMConfig(m["truncation"], m["layers"], m["physics"]), start, window_hours=WINDOW_HOURS)


def check_same_grid(grid: ModelGrid, other: ModelGrid, path: str | os.PathLike[str]) -> None:
    """Raise naming ``path`` if the grid file does not describe the model being run."""
    if grid.shape != other.shape:
        raise InputError(f"{path}: grid {other.shape} (lev, lat, lon) does not match the model's {grid.shape}")
    for name in ("lat_deg", "lon_deg", "sigma"):
        if not np.allclose(getattr(grid, name), getattr(other, name), atol=1e-6):
            raise InputError(f"{path}: grid coordinate {name!r} does not match the model's")


def select_times(forcing: xr.Dataset, times: np.ndarray, path: str | os.PathLike[str]) -> xr.Dataset:
    """The forcing at exactly ``times``; raise naming ``path`` if any is missing."""
    have = np.asarray(forcing["time"].values, dtype="datetime64[s]")
    missing = np.setdiff1d(times, have)
    if missing.size:
        raise InputError(f"{path}: regridded ERA5 lacks {missing.size} analysis time(s), first {missing[0]}")
    return forcing.sel(time=times.astype("datetime64[ns]"))


def state_at(forcing: xr.Dataset, time: np.datetime64) -> GridState:
    """The regridded ERA5 state at ``time`` (the initial state of a run)."""
    snap = forcing.sel(time=np.datetime64(time, "ns")).load()
    return GridState(
        u=snap["u"].values.astype(np.float32),
        v=snap["v"].values.astype(np.float32),
        t=snap["t"].values.astype(np.float32),
        q=snap["q"].values.astype(np.float32),
        ps=snap["ps"].values.astype(np.float32),
    )


def lmdz_grid(grid: ModelGrid) -> LmdzGrid:
    return LmdzGrid(lat_deg=grid.lat_deg, lon_deg=grid.lon_deg, presnivs_pa=grid.presnivs_pa)


class HistoryWriter:
    """``histhf`` output of a run: one record per window (state at the start, precip over it)."""

    def __init__(self, path: str | os.PathLike[str], grid: ModelGrid, epoch: np.datetime64, attrs: Mapping[str, Any], *, precip_correction: bool = False) -> None:
        """``precip_correction``: also write the precipitation the humidity correction implies
        (``precip_qcorr``, zero in a window without one), as the free runs do."""
        self.path = Path(path)
        self._grid = lmdz_grid(grid)
        self._epoch = epoch
        self._precip_correction = precip_correction
        self._nc: StreamingNetCDF = open_histhf_writer(path, self._grid, epoch=epoch, window_hours=WINDOW_HOURS, attrs=attrs, precip_correction=precip_correction)

    def append(self, w: WindowOutput) -> None:
        s = w.state
        precip = w.precip.mean(axis=0)
        record = histhf_record(self._grid, u=s.u, v=s.v, t=s.t, q=s.q, ps=s.ps, precip=precip)
        if self._precip_correction:
            pc = w.precip_correction if w.precip_correction is not None else np.zeros_like(precip)
            record[PRECIP_CORRECTION_VAR[0]] = self._grid.to_lmdz(pc)
        self._nc.append(seconds_since([w.start], self._epoch)[0], **record)

    def set_attrs(self, **attrs: Any) -> None:
        self._nc.set_attrs(**attrs)

    def close(self) -> Path:
        return self._nc.close()

    def abort(self, keep: bool) -> Path | None:
        return self._nc.abort(self.path.with_suffix(".failed.nc") if keep else None)


def check_finite(w: WindowOutput, run: str) -> None:
    if not w.state.is_finite() or not np.isfinite(w.precip).all():
        raise RunFailed(f"run {run!r}: non-finite model state at {w.start}")

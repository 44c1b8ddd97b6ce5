"""Synthetic LMDZ-convention history files written through the project's real writers."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nudgeml.conventions import LmdzGrid, guide_record, histhf_record, open_guide_writer, open_histhf_writer
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

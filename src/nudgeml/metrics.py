"""Area-weighted statistics on the model grid (canonical ``(..., lat, lon)`` arrays, latitudes in degrees)."""

from __future__ import annotations

import numpy as np


def area_weights(lat_deg: np.ndarray, nlon: int) -> np.ndarray:
    """Normalised cell-area weights ``(lat, lon)`` (cos latitude), summing to 1."""
    w = np.cos(np.deg2rad(np.asarray(lat_deg, np.float64)))[:, None] * np.ones((1, nlon))
    return w / w.sum()


def weighted_mean(a: np.ndarray, lat_deg: np.ndarray) -> float:
    """Global, area-weighted mean of ``a`` ``(..., lat, lon)`` (leading axes averaged with equal weight)."""
    a = np.asarray(a, np.float64)
    w = area_weights(lat_deg, a.shape[-1])
    return float((a * w).sum(axis=(-2, -1)).mean())


def weighted_rmse(a: np.ndarray, b: np.ndarray, lat_deg: np.ndarray) -> float:
    """Global, area-weighted RMSE between two fields ``(..., lat, lon)``; levels weigh equally."""
    d2 = (np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2
    return float(np.sqrt(weighted_mean(d2, lat_deg)))


def weighted_bias(a: np.ndarray, b: np.ndarray, lat_deg: np.ndarray) -> float:
    return weighted_mean(np.asarray(a, np.float64) - np.asarray(b, np.float64), lat_deg)


def zonal_rmse(d: np.ndarray, lat_deg: np.ndarray) -> float:
    """RMS of a zonal-mean field ``d`` ``(lev, lat)``, cos-latitude weighted, levels weighing equally."""
    w = np.cos(np.deg2rad(np.asarray(lat_deg, np.float64)))[None, :] * np.ones_like(d)
    return float(np.sqrt((d**2 * w).sum() / w.sum()))


def monthly_zonal_rmse(run: np.ndarray, truth: np.ndarray, times: np.ndarray, lat_deg: np.ndarray) -> list[tuple[str, float]]:
    """Per calendar month (``YYYY-MM``, in time order): the area-weighted RMSE over (level, latitude)
    of the month's time-mean zonal mean of ``run`` against ``truth`` (both ``(time, lev, lat, lon)`` at
    ``times``). How a free run's jet drifts away, month by month, where one score over the whole run
    mixes the first month's skill with the later drift."""
    months = np.asarray(times).astype("datetime64[M]")
    out = []
    for m in np.unique(months):
        sel = months == m
        d = np.asarray(run[sel], np.float64).mean(axis=(0, -1)) - np.asarray(truth[sel], np.float64).mean(axis=(0, -1))  # (lev, lat)
        out.append((str(m), zonal_rmse(d, lat_deg)))
    return out

"""A mapping of the model's daily precipitation onto the analysis' distribution, fitted on the nudged
run (issue 13: the output side of the precipitation error).

A state correction on the model's grid cannot give the model the analysis' distribution of daily
precipitation where the mismatch is the model's own convection at its resolution (docs/science.md,
"Which gap the method corrects"). Bias adjustment does it on the output: empirical quantile mapping
(Panofsky & Brier 1968; Déqué 2007; CDF-t, Michelangeli et al. 2009, for IPSL's simulations). Here it
is fitted where real data allow, on the **nudged run** against the analysis' precipitation of the same
days (ERA5's ``tp`` for LMDZ), over the days before the free runs start only (out of sample), and then
applied to every free run alike, so a comparison between two runs stays a comparison of what each
run's dynamics gives the physics. It feeds nothing back to the model.

* Per latitude row (the zonal pool: one year of a single cell holds 3-4 days above its p99, a row 64-144
  times more), the ``K`` quantiles at levels ``(k + 1/2)/K`` of the model's and of the analysis' daily
  totals.
* A value between two model quantiles takes the analysis' value at the same (linearly interpolated)
  level. A value equal to one or more model quantiles (a dry tie: many model cell-days are exactly 0)
  takes a level drawn uniformly over the levels it spans (the randomised probability integral
  transform), so a model with more dry days than the analysis gets the analysis' light rain on the
  right share of them; seeded, so the report is reproducible. Beyond the outermost quantiles, the
  outermost difference is added (constant extrapolation), floored at 0.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from nudgeml.atomic import atomic_path
from nudgeml.errors import InputError

#: what the file's ``method`` attribute says (the only method there is; the name keeps files readable)
METHOD = "empirical quantile mapping per latitude row, fitted on the nudged run"


@dataclass(frozen=True)
class QuantileMapping:
    """Quantiles of the model's and of the analysis' daily precipitation (mm/day), per latitude row."""

    levels: np.ndarray  # (K,) cumulative probabilities, increasing
    model_mm: np.ndarray  # (lat, K)
    analysis_mm: np.ndarray  # (lat, K)
    lat: np.ndarray  # (lat,) degrees north
    first_day: str
    last_day: str
    n_days: int

    def apply(self, daily_mm: np.ndarray, lat: np.ndarray, rng: np.random.Generator, *, where: str = "the run") -> np.ndarray:
        """``daily_mm`` (``(..., lat, lon)``, mm/day) mapped onto the analysis' distribution."""
        d = np.asarray(daily_mm, dtype=np.float64)
        if d.ndim < 2 or d.shape[-2] != self.lat.size or not np.allclose(np.asarray(lat, np.float64), self.lat, atol=1e-3):
            raise InputError(
                f"{where}: its latitudes ({np.size(lat)} rows) are not those the precipitation mapping was fitted on "
                f"({self.lat.size} rows): refit it on this grid"
            )
        out = np.empty_like(d)
        for j in range(self.lat.size):
            out[..., j, :] = _map_values(d[..., j, :], self.levels, self.model_mm[j], self.analysis_mm[j], rng)
        return out

    def to_dataset(self) -> xr.Dataset:
        ds = xr.Dataset(
            {
                "model_quantile": (("lat", "level"), self.model_mm, {"units": "mm day-1", "long_name": "the nudged run's daily precipitation quantile"}),
                "analysis_quantile": (("lat", "level"), self.analysis_mm, {"units": "mm day-1", "long_name": "the analysis' daily precipitation quantile"}),
            },
            coords={"lat": ("lat", self.lat, {"units": "degrees_north"}), "level": ("level", self.levels, {"long_name": "cumulative probability"})},
        )
        ds.attrs.update(method=METHOD, first_day=self.first_day, last_day=self.last_day, n_days=self.n_days)
        return ds

    @classmethod
    def from_dataset(cls, ds: xr.Dataset, where: str) -> "QuantileMapping":
        for name in ("model_quantile", "analysis_quantile"):
            if name not in ds:
                raise InputError(f"{where}: no '{name}': not a precipitation mapping (nudgeml.precip_mapping)")
        return cls(
            levels=ds["level"].values.astype(np.float64), model_mm=ds["model_quantile"].values.astype(np.float64),
            analysis_mm=ds["analysis_quantile"].values.astype(np.float64), lat=ds["lat"].values.astype(np.float64),
            first_day=str(ds.attrs.get("first_day", "")), last_day=str(ds.attrs.get("last_day", "")), n_days=int(ds.attrs.get("n_days", 0)),
        )


def _map_values(x: np.ndarray, levels: np.ndarray, qm: np.ndarray, qa: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One row's values through the mapping (see the module's docstring)."""
    flat = x.ravel()
    k = levels.size
    lo = np.searchsorted(qm, flat, "left")
    hi = np.searchsorted(qm, flat, "right")
    p = np.full(flat.shape, np.nan)
    tie = hi > lo  # equal to the model quantiles lo..hi-1: a level drawn over them
    p[tie] = levels[lo[tie]] + rng.random(int(tie.sum())) * (levels[hi[tie] - 1] - levels[lo[tie]])
    inside = ~tie & (lo > 0) & (lo < k)  # strictly between qm[lo-1] and qm[lo]
    i = lo[inside]
    p[inside] = levels[i - 1] + (flat[inside] - qm[i - 1]) / (qm[i] - qm[i - 1]) * (levels[i] - levels[i - 1])
    y = np.interp(np.where(np.isnan(p), levels[0], p), levels, qa)
    below, above = ~tie & (lo == 0), ~tie & (lo == k)
    y[below] = np.maximum(flat[below] + qa[0] - qm[0], 0.0)
    y[above] = np.maximum(flat[above] + qa[-1] - qm[-1], 0.0)
    return y.reshape(x.shape)


def fit_quantile_mapping(
    model_daily: xr.DataArray, analysis_daily: xr.DataArray, *, before: np.datetime64, quantiles: int,
    model_path: str | os.PathLike[str] = "the nudged run", analysis_path: str | os.PathLike[str] = "the analysis",
) -> QuantileMapping:
    """Fit on the days both series hold before ``before`` (the free runs' start): ``model_daily`` the
    nudged run's and ``analysis_daily`` the analysis' daily totals (mm/day, ``(time, lat, lon)``, the
    same grid)."""
    if model_daily.shape[1:] != analysis_daily.shape[1:] or not np.allclose(model_daily["lat"].values, analysis_daily["lat"].values, atol=1e-3):
        raise InputError(f"{model_path}: its precipitation grid {model_daily.shape[1:]} is not the analysis' {analysis_daily.shape[1:]} ({analysis_path})")
    mdays = np.asarray(model_daily["time"].values, dtype="datetime64[D]")
    adays = np.asarray(analysis_daily["time"].values, dtype="datetime64[D]")
    days = np.intersect1d(mdays, adays)
    days = days[days < np.datetime64(before, "D")]
    nlon = model_daily.shape[-1]
    if days.size == 0 or days.size * nlon < quantiles:
        raise InputError(
            f"{model_path}: {days.size} complete day(s) of precipitation before the free runs' start {np.datetime64(before, 'D')} that "
            f"{analysis_path} holds too: {days.size * nlon} values per latitude row, fewer than report.precip_mapping.quantiles ({quantiles})"
        )
    m = model_daily.isel(time=np.isin(mdays, days)).values.astype(np.float64)
    a = analysis_daily.isel(time=np.isin(adays, days)).values.astype(np.float64)
    for arr, path in ((m, model_path), (a, analysis_path)):
        if not np.isfinite(arr).all():
            raise InputError(f"{path}: daily precipitation has non-finite values in the fitting days")
    levels = (np.arange(quantiles) + 0.5) / quantiles
    return QuantileMapping(
        levels=levels, model_mm=np.quantile(m, levels, axis=(0, 2)).T.copy(), analysis_mm=np.quantile(a, levels, axis=(0, 2)).T.copy(),
        lat=model_daily["lat"].values.astype(np.float64), first_day=str(days[0]), last_day=str(days[-1]), n_days=int(days.size),
    )


def run_rng(seed: int, run: str) -> np.random.Generator:
    """The tie-breaking draws of one run: fixed by the configured seed and the run's name."""
    return np.random.default_rng([int(seed), zlib.crc32(run.encode())])


def write_mapping(mapping: QuantileMapping, path: str | os.PathLike[str]) -> None:
    with atomic_path(path) as tmp:
        mapping.to_dataset().to_netcdf(tmp)


def read_mapping(path: str | os.PathLike[str]) -> QuantileMapping:
    with xr.open_dataset(Path(path)) as ds:
        return QuantileMapping.from_dataset(ds.load(), str(path))

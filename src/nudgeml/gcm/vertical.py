"""Sigma levels -> pressure levels, the way ERA5's pressure-level product is made.

Used only by the stand-in truth to *produce* ERA5-like files (the workflow's own regridding from
pressure levels to model levels is done by CDO). Interpolation is linear in ln p. Below the lowest
model level (pressure levels under ground or in the surface layer) temperature follows a 6.5 K/km lapse
rate and geopotential the matching hydrostatic profile, winds and humidity are held constant — the
usual ECMWF-style extrapolation. Above the top level the column is isothermal.
"""

from __future__ import annotations

import numpy as np

GRAVITY_M_S2 = 9.80665
RD_J_KG_K = 287.05
LAPSE_RATE_K_M = 0.0065


def sigma_to_pressure(
    field: np.ndarray,
    ps_pa: np.ndarray,
    sigma: np.ndarray,
    plev_pa: np.ndarray,
    *,
    kind: str,
    t_lowest: np.ndarray | None = None,
    t_highest: np.ndarray | None = None,
) -> np.ndarray:
    """Interpolate ``field`` ``(level, lat, lon)`` on sigma levels (surface first) to ``plev_pa``.

    ``kind`` selects the extrapolation: ``"wind"``/``"humidity"`` (constant), ``"temperature"``
    (lapse rate below, constant above), ``"geopotential"`` (hydrostatic with the lapse rate below,
    isothermal above; needs ``t_lowest``/``t_highest``: temperature of the lowest/highest level).
    Returns ``(len(plev_pa), lat, lon)``.
    """
    field = np.asarray(field, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    if sigma.ndim != 1 or field.shape[0] != sigma.size:
        raise ValueError(f"field has {field.shape[0]} levels, sigma has {sigma.size}")
    if np.any(np.diff(sigma) >= 0):
        raise ValueError("sigma must be surface first (strictly decreasing)")
    plev = np.asarray(plev_pa, dtype=np.float64)
    p = sigma[:, None, None] * np.asarray(ps_pa, dtype=np.float64)[None]  # (k, y, x), decreasing in k
    lnp = np.log(p)
    lnP = np.log(plev)[:, None, None]  # (j, 1, 1)
    # number of source levels at or below (higher pressure than) each target level
    below = (lnp[None] >= lnP[:, None]).sum(axis=1)  # (j, y, x) in [0, K]
    nk = sigma.size
    k_lo = np.clip(below - 1, 0, nk - 2)  # lower (higher-pressure) bracketing level
    k_hi = k_lo + 1
    take = lambda a, k: np.take_along_axis(a, k, axis=0)  # noqa: E731
    x0, x1 = take(lnp, k_lo), take(lnp, k_hi)
    f0, f1 = take(field, k_lo), take(field, k_hi)
    w = (lnP - x0) / (x1 - x0)
    out = f0 + w * (f1 - f0)

    under = below == 0  # target pressure higher than the lowest model level
    over = below == nk  # target pressure lower than the top model level
    p_low, f_low = p[0][None], field[0][None]
    p_top, f_top = p[-1][None], field[-1][None]
    ratio_low = np.broadcast_to(plev[:, None, None], out.shape) / p_low
    expo = RD_J_KG_K * LAPSE_RATE_K_M / GRAVITY_M_S2
    if kind in ("wind", "humidity"):
        out = np.where(under, f_low, out)
        out = np.where(over, f_top, out)
    elif kind == "temperature":
        out = np.where(under, f_low * ratio_low**expo, out)
        out = np.where(over, f_top, out)
    elif kind == "geopotential":
        if t_lowest is None or t_highest is None:
            raise ValueError("geopotential extrapolation needs t_lowest and t_highest")
        t_low = np.asarray(t_lowest, np.float64)[None]
        t_top = np.asarray(t_highest, np.float64)[None]
        below_phi = f_low + GRAVITY_M_S2 * t_low / LAPSE_RATE_K_M * (1.0 - ratio_low**expo)
        above_phi = f_top + RD_J_KG_K * t_top * np.log(p_top / plev[:, None, None])
        out = np.where(under, below_phi, out)
        out = np.where(over, above_phi, out)
    else:
        raise ValueError(f"unknown kind {kind!r}")
    return out.astype(np.float32)

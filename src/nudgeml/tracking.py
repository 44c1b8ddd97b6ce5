"""How closely a nudged run tracks its analysis: the damped-copy factors, measured.

A run relaxed toward an analysis ``a`` with time scale ``tau`` does not sit on it: its state ``x`` is a
damped, lagged copy. Then the nudging tendency ``g = (a - x) / tau`` correlates with the state itself,
and a model trained on ``g`` learns that correlation (damping when fed ``x``, amplification when fed
``a``) on top of the model error it should learn (issue 13, "the tracking error"). This module
measures it, per variable and level, over time and space:

* ``cov_ratio = Cov(a, x) / Var(a)`` and ``var_ratio = Var(x) / Var(a)``: both 1 for a perfect copy;
* ``slope_on_x = Cov(g, x) / Var(x)`` (s-1): the sensitivity of the tendency to the local state that a
  regression on ``x`` learns, also given times ``tau`` (dimensionless). For ``g = (a - x) / tau`` exactly
  it is ``(cov_ratio / var_ratio - 1) / tau``;
* ``slope_on_a = Cov(g, a) / Var(a)`` (s-1): the same fed the analysis, ``(1 - cov_ratio) / tau``.

The tendency used is the one the run recorded (window means of what the model applied), so the slopes
are what a model trained on that target sees; they depart from the formulas above by the window
averaging and the spectral projection.

Statistics are area-weighted (cos latitude) and taken on anomalies: about each grid point's time mean
(``anomalies="gridpoint"``, the default: the fluctuations a state-dependent correction acts on; the
time-mean part is the mean tendency's business) or about each level's overall mean (``"level"``).

**Analytic reference** (:func:`damped_copy_factors`, used by the tests): for an AR(1) analysis
``a[n+1] = phi a[n] + noise`` and a forward-Euler relaxation ``x[n+1] = x[n] + alpha (a[n] - x[n])``
with ``alpha = dt / tau`` and ``beta = 1 - alpha``, ``x[n] = alpha sum_k beta^k a[n-1-k]``, so

    Cov(a, x) / Var(a) = alpha phi / (1 - beta phi)
    Var(x) / Var(a)    = alpha (1 + beta phi) / ((2 - alpha) (1 - beta phi))

(sum the geometric series of the lagged autocovariances ``phi^k Var(a)``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from nudgeml.errors import InputError

Anomalies = Literal["gridpoint", "level"]


@dataclass(frozen=True)
class LevelFactors:
    """The damped-copy factors of one variable on one level (see the module docstring)."""

    level: float
    var_a: float
    var_x: float
    cov_ax: float
    cov_ratio: float
    var_ratio: float
    correlation: float
    slope_on_x_per_s: float | None
    slope_on_a_per_s: float | None
    slope_on_x_times_tau: float | None
    slope_on_a_times_tau: float | None


def damped_copy_factors(phi: float, alpha: float) -> tuple[float, float]:
    """Analytic ``(Cov(a,x)/Var(a), Var(x)/Var(a))`` for an AR(1) ``a`` (coefficient ``phi`` per step)
    relaxed with forward Euler at ``alpha = dt / tau`` per step (derivation in the module docstring)."""
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha = dt/tau must be in (0, 1], got {alpha}")
    if not -1.0 < phi < 1.0:
        raise ValueError(f"AR(1) coefficient must be in (-1, 1), got {phi}")
    beta = 1.0 - alpha
    cov_ratio = alpha * phi / (1.0 - beta * phi)
    var_ratio = alpha * (1.0 + beta * phi) / ((2.0 - alpha) * (1.0 - beta * phi))
    return cov_ratio, var_ratio


def _weights(shape: tuple[int, ...], lat_deg: np.ndarray | None) -> np.ndarray:
    """Area weights broadcast to ``(time, lat, lon)`` (uniform without latitudes)."""
    if lat_deg is None:
        return np.ones(shape[1:], np.float64)
    w = np.cos(np.deg2rad(np.asarray(lat_deg, np.float64)))
    if w.shape != (shape[1],):
        raise ValueError(f"{w.size} latitudes for fields of shape {shape} (time, lat, lon)")
    return np.broadcast_to(np.clip(w, 0.0, None)[:, None], shape[1:])


def level_factors(
    analysis: np.ndarray,
    state: np.ndarray,
    tendency: np.ndarray | None = None,
    *,
    tau_seconds: float | None = None,
    lat_deg: np.ndarray | None = None,
    anomalies: Anomalies = "gridpoint",
    level: float = float("nan"),
) -> LevelFactors:
    """Factors of one variable on one level from ``(time, lat, lon)`` fields (any trailing space dims).

    ``tendency`` (same shape, units of the variable per second) is the recorded nudging tendency at
    the same times; without it the slopes are ``None``. ``tau_seconds`` scales them to ``* tau``.
    """
    a = np.asarray(analysis, np.float64)
    x = np.asarray(state, np.float64)
    if a.shape != x.shape or a.ndim < 2:
        raise ValueError(f"analysis {a.shape} and state {x.shape} must be equal (time, space...) arrays")
    if a.shape[0] < 3:
        raise ValueError(f"need at least 3 times to measure the factors, got {a.shape[0]}")
    space = a.shape[1:]
    w = _weights(a.shape, lat_deg) if len(space) == 2 else np.ones(space, np.float64)
    g = None if tendency is None else np.asarray(tendency, np.float64)
    if g is not None and g.shape != a.shape:
        raise ValueError(f"tendency {g.shape} must have the analysis' shape {a.shape}")

    def anomaly(f: np.ndarray) -> np.ndarray:
        if anomalies == "gridpoint":
            return f - f.mean(axis=0, keepdims=True)
        if anomalies == "level":
            return f - np.sum(f * w) / (np.sum(w) * f.shape[0])
        raise ValueError(f"anomalies must be 'gridpoint' or 'level', got {anomalies!r}")

    a, x = anomaly(a), anomaly(x)
    total = np.sum(w) * a.shape[0]

    def cov(p: np.ndarray, q: np.ndarray) -> float:
        return float(np.sum(p * q * w) / total)

    var_a, var_x, cov_ax = cov(a, a), cov(x, x), cov(a, x)
    if var_a <= 0.0 or var_x <= 0.0:
        raise ValueError(f"level {level:g}: no variance to compare (Var(a) = {var_a:g}, Var(x) = {var_x:g})")
    slope_x = slope_a = None
    if g is not None:
        g = anomaly(g)
        slope_x, slope_a = cov(g, x) / var_x, cov(g, a) / var_a
    scaled = (lambda s: None if s is None or tau_seconds is None else s * tau_seconds)  # noqa: E731
    return LevelFactors(
        level=float(level),
        var_a=var_a,
        var_x=var_x,
        cov_ax=cov_ax,
        cov_ratio=cov_ax / var_a,
        var_ratio=var_x / var_a,
        correlation=cov_ax / np.sqrt(var_a * var_x),
        slope_on_x_per_s=slope_x,
        slope_on_a_per_s=slope_a,
        slope_on_x_times_tau=scaled(slope_x),
        slope_on_a_times_tau=scaled(slope_a),
    )


# --------------------------------------------------------------------------------------------------
# From a nudged run's files
# --------------------------------------------------------------------------------------------------

#: variable -> (analysis name, model-state name, tendency name) in the datasets read below:
#: ``read_guide`` gives ``ua``/``u``/``du`` (and ``ta``/``dt``, ``qa``/``dq`` when T, q are nudged);
#: the model's T and q at the window starts come from the history file (``read_histhf``).
RUN_VARIABLES: dict[str, tuple[str, str, str]] = {
    "u": ("ua", "u", "du"),
    "v": ("va", "v", "dv"),
    "t": ("ta", "t", "dt"),
    "q": ("qa", "q", "dq"),
}


def run_factors(
    guide: str | os.PathLike[str],
    histhf: str | os.PathLike[str] | None = None,
    *,
    variables: Sequence[str] = ("u", "v"),
    tau_hours: Mapping[str, float] | float | None = None,
    anomalies: Anomalies = "gridpoint",
    skip_days: float = 0.0,
) -> dict[str, Any]:
    """The factors of a nudged run: ``{"variables": {var: [LevelFactors as dict, ...]}, ...}``.

    ``guide`` is the run's ``guide_ins`` file (analysis and model winds, applied tendencies);
    ``histhf`` supplies the model's T and q for ``variables`` ``t``/``q``. ``tau_hours`` (one value or
    one per variable) defaults to the file's ``tau_hours`` attributes. ``skip_days`` drops the start
    (the run leaving its initial state). A variable the files do not hold is an :class:`InputError`
    naming the file and the variable.
    """
    from nudgeml.conventions import read_guide, read_histhf

    guide = Path(guide)
    g = read_guide(guide)
    import xarray as xr

    with xr.open_dataset(guide, decode_times=False) as raw:  # read_guide's merge drops the file's attributes
        attrs = dict(raw.attrs)
    sources: dict[str, Any] = {}
    for var in variables:
        if var not in RUN_VARIABLES:
            raise ValueError(f"unknown variable {var!r}: expected one of {sorted(RUN_VARIABLES)}")
        an, st, te = RUN_VARIABLES[var]
        if an not in g:
            raise InputError(f"{guide}: no analysis {an!r} for variable {var!r} (is {var} nudged? the file has {sorted(g.data_vars)})")
        state_ds, state_path = g, guide
        if var in ("t", "q"):
            if histhf is None:
                raise InputError(f"variable {var!r}: the model's {var} is in the history file; pass histhf")
            h = read_histhf(histhf, names={var: {"t": "temp", "q": "ovap"}[var]})
            state_ds, state_path = h.rename({var: st}) if st != var else h, Path(histhf)
        if st not in state_ds:
            raise InputError(f"{state_path}: no model state {st!r} for variable {var!r}")
        sources[var] = (g[an], state_ds[st], g[te] if te in g else None)
    times = g["time"].values
    keep = slice(None)
    if skip_days > 0 and np.issubdtype(times.dtype, np.datetime64):
        keep = times >= times[0] + np.timedelta64(int(skip_days * 86400), "s")
    result: dict[str, Any] = {"guide": str(guide), "anomalies": anomalies, "skip_days": skip_days, "variables": {}}
    for var, (a_da, x_da, g_da) in sources.items():
        tau_h = tau_hours.get(var) if isinstance(tau_hours, Mapping) else tau_hours
        if tau_h is None:
            tau_h = attrs.get(f"tau_hours_{var}", attrs.get("tau_hours"))
        tau_s = None if tau_h is None else float(tau_h) * 3600.0
        if x_da is not a_da and not np.array_equal(x_da["time"].values, a_da["time"].values):
            try:  # the history file may hold more records than the guide file: take the same times
                x_da = x_da.sel(time=a_da["time"].values)
            except KeyError as exc:
                raise InputError(f"{histhf}: the model's {var} is not at the times of {guide} ({exc})") from exc
        rows = []
        for k in range(a_da.sizes["lev"]):
            a = a_da.isel(lev=k).values[keep]
            x = x_da.isel(lev=k).values[keep]
            t = None if g_da is None else g_da.isel(lev=k).values[keep]
            rows.append(asdict(level_factors(a, x, t, tau_seconds=tau_s, lat_deg=a_da["lat"].values, anomalies=anomalies, level=float(a_da["lev"].values[k]))))
        result["variables"][var] = {"tau_hours": tau_h, "levels": rows}
    return result


def format_table(result: Mapping[str, Any]) -> str:
    """A Markdown table of :func:`run_factors`' result, one row per variable and level."""
    lines = [
        "| var | level (hPa) | Var(a) | Cov(a,x)/Var(a) | Var(x)/Var(a) | corr | slope on x * tau | slope on a * tau |",
        "|---|---|---|---|---|---|---|---|",
    ]
    fmt = lambda v: "—" if v is None else f"{v:+.3f}"  # noqa: E731
    for var, block in result["variables"].items():
        for r in block["levels"]:
            lines.append(
                f"| {var} | {r['level'] / 100:.0f} | {r['var_a']:.3g} | {r['cov_ratio']:.3f} | {r['var_ratio']:.3f} | "
                f"{r['correlation']:.3f} | {fmt(r['slope_on_x_times_tau'])} | {fmt(r['slope_on_a_times_tau'])} |"
            )
    return "\n".join(lines)


def write_json(result: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    from nudgeml.atomic import write_text_atomic

    write_text_atomic(path, json.dumps(result, indent=1) + "\n")

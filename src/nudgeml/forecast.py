"""Forecast-error targets (analysis increments) from states that sit on the analysis (issue 13, c).

A model trained on the nudging tendency ``(a - x) / tau`` learns, besides the model's error, the
nudged run's tracking error: ``x`` is a damped, lagged copy of the analysis ``a``
(:mod:`nudgeml.tracking`). Operational centres learn from analysis increments instead: the error of a
short forecast started from the analysis. Real ERA5 and LMDZ provide it too, so this target is
production-available. For each sample time ``t`` of the nudged run:

1. start from the nudged run's state at ``t - spinup_hours`` and relax the winds toward the analysis
   with a short time scale ``spinup_tau_hours`` (e.g. 1 h) up to ``t``: the state then sits close to
   the analysis and is dynamically balanced (a state copied from the analysis would shock the model);
2. run free for ``lead_hours`` from that state ``x_t`` (the model's input);
3. target ``(a(t + lead) - forecast(t + lead)) / lead`` for u and v (m s-2), with ``a`` the analysis
   as the nudged run relaxes toward it (projected on the model's truncation when
   ``nudging.project_target``).

A constant missing tendency ``F`` comes back as ``F`` for a short lead; over 6 h the Coriolis force
turns a wind increment by up to ~120 degrees at mid-latitudes, so the 6-h target is the response to
``F`` over the window, as an analysis increment is (``tests/test_forecast.py`` checks both).

The run also measures how close the spun-up states sit on the analysis: the damped-copy factors of
:func:`nudgeml.tracking.level_factors` for ``x_t`` and, at the same times, for the nudged run's own
states (``diagnostics.json``), and the target's sensitivity to the local wind (the slope a regression
on ``x_t`` learns).

Outputs, in the nudged run's conventions so the extract stage reads them unchanged: ``histhf.nc`` (the
states ``x_t``) and ``guide_ins.nc`` (the targets as ``ucov``/``vcov``). Stand-in only here; on LMDZ
the job kit renders the analogue (:class:`nudgeml.lmdz.ForecastKit`: a spin-up run keeping its 00 UTC
states, then a SLURM array of one-day forecasts from them).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nudgeml.config import Period
from nudgeml.errors import ConfigError, InputError

if TYPE_CHECKING:  # the configuration check imports this module: the run's imports stay in the run
    from nudgeml.gcm.standin import GridState, WindowOutput

log = logging.getLogger(__name__)

HOUR = np.timedelta64(3600, "s")


@dataclass(frozen=True)
class ForecastSettings:
    """The ``forecast`` section of the configuration."""

    every_hours: float = 6.0  # one sample every this many hours of the nudged run
    spinup_hours: float = 6.0  # short-tau nudging before each sample time (a multiple of 6)
    spinup_tau_hours: float = 1.0
    lead_hours: float = 6.0  # free forecast length (a multiple of 6: the analysis is 6-hourly)

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> "ForecastSettings":
        s = cls(**{k: float(section[k]) for k in ("every_hours", "spinup_hours", "spinup_tau_hours", "lead_hours") if k in section})
        for key in ("every_hours", "spinup_hours", "lead_hours"):
            value = getattr(s, key)
            if value % 6 or (value <= 0 and key != "spinup_hours") or value < 0:
                raise ConfigError(f"config key 'forecast.{key}' is {value:g}: use a positive multiple of 6 h (the analysis is 6-hourly)")
        if s.spinup_tau_hours <= 0:
            raise ConfigError(f"config key 'forecast.spinup_tau_hours' is {s.spinup_tau_hours:g}: use a positive relaxation time")
        return s


def check_forecast_config(config: Mapping[str, Any]) -> None:
    """Before any run: the forecast's settings, and its lead inside the split's gap (a training
    sample's forecast must not reach the evaluation period: it reads the analysis at ``t + lead``)."""
    from nudgeml.targets import target_of

    trained = [name for name in config.get("train", {}).get("models", []) if target_of(config["models"][name]).name == "forecast"]
    if not trained:
        return
    if "forecast" not in config:
        raise ConfigError(f"config key 'forecast' is required: model(s) {trained} train on target 'forecast'")
    s = ForecastSettings.from_config(config["forecast"])
    gap = float(config["dataset"]["split"].get("gap_hours", 0.0))
    if s.lead_hours > gap:
        raise ConfigError(f"config key 'forecast.lead_hours' ({s.lead_hours:g} h) exceeds 'dataset.split.gap_hours' ({gap:g} h): the forecast "
                          "of a block's last sample would read the analysis of the next block or of the free runs")
    targets = list(config.get("columns", {}).get("targets", ["du", "dv"]))
    if targets != ["du", "dv"]:
        raise ConfigError(f"config key 'columns.targets' is {targets}: the forecast target holds du, dv only (models {trained})")
    period = Period.from_config(config["period"])
    if (period.end - period.start) <= np.timedelta64(int(s.spinup_hours + s.lead_hours), "h"):
        raise ConfigError(f"config keys 'forecast.spinup_hours' + 'forecast.lead_hours' ({s.spinup_hours + s.lead_hours:g} h) leave no sample time "
                          f"inside the nudged run (period {period.start} - {period.end})")


def forecast_from(gcm: Any, x0: GridState, t0: np.datetime64, settings: ForecastSettings) -> tuple[WindowOutput, GridState]:
    """Spin up from ``x0`` at ``t0`` toward the relaxation series already set on ``gcm`` (short tau),
    then forecast freely: the free window's output (its ``state`` is the input at ``t0 + spinup``) and
    the forecast state at its end."""
    gcm.start_at(x0, t0)
    if settings.spinup_hours > 0:
        gcm.set_relaxation_tau(settings.spinup_tau_hours)
        gcm.run_window(hours=settings.spinup_hours)
    gcm.set_relaxation_tau(None)
    w = gcm.run_window(hours=settings.lead_hours)
    return w, gcm.current_state()


def usable_times(times: np.ndarray, first: np.datetime64, last: np.datetime64, settings: ForecastSettings) -> np.ndarray:
    """The sample times whose spin-up starts at or after ``first`` (the nudged run's first state) and
    whose forecast ends at or before ``last`` (its last analysis time)."""
    t = np.asarray(times, "datetime64[s]")
    ok = (t - int(settings.spinup_hours) * HOUR >= first) & (t + int(settings.lead_hours) * HOUR <= last)
    return t[ok]


def run_forecast_targets(config: Mapping[str, Any], grid_path: str | Path, forcing_paths: Sequence[str | Path], nudged_histhf: str | Path,
                         out_histhf: str | Path, out_guide: str | Path, out_diagnostics: str | Path) -> int:
    """Write the forecast-error target of every sample time; return the number of samples."""
    from nudgeml.atomic import write_text_atomic
    from nudgeml.conventions import guide_record, open_guide_writer, read_histhf
    from nudgeml.gcm.standin import GridState, enable_jax_compilation_cache
    from nudgeml.grid import read_model_grid
    from nudgeml.ncstream import seconds_since
    from nudgeml.nudged import nudging_targets
    from nudgeml.regrid import open_forcing
    from nudgeml.replay import sample_times
    from nudgeml.simulate import HistoryWriter, check_finite, check_same_grid, lmdz_grid, model_gcm, select_times

    enable_jax_compilation_cache(config.get("jax_cache_dir"))
    settings = ForecastSettings.from_config(config["forecast"])
    period = Period.from_config(config["period"])
    hist = read_histhf(nudged_histhf)
    have = np.asarray(hist["time"].values, "datetime64[s]")
    if have.size == 0:
        raise InputError(f"{nudged_histhf}: the nudged run has no state")
    candidates = sample_times(config, have, settings.every_hours)
    times = usable_times(candidates, have[0], period.times[-1], settings)
    if times.size == 0:
        raise InputError(f"{nudged_histhf}: no sample time with {settings.spinup_hours:g} h of nudged run before it and {settings.lead_hours:g} h of "
                         f"analysis after it (nudged states {have[0]} - {have[-1]}, analysis to {period.times[-1]})")
    if times.size < candidates.size:
        log.info("%d of %d sample times dropped: their spin-up or forecast leaves the nudged run", candidates.size - times.size, candidates.size)
    forcing = select_times(open_forcing(forcing_paths), period.times, str(forcing_paths[0]))
    gcm = model_gcm(config, period.start)
    check_same_grid(gcm.grid, read_model_grid(grid_path), grid_path)
    ua, va = nudging_targets(gcm, forcing["u"].values, forcing["v"].values, bool(config["nudging"]["project_target"]))
    index = {t: i for i, t in enumerate(np.asarray(period.times, "datetime64[s]"))}
    gcm.set_relaxation(period.times, ua, va, settings.spinup_tau_hours)
    grid = gcm.grid
    lead_s = settings.lead_hours * 3600.0
    attrs = {"run": "forecast", "target": f"(analysis - forecast) / lead at t + {settings.lead_hours:g} h, from the state at t",
             **{f"forecast_{k}": v for k, v in asdict(settings).items()}, "model_truncation": grid.truncation}
    out_hist = HistoryWriter(out_histhf, grid, times[0], attrs)
    lgrid = lmdz_grid(grid)
    guide = open_guide_writer(out_guide, lgrid, epoch=times[0], alpha=0.0, window_hours=settings.lead_hours, attrs=attrs)
    nlev = grid.sigma.size
    keep = {name: np.empty((times.size, nlev) + grid.shape[1:], np.float32) for name in ("x_u", "x_v", "n_u", "n_v", "a_u", "a_v", "g_u", "g_v")}
    try:
        for i, t in enumerate(times):
            t0 = t - int(settings.spinup_hours) * HOUR
            snap = hist.sel(time=np.datetime64(t0, "ns")).load()
            x0 = GridState(**{k: snap[k].values.astype(np.float32) for k in ("u", "v", "t", "q", "ps")})
            w, f = forecast_from(gcm, x0, t0, settings)
            check_finite(w, "forecast")
            j, k = index[np.datetime64(t, "s")], index[np.datetime64(t + int(settings.lead_hours) * HOUR, "s")]
            du = (ua[k] - f.u) / lead_s
            dv = (va[k] - f.v) / lead_s
            if not (np.isfinite(du).all() and np.isfinite(dv).all()):
                raise FloatingPointError(f"forecast from {t}: non-finite target")
            s = w.state
            out_hist.append(w)
            guide.append(seconds_since([t], times[0])[0], **guide_record(lgrid, u=s.u, v=s.v, ua=ua[j], va=va[j], du_ms2=du, dv_ms2=dv, pressure=grid.sigma[:, None, None] * s.ps[None]))
            nudged = hist.sel(time=np.datetime64(t, "ns"))
            for name, value in (("x_u", s.u), ("x_v", s.v), ("n_u", nudged["u"].values), ("n_v", nudged["v"].values), ("a_u", ua[j]), ("a_v", va[j]), ("g_u", du), ("g_v", dv)):
                keep[name][i] = value
            if i % 50 == 0:
                log.info("forecast %s (%d/%d): rms target u %.2e m s-2, rms(x - a) u %.2f m/s", t, i + 1, times.size, float(np.sqrt(np.mean(du**2))), float(np.sqrt(np.mean((s.u - ua[j]) ** 2))))
    except BaseException:
        out_hist.abort(keep=False)
        guide.abort()
        raise
    diagnostics = tracking_diagnostics(keep, grid, settings, float(config["nudging"]["tau_hours"]))
    out_hist.close()
    guide.close()
    write_text_atomic(out_diagnostics, json.dumps(diagnostics, indent=1) + "\n")
    return int(times.size)


def tracking_diagnostics(keep: Mapping[str, np.ndarray], grid: Any, settings: ForecastSettings, tau_hours: float) -> dict[str, Any]:
    """Per variable and level: how the spun-up states ``x_t`` and the nudged states track the analysis
    at the sample times (damped-copy factors), the rms distance to it, and the target's sensitivity
    to the local wind (``slope_on_x``, what a regression on ``x_t`` learns)."""
    from nudgeml.tracking import level_factors

    out: dict[str, Any] = {"settings": asdict(settings), "nudging_tau_hours": tau_hours, "n_samples": int(keep["x_u"].shape[0]), "levels": {}}
    if keep["x_u"].shape[0] < 3:
        out["note"] = "fewer than 3 samples: no factors"
        return out
    for var in ("u", "v"):
        rows = []
        for lev in range(keep["x_u"].shape[1]):
            a = keep[f"a_{var}"][:, lev]
            spun = level_factors(a, keep[f"x_{var}"][:, lev], keep[f"g_{var}"][:, lev], lat_deg=grid.lat_deg, level=float(grid.sigma[lev]))
            nud = level_factors(a, keep[f"n_{var}"][:, lev], lat_deg=grid.lat_deg, level=float(grid.sigma[lev]))
            rows.append({
                "sigma": float(grid.sigma[lev]),
                "spun_up": {"cov_ratio": spun.cov_ratio, "var_ratio": spun.var_ratio, "correlation": spun.correlation,
                            "rms_to_analysis": float(np.sqrt(np.mean((keep[f"x_{var}"][:, lev] - a) ** 2)))},
                "nudged": {"cov_ratio": nud.cov_ratio, "var_ratio": nud.var_ratio, "correlation": nud.correlation,
                           "rms_to_analysis": float(np.sqrt(np.mean((keep[f"n_{var}"][:, lev] - a) ** 2)))},
                "target_rms": float(np.sqrt(np.mean(keep[f"g_{var}"][:, lev].astype(np.float64) ** 2))),
                "target_slope_on_x_per_s": spun.slope_on_x_per_s,
            })
        out["levels"][var] = rows
    return out

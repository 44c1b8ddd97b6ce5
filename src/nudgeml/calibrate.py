"""Gains on an ML correction's state-dependent part, calibrated online by ensemble Kalman inversion
(issue 13, method e).

Every model trained offline on the nudging or the forecast-error target learns, besides the model's
error, a dependence on the local wind that feeds back on the free run (damping for the nudging target,
amplification for the forecast target: ``docs/science.md``). With ``mean_residual`` the correction is
``mean + (m(x) - <m>)``: the nudging mean plus the model's state-dependent part. Here that part gets a
gain per corrected variable and pressure band::

    correction = mean + g[var, band] * (m(x) - <m>)

``g = 0`` is the mean baseline, ``g = 1`` the plain mean-residual run. The gains are chosen online, by
free runs, with no derivative of the GCM: ensemble Kalman inversion (Iglesias, Law & Stuart 2013;
Schneider et al. 2017 for climate models) fits them to statistics of the analysis, so the same loop
runs with LMDZ's free runs in place of the stand-in's.

* Statistics ``G(g)``: the time means of the zonal-mean u, v, T (level x latitude), and with
  ``statistics: [mean, eddy]`` of the zonal variances of u and v, of free runs started from the
  analysis at ``starts`` dates spread over the **training** blocks (out of sample: the evaluation
  period is never seen), over days ``skip_days .. days`` of each run; ``y``: the same statistics of the
  analysis at the same times.
* Noise ``Gamma`` (diagonal): twice the internal variance of the analysis' own time-mean zonal means
  over windows of the same length inside the training blocks (half the variance of the difference
  between adjacent windows, so the seasonal cycle cancels): what a run that has lost its initial
  state's memory differs from the analysis by (two independent draws). Floored at ``noise_floor`` x
  its median. Not the spread of perturbed runs: over 10 days the stand-in's members have not diverged
  (a first calibration measured their median variance at 1.7e-6, ~10^-5 of this), and a noise that
  small makes the inversion fit the analysis' weather.
* Each iteration moves every member ``g_j`` by ``C_gG (C_GG + Gamma)^-1 (y + eta_j - G(g_j))``,
  ``eta_j ~ N(0, Gamma)`` (perturbed observations). A member whose run blows up is left out of the
  update and redrawn from the Gaussian of the updated successful members.
* The result is the last iteration's ensemble mean (``gains.json``), with every member's gains and
  misfit, and the run count and wall time.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nudgeml.atomic import write_text_atomic
from nudgeml.errors import ConfigError, InputError

log = logging.getLogger(__name__)

WINDOW = np.timedelta64(6 * 3600, "s")
#: the statistics the inversion fits, per level and latitude: zonal means, and zonal variances (the
#: eddies' share of the kinetic energy, which a zonal mean does not see)
STATISTICS: dict[str, tuple[str, ...]] = {"mean": ("u", "v", "t"), "eddy": ("u", "v")}


@dataclass(frozen=True)
class CalibrationSettings:
    """The ``calibration`` section of the configuration."""

    members: int = 8  # ensemble size (> number of gains: the update stays in the ensemble's span)
    iterations: int = 3
    level_bands_hpa: tuple[float, ...] = (700.0, 200.0)  # band edges, surface first: gains per band
    prior_mean: float = 0.5
    prior_sd: float = 0.5
    starts: int = 2  # free runs per member and iteration, from dates spread over the training blocks
    days: float = 10.0
    skip_days: float = 2.0
    noise_floor: float = 0.1
    statistics: tuple[str, ...] = ("mean",)
    seed: int = 0

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> "CalibrationSettings":
        kw: dict[str, Any] = {k: section[k] for k in ("members", "iterations", "starts", "seed") if k in section}
        kw.update({k: float(section[k]) for k in ("prior_mean", "prior_sd", "days", "skip_days", "noise_floor") if k in section})
        if "statistics" in section:
            kw["statistics"] = tuple(section["statistics"])
        if "level_bands_hpa" in section:
            kw["level_bands_hpa"] = tuple(float(p) for p in section["level_bands_hpa"])
        s = cls(**kw)
        if list(s.level_bands_hpa) != sorted(s.level_bands_hpa, reverse=True):
            raise ConfigError(f"config key 'calibration.level_bands_hpa' is {list(s.level_bands_hpa)}: give the band edges from the surface up (decreasing pressure)")
        if not s.statistics or s.statistics[0] != "mean" or set(s.statistics) - set(STATISTICS) or len(set(s.statistics)) != len(s.statistics):
            raise ConfigError(f"config key 'calibration.statistics' is {list(s.statistics)}: 'mean' first, then optionally 'eddy' (of {sorted(STATISTICS)})")
        if s.members < 3:
            raise ConfigError(f"config key 'calibration.members' is {s.members}: at least 3 (an ensemble covariance)")
        if not 0 <= s.skip_days < s.days:
            raise ConfigError(f"config key 'calibration.skip_days' ({s.skip_days:g}) must be in [0, days = {s.days:g})")
        for key in ("days", "skip_days"):
            if (getattr(s, key) * 4) % 1:
                raise ConfigError(f"config key 'calibration.{key}' is {getattr(s, key):g}: use a multiple of 0.25 day (the analysis is 6-hourly)")
        return s

    def n_gains(self, n_variables: int) -> int:
        return n_variables * (len(self.level_bands_hpa) + 1)


def check_calibration_config(config: Mapping[str, Any]) -> None:
    """Before any run: a calibrated run is an ml run with the mean residual (its gains scale the model's
    part about the nudging mean; without the residual there is no such split), and the settings parse."""
    calibrated = [name for name, spec in config["free_runs"]["runs"].items() if spec.get("calibrated")]
    for name in calibrated:
        spec = config["free_runs"]["runs"][name]
        if spec["correction"] != "ml" or not spec.get("mean_residual"):
            raise ConfigError(f"config key 'free_runs.runs.{name}.calibrated' needs correction: ml with mean_residual: true "
                              "(the gains scale the model's part about the nudging mean)")
        if float(spec.get("scale", 1.0)) != 1.0:
            raise ConfigError(f"config key 'free_runs.runs.{name}.scale' is {spec['scale']}: a calibrated run's gains replace the scale; leave it out")
        s = CalibrationSettings.from_config(run_settings(config, spec))
        n = s.n_gains(len(config.get("columns", {}).get("targets", ["du", "dv"])))
        if s.members <= n:
            log.warning("run %s: calibration.members (%d) <= the number of gains (%d): the inversion stays in the initial ensemble's span", name, s.members, n)


def run_settings(config: Mapping[str, Any], spec: Mapping[str, Any]) -> dict[str, Any]:
    """A calibrated run's settings: the ``calibration`` section, with the keys of a ``calibrated``
    mapping overriding it for this run."""
    own = spec.get("calibrated")
    return {**config.get("calibration", {}), **(own if isinstance(own, Mapping) else {})}


def band_index(pressure_pa: np.ndarray, edges_hpa: Sequence[float]) -> np.ndarray:
    """The band of each level: 0 at and below (pressure >=) the first edge, then one per edge upward."""
    p = np.asarray(pressure_pa, float) / 100.0
    return np.array([sum(pk < e for e in edges_hpa) for pk in p], dtype=int)


def level_gains(gains: np.ndarray, bands: np.ndarray) -> np.ndarray:
    """``(n_variables, n_bands)`` gains to ``(n_variables, n_levels)``."""
    return np.asarray(gains, float).reshape(-1, int(bands.max()) + 1)[:, bands] if gains.size else np.zeros((0, bands.size))


def eki_update(theta: np.ndarray, g: np.ndarray, y: np.ndarray, gamma: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One ensemble Kalman inversion step (perturbed observations).

    ``theta`` (J, K) parameters, ``g`` (J, M) their forward-model outputs, ``y`` (M,) the data,
    ``gamma`` (M,) the diagonal noise variance. Rows of ``g`` with a non-finite value (a failed run) do
    not enter the covariances; those members are redrawn from the Gaussian of the updated others.
    """
    theta, g = np.asarray(theta, float), np.asarray(g, float)
    ok = np.isfinite(g).all(axis=1)
    if ok.sum() < 2:
        raise InputError(f"ensemble Kalman inversion: {int(ok.sum())} of {len(ok)} members ran to the end; at least 2 must (lower calibration.prior_sd)")
    t, gg = theta[ok], g[ok]
    dt, dg = t - t.mean(axis=0), gg - gg.mean(axis=0)
    n = len(t) - 1
    c_tg = dt.T @ dg / n  # (K, M)
    c_gg = dg.T @ dg / n  # (M, M)
    eta = rng.normal(size=gg.shape) * np.sqrt(gamma)
    # (C_GG + Gamma) is symmetric positive definite (Gamma > 0): solve, don't invert
    gain = np.linalg.solve(c_gg + np.diag(gamma), c_tg.T)  # (M, K)
    new = theta.copy()
    new[ok] = t + (y + eta - gg) @ gain
    if (~ok).any():
        mu, cov = new[ok].mean(axis=0), np.atleast_2d(np.cov(new[ok], rowvar=False))
        new[~ok] = rng.multivariate_normal(mu, cov + 1e-12 * np.eye(len(mu)), size=int((~ok).sum()))
    return new


def misfit(g: np.ndarray, y: np.ndarray, gamma: np.ndarray) -> np.ndarray:
    """``0.5 |Gamma^-1/2 (y - G)|^2`` per member (inf for a failed one)."""
    d = (np.asarray(g, float) - y) ** 2 / gamma
    out = 0.5 * d.sum(axis=-1)
    return np.where(np.isfinite(out), out, np.inf)


def start_dates(blocks: Sequence[tuple[np.datetime64, np.datetime64]], days: float, n: int) -> list[np.datetime64]:
    """``n`` start dates, 6-hourly, spread evenly over the times of ``blocks`` where a ``days``-long run
    stays inside its block (a run reads the analysis it is compared with: never the next block's)."""
    from nudgeml.split import run_starts, spread

    candidates = run_starts(blocks, np.timedelta64(int(round(days * 86400)), "s"))
    if len(candidates) < n:
        raise ConfigError(f"config key 'calibration.days' ({days:g}) leaves {len(candidates)} start date(s) inside the training blocks "
                          f"{[(str(a), str(b)) for a, b in blocks]}; 'calibration.starts' asks for {n}")
    return list(spread(candidates, n))


def window_variance(forcing: Any, blocks: Sequence[tuple[np.datetime64, np.datetime64]], n: int, kinds: Sequence[str]) -> np.ndarray:
    """The internal variability of the mean statistics of ``n`` consecutive 6-hourly analyses (one
    start's layout): half the variance of the difference between the means of two adjacent windows,
    over every such pair inside ``blocks``.

    Adjacent windows share their season, so the seasonal cycle (and any slow drift) cancels in the
    difference, while the weather of two windows ``n`` analyses apart is independent: the variance of
    every window's mean about one mean over the whole training year held the change from winter to
    summer, which no free run started in the same season differs from its analysis by."""
    diffs = []
    for a, b in blocks:
        sel = forcing.sel(time=slice(np.datetime64(a, "ns"), np.datetime64(b, "ns")))
        z = snapshot_stats({k: sel[k].values for k in ("u", "v", "t")}, kinds)
        if len(z) >= 2 * n:
            c = np.cumsum(np.vstack([np.zeros((1, z.shape[1])), z]), axis=0)
            means = (c[n:] - c[:-n]) / n  # the window starting at each analysis
            diffs.append(means[n:] - means[:-n])  # the next window minus this one
    d = np.concatenate(diffs) if diffs else np.empty((0, 0))
    if len(d) < 2:
        raise ConfigError(f"config keys 'calibration.days'/'skip_days': no two adjacent windows of {n} analyses inside one training "
                          "block (fewer than 2 pairs) to estimate the noise from")
    return d.var(axis=0, ddof=1) / 2.0


def snapshot_stats(fields: Mapping[str, np.ndarray], kinds: Sequence[str]) -> np.ndarray:
    """The statistics of ``kinds`` of one state or of a series: ``fields`` u, v, t ``(..., lev, lat, lon)``
    -> ``(..., n_statistics)``, each kind's variables in order, levels then latitudes."""
    parts = []
    for kind in kinds:
        for k in STATISTICS[kind]:
            a = np.asarray(fields[k], float)
            z = a.mean(axis=-1) if kind == "mean" else a.var(axis=-1)
            parts.append(z.reshape(*a.shape[:-3], -1))
    return np.concatenate(parts, axis=-1)


class Calibration:
    """The forward model ``G``: free runs of one ML corrector with given gains, from fixed start dates."""

    def __init__(self, gcm: Any, corrector: Any, forcing: Any, starts: Sequence[np.datetime64], s: CalibrationSettings,
                 *, blocks: Sequence[tuple[np.datetime64, np.datetime64]], max_wind_ms: float) -> None:
        from nudgeml.simulate import state_at

        self.gcm, self.corrector, self.s = gcm, corrector, s
        self.starts = list(starts)
        self.initial = {t: state_at(forcing, t) for t in self.starts}
        self.max_wind = max_wind_ms
        self.n_windows = int(round(s.days * 4))
        self.skip = int(round(s.skip_days * 4))
        self.runs = 0
        # the analysis' statistics at the states' times (window ends skip+1 .. n)
        ys = []
        for t0 in self.starts:
            times = (t0 + WINDOW * np.arange(self.skip + 1, self.n_windows + 1)).astype("datetime64[ns]")
            a = forcing.sel(time=times)
            ys.append(snapshot_stats({k: a[k].values for k in ("u", "v", "t")}, s.statistics).mean(axis=0))
        self.y = np.concatenate(ys)
        self.window_var = np.tile(window_variance(forcing, blocks, self.n_windows - self.skip, s.statistics), len(self.starts))

    def __call__(self, gains: np.ndarray) -> np.ndarray:
        """``G(gains)``: the statistics of one free run per start (NaN where a run blew up). Every run
        starts from the analysis itself: the noise is the analysis' own (``window_var``), not a spread of
        perturbed runs, so ``G`` is deterministic."""
        self.corrector.set_gains(np.asarray(gains, float))
        out = []
        for t0 in self.starts:
            state = self.initial[t0]
            self.gcm.start_at(state, t0)
            self.runs += 1
            total = 0.0
            n = 0
            for i in range(self.n_windows):
                self.gcm.run_window(**self.corrector(self.gcm.time, state).window_kwargs())
                state = self.gcm.current_state()
                if not state.is_finite() or float(np.nanmax(np.abs(state.u))) > self.max_wind:
                    log.info("gains %s: blew up at %s", np.round(gains, 3).tolist(), self.gcm.time)
                    return np.full(self.y.size, np.nan)
                if i >= self.skip:
                    total = total + snapshot_stats({k: getattr(state, k) for k in ("u", "v", "t")}, self.s.statistics)
                    n += 1
            out.append(total / n)
        return np.concatenate(out)


def calibrate(forward: Calibration, n_gains: int, s: CalibrationSettings) -> dict[str, Any]:
    """Run the inversion: the baseline (gains 0), then ``s.iterations`` EKI steps. Returns the record
    ``gains.json`` holds."""
    t_start = time.perf_counter()
    rng = np.random.default_rng(s.seed)
    zero = np.zeros(n_gains)
    var = 2.0 * forward.window_var  # model and analysis as two independent draws
    gamma = np.maximum(var, s.noise_floor * float(np.median(var)))
    baseline = forward(zero)
    if not np.isfinite(baseline).all():
        raise InputError("calibration: the run of the mean baseline (gains 0) blew up; nothing to calibrate against")
    baseline_misfit = float(misfit(baseline, forward.y, gamma))
    log.info("noise: median variance %.3g; baseline misfit %.1f (%d statistics)", float(np.median(gamma)), baseline_misfit, forward.y.size)
    theta = s.prior_mean + s.prior_sd * rng.normal(size=(s.members, n_gains))
    history = []
    for it in range(s.iterations + 1):
        g = np.array([forward(th) for th in theta])
        phi = misfit(g, forward.y, gamma)
        history.append({"iteration": it, "gains": theta.tolist(), "misfit": [float(p) if np.isfinite(p) else None for p in phi],
                        "rms_u_ms": [rms_u(gk, forward) for gk in g],
                        "failed": int((~np.isfinite(g).all(axis=1)).sum())})
        log.info("iteration %d: misfit median %.1f (min %.1f), gains mean %s, %d failed", it, float(np.median(phi)), float(phi.min()),
                 np.round(theta.mean(axis=0), 3).tolist(), history[-1]["failed"])
        if it < s.iterations:
            theta = eki_update(theta, g, forward.y, gamma, rng)
    final = theta.mean(axis=0)
    return {
        "gains": final.tolist(),
        "baseline_misfit": baseline_misfit,
        "history": history,
        "n_statistics": int(forward.y.size),
        "gamma_median": float(np.median(gamma)),
        "baseline_rms_u_ms": rms_u(baseline, forward),
        "starts": [str(t) for t in forward.starts],
        "runs": forward.runs,
        "wall_s": time.perf_counter() - t_start,
    }


def rms_u(g: np.ndarray, forward: Any) -> float | None:
    """RMS over starts, levels and latitudes of the time-mean zonal-mean u minus the analysis' (m/s)."""
    if not np.isfinite(g).all():
        return None
    per = g.size // len(forward.starts)
    nu = per // sum(len(STATISTICS[k]) for k in forward.s.statistics)  # u's zonal mean comes first
    d = (g - forward.y).reshape(len(forward.starts), per)[:, :nu]
    return float(np.sqrt(np.mean(d ** 2)))


def run_calibration(cfg: Mapping[str, Any], name: str, grid_path: str | Path, forcing_paths: Sequence[str | Path], *,
                    mean_file: str | Path, model_dir: str | Path, nudged_histhf: str | Path,
                    training: Sequence[tuple[np.datetime64, np.datetime64]], out_json: str | Path) -> dict[str, Any]:
    """Calibrate the gains of free run ``name`` and write ``out_json`` (atomically)."""
    from nudgeml.coupled import make_corrector
    from nudgeml.extract import ColumnSpec
    from nudgeml.grid import read_model_grid
    from nudgeml.regrid import open_forcing
    from nudgeml.simulate import check_same_grid, model_gcm, select_times

    spec = cfg["free_runs"]["runs"][name]
    s = CalibrationSettings.from_config(run_settings(cfg, spec))
    starts = start_dates(training, s.days, s.starts)
    grid = read_model_grid(grid_path)
    gcm = model_gcm(cfg, starts[0])
    check_same_grid(gcm.grid, grid, grid_path)
    columns = ColumnSpec.from_config(cfg["columns"]) if "columns" in cfg else ColumnSpec()
    corrector = make_corrector(spec, columns=columns, grid=grid, mean_file=mean_file, model_dir=model_dir, nudged_histhf=nudged_histhf, training=training, gcm=gcm)
    forcing = open_forcing(forcing_paths)
    # every analysis the runs start from and are compared with, or an error naming the file
    select_times(forcing, np.unique(np.concatenate([t + WINDOW * np.arange(int(round(s.days * 4)) + 1) for t in starts])), forcing_paths[0])
    bands = band_index(grid.presnivs_pa, s.level_bands_hpa)
    forward = Calibration(gcm, _BandGains(corrector, bands), forcing, starts, s, blocks=training, max_wind_ms=float(cfg["free_runs"]["max_wind_ms"]))
    n_bands = int(bands.max()) + 1  # the bands the model's levels fall in (level_gains' layout)
    n_gains = len(corrector.variables) * n_bands
    log.info("calibrating %s: %d gains (%s x %d bands), %d members, %d iterations, starts %s, %g days (skip %g)", name, n_gains,
             list(corrector.variables), n_bands, s.members, s.iterations, [str(t) for t in starts], s.days, s.skip_days)
    record = calibrate(forward, n_gains, s)
    record.update(run=name, variables=list(corrector.variables), level_bands_hpa=list(s.level_bands_hpa),
                  levels_pa=np.asarray(grid.presnivs_pa, float).tolist(), level_gains=level_gains(np.array(record["gains"]), bands).tolist(),
                  settings=asdict(s))
    write_text_atomic(out_json, json.dumps(record, indent=1) + "\n")
    log.info("gains %s (%d runs, %.0f s)", np.round(record["gains"], 3).tolist(), record["runs"], record["wall_s"])
    return record


class _BandGains:
    """The corrector with per-band gains expanded to its levels (what :class:`Calibration` sets)."""

    def __init__(self, corrector: Any, bands: np.ndarray) -> None:
        self.inner, self.bands = corrector, bands

    def set_gains(self, gains: np.ndarray) -> None:
        self.inner.set_gains(level_gains(gains, self.bands))

    def __call__(self, t: np.datetime64, state: Any) -> Any:
        return self.inner(t, state)

"""The mean tendency tuned on free runs of the training period (issue 13 e: a calibration over every season,
the free run's drift included).

The mean nudging tendency ``F0`` is what keeps the model on the analysis over 6 hours; a free run
corrected by it still drifts to a climate of its own (the zonal-mean u error of the mean's free runs is
most of their u RMSE). Here the mean is corrected by the bias of its own free runs over the **training**
period against the analysis at the same times, which real ERA5 and LMDZ free runs provide as well::

    F_{k+1} = F_k - g_z m(lat) [b_k] / tau_z          (part ``zonal``, per variable and level)
    F_{k+1} = F_k - g_e b_k* / tau_e                  (part ``eddy``)

* ``b_k``: the time mean of a free run corrected by ``F_k`` minus the analysis', over the times of the
  training blocks after ``skip_days``. One continuous run from the analysis at the first training
  block's start to the last one's end: validation and test blocks are run through but not scored, and
  the evaluation period (after the training blocks, :func:`nudgeml.checks.check_consistency`) never.
  ``[.]`` is the zonal mean, ``*`` the departure from it.
* ``tau``: how much the time-mean state moves per unit of tendency, the secant slope between the
  uncorrected run (``F = 0``) and ``F0``'s, projected on ``F0``'s zonal-mean or eddy part per variable
  and level, area-weighted: ``tau = <x_0 - x_c, F0> / <F0, F0>``. A level whose ``tau`` is below
  ``min_response_days`` (negative included: there the run's state moves against the tendency, as the
  zonal-mean v does, which the Coriolis force balances) is left as it is: a step of ``b / tau`` would
  be huge or of the wrong sign.
* ``m(lat)``: 0 within ``min_abs_lat_deg`` of the equator, where no Coriolis force balances a zonal-mean
  torque: the zonal wind there answers one far more slowly, and more strongly, than the level's
  projection (dominated by the extratropics) says, and a step sized by it overshoots into superrotation.
* Each part's step is a backtracking line search on the training period's misfit, the area-weighted
  mean squared error of the time-mean u plus v's (the report's RMSE, in sample): a step of gain ``g``
  that does not lower it (or whose run blows up) is halved, up to ``max_halvings`` times; a part with no
  accepted step keeps ``F`` and the next part or iteration starts from it.

* ``run`` (optional): the free run whose correction the training-period runs apply, the trial mean as its
  mean (an ml run about the mean: ``mean_residual`` or ``add_mean``, with ``feedback: true``). The mean is
  then tuned for the climate that run visits, its model's state-dependent part included, not for the
  mean's alone (a mean tuned on runs of the mean alone lost its u gain under the method: docs/science.md,
  "The mean tuned with the method in its runs"). The uncorrected run keeps the model's part (mean 0).

The result is written as a mean tendency file (the same variables as ``F0``'s: the step is added to the
annual mean and to every month of the monthly climatology; ``dt``/``dq`` are left as they are), with
``feedback.json`` recording the response times, every trial's gain and misfit, the runs and the wall
time.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from nudgeml.atomic import write_text_atomic
from nudgeml.errors import ConfigError, InputError
from nudgeml.metrics import area_weights, weighted_rmse

log = logging.getLogger(__name__)

WINDOW = np.timedelta64(6 * 3600, "s")
SECONDS_PER_DAY = 86400.0
#: the winds the feedback corrects (tendency name -> state name)
WINDS = {"du": "u", "dv": "v"}
PARTS = ("zonal", "eddy")

Means = dict[str, tuple[np.ndarray, np.ndarray]]  # state name -> (the run's time mean, the analysis')
Tendency = dict[str, np.ndarray]  # tendency name (du, dv) -> (lev, lat, lon) in m s-2


@dataclass(frozen=True)
class FeedbackSettings:
    """The ``feedback`` section of the configuration."""

    iterations: int = 1
    parts: tuple[str, ...] = ("zonal",)
    gain: float = 0.5  # the first trial's gain on each part's step
    max_halvings: int = 3
    skip_days: float = 15.0
    min_response_days: float = 0.2
    min_abs_lat_deg: float = 15.0
    run: str | None = None  # the free run whose correction the training-period runs apply (None: the mean alone)

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> "FeedbackSettings":
        kw: dict[str, Any] = {k: int(section[k]) for k in ("iterations", "max_halvings") if k in section}
        kw.update({k: float(section[k]) for k in ("gain", "skip_days", "min_response_days", "min_abs_lat_deg") if k in section})
        if "parts" in section:
            kw["parts"] = tuple(section["parts"])
        if section.get("run") is not None:
            kw["run"] = str(section["run"])
        s = cls(**kw)
        unknown = [p for p in s.parts if p not in PARTS]
        if unknown or not s.parts:
            raise ConfigError(f"config key 'feedback.parts' must name some of {list(PARTS)}, got {list(s.parts)}")
        if s.iterations < 1 or s.max_halvings < 0 or s.gain <= 0:
            raise ConfigError(f"config keys 'feedback.iterations' (>= 1), 'max_halvings' (>= 0), 'gain' (> 0): got {s.iterations}, {s.max_halvings}, {s.gain}")
        return s


def check_feedback_config(config: Mapping[str, Any]) -> None:
    """Before any run: a run with ``feedback`` reads the mean (a mean run, or an ml run about the mean),
    the settings parse, and ``feedback.run`` names such an ml run."""
    runs = [name for name, spec in config["free_runs"]["runs"].items() if spec.get("feedback")]
    for name in runs:
        spec = config["free_runs"]["runs"][name]
        about_mean = spec["correction"] == "ml" and (spec.get("mean_residual") or spec.get("add_mean"))
        if spec["correction"] != "mean" and not about_mean:
            raise ConfigError(f"config key 'free_runs.runs.{name}.feedback' needs correction: mean, or ml with mean_residual or add_mean "
                              "(the tuned mean replaces the mean tendency the run reads)")
        if spec["correction"] == "mean" and int(spec.get("iterations", 0)) > 0:
            raise ConfigError(f"config keys 'free_runs.runs.{name}.feedback' and 'iterations': the feedback tunes the plain mean; "
                              "an iterated mean is another file")
    if runs:
        nudged = [v for v in ("t", "q") if config.get("nudging", {}).get(v)]
        if nudged:
            # the training-period runs apply the winds' mean only: a run also applying dt / dq would be
            # corrected differently from the runs its mean was tuned on
            raise ConfigError(f"config key 'free_runs.runs.{runs[0]}.feedback': the feedback tunes the winds' mean of a winds-only "
                              f"nudged run; 'nudging.{nudged[0]}' is set")
    s = FeedbackSettings.from_config(config.get("feedback", {}))
    if s.run is not None:
        spec = config["free_runs"]["runs"].get(s.run)
        if spec is None:
            raise ConfigError(f"config key 'feedback.run' names {s.run!r}, which is not in free_runs.runs ({sorted(config['free_runs']['runs'])})")
        about_mean = spec["correction"] == "ml" and (spec.get("mean_residual") or spec.get("add_mean"))
        if not about_mean or not spec.get("feedback"):
            raise ConfigError(f"config key 'feedback.run' names {s.run!r}: it must be an ml run about the mean (mean_residual or add_mean) "
                              "with feedback: true, the run the tuned mean is for")
        for key in ("calibrated", "humidity_column_neutral"):
            if spec.get(key):
                raise ConfigError(f"config key 'feedback.run' names {s.run!r}, which sets {key!r}: the training-period runs apply "
                                  "the model about the trial mean only")


def split_parts(a: np.ndarray) -> dict[str, np.ndarray]:
    """``a`` (lev, lat, lon) as its zonal mean (broadcast back) and its departure from it."""
    z = np.broadcast_to(a.mean(axis=-1, keepdims=True), a.shape)
    return {"zonal": np.array(z), "eddy": a - z}


def response_times(dx: np.ndarray, forcing: np.ndarray, lat_deg: np.ndarray) -> dict[str, np.ndarray]:
    """Per part and level, the secant slope (s) of the time-mean state on the tendency:
    ``<dx, F> / <F, F>`` over the part of ``F`` (area-weighted); NaN where that part of ``F`` is 0."""
    w = area_weights(lat_deg, forcing.shape[-1])[None]  # each level's cells, summing to 1
    fp, xp = split_parts(np.asarray(forcing, float)), split_parts(np.asarray(dx, float))
    out = {}
    for part in PARTS:
        ff = (w * fp[part] ** 2).sum(axis=(1, 2))
        fx = (w * fp[part] * xp[part]).sum(axis=(1, 2))
        with np.errstate(invalid="ignore", divide="ignore"):
            out[part] = np.where(ff > 0, fx / np.where(ff > 0, ff, 1.0), np.nan)
    return out


def feedback_step(bias: np.ndarray, tau: Mapping[str, np.ndarray], part: str, lat_deg: np.ndarray, s: FeedbackSettings) -> np.ndarray:
    """The unit step of ``part`` (gain 1) for one variable: ``-part(bias) / tau`` on the levels whose
    ``tau`` is at least ``min_response_days``, 0 elsewhere; the zonal part 0 near the equator."""
    t = np.asarray(tau[part], float)
    ok = np.isfinite(t) & (t >= s.min_response_days * SECONDS_PER_DAY)
    inv = np.where(ok, 1.0 / np.where(ok, t, 1.0), 0.0)
    step = -split_parts(np.asarray(bias, float))[part] * inv[:, None, None]
    if part == "zonal":
        step = step * (np.abs(np.asarray(lat_deg, float)) >= s.min_abs_lat_deg)[None, :, None]
    return step


def misfit(means: Means | None, lat_deg: np.ndarray) -> float:
    """The area-weighted mean squared error of the time-mean u plus v's (m2 s-2), over every level; inf
    for a run that blew up (``None``)."""
    if means is None:
        return float("inf")
    total = 0.0
    for k in WINDS.values():
        run, ana = means[k]
        w = area_weights(lat_deg, run.shape[-1])[None]  # each level's cells, summing to 1
        total += float((w * (run - ana) ** 2).sum() / run.shape[0])
    return total if np.isfinite(total) else float("inf")


def tune(forward: Callable[[Tendency], Means | None], f0: Tendency, lat_deg: np.ndarray, s: FeedbackSettings) -> tuple[Tendency, dict[str, Any]]:
    """Run the feedback: the uncorrected and ``F0``'s runs give the response times, then each iteration
    steps each part by a backtracking line search. Returns the tuned tendency and the record."""
    zero = {k: np.zeros_like(v) for k, v in f0.items()}
    x_c, x_0 = forward(zero), forward(f0)
    if x_c is None or x_0 is None:
        raise InputError("feedback: the uncorrected or the mean's run of the training period blew up; nothing to tune from")
    tau = {k: response_times(x_0[WINDS[k]][0] - x_c[WINDS[k]][0], f0[k], lat_deg) for k in f0}
    f, x, m = dict(f0), x_0, misfit(x_0, lat_deg)
    runs = 2
    history: list[dict[str, Any]] = []
    log.info("feedback: misfit uncorrected %.4f, mean %.4f m2/s2", misfit(x_c, lat_deg), m)
    for it in range(s.iterations):
        for part in s.parts:
            step = {k: feedback_step(x[WINDS[k]][0] - x[WINDS[k]][1], tau[k], part, lat_deg, s) for k in f}
            g = s.gain
            for _ in range(s.max_halvings + 1):
                trial = {k: f[k] + g * step[k] for k in f}
                xt = forward(trial)
                runs += 1
                mt = misfit(xt, lat_deg)
                accepted = mt < m
                history.append({"iteration": it + 1, "part": part, "gain": g, "misfit": mt if np.isfinite(mt) else None, "accepted": bool(accepted)})
                log.info("iteration %d, %s part, gain %g: misfit %.4f (%s)", it + 1, part, g, mt, "accepted" if accepted else "rejected")
                if accepted:
                    f, x, m = trial, xt, mt
                    break
                g /= 2.0
    record = {
        "misfit_uncorrected": misfit(x_c, lat_deg),
        "misfit_mean": misfit(x_0, lat_deg),
        "misfit_final": m,
        "rmse_final_ms": {k: weighted_rmse(*x[k], lat_deg) for k in WINDS.values()},
        "rmse_mean_ms": {k: weighted_rmse(*x_0[k], lat_deg) for k in WINDS.values()},
        "response_days": {k: {p: (np.asarray(tau[k][p]) / SECONDS_PER_DAY).round(4).tolist() for p in PARTS} for k in tau},
        "history": history,
        "runs": runs,
    }
    return f, record


class TrainingPeriodRun:
    """The forward model: one free run of the stand-in corrected by a constant tendency, from the analysis
    at the first training block's start to the last block's end; the time means of u, v and the
    analysis' over the scored times (in the training blocks, ``skip_days`` after the start)."""

    def __init__(self, gcm: Any, forcing: xr.Dataset, blocks: Sequence[tuple[np.datetime64, np.datetime64]], s: FeedbackSettings, *,
                 max_wind_ms: float, corrector: Any = None) -> None:
        """``corrector``: an ml corrector about the mean (``set_mean``, called with each trial
        tendency), or None: the trial tendency applied as it is."""
        from nudgeml.simulate import state_at

        if not blocks:
            raise InputError("feedback: the store records no training block")
        self.gcm, self.max_wind, self.corrector = gcm, max_wind_ms, corrector
        self.start = np.datetime64(blocks[0][0], "s")
        end = np.datetime64(blocks[-1][1], "s")
        self.n_windows = int((end - self.start) // WINDOW)
        first = self.start + np.timedelta64(int(round(s.skip_days * SECONDS_PER_DAY)), "s")
        ends = self.start + WINDOW * np.arange(1, self.n_windows + 1)  # the state after each window
        self.scored = np.array([t >= first and any(np.datetime64(a, "s") <= t <= np.datetime64(b, "s") for a, b in blocks) for t in ends])
        if not self.scored.any():
            raise ConfigError(f"config key 'feedback.skip_days' ({s.skip_days:g}) leaves no training time to score between {self.start} and {end}")
        times = ends[self.scored].astype("datetime64[ns]")
        sel = forcing.sel(time=times)
        self.analysis = {k: sel[k].mean("time").values.astype(np.float64) for k in WINDS.values()}
        self.initial = state_at(forcing, self.start)
        self.runs = 0

    def __call__(self, tendency: Tendency) -> Means | None:
        from nudgeml.coupled import Correction

        mean = tuple(np.asarray(tendency[k], np.float32) for k in WINDS)  # as the mean file holds it
        constant = Correction(*mean).window_kwargs()
        if self.corrector is not None:
            self.corrector.set_mean(mean)
        self.gcm.start_at(self.initial, self.start)
        self.runs += 1
        sums = {k: 0.0 for k in WINDS.values()}
        state = self.gcm.current_state()
        for i in range(self.n_windows):
            self.gcm.run_window(**(constant if self.corrector is None else self.corrector(self.gcm.time, state).window_kwargs()))
            state = self.gcm.current_state()
            if not state.is_finite() or float(np.nanmax(np.abs(state.u))) > self.max_wind:
                log.info("feedback run blew up at %s", self.gcm.time)
                return None
            if self.scored[i]:
                for k in sums:
                    sums[k] = sums[k] + getattr(state, k).astype(np.float64)
        n = int(self.scored.sum())
        return {k: (sums[k] / n, self.analysis[k]) for k in sums}


def method_corrector(cfg: Mapping[str, Any], s: FeedbackSettings, *, grid: Any, gcm: Any, mean_file: str | Path, model_dir: str | Path | None,
                     nudged_histhf: str | Path | None, training: Sequence[tuple[np.datetime64, np.datetime64]]) -> Any:
    """The ml corrector of ``feedback.run`` (made as its free run makes it, from ``mean_file``), or None
    without one."""
    from nudgeml.coupled import MLCorrector, make_corrector
    from nudgeml.extract import ColumnSpec

    if s.run is None:
        return None
    if model_dir is None:
        raise ConfigError(f"config key 'feedback.run' ({s.run!r}): the feedback job needs that run's model")
    spec = cfg["free_runs"]["runs"][s.run]
    columns = ColumnSpec.from_config(cfg["columns"]) if "columns" in cfg else ColumnSpec()
    corrector = make_corrector(spec, columns=columns, grid=grid, mean_file=mean_file, model_dir=model_dir, nudged_histhf=nudged_histhf, training=training, gcm=gcm)
    if not isinstance(corrector, MLCorrector) or tuple(corrector.variables) != tuple(WINDS):
        raise InputError(f"{Path(model_dir) / 'model.json'}: the feedback tunes the winds' mean; the model of free run {s.run!r} "
                         f"corrects {list(corrector.variables)}, not {list(WINDS)}")
    return corrector


def tuned_mean(f0_ds: xr.Dataset, tuned: Tendency, s: FeedbackSettings, record: Mapping[str, Any]) -> xr.Dataset:
    """``f0_ds`` with the step added to each wind's annual mean and to every month of its climatology."""
    out = f0_ds.copy(deep=True)
    for k, f in tuned.items():
        d = (f - f0_ds[f"{k}_mean"].values.astype(np.float64)).astype(np.float32)
        out[f"{k}_mean"] = f0_ds[f"{k}_mean"] + d
        out[f"{k}_monthly"] = f0_ds[f"{k}_monthly"] + d[None]
    out.attrs["feedback"] = json.dumps({"settings": asdict(s), "misfit_mean": record["misfit_mean"], "misfit_final": record["misfit_final"]})
    return out


def run_feedback(cfg: Mapping[str, Any], grid_path: str | Path, forcing_paths: Sequence[str | Path], *, mean_file: str | Path,
                 training: Sequence[tuple[np.datetime64, np.datetime64]], out_nc: str | Path, out_json: str | Path,
                 model_dir: str | Path | None = None, nudged_histhf: str | Path | None = None) -> dict[str, Any]:
    """Tune the mean of ``mean_file`` on free runs of the training blocks; write ``out_nc`` (a mean
    tendency file) and ``out_json`` (the record), each atomically. With ``feedback.run`` the runs apply
    that free run's model (``model_dir``; ``nudged_histhf`` for its mean residual) about each trial mean."""
    from nudgeml.grid import read_model_grid
    from nudgeml.mean_tendency import read_mean_tendency, write_mean_tendency
    from nudgeml.regrid import open_forcing
    from nudgeml.simulate import check_same_grid, model_gcm, select_times

    s = FeedbackSettings.from_config(cfg.get("feedback", {}))
    t_start = time.perf_counter()
    grid = read_model_grid(grid_path)
    f0_ds = read_mean_tendency(mean_file)
    if f0_ds["du_mean"].shape != grid.shape:
        raise InputError(f"{mean_file}: mean tendency is {f0_ds['du_mean'].shape}, the model grid is {grid.shape}")
    blocks = [(np.datetime64(a, "s"), np.datetime64(b, "s")) for a, b in training]
    if not blocks:
        raise InputError("feedback: the store records no training block")
    gcm = model_gcm(cfg, blocks[0][0])
    check_same_grid(gcm.grid, grid, grid_path)
    forcing = open_forcing(forcing_paths)
    # every analysis the runs start from and are scored against, or an error naming the file
    select_times(forcing, np.arange(blocks[0][0], blocks[-1][1] + WINDOW, WINDOW), forcing_paths[0])
    corrector = method_corrector(cfg, s, grid=grid, gcm=gcm, mean_file=mean_file, model_dir=model_dir, nudged_histhf=nudged_histhf, training=blocks)
    forward = TrainingPeriodRun(gcm, forcing, blocks, s, max_wind_ms=float(cfg["free_runs"]["max_wind_ms"]), corrector=corrector)
    f0 = {k: f0_ds[f"{k}_mean"].values.astype(np.float64) for k in WINDS}
    log.info("feedback: %d windows from %s, %d scored; settings %s", forward.n_windows, forward.start, int(forward.scored.sum()), asdict(s))
    tuned, record = tune(forward, f0, grid.lat_deg, s)
    if corrector is not None:
        record["method"] = {"run": s.run, "columns": corrector.counts.columns, "fallback_columns": corrector.counts.fallback,
                            "clipped_values": corrector.counts.clipped, **({"mean_residual": corrector.residual_counts} if corrector.residual_counts else {})}
    record.update(settings=asdict(s), start=str(forward.start), windows=forward.n_windows, scored_windows=int(forward.scored.sum()),
                  levels_pa=np.asarray(grid.presnivs_pa, float).tolist(), wall_s=time.perf_counter() - t_start)
    write_mean_tendency(tuned_mean(f0_ds, tuned, s, record), out_nc)
    write_text_atomic(out_json, json.dumps(record, indent=1) + "\n")
    log.info("feedback: misfit %.4f -> %.4f m2/s2 in %d runs (%.0f s)", record["misfit_mean"], record["misfit_final"], record["runs"], record["wall_s"])
    return record

"""The runners of the GCM backends (:mod:`nudgeml.gcm.registry`): one guided and one free runner each.

Every runner takes ``(cfg, inputs, outputs)`` (the free ones also the run name): ``cfg`` the
configuration keys its job reads (the rule's params), ``inputs``/``outputs`` the rule's named files.
Heavy imports (JAX, xarray) happen inside the runner, in the job.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nudgeml import lmdze_build  # light (standard library only): where LMDZE's programs are
from nudgeml.errors import ConfigError, InputError, RunFailed

log = logging.getLogger(__name__)

Files = Mapping[str, Any]


# ------------------------------------------------------------------------------------------------
# standin: the jcm GCM in this process (nudgeml.nudged, nudgeml.coupled, unchanged)
# ------------------------------------------------------------------------------------------------


def standin_guided(cfg: Mapping[str, Any], inputs: Files, outputs: Files) -> None:
    from nudgeml.nudged import run_nudged

    run_nudged(cfg, inputs["grid"], list(inputs["forcing"]), outputs["histhf"], outputs["guide"])


def standin_precompile(cfg: Mapping[str, Any], inputs: Files, outputs: Files) -> None:
    """The stand-in's windows compiled into the persistent cache; what took how long as a JSON record."""
    from nudgeml.atomic import write_text_atomic
    from nudgeml.nudged import precompile

    write_text_atomic(outputs["record"], json.dumps(precompile(cfg, inputs["grid"]), indent=2) + "\n")


def standin_free(cfg: Mapping[str, Any], run: str, inputs: Files, outputs: Files) -> None:
    from nudgeml.coupled import run_free
    from nudgeml.mean_tendency import training_blocks

    run_free(
        cfg, run, inputs["grid"], list(inputs["forcing"]), outputs["histhf"], outputs["status"],
        mean_file=inputs.get("mean"),
        model_dir=Path(inputs["manifest"]).parent if "manifest" in inputs else None,
        nudged_histhf=inputs.get("nudged"),
        training=training_blocks(inputs["store"]) if "store" in inputs else None,
        gains_file=inputs.get("gains"),
    )


# ------------------------------------------------------------------------------------------------
# lmdz: LMDZ6's gcm.e, run by the job kit's script inside this SLURM job
# ------------------------------------------------------------------------------------------------


def _has_compiled_trees(model_dir: Path) -> bool:
    """Whether the exported model in ``model_dir`` carries a compiled tree library (``tree_backend``)."""
    from nudgeml.manifest import read_manifest

    return (model_dir / "model.json").is_file() and read_manifest(model_dir).tree_backend is not None


def standin_forecast(cfg: Mapping[str, Any], inputs: Files, outputs: Files) -> None:
    """Forecast-error targets on the stand-in, in the job's process (:mod:`nudgeml.forecast`)."""
    from nudgeml.forecast import run_forecast_targets

    n = run_forecast_targets(cfg, inputs["grid"], list(inputs["forcing"]), inputs["histhf"], outputs["histhf"], outputs["guide"],
                             outputs["diagnostics"])
    log.info("%d forecast-error samples", n)


def lmdz_forecast(cfg: Mapping[str, Any], inputs: Files, outputs: Files) -> None:
    """Forecast-error targets on LMDZ: the job kit's spin-up run (``lmdz.forecast``), then its forecast
    array's tasks one after the other in this job (``forecast/submit.sh`` runs them side by side), then
    :func:`join_forecasts` into the rule's outputs; ``diagnostics`` holds the samples and the cost."""
    from nudgeml.atomic import write_text_atomic
    from nudgeml.lmdz import forecast_cost, render_jobs

    kit = kit_config(cfg)
    if kit.forecast is None:
        raise ConfigError("config key 'lmdz.forecast' is missing: the forecast-error targets sample its months")
    kit_dir = Path(cfg["kit_dir"])
    paths = render_jobs(kit, kit_dir, runs=("forecast",))
    run_kit_jobs(sorted(p for p in paths if p.parent.name == "spinup" and p.suffix == ".slurm"), kit_dir / "spinup")
    array = kit_dir / "forecast" / "forecast.slurm"
    cost = forecast_cost(kit)
    for task in range(1, cost["forecasts"]["array_tasks"] + 1):
        run_kit_jobs([array], kit_dir / "forecast", env={"SLURM_ARRAY_TASK_ID": str(task)}, name=f"forecast_task{task:03d}")
    tags = join_forecasts(os.path.expandvars(kit.run_root), kit.forecast.lead_hours, outputs["histhf"], outputs["guide"])
    write_text_atomic(outputs["diagnostics"], json.dumps({
        "backend": "lmdz", "samples": len(tags), "first": tags[0], "last": tags[-1], "lead_hours": kit.forecast.lead_hours,
        "spinup_tau_hours": kit.forecast.spinup_tau_hours, "cost": cost}, indent=2) + "\n")


def kit_config(cfg: Mapping[str, Any], run: str | None = None, spec: Mapping[str, Any] | None = None,
               *, mean_file: str | None = None, model_dir: str | None = None):
    """The job kit's configuration of one run: the ``lmdz`` block with, for a free run, the workflow's
    free run (its correction, the mean tendency and the model this workflow made) as its only run."""
    from nudgeml.lmdz import LmdzJobConfig

    block = json.loads(json.dumps(cfg["lmdz"]))  # a deep copy of plain data
    block["free"]["start_from"] = "guided"  # free runs start from the guided run's state at free_runs.start
    if run is not None:
        assert spec is not None
        entry: dict[str, Any] = {"correction": spec["correction"]}
        if spec["correction"] == "ml":
            entry["model"] = str(Path(model_dir).resolve()) if model_dir else ""
            if spec.get("mean_residual"):
                entry["mean_residual"] = True
            if spec.get("eddy_only"):
                entry["eddy_only"] = True
        block["free"]["runs"] = {run: entry}
        if mean_file:  # the job runs in the LMDZ run directory: absolute paths
            block.setdefault("correction", {})["mean_file"] = str(Path(mean_file).resolve())
        if spec.get("backend"):
            block.setdefault("correction", {})["backend"] = spec["backend"]
        if spec["correction"] == "ml" and model_dir and _has_compiled_trees(Path(model_dir)):
            # as the stand-in's free run does: an xgboost export's compiled trees, not its walker
            block.setdefault("correction", {})["backend"] = "trees"
    return LmdzJobConfig.from_dict(block, tau_hours=cfg["tau_hours"], forecast=cfg.get("forecast"))


def run_kit_jobs(job_scripts: Sequence[Path], log_dir: Path, *, env: Mapping[str, str] | None = None, name: str | None = None) -> None:
    """Run a rendered run's job scripts one after the other in this (SLURM) job.

    A kit script is a batch script: its ``#SBATCH`` lines are comments to bash, its ``srun`` starts
    LMDZ's MPI tasks in the allocation Snakemake's SLURM executor made for this rule. A month already
    done (``output/<YYYYMM>/.done``) is skipped, so rerunning the rule after a time-out resumes.
    """
    for job in job_scripts:
        out = log_dir / f"{name or job.stem}.out"
        t0 = time.monotonic()
        log.info("running %s (log %s)", job, out)
        with out.open("w") as fh:
            res = subprocess.run(["bash", str(job)], stdout=fh, stderr=subprocess.STDOUT, check=False,
                                 env={**os.environ, **env} if env else None)
        if res.returncode != 0:
            tail = out.read_text().strip().splitlines()[-5:]
            raise RunFailed(f"LMDZ job {job} failed (exit {res.returncode}), see {out}: " + " | ".join(tail))
        log.info("%s done in %.0f s", job.name, time.monotonic() - t0)


def month_outputs(run_dir: Path, tags: Sequence[str], name: str) -> list[Path]:
    """``<run_dir>/output/<YYYYMM>/<name>`` of every month, each required."""
    files = [run_dir / "output" / tag / name for tag in tags]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise InputError(f"LMDZ wrote no {name} for {len(missing)} month(s): {', '.join(missing[:3])}"
                         " (check lmdz.outputs and the history output configured in the reference output.def)")
    return files


def join_months(files: Sequence[Path], out: str | os.PathLike[str], times_from: Sequence[Path] | None = None) -> None:
    """The months' files as one, in time order, written atomically. xarray, not ``cdo mergetime``:
    cdo merges a guide file's identical u and v grids (``LATU``/``LATV``) into one, and the guide
    reader needs both. Variables without the time axis (``cu``, ``cv``) come from the first month.

    ``times_from``: the same months' histories, whose times a file without time values takes. LMDZ's
    ``guide_out`` defines ``TIME`` as a dimension only (no variable): its records pair with the
    history's one for one (``iguide_sav`` and the history's output frequency are the kit's 6 h), which
    is checked month by month, so that the joined guide file has dates (the mean tendency selects the
    training blocks by date).
    """
    import numpy as np
    import xarray as xr

    from nudgeml.atomic import atomic_path

    with xr.open_dataset(files[0]) as first:
        tdim = next((d for d in ("time_counter", "TIME", "time") if d in first.dims), None)
    if tdim is None:
        raise InputError(f"{files[0]}: no time axis (time_counter or TIME)")
    stamps: dict[str, Any] = {}
    if times_from is not None:
        for f, h in zip(files, times_from, strict=True):
            with xr.open_dataset(f, decode_times=False) as g, xr.open_dataset(h) as hist:
                if tdim in g.variables:
                    continue
                htimes = hist["time_counter"].values if "time_counter" in hist.variables else None
                if htimes is None:
                    raise InputError(f"{h}: history has no time_counter to date {f} by")
                if g.sizes[tdim] != htimes.size:
                    raise InputError(f"{f}: {g.sizes[tdim]} records without time values, the month's history {h} has {htimes.size}: "
                                     "they cannot be paired (iguide_sav and the history's output frequency must both be 6 h)")
                stamps[str(Path(f).resolve())] = htimes

    def dated(ds: xr.Dataset) -> xr.Dataset:
        src = str(Path(ds.encoding.get("source", "")).resolve())
        return ds.assign_coords({tdim: stamps[src]}) if src in stamps else ds

    with xr.open_mfdataset([str(f) for f in files], combine="nested", concat_dim=tdim, data_vars="minimal",
                           coords="minimal", compat="override", join="exact", preprocess=dated if stamps else None) as ds:
        if not np.issubdtype(ds[tdim].dtype, np.datetime64):
            raise InputError(f"{files[0]}: its {tdim} has no dates ({ds[tdim].dtype}); the workflow pairs runs and truth by date")
        times = ds[tdim].values
        if times.size > 1 and not np.all(np.diff(times) > np.timedelta64(0)):
            raise InputError(f"the months' times are not increasing ({files[0].parent.parent}): a month ran twice or out of order")
        with atomic_path(out) as tmp:
            ds.to_netcdf(tmp)


def join_forecasts(run_root: str | os.PathLike[str], lead_hours: float, out_histhf: str | os.PathLike[str],
                   out_guide: str | os.PathLike[str]) -> list[str]:
    """The LMDZ forecast kit's samples (``lmdz.forecast``) as one history and one guide file for extract.

    For each sample day done (``<run_root>/forecast/output/<YYYYMMDD>/.done``), at ``t`` its 00 UTC:
    the input is the spin-up run's state at ``t`` (the last record of the previous day's history,
    ``<run_root>/spinup/output/<YYYYMMDD>/histhf.nc``); the target is ``(ua - u) / lead`` from the
    forecast's ``guide_ins.nc`` record at ``t + lead`` (analysis minus forecast, on the model's levels),
    written as ``ucov``/``vcov`` (covariant wind per day, as ``guide_out`` writes increments) at ``t``,
    so that :func:`nudgeml.conventions.read_guide` returns it in m s-2. The guide records are dated by the
    forecast's own history, record for record, after :func:`check_pairing`. Returns the sample tags.
    """
    import numpy as np
    import xarray as xr

    from nudgeml.atomic import atomic_path

    root = Path(run_root)
    done = sorted(p.parent.name for p in (root / "forecast" / "output").glob("*/.done"))
    if not done:
        raise InputError(f"{root / 'forecast' / 'output'}: no forecast sample done (run forecast/submit.sh of the job kit first)")
    lead_s = float(lead_hours) * 3600.0
    states, targets = [], []
    for tag in done:
        t = np.datetime64(f"{tag[:4]}-{tag[4:6]}-{tag[6:]}T00:00", "ns")
        before = str(np.datetime64(t, "D") - np.timedelta64(1, "D")).replace("-", "")
        spin = root / "spinup" / "output" / before / "histhf.nc"
        if not spin.is_file():
            raise InputError(f"{spin}: the spin-up run's history of the day before sample {tag} is missing")
        with xr.open_dataset(spin) as h:
            at = np.flatnonzero(h["time_counter"].values == t)
            if at.size != 1:
                raise InputError(f"{spin}: no record at {str(t)[:16]} (the state sample {tag} starts from); its times: "
                                 f"{[str(x)[:16] for x in h['time_counter'].values]}")
            states.append(h.isel(time_counter=at).load())
        fdir = root / "forecast" / "output" / tag
        hist, guide = fdir / "histhf.nc", fdir / "guide_ins.nc"
        for f in (hist, guide):
            if not f.is_file():
                raise InputError(f"{f}: missing for forecast sample {tag} (check lmdz.outputs: histhf.nc dates the guide records)")
        check_pairing(hist, guide)
        with xr.open_dataset(hist) as h, xr.open_dataset(guide, decode_times=False) as g:
            times = h["time_counter"].values
            if g.sizes["TIME"] != times.size:
                raise InputError(f"{guide}: {g.sizes['TIME']} records, its history {hist} has {times.size}: they cannot be paired "
                                 "(the forecast's iguide_sav and the history's output frequency must be the same)")
            k = np.flatnonzero(times == t + np.timedelta64(int(lead_s), "s"))
            if k.size != 1:
                raise InputError(f"{hist}: no record at {tag} + {lead_hours:g} h; its times: {[str(x)[:16] for x in times]}")
            r = g.isel(TIME=k).load()
        for name in ("u", "ua", "v", "va", "cu", "cv"):
            if name not in r:
                raise InputError(f"{guide}: no {name!r} (guide_out writes the model and analysis winds with guide_sav=y)")
        # (analysis - forecast) / lead in m s-2, as guide_out's covariant increment per day
        ucov = ((r["ua"] - r["u"]) * r["cu"] * (86400.0 / lead_s)).astype(np.float32)
        vcov = ((r["va"] - r["v"]) * r["cv"] * (86400.0 / lead_s)).astype(np.float32)
        targets.append(xr.Dataset({"ucov": ucov, "vcov": vcov, "cu": r["cu"], "cv": r["cv"]}).assign_coords(TIME=[t]))
    hist_out = xr.concat(states, "time_counter")
    guide_out = xr.concat(targets, "TIME", data_vars=["ucov", "vcov"], coords="minimal", compat="override")
    guide_out.attrs.update(target="forecast error: (analysis - forecast) / lead at t + lead, dated t", lead_hours=float(lead_hours))
    for ds, out in ((hist_out, out_histhf), (guide_out, out_guide)):
        with atomic_path(out) as tmp:
            ds.to_netcdf(tmp)
    log.info("joined %d forecast samples (%s to %s), lead %g h", len(done), done[0], done[-1], lead_hours)
    return done


def lmdz_mean_file(mean: str | os.PathLike[str], iim: int, jjm: int, out: Path, *,
                   model_mean: Sequence[Any] | None = None, gains: Any = None) -> None:
    """The workflow's mean tendency (``mean_tendency.nc``, canonical ``(lev, lat, lon)``) as the file
    LMDZ's physics routine reads (LMDZ6's ``nudgeml_physiq_init``, LMDZE's physics hook):
    ``du_mean``/``dv_mean`` ``(presnivs, points_physiques)`` on the ``iim`` x ``jjm`` grid's columns.

    A mean-residual run adds the model's own mean over the nudged run's training states,
    ``du_model_mean``/``dv_model_mean`` (``model_mean``: canonical du, dv fields), and a ``top_hpa`` / ``bottom_hpa`` run its
    per-level gains ``gain_du``/``gain_dv`` ``(presnivs)`` (``gains``: ``(2, n_levels)``, :func:`routine_gains`)."""
    import numpy as np
    import xarray as xr

    from nudgeml.atomic import atomic_path
    from nudgeml.lmdz_grid import mean_on_physics_grid
    from nudgeml.mean_tendency import read_mean_tendency

    mean_ds = read_mean_tendency(mean)
    try:
        ds = mean_on_physics_grid(mean_ds, iim, jjm)
        if model_mean is not None:
            dims = mean_ds["du_mean"].dims
            fields = xr.Dataset({f"{k}_model_mean": (dims, np.asarray(f, np.float64)) for k, f in zip(("du", "dv"), model_mean)},
                                coords={"lev": mean_ds["lev"]} if "lev" in mean_ds.coords else None)
            ds = ds.merge(mean_on_physics_grid(fields.transpose(*dims), iim, jjm, names=("du_model_mean", "dv_model_mean")))
    except InputError as exc:
        raise InputError(f"{mean}: {exc}") from None
    if gains is not None:
        gains = np.asarray(gains, np.float64)
        for i, k in enumerate(("du", "dv")):
            ds[f"gain_{k}"] = ("presnivs", gains[i], {"units": "1", "long_name": f"gain of {k} about the model's mean, per level (0 outside top_hpa..bottom_hpa)"})
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        ds.to_netcdf(tmp)


def _run_lmdz(kit, kit_dir: Path, run: str) -> tuple[Path, list[str]]:
    from nudgeml.lmdz import month_segments, render_jobs

    paths = render_jobs(kit, kit_dir, runs=(run,))
    jobs = sorted(p for p in paths if p.suffix == ".slurm")
    run_kit_jobs(jobs, kit_dir / run)
    period = kit.guided if run == "guided" else kit.free
    tags = [m.tag for m in month_segments(period, kit.calendar)]
    return Path(os.path.expandvars(kit.run_root)) / run, tags


def lmdz_guided(cfg: Mapping[str, Any], inputs: Files, outputs: Files) -> None:
    """The guided run: the kit's ``guided`` run, then its months' ``histhf.nc`` and ``guide_ins.nc``
    (``guide_sav``) joined into the rule's outputs, which extract reads like the stand-in's."""
    kit = kit_config(cfg)
    run_dir, tags = _run_lmdz(kit, Path(cfg["kit_dir"]), "guided")
    hist = month_outputs(run_dir, tags, "histhf.nc")
    guide = month_outputs(run_dir, tags, "guide_ins.nc")
    check_pairing(hist[0], guide[0])  # before writing anything: the pairing is the join's assumption
    join_months(hist, outputs["histhf"])
    join_months(guide, outputs["guide"], times_from=hist)


def check_pairing(hist_file: Path, guide_file: Path, records: int = 8) -> dict[int, float]:
    """Check that a month's ``guide_ins`` records pair with its ``histhf`` records one for one.

    The join dates LMDZ's guide records (no ``TIME`` values) by the history's, record for record; if
    the two outputs were written at instants 6 h apart (one at the start of each 6-h window, the
    other at its end), extract would pair each nudging increment with the wrong state. Both files
    hold the model's zonal wind (``u`` in ``guide_ins``, ``vitu`` in ``histhf``): at the right pairing
    they are one time step apart at most, a 6-h shift changes them by the weather's 6-h evolution. The
    RMS difference over the first ``records`` records at a mid level (pole rows left out: LMDZ writes
    no u there) is computed for the pairing and the two shifts by one record; a shift that fits better
    than half the pairing's is an error naming both files. Returns ``{shift: rms}`` (empty: no ``u``).
    """
    import numpy as np

    from nudgeml.conventions import read_guide, read_histhf

    g = read_guide(guide_file)
    if "u" not in g:
        return {}
    h = read_histhf(hist_file, {"u": "vitu"})
    if h["u"].shape[1:] != g["u"].shape[1:]:
        raise InputError(f"{guide_file}: u is {g['u'].shape[1:]} (lev, lat, lon), {hist_file} vitu is {h['u'].shape[1:]}: not the same grid")
    n = min(records, h.sizes["time"], g.sizes["time"])
    if n < 3:
        return {}
    k = h.sizes["lev"] // 2
    hu = h["u"].isel(time=slice(0, n), lev=k).values[:, 1:-1].astype(np.float64)
    gu = g["u"].isel(time=slice(0, n), lev=k).values[:, 1:-1].astype(np.float64)
    # shift s: guide record t against history record t + s
    rms = {0: float(np.sqrt(np.mean((gu - hu) ** 2))),
           1: float(np.sqrt(np.mean((gu[:-1] - hu[1:]) ** 2))),
           -1: float(np.sqrt(np.mean((gu[1:] - hu[:-1]) ** 2)))}
    log.info("guide_ins/histhf pairing, RMS of u - vitu (m/s), guide record t vs history record t + shift: %s", rms)
    best = min((1, -1), key=lambda sh: rms[sh])
    if rms[best] < 0.5 * rms[0]:
        raise InputError(f"{guide_file}: its record t matches {hist_file}'s record t{best:+d} (6 h apart) "
                         f"(RMS u - vitu {rms[best]:.3g} m/s there, {rms[0]:.3g} at t): guide_sav and the histhf output "
                         "are written at different instants; the join would pair each increment with the wrong state")
    return rms


def lmdz_residual(cfg: Mapping[str, Any], spec: Mapping[str, Any], inputs: Files) -> tuple[Any, ...]:
    """A mean-residual run's model mean over the guided run's training states (canonical du, dv, float64;
    backends lmdz and lmdze), as the stand-in's free run computes it
    (:meth:`nudgeml.coupled.MLCorrector.add_mean_residual`: states on the guard's fallback left out). No
    gains: a calibration's members run the stand-in (:func:`nudgeml.gcm.registry.check_backend` refuses
    ``calibrated`` here, and ``scale`` and ``filter_truncation``, which the routine does not apply)."""
    from nudgeml.coupled import MLCorrector, make_corrector
    from nudgeml.extract import ColumnSpec
    from nudgeml.grid import read_model_grid
    from nudgeml.mean_tendency import training_blocks

    grid = read_model_grid(inputs["grid"])
    columns = ColumnSpec.from_config(cfg["columns"]) if "columns" in cfg else ColumnSpec()
    # the model's arithmetic is the same in every backend: its mean is taken with the TorchScript file
    corrector = make_corrector({**spec, "backend": "torchscript"}, columns=columns, grid=grid, mean_file=inputs["mean"],
                               model_dir=Path(inputs["manifest"]).parent, nudged_histhf=inputs["nudged"],
                               training=training_blocks(inputs["store"]))
    assert isinstance(corrector, MLCorrector) and corrector.model_mean is not None
    if corrector.variables != ("du", "dv"):
        raise ConfigError(f"LMDZ's physics routine corrects du, dv; the model corrects {list(corrector.variables)}")
    return corrector.model_mean


def routine_gains(spec: Mapping[str, Any], grid_file: str | os.PathLike[str] | None) -> Any:
    """The per-level gains ``(2, n_levels)`` of du, dv that LMDZ's routine applies about the model's mean
    for a ``top_hpa`` / ``bottom_hpa`` / ``model_targets`` run (1 at top_hpa <= p <= bottom_hpa on the
    targets named, 0 elsewhere: :func:`nudgeml.coupled.model_levels`); None for any other run."""
    if not any(k in spec for k in ("top_hpa", "bottom_hpa", "model_targets")):
        return None
    if grid_file is None:
        raise ConfigError("top_hpa / bottom_hpa / model_targets need the model grid (its levels' nominal pressures): the free run's input 'grid'")
    import numpy as np

    from nudgeml.coupled import model_levels
    from nudgeml.grid import read_model_grid

    on = model_levels(read_model_grid(grid_file).presnivs_pa, spec.get("top_hpa"), spec.get("bottom_hpa")).astype(np.float64)
    targets = spec.get("model_targets", ("du", "dv"))
    return np.stack([on * (k in targets) for k in ("du", "dv")])


def lmdz_free(cfg: Mapping[str, Any], run: str, inputs: Files, outputs: Files) -> None:
    """One free run: control (no correction), mean tendency (the kit's ``nudgeml_mean.nc``) or ML
    (the exported model through the bridge's ``nudgeml.def``); its months' histories joined."""
    from nudgeml.atomic import write_text_atomic

    spec = cfg["free_runs"]["runs"][run]
    model_dir = str(Path(inputs["manifest"]).parent) if "manifest" in inputs else None
    mean_file = None
    if inputs.get("mean"):  # LMDZ reads it in its physics columns, not the workflow's (lev, lat, lon)
        mean_file = Path(cfg["kit_dir"]) / run / "nudgeml_mean.nc"
        from nudgeml.naming import lmdz_grid_size

        size = lmdz_grid_size(cfg["lmdz"])
        model_mean = lmdz_residual(cfg, spec, inputs) if spec.get("mean_residual") else None
        lmdz_mean_file(inputs["mean"], size["iim"], size["jjm"], mean_file, model_mean=model_mean,
                       gains=routine_gains(spec, inputs.get("grid")))
    kit = kit_config(cfg, run, spec, mean_file=str(mean_file) if mean_file else None, model_dir=model_dir)
    t0 = time.monotonic()
    run_dir, tags = _run_lmdz(kit, Path(cfg["kit_dir"]), run)
    join_months(month_outputs(run_dir, tags, "histhf.nc"), outputs["histhf"])
    status = {"run": run, "name": run, "member": 0, "correction": spec["correction"], "status": "ok",
              "backend": "lmdz", "months": len(tags), "wall_s": time.monotonic() - t0}
    write_text_atomic(outputs["status"], json.dumps(status, indent=1) + "\n")


# ------------------------------------------------------------------------------------------------
# lmdze: LMDZE built by scripts/build_lmdze.sh
# ------------------------------------------------------------------------------------------------


def _lmdze_built() -> None:
    gcm = lmdze_build.executable()
    if not gcm.is_file():
        raise RunFailed(f"backend 'lmdze': the LMDZE build is missing: no {gcm} (scripts/build_lmdze.sh builds it there; docs/lmdze.md)")


def lmdze_settings(cfg: Mapping[str, Any]):
    """The guided run's :class:`~nudgeml.lmdze_run.LmdzeSettings`: period (both ends are analyses, so
    ``days`` whole days), the ``lmdze`` block's grid and steps, and the nudging: u and v at
    ``nudging.tau_hours``, T at ``nudging.t.tau_hours`` and q at ``nudging.q.tau_hours`` when set (q
    through relative humidity, ``hur.nc``, as LMDZE's guide reads it)."""
    import numpy as np

    from nudgeml.errors import ConfigError
    from nudgeml.lmdze_run import LmdzeSettings

    start, end = (np.datetime64(cfg["period"][k], "s") for k in ("start", "end"))
    days = (end - start) / np.timedelta64(1, "D")
    if days < 1 or days != int(days):
        raise ConfigError(f"config key 'period' ({start} - {end}) must span whole days (at least one) with backend 'lmdze'")
    nudging = cfg["nudging"]
    t, q = nudging.get("t"), nudging.get("q")
    block = dict(cfg.get("lmdze") or {})
    return LmdzeSettings(start=str(start), days=int(days), guide=("u", "v") + (("t",) if t else ()) + (("q",) if q else ()),
                         tau_hours=float(nudging["tau_hours"]), tau_t_hours=float(t["tau_hours"]) if t else None,
                         tau_q_hours=float(q["tau_hours"]) if q else None, **block)


def lmdze_guided(cfg: Mapping[str, Any], inputs: Files, outputs: Files) -> None:
    """The guided run: LMDZE's start and boundary files and its nudging files from the ERA5 files,
    ``ce0l`` then ``gcm`` in ``cfg["run_dir"]`` (:func:`nudgeml.lmdze_run.run_guided`), then the run's
    history and recorded increments as ``histhf.nc`` / ``guide_ins.nc`` (:mod:`nudgeml.lmdze_history`)."""
    from nudgeml.lmdze_history import write_guided_outputs
    from nudgeml.lmdze_run import run_guided

    _lmdze_built()
    settings = lmdze_settings(cfg)
    res = run_guided(cfg["run_dir"], settings, ce0l=lmdze_build.executable("ce0l"), gcm=lmdze_build.executable("gcm"),
                     pressure_levels=list(inputs["pressure_levels"]), single_levels=list(inputs["single_levels"]),
                     invariant=inputs["invariant"])
    log.info("LMDZE %dx%dx%d, %d days guided: ce0l %.1f s, gcm %.1f s", settings.iim, settings.jjm, settings.llm,
             settings.days, res.ce0l_s, res.gcm_s)
    write_guided_outputs(res.run_dir, settings, epoch=settings.start, histhf=outputs["histhf"], guide=outputs["guide"])


def lmdze_free_settings(cfg: Mapping[str, Any]):
    """A free run's :class:`~nudgeml.lmdze_run.LmdzeSettings`: ``free_runs`` start and end (whole days),
    the ``lmdze`` block's grid and steps, nothing nudged."""
    import numpy as np

    from nudgeml.lmdze_run import LmdzeSettings

    start, end = (np.datetime64(cfg["free_runs"][k], "s") for k in ("start", "end"))
    days = (end - start) / np.timedelta64(1, "D")
    if days < 1 or days != int(days):
        raise ConfigError(f"config keys 'free_runs.start', 'free_runs.end' ({start} - {end}) must span whole days "
                          "(at least one) with backend 'lmdze'")
    return LmdzeSettings(start=str(start), days=int(days), **dict(cfg.get("lmdze") or {}))


def lmdze_free(cfg: Mapping[str, Any], run: str, inputs: Files, outputs: Files) -> None:
    """One free LMDZE run from the truth at ``free_runs.start``: control (nothing added), the mean
    tendency, or the exported model through the bridge inside LMDZE's ``physiq`` (refreshed every 6 h,
    the workflow's window, with the guard; the mean tendency is its fallback). The physics hook reads
    the mean tendency on LMDZ's physics columns, as LMDZ6 does. An ML run's first refresh is checked
    against the Python model before anything is written."""
    from nudgeml.atomic import write_text_atomic
    from nudgeml.conventions import read_histhf
    from nudgeml.lmdze_history import write_history
    from nudgeml.lmdze_run import Correction, check_refresh, run_free
    from nudgeml.naming import split_member

    _lmdze_built()
    settings = lmdze_free_settings(cfg)
    name, member = split_member(run)
    spec = cfg["free_runs"]["runs"][name]
    run_dir = Path(cfg["run_dir"])
    mean_file = None
    if inputs.get("mean"):  # the file LMDZ's routine reads, beside the run folder (which the run empties)
        mean_file = run_dir.parent / f"{run}.mean_physics.nc"
        model_mean = lmdz_residual(cfg, spec, inputs) if spec.get("mean_residual") else None
        lmdz_mean_file(inputs["mean"], settings.iim, settings.jjm, mean_file, model_mean=model_mean,
                       gains=routine_gains(spec, inputs.get("grid")))
    correction = Correction(spec["correction"], mean_file=mean_file,
                            model_dir=Path(inputs["manifest"]).parent if "manifest" in inputs else None,
                            dump="refresh_dump.nc" if spec["correction"] == "ml" else None,
                            mean_residual=bool(spec.get("mean_residual")), eddy_only=bool(spec.get("eddy_only")))
    t0 = time.monotonic()
    res = run_free(run_dir, settings, correction, ce0l=lmdze_build.executable("ce0l"), gcm=lmdze_build.executable("gcm"),
                   pressure_levels=list(inputs["pressure_levels"]), single_levels=list(inputs["single_levels"]),
                   invariant=inputs["invariant"], member=member,
                   perturbation_k=float(cfg["free_runs"].get("perturbation_k", 0.0)))
    log.info("LMDZE %dx%dx%d, %d days free (%s): ce0l %.1f s, gcm %.1f s; hook %s", settings.iim, settings.jjm, settings.llm,
             settings.days, spec["correction"], res.ce0l_s, res.gcm_s, res.counts or "off")
    status: dict[str, Any] = {"run": run, "name": name, "member": member, "correction": spec["correction"], "status": "ok",
                              "backend": "lmdze", "gcm_s": res.gcm_s}
    if "hook_steps_s" in res.counts:  # the physics hook's own wall time, its share of gcm's
        status["hook"] = {"init_s": res.counts["hook_init_s"], "steps_s": res.counts["hook_steps_s"],
                          "share": (res.counts["hook_init_s"] + res.counts["hook_steps_s"]) / res.gcm_s if res.gcm_s > 0 else None}
    if spec["correction"] == "ml":  # the hook's counts over the run: one column-call per column and refresh
        c = res.counts
        status["guard"] = {"columns": c["columns"], "fallback_columns": c["fallbacks"], "clipped_values": c["clipped"],
                           "refreshes": c["refreshes"]}
        # the first refresh inside LMDZE against the Python model on the same columns: the Fortran
        # path must be the model the workflow exported, bit for bit, or the run is not what it claims
        check = check_refresh(res.run_dir / correction.dump, correction.model_dir, mean_file)
        status["refresh_check"] = {"columns": check.columns, "fallbacks": check.fallbacks, "max_abs_diff": check.max_abs_diff,
                                   "bitwise": check.bitwise}
        if not check.bitwise:
            raise RunFailed(f"{res.run_dir / correction.dump}: LMDZE's first ML refresh differs from the Python model on the same "
                            f"columns (max |diff| {check.max_abs_diff:.3g} m/s over a step): the bridge does not run the exported model")
    n = write_history(res.run_dir, settings, epoch=settings.start, histhf=outputs["histhf"])
    with read_histhf(outputs["histhf"], {"u": "vitu"}) as h:
        max_abs_u = float(abs(h["u"]).max())
    status.update(n_windows=n, windows_done=n, max_abs_u=max_abs_u, wall_s=time.monotonic() - t0)
    write_text_atomic(outputs["status"], json.dumps(status, indent=1) + "\n")

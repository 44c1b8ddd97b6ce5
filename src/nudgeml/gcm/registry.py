"""The GCM backends (config key ``backend``): which model the ``nudged`` and ``free_run`` jobs run.

One registry, :data:`BACKENDS`. Each backend says how its guided (nudged) run and its free runs are run
(the dotted path of a runner, imported only inside the job: this module is light, the rule files import
it at parse time), which workflow files those jobs need, and how SLURM must launch them. Every backend
writes the same two outputs per run, a history ``histhf.nc`` and, for the guided run, ``guide_ins.nc``,
in LMDZ's conventions (``docs/lmdz-conventions.md``), so the same extract / shard / train / export /
report stages read any backend's runs.

- ``standin``: the jcm stand-in GCM, run inside the job's Python process (``nudgeml.nudged``,
  ``nudgeml.coupled``). Its jobs share a persistent XLA compilation cache, which the ``precompile``
  job fills with the nudged and free windows' programs while the truth runs.
- ``lmdz``: LMDZ6's ``gcm.e`` on Jean Zay. The job renders the job kit's run directory
  (:mod:`nudgeml.lmdz`) and runs its month-by-month script inside the rule's own SLURM job, whose
  ``srun`` launches the MPI tasks (``nudgeml.gcm.runners``); the histories the kit keeps per month
  are then joined into the rule's outputs. Its model grid is LMDZ's physics grid, from the reference
  ``start.nc``/``startphy.nc`` (:mod:`nudgeml.lmdz_grid`). Forecast-error targets run the kit's
  spin-up run and forecast array (``lmdz.forecast``) the same way.
- ``lmdze``: LMDZE (github lguez/LMDZE), built by ``scripts/build_lmdze.sh``. Its guided run reads the
  ERA5 files themselves (``forcing="era5"``): it builds LMDZE's start, boundary and nudging files from
  them (:mod:`nudgeml.lmdze_inputs`, :mod:`nudgeml.lmdze_run`) and writes its history and recorded
  increments in LMDZ's conventions (:mod:`nudgeml.lmdze_history`). Its free runs start from the truth
  (members: a perturbed start) and are corrected inside LMDZE's physics by LMDZ's own routine through
  the bridge (``fortran/lmdze_physiq``); both stop with one line when the build is missing. Its model
  grid is LMDZE's, that of its ``histhf.nc``: the grid job runs ``ce0l`` on the truth at
  ``period.start`` as the guided run does and reads its start files (:func:`nudgeml.lmdz_grid.lmdze_model_grid`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from nudgeml.errors import ConfigError


@dataclass(frozen=True)
class GcmBackend:
    name: str
    description: str
    guided: str  # "module:function" running the guided (nudged) run
    free: str  # "module:function" running one free run
    needs_lmdz_block: bool  # reads the `lmdz:` block (the job kit's settings)
    mpi: bool  # the job launches MPI tasks with srun: SLURM must give it tasks, not threads
    forcing: str  # what the guided run reads: "standin" (forcing/*.nc), "lmdz" (lmdz_forcing) or "era5" (the ERA5 files)
    ensembles: bool  # free-run members > 0 (perturbed initial states) are supported
    iterations: bool  # corrected nudged runs (iterative training) and replay targets are supported
    # "module:function" writing grid/model_grid.nc and its CDO description from (cfg, inputs, nc, cdo):
    # the grid the backend's histories are on, which the truth's regrid, extract, bias_check and the report use
    grid: str = "nudgeml.grid:standin_model_grid"
    # what the grid job reads: "model" (config `model`), "lmdz_reference" (start.nc, startphy.nc) or "lmdze_start"
    # (the ERA5 files at period.start, from which it makes LMDZE's start files)
    grid_from: str = "model"
    # free runs corrected by LMDZ's physics routine (fortran/lmdz/nudgeml_lmdz.F90): one annual mean tendency,
    # du/dv only; the stand-in's corrector does more (monthly means, T/q)
    lmdz_routine: bool = False
    # ML free runs may call the AOTInductor artifact (model.pt2; LMDZ6's kit passes nudgeml_backend=aoti); LMDZE's
    # hook loads the TorchScript model, the one its bit-for-bit check recomputes
    aoti: bool = True
    # ML free runs with the mean residual: the model's mean over the guided run's training states (the stand-in
    # shifts its output; LMDZ's routine takes du_model_mean, dv_model_mean from the kit's mean file)
    mean_residual: bool = False
    # calibrated gains (nudgeml.calibrate) and the mean tuned on free runs (nudgeml.feedback): their runs are free
    # runs of this backend in the job's process
    calibration: bool = False
    # "module:function" writing the forecast-error targets (models.<name>.target: forecast) from (cfg, inputs, outputs);
    # "": the backend does not run them
    forecast: str = ""
    # "module:function" compiling the backend's guided and free windows into a persistent compilation cache from
    # (cfg, inputs, outputs), run by the precompile job beside the truth run; "": the backend compiles nothing in its jobs
    precompile: str = ""

    def runner(self, which: str) -> Callable[..., Any]:
        """The guided (``which="guided"``), free (``"free"``), grid (``"grid"``), forecast-target (``"forecast"``) or
        compilation (``"precompile"``) function, imported now."""
        module, _, func = getattr(self, which).partition(":")
        return getattr(importlib.import_module(module), func)


BACKENDS: dict[str, GcmBackend] = {
    b.name: b
    for b in (
        GcmBackend("standin", "jcm stand-in GCM (SPEEDY physics on a JAX spectral core), in the job's process",
                   guided="nudgeml.gcm.runners:standin_guided", free="nudgeml.gcm.runners:standin_free", needs_lmdz_block=False,
                   mpi=False, forcing="standin", ensembles=True, iterations=True, mean_residual=True, calibration=True,
                   forecast="nudgeml.gcm.runners:standin_forecast", precompile="nudgeml.gcm.runners:standin_precompile"),
        GcmBackend("lmdz", "LMDZ6 gcm.e from the job kit, srun inside the rule's SLURM job (Jean Zay cpu_p1)",
                   guided="nudgeml.gcm.runners:lmdz_guided", free="nudgeml.gcm.runners:lmdz_free",
                   needs_lmdz_block=True, mpi=True, forcing="lmdz", ensembles=False, iterations=False,
                   grid="nudgeml.lmdz_grid:lmdz_model_grid", grid_from="lmdz_reference", lmdz_routine=True, mean_residual=True,
                   forecast="nudgeml.gcm.runners:lmdz_forecast"),
        GcmBackend("lmdze", "LMDZE (github lguez/LMDZE) built by scripts/build_lmdze.sh",
                   guided="nudgeml.gcm.runners:lmdze_guided", free="nudgeml.gcm.runners:lmdze_free",
                   needs_lmdz_block=False, mpi=False, forcing="era5", ensembles=True, iterations=False,
                   grid="nudgeml.lmdz_grid:lmdze_model_grid", grid_from="lmdze_start", lmdz_routine=True, aoti=False,
                   mean_residual=True),
    )
}


def backend_of(config: Mapping[str, Any]) -> GcmBackend:
    name = config.get("backend", "standin")
    if name not in BACKENDS:
        raise ConfigError(f"config key 'backend' is {name!r}; known backends: {', '.join(BACKENDS)}")
    return BACKENDS[name]


def slurm_resources(config: Mapping[str, Any]) -> dict[str, Any]:
    """What SLURM must give a GCM job beyond mem_mb/runtime: for an MPI backend, ``tasks`` x
    ``cpus_per_task`` on whole nodes and ``mpi=srun`` (the SLURM executor then runs the job as it is,
    and the job's own srun starts the tasks); nothing for a one-process backend (the executor gives it
    the rule's threads)."""
    backend = backend_of(config)
    if not backend.mpi:
        return {}
    lm = config["lmdz"]
    tasks, omp = lm.get("mpi_tasks", 40), lm.get("omp_threads", 8)
    per_node = lm.get("slurm", {}).get("cores_per_node", 40)
    return {"tasks": tasks, "cpus_per_task": omp, "nodes": -(-tasks * omp // per_node), "mpi": "srun"}


def check_backend(config: Mapping[str, Any]) -> None:
    """The configuration a backend can run, one error naming the key: an LMDZ backend needs the
    ``lmdz`` block, guided and free months that are the workflow's (``period``, ``free_runs``), the
    next month's first analysis for the last guided month, and only what it supports (no perturbed
    ensemble members, no iterative training or replay targets: those run the stand-in; forecast targets
    where the backend has a forecast runner)."""
    backend = backend_of(config)
    if backend.needs_lmdz_block:
        if "lmdz" not in config:
            raise ConfigError(f"config key 'lmdz' is required by backend {backend.name!r} (example: lmdz/config.example.yaml)")
        _check_lmdz_months(config)
        # the workflow pairs the runs' records with the truth (ERA5, real calendar) by date: a 365- or
        # 360-day LMDZ year drifts off it (and its histories decode to cftime dates, not datetime64)
        if config["lmdz"].get("calendar", "gregorian") != "gregorian":
            raise ConfigError(f"config key 'lmdz.calendar' is {config['lmdz']['calendar']!r}: backend {backend.name!r} is compared with "
                              "ERA5 date by date; use gregorian")
    if backend.lmdz_routine:
        for name, spec in config["free_runs"]["runs"].items():
            # LMDZ's physics routine reads one constant du_mean/dv_mean (lmdz/INTEGRATION.md): a monthly
            # climatology would silently run as the annual mean
            if spec.get("climatology", "annual") != "annual":
                raise ConfigError(f"config key 'free_runs.runs.{name}.climatology' is {spec['climatology']!r}: backend {backend.name!r} "
                                  "applies one annual mean tendency; use annual, or switch the run off with 'name: null'")
            # the routine applies du, dv: a mean of a T/q-nudged run would silently lose its dt/dq
            nudging = config.get("nudging", {})
            held = ["du", "dv"] + [f"d{v}" for v in ("t", "q") if nudging.get(v)]
            if spec.get("correction") == "mean" and set(spec.get("variables") or held) - {"du", "dv"}:
                raise ConfigError(f"config key 'free_runs.runs.{name}.variables' is {spec.get('variables') or held}: backend {backend.name!r} "
                                  "applies du, dv only (LMDZ's physics routine); set variables: [du, dv]")
            # the routine applies the guarded model output as it is (about its mean with the mean residual):
            # the stand-in's scaling and spectral filter of the model part would silently be dropped
            if spec.get("add_mean"):
                raise ConfigError(f"config key 'free_runs.runs.{name}.add_mean': backend {backend.name!r} applies the model's output or, with "
                                  "mean_residual, the mean plus its part about its mean (LMDZ's physics routine); remove it")
            # eddy_only it applies too (row sums reduced across ranks and threads, fortran/lmdz/nudgeml_lmdz.F90)
            for key in ("scale", "filter_truncation", "rotational_only"):
                if key in spec and not (key == "scale" and float(spec[key]) == 1.0) and not (key == "rotational_only" and not spec[key]):
                    raise ConfigError(f"config key 'free_runs.runs.{name}.{key}' is {spec[key]!r}: backend {backend.name!r} applies the model's "
                                      "output unscaled and unfiltered (LMDZ's physics routine); remove it")
            if spec.get("humidity_column_neutral"):
                raise ConfigError(f"config key 'free_runs.runs.{name}.humidity_column_neutral': backend {backend.name!r} applies du, dv "
                                  "only (LMDZ's physics routine), no humidity correction to make column-neutral; remove it")
            targets = config.get("columns", {}).get("targets", ["du", "dv"])
            if spec.get("correction") == "ml" and list(targets) != ["du", "dv"]:
                raise ConfigError(f"config key 'columns.targets' is {targets}: backend {backend.name!r} applies a model of du, dv only "
                                  f"(LMDZ's physics routine; run {name!r})")
    if not backend.aoti:
        for name, spec in config["free_runs"]["runs"].items():
            if spec.get("correction") == "ml" and spec.get("backend", "torchscript") != "torchscript":
                raise ConfigError(f"config key 'free_runs.runs.{name}.backend' is {spec['backend']!r}: backend {backend.name!r} "
                                  "runs the model through the bridge's TorchScript path; use torchscript")
    if not backend.ensembles:
        for name, spec in config["free_runs"]["runs"].items():
            if spec.get("members", 1) > 1:
                raise ConfigError(f"config key 'free_runs.runs.{name}.members' is {spec['members']}: backend {backend.name!r} "
                                  "has no perturbed initial states; use 1")
    for name, spec in config["free_runs"]["runs"].items():
        if spec.get("iterations") and not backend.iterations:
            raise ConfigError(f"config key 'free_runs.runs.{name}.iterations' needs corrected nudged runs, which backend {backend.name!r} does not run")
        if spec.get("mean_residual") and not backend.mean_residual:
            raise ConfigError(f"config key 'free_runs.runs.{name}.mean_residual': backend {backend.name!r} takes no model mean")
        if spec.get("feedback") and not backend.calibration:
            raise ConfigError(f"config key 'free_runs.runs.{name}.feedback': the feedback runs the training period in the job's process, "
                              f"which backend {backend.name!r} does not; tune the mean on the stand-in, or switch the run off")
        if spec.get("calibrated") and not backend.calibration:
            raise ConfigError(f"config key 'free_runs.runs.{name}.calibrated': the calibration runs its members in the job's process, "
                              f"which backend {backend.name!r} does not (LMDZ's routine takes per-level gains: lmdz/INTEGRATION.md)")
    for name, section in config.get("models", {}).items():
        if name not in config.get("train", {}).get("models", []):
            continue
        target = section.get("target", "nudging")
        if not backend.iterations and (section.get("iterations") or target == "replay"):
            raise ConfigError(f"config key 'models.{name}' trains on a corrected nudged run or a replay, which backend {backend.name!r} does not run; "
                              "use target: nudging without iterations")
        if target == "forecast" and not backend.forecast:
            raise ConfigError(f"config key 'models.{name}' trains on forecasts, which backend {backend.name!r} does not run; use target: nudging")
        if target == "forecast" and backend.needs_lmdz_block and not config["lmdz"].get("forecast"):
            raise ConfigError(f"config key 'models.{name}' trains on forecasts: backend {backend.name!r} needs the 'lmdz.forecast' block "
                              "(the months its spin-up run and forecast array sample; lmdz/config.example.yaml)")


def _month(t: Any) -> str:
    return str(t)[:7]


def _next_month(m: str) -> str:
    y, mo = int(m[:4]), int(m[5:7])
    return f"{y + mo // 12:04d}-{mo % 12 + 1:02d}"


def _check_lmdz_months(config: Mapping[str, Any]) -> None:
    lm, period, free = config["lmdz"], config["period"], config["free_runs"]
    # LMDZ runs whole months; the guided months are those of period, whose end is the next month's first
    # analysis (LMDZ interpolates a month's last 6 hours toward it: without it LMDZ would hold the last record)
    if not str(period["end"]).startswith(f"{_month(period['end'])}-01T00"):
        raise ConfigError(f"config key 'period.end' ({period['end']}) must be the first analysis of a month with backend 'lmdz': "
                          "the last guided month needs the next month's first record")
    want = {"start": f"{_month(period['start'])}-01", "end": f"{_month(period['end'])}-01"}
    if not str(period["start"]).startswith(want["start"] + "T00"):
        raise ConfigError(f"config key 'period.start' ({period['start']}) must be the first analysis of a month with backend 'lmdz'")
    got = {k: str(lm["guided"][k])[:10] for k in ("start", "end")}
    if got != want:
        raise ConfigError(f"config key 'lmdz.guided' ({got['start']} - {got['end']}) must be period's months ({want['start']} - {want['end']}, end exclusive)")
    fwant = {"start": f"{_month(free['start'])}-01", "end": f"{_next_month(_month(free['end']))}-01"}
    if not str(free["start"]).startswith(fwant["start"] + "T00"):
        raise ConfigError(f"config key 'free_runs.start' ({free['start']}) must be the first analysis of a month with backend 'lmdz'")
    fgot = {k: str(lm["free"][k])[:10] for k in ("start", "end")}
    if fgot != fwant:
        raise ConfigError(f"config key 'lmdz.free' ({fgot['start']} - {fgot['end']}) must be free_runs' months ({fwant['start']} - {fwant['end']}, end exclusive)")

"""A guided LMDZE run from the truth: ``ce0l`` on the truth's start and boundary files, then ``gcm``
relaxed toward the truth's analyses (the ``lmdze`` backend's nudged job, issue 15 item 2).

LMDZE reads its settings as Fortran namelists on standard input, one group after another in the
order its programs read them (:data:`CE0L_GROUPS`, :data:`GCM_GROUPS`: a group out of order stops
the program). :func:`render_namelists` writes them from a :class:`LmdzeSettings`; the physics groups
carry the values of LMDZE's own control case (``Tests_input/Namelists/gcm_nml_control.txt``), the
rest are LMDZE's defaults unless set here. :func:`run_guided` builds the inputs
(:mod:`nudgeml.lmdze_inputs`, :func:`nudgeml.lmdz_forcing.write_lmdze_guide`), runs both programs
in ``run_dir`` and keeps their logs there; :func:`run_ce0l`, its first half, makes only the start
files (the ``lmdze`` model grid's job).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nudgeml.errors import ConfigError, InputError, RunFailed

#: namelist groups in the order ce0l reads them
CE0L_GROUPS = ("dimensions_nml", "logic_nml", "conf_gcm_nml", "comdissnew_nml", "serre_nml", "dynetat0_nml",
               "etat0_nml", "disvert_nml", "limit_nml")
#: namelist groups in the order gcm reads them
GCM_GROUPS = ("dimensions_nml", "logic_nml", "conf_gcm_nml", "comdissnew_nml", "dynetat0_nml", "disvert_nml",
              "conf_guide_nml", "physiq_nml", "ctherm_nml", "clesphys2_nml", "YOMCST_nml", "conf_phys_nml",
              "fisrtilp_nml", "clesphys_nml", "nuagecom", "conf_interface_nml", "soil_nml")
#: LMDZE's control case: horizontal dissipation times (s) and its physics choices
CONTROL_GROUPS: dict[str, dict[str, object]] = {
    "comdissnew_nml": {"tetagdiv": 3600.0, "tetagrot": 3600.0, "tetatemp": 3600.0},
    "physiq_nml": {"iflag_cldcon": 3, "fact_cldcon": 1.0, "ratqsbas": 0.005, "ratqshaut": 0.33},
    "conf_phys_nml": {"epmax": 0.99, "iflag_clw": 1},
    "fisrtilp_nml": {"reevap_ice": True, "iflag_pdf": 1},
    "clesphys_nml": {"ok_instan": True, "ksta_ter": 1e-7, "cdmmax": 0.0025, "cdhmax": 0.002},
    "nuagecom": {"rad_chau1": 12, "rad_chau2": 11},
}
#: the variables LMDZE's guide relaxes, by the workflow's names
GUIDE_FLAGS = {"u": "u", "v": "v", "t": "t", "q": "q"}


@dataclass(frozen=True)
class LmdzeSettings:
    """One LMDZE run: grid (``iim`` x ``jjm`` x ``llm``), time stepping (``day_step`` dynamical steps a
    day, a Matsuno step every ``iperiod``, physics every ``iphysiq``), its start and length, and the
    nudging (variables and time scale; none: a free run)."""

    start: str
    days: int
    iim: int = 16
    jjm: int = 12
    llm: int = 11
    day_step: int = 240
    iperiod: int = 5
    iphysiq: int = 5
    guide: Sequence[str] = ()
    tau_hours: float = 6.0
    tau_t_hours: float | None = None  # temperature's own time scale (nudging.t.tau_hours); None: tau_hours
    tau_q_hours: float | None = None  # humidity's (nudging.q.tau_hours); None: tau_hours
    extra: Mapping[str, Mapping[str, object]] = field(default_factory=dict)

    def check(self) -> None:
        if self.days < 1:
            raise ConfigError(f"LMDZE run length is {self.days} days; at least 1")
        if self.guide and self.day_step % (4 * self.iperiod):
            # LMDZE's guide reads an analysis every day_step/4 steps and acts at the Matsuno steps
            raise ConfigError(f"LMDZE day_step={self.day_step} must be a multiple of 4 * iperiod = {4 * self.iperiod} "
                              "for a guided run (6-hourly analyses on Matsuno steps)")
        if self.iphysiq % self.iperiod:
            raise ConfigError(f"LMDZE iphysiq={self.iphysiq} must be a multiple of iperiod={self.iperiod}")
        unknown = set(self.guide) - set(GUIDE_FLAGS)
        if unknown:
            raise ConfigError(f"LMDZE cannot guide {sorted(unknown)}; use some of {sorted(GUIDE_FLAGS)}")
        if any(t is not None and t <= 0 for t in (self.tau_hours, self.tau_t_hours, self.tau_q_hours)):
            raise ConfigError(f"LMDZE nudging time scale tau_hours={self.tau_hours} (t: {self.tau_t_hours}, q: {self.tau_q_hours}) must be > 0")

    def tau_of(self, var: str) -> float:
        """The relaxation time (hours) of ``var``."""
        own = {"t": self.tau_t_hours, "q": self.tau_q_hours}.get(var)
        return own if own is not None else self.tau_hours


def _value(v: object) -> str:
    if isinstance(v, bool):
        return "t" if v else "f"
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str):
        return f"'{v}'"
    return str(v)


def _groups(order: Sequence[str], values: Mapping[str, Mapping[str, object]]) -> str:
    unknown = set(values) - set(order)
    if unknown:
        raise ConfigError(f"LMDZE namelist group(s) {sorted(unknown)} are not read here (known: {', '.join(order)})")
    lines = []
    for name in order:
        items = ", ".join(f"{k} = {_value(v)}" for k, v in values.get(name, {}).items())
        lines.append(f"&{name} {items} /" if items else f"&{name} /")
    return "\n".join(lines) + "\n"


def render_namelists(s: LmdzeSettings) -> dict[str, str]:
    """The standard input of ``ce0l`` and of ``gcm`` for ``s`` (``{"ce0l": ..., "gcm": ...}``)."""
    from nudgeml.lmdze_inputs import lmdze_day_ref

    s.check()
    day_ref, year = lmdze_day_ref(s.start)
    dims = {"iim": s.iim, "jjm": s.jjm, "llm": s.llm}
    steps = {"day_step": s.day_step, "iperiod": s.iperiod, "iphysiq": s.iphysiq}
    ce0l = {"dimensions_nml": dims, "conf_gcm_nml": steps, "comdissnew_nml": CONTROL_GROUPS["comdissnew_nml"],
            "dynetat0_nml": {"day_ref": day_ref, "annee_ref": year}}
    gcm: dict[str, dict[str, object]] = {name: dict(v) for name, v in CONTROL_GROUPS.items()}
    gcm["dimensions_nml"] = dims
    gcm["conf_gcm_nml"] = {**steps, "nday": s.days}
    if s.guide:
        guide: dict[str, object] = {}
        for var in s.guide:
            tau_days = s.tau_of(var) / 24.0  # on a regular grid LMDZE uses tau_max: alpha = 1 - exp(-factt / tau_max)
            flag = GUIDE_FLAGS[var]
            guide.update({f"guide_{flag}": True, f"tau_min_{flag}": tau_days, f"tau_max_{flag}": tau_days})
        gcm["conf_guide_nml"] = guide
    for name, values in s.extra.items():
        gcm.setdefault(name, {}).update(values)
    return {"ce0l": _groups(CE0L_GROUPS, ce0l), "gcm": _groups(GCM_GROUPS, gcm)}


def nudging_alpha(s: LmdzeSettings, var: str = "u") -> float:
    """LMDZE's relaxation factor of ``var`` per guide call on a regular grid: ``1 - exp(-factt / tau_max)``
    with ``factt`` the Matsuno period in days (the guide acts once every ``iperiod`` steps)."""
    factt = s.iperiod / s.day_step
    return float(1.0 - np.exp(-factt / (s.tau_of(var) / 24.0)))


def _run(exe: Path, cwd: Path, stdin: str, log_name: str, done: str, timeout_s: float) -> float:
    t0 = time.monotonic()
    (cwd / f"{log_name}.nml").write_text(stdin)
    with (cwd / f"{log_name}.log").open("w") as log:
        proc = subprocess.run([str(exe)], cwd=cwd, input=stdin, stdout=log, stderr=subprocess.STDOUT, text=True,
                              timeout=timeout_s, check=False)
    text = (cwd / f"{log_name}.log").read_text(errors="replace")
    if proc.returncode != 0 or done not in text:
        tail = " | ".join(text.strip().splitlines()[-5:])
        raise RunFailed(f"LMDZE {exe.name} failed in {cwd} (exit {proc.returncode}), see {cwd / (log_name + '.log')}: {tail}")
    return time.monotonic() - t0


def _era5_paths(files: Sequence[str | os.PathLike[str]], kind: str) -> list[Path]:
    paths = [Path(f) for f in files]
    if not paths:
        raise InputError(f"no ERA5 {kind} file given for the LMDZE run")
    return paths


RUN_MARKER = ".nudgeml-lmdze-run"


def fresh_run_dir(run_dir: str | os.PathLike[str]) -> Path:
    """``run_dir`` emptied for a new run: LMDZE's programs add to what they find (histories, the
    guide's 6-hourly files), and a file left by an earlier run must not pass for this one's. Only a
    folder this module made (it holds :data:`RUN_MARKER`) or an empty one is emptied."""
    run = Path(run_dir)
    if run.exists():
        if any(run.iterdir()) and not (run / RUN_MARKER).is_file():
            raise InputError(f"{run}: not empty and not an LMDZE run folder made by nudgeml (no {RUN_MARKER}); choose another run_dir")
        shutil.rmtree(run)
    run.mkdir(parents=True)
    (run / RUN_MARKER).write_text("made by nudgeml.lmdze_run; emptied at each run\n")
    return run


@dataclass
class GuidedRun:
    run_dir: Path
    alpha: float
    ce0l_s: float
    gcm_s: float


def run_ce0l(
    run_dir: str | os.PathLike[str],
    settings: LmdzeSettings,
    *,
    ce0l: str | os.PathLike[str],
    pressure_levels: Sequence[str | os.PathLike[str]],
    single_levels: Sequence[str | os.PathLike[str]],
    invariant: str | os.PathLike[str],
    timeout_s: float = 3600.0,
    **input_options: object,
) -> tuple[Path, float]:
    """Build ``ce0l``'s inputs in ``run_dir`` (emptied first, :func:`fresh_run_dir`) from the ERA5
    files at ``settings.start`` (the monthly files covering the run, in time order: the first that
    holds the start is read), then run ``ce0l`` there; returns ``(run_dir, seconds of ce0l)``. Its
    ``restart.nc``, ``restartphy.nc`` and ``limit.nc`` are LMDZE's start and boundary files: the guided
    run starts from them, the ``lmdze`` model grid is read from them (:mod:`nudgeml.lmdz_grid`)."""
    from nudgeml.lmdze_inputs import write_ce0l_inputs_from_truth

    namelists = render_namelists(settings)  # a bad setting stops before run_dir is emptied
    run = fresh_run_dir(run_dir)
    pls, sls = _era5_paths(pressure_levels, "pressure_levels"), _era5_paths(single_levels, "single_levels")
    start = np.datetime64(settings.start, "s")
    errors = []
    for pl, sl in zip(pls, sls):  # the month holding the start
        try:
            write_ce0l_inputs_from_truth(run, pressure_levels=pl, single_levels=sl, invariant=invariant, start=start,
                                         **input_options)  # type: ignore[arg-type]
            break
        except InputError as exc:
            errors.append(str(exc))
    else:
        raise InputError(f"no ERA5 file holds the LMDZE start {start}: " + "; ".join(errors))
    return run, _run(Path(ce0l).resolve(), run, namelists["ce0l"], "ce0l", "ce0l: done", timeout_s)


def start_from_ce0l(run: Path) -> None:
    """``gcm`` starts from ``start.nc``/``startphy.nc``: ``ce0l``'s ``restart.nc``/``restartphy.nc`` (copied,
    so that the run's own restart files, written at its end, do not overwrite its start)."""
    for src, dest in (("restart.nc", "start.nc"), ("restartphy.nc", "startphy.nc")):
        shutil.copyfile(run / src, run / dest)


def run_guided(
    run_dir: str | os.PathLike[str],
    settings: LmdzeSettings,
    *,
    ce0l: str | os.PathLike[str],
    gcm: str | os.PathLike[str],
    pressure_levels: Sequence[str | os.PathLike[str]],
    single_levels: Sequence[str | os.PathLike[str]],
    invariant: str | os.PathLike[str],
    timeout_s: float = 3600.0,
    **input_options: object,
) -> GuidedRun:
    """Build the inputs in ``run_dir`` from the ERA5 files (the monthly files covering the run, in time
    order), run ``ce0l`` (:func:`run_ce0l`) then ``gcm`` there (its ``restart.nc`` … and LMDZE's 6-hourly
    ``ucov.nc``/``ucovrea2.nc`` … of the guided state and analysis stay in ``run_dir``)."""
    from nudgeml.lmdz_forcing import write_lmdze_guide

    namelists = render_namelists(settings)
    run, ce0l_s = run_ce0l(run_dir, settings, ce0l=ce0l, pressure_levels=pressure_levels, single_levels=single_levels,
                           invariant=invariant, timeout_s=timeout_s, **input_options)
    start_from_ce0l(run)
    if settings.guide:
        names = {"u": "u", "v": "v", "t": "T", "q": "hur"}  # q: relative humidity, LMDZE's guide reads RH
        write_lmdze_guide(era5_files={"pressure_levels": _era5_paths(pressure_levels, "pressure_levels")},
                          start=np.datetime64(settings.start, "s"), days=settings.days,
                          out_paths={names[v]: run / f"{names[v]}.nc" for v in settings.guide},
                          iim=settings.iim, jjm=settings.jjm)
    gcm_s = _run(Path(gcm).resolve(), run, namelists["gcm"], "gcm", "Everything is cool", timeout_s)
    return GuidedRun(run, nudging_alpha(settings) if settings.guide else 0.0, ce0l_s, gcm_s)


#: the correction modes of the physics hook (``fortran/lmdze_physiq/nudgeml_lmdze.f90``) by the
#: workflow's ``free_runs.runs.<name>.correction``
HOOK_MODES = {"none": "off", "mean": "mean", "ml": "ml"}
HOOK_FILE = "nudgeml.nml"
COUNTS_LINE = re.compile(r"nudgeml: mode (\d+) refreshes (\d+) columns (\d+) fallbacks (\d+)")
CLIPPED_LINE = re.compile(r"nudgeml: clipped (\d+)")
WALL_LINE = re.compile(r"nudgeml: wall seconds init ([0-9.]+) steps ([0-9.]+)")


@dataclass(frozen=True)
class Correction:
    """What the physics hook applies in a free run: ``correction`` (none, mean or ml), the mean tendency
    on the physics columns (``du_mean``/``dv_mean`` ``(presnivs, points_physiques)``, m s-2: the mean
    run's correction and the ML guard's fallback), the exported model's folder, the refresh interval,
    ``dump`` (a file name in the run folder: the first refresh's columns and increments) and
    ``mean_residual`` (ml: the model's output about its own mean, ``du_model_mean``/``dv_model_mean`` and
    any per-level ``gain_du``/``gain_dv`` of the mean file) and ``eddy_only`` (ml: the zonal mean of the
    model's part about the mean removed per latitude row, as the stand-in's ``eddy_only``)."""

    correction: str = "none"
    mean_file: str | os.PathLike[str] | None = None
    model_dir: str | os.PathLike[str] | None = None
    interval_hours: float = 6.0
    dump: str | None = None
    mean_residual: bool = False
    eddy_only: bool = False

    def namelist(self) -> str:
        if self.correction not in HOOK_MODES:
            raise ConfigError(f"LMDZE free-run correction {self.correction!r}: use one of {', '.join(HOOK_MODES)}")
        if self.correction != "none" and self.mean_file is None:
            raise ConfigError(f"LMDZE free-run correction {self.correction!r} needs the mean tendency file")
        if self.correction == "ml" and self.model_dir is None:
            raise ConfigError("LMDZE free-run correction 'ml' needs the exported model's folder")
        if self.mean_residual and self.correction != "ml":
            raise ConfigError(f"LMDZE free-run correction {self.correction!r}: mean_residual shifts a model's output; use ml")
        if self.eddy_only and self.correction != "ml":
            raise ConfigError(f"LMDZE free-run correction {self.correction!r}: eddy_only filters a model's part; use ml")
        values = {"mode_name": HOOK_MODES[self.correction], "interval_hours": float(self.interval_hours),
                  "mean_file": str(Path(self.mean_file).resolve()) if self.mean_file else "",
                  "model_dir": str(Path(self.model_dir).resolve()) if self.model_dir else "",
                  "dump_file": self.dump or "", "mean_residual": self.mean_residual,
                  "eddy_only": self.eddy_only}
        return _groups(("nudgeml_nml",), {"nudgeml_nml": values})


def perturb_start(start_nc: Path, member: int, k: float) -> None:
    """Member ``member``'s initial state: LMDZE's start potential temperature ``teta`` plus independent
    normal noise of standard deviation ``k`` (K) at every point, drawn from a generator seeded by the
    member (as the stand-in's members perturb their temperature: the same members every rerun)."""
    import netCDF4

    if not k > 0:
        raise ConfigError(f"free_runs.perturbation_k is {k}: member {member} of an ensemble needs a perturbation > 0")
    with netCDF4.Dataset(start_nc, "r+") as ds:
        teta = ds.variables["teta"]
        values = np.asarray(teta[:], dtype=np.float64)
        rng = np.random.default_rng(member)
        teta[:] = (values + rng.normal(scale=k, size=values.shape)).astype(teta.dtype)


@dataclass
class FreeRun:
    run_dir: Path
    ce0l_s: float
    gcm_s: float
    counts: dict[str, int]


def hook_counts(log_text: str) -> dict[str, float]:
    """The hook's last-step counts from ``gcm``'s log (empty when the correction was off)."""
    m, c = COUNTS_LINE.search(log_text), CLIPPED_LINE.search(log_text)
    if m is None:
        return {}
    out = dict(zip(("mode", "refreshes", "columns", "fallbacks"), map(int, m.groups())))
    out["clipped"] = int(c.group(1)) if c else 0
    if w := WALL_LINE.search(log_text):  # the hook's own wall time (s): settings and model load, every step
        out["hook_init_s"], out["hook_steps_s"] = float(w.group(1)), float(w.group(2))
    return out


def run_free(
    run_dir: str | os.PathLike[str],
    settings: LmdzeSettings,
    correction: Correction,
    *,
    ce0l: str | os.PathLike[str],
    gcm: str | os.PathLike[str],
    pressure_levels: Sequence[str | os.PathLike[str]],
    single_levels: Sequence[str | os.PathLike[str]],
    invariant: str | os.PathLike[str],
    member: int = 0,
    perturbation_k: float = 0.0,
    timeout_s: float = 3600.0,
    **input_options: object,
) -> FreeRun:
    """A free LMDZE run from the truth at ``settings.start`` (no nudging): ``ce0l`` as for the guided run,
    then ``gcm`` with the physics hook's ``nudgeml.nml`` for ``correction``. A ``member`` > 0 of an
    initial-condition ensemble starts from the same state with its potential temperature perturbed
    (:func:`perturb_start`)."""
    if settings.guide:
        raise ConfigError(f"a free LMDZE run nudges nothing (guide: {list(settings.guide)})")
    namelists = render_namelists(settings)
    hook = correction.namelist()  # a bad setting stops before run_dir is emptied
    run, ce0l_s = run_ce0l(run_dir, settings, ce0l=ce0l, pressure_levels=pressure_levels, single_levels=single_levels,
                           invariant=invariant, timeout_s=timeout_s, **input_options)
    start_from_ce0l(run)
    if member > 0:
        perturb_start(run / "start.nc", member, perturbation_k)
    (run / HOOK_FILE).write_text(hook)
    gcm_s = _run(Path(gcm).resolve(), run, namelists["gcm"], "gcm", "Everything is cool", timeout_s)
    counts = hook_counts((run / "gcm.log").read_text(errors="replace"))
    if correction.correction != "none" and not counts:
        raise RunFailed(f"{run / 'gcm.log'}: no 'nudgeml:' counts line: this gcm has no physics hook "
                        "(rebuild with scripts/build_lmdze.sh)")
    return FreeRun(run, ce0l_s, gcm_s, counts)


# ------------------------------------------------------------------------------------------------
# the first ML refresh inside LMDZE against the Python model, bit for bit (issue 15, item 3)
# ------------------------------------------------------------------------------------------------

#: where the LMDZ routine (``nudgeml_lmdz``) takes each feature block from (its ``SRC_*``)
_LEVEL_SOURCES = {"u": "u", "v": "v", "t": "t", "q": "q", "p": "play"}


def lmdz_routine_features(blocks: Sequence, columns: Mapping[str, np.ndarray]) -> np.ndarray:
    """The feature matrix ``(klon, n_features)`` float32 the LMDZ routine builds from the physics
    columns (``u v t q play`` ``(klon, klev)``, ``paprs`` ``(klon, klev + 1)``, ``lat_deg``,
    ``land_fraction``, ``cos_zenith`` ``(klon,)``, float64), block by block as
    ``fortran/lmdz/nudgeml_lmdz.F90`` does: each value computed in float64, then rounded to float32."""
    deg2rad = np.float64(np.pi) / np.float64(180.0)
    cols = []
    for b in blocks:
        if b.name in _LEVEL_SOURCES:
            cols.append(columns[_LEVEL_SOURCES[b.name]][:, : b.levels])
        elif b.name == "ps":
            cols.append(columns["paprs"][:, :1])
        elif b.name in ("sin_lat", "cos_lat"):
            f = np.sin if b.name == "sin_lat" else np.cos
            cols.append(f(columns["lat_deg"] * deg2rad)[:, None])
        elif b.name in ("land_fraction", "cos_zenith"):
            cols.append(columns[b.name][:, None])
        else:
            raise InputError(f"feature block {b.name!r} has no LMDZ source")
    return np.concatenate([np.asarray(c, np.float64) for c in cols], axis=1).astype(np.float32)


@dataclass(frozen=True)
class RefreshCheck:
    columns: int
    fallbacks: int
    max_abs_diff: float  # m s-1 over the step, LMDZE minus Python
    bitwise: bool


def latitude_rows(lat_deg: np.ndarray) -> np.ndarray:
    """Each physics column's latitude row, 1-based, in LMDZ's column order (north pole, the rows from
    north to south, south pole): a new row wherever the latitude changes, as the LMDZE hook numbers them
    for the routine's eddies only (nudgeml_lmdze.f90)."""
    lat = np.asarray(lat_deg)
    return np.concatenate([[1], 1 + np.cumsum(lat[1:] != lat[:-1])]).astype(int)


def routine_eddy_only(tendency: np.ndarray, fallback: np.ndarray, kept: np.ndarray, rows: np.ndarray,
                      parts: Sequence[tuple[int, int]] | None = None) -> np.ndarray:
    """The LMDZ routine's eddies only (fortran/lmdz/nudgeml_lmdz.F90), in its float64 order: the kept
    columns' part about the mean ``P = tendency - fallback`` (klon, n_targets) becomes ``fallback + (P -
    S_r / N_r)``, S_r and N_r summed over each of ``parts`` (the threads' column ranges, in column order,
    from 0: the whole grid when None) and the parts' sums then added in order, as a reduction would."""
    part = tendency - fallback
    n_rows = int(rows.max())
    total_s, total_n = np.zeros((n_rows, part.shape[1])), np.zeros(n_rows)
    for lo, hi in parts or [(0, part.shape[0])]:
        s_part, n_part = np.zeros_like(total_s), np.zeros(n_rows)
        for i in range(lo, hi):  # one column at a time, as the Fortran loop (np.sum would sum pairwise)
            if kept[i]:
                s_part[rows[i] - 1] += part[i]
                n_part[rows[i] - 1] += 1.0
        total_s += s_part
        total_n += n_part
    out = tendency.copy()
    for i in np.flatnonzero(kept):
        out[i] = fallback[i] + (part[i] - total_s[rows[i] - 1] / total_n[rows[i] - 1])
    return out


def check_refresh(dump_file: str | os.PathLike[str], model_dir: str | os.PathLike[str],
                  mean_file: str | os.PathLike[str]) -> RefreshCheck:
    """Recompute in Python the refresh LMDZE's physics hook dumped (``dump_file``: the columns given
    to the LMDZ routine and the increments it returned, :class:`Correction` ``dump``): the exported
    TorchScript model on the same float32 features (one intra-op thread, as the hook loads it), the
    guard (:mod:`nudgeml.guard`) with the same mean-tendency fallback, for a mean-residual run (the mean
    file holds ``du_model_mean``) ``mean + g (tendency - model mean)`` per level on the columns the guard
    kept (the routine's float64 order; g from ``gain_du``/``gain_dv``, else 1), for a dump marked
    ``eddy_only`` the row means of that part removed (:func:`routine_eddy_only`, rows from the columns'
    latitudes), times the physics step. ``bitwise`` is whether every increment is the same float64."""
    import torch
    import xarray as xr

    from nudgeml.guard import apply_guard, guard_bounds
    from nudgeml.manifest import read_manifest

    model_dir = Path(model_dir)
    with xr.open_dataset(dump_file) as ds:
        # the Fortran (klon, klev) arrays are (presnivs, points_physiques) in the file
        cols = {k: ds[k].values.astype(np.float64).T for k in ds.data_vars}
        dt = float(ds.attrs["dtphys_s"])
        eddy_only = bool(int(ds.attrs.get("eddy_only", 0)))
    with xr.open_dataset(mean_file) as m:  # (presnivs, points_physiques) -> (klon, klev)
        fallback = np.concatenate([m["du_mean"].values.T, m["dv_mean"].values.T], axis=1).astype(np.float64)
        model_mean = gains = None
        if "du_model_mean" in m:
            model_mean = np.concatenate([m["du_model_mean"].values.T, m["dv_model_mean"].values.T], axis=1).astype(np.float64)
            if "gain_du" in m:
                gains = np.concatenate([m["gain_du"].values, m["gain_dv"].values]).astype(np.float64)
    manifest = read_manifest(model_dir / "model.json")
    x = lmdz_routine_features(manifest.features, cols)
    torch.set_num_threads(1)
    model = torch.jit.load(str(model_dir / manifest.artifacts["torchscript"]), map_location="cpu").eval()
    with torch.inference_mode():
        y = model(torch.from_numpy(np.ascontiguousarray(x))).numpy()
    names = [b.name for b in manifest.targets]
    if names != ["du", "dv"]:
        raise InputError(f"{model_dir / 'model.json'}: targets {names}; the LMDZ routine applies du, dv")
    g = apply_guard(x, y, fallback, guard_bounds(manifest.guard))
    tendency = g.tendency
    if model_mean is not None:
        kept = ~g.fallback
        k = np.ones(tendency.shape[1]) if gains is None else gains
        tendency = tendency.copy()
        tendency[kept] = fallback[kept] + k * (g.tendency[kept] - model_mean[kept])
    if eddy_only:
        tendency = routine_eddy_only(tendency, fallback, ~g.fallback, latitude_rows(cols["lat_deg"]))
    klev = cols["u"].shape[1]
    want = {"d_u": tendency[:, :klev] * dt, "d_v": tendency[:, klev:] * dt}
    diff = max(float(np.max(np.abs(cols[k] - want[k]))) for k in want)
    bitwise = all(np.array_equal(cols[k].view(np.int64), want[k].view(np.int64)) for k in want)
    return RefreshCheck(columns=x.shape[0], fallbacks=g.n_fallback, max_abs_diff=diff, bitwise=bitwise)

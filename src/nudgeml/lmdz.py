"""LMDZ job kit: render the Jean Zay SLURM scripts and LMDZ ``.def`` files of the ``lmdz`` backend.

One guided (nudged) run and the free runs (``control``, ``mean``, ``ml-<model>``) are each rendered
into ``<out_dir>/<run>/``: a chain of SLURM jobs (``job_001.slurm`` ...) that run LMDZ month by month
from restarts, the run's ``.def`` files, and ``submit.sh`` that submits the chain with
``afterok`` dependencies. Templates live in the package, ``nudgeml/templates/lmdz/`` (Jinja2, undefined names are
errors). Configuration comes in as the plain ``lmdz:`` mapping of the workflow config and is
checked here, each error naming its key; nothing is read from globals and Snakemake is not
imported.

LMDZ conventions used (``docs/lmdz-conventions.md``; check against your LMDZ revision):
nudging switched on by ``ok_guide=y`` in ``guide.def`` (included from ``run.def``), relaxation
times in days (``tau_min_u = tau_max_u``), nudging files ``u.nc`` (``UWND``), ``v.nc`` (``VWND``),
``T.nc`` (``AIR``), ``hur.nc`` (``RH``), ``ps.nc`` (``SP``) on the model's horizontal grid, read
4 times a day (``iguide_read=4``); ``guide_sav=y`` writes the nudging tendency to
``guide_ins.nc``. The learned correction is read by the nudgeml patch of LMDZ's physics from
``nudgeml.def`` (``lmdz/INTEGRATION.md``).
"""

import calendar as _calendar
import datetime as _dt
import os
import re
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from nudgeml.errors import LmdzConfigError

# LMDZ's nudging variables: config name -> (file LMDZ opens, guide.def switch, tau suffix)
NUDGE_VARS: dict[str, tuple[str, str, str]] = {
    "u": ("u.nc", "guide_u", "u"),
    "v": ("v.nc", "guide_v", "v"),
    "T": ("T.nc", "guide_T", "T"),
    "hur": ("hur.nc", "guide_Q", "Q"),
    "ps": ("ps.nc", "guide_P", "P"),
}
CORRECTIONS = {"none": 0, "mean": 1, "ml": 2}  # nudgeml_mode in nudgeml.def
# LMDZ's run.def spellings; ERA5 nudging wants the real (gregorian) calendar
CALENDARS = ("gregorian", "earth_365d", "earth_360d")
_MODULE_RE = re.compile(r"^[A-Za-z0-9_.+/-]+$")
_TIME_RE = re.compile(r"^(\d+-)?\d{1,2}:\d{2}:\d{2}$")


# ---------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlurmConfig:
    """Jean Zay CPU partition settings shared by every job."""

    account: str  # <project>@cpu: Jean Zay charges CPU hours to the @cpu account
    qos: str = "qos_cpu-t3"  # t3: 20 h max; t4: 100 h; dev: 2 h
    partition: str = "cpu_p1"
    time_limit: str = "20:00:00"
    cores_per_node: int = 40
    modules: tuple[str, ...] = ()
    ml_modules: tuple[str, ...] = ()  # extra modules of the ml runs (libtorch: pytorch-gpu/py3/...)
    env: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class NudgingConfig:
    forcing_dir: str  # the CDO stage's output: <forcing_dir>/<file_pattern>
    tau_hours: float  # the workflow's nudging.tau_hours unless lmdz.nudging.tau_hours overrides it
    file_pattern: str = "{var}_{year:04d}{month:02d}.nc"
    variables: tuple[str, ...] = ("u", "v")
    boundary_layer: bool = True  # guide_BL: nudge inside the boundary layer too
    plevs: int = 0  # guide_plevs: 0 pressure levels, 1 model levels (apbp.nc)
    invert_p: bool = False  # guide_invertp
    invert_y: bool = False  # guide_inverty
    read_per_day: int = 4  # iguide_read
    save_per_day: int = 4  # iguide_sav: snapshots of the nudging tendency in guide_ins.nc

    @property
    def tau_days(self) -> float:
        return self.tau_hours / 24.0

    def month_file(self, var: str, year: int, month: int) -> str:
        """The month's nudging file of ``var`` as the jobs name it (``$WORK`` left for the job to expand)."""
        return f"{self.forcing_dir}/{self.file_pattern.format(var=var, year=year, month=month)}"


@dataclass(frozen=True)
class MonthRange:
    """Whole months: ``start`` is the first day of a month, ``end`` (exclusive) too.

    Not the workflow's :class:`nudgeml.config.Period` (analysis times, both ends included): LMDZ
    runs month by month from restarts, so its periods are calendar months.
    """

    start: _dt.date
    end: _dt.date


@dataclass(frozen=True)
class FreeRun:
    name: str
    correction: str  # none | mean | ml
    model_dir: str = ""  # ml: directory of model.json/model.pt/model.pt2
    mean_residual: bool = False  # ml: about the model's mean (du_model_mean, dv_model_mean, gains: in the mean file)
    eddy_only: bool = False  # ml: the model's part about the mean loses its zonal mean per latitude row


@dataclass(frozen=True)
class CorrectionConfig:
    mean_file: str = ""  # du_mean, dv_mean (m s-2) on the physics grid, needed by mean and ml runs
    backend: str = "torchscript"  # torchscript | aoti | trees (an xgboost model's compiled model_trees.so)
    torch_threads: int = 1
    interval_hours: float = 6.0


@dataclass(frozen=True)
class ForecastKit:
    """Forecast-error targets on LMDZ (``lmdz.forecast``; the stand-in's are ``nudgeml.forecast``).

    A *spin-up run* relaxes the winds toward the analysis with a short time (``spinup_tau_hours``),
    one LMDZ day per execution, and keeps its state at 00 UTC of each sample day: states that sit on the
    analysis and are balanced. A SLURM array then runs, from each of those restarts, a one-day forecast
    whose nudging is switched off in effect (``FORECAST_TAU_DAYS``) but whose ``guide_out`` still saves,
    every ``lead_hours``, the model and the analysis winds on the model's levels: the target
    ``(analysis - forecast) / lead`` at ``t + lead``. LMDZ runs whole days (``nday``) and reads a
    nudging file from its first record at the run's start, so samples are at 00 UTC and each execution
    gets one day of records, cut from the month's file with ``cdo``.
    """

    period: MonthRange  # the months the samples are drawn from (inside the guided run's)
    spinup_tau_hours: float = 1.0  # the workflow's forecast.spinup_tau_hours unless set here
    lead_hours: float = 6.0  # the workflow's forecast.lead_hours unless set here: 6, 12 or 24
    spinup_days: int = 1  # days of the spin-up run before its first sample
    every_days: int = 1  # one sample (00 UTC) every this many days
    samples_per_task: int = 8  # forecasts one array task runs, one after the other
    time_limit: str = "02:00:00"  # of one array task

    @property
    def save_per_day(self) -> int:
        return int(round(24 / self.lead_hours))


#: the forecasts' relaxation time (days): guide_out needs nudging switched on to write the model and
#: analysis winds, and at 1e6 days the relaxation changes a wind by ~1e-7 of the gap per day
FORECAST_TAU_DAYS = 1.0e6


@dataclass(frozen=True)
class LmdzJobConfig:
    slurm: SlurmConfig
    executable: str  # LMDZ gcm executable (built with the nudgeml patch for mean/ml runs)
    reference_dir: str  # start.nc, startphy.nc, limit.nc, ... and the included .def files
    run_root: str  # run directories are <run_root>/<run>
    nudging: NudgingConfig
    guided: MonthRange
    free: MonthRange
    free_runs: tuple[FreeRun, ...]
    free_start_from: str = "reference"  # reference: start.nc of reference_dir; guided: the guided run's state
    correction: CorrectionConfig = field(default_factory=CorrectionConfig)
    forecast: ForecastKit | None = None  # the spin-up run and the forecast array, when lmdz.forecast is given
    mpi_tasks: int = 40
    omp_threads: int = 8
    omp_stacksize: str = "200M"
    calendar: str = "gregorian"
    months_per_job: int = 6
    include_defs: tuple[str, ...] = ("gcm.def", "physiq.def", "config.def", "output.def")
    reference_files: tuple[str, ...] = ("start.nc", "startphy.nc", "limit.nc")
    outputs: tuple[str, ...] = ("histday.nc", "histhf.nc", "histmth.nc")

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any], *, tau_hours: float | None = None,
                  forecast: Mapping[str, Any] | None = None) -> "LmdzJobConfig":
        """Build from the ``lmdz:`` mapping of the workflow config (see ``nudgeml/schemas/lmdz.schema.yaml``).

        ``tau_hours`` is the workflow's ``nudging.tau_hours``: LMDZ relaxes with the same time as the
        stand-in unless ``lmdz.nudging.tau_hours`` overrides it (one of the two must be given).
        ``forecast`` is the workflow's ``forecast`` section: ``lmdz.forecast`` takes its
        ``spinup_tau_hours`` and ``lead_hours`` unless it sets them.
        """
        return _parse(cfg, tau_hours, forecast or {})


@dataclass(frozen=True)
class Month:
    """One LMDZ execution: a calendar month (the row ranges of :class:`nudgeml.data.Segment` are another thing)."""

    year: int
    month: int
    ndays: int
    dayref: int  # day of the year of the month's first day (LMDZ's dayref)
    first: bool  # first month of the run: the date is set from run.def (raz_date=1)

    @property
    def tag(self) -> str:
        return f"{self.year:04d}{self.month:02d}"


@dataclass(frozen=True)
class Day:
    """One LMDZ day of the forecast kit (the spin-up run runs one per execution)."""

    year: int
    month: int
    day: int
    dayref: int  # day of the year (LMDZ's dayref)

    @property
    def tag(self) -> str:
        return f"{self.year:04d}{self.month:02d}{self.day:02d}"


def period_days(period: MonthRange, cal: str) -> list[Day]:
    """The days of ``period`` in ``cal``."""
    return [Day(m.year, m.month, d, m.dayref + d - 1) for m in month_segments(period, cal) for d in range(1, m.ndays + 1)]


def forecast_samples(kit: ForecastKit, cal: str) -> list[Day]:
    """The sample days (forecasts from 00 UTC): from ``spinup_days`` after the period's start, every
    ``every_days``; each one-day forecast ends inside the period."""
    days = period_days(kit.period, cal)
    return days[kit.spinup_days::kit.every_days]


def spinup_days(kit: ForecastKit, cal: str) -> list[Day]:
    """The spin-up run's days: up to the day before the last sample (whose end is that sample's 00 UTC)."""
    days = period_days(kit.period, cal)
    last = forecast_samples(kit, cal)[-1]
    return days[:days.index(last)]


def forecast_cost(cfg: LmdzJobConfig) -> dict[str, Any]:
    """Model days and LMDZ executions of the forecast kit next to the guided run's (``forecast/cost.json``).

    The spin-up run simulates each day of the sample period once, the forecasts one day per sample:
    about twice the guided run's model time over the same months, but one LMDZ start per simulated day
    instead of one per month; the forecasts are independent, so they run side by side as an array.
    """
    if cfg.forecast is None:
        raise LmdzConfigError("lmdz job kit: no lmdz.forecast block")
    guided = month_segments(cfg.guided, cfg.calendar)
    same = month_segments(cfg.forecast.period, cfg.calendar)
    spin, samples = spinup_days(cfg.forecast, cfg.calendar), forecast_samples(cfg.forecast, cfg.calendar)
    period_model_days = sum(m.ndays for m in same)
    return {
        "guided": {"model_days": sum(m.ndays for m in guided), "executions": len(guided),
                   "model_days_over_the_sample_period": period_model_days, "executions_over_the_sample_period": len(same)},
        "spinup": {"model_days": len(spin), "executions": len(spin), "jobs": len(_chunks_by_month(spin, cfg.months_per_job))},
        "forecasts": {"samples": len(samples), "model_days": len(samples), "executions": len(samples),
                      "array_tasks": -(-len(samples) // cfg.forecast.samples_per_task)},
        "model_days_ratio_to_guided_over_the_sample_period": (len(spin) + len(samples)) / period_model_days,
        "executions_ratio_to_guided_over_the_sample_period": (len(spin) + len(samples)) / len(same),
        "node_hours": "model_days x the guided run's node hours per model day, plus one LMDZ start per execution (measure both on your configuration)",
    }


def _chunks_by_month(days: list[Day], months_per_job: int) -> list[list[Day]]:
    """Consecutive days in jobs of ``months_per_job`` calendar months each."""
    months: list[list[Day]] = []
    for d in days:
        if not months or (months[-1][0].year, months[-1][0].month) != (d.year, d.month):
            months.append([])
        months[-1].append(d)
    return [[d for m in months[i:i + months_per_job] for d in m] for i in range(0, len(months), months_per_job)]


def _month_days(year: int, month: int, cal: str) -> int:
    if cal == "earth_360d":
        return 30
    if cal == "earth_365d":
        return _calendar.monthrange(2001, month)[1]  # 2001: not a leap year
    return _calendar.monthrange(year, month)[1]


def month_segments(period: MonthRange, cal: str) -> list[Month]:
    """The months of ``period`` with their length in ``cal`` and LMDZ's ``dayref`` (day of year)."""
    out = []
    y, m = period.start.year, period.start.month
    while (y, m) < (period.end.year, period.end.month):
        dayref = 1 + sum(_month_days(y, k, cal) for k in range(1, m))
        out.append(Month(y, m, _month_days(y, m, cal), dayref, first=not out))
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return out


# --- parsing ----------------------------------------------------------------------------------


def _err(key: str, why: str) -> LmdzConfigError:
    return LmdzConfigError(f"lmdz config: key 'lmdz.{key}' {why}")


def _get(d: Mapping[str, Any], key: str, typ: type | tuple[type, ...], where: str, default: Any = ...) -> Any:
    full = f"{where}.{key}" if where else key
    if key not in d or d[key] is None:
        if default is ...:
            raise _err(full, "is missing")
        return default
    v = d[key]
    if typ is float and isinstance(v, int) and not isinstance(v, bool):
        v = float(v)
    if isinstance(v, bool) and typ is not bool or not isinstance(v, typ):
        want = typ.__name__ if isinstance(typ, type) else "/".join(t.__name__ for t in typ)
        raise _err(full, f"must be {want}, got {type(v).__name__} {v!r}")
    return v


def _str_list(d: Mapping[str, Any], key: str, where: str, default: Sequence[str]) -> tuple[str, ...]:
    v = _get(d, key, list, where, list(default))
    full = f"{where}.{key}" if where else key
    if not all(isinstance(s, str) and s for s in v):
        raise _err(full, "must be a list of non-empty strings")
    return tuple(v)


def _month_start(value: Any, key: str) -> _dt.date:
    if isinstance(value, _dt.datetime):
        value = value.date()
    if isinstance(value, str):
        try:
            value = _dt.date.fromisoformat(value[:10] if len(value) >= 10 else value + "-01")
        except ValueError:
            raise _err(key, f"must be a date YYYY-MM-DD, got {value!r}") from None
    if not isinstance(value, _dt.date):
        raise _err(key, f"must be a date YYYY-MM-DD, got {value!r}")
    if value.day != 1:
        raise _err(key, f"must be the first day of a month (LMDZ runs month by month), got {value}")
    return value


def _period(d: Mapping[str, Any], key: str) -> MonthRange:
    p = _get(d, key, dict, "")
    start = _month_start(_get(p, "start", (str, _dt.date), key), f"{key}.start")
    end = _month_start(_get(p, "end", (str, _dt.date), key), f"{key}.end")
    if end <= start:
        raise _err(f"{key}.end", f"({end}) must be after {key}.start ({start})")
    return MonthRange(start, end)


def _positive(v: int | float, key: str) -> None:
    if not v > 0:
        raise _err(key, f"must be > 0, got {v}")


def _check_residual_file(mean_file: str, key: str) -> None:
    """A mean-residual run's mean file must hold the model's mean (``du_model_mean``, ``dv_model_mean``)
    beside the mean tendency; gains (``gain_du``, ``gain_dv``) come as a pair or not at all."""
    import netCDF4

    path = Path(os.path.expandvars(mean_file))
    if not path.is_file():
        raise _err(key, f"needs the mean file {path} (correction.mean_file) with du_model_mean, dv_model_mean: it does not exist")
    with netCDF4.Dataset(path) as ds:
        names = set(ds.variables)
    missing = [v for v in ("du_mean", "dv_mean", "du_model_mean", "dv_model_mean") if v not in names]
    if missing:
        raise _err(key, f"needs {missing} in {path} (correction.mean_file; nudgeml.gcm.runners.lmdz_mean_file writes them)")
    if ("gain_du" in names) != ("gain_dv" in names):
        raise _err(key, f"{path} has one of gain_du, gain_dv without the other")


def _parse_forecast(cfg: Mapping[str, Any], defaults: Mapping[str, Any], guided: MonthRange, nudging: NudgingConfig, cal: str) -> ForecastKit | None:
    if cfg.get("forecast") is None:
        return None
    f = _get(cfg, "forecast", dict, "")
    period = _period(cfg, "forecast")
    if period.start < guided.start or period.end > guided.end:
        raise _err("forecast", f"({period.start} to {period.end}) must lie inside lmdz.guided ({guided.start} to {guided.end}): "
                   "the spin-up run starts from the guided run's state and reads its nudging files")
    kit = ForecastKit(
        period=period,
        spinup_tau_hours=_get(f, "spinup_tau_hours", float, "forecast", float(defaults.get("spinup_tau_hours", 1.0))),
        lead_hours=_get(f, "lead_hours", float, "forecast", float(defaults.get("lead_hours", 6.0))),
        spinup_days=_get(f, "spinup_days", int, "forecast", 1),
        every_days=_get(f, "every_days", int, "forecast", 1),
        samples_per_task=_get(f, "samples_per_task", int, "forecast", 8),
        time_limit=_get(f, "time_limit", str, "forecast", "02:00:00"),
    )
    for key in ("spinup_tau_hours", "spinup_days", "every_days", "samples_per_task"):
        _positive(getattr(kit, key), f"forecast.{key}")
    if kit.lead_hours not in (6.0, 12.0, 24.0) or kit.lead_hours % (24 / nudging.read_per_day):
        raise _err("forecast.lead_hours", f"is {kit.lead_hours:g}: a one-day LMDZ forecast saves the winds every lead (iguide_sav = 24 / lead) "
                   f"at analysis times (every {24 / nudging.read_per_day:g} h); use 6, 12 or 24")
    if not _TIME_RE.fullmatch(kit.time_limit):
        raise _err("forecast.time_limit", f"must be [D-]HH:MM:SS, got {kit.time_limit!r}")
    if not forecast_samples(kit, cal):
        raise _err("forecast", f"has no sample day: {kit.spinup_days} spin-up day(s) fill {period.start} to {period.end}")
    return kit


def _parse(cfg: Mapping[str, Any], tau_hours: float | None = None, forecast: Mapping[str, Any] | None = None) -> LmdzJobConfig:
    if not isinstance(cfg, Mapping):
        raise LmdzConfigError("lmdz config must be a mapping")
    s = _get(cfg, "slurm", dict, "")
    account = _get(s, "account", str, "slurm")
    if account.startswith("$"):  # $NUDGEML_JZ_PROJECT@cpu: the project the jeanzay profile is given
        var = account[1:].split("@")[0]
        if not os.environ.get(var):
            raise _err("slurm.account", f"is {account!r} but the environment variable {var} is not set")
        account = os.environ[var] + account[len(var) + 1:]
    if not re.fullmatch(r"[A-Za-z0-9_-]+@cpu", account):
        raise _err("slurm.account", f"must be <project>@cpu on Jean Zay's CPU partition, got {account!r}")
    time_limit = _get(s, "time_limit", str, "slurm", "20:00:00")
    if not _TIME_RE.fullmatch(time_limit):
        raise _err("slurm.time_limit", f"must be [D-]HH:MM:SS, got {time_limit!r}")
    env = _get(s, "env", dict, "slurm", {})
    for k, v in env.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(k)) or not isinstance(v, (str, int, float)):
            raise _err(f"slurm.env.{k}", "must be NAME: value")
    slurm = SlurmConfig(
        account=account,
        qos=_get(s, "qos", str, "slurm", "qos_cpu-t3"),
        partition=_get(s, "partition", str, "slurm", "cpu_p1"),
        time_limit=time_limit,
        cores_per_node=_get(s, "cores_per_node", int, "slurm", 40),
        modules=_str_list(s, "modules", "slurm", ()),
        ml_modules=_str_list(s, "ml_modules", "slurm", ()),
        env=tuple((str(k), str(v)) for k, v in env.items()),
    )
    for key, mods in (("slurm.modules", slurm.modules), ("slurm.ml_modules", slurm.ml_modules)):
        for mname in mods:
            if not _MODULE_RE.fullmatch(mname):
                raise _err(key, f"has a module name with odd characters: {mname!r}")
    _positive(slurm.cores_per_node, "slurm.cores_per_node")

    n = _get(cfg, "nudging", dict, "")
    variables = _str_list(n, "variables", "nudging", ("u", "v"))
    for v in variables:
        if v not in NUDGE_VARS:
            raise _err("nudging.variables", f"has {v!r}; LMDZ nudges {', '.join(NUDGE_VARS)}")
    pattern = _get(n, "file_pattern", str, "nudging", "{var}_{year:04d}{month:02d}.nc")
    try:
        pattern.format(var="u", year=2000, month=1)
    except (KeyError, IndexError, ValueError) as e:
        raise _err("nudging.file_pattern", f"must use only {{var}}, {{year}}, {{month}}: {e}") from None
    tau = _get(n, "tau_hours", float, "nudging", None if tau_hours is None else float(tau_hours))
    if tau is None:
        raise _err("nudging.tau_hours", "is missing, and no workflow nudging.tau_hours was given to default to")
    nudging = NudgingConfig(
        forcing_dir=_get(n, "forcing_dir", str, "nudging"),
        tau_hours=tau,
        file_pattern=pattern,
        variables=variables,
        boundary_layer=_get(n, "boundary_layer", bool, "nudging", True),
        plevs=_get(n, "plevs", int, "nudging", 0),
        invert_p=_get(n, "invert_p", bool, "nudging", False),
        invert_y=_get(n, "invert_y", bool, "nudging", False),
        read_per_day=_get(n, "read_per_day", int, "nudging", 4),
        save_per_day=_get(n, "save_per_day", int, "nudging", 4),
    )
    _positive(nudging.tau_hours, "nudging.tau_hours")
    if nudging.plevs not in (0, 1):
        raise _err("nudging.plevs", f"must be 0 (pressure levels) or 1 (model levels), got {nudging.plevs}")

    c = _get(cfg, "correction", dict, "", {})
    correction = CorrectionConfig(
        mean_file=_get(c, "mean_file", str, "correction", ""),
        backend=_get(c, "backend", str, "correction", "torchscript"),
        torch_threads=_get(c, "torch_threads", int, "correction", 1),
        interval_hours=_get(c, "interval_hours", float, "correction", 6.0),
    )
    if correction.backend not in ("torchscript", "aoti", "trees"):
        raise _err("correction.backend", f"must be torchscript, aoti or trees, got {correction.backend!r}")
    _positive(correction.torch_threads, "correction.torch_threads")
    _positive(correction.interval_hours, "correction.interval_hours")

    f = _get(cfg, "free", dict, "")
    runs_raw = _get(f, "runs", dict, "free")
    if not runs_raw:
        raise _err("free.runs", "must name at least one run")
    runs = []
    for name, spec in runs_raw.items():
        where = f"free.runs.{name}"
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", str(name)) or name in ("guided", "spinup", "forecast"):
            raise _err(where, "is not a usable run name")
        if not isinstance(spec, Mapping):
            raise _err(where, "must be a mapping with 'correction'")
        corr = _get(spec, "correction", str, where)
        if corr not in CORRECTIONS:
            raise _err(f"{where}.correction", f"must be one of {', '.join(CORRECTIONS)}, got {corr!r}")
        model_dir = _get(spec, "model", str, where, "")
        if corr == "ml" and not model_dir:
            raise _err(f"{where}.model", "is missing (directory of the exported model)")
        if corr != "ml" and model_dir:
            raise _err(f"{where}.model", f"given for a run with correction {corr!r}")
        if corr in ("mean", "ml") and not correction.mean_file:
            raise _err("correction.mean_file", f"is missing (run {name!r} needs the mean tendency)")
        residual = _get(spec, "mean_residual", bool, where, False)
        if residual:
            if corr != "ml":
                raise _err(f"{where}.mean_residual", f"given for a run with correction {corr!r} (it shifts a model's output)")
            _check_residual_file(correction.mean_file, f"{where}.mean_residual")
        eddy_only = _get(spec, "eddy_only", bool, where, False)
        if eddy_only and corr != "ml":
            raise _err(f"{where}.eddy_only", f"given for a run with correction {corr!r} (it filters a model's part)")
        runs.append(FreeRun(str(name), corr, model_dir, residual, eddy_only))

    start_from = _get(f, "start_from", str, "free", "reference")
    if start_from not in ("reference", "guided"):
        raise _err("free.start_from", f"must be reference or guided, got {start_from!r}")
    mpi_tasks = _get(cfg, "mpi_tasks", int, "", 40)
    omp_threads = _get(cfg, "omp_threads", int, "", 8)
    _positive(mpi_tasks, "mpi_tasks")
    _positive(omp_threads, "omp_threads")
    if omp_threads > slurm.cores_per_node:
        raise _err("omp_threads", f"({omp_threads}) exceeds slurm.cores_per_node ({slurm.cores_per_node})")
    cal = _get(cfg, "calendar", str, "", "gregorian")
    if cal not in CALENDARS:
        raise _err("calendar", f"must be one of {', '.join(CALENDARS)}, got {cal!r}")
    months_per_job = _get(cfg, "months_per_job", int, "", 6)
    _positive(months_per_job, "months_per_job")
    stack = _get(cfg, "omp_stacksize", str, "", "200M")
    if not re.fullmatch(r"\d+[KMG]?", stack):
        raise _err("omp_stacksize", f"must be like 200M, got {stack!r}")
    guided = _period(cfg, "guided")
    return LmdzJobConfig(
        slurm=slurm,
        executable=_get(cfg, "executable", str, ""),
        reference_dir=_get(cfg, "reference_dir", str, ""),
        run_root=_get(cfg, "run_root", str, ""),
        nudging=nudging,
        guided=guided,
        free=_period(cfg, "free"),
        free_runs=tuple(runs),
        free_start_from=start_from,
        correction=correction,
        forecast=_parse_forecast(cfg, forecast or {}, guided, nudging, cal),
        mpi_tasks=mpi_tasks,
        omp_threads=omp_threads,
        omp_stacksize=stack,
        calendar=cal,
        months_per_job=months_per_job,
        include_defs=_str_list(cfg, "include_defs", "", ("gcm.def", "physiq.def", "config.def", "output.def")),
        reference_files=_str_list(cfg, "reference_files", "", ("start.nc", "startphy.nc", "limit.nc")),
        outputs=_str_list(cfg, "outputs", "", ("histday.nc", "histhf.nc", "histmth.nc")),
    )


# ---------------------------------------------------------------------------------------------
# rendering
# ---------------------------------------------------------------------------------------------


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("nudgeml", "templates/lmdz"),  # package data: works from a wheel
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["yn"] = lambda b: "y" if b else "n"
    env.filters["sq"] = _shell_quote
    return env


def _shell_quote(s: Any) -> str:
    """Single-quote for bash unless the value is a plain word or starts with a variable ($WORK...)."""
    s = str(s)
    if re.fullmatch(r"[A-Za-z0-9_./:@%+=,-]+", s):
        return s
    if re.fullmatch(r"\$[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z0-9_./:@%+=,-]*)?", s):
        return f'"{s}"'
    return "'" + s.replace("'", "'\"'\"'") + "'"


def _chunks(items: list[Month], size: int) -> list[list[Month]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _write(path: Path, text: str, executable: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    if executable:
        tmp.chmod(tmp.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    tmp.replace(path)
    return path


@dataclass(frozen=True)
class _Run:
    name: str
    kind: str  # guided | free
    correction: str  # none | mean | ml
    period: MonthRange
    model_dir: str = ""
    mean_residual: bool = False
    eddy_only: bool = False


def _runs(cfg: LmdzJobConfig) -> list[_Run]:
    out = [_Run("guided", "guided", "none", cfg.guided)]
    out += [_Run(r.name, "free", r.correction, cfg.free, r.model_dir, r.mean_residual, r.eddy_only) for r in cfg.free_runs]
    return out


def _guided_state_before(cfg: LmdzJobConfig, start: _dt.date, key: str, what: str) -> tuple[str, str]:
    """The guided month whose end state is ``start`` (a month start after the guided run's start): its
    tag, and where the guided job keeps that state."""
    guided = month_segments(cfg.guided, cfg.calendar)
    before = [m for m in guided if (m.year, m.month) < (start.year, start.month)]
    if not before:
        raise _err(key, f"({start}) must be after lmdz.guided.start {what}")
    last = before[-1]
    nxt = (last.year + last.month // 12, last.month % 12 + 1)
    if nxt != (start.year, start.month):
        raise _err(key, f"({start}) must be a guided month or the month after them, {what}")
    return last.tag, f"{cfg.run_root}/guided/output/{last.tag}"


def _spinup_start(cfg: LmdzJobConfig) -> tuple[str, str]:
    """Where the forecasts' spin-up run starts: the reference state when it starts with the guided run,
    else the guided run's state at its first day (``(tag, dir)`` as :func:`_free_start`)."""
    if cfg.forecast is None or cfg.forecast.period.start == cfg.guided.start:
        return "", ""
    return _guided_state_before(cfg, cfg.forecast.period.start, "forecast.start", "or equal to it")


def _free_start(cfg: LmdzJobConfig) -> tuple[str, str]:
    """With ``free.start_from: guided``: the guided month whose end state starts the free runs (its
    tag) and where the guided job keeps that state; ``("", "")`` otherwise."""
    if cfg.free_start_from != "guided":
        return "", ""
    return _guided_state_before(cfg, cfg.free.start, "free.start", "with free.start_from: guided")


def render_jobs(cfg: LmdzJobConfig, out_dir: Path, runs: Sequence[str] | None = None) -> list[Path]:
    """Render every run's (or the named ``runs``') job chain and ``.def`` files under ``out_dir``;
    returns the files written.

    Per run ``<out_dir>/<run>/``: ``job_NNN.slurm`` (``months_per_job`` months each), ``submit.sh``,
    ``nudgeml.def`` and, for the guided run, ``guide.def``. The jobs run in
    ``<run_root>/<run>`` and keep each month's outputs in ``<run_root>/<run>/output/<YYYYMM>/``.
    """
    out_dir = Path(out_dir)
    env = _environment()
    written: list[Path] = []
    known = _runs(cfg)
    restart_tag, start_dir = _free_start(cfg)
    spinup_tag, spinup_start_dir = _spinup_start(cfg)
    keep_tags = sorted({t for t in (restart_tag, spinup_tag) if t})
    names = [r.name for r in known] + (["forecast"] if cfg.forecast is not None else [])  # forecast: the spin-up run and the array
    unknown = set(runs or ()) - set(names)
    if unknown:
        raise LmdzConfigError(f"lmdz job kit: no run named {sorted(unknown)}; runs: {names}")
    for run in known:
        if runs is not None and run.name not in runs:
            continue
        kit = out_dir / run.name
        segments = month_segments(run.period, cfg.calendar)
        chunks = _chunks(segments, cfg.months_per_job)
        defs = ["nudgeml.def"] + (["guide.def"] if run.kind == "guided" else [])
        ctx_common = dict(cfg=cfg, run=run, kit_dir=str(kit.resolve()), run_dir=f"{cfg.run_root}/{run.name}",
                          keep_restart_tags=keep_tags if run.kind == "guided" else [],
                          start_dir=start_dir if run.kind == "free" else "",
                          nudge_files=[(v, NUDGE_VARS[v][0]) for v in cfg.nudging.variables],
                          mode=CORRECTIONS[run.correction], defs=defs, n_jobs=len(chunks))
        if run.kind == "guided":
            written.append(_write(kit / "guide.def", env.get_template("guide.def.j2").render(
                **ctx_common, nudge_vars=NUDGE_VARS, tau_days=cfg.nudging.tau_days, save_per_day=cfg.nudging.save_per_day,
                guide_role="the guided run", guide_sav_note=": the training target")))
        written.append(_write(kit / "nudgeml.def", env.get_template("nudgeml.def.j2").render(**ctx_common)))
        jobs = []
        for i, chunk in enumerate(chunks, start=1):
            name = f"job_{i:03d}.slurm"
            text = env.get_template("job.slurm.j2").render(
                **ctx_common, segments=chunk, job_index=i, job_name=f"nudgeml-{run.name}-{i:03d}",
                time_limit=cfg.slurm.time_limit, array="", save_per_day=cfg.nudging.save_per_day,
                run_def=env.get_template("run.def.j2").render(**ctx_common))
            written.append(_write(kit / name, text, executable=True))
            jobs.append(name)
        written.append(_write(kit / "submit.sh", env.get_template("submit.sh.j2").render(**ctx_common, jobs=jobs),
                              executable=True))
    if cfg.forecast is not None and (runs is None or "forecast" in runs):
        written += _render_forecast(cfg, out_dir, env, spinup_start_dir)
    return written


def _render_forecast(cfg: LmdzJobConfig, out_dir: Path, env: jinja2.Environment, start_dir: str) -> list[Path]:
    """The spin-up run (``<out_dir>/spinup/``) and the forecast array (``<out_dir>/forecast/``) of
    ``lmdz.forecast``, with ``forecast/submit.sh`` (both) and ``forecast/cost.json``."""
    import json

    fc = cfg.forecast
    assert fc is not None
    written: list[Path] = []
    samples = forecast_samples(fc, cfg.calendar)
    sample_tags = {d.tag for d in samples}
    spin = spinup_days(fc, cfg.calendar)
    days_after = {d.tag: n.tag for d, n in zip(spin, [*spin[1:], samples[-1]])}
    nudge_files = [(v, NUDGE_VARS[v][0]) for v in cfg.nudging.variables]
    spin_kit, fc_kit = out_dir / "spinup", out_dir / "forecast"
    spin_jobs = []
    for role, kit, tau_days, per_day, note in (
        ("spinup", spin_kit, fc.spinup_tau_hours / 24.0, cfg.nudging.save_per_day, ": kept, not used"),
        ("forecast", fc_kit, FORECAST_TAU_DAYS, fc.save_per_day, f" every {fc.lead_hours:g} h: the target"),
    ):
        run = _Run(role, "guided", "none", fc.period)
        ctx = dict(cfg=cfg, run=run, kit_dir=str(kit.resolve()), run_dir=f"{cfg.run_root}/{role}", nudge_files=nudge_files,
                   mode=0, defs=["nudgeml.def", "guide.def"], tau_days=tau_days, save_per_day=per_day)
        written.append(_write(kit / "guide.def", env.get_template("guide.def.j2").render(
            **ctx, nudge_vars=NUDGE_VARS, guide_role=f"the forecast targets' {role}", guide_sav_note=note)))
        written.append(_write(kit / "nudgeml.def", env.get_template("nudgeml.def.j2").render(**ctx)))
        run_def = env.get_template("run.def.j2").render(**ctx)
        if role == "spinup":
            chunks = _chunks_by_month(spin, cfg.months_per_job)
            for i, chunk in enumerate(chunks, start=1):
                name = f"job_{i:03d}.slurm"
                keep = {d.tag: (days_after[d.tag] if days_after[d.tag] in sample_tags else "-") for d in chunk}
                written.append(_write(kit / name, env.get_template("spinup.slurm.j2").render(
                    **ctx, days=chunk, keep=keep, job_index=i, n_jobs=len(chunks), job_name=f"nudgeml-spinup-{i:03d}",
                    time_limit=cfg.slurm.time_limit, array="", start_dir=start_dir, run_def=run_def), executable=True))
                spin_jobs.append(name)
        else:
            tasks = [samples[i:i + fc.samples_per_task] for i in range(0, len(samples), fc.samples_per_task)]
            written.append(_write(kit / "forecast.slurm", env.get_template("forecast.slurm.j2").render(
                **ctx, fc=fc, samples=samples, tasks=tasks, job_name="nudgeml-forecast", time_limit=fc.time_limit,
                array=f"1-{len(tasks)}", spinup_dir=f"{cfg.run_root}/spinup", run_def=run_def), executable=True))
            written.append(_write(kit / "submit.sh", env.get_template("submit_forecast.sh.j2").render(
                spinup_jobs=spin_jobs, n_tasks=len(tasks)), executable=True))
    written.append(_write(fc_kit / "cost.json", json.dumps(forecast_cost(cfg), indent=2) + "\n"))
    return written

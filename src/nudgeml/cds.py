"""ERA5 from the Copernicus Climate Data Store (``era5.source: cds``), with the real ``cdsapi`` client.

One CDS request per (file kind, month), each producing exactly one of the files the ERA5 stage
promises (:func:`nudgeml.era5.era5_paths`), in the request shape of the 2024+ CDS:

=================  ===================================  =================================  ==============
file               dataset                              variables                          times
=================  ===================================  =================================  ==============
pressure_levels/M  ``reanalysis-era5-pressure-levels``  u v t q z on ``pressure_levels``   00 06 12 18
single_levels/M    ``reanalysis-era5-single-levels``    sp                                 00 06 12 18
precipitation/M    ``reanalysis-era5-single-levels``    tp (hourly accumulation)           every hour
invariant          ``reanalysis-era5-single-levels``    z (orography), lsm                 first day 00
=================  ===================================  =================================  ==============

Files are netCDF (``<kind>/<month>.nc``) or, with ``era5.cds.data_format: grib``, ERA5's native GRIB
(``<kind>/<month>.grib``, checked through cdo: :mod:`nudgeml.grib`).

Whole months are requested, whatever part of them the period covers: a month file is then the same
for every period that touches it. Accumulated (``tp``) and instantaneous (``sp``) variables are never
mixed in one request: the CDS would answer with a zip of two files instead of one file.

Each file is downloaded to a temporary sibling, checked (variables, every expected time, every
requested level) and only then renamed, so a file under its final name is always complete. A valid
existing file is skipped; an invalid one (a partial copy, an older request) is fetched again. A failed
attempt (server error, failed job, a download cut short, an invalid file) is retried with exponential
backoff; a request the CDS rejects (4xx) or a refused key fails at once with the server's reason.

The key comes from ``CDSAPI_URL``/``CDSAPI_KEY`` or ``~/.cdsapirc`` (``CDSAPI_RC`` names another
file), as ``cdsapi`` reads them; it is never logged, printed or written: every message of the client
and of this module goes through a filter that masks it.
"""

from __future__ import annotations

import calendar
import contextlib
import logging
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from nudgeml.atomic import atomic_path
from nudgeml.config import months_between
from nudgeml.conventions import ERA5_KINDS, check_era5_file
from nudgeml.naming import DATA_FORMAT_SUFFIX
from nudgeml.errors import CdsError, ConfigError, InputError
from nudgeml.grib import check_era5_grib, is_grib

log = logging.getLogger(__name__)

DATASET_PRESSURE_LEVELS = "reanalysis-era5-pressure-levels"
DATASET_SINGLE_LEVELS = "reanalysis-era5-single-levels"

#: CDS request names of the short names the files hold.
CDS_VARIABLES: dict[str, str] = {
    "u": "u_component_of_wind",
    "v": "v_component_of_wind",
    "t": "temperature",
    "q": "specific_humidity",
    "z": "geopotential",
    "sp": "surface_pressure",
    "tp": "total_precipitation",
    "lsm": "land_sea_mask",
}

#: The 37 pressure levels (hPa) ERA5 is archived on; a request for any other is rejected.
ERA5_PRESSURE_LEVELS_HPA = (1, 2, 3, 5, 7, 10, 20, 30, 50, 70, 100, 125, 150, 175, 200, 225, 250, 300, 350,
                            400, 450, 500, 550, 600, 650, 700, 750, 775, 800, 825, 850, 875, 900, 925, 950, 975, 1000)

#: ``era5.cds.data_format`` -> the suffix of the ERA5 files: GRIB is the CDS's native format (nudgeml.grib)

ANALYSIS_HOURS = (0, 6, 12, 18)
ALL_HOURS = tuple(range(24))

#: file kind -> (dataset, short names, hours of the day)
KINDS: dict[str, tuple[str, tuple[str, ...], tuple[int, ...]]] = {
    "pressure_levels": (DATASET_PRESSURE_LEVELS, ("u", "v", "t", "q", "z"), ANALYSIS_HOURS),
    "single_levels": (DATASET_SINGLE_LEVELS, ("sp",), ANALYSIS_HOURS),
    "precipitation": (DATASET_SINGLE_LEVELS, ("tp",), ALL_HOURS),
    "invariant": (DATASET_SINGLE_LEVELS, ("z", "lsm"), (0,)),
}


@dataclass(frozen=True)
class CdsSettings:
    """The ``era5.cds`` section of the configuration (documented in the schema)."""

    grid: tuple[float, float] | None = None
    area: tuple[float, float, float, float] | None = None
    attempts: int = 5
    backoff_seconds: float = 60.0
    client_retries: int = 10
    client_sleep_seconds: float = 120.0
    timeout_seconds: float = 60.0
    data_format: str = "netcdf"

    @classmethod
    def from_config(cls, era5: Mapping[str, Any]) -> "CdsSettings":
        if "cds" not in era5:
            raise ConfigError("config key 'era5.cds' is required when era5.source is 'cds'")
        c = era5["cds"]
        grid = tuple(float(x) for x in c["grid"]) if c.get("grid") is not None else None
        area = tuple(float(x) for x in c["area"]) if c.get("area") is not None else None
        if area is not None and not area[0] > area[2]:
            raise ConfigError(f"config key 'era5.cds.area' {list(area)} is [N, W, S, E]: north must exceed south")
        if c.get("data_format", "netcdf") not in DATA_FORMAT_SUFFIX:
            raise ConfigError(f"config key 'era5.cds.data_format' is {c['data_format']!r}; use one of {sorted(DATA_FORMAT_SUFFIX)}")
        return cls(grid=grid, area=area, attempts=int(c["attempts"]), backoff_seconds=float(c["backoff_seconds"]),  # type: ignore[arg-type]
                   client_retries=int(c["client_retries"]), client_sleep_seconds=float(c["client_sleep_seconds"]),
                   timeout_seconds=float(c["timeout_seconds"]), data_format=str(c.get("data_format", "netcdf")))


def check_cds_config(config: Mapping[str, Any]) -> None:
    """Cross-key checks for ``era5.source: cds`` (run at workflow start, before any job)."""
    CdsSettings.from_config(config["era5"])
    bad = [p for p in config["era5"]["pressure_levels_hpa"] if p not in ERA5_PRESSURE_LEVELS_HPA]
    if bad:
        raise ConfigError(f"config key 'era5.pressure_levels_hpa': {bad} hPa are not ERA5 levels; choose among {list(ERA5_PRESSURE_LEVELS_HPA)}")


# --------------------------------------------------------------------------------------------------
# Requests and the files they must produce
# --------------------------------------------------------------------------------------------------


def _days(month: str) -> list[int]:
    year, mon = (int(x) for x in month.split("-"))
    return list(range(1, calendar.monthrange(year, mon)[1] + 1))


def build_request(kind: str, month: str, plev_hpa: Sequence[float], settings: CdsSettings) -> tuple[str, dict[str, Any]]:
    """(dataset, request) for one file: ``month`` is ``YYYY-MM`` (for ``invariant``, its first day is used)."""
    dataset, names, hours = KINDS[kind]
    year, mon = month.split("-")
    days = [1] if kind == "invariant" else _days(month)
    request: dict[str, Any] = {
        "product_type": ["reanalysis"],
        "variable": [CDS_VARIABLES[n] for n in names],
        "year": [year],
        "month": [mon],
        "day": [f"{d:02d}" for d in days],
        "time": [f"{h:02d}:00" for h in hours],
        "data_format": settings.data_format,
        "download_format": "unarchived",
    }
    if dataset == DATASET_PRESSURE_LEVELS:
        request["pressure_level"] = [f"{p:g}" for p in sorted(plev_hpa, reverse=True)]
    if settings.area is not None:
        request["area"] = list(settings.area)
    if settings.grid is not None:
        request["grid"] = list(settings.grid)
    return dataset, request


def expected_times(kind: str, month: str) -> np.ndarray:
    """``valid_time`` values a complete file of ``kind`` for ``month`` holds (datetime64[s])."""
    _, _, hours = KINDS[kind]
    days = [1] if kind == "invariant" else _days(month)
    base = np.datetime64(f"{month}-01T00:00:00", "s")
    return np.array([base + np.timedelta64((d - 1) * 24 + h, "h") for d in days for h in hours], dtype="datetime64[s]")


def check_download(path: str | Path, kind: str, month: str, plev_hpa: Sequence[float], data_format: str | None = None) -> None:
    """Raise :class:`InputError` naming ``path`` unless it is a complete ERA5 ``kind`` file for ``month``
    (in ``data_format`` when given: ``netcdf`` or ``grib``)."""
    path = Path(path)
    with path.open("rb") as fh:
        if fh.read(4) == b"PK\x03\x04":
            raise InputError(f"{path}: the CDS sent a zip archive, not one file (a request mixing accumulated and instantaneous variables?)")
    grib = is_grib(path)
    if data_format is not None and grib != (data_format == "grib"):
        raise InputError(f"{path}: {'GRIB' if grib else 'not GRIB'} where data_format {data_format!r} was requested")
    if grib:
        _check_grib_download(path, kind, month, plev_hpa)
        return
    check_era5_file(path, kind)
    with xr.open_dataset(path, decode_times=False) as ds:
        if "valid_time" in ds.variables:
            units = ds["valid_time"].attrs.get("units", "")
            m = re.fullmatch(r"seconds since (\d{4}-\d{2}-\d{2})(?:[ T](\d{2}:\d{2}(?::\d{2})?))?", units.strip())
            if not m:
                raise InputError(f"{path}: 'valid_time' has units {units!r}, expected 'seconds since YYYY-MM-DD'")
            epoch = np.datetime64(f"{m.group(1)}T{m.group(2) or '00:00'}", "s")
            have = epoch + ds["valid_time"].values.astype("int64").astype("timedelta64[s]")
        elif kind == "invariant":
            have = expected_times(kind, month)
        else:
            raise InputError(f"{path}: ERA5 {kind} file has no 'valid_time'")
        want = expected_times(kind, month)
        missing = np.setdiff1d(want, have)
        if missing.size:
            raise InputError(f"{path}: ERA5 {kind} file for {month} lacks {missing.size} of {want.size} times (first missing {missing[0]})")
        if kind == "pressure_levels":
            lost = sorted(set(float(p) for p in plev_hpa) - set(float(p) for p in ds["pressure_level"].values), reverse=True)
            if lost:
                raise InputError(f"{path}: ERA5 pressure_levels file lacks the levels {lost} hPa")


def _check_grib_download(path: Path, kind: str, month: str, plev_hpa: Sequence[float]) -> None:
    names, has_levels = ERA5_KINDS[kind]
    inv = check_era5_grib(path, kind, names, has_levels)
    want = expected_times(kind, month)
    missing = np.setdiff1d(want, inv.times)
    if kind != "invariant" and missing.size:
        raise InputError(f"{path}: ERA5 {kind} GRIB file for {month} lacks {missing.size} of {want.size} times (first missing {missing[0]})")
    for name in names if has_levels else ():
        lost = sorted(set(float(p) for p in plev_hpa) - set(inv.levels_hpa(name)), reverse=True)
        if lost:
            raise InputError(f"{path}: ERA5 pressure_levels GRIB variable {name!r} lacks the levels {lost} hPa")


# --------------------------------------------------------------------------------------------------
# The key: read as cdsapi reads it, never shown
# --------------------------------------------------------------------------------------------------


def cds_credentials() -> tuple[str, str, bool]:
    """(url, key, verify) from ``CDSAPI_URL``/``CDSAPI_KEY`` or the ``.cdsapirc`` file; :class:`CdsError` if absent."""
    import os

    from cdsapi.api import get_url_key_verify

    rc = os.environ.get("CDSAPI_RC", os.path.expanduser("~/.cdsapirc"))
    try:
        url, key, verify = get_url_key_verify(None, None, None)
    except Exception:
        url = key = None
    if not url or not key:
        raise CdsError(
            f"no CDS API key: set CDSAPI_URL and CDSAPI_KEY, or write 'url: https://cds.climate.copernicus.eu/api' and "
            f"'key: <your token>' lines in {rc} (CDSAPI_RC names another file)"
        )
    if ":" in key:
        raise CdsError(
            f"the CDS API key in {'CDSAPI_KEY' if os.environ.get('CDSAPI_KEY') else rc} has the pre-2024 'UID:KEY' form; "
            "the current CDS uses a personal access token (copy it from your CDS profile page)"
        )
    return url.rstrip("/"), key, bool(verify)


class _Mask(logging.Filter):
    """Replace the key by ``***`` in every record that reaches a handler."""

    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret

    def __call__(self, text: str) -> str:
        return text.replace(self.secret, "***") if self.secret else text

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if self.secret in msg:
            record.msg, record.args = self(msg), None
        if record.exc_info:
            record.exc_text = self(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = self(record.exc_text)
        return True


@contextlib.contextmanager
def _masked(secret: str) -> Iterator[_Mask]:
    """Mask ``secret`` on every handler of the root logger and of the client loggers for the block."""
    mask = _Mask(secret)
    handlers = set(logging.getLogger().handlers)
    for name in ("cdsapi", "ecmwf", "ecmwf.datastores", "ecmwf.datastores.legacy_client", "multiurl", "nudgeml", __name__):
        handlers.update(logging.getLogger(name).handlers)
    for h in handlers:
        h.addFilter(mask)
    try:
        yield mask
    finally:
        for h in handlers:
            h.removeFilter(mask)


def make_client(settings: CdsSettings, mask: _Mask, url: str, key: str, verify: bool) -> Any:
    """The real ``cdsapi.Client``; all its messages go to this module's logger, masked."""
    import cdsapi

    client_log = logging.getLogger(f"{__name__}.client")

    def emit(level: int) -> Callable[..., None]:
        def callback(msg: Any, *args: Any, **_: Any) -> None:
            text = str(msg) % args if args else str(msg)
            client_log.log(level, "%s", mask(text))

        return callback

    return cdsapi.Client(
        url=url, key=key, verify=verify, quiet=True, progress=False,
        timeout=settings.timeout_seconds, retry_max=settings.client_retries, sleep_max=settings.client_sleep_seconds,
        info_callback=emit(logging.INFO), warning_callback=emit(logging.WARNING),
        error_callback=emit(logging.ERROR), debug_callback=emit(logging.DEBUG),
    )


# --------------------------------------------------------------------------------------------------
# Fetching
# --------------------------------------------------------------------------------------------------


def _classify(exc: BaseException) -> tuple[bool, str]:
    """(permanent?, reason) of a failed attempt."""
    import requests

    if isinstance(exc, requests.HTTPError):
        status = exc.response.status_code if exc.response is not None else None
        reason = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        url = exc.response.url if exc.response is not None else ""
        if url.rstrip("/").endswith("/results"):  # the job ran and failed (often transient at the CDS)
            return False, f"the CDS job failed: {reason}"
        if status in (401, 403):
            return True, f"the CDS refused the key (HTTP {status}): {reason} -- check the key and that the dataset's licence is accepted on the CDS website"
        if status is not None and 400 <= status < 500 and status not in (408, 429):
            return True, f"the CDS rejected the request (HTTP {status}): {reason}"
    text = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return False, f"{type(exc).__name__}: {text or repr(exc)}"


def _retriable_errors() -> tuple[type[BaseException], ...]:
    import requests
    from ecmwf.datastores.processing import DownloadError, LinkError, ProcessingFailedError

    return (requests.RequestException, ProcessingFailedError, DownloadError, LinkError, InputError, AssertionError, ConnectionError, TimeoutError)


def _remove_stale_partials(target: Path) -> None:
    """Temporary files of an earlier attempt killed before it could clean up (``atomic_path`` names)."""
    for stale in target.parent.glob(f".{target.stem}.*.tmp{target.suffix}"):
        log.info("removing the partial download %s of an interrupted run", stale)
        stale.unlink(missing_ok=True)


def fetch(
    kind: str,
    month: str,
    target: str | Path,
    *,
    plev_hpa: Sequence[float],
    settings: CdsSettings,
    sleep: Callable[[float], None] = time.sleep,
) -> Path:
    """Download one ERA5 file (see the module docstring); return its path.

    ``month`` is ``YYYY-MM`` (for ``invariant``: the month whose first day is requested).
    """
    target = Path(target)
    if kind not in KINDS:
        raise ValueError(f"unknown ERA5 file kind {kind!r}; use one of {sorted(KINDS)}")
    if target.exists():
        try:
            check_download(target, kind, month, plev_hpa, settings.data_format)
            log.info("%s is complete: skipped", target)
            return target
        except InputError as exc:
            log.warning("%s is not a complete file (%s): fetching it again", target, exc)
            target.unlink()
    dataset, request = build_request(kind, month, plev_hpa, settings)
    url, key, verify = cds_credentials()
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(target)
    retriable = _retriable_errors()
    with _masked(key) as mask:
        client = make_client(settings, mask, url, key, verify)
        reason = ""
        for attempt in range(1, settings.attempts + 1):
            log.info("%s: requesting %s %s (%s), attempt %d of %d", target, dataset, month, ", ".join(request["variable"]), attempt, settings.attempts)
            try:
                with atomic_path(target) as tmp:
                    client.retrieve(dataset, request, str(tmp))
                    check_download(tmp, kind, month, plev_hpa, settings.data_format)
                log.info("%s: complete (%.1f MB)", target, target.stat().st_size / 1e6)
                return target
            except retriable as exc:
                permanent, reason = _classify(exc)
                reason = mask(reason)
                if permanent:
                    raise CdsError(f"{target}: {dataset} {month}: {reason}") from None
                if attempt < settings.attempts:
                    wait = settings.backoff_seconds * 2 ** (attempt - 1)
                    log.warning("%s: attempt %d failed (%s); retrying in %.3g s", target, attempt, reason, wait)
                    sleep(wait)
        raise CdsError(f"{target}: {dataset} {month}: all {settings.attempts} attempts failed; last: {reason}")


def download_era5(config: Mapping[str, Any], era5_dir: str | Path, *, sleep: Callable[[float], None] = time.sleep) -> dict[str, list[Path] | Path]:
    """Every file of the ERA5 stage for the configured period, valid ones skipped; return their paths."""
    from nudgeml.era5 import MONTHLY_KINDS, era5_paths  # imports the GCM: only here

    settings = CdsSettings.from_config(config["era5"])
    check_cds_config(config)
    plev = config["era5"]["pressure_levels_hpa"]
    start, end = config["period"]["start"], config["period"]["end"]
    paths = era5_paths(era5_dir, start, end, suffix=DATA_FORMAT_SUFFIX[settings.data_format])
    months = months_between(start, end)
    for kind in MONTHLY_KINDS:
        for month, path in zip(months, paths[kind]):  # type: ignore[arg-type]
            fetch(kind, month, path, plev_hpa=plev, settings=settings, sleep=sleep)
    fetch("invariant", months[0], paths["invariant"], plev_hpa=plev, settings=settings, sleep=sleep)  # type: ignore[arg-type]
    return paths

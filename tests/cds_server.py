"""A loopback Climate Data Store: the HTTP protocol the pinned client speaks, served on 127.0.0.1.

``cdsapi`` 0.7.7 hands a current CDS token (no ``:``) to ``ecmwf-datastores-client`` 0.5.3, which:

1. ``GET  {url}/catalogue/v1/messages``                       service messages (on client creation)
2. ``GET  {url}/retrieve/v1/processes/{dataset}``             the process (dataset) description
3. ``POST {url}/retrieve/v1/processes/{dataset}/execution``   ``{"inputs": request}``, ``PRIVATE-TOKEN``
                                                              header -> 201 + a ``monitor`` link
4. ``GET  {url}/retrieve/v1/jobs/{id}?log=true&request=true`` status: accepted, running, successful
                                                              or failed, with log lines
5. ``GET  {url}/retrieve/v1/jobs/{id}`` then ``.../results``  the asset: ``href``, ``file:size``, ``type``
6. ``HEAD``/``GET`` on the asset ``href``                     the file, with byte ranges (resume)

4xx answers carry ``{"title", "detail"}`` JSON, which the client turns into its error message.

The server checks requests the way the CDS does for this workflow's use (known keys, the
``product_type``/``data_format``/``download_format`` values, variables of the dataset, ERA5 levels,
``area``/``grid`` shapes) and serves a CDS-like NetCDF generated for the request: ``valid_time``
(seconds since 1970), ``pressure_level`` (hPa, decreasing), ``latitude`` (90 -> -90), ``longitude``,
``number``, ``expver``, on the requested ``grid``/``area``; for ``data_format: grib``, that file
written as GRIB1 by ``cdo`` (:func:`to_grib`: ECMWF parameter codes, isobaricInhPa levels). :class:`Faults` makes it reject requests,
fail jobs, answer 500, cut downloads short or serve a broken file.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import socket
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np
import xarray as xr

from factories import to_grib
from nudgeml.conventions import ERA5_GLOBAL_ATTRS, ERA5_VARS, era5_coords

PL = "reanalysis-era5-pressure-levels"
SL = "reanalysis-era5-single-levels"
SHORT = {
    "u_component_of_wind": "u", "v_component_of_wind": "v", "temperature": "t", "specific_humidity": "q",
    "geopotential": "z", "surface_pressure": "sp", "total_precipitation": "tp", "land_sea_mask": "lsm",
}
DATASET_VARIABLES = {
    PL: {"u_component_of_wind", "v_component_of_wind", "temperature", "specific_humidity", "geopotential"},
    SL: {"surface_pressure", "total_precipitation", "geopotential", "land_sea_mask"},
}
ERA5_LEVELS = {1, 2, 3, 5, 7, 10, 20, 30, 50, 70, 100, 125, 150, 175, 200, 225, 250, 300, 350, 400, 450, 500,
               550, 600, 650, 700, 750, 775, 800, 825, 850, 875, 900, 925, 950, 975, 1000}
KEYS = {"product_type", "variable", "year", "month", "day", "time", "data_format", "download_format", "area", "grid"}

_NETCDF_LOCK = threading.Lock()

Predicate = Callable[[str, dict[str, Any]], "str | None"]


@dataclass
class Faults:
    """What goes wrong. Predicates get (dataset, request) and return a message (fault) or None."""

    reject: Predicate | None = None  # 400 at submission
    fail_job: Predicate | None = None  # the job ends 'failed'
    http_500_on_submit: int = 0  # the first N submissions answer 500
    cut_downloads: int = 0  # the first N download responses stop at cut_at of the file; -1: all
    cut_at: float = 0.5
    byte_ranges: bool = True
    broken_file: Predicate | None = None  # serve a truncated NetCDF (correct HTTP size)
    running_polls: int = 0  # status polls answering 'running' before 'successful'


@dataclass
class Job:
    id: str
    dataset: str
    request: dict[str, Any]
    status: str = "accepted"
    polls: int = 0
    error: str | None = None
    data: bytes = b""


@dataclass
class Seen:
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    tokens: list[str | None] = field(default_factory=list)
    ranges: list[str | None] = field(default_factory=list)
    downloads: int = 0


def _check_request(dataset: str, req: dict[str, Any]) -> str | None:
    """The CDS's objection to ``req``, or None."""
    unknown = set(req) - KEYS - ({"pressure_level"} if dataset == PL else set())
    if unknown:
        return f"invalid request keys {sorted(unknown)}"
    for key in ("product_type", "variable", "year", "month", "day", "time", "data_format", "download_format") + (("pressure_level",) if dataset == PL else ()):
        if key not in req:
            return f"missing mandatory input {key!r}"
    for key in ("product_type", "variable", "year", "month", "day", "time") + (("pressure_level",) if dataset == PL else ()):
        if not isinstance(req[key], list) or not all(isinstance(x, str) for x in req[key]):
            return f"{key!r} must be a list of strings"
    if req["product_type"] != ["reanalysis"]:
        return f"product_type {req['product_type']} not available"
    if req["data_format"] not in ("netcdf", "grib") or req["download_format"] != "unarchived":
        return "this server only produces data_format 'netcdf' or 'grib', download_format 'unarchived'"
    bad = set(req["variable"]) - DATASET_VARIABLES[dataset]
    if bad:
        return f"variable {sorted(bad)} not available in {dataset}"
    if dataset == PL and any(float(p) not in ERA5_LEVELS for p in req["pressure_level"]):
        return f"pressure_level {req['pressure_level']} not all valid"
    if not all(re.fullmatch(r"\d{4}", y) for y in req["year"]) or not all(re.fullmatch(r"(0[1-9]|1[0-2])", m) for m in req["month"]):
        return "invalid year/month values"
    if not all(re.fullmatch(r"(0[1-9]|[12]\d|3[01])", d) for d in req["day"]) or not all(re.fullmatch(r"([01]\d|2[0-3]):00", t) for t in req["time"]):
        return "invalid day/time values"
    if "area" in req and (not isinstance(req["area"], list) or len(req["area"]) != 4 or not req["area"][0] > req["area"][2]):
        return "area must be [north, west, south, east]"
    if "grid" in req and (not isinstance(req["grid"], list) or len(req["grid"]) != 2 or min(req["grid"]) <= 0):
        return "grid must be [dlat, dlon]"
    return None


def _fields(name: str, lat: np.ndarray, lon: np.ndarray, plev: np.ndarray | None, hour: float) -> np.ndarray:
    """Smooth, roughly realistic values (canonical: latitudes ascending), moving with time."""
    la, lo = np.deg2rad(lat)[:, None], np.deg2rad(lon)[None, :]
    wave = np.cos(la) ** 2 * np.cos(2 * lo - 2 * np.pi * hour / 240.0)
    if plev is not None:
        lnp = np.log(plev / 1000.0)[:, None, None]
        height_m = -7000.0 * lnp
        if name == "t":
            return 288.0 - 6.5e-3 * np.minimum(height_m, 11000.0) + 5.0 * wave[None]
        if name == "z":
            return 9.81 * height_m + 100.0 * wave[None]
        if name == "q":
            return 0.01 * np.exp(3.0 * lnp) * (0.5 + 0.5 * np.cos(la))[None]
        sign = 1.0 if name == "u" else -0.3
        return sign * (10.0 + 20.0 * np.exp(-((height_m - 10000.0) / 4000.0) ** 2)) * np.cos(la)[None] + wave[None]
    if name == "sp":
        return 101000.0 - 500.0 * wave
    if name == "tp":
        return 1e-4 * (1.0 + wave) ** 2
    if name == "z":
        return 50.0 * (1.0 + wave)
    return (wave > 0.3).astype(np.float64)  # lsm


def render(dataset: str, req: dict[str, Any], path: str) -> None:
    """Write the file the CDS would serve for ``req`` to ``path``: NetCDF, or GRIB for ``data_format: grib``."""
    if req.get("data_format") == "grib":
        render(dataset, {**req, "data_format": "netcdf"}, path + ".nc")
        to_grib(path + ".nc", path)
        os.unlink(path + ".nc")
        return
    dlat, dlon = (float(x) for x in req.get("grid", [0.25, 0.25]))
    north, west, south, east = (float(x) for x in req.get("area", [90.0, 0.0, -90.0, 360.0 - dlon]))
    lat_desc = np.arange(north, south - 1e-9, -dlat)
    lon = np.arange(west, east + 1e-9, dlon)
    lat = lat_desc[::-1]
    plev = np.array(sorted((float(p) for p in req["pressure_level"]), reverse=True)) if dataset == PL else None
    times = []
    for y, m, d, t in itertools.product(req["year"], req["month"], req["day"], req["time"]):
        try:
            times.append(np.datetime64(f"{y}-{m}-{d}T{t}", "s"))
        except ValueError:  # 31 February: the CDS ignores impossible dates
            continue
    times = np.array(sorted(times), dtype="datetime64[s]")
    seconds = (times - np.datetime64("1970-01-01T00:00:00", "s")).astype(np.int64)
    coords = {k: (v[0], v[1], v[2]) for k, v in era5_coords(lat_desc, lon, plev).items()}
    coords["valid_time"] = (("valid_time",), seconds, {"long_name": "time", "standard_name": "time", "units": "seconds since 1970-01-01", "calendar": "proleptic_gregorian"})
    data_vars = {}
    dims = ("valid_time",) + (("pressure_level",) if plev is not None else ()) + ("latitude", "longitude")
    for var in req["variable"]:
        name = SHORT[var]
        shape = ((plev.size,) if plev is not None else ()) + (lat.size, lon.size)
        values = np.stack([np.broadcast_to(_fields(name, lat, lon, plev, float(h)), shape) for h in (seconds - seconds[0]) / 3600.0])
        data_vars[name] = (dims, values[..., ::-1, :].astype(np.float32), ERA5_VARS[name])
    data_vars["expver"] = (("valid_time",), np.array(["0001"] * times.size, dtype=object), {"long_name": "experiment version"})
    ds = xr.Dataset(data_vars, coords=coords, attrs={**ERA5_GLOBAL_ATTRS, "history": "loopback CDS"})
    enc = {n: {"zlib": True, "complevel": 1} for n in data_vars if n != "expver"}
    enc["valid_time"] = {"dtype": "int64"}
    ds.to_netcdf(path, engine="netcdf4", encoding=enc)


class LoopbackCds:
    """Run with ``with LoopbackCds(key) as cds:``; point the client at ``cds.url``."""

    def __init__(self, key: str, faults: Faults | None = None) -> None:
        self.key = key
        self.faults = faults or Faults()
        self.jobs: dict[str, Job] = {}
        self.seen = Seen()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="loopback-cds", daemon=True)

    @property
    def base(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def url(self) -> str:
        return f"{self.base}/api"

    def __enter__(self) -> "LoopbackCds":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    # -- the protocol -------------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        cds = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _json(self, status: int, body: Any) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def _error(self, status: int, title: str, detail: str) -> None:
                self._json(status, {"type": "about:blank", "title": title, "status": status, "detail": detail})

            def _authorised(self) -> bool:
                token = self.headers.get("PRIVATE-TOKEN")
                cds.seen.tokens.append(token)
                if token != cds.key:
                    self._error(401, "Authentication failed", "The authentication token is missing or invalid")
                    return False
                return True

            def do_GET(self) -> None:  # noqa: N802
                self._get(head=False)

            def do_HEAD(self) -> None:  # noqa: N802
                self._get(head=True)

            def _get(self, head: bool) -> None:
                parts = urlparse(self.path)
                path = parts.path
                if path == "/api/catalogue/v1/messages":
                    return self._json(200, {"messages": []})
                m = re.fullmatch(r"/api/retrieve/v1/processes/([\w-]+)", path)
                if m:
                    if m.group(1) not in DATASET_VARIABLES:
                        return self._error(404, "dataset not found", f"dataset {m.group(1)} not found")
                    return self._json(200, {"id": m.group(1), "links": [], "messages": []})
                m = re.fullmatch(r"/api/retrieve/v1/jobs/(\w+)(/results)?", path)
                if m:
                    if not self._authorised():
                        return None
                    job = cds.jobs.get(m.group(1))
                    if job is None:
                        return self._error(404, "job not found", m.group(1))
                    if m.group(2):
                        return self._results(job)
                    if "log" in parse_qs(parts.query):  # a status poll
                        with cds._lock:
                            job.polls += 1
                            if job.status == "accepted":
                                job.status = "running"
                            if job.status == "running" and job.polls > cds.faults.running_polls:
                                job.status = "failed" if job.error else "successful"
                    return self._json(200, self._job_json(job))
                m = re.fullmatch(r"/download/(\w+)\.(?:nc|grib)", path)
                if m and m.group(1) in cds.jobs:
                    return self._download(cds.jobs[m.group(1)], head)
                return self._error(404, "not found", path)

            def _job_json(self, job: Job) -> dict[str, Any]:
                jobs = f"{cds.url}/retrieve/v1/jobs/{job.id}"
                return {
                    "processID": job.dataset, "type": "process", "jobID": job.id, "status": job.status,
                    "created": "2026-01-01T00:00:00", "updated": "2026-01-01T00:00:01",
                    "metadata": {"log": [["2026-01-01T00:00:01", f"INFO: job {job.id} is {job.status}"]], "request": {"ids": job.request}},
                    "links": [{"href": jobs, "rel": "self", "type": "application/json"},
                              {"href": f"{jobs}/results", "rel": "results", "type": "application/json"}],
                }

            def _results(self, job: Job) -> None:
                if job.status == "failed":
                    return self._error(400, "The job has failed", job.error or "failed")
                if job.status != "successful":
                    return self._error(404, "results not ready", job.status)
                ext, mime = (".grib", "application/x-grib") if job.request.get("data_format") == "grib" else (".nc", "application/netcdf")
                return self._json(200, {"asset": {"value": {
                    "type": mime, "href": f"{cds.base}/download/{job.id}{ext}",
                    "file:size": len(job.data), "file:checksum": "", "file:local_path": f"/cache/{job.id}{ext}"}}})

            def do_POST(self) -> None:  # noqa: N802
                m = re.fullmatch(r"/api/retrieve/v1/processes/([\w-]+)/execution", urlparse(self.path).path)
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                if not m:
                    return self._error(404, "not found", self.path)
                if not self._authorised():
                    return None
                dataset, request = m.group(1), body.get("inputs", {})
                cds.seen.requests.append((dataset, request))
                with cds._lock:
                    if cds.faults.http_500_on_submit > 0:
                        cds.faults.http_500_on_submit -= 1
                        return self._error(500, "Internal Server Error", "try again")
                if dataset not in DATASET_VARIABLES:
                    return self._error(404, "dataset not found", dataset)
                objection = _check_request(dataset, request) or (cds.faults.reject and cds.faults.reject(dataset, request))
                if objection:
                    return self._error(400, "invalid request", objection)
                job = Job(id=f"job{next(cds._ids)}", dataset=dataset, request=request)
                job.error = cds.faults.fail_job(dataset, request) if cds.faults.fail_job else None
                if not job.error:
                    with _NETCDF_LOCK, tempfile.TemporaryDirectory() as tmp:  # HDF5 is not thread-safe
                        render(dataset, request, os.path.join(tmp, "data.nc"))
                        with open(os.path.join(tmp, "data.nc"), "rb") as fh:
                            job.data = fh.read()
                    if cds.faults.broken_file and cds.faults.broken_file(dataset, request):
                        job.data = job.data[: len(job.data) // 3]
                cds.jobs[job.id] = job
                body_out = self._job_json(job)
                body_out["links"] = [{"href": f"{cds.url}/retrieve/v1/jobs/{job.id}", "rel": "monitor", "type": "application/json"}]
                self._json(201, body_out)

            def do_DELETE(self) -> None:  # noqa: N802
                m = re.fullmatch(r"/api/retrieve/v1/jobs/(\w+)", urlparse(self.path).path)
                if m and self._authorised():
                    job = cds.jobs.pop(m.group(1), None)
                    self._json(200 if job else 404, {"jobID": m.group(1), "status": "dismissed"})

            def _download(self, job: Job, head: bool) -> None:
                data, start = job.data, 0
                rng = self.headers.get("Range")
                if not head:
                    cds.seen.ranges.append(rng)
                if rng and cds.faults.byte_ranges:
                    m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())
                    start = int(m.group(1)) if m else 0
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Type", "application/netcdf")
                self.send_header("Content-Length", str(len(data) - start))
                if cds.faults.byte_ranges:
                    self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if head:
                    return
                with cds._lock:
                    cds.seen.downloads += 1
                    cut = cds.faults.cut_downloads != 0
                    if cds.faults.cut_downloads > 0:
                        cds.faults.cut_downloads -= 1
                if not cut:
                    self.wfile.write(data[start:])
                    return
                stop = int(len(data) * cds.faults.cut_at)
                if stop > start:
                    self.wfile.write(data[start:stop])
                self.wfile.flush()
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        return Handler

"""ERA5 download: the real cdsapi client against a loopback server speaking the current CDS protocol.

Network traffic goes to 127.0.0.1 only; every test is bounded (small grid, millisecond backoff).
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml

from cds_server import PL, SL, Faults, LoopbackCds
from nudgeml.cds import CdsSettings, build_request, check_cds_config, check_download, download_era5, expected_times, fetch
from nudgeml.config import validate_config
from nudgeml.errors import CdsError, ConfigError, InputError
from nudgeml.grib import grib_inventory
from nudgeml.logs import rule_logging

REPO = Path(__file__).resolve().parents[1]
KEY = "7f3c9e2a-51d4-4b8e-9a6f-0c2d8e4b1a97"  # a made-up token: must never leave the client
PLEV = [1000, 850, 500, 200, 50]
FAST = CdsSettings(grid=(10.0, 10.0), attempts=3, backoff_seconds=0.01, client_retries=2, client_sleep_seconds=0.01, timeout_seconds=10)


@pytest.fixture()
def cds_env(monkeypatch, tmp_path_factory):
    """No ~/.cdsapirc and no CDSAPI_* from the caller: each test says where the key comes from."""
    for var in ("CDSAPI_URL", "CDSAPI_KEY", "CDSAPI_RC"):
        monkeypatch.delenv(var, raising=False)
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))

    def use(server_url, key=KEY, how="env"):
        if how == "env":
            monkeypatch.setenv("CDSAPI_URL", server_url)
            monkeypatch.setenv("CDSAPI_KEY", key)
        else:
            (home / ".cdsapirc").write_text(f"url: {server_url}\nkey: {key}\n")

    return use


def fetch_pl(target, month="2000-02", settings=FAST):
    return fetch("pressure_levels", month, target, plev_hpa=PLEV, settings=settings, sleep=lambda s: None)


def leftovers(directory):
    return sorted(p.name for p in Path(directory).rglob("*") if p.is_file() and ".tmp" in p.name)


# --------------------------------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------------------------------


def test_requests_have_the_current_cds_shape():
    settings = CdsSettings(grid=(1.0, 1.0), area=(60.0, -20.0, 20.0, 40.0))
    dataset, req = build_request("pressure_levels", "2000-02", [1000, 850.0, 10], settings)
    assert dataset == "reanalysis-era5-pressure-levels"
    assert req == {
        "product_type": ["reanalysis"],
        "variable": ["u_component_of_wind", "v_component_of_wind", "temperature", "specific_humidity", "geopotential"],
        "year": ["2000"], "month": ["02"], "day": [f"{d:02d}" for d in range(1, 30)],  # 2000 is a leap year
        "time": ["00:00", "06:00", "12:00", "18:00"],
        "data_format": "netcdf", "download_format": "unarchived",
        "pressure_level": ["1000", "850", "10"],
        "area": [60.0, -20.0, 20.0, 40.0], "grid": [1.0, 1.0],
    }
    dataset, req = build_request("single_levels", "1999-04", PLEV, CdsSettings())
    assert (dataset, req["variable"], len(req["day"])) == ("reanalysis-era5-single-levels", ["surface_pressure"], 30)
    assert "pressure_level" not in req and "area" not in req and "grid" not in req
    dataset, req = build_request("precipitation", "2001-01", PLEV, CdsSettings())
    assert (dataset, req["variable"], req["time"][:2], len(req["time"])) == ("reanalysis-era5-single-levels", ["total_precipitation"], ["00:00", "01:00"], 24)
    dataset, req = build_request("invariant", "2001-01", PLEV, CdsSettings())
    assert (req["variable"], req["day"], req["time"]) == (["geopotential", "land_sea_mask"], ["01"], ["00:00"])
    assert build_request("pressure_levels", "2001-01", PLEV, CdsSettings(data_format="grib"))[1]["data_format"] == "grib"
    assert expected_times("precipitation", "2001-02").size == 28 * 24
    assert expected_times("pressure_levels", "2001-02")[-1] == np.datetime64("2001-02-28T18:00")


def test_config_checks_name_the_key():
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["era5"]["source"] = "cds"
    check_cds_config(cfg)
    cfg["era5"]["pressure_levels_hpa"] = [1000, 601]
    with pytest.raises(ConfigError, match=r"era5.pressure_levels_hpa.*\[601\]"):
        check_cds_config(cfg)
    cfg["era5"]["pressure_levels_hpa"] = [1000, 500]
    cfg["era5"]["cds"]["area"] = [-10, 0, 10, 20]
    with pytest.raises(ConfigError, match="era5.cds.area"):
        check_cds_config(cfg)
    cfg["era5"]["cds"]["area"] = None
    cfg["era5"]["cds"]["data_format"] = "netcdf4"
    with pytest.raises(ConfigError, match=r"'era5.cds.data_format' is 'netcdf4'; use one of \['grib', 'netcdf'\]"):
        check_cds_config(cfg)
    with pytest.raises(ConfigError, match=r"'era5.cds.data_format': 'netcdf4' is not one of \['netcdf', 'grib'\]"):
        validate_config(cfg)  # the schema, as the workflow validates at start
    del cfg["era5"]["cds"]
    with pytest.raises(ConfigError, match="'era5.cds' is required"):
        check_cds_config(cfg)


# --------------------------------------------------------------------------------------------------
# Downloads through the real client
# --------------------------------------------------------------------------------------------------


def test_a_period_downloads_month_files_then_skips_them(tmp_path, cds_env):
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["era5"]["source"] = "cds"
    cfg["era5"]["pressure_levels_hpa"] = PLEV
    cfg["era5"]["cds"].update(grid=[10.0, 10.0], attempts=2, backoff_seconds=0.01, client_retries=2, client_sleep_seconds=0.01, timeout_seconds=10)
    cfg["period"] = {"start": "2000-01-31T00:00", "end": "2000-02-06T00:00"}
    with LoopbackCds(KEY) as cds:
        cds_env(cds.url, how="rc")  # the key from ~/.cdsapirc
        paths = download_era5(cfg, tmp_path / "era5")
        requests = list(cds.seen.requests)
        again = download_era5(cfg, tmp_path / "era5")
        assert len(cds.seen.requests) == len(requests), "valid files are skipped"
    assert again == paths
    # one request per (kind, month): two months x three kinds + the invariant fields
    assert sorted((d, r["month"][0], tuple(r["variable"])) for d, r in requests) == sorted(
        [(PL, m, ("u_component_of_wind", "v_component_of_wind", "temperature", "specific_humidity", "geopotential")) for m in ("01", "02")]
        + [(SL, m, ("surface_pressure",)) for m in ("01", "02")]
        + [(SL, m, ("total_precipitation",)) for m in ("01", "02")]
        + [(SL, "01", ("geopotential", "land_sea_mask"))]
    )
    assert set(cds.seen.tokens) == {KEY}, "every API call carries the key as PRIVATE-TOKEN"
    for kind in ("pressure_levels", "single_levels", "precipitation"):
        for month, path in zip(("2000-01", "2000-02"), paths[kind]):
            check_download(path, kind, month, PLEV)
    with xr.open_dataset(paths["pressure_levels"][1]) as ds:
        assert ds.sizes == {"valid_time": 29 * 4, "pressure_level": 5, "latitude": 19, "longitude": 36}
        assert ds["latitude"].values[0] == 90.0 and list(ds["pressure_level"].values) == [1000, 850, 500, 200, 50]
    with xr.open_dataset(paths["precipitation"][0]) as ds:
        assert ds.sizes["valid_time"] == 31 * 24
    assert leftovers(tmp_path) == []


def test_grib_downloads_are_real_grib_checked_through_cdo(tmp_path, cds_env):
    """era5.cds.data_format: grib -- the request asks for GRIB, the files are <kind>/<month>.grib, read
    by cdo with ecCodes' short names, isobaricInhPa levels and validity times; then skipped."""
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["era5"]["source"] = "cds"
    cfg["era5"]["pressure_levels_hpa"] = PLEV
    cfg["era5"]["cds"].update(grid=[10.0, 10.0], attempts=2, backoff_seconds=0.01, client_retries=2, client_sleep_seconds=0.01, timeout_seconds=10, data_format="grib")
    cfg["period"] = {"start": "2000-02-01T00:00", "end": "2000-02-03T00:00"}
    with LoopbackCds(KEY) as cds:
        cds_env(cds.url)
        paths = download_era5(cfg, tmp_path / "era5")
        assert {r["data_format"] for _, r in cds.seen.requests} == {"grib"} and len(cds.seen.requests) == 4
        assert download_era5(cfg, tmp_path / "era5") == paths and len(cds.seen.requests) == 4, "valid files are skipped"
    assert paths["pressure_levels"] == [tmp_path / "era5" / "pressure_levels" / "2000-02.grib"] and paths["invariant"] == tmp_path / "era5" / "invariant.grib"
    pl = paths["pressure_levels"][0]
    assert pl.read_bytes()[:4] == b"GRIB"
    inv = grib_inventory(pl)
    assert inv.names == ("u", "v", "t", "q", "z") and inv.levels_hpa("t") == [1000, 850, 500, 200, 50]
    assert inv.times.size == 29 * 4 and inv.times[0] == np.datetime64("2000-02-01T00:00") and inv.times[-1] == np.datetime64("2000-02-29T18:00")
    assert grib_inventory(paths["precipitation"][0]).times.size == 29 * 24
    assert grib_inventory(paths["invariant"]).names == ("z", "lsm")
    with pytest.raises(InputError, match=r"2000-02\.grib: GRIB where data_format 'netcdf' was requested"):
        check_download(pl, "pressure_levels", "2000-02", PLEV, "netcdf")
    with pytest.raises(InputError, match=r"2000-02\.grib: ERA5 pressure_levels GRIB variable 'u' lacks the levels \[70.0\] hPa"):
        check_download(pl, "pressure_levels", "2000-02", PLEV + [70], "grib")
    with pytest.raises(InputError, match=r"2000-02\.grib: ERA5 pressure_levels GRIB file for 2000-03 lacks 124 of 124 times"):
        check_download(pl, "pressure_levels", "2000-03", PLEV, "grib")
    assert leftovers(tmp_path) == []


def test_a_broken_grib_download_is_never_kept(tmp_path, cds_env):
    grib = CdsSettings(**{**FAST.__dict__, "data_format": "grib"})
    with LoopbackCds(KEY, Faults(broken_file=lambda d, r: "yes")) as cds:
        cds_env(cds.url)
        with pytest.raises(CdsError, match=r"2000-02\.grib: .*all 3 attempts failed; last: InputError: .*2000-02\..*\.grib: GRIB file cut short"):
            fetch_pl(tmp_path / "2000-02.grib", settings=grib)
        assert {r["data_format"] for _, r in cds.seen.requests} == {"grib"}
    assert list(tmp_path.iterdir()) == []


def test_an_invalid_existing_file_is_fetched_again(tmp_path, cds_env):
    target = tmp_path / "pressure_levels" / "2000-02.nc"
    target.parent.mkdir()
    stale = target.parent / ".2000-02.abcd1234.tmp.nc"  # left by a run killed mid-download
    with LoopbackCds(KEY) as cds:
        cds_env(cds.url)
        fetch_pl(target)
        good = target.read_bytes()
        target.write_bytes(good[: len(good) // 2])  # a partial copy under the final name
        stale.write_bytes(b"partial")
        with pytest.raises(InputError):
            check_download(target, "pressure_levels", "2000-02", PLEV)
        fetch_pl(target)
        assert len(cds.seen.requests) == 2
    check_download(target, "pressure_levels", "2000-02", PLEV)
    assert not stale.exists() and leftovers(tmp_path) == []
    # a complete file of an older request (fewer levels) does not pass for the current one
    with pytest.raises(InputError, match=r"lacks the levels \[70.0\]"):
        check_download(target, "pressure_levels", "2000-02", PLEV + [70])
    with pytest.raises(InputError, match="for 2000-03 lacks 124 of 124 times"):
        check_download(target, "pressure_levels", "2000-03", PLEV)


def test_a_download_cut_halfway_resumes_with_byte_ranges(tmp_path, cds_env):
    # the client writes 1 MiB chunks: cut the file past its first chunk so there is something to resume
    with LoopbackCds(KEY, Faults(cut_downloads=1, cut_at=0.97, running_polls=1)) as cds:
        cds_env(cds.url)
        target = fetch_pl(tmp_path / "2000-02.nc")
        assert target.stat().st_size > 1 << 20
        assert cds.seen.ranges == [None, "bytes=1048576-"]
    check_download(target, "pressure_levels", "2000-02", PLEV)


def test_a_download_always_cut_fails_clearly_and_keeps_nothing(tmp_path, cds_env):
    with LoopbackCds(KEY, Faults(cut_downloads=-1, cut_at=0.5)) as cds:
        cds_env(cds.url)
        with pytest.raises(CdsError) as err:
            fetch_pl(tmp_path / "2000-02.nc")
        assert len(cds.seen.requests) == FAST.attempts, "each attempt is a new request"
    msg = str(err.value)
    assert str(tmp_path / "2000-02.nc") in msg and "all 3 attempts failed" in msg
    assert list(tmp_path.iterdir()) == [], "no partial or temporary file is left"


def test_a_rejected_request_fails_at_once_with_the_server_reason(tmp_path, cds_env):
    faults = Faults(reject=lambda dataset, req: "Request too large. Requested 120000 items, limit is 60000" if dataset == PL else None)
    with LoopbackCds(KEY, faults) as cds:
        cds_env(cds.url)
        with pytest.raises(CdsError, match=r"2000-02.nc: reanalysis-era5-pressure-levels 2000-02: the CDS rejected the request \(HTTP 400\).*Request too large"):
            fetch_pl(tmp_path / "2000-02.nc")
        assert len(cds.seen.requests) == 1, "a rejection is not retried"
    assert list(tmp_path.iterdir()) == []


def test_server_errors_and_failed_jobs_are_retried(tmp_path, cds_env):
    fails = iter([True, False])
    faults = Faults(http_500_on_submit=1, fail_job=lambda d, r: "MARS returned no data" if next(fails) else None)
    with LoopbackCds(KEY, faults) as cds:
        cds_env(cds.url)
        waits = []
        fetch("pressure_levels", "2000-02", tmp_path / "f.nc", plev_hpa=PLEV, settings=FAST, sleep=waits.append)
        # 500 retried inside the client; the failed job retried by a new request after a backoff
        assert len(cds.seen.requests) == 3 and waits == [FAST.backoff_seconds]
    with LoopbackCds(KEY, Faults(fail_job=lambda d, r: "MARS returned no data")) as cds:
        cds_env(cds.url)
        waits = []
        with pytest.raises(CdsError, match="all 3 attempts failed; last: .*MARS returned no data"):
            fetch("pressure_levels", "2000-02", tmp_path / "g.nc", plev_hpa=PLEV, settings=FAST, sleep=waits.append)
        assert waits == [0.01, 0.02], "exponential backoff between attempts"
    assert not (tmp_path / "g.nc").exists()


def test_a_broken_file_is_never_kept_as_complete(tmp_path, cds_env):
    with LoopbackCds(KEY, Faults(broken_file=lambda d, r: "yes")) as cds:
        cds_env(cds.url)
        with pytest.raises(CdsError, match="cannot be read as NetCDF"):
            fetch_pl(tmp_path / "2000-02.nc")
    assert list(tmp_path.iterdir()) == []


def test_a_missing_key_is_a_clear_error_before_any_request(tmp_path, cds_env):
    with LoopbackCds(KEY) as cds:
        with pytest.raises(CdsError, match=r"no CDS API key: set CDSAPI_URL and CDSAPI_KEY, or write .* lines in .*/\.cdsapirc"):
            fetch_pl(tmp_path / "2000-02.nc")
        assert cds.seen.requests == [] and cds.seen.tokens == []
        cds_env(cds.url, key="12345:" + KEY)
        with pytest.raises(CdsError, match="pre-2024 'UID:KEY' form"):
            fetch_pl(tmp_path / "2000-02.nc")


def test_a_refused_key_is_a_clear_error(tmp_path, cds_env):
    with LoopbackCds("the-server-expects-another-token") as cds:
        cds_env(cds.url)
        with pytest.raises(CdsError, match=r"refused the key \(HTTP 401\)") as err:
            fetch_pl(tmp_path / "2000-02.nc")
        assert len(cds.seen.tokens) == 1
    assert KEY not in str(err.value)


def test_the_key_never_appears_in_logs_output_or_files(tmp_path, cds_env, caplog, capfd):
    """Success, rejection, a refused key and cut downloads, each logged at DEBUG as the rule logs it."""
    caplog.set_level(logging.DEBUG)
    log_file = tmp_path / "logs" / "era5_cds.log"
    out = tmp_path / "era5"
    scenarios = [
        ("a.nc", KEY, Faults(cut_downloads=2, cut_at=0.97, http_500_on_submit=1), None),
        ("b.nc", KEY, Faults(reject=lambda d, r: "no such data"), "rejected the request"),
        ("c.nc", "another-token", Faults(), "refused the key"),
        ("d.nc", KEY, Faults(cut_downloads=-1), "all 3 attempts failed"),
    ]
    errors = []
    for name, server_key, faults, error in scenarios:
        with LoopbackCds(server_key, faults) as cds:
            cds_env(cds.url)
            try:
                with rule_logging(log_file, level=logging.DEBUG):  # logs the traceback of a failure
                    fetch_pl(out / name)
            except CdsError as exc:
                errors.append(str(exc))
                assert error and error in str(exc)
            else:
                assert error is None
    captured = capfd.readouterr()
    text = log_file.read_text()
    # the messages are there (so the test can fail) ...
    assert len(errors) == 3 and text.count("rule failed") == 3
    assert "requesting reanalysis-era5-pressure-levels" in text and "'key': '***'" in text
    assert "PRIVATE-TOKEN" not in text
    # ... and the key is not
    for where, content in (("rule log", text), ("log records", caplog.text), ("stdout", captured.out), ("stderr", captured.err), ("errors", "".join(errors))):
        assert KEY not in content, where
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path


# --------------------------------------------------------------------------------------------------
# The workflow rule
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("data_format, ext", [("netcdf", ".nc"), ("grib", ".grib")])
def test_workflow_downloads_era5_with_source_cds(tmp_path, cds_env, data_format, ext):
    overlay = tmp_path / "cds.yaml"
    overlay.write_text(yaml.safe_dump({
        "outdir": str(tmp_path / "results"),
        "era5": {"source": "cds", "pressure_levels_hpa": PLEV,
                 "cds": {"grid": [10.0, 10.0], "area": None, "attempts": 2, "backoff_seconds": 0.01, "client_retries": 2,
                         "client_sleep_seconds": 0.01, "timeout_seconds": 10, "data_format": data_format}},
    }))
    out = tmp_path / "results"
    targets = [str(out / "era5" / k / f"{m}{ext}") for k in ("pressure_levels", "single_levels", "precipitation") for m in ("2000-01", "2000-02")]
    targets.append(str(out / "era5" / f"invariant{ext}"))
    cmd = [sys.executable, "-m", "snakemake", "--configfile", "config/tiny.yaml", str(overlay), "--cores", "2"]
    with LoopbackCds(KEY) as cds:
        cds_env(cds.url)
        res = subprocess.run([*cmd, *targets], cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}, timeout=300)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        assert len(cds.seen.requests) == 7 and {r["data_format"] for _, r in cds.seen.requests} == {data_format}
        dry = subprocess.run([*cmd, "-n"], cwd=REPO, capture_output=True, text=True, timeout=120)
    text = res.stdout + res.stderr
    assert re.search(r"^era5_cds\s+6$", text, re.M) and re.search(r"^era5_cds_invariant\s+1$", text, re.M), text[-2000:]
    assert KEY not in text and "era5_standin" not in text, "the rule follows era5.source"
    # the downloaded files (of this suffix) are what the rest of the workflow needs: only later stages remain
    assert dry.returncode == 0 and "rule regrid:" in dry.stdout and "rule era5_" not in dry.stdout
    for path in (out / "logs").glob("era5_cds*.log"):
        assert KEY not in path.read_text()
    assert len(list((out / "logs").glob("era5_cds*.log"))) == 7
    for kind in ("pressure_levels", "single_levels", "precipitation"):
        check_download(out / "era5" / kind / f"2000-02{ext}", kind, "2000-02", PLEV, data_format)

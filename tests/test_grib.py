"""Real ERA5 GRIB: the file cfgrib's source distribution ships for its own tests, read by cdo and the checker.

``era5-levels-members.grib`` is ERA5 from the CDS (GRIB1, ECMWF table 128): ``z`` and ``t`` on 500 and
850 hPa, 10 ensemble members, 2017-01-01 00/12 UTC and 2017-01-02 00/12 UTC, on a global 3 degree grid.
``scripts/setup.sh --test`` fetches the pinned sdist (sha256 checked) into ``.cache/test-data``
(``NUDGEML_TEST_DATA`` names another folder); the file is not committed (2.4 MB of binary data that
a pinned, checksummed download reproduces).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from nudgeml.errors import InputError
from nudgeml.gcm.standin import ModelGrid
from nudgeml.grib import check_era5_grib, grib_inventory
from nudgeml.grid import cdo_grid_description
from nudgeml.regrid import remap

REPO = Path(__file__).resolve().parents[1]
TEST_DATA = Path(os.environ.get("NUDGEML_TEST_DATA", REPO / ".cache" / "test-data"))
SAMPLE = TEST_DATA / "era5-levels-members.grib"
SAMPLE_SHA256 = "c144fde61ca5d53702bf6f212775ef2cc783bdd66b6865160bf597c1b35ed898"  # in cfgrib-0.9.15.1.tar.gz
CONVERTED = TEST_DATA / "era5-levels-members.nc"  # the same data through cfgrib 0.9.13 (its history attribute)
TIMES = np.array(["2017-01-01T00", "2017-01-01T12", "2017-01-02T00", "2017-01-02T12"], dtype="datetime64[s]")

pytestmark = pytest.mark.skipif(not SAMPLE.exists(), reason=f"real ERA5 GRIB absent ({SAMPLE}): run scripts/setup.sh --test")


def test_the_sample_is_the_pinned_file():
    assert hashlib.sha256(SAMPLE.read_bytes()).hexdigest() == SAMPLE_SHA256


def test_cdo_and_the_checker_read_real_era5_grib():
    inv = grib_inventory(SAMPLE)
    # ecCodes short names through cdo, one cdo variable per ensemble member
    assert inv.names == ("z",) * 10 + ("t",) * 10
    assert inv.on_pressure_levels == {"z", "t"}
    assert inv.levels_hpa("t") == [850.0, 500.0] and inv.levels_hpa("z") == [850.0, 500.0]
    np.testing.assert_array_equal(inv.times, TIMES)
    # as a pressure-level download it is refused, with the reason: no wind, and members
    with pytest.raises(InputError, match=r"era5-levels-members\.grib: ERA5 pressure_levels GRIB file has no variable 'u' \(has \['t', 'z'\]\)"):
        check_era5_grib(SAMPLE, "pressure_levels", ("u", "v", "t", "q", "z"), True)
    with pytest.raises(InputError, match=r"era5-levels-members\.grib: ERA5 pressure_levels GRIB file has 10 fields named 't' \(ensemble members"):
        check_era5_grib(SAMPLE, "pressure_levels", ("t", "z"), True)


def test_a_cut_real_grib_file_is_named(tmp_path):
    data = SAMPLE.read_bytes()
    cut = tmp_path / "cut.grib"
    cut.write_bytes(data[: len(data) // 2 + 1000])
    with pytest.raises(InputError, match=r"cut\.grib: GRIB file cut short") as err:
        grib_inventory(cut)
    assert len(str(err.value).splitlines()) == 1
    (tmp_path / "not.grib").write_bytes(b"CDF\x01" + data[4:100])
    with pytest.raises(InputError, match=r"not\.grib: not a GRIB file"):
        grib_inventory(tmp_path / "not.grib")


def test_real_era5_grib_regrids_to_a_model_grid(tmp_path):
    """cdo remaps the GRIB natively to netCDF on the model grid. The model grid's points (6 degrees,
    offset 3) are points of the sample's 3 degree grid, so bilinear remapping must return the source
    values there: orientation (GRIB north first) and level order are checked, not only plausibility."""
    nlat, nlon = 30, 60
    lat = np.linspace(-90 + 90 / nlat, 90 - 90 / nlat, nlat)
    lon = np.arange(nlon) * 360.0 / nlon
    grid = ModelGrid(lat, lon, np.array([0.9, 0.5]), np.zeros((nlat, nlon)), np.zeros((nlat, nlon)), truncation=10)
    (tmp_path / "grid.txt").write_text(cdo_grid_description(grid))
    remap("bilinear", tmp_path / "grid.txt", ("t", "z"), SAMPLE, tmp_path / "out.nc")
    subprocess.run([shutil.which("cdo") or "cdo", "-s", "-f", "nc4", "copy", "-selname,t", str(SAMPLE), str(tmp_path / "src.nc")], check=True, capture_output=True)
    with xr.open_dataset(tmp_path / "out.nc") as out, xr.open_dataset(tmp_path / "src.nc") as src:
        assert out["t"].dims == ("time", "plev", "lat", "lon")
        np.testing.assert_array_equal(out["time"].values.astype("datetime64[s]"), TIMES)
        assert list(out["plev"].values) == [50000.0, 85000.0] and out["plev"].attrs["units"] == "Pa"
        np.testing.assert_allclose(np.sort(out["lat"].values), lat, atol=1e-6)
        t_model = out["t"].sortby("lat").values
        t_src = src["t"].sel(lat=lat, lon=lon).values  # the first member, at the model's points
        np.testing.assert_allclose(t_model, t_src, atol=1e-3)
        t850 = t_model[:, 1]
        assert 225.0 < t850.min() and t850.max() < 310.0, "850 hPa temperatures of a January day"
        z500_m = out["z"].values[:, 0] / 9.80665
        assert 4700.0 < z500_m.min() and z500_m.max() < 6000.0, "500 hPa heights"
        tropics = np.abs(out["lat"].values) < 20
        assert t_model[:, 1][:, tropics].mean() > t_model[:, 1][:, ~tropics].mean(), "warm tropics: not flipped"


@pytest.mark.skipif(not CONVERTED.exists(), reason=f"cfgrib's netCDF of the sample absent ({CONVERTED}): run scripts/setup.sh --test")
def test_cdo_refuses_the_cfgrib_netcdf_but_reads_the_grib():
    """The claim in docs/production.md: CDO 2.1 cannot open the netCDF cfgrib makes of ERA5 GRIB
    (the member dimension comes before time), while it reads the GRIB itself."""
    cdo = shutil.which("cdo") or "cdo"
    nc = subprocess.run([cdo, "-s", "sinfon", str(CONVERTED)], capture_output=True, text=True)
    assert "cfgrib" in xr.open_dataset(CONVERTED).attrs["history"]
    assert "Time must be the first dimension" in nc.stderr and "Unsupported file structure" in nc.stderr
    grib = subprocess.run([cdo, "-s", "sinfon", str(SAMPLE)], capture_output=True, text=True)
    assert grib.returncode == 0 and "File format : GRIB" in grib.stdout

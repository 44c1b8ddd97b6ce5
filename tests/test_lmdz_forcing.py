"""The CDO stage of the lmdz backend: ERA5 -> LMDZ nudging files on LMDZ's staggered grid."""

import numpy as np
import pytest
import xarray as xr

import subprocess

from factories import TIMES, fine_source, smooth, write_era5
from nudgeml.errors import InputError
from nudgeml.lmdz_forcing import lmdz_points, write_lmdz_forcing
from nudgeml.naming import month_file_names


def test_lmdz_144x142_grid_points():
    lon_u, lat_u = lmdz_points(144, 142, "u")
    lon_v, lat_v = lmdz_points(144, 142, "v")
    assert lon_u.size == 145 and lat_u.size == 143 and lat_v.size == 142
    assert lat_u[0] == 90.0 and lat_u[-1] == -90.0, "north to south, poles included"
    assert lon_v[0] == -180.0 and lon_v[-1] == 180.0, "periodic longitude repeated"
    assert lon_u[0] == pytest.approx(-180.0 + 1.25), "u half a cell east"


def next_month(root, lat, lon, hours=18, grib=False):
    """ERA5 files whose first record is ``hours`` after TIMES[0] (18: 6 h after the month's last)."""
    paths = write_era5(root, lat, lon, grib=grib)
    for kind in ("pressure_levels", "single_levels"):
        shifted = paths[kind].with_name(f"shifted_{kind}{paths[kind].suffix}")
        subprocess.run(["cdo", "-s", f"shifttime,{hours}hour", str(paths[kind]), str(shifted)], check=True)
        paths[kind] = shifted
    return paths


@pytest.mark.parametrize("grib", [False, True], ids=["netcdf", "grib"])
def test_files_in_lmdz_names_and_units(tmp_path, grib):
    lat, lon = fine_source()
    this = write_era5(tmp_path / "feb", lat, lon, grib=grib)
    nxt = next_month(tmp_path / "mar", lat, lon, grib=grib)
    out = month_file_names("{var}_{year:04d}{month:02d}.nc", ["u", "v", "T", "ps"], 2000, 2, tmp_path / "lmdz")
    write_lmdz_forcing(month_file=this, next_month_file=nxt, out_paths=out, iim=48, jjm=36)
    u = xr.open_dataset(tmp_path / "lmdz" / "u_200002.nc")
    v = xr.open_dataset(tmp_path / "lmdz" / "v_200002.nc")
    t = xr.open_dataset(tmp_path / "lmdz" / "T_200002.nc")
    ps = xr.open_dataset(tmp_path / "lmdz" / "ps_200002.nc")
    assert u["UWND"].dims == ("TIME", "LEVEL", "LAT", "LON") and u["UWND"].shape == (len(TIMES) + 1, 11, 37, 49)
    assert v["VWND"].shape[2:] == (36, 49) and "AIR" in t and ps["SP"].dims == ("TIME", "LAT", "LON")
    assert u["LEVEL"].attrs["units"] == "hPa" and u["LEVEL"].values[0] == 1000.0
    # the month plus the next month's first analysis
    assert u["TIME"].size == len(TIMES) + 1
    # u = smooth(lat, lon) + 2 ln p: check an interior u point
    j, i = 10, 20
    lon_u, lat_u = lmdz_points(48, 36, "u")
    expected = smooth(np.array([lat_u[j]]), np.array([lon_u[i] % 360]))[0, 0] + 2 * np.log(1000.0 * 100)
    assert u["UWND"].values[0, 0, j, i] == pytest.approx(expected, abs=0.05)


def test_relative_humidity_is_refused_with_a_reason(tmp_path):
    lat, lon = fine_source()
    this = write_era5(tmp_path / "feb", lat, lon)
    with pytest.raises(InputError, match="hur.*relative humidity"):
        write_lmdz_forcing(month_file=this, next_month_file=None, out_paths={"hur": tmp_path / "hur.nc"}, iim=48, jjm=36)


def test_level_order_is_the_one_guide_invertp_expects(tmp_path):
    """LMDZ's pres2lev wants the surface first and reverses the file when guide_invertp=y: with
    invert_p the file is top first."""
    lat, lon = fine_source()
    this = write_era5(tmp_path / "feb", lat, lon)
    nxt = next_month(tmp_path / "mar", lat, lon)
    for invert_p, first in ((False, 1000.0), (True, 10.0)):
        out = {"u": tmp_path / f"u_{invert_p}.nc"}
        write_lmdz_forcing(month_file=this, next_month_file=nxt, out_paths=out, iim=48, jjm=36, invert_p=invert_p)
        with xr.open_dataset(out["u"]) as u:
            level = u["LEVEL"].values
            assert level[0] == first and np.all(np.diff(level) > 0) == invert_p
            # the values travel with their level: u = smooth + 2 ln p grows with p
            k1000 = int(np.argmax(level))
            assert np.all(u["UWND"].values[:, k1000] > u["UWND"].values[:, int(np.argmin(level))])


def test_last_month_without_the_next_months_first_record_fails(tmp_path):
    lat, lon = fine_source()
    this = write_era5(tmp_path / "feb", lat, lon)
    out = {"u": tmp_path / "u.nc"}
    with pytest.raises(InputError, match="next month's ERA5 file is missing"):
        write_lmdz_forcing(month_file=this, next_month_file=None, out_paths=out, iim=48, jjm=36)
    # a "next month" whose first record is not 6 h after the month's last
    wrong = next_month(tmp_path / "mar", lat, lon, hours=24)
    with pytest.raises(InputError, match="is not the analysis 6 h after"):
        write_lmdz_forcing(month_file=this, next_month_file=wrong, out_paths=out, iim=48, jjm=36)
    assert not out["u"].exists()


# ------------------------------------------------------------------------------------------------
# LMDZE's nudging files (write_lmdze_guide): south to north, 4 nday + 1 records from the start
# ------------------------------------------------------------------------------------------------


def test_lmdze_guide_files_south_to_north_records_from_start(tmp_path):
    from lmdze_inputs import truth_fields, write_truth_era5
    from nudgeml.lmdz_forcing import write_lmdze_guide

    start = np.datetime64("2000-01-31T06:00", "s")
    era5 = write_truth_era5(tmp_path / "era5", start - np.timedelta64(6, "h"), records=7)
    out = {"u": tmp_path / "u.nc", "v": tmp_path / "v.nc", "T": tmp_path / "T.nc"}
    write_lmdze_guide(era5_files={"pressure_levels": [era5["pressure_levels"]]}, start=start, days=1, out_paths=out, iim=16, jjm=12)
    with xr.open_dataset(out["u"]) as u, xr.open_dataset(out["v"]) as v, xr.open_dataset(out["T"]) as t:
        assert u["UWND"].shape == (5, 17, 13, 17) and v["VWND"].shape == (5, 17, 12, 17) and t["AIR"].shape == (5, 17, 13, 17)
        assert u["LAT"].values[0] == -90.0 and u["LAT"].values[-1] == 90.0, "south to north"
        assert np.all(np.diff(v["LAT"].values) > 0) and u["LEVEL"].attrs["units"] == "hPa"
        assert u["TIME"].values[0] == start and u["TIME"].values[-1] == start + np.timedelta64(24, "h")
        # record 0 is the truth's record 1 (start): a u point (lon -168.75, lat 45) on the 1000 hPa level
        lon_u, lat_u = lmdz_points(16, 12, "u")
        j = int(np.argmin(np.abs(u["LAT"].values - 45.0)))
        want = truth_fields(1, np.array([45.0]), np.array([lon_u[0] % 360]))["u"][0, 0, 0]
        assert u["UWND"].values[0, 0, j, 0] == pytest.approx(want, abs=0.3)


def test_lmdze_guide_refuses_missing_records(tmp_path):
    from lmdze_inputs import write_truth_era5
    from nudgeml.lmdz_forcing import write_lmdze_guide

    start = np.datetime64("2000-01-31T00:00", "s")
    era5 = write_truth_era5(tmp_path / "era5", start, records=3)  # 12 h, a day needs 24 h
    with pytest.raises(InputError, match=r"pressure_levels.nc: LMDZE's nudging needs the 5 analyses .* found 3"):
        write_lmdze_guide(era5_files={"pressure_levels": [era5["pressure_levels"]]}, start=start, days=1,
                          out_paths={"u": tmp_path / "u.nc"}, iim=16, jjm=12)
    assert not (tmp_path / "u.nc").exists()


def test_lmdze_relative_humidity_file(tmp_path):
    """hur.nc:RH (%) from ERA5 q and t with LMDZ's q_sat: the synthetic truth's q is 0.6 q_sat."""
    from lmdze_inputs import write_truth_era5
    from nudgeml.lmdz_forcing import write_lmdze_guide

    start = np.datetime64("2000-01-31T00:00", "s")
    era5 = write_truth_era5(tmp_path / "era5", start)
    write_lmdze_guide(era5_files={"pressure_levels": [era5["pressure_levels"]]}, start=start, days=1,
                      out_paths={"hur": tmp_path / "hur.nc"}, iim=16, jjm=12)
    with xr.open_dataset(tmp_path / "hur.nc") as h:
        assert h["RH"].dims == ("TIME", "LEVEL", "LAT", "LON") and h["RH"].shape == (5, 17, 13, 17)
        assert h["LAT"].values[0] == -90.0 and h["LEVEL"].attrs["units"] == "hPa"
        assert np.allclose(h["RH"].values, 60.0, atol=1e-3)

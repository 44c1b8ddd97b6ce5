"""The CDO stage of the lmdz backend: ERA5 -> LMDZ nudging files on LMDZ's staggered grid."""

import numpy as np
import pytest
import xarray as xr

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


@pytest.mark.parametrize("grib", [False, True], ids=["netcdf", "grib"])
def test_files_in_lmdz_names_and_units(tmp_path, grib):
    lat, lon = fine_source()
    this = write_era5(tmp_path / "feb", lat, lon, grib=grib)
    nxt = write_era5(tmp_path / "mar", lat, lon, grib=grib)
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

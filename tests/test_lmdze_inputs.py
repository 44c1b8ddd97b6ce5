"""ce0l's input files built from the truth (nudgeml.lmdze_inputs); no LMDZE build needed (cdo only)."""

import numpy as np
import pytest
import xarray as xr

from lmdze_inputs import truth_fields, truth_lat_lon, truth_orography, write_truth_era5
from nudgeml.errors import InputError
from nudgeml.lmdze_inputs import CE0L_FILES, lmdze_day_ref, q_sat, regular_grid, relative_humidity_pct, write_ce0l_inputs_from_truth, write_relief

START = np.datetime64("2000-01-31T00:00", "s")


def test_q_sat_is_the_ecmwf_formula_over_water_and_ice():
    # e_sat(273.16 K) = 611.14 Pa on both branches; at 1000 hPa q = eps e / (p - (1 - eps) e)
    eps = 18.0153 / 28.9644
    e = 611.14
    assert q_sat(273.16, 1.0e5) == pytest.approx(eps * e / (1.0e5 - (1 - eps) * e), rel=1e-12)
    # 30 °C over water: Tetens with (17.269, 35.86) gives 4242 Pa
    e30 = 611.14 * np.exp(17.269 * (303.15 - 273.16) / (303.15 - 35.86))
    assert e30 == pytest.approx(4243, abs=2)
    assert q_sat(303.15, 1.0e5) == pytest.approx(eps * e30 / (1.0e5 - (1 - eps) * e30), rel=1e-12)
    assert q_sat(250.0, 1.0e5) < q_sat(260.0, 1.0e5) < q_sat(273.0, 1.0e5)  # ice branch, increasing


def test_relative_humidity_inverts_what_ce0l_does():
    t = np.array([220.0, 260.0, 273.16, 290.0, 305.0])
    p = np.array([2.0e4, 5.0e4, 7.0e4, 9.0e4, 1.0e5])
    q = np.array([1e-6, 5e-4, 3e-3, 1.2e-2, 2.5e-2])
    r = relative_humidity_pct(q, t, p)
    assert np.allclose(0.01 * r * q_sat(t, p), q, rtol=1e-12)  # etat0: q = 0.01 R q_sat(T, p)


def test_regular_grid_is_pole_to_pole():
    lon, lat = regular_grid(2.5)
    assert lon.size == 144 and lon[0] == -180.0 and lat.size == 73 and lat[0] == 90.0 and lat[-1] == -90.0
    with pytest.raises(ValueError, match="divide"):
        regular_grid(7.0)


def test_writers_refuse_a_grid_without_poles(tmp_path):
    with pytest.raises(ValueError, match="pole to pole"):
        write_relief(tmp_path / "Relief.nc", np.arange(4.0), np.array([60.0, 0.0, -60.0]), np.zeros((3, 4)))
    assert not (tmp_path / "Relief.nc").exists()


def test_non_finite_value_names_file_and_variable(tmp_path):
    lon, lat = regular_grid(30.0)
    relief = np.zeros((lat.size, lon.size))
    relief[2, 3] = np.nan
    with pytest.raises(InputError, match=r"Relief.nc: RELIEF has 1 missing"):
        write_relief(tmp_path / "Relief.nc", lon, lat, relief)
    assert not (tmp_path / "Relief.nc").exists()


@pytest.fixture(scope="module")
def from_truth(tmp_path_factory):
    root = tmp_path_factory.mktemp("truth")
    era5 = write_truth_era5(root / "era5", START)
    written = write_ce0l_inputs_from_truth(root / "ce0l", start=START + np.timedelta64(6, "h"), **era5)
    return root / "ce0l", written


def test_eight_files_with_ce0l_names(from_truth):
    folder, written = from_truth
    assert [p.name for p in written] == list(CE0L_FILES)
    with xr.open_dataset(folder / "ECDYN.nc") as ds:
        assert ds["plev"].attrs["units"] == "hPa" and ds["longitude"].attrs["units"] == "degrees_east"
        assert ds["latitude"].values[0] == 90.0 and ds["latitude"].values[-1] == -90.0
        assert ds["U"].dims == ("plev", "latitude", "longitude") and ds["SP"].dims == ("latitude", "longitude")
        assert "_FillValue" not in ds["latitude"].encoding or ds["latitude"].encoding["_FillValue"] is None
    for name, var, n in (("Rugos.nc", "RUGOS", 12), ("Albedo.nc", "ALBEDO", 12), ("SST.nc", "tosbcs", 12), ("sea_ice.nc", "sicbcs", 12)):
        with xr.open_dataset(folder / name, decode_times=False) as ds:
            assert ds[var].shape[0] == n and np.all(np.isfinite(ds[var].values)), name
    with xr.open_dataset(folder / "Rugos.nc", decode_times=False) as ds:
        assert ds["temps"].values.tolist() == [15.0 + 30 * m for m in range(12)] and float(ds["RUGOS"].min()) > 0
    with xr.open_dataset(folder / "SST.nc", decode_times=False) as ds:
        assert ds["tosbcs"].attrs["units"] == "K" and 230 < float(ds["tosbcs"].min()) and float(ds["tosbcs"].max()) < 320
    with xr.open_dataset(folder / "sea_ice.nc", decode_times=False) as ds:
        assert ds["sicbcs"].attrs["units"] == "%" and float(ds["sicbcs"].max()) > 50  # jcm's polar sea ice, in %


def _at(ds_var, lat, lon):
    return ds_var.interp(latitude=xr.DataArray(lat, dims="y"), longitude=xr.DataArray(lon, dims="x")).values


def test_atmosphere_is_the_truths_at_the_start_record(from_truth):
    folder, _ = from_truth
    lat, lon = np.array([-40.0, 10.0, 50.0]), np.array([-100.0, 30.0, 150.0])  # ocean, continent, ocean
    want = truth_fields(1, lat, lon % 360)  # record 1 = START + 6 h
    with xr.open_dataset(folder / "ECDYN.nc") as ds:
        u = np.stack([_at(ds["U"].isel(plev=k), lat, lon) for k in range(ds.sizes["plev"])])
        assert np.allclose(u, want["u"], atol=0.6)  # bilinear from 2.5° to 2.5° shifted: close, not equal
        q = 0.01 * np.stack([_at(ds["R"].isel(plev=k), lat, lon) for k in range(ds.sizes["plev"])]) * q_sat(
            np.stack([_at(ds["TEMP"].isel(plev=k), lat, lon) for k in range(ds.sizes["plev"])]), 100.0 * ds["plev"].values[:, None, None])
        assert np.allclose(q, want["q"], rtol=0.05)
        z = _at(ds["Z"], lat, lon)
    assert z[1, 1] == pytest.approx(9.80665 * 1000.0, rel=1e-3) and abs(z[0, 0]) < 1.0


def test_relief_land_is_the_truths_land(from_truth):
    folder, _ = from_truth
    with xr.open_dataset(folder / "Relief.nc") as ds:
        relief = ds["RELIEF"]
        lat, lon = relief["latitude"].values, relief["longitude"].values
        lsm, height = truth_orography(lat, lon % 360)
        inside = np.broadcast_to(np.abs(lat)[:, None] < 85, lsm.shape)  # away from cdo's pole rows
        land_ok = (relief.values > 0) == (lsm > 0.5)
        # bilinear remap smears the coast by one source cell (2.5°): count mismatches only away from it
        assert land_ok[inside].mean() > 0.97
        assert relief.values[(lsm > 0.5) & inside].max() == pytest.approx(1000.0, rel=1e-3)


def test_start_date_not_in_the_file_is_refused(tmp_path):
    era5 = write_truth_era5(tmp_path / "era5", START, records=2)
    with pytest.raises(InputError, match=r"pressure_levels.nc.*2000-02-15"):
        write_ce0l_inputs_from_truth(tmp_path / "ce0l", start=np.datetime64("2000-02-15T00"), **era5)
    assert not (tmp_path / "ce0l" / "ECDYN.nc").exists()


def test_day_ref_of_a_360_day_year():
    assert lmdze_day_ref("2000-01-31T00") == (30, 2000)
    assert lmdze_day_ref("2000-02-01") == (31, 2000)
    assert lmdze_day_ref("2001-03-01") == (61, 2001)
    assert lmdze_day_ref("2000-12-31") == (360, 2000)


def test_truth_grid_has_no_poles():
    lat, _ = truth_lat_lon()
    assert abs(lat).max() < 90  # the regrid must fill the pole rows ce0l needs


def test_grib_era5_gives_the_same_files(tmp_path, from_truth):
    """era5.cds.data_format: grib -- the same inputs from GRIB files (16-bit packing apart)."""
    from factories import to_grib

    era5 = write_truth_era5(tmp_path / "era5", START)
    grib = {k: v.with_suffix(".grib") for k, v in era5.items()}
    for k in era5:
        to_grib(era5[k], grib[k])
    write_ce0l_inputs_from_truth(tmp_path / "ce0l", start=START + np.timedelta64(6, "h"), **grib)
    folder, _ = from_truth
    for name, tol in (("ECDYN.nc", {"Z": 0.5, "SP": 1.0, "U": 0.01, "V": 0.01, "TEMP": 0.01, "R": 0.5}), ("Relief.nc", {"RELIEF": 0.1})):
        with xr.open_dataset(folder / name) as a, xr.open_dataset(tmp_path / "ce0l" / name) as b:
            for var, t in tol.items():
                assert float(np.abs(a[var] - b[var]).max()) < t, (name, var)

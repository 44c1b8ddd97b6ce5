"""CDO regridding of analytic fields, written through the real ERA5 writers and regridded by real cdo."""

import numpy as np
import pytest
import xarray as xr

from factories import PLEV, TIMES, fine_source, smooth, write_era5
from nudgeml.errors import CdoError, InputError
from nudgeml.gcm.standin import ModelGrid
from nudgeml.grid import cdo_grid_description
from nudgeml.regrid import regrid_month, surface_pressure_on_model_orography

SIGMA = np.array([0.95, 0.835, 0.685, 0.51, 0.34, 0.2, 0.095, 0.025])


def model_grid(nlat=16, nlon=32):
    lat = np.linspace(-90 + 90 / nlat, 90 - 90 / nlat, nlat)
    lon = np.arange(nlon) * 360.0 / nlon
    return ModelGrid(lat, lon, SIGMA, np.zeros((nlat, nlon)), np.zeros((nlat, nlon)), truncation=10)


@pytest.mark.parametrize("method, tol, grib", [("bilinear", 0.05, False), ("conservative", 0.15, False), ("bilinear", 0.05, True)])
def test_analytic_field_regridded_horizontally_and_vertically(tmp_path, method, tol, grib):
    """u = P(lat, lon) + 2 ln p: on model levels p = sigma * ps, so the result is known exactly.

    Tolerance: bilinear interpolation of this smooth pattern from 2 deg errs < 0.05 m/s; conservative
    remapping averages over the coarse cell, < 0.15 m/s. The vertical step is exact for fields linear in
    ln p (cdo intlevelx3d in ln p), so the tolerance is the horizontal one. ``grib``: the same files as
    GRIB1 (era5.cds.data_format: grib), regridded by cdo natively; 16-bit packing adds < 1e-3 m/s.
    """
    lat, lon = fine_source()
    paths = write_era5(tmp_path / "era5", lat, lon, ps_pa=98000.0, grib=grib)
    assert all(p.suffix == (".grib" if grib else ".nc") for p in paths.values())
    grid = model_grid()
    (tmp_path / "grid.txt").write_text(cdo_grid_description(grid))
    regrid_month(
        pressure_levels=paths["pressure_levels"], single_levels=paths["single_levels"], precipitation=paths["precipitation"],
        invariant=paths["invariant"], grid=grid, grid_txt=tmp_path / "grid.txt",
        out_state=tmp_path / "out.nc", out_precip=tmp_path / "tp.nc", method=method, precip_method=method, threads=2,
    )
    ds = xr.open_dataset(tmp_path / "out.nc")
    assert ds["u"].dims == ("time", "lev", "lat", "lon")
    assert ds["lev"].values[0] > ds["lev"].values[-1], "model levels surface first"
    assert np.all(np.diff(ds["lat"].values) > 0)
    np.testing.assert_allclose(ds["ps"].values, 98000.0, rtol=1e-6)  # flat orography on both sides: unchanged
    p_model = SIGMA[:, None, None] * 98000.0
    for i in range(len(TIMES)):
        expected = smooth(grid.lat_deg, grid.lon_deg)[None] + 2.0 * np.log(p_model) + i
        err = np.abs(ds["u"].values[i] - expected).max()
        assert err < tol, f"time {i}: max error {err:.3f} m/s"
    assert (ds["q"].values >= 0).all()
    tp = xr.open_dataset(tmp_path / "tp.nc")
    assert tp["tp"].sizes["valid_time"] == 12 and (tp["tp"].values >= 0).all()
    np.testing.assert_allclose(tp["tp"].values[0], 1e-4 * (1 + np.cos(np.deg2rad(grid.lat_deg)))[:, None] * np.ones((1, grid.lon_deg.size)), rtol=0.05)


def test_surface_pressure_moves_hydrostatically():
    sp = np.full((1, 1, 1), 90000.0)
    t_pl = np.full((1, PLEV.size, 1, 1), 280.0)
    # model surface 500 m lower than the source surface: higher pressure, by the hypsometric relation
    phi_src, phi_model = np.full((1, 1), 9.80665 * 1000.0), np.full((1, 1), 9.80665 * 500.0)
    ps = surface_pressure_on_model_orography(sp, phi_src, phi_model, t_pl, PLEV * 100.0)
    t_surface = 280.0 * (90000.0 / 85000.0) ** (287.05 * 0.0065 / 9.80665)
    expected = 90000.0 * np.exp(9.80665 * 500.0 / (287.05 * (t_surface + 0.0065 * 250.0)))
    np.testing.assert_allclose(ps[0, 0, 0], expected, rtol=1e-5)
    assert surface_pressure_on_model_orography(sp, phi_src, phi_src, t_pl, PLEV * 100.0)[0, 0, 0] == pytest.approx(90000.0)


def test_missing_variable_is_named_and_nothing_written(tmp_path):
    lat, lon = fine_source()
    paths = write_era5(tmp_path / "era5", lat, lon, drop="q")
    grid = model_grid()
    (tmp_path / "grid.txt").write_text(cdo_grid_description(grid))
    with pytest.raises(InputError, match=r"pressure_levels\.nc.*'q'"):
        regrid_month(
            pressure_levels=paths["pressure_levels"], single_levels=paths["single_levels"], precipitation=paths["precipitation"],
            invariant=paths["invariant"], grid=grid, grid_txt=tmp_path / "grid.txt", out_state=tmp_path / "out.nc", out_precip=tmp_path / "tp.nc",
        )
    assert not (tmp_path / "out.nc").exists() and not (tmp_path / "tp.nc").exists()


def test_bad_grib_input_is_named_and_nothing_written(tmp_path):
    """A GRIB download missing a variable, or cut short, fails with one message naming the file."""
    lat, lon = fine_source()
    grid = model_grid()
    (tmp_path / "grid.txt").write_text(cdo_grid_description(grid))
    outs = dict(grid=grid, grid_txt=tmp_path / "grid.txt", out_state=tmp_path / "out.nc", out_precip=tmp_path / "tp.nc")
    paths = write_era5(tmp_path / "era5", lat, lon, drop="q", grib=True)
    with pytest.raises(InputError, match=r"pressure_levels\.grib: ERA5 pressure_levels GRIB file has no variable 'q'"):
        regrid_month(**{k: paths[k] for k in ("pressure_levels", "single_levels", "precipitation", "invariant")}, **outs)
    paths = write_era5(tmp_path / "era5", lat, lon, grib=True)
    data = paths["pressure_levels"].read_bytes()
    paths["pressure_levels"].write_bytes(data[: len(data) * 2 // 3 + 50])  # a download cut short, inside a message
    with pytest.raises(InputError, match=r"pressure_levels\.grib: GRIB file cut short") as err:
        regrid_month(**{k: paths[k] for k in ("pressure_levels", "single_levels", "precipitation", "invariant")}, **outs)
    assert len(str(err.value).splitlines()) == 1
    assert not (tmp_path / "out.nc").exists() and not (tmp_path / "tp.nc").exists()


def test_wrong_grid_is_reported(tmp_path):
    lat, lon = fine_source()
    paths = write_era5(tmp_path / "era5", lat, lon)
    grid = model_grid()
    (tmp_path / "grid.txt").write_text(cdo_grid_description(model_grid(nlat=8, nlon=16)))
    with pytest.raises(InputError, match="model grid"):
        regrid_month(
            pressure_levels=paths["pressure_levels"], single_levels=paths["single_levels"], precipitation=paths["precipitation"],
            invariant=paths["invariant"], grid=grid, grid_txt=tmp_path / "grid.txt", out_state=tmp_path / "out.nc", out_precip=tmp_path / "tp.nc",
        )
    assert not (tmp_path / "out.nc").exists()


def test_cdo_errors_carry_cdos_message(tmp_path):
    from nudgeml.regrid import cdo

    with pytest.raises(CdoError, match="nosuchfile"):
        cdo("sinfo", str(tmp_path / "nosuchfile.nc"))


def _forcing_month(path, ntime=2):
    grid = model_grid(nlat=4, nlon=8)
    shape4 = (ntime, SIGMA.size, grid.lat_deg.size, grid.lon_deg.size)
    times = np.arange(ntime).astype("timedelta64[h]") * 6 + np.datetime64("2000-01-01T00", "ns")
    ds = xr.Dataset(
        {name: (("time", "lev", "lat", "lon"), np.ones(shape4, np.float32)) for name in ("u", "v", "t", "q")},
        coords={"time": times, "lev": SIGMA * 101325.0, "lat": grid.lat_deg, "lon": grid.lon_deg},
    )
    ds["ps"] = (("time", "lat", "lon"), np.full(shape4[:1] + shape4[2:], 1e5, np.float32))
    ds.to_netcdf(path)
    return path


def test_forcing_with_zero_time_steps_is_named(tmp_path):
    from nudgeml.regrid import open_forcing

    good = _forcing_month(tmp_path / "2000-01.nc")
    empty = _forcing_month(tmp_path / "2000-02.nc", ntime=0)
    with pytest.raises(InputError, match=r"2000-02\.nc: regridded ERA5 file has zero time steps"):
        open_forcing([good, empty])


def test_truncated_forcing_is_named(tmp_path):
    from nudgeml.regrid import open_forcing

    path = _forcing_month(tmp_path / "2000-01.nc")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"2000-01\.nc: cannot be read as NetCDF") as err:
        open_forcing([path])
    assert err.value.__cause__ is None and err.value.__suppress_context__, "one traceback, not the chained HDF one"
    assert len(open_forcing([_forcing_month(tmp_path / "ok.nc")]).time) == 2

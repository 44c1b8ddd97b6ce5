"""CDO regridding of analytic fields, written through the real ERA5 writers and regridded by real cdo."""

import numpy as np
import pytest
import xarray as xr

from nudgeml.conventions import InputError, era5_record, open_era5_writer
from nudgeml.gcm.standin import ModelGrid
from nudgeml.grid import cdo_grid_description
from nudgeml.ncstream import seconds_since
from nudgeml.regrid import CdoError, regrid_month, surface_pressure_on_model_orography

EPOCH = np.datetime64("1970-01-01T00:00", "s")
TIMES = np.array(["2000-02-01T00:00", "2000-02-01T06:00", "2000-02-01T12:00"], dtype="datetime64[s]")
PLEV = np.array([1000, 925, 850, 700, 500, 300, 200, 100, 50, 20, 10], dtype=float)
SIGMA = np.array([0.95, 0.835, 0.685, 0.51, 0.34, 0.2, 0.095, 0.025])


def smooth(lat, lon):
    """A smooth analytic horizontal pattern (degrees in)."""
    la, lo = np.deg2rad(lat)[:, None], np.deg2rad(lon)[None, :]
    return 10.0 * np.cos(la) ** 2 * np.cos(2 * lo) + 5.0 * np.sin(la)


def write_era5(root, lat, lon, *, ps_pa=1.0e5, drop=None):
    """One month of ERA5-like files: u = smooth pattern + 2 ln(p), t, q, z; flat orography."""
    root.mkdir(parents=True, exist_ok=True)
    horiz = smooth(lat, lon)
    lnp = np.log(PLEV * 100.0)[:, None, None]
    paths = {}
    for kind in ("pressure_levels", "single_levels", "precipitation"):
        paths[kind] = root / f"{kind}.nc"
    w = open_era5_writer(paths["pressure_levels"], "pressure_levels", lat_deg=lat, lon_deg=lon, plev_hpa=PLEV)
    for i, t in enumerate(TIMES):
        fields = {
            "u": horiz[None] + 2.0 * lnp + i,
            "v": -horiz[None] + 0 * lnp,
            "t": 250.0 + 10.0 * (lnp - lnp.mean()) + 0 * horiz[None],
            "q": 1e-3 * np.exp(lnp - lnp.max()) + 0 * horiz[None],
            "z": -287.0 * 250.0 * (lnp - np.log(1e5)) + 0 * horiz[None],
        }
        w.append(seconds_since([t], EPOCH)[0], **era5_record(fields))
    w.close()
    if drop:  # a file from a request that forgot a variable
        with xr.open_dataset(paths["pressure_levels"]) as full:
            bad = full.drop_vars(drop).load()
        bad.to_netcdf(paths["pressure_levels"])
    w = open_era5_writer(paths["single_levels"], "single_levels", lat_deg=lat, lon_deg=lon)
    for t in TIMES:
        w.append(seconds_since([t], EPOCH)[0], **era5_record({"sp": np.full(horiz.shape, ps_pa)}))
    w.close()
    w = open_era5_writer(paths["precipitation"], "precipitation", lat_deg=lat, lon_deg=lon)
    for h in range(1, 13):
        w.append(seconds_since([TIMES[0] + np.timedelta64(h, "h")], EPOCH)[0], **era5_record({"tp": 1e-4 * (1.0 + np.cos(np.deg2rad(lat))[:, None] * np.ones((1, lon.size)))}))
    w.close()
    paths["invariant"] = root / "invariant.nc"
    w = open_era5_writer(paths["invariant"], "invariant", lat_deg=lat, lon_deg=lon)
    w.append(0, **era5_record({"z": np.zeros(horiz.shape), "lsm": np.zeros(horiz.shape)}, with_expver=False))
    w.close()
    return paths


def model_grid(nlat=16, nlon=32):
    lat = np.linspace(-90 + 90 / nlat, 90 - 90 / nlat, nlat)
    lon = np.arange(nlon) * 360.0 / nlon
    return ModelGrid(lat, lon, SIGMA, np.zeros((nlat, nlon)), np.zeros((nlat, nlon)), truncation=10)


def fine_source():
    lat = np.linspace(-89.5, 89.5, 90)  # 2-degree source grid
    lon = np.arange(180) * 2.0
    return lat, lon


@pytest.mark.parametrize("method, tol", [("bilinear", 0.05), ("conservative", 0.15)])
def test_analytic_field_regridded_horizontally_and_vertically(tmp_path, method, tol):
    """u = P(lat, lon) + 2 ln p: on model levels p = sigma * ps, so the result is known exactly.

    Tolerance: bilinear interpolation of this smooth pattern from 2 deg errs < 0.05 m/s; conservative
    remapping averages over the coarse cell, < 0.15 m/s. The vertical step is exact for fields linear in
    ln p (cdo intlevelx3d in ln p), so the tolerance is the horizontal one.
    """
    lat, lon = fine_source()
    paths = write_era5(tmp_path / "era5", lat, lon, ps_pa=98000.0)
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

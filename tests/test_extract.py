import json

import numpy as np
import pytest
import xarray as xr

from factories import T0, value_field, write_history
from nudgeml.ncstream import seconds_since
from nudgeml.errors import InputError
from nudgeml.extract import ColumnSpec, column_dataset, column_features, cos_solar_zenith, expand_names, write_columns


def test_round_trip_of_chosen_columns(tmp_path):
    hist, guide, grid = write_history(tmp_path, nlat=8, nlon=16, nlev=5, ntime=4)
    spec = ColumnSpec(geo=("sin_lat", "cos_zenith"))
    ds = column_dataset(hist, guide, None, spec)
    out = write_columns(ds, tmp_path / "columns.nc")
    c = xr.open_dataset(out)
    names = list(c["feature"].values)
    assert names[:5] == ["u_000", "u_001", "u_002", "u_003", "u_004"] and names[-3:] == ["ps", "sin_lat", "cos_zenith"]
    assert list(c["target"].values) == expand_names(json.loads(c.attrs["target_blocks"]))
    for t, j, i in [(0, 0, 0), (2, 3, 7), (3, 7, 15)]:
        col = j * 16 + i  # columns are (lat, lon) row-major, latitudes ascending
        u = value_field(t, 5, grid.lat_deg, grid.lon_deg)[:, j, i]
        np.testing.assert_allclose(c["inputs"].values[t, col, 0:5], u, rtol=1e-6)  # u, surface first
        np.testing.assert_allclose(c["inputs"].values[t, col, 5:10], u + 1, rtol=1e-6)  # v
        np.testing.assert_allclose(c["inputs"].values[t, col, 20], 1e5 + t, rtol=1e-7)  # ps
        np.testing.assert_allclose(c["inputs"].values[t, col, 21], np.sin(np.deg2rad(grid.lat_deg[j])), rtol=1e-5)
        du = value_field(t, 5, grid.lat_deg, grid.lon_deg, offset=0.5)[:, j, i] * 1e-8
        np.testing.assert_allclose(c["targets"].values[t, col, :5], du, rtol=1e-5)  # du in m s-2 from ucov/cu
        np.testing.assert_allclose(c["targets"].values[t, col, 5:], -du, rtol=1e-5)
        assert c["column_lat"].values[col] == pytest.approx(grid.lat_deg[j], abs=1e-4)


def test_mismatched_time_axes_name_both_files(tmp_path):
    hist, guide, _ = write_history(tmp_path, nlat=4, nlon=8, nlev=3, ntime=3, guide_times_shift_h=6)
    with pytest.raises(InputError, match=r"histhf\.nc.*guide_ins\.nc"):
        column_dataset(hist, guide, None, ColumnSpec())


def test_missing_history_variable_is_named(tmp_path):
    hist, guide, _ = write_history(tmp_path, nlat=4, nlon=8, nlev=3, ntime=2)
    spec = ColumnSpec(history_names={"u": "vitu", "v": "vitv", "t": "temp", "q": "qvap", "ps": "psol"})
    with pytest.raises(InputError, match="'qvap'"):
        column_dataset(hist, guide, None, spec)


def test_unknown_feature_is_rejected():
    with pytest.raises(InputError, match="'albedo'"):
        ColumnSpec(geo=("albedo",))


def test_lmdz_grid_shape_79_levels_144x142(tmp_path):
    """LMDZ6A's 144 x 142 grid with 79 levels: 20 448 columns of 4 x 79 + 1 = 317 inputs, 158 targets."""
    hist, guide, _ = write_history(tmp_path, nlat=142, nlon=144, nlev=79, ntime=2)
    ds = column_dataset(hist, guide, None, ColumnSpec())
    assert ds["inputs"].shape == (2, 20448, 317)
    assert ds["targets"].shape == (2, 20448, 158)
    step = ds.isel(time=1).load()
    assert np.isfinite(step["inputs"].values).all() and np.isfinite(step["targets"].values).all()


def test_cos_zenith_noon_and_midnight():
    t = np.array(["2000-03-20T12:00", "2000-03-20T00:00"], dtype="datetime64[s]")
    cz = cos_solar_zenith(t, np.array([0.0]), np.array([0.0]))
    assert cz[0, 0] == pytest.approx(1.0, abs=0.02)  # equinox noon on the equator at Greenwich
    assert cz[1, 0] == pytest.approx(-1.0, abs=0.02)


def test_negative_humidity_is_read_as_dry():
    """Upper-level transport undershoots (q < 0) are zero humidity in the features, online and offline."""
    spec = ColumnSpec(geo=())
    shape = (1, 2, 1, 3)  # time, lev, lat, lon
    fields = {"u": np.ones(shape), "v": np.ones(shape), "t": np.full(shape, 250.0), "q": np.array([[[[1e-3, -2e-5, 0.0]], [[-1e-6, 5e-6, 2e-6]]]]), "ps": np.full((1, 1, 3), 1e5)}
    x = column_features(fields, spec, lat_deg=np.array([10.0]), lon_deg=np.array([0.0, 120.0, 240.0]), times=np.array(["2000-01-01"], dtype="datetime64[s]"))
    names = expand_names(spec.feature_blocks(2))
    q = x[0][:, [names.index("q_000"), names.index("q_001")]]
    np.testing.assert_array_equal(q, np.array([[1e-3, 0.0], [0.0, 5e-6], [0.0, 2e-6]], np.float32))
    assert x[0][:, names.index("u_000")].tolist() == [1.0, 1.0, 1.0]


def test_temperature_and_humidity_targets_beside_the_winds(tmp_path):
    """With T and q nudged, dt and dq are learnable targets beside du, dv (their own units); a run
    without them names the missing guide_ins variable."""
    from nudgeml.conventions import LmdzGrid, guide_record, histhf_record, open_guide_writer, open_histhf_writer
    from nudgeml.extract import ColumnSpec, column_dataset

    nlat, nlon, nlev = 4, 8, 3
    lat = np.linspace(-67.5, 67.5, nlat)
    lon = np.arange(nlon) * 45.0
    grid = LmdzGrid(lat, lon, np.linspace(95000.0, 20000.0, nlev))
    hist = open_histhf_writer(tmp_path / "histhf.nc", grid, epoch=T0, window_hours=6)
    guide = open_guide_writer(tmp_path / "guide_ins.nc", grid, epoch=T0, alpha=0.1, window_hours=6, thermo=("t", "q"))
    for t in range(3):
        u = value_field(t, nlev, lat, lon)
        hist.append(seconds_since([T0 + np.timedelta64(6 * t, "h")], T0)[0], **histhf_record(grid, u=u, v=u, t=u + 200, q=u * 1e-6, ps=u[0] * 0 + 1e5, precip=u[0] * 0))
        p = np.broadcast_to(grid.presnivs_pa[:, None, None], u.shape)
        guide.append(seconds_since([T0 + np.timedelta64(6 * t, "h")], T0)[0], **guide_record(grid, u=u, v=u, ua=u, va=u, du_ms2=u * 1e-8, dv_ms2=-u * 1e-8, pressure=p, dt_kps=u * 1e-6, ta=u, dq_per_s=u * 1e-11, qa=u))
    hist.close()
    guide.close()
    spec = ColumnSpec(targets=("du", "dv", "dt", "dq"))
    ds = column_dataset(tmp_path / "histhf.nc", tmp_path / "guide_ins.nc", None, spec)
    names = list(ds["target"].values)
    assert names[:nlev] == [f"du_{k:03d}" for k in range(nlev)] and names[2 * nlev] == "dt_000" and names[3 * nlev] == "dq_000"
    targets = ds["targets"].values
    expected_t = value_field(1, nlev, lat, lon) * 1e-6
    col = 2 * nlon + 5  # lat index 2, lon index 5
    np.testing.assert_allclose(targets[1, col, 2 * nlev:3 * nlev], expected_t[:, 2, 5], rtol=1e-5)
    np.testing.assert_allclose(targets[1, col, 3 * nlev:], expected_t[:, 2, 5] * 1e-5, rtol=1e-5)
    hist_only, guide_winds, _ = write_history(tmp_path / "winds", nlat=4, nlon=8, nlev=3, ntime=2)
    with pytest.raises(InputError, match=r"no nudging tendency 'dt' \(from 'teta'\).*nudging.t"):
        column_dataset(hist_only, guide_winds, None, spec)

import numpy as np
import pytest
import xarray as xr

from conftest import gaussian_like_grid
from nudgeml.conventions import LmdzGrid, check_era5_file, daily_totals_mm, era5_record, guide_record, histhf_record, metric_factors, open_era5_writer, open_guide_writer, open_histhf_writer, read_guide, read_histhf
from nudgeml.errors import InputError
from nudgeml.ncstream import seconds_since

T0 = np.datetime64("2000-01-31T00:00", "s")


def _field(nlev, lat, lon, k_scale=1.0):
    """A field whose value tells its level, latitude and longitude: 1000 k + lat + lon/1000."""
    k = np.arange(nlev)[:, None, None]
    return (1000.0 * k * k_scale + lat[None, :, None] + lon[None, None, :] / 1000.0).astype(np.float32)


def test_era5_pressure_levels_follow_cds(tmp_path):
    lat, lon = gaussian_like_grid()
    plev = np.array([1000.0, 850.0, 500.0, 100.0])
    path = tmp_path / "pl.nc"
    w = open_era5_writer(path, "pressure_levels", lat_deg=lat, lon_deg=lon, plev_hpa=plev)
    f = _field(4, lat, lon)
    for i in range(2):
        w.append(seconds_since([T0 + np.timedelta64(6 * i, "h")], np.datetime64("1970-01-01"))[0], **era5_record({n: f + i for n in "uvtqz"}))
    w.close()
    check_era5_file(path, "pressure_levels")
    ds = xr.open_dataset(path)
    assert ds["u"].dims == ("valid_time", "pressure_level", "latitude", "longitude")
    assert ds["latitude"].values[0] > ds["latitude"].values[-1], "ERA5 latitudes are descending"
    assert ds["pressure_level"].attrs["units"] == "hPa"
    assert list(ds["pressure_level"].values) == list(plev)
    assert ds["u"].attrs["units"] == "m s**-1" and ds["q"].attrs["units"] == "kg kg**-1"
    assert ds["z"].attrs["units"] == "m**2 s**-2"
    assert ds["valid_time"].values[1] == np.datetime64("2000-01-31T06:00", "ns")
    raw = xr.open_dataset(path, decode_times=False)
    assert raw["valid_time"].attrs["units"] == "seconds since 1970-01-01"
    # the value at (level 2, northernmost latitude, lon index 3) is the canonical one
    np.testing.assert_allclose(ds["u"].values[0, 2, 0, 3], 2000.0 + lat[-1] + lon[3] / 1000.0, rtol=1e-6)
    assert str(ds["expver"].values[0]) == "0001"


def test_check_era5_file_names_the_missing_variable(tmp_path):
    lat, lon = gaussian_like_grid()
    path = tmp_path / "sl.nc"
    w = open_era5_writer(path, "single_levels", lat_deg=lat, lon_deg=lon)
    w.append(0, **era5_record({"sp": np.ones((lat.size, lon.size))}))
    w.close()
    check_era5_file(path, "single_levels")
    with pytest.raises(InputError, match=r"sl\.nc.*'tp'"):
        check_era5_file(path, "precipitation")
    with pytest.raises(InputError, match="not found"):
        check_era5_file(tmp_path / "none.nc", "single_levels")
    (tmp_path / "broken.nc").write_bytes(b"CDF\x01garbage")
    with pytest.raises(InputError, match="broken.nc"):
        check_era5_file(tmp_path / "broken.nc", "single_levels")


def test_histhf_round_trip_and_orientation(tmp_path):
    lat, lon = gaussian_like_grid()
    presnivs = np.array([95000.0, 70000.0, 30000.0])
    grid = LmdzGrid(lat, lon, presnivs)
    path = tmp_path / "histhf.nc"
    w = open_histhf_writer(path, grid, epoch=T0, window_hours=6)
    f = _field(3, lat, lon)
    ps = f[0] * 0 + 1e5
    w.append(0, **histhf_record(grid, u=f, v=f + 1, t=f + 2, q=f + 3, ps=ps, precip=ps * 1e-10))
    w.close()
    raw = xr.open_dataset(path)
    assert set(["vitu", "vitv", "temp", "ovap", "psol", "precip"]) <= set(raw.data_vars)
    assert raw["vitu"].dims == ("time_counter", "presnivs", "lat", "lon")
    assert raw["presnivs"].values[0] > raw["presnivs"].values[-1], "presnivs surface first, in Pa"
    assert raw["presnivs"].attrs["units"] == "Pa"
    assert raw["lat"].values[0] > raw["lat"].values[-1], "LMDZ latitudes run north to south"
    assert raw["lon"].values.min() < 0 and raw["lon"].values.max() < 180, "LMDZ longitudes in [-180, 180)"
    assert raw["precip"].attrs["units"] == "kg/(s*m2)"
    assert raw["vitu"].attrs["online_operation"] == "inst(X)" and raw["precip"].attrs["online_operation"] == "ave(X)"
    h = read_histhf(path)
    np.testing.assert_array_equal(h["u"].values[0], f)  # canonical again
    np.testing.assert_array_equal(h["q"].values[0], f + 3)
    assert h["time"].values[0] == np.datetime64("2000-01-31T00:00", "ns")
    with pytest.raises(InputError, match="'vitu'"):
        read_histhf(path, {"u": "vitu_missing" if False else "vitu", "v": "vitv", "t": "temp", "q": "ovap", "ps": "psol", "precip": "pr"})


def test_guide_units_are_lmdz_and_convert_back_to_ms2(tmp_path):
    lat, lon = gaussian_like_grid()
    presnivs = np.array([95000.0, 50000.0])
    grid = LmdzGrid(lat, lon, presnivs)
    path = tmp_path / "guide_ins.nc"
    w = open_guide_writer(path, grid, epoch=T0, alpha=1800 / 21600, window_hours=6)
    du = _field(2, lat, lon) * 1e-8
    dv = -du
    u = _field(2, lat, lon)
    w.append(0, **guide_record(grid, u=u, v=u, ua=u + 1, va=u - 1, du_ms2=du, dv_ms2=dv, pressure=u * 0 + 5e4))
    w.close()
    raw = xr.open_dataset(path)
    cu, _ = metric_factors(grid)
    # ucov is covariant wind per day: du [m/s2] * 86400 * cu
    i, j = 5, 7  # canonical lat, lon
    lj = grid.lon_order().tolist().index(j)
    np.testing.assert_allclose(raw["ucov"].values[0, 1, lat.size - 1 - i, lj], du[1, i, j] * 86400 * cu[i, j], rtol=1e-5)
    g = read_guide(path)
    np.testing.assert_allclose(g["du"].values[0], du, rtol=1e-5)
    np.testing.assert_allclose(g["dv"].values[0], dv, rtol=1e-5)
    np.testing.assert_array_equal(g["ua"].values[0], u + 1)


def test_guide_staggered_lmdz_shape_destaggers_to_physics_grid(tmp_path):
    """LMDZ 144x142 dynamics grid: u on (LATU 143, LONU 145), v on (LATV 142, LONV 145), 79 levels."""
    iim, jjm, llm = 144, 142, 79
    lonv = -180.0 + np.arange(iim + 1) * 360.0 / iim  # scalar longitudes, periodic point repeated
    lonu = lonv + 180.0 / iim
    latu = 90.0 - np.arange(jjm + 1) * 180.0 / jjm
    latv = 0.5 * (latu[:-1] + latu[1:])
    level = np.linspace(100000, 10, llm)
    # a zonal increment linear in longitude and a meridional one linear in latitude (physical, m s-2)
    du_u = np.broadcast_to(1e-6 * lonu[None, None, :], (1, llm, jjm + 1, iim + 1))
    dv_v = np.broadcast_to(1e-6 * latv[None, :, None], (1, llm, jjm, iim + 1))
    cu = 6.371e6 * np.cos(np.deg2rad(latu))[:, None] * 2 * np.pi / iim * np.ones((1, iim + 1))
    cv = 6.371e6 * np.pi / jjm * np.ones((jjm, iim + 1))
    ds = xr.Dataset(
        {
            "ucov": (("TIME", "LEVEL", "LATU", "LONU"), (du_u * 86400 * cu).astype(np.float32)),
            "vcov": (("TIME", "LEVEL", "LATV", "LONV"), (dv_v * 86400 * cv).astype(np.float32)),
            "cu": (("LATU", "LONU"), cu.astype(np.float32)),
            "cv": (("LATV", "LONV"), cv.astype(np.float32)),
        },
        coords={"LONU": lonu, "LATU": latu, "LONV": lonv, "LATV": latv, "LEVEL": level},
    )
    ds.to_netcdf(tmp_path / "guide_ins.nc")
    g = read_guide(tmp_path / "guide_ins.nc")
    assert g["du"].shape == (1, llm, jjm + 1, iim), "scalar grid: 143 latitudes incl. poles, 144 longitudes"
    assert np.all(np.diff(g["lat"].values) > 0) and np.all(np.diff(g["lon"].values) > 0)
    # interior scalar point: mean of neighbouring u points = 1e-6 * scalar longitude
    k, jj, ii = 10, 40, 50
    lon_s = g["lon"].values[ii]
    lon_s_wrapped = lon_s if lon_s < 180 else lon_s - 360
    if -180 < lon_s_wrapped < 179:
        np.testing.assert_allclose(g["du"].values[0, k, jj, ii], 1e-6 * lon_s_wrapped, rtol=1e-3, atol=1e-9)
    np.testing.assert_allclose(g["dv"].values[0, k, jj, ii], 1e-6 * g["lat"].values[jj], rtol=1e-3, atol=1e-9)


def test_guide_pole_rows_are_masked_where_cu_is_zero(tmp_path):
    """LMDZ's pole rows of u have cu = 0 (cos 90 deg) and ucov from rounding only: dividing would give
    inf/NaN there and spread it to the polar scalar points; the reader sets those rows to 0."""
    iim, jjm = 8, 6
    lonv = -180.0 + np.arange(iim + 1) * 360.0 / iim
    lonu = lonv + 180.0 / iim
    latu = 90.0 - np.arange(jjm + 1) * 180.0 / jjm
    latv = 0.5 * (latu[:-1] + latu[1:])
    cu = 6.371e6 * np.cos(np.deg2rad(latu))[:, None] * 2 * np.pi / iim * np.ones((1, iim + 1))
    cu[[0, -1]] = 0.0  # as LMDZ stores them
    ucov = np.full((1, 2, jjm + 1, iim + 1), 86400 * 1e-6) * cu
    ucov[:, :, [0, -1]] = 1e-9  # rounding noise over cu = 0
    ds = xr.Dataset(
        {
            "ucov": (("TIME", "LEVEL", "LATU", "LONU"), ucov),
            "vcov": (("TIME", "LEVEL", "LATV", "LONV"), np.zeros((1, 2, jjm, iim + 1))),
            "cu": (("LATU", "LONU"), cu),
            "cv": (("LATV", "LONV"), np.ones((jjm, iim + 1))),
        },
        coords={"LONU": lonu, "LATU": latu, "LONV": lonv, "LATV": latv, "LEVEL": [100000.0, 50000.0]},
    )
    ds.to_netcdf(tmp_path / "guide_ins.nc")
    du = read_guide(tmp_path / "guide_ins.nc")["du"].values
    assert np.all(np.isfinite(du))
    np.testing.assert_array_equal(du[:, :, [0, -1]], 0.0)  # the polar scalar rows
    np.testing.assert_allclose(du[:, :, 1:-1], 1e-6, rtol=1e-6)


def test_guide_scalars_on_lonv_as_lmdz_guide_out_writes_them(tmp_path):
    """LMDZ's guide_out defines teta, q and SP on (LONV, LATU) (Fortran order), and TIME as a dimension
    without values: the scalars are read on the scalar points, teta converted with SP."""
    iim, jjm, llm = 8, 4, 2
    lonv = -180.0 + np.arange(iim + 1) * 360.0 / iim
    lonu = lonv + 180.0 / iim
    latu = 90.0 - np.arange(jjm + 1) * 180.0 / jjm
    latv = 0.5 * (latu[:-1] + latu[1:])
    level = np.array([90000.0, 30000.0])
    teta = np.broadcast_to((1.0 + np.arange(iim + 1))[None, None, None, :], (1, llm, jjm + 1, iim + 1))  # K/day, by longitude
    sp = np.broadcast_to(level[None, :, None, None], (1, llm, jjm + 1, iim + 1))
    ds = xr.Dataset(
        {
            "ucov": (("TIME", "LEVEL", "LATU", "LONU"), np.zeros((1, llm, jjm + 1, iim + 1))),
            "vcov": (("TIME", "LEVEL", "LATV", "LONV"), np.zeros((1, llm, jjm, iim + 1))),
            "teta": (("TIME", "LEVEL", "LATU", "LONV"), teta),
            "q": (("TIME", "LEVEL", "LATU", "LONV"), 1e-3 * teta),
            "SP": (("TIME", "LEVEL", "LATU", "LONV"), sp),
            "cu": (("LATU", "LONU"), np.ones((jjm + 1, iim + 1))),
            "cv": (("LATV", "LONV"), np.ones((jjm, iim + 1))),
        },
        coords={"LONU": lonu, "LATU": latu, "LONV": lonv, "LATV": latv, "LEVEL": level},
    )
    ds.to_netcdf(tmp_path / "guide_ins.nc")
    g = read_guide(tmp_path / "guide_ins.nc")
    assert g["dt"].dims == g["du"].dims and g["dt"].shape == (1, llm, jjm + 1, iim)
    # the scalar point at longitude lonv[i] carries teta[i] (i < iim: the repeated point dropped)
    lon = g["lon"].values
    i = int(np.argmin(np.abs(np.mod(lonv[:iim], 360.0)[None, :] - lon[:, None]), axis=1)[2])
    want = (1.0 + i) / 86400.0 * (level / 101325.0) ** 0.2857143
    np.testing.assert_allclose(g["dt"].values[0, :, 2, 2], want, rtol=1e-5)
    np.testing.assert_allclose(g["dq"].values[0, 0, 2, 2], 1e-3 * (1.0 + i) / 86400.0, rtol=1e-5)


def test_guide_missing_variable_is_named(tmp_path):
    xr.Dataset({"ucov": (("TIME", "LEVEL", "LATU", "LONU"), np.zeros((1, 1, 2, 2)))}).to_netcdf(tmp_path / "g.nc")
    with pytest.raises(InputError, match=r"g\.nc.*'vcov'"):
        read_guide(tmp_path / "g.nc")


def test_daily_totals_from_hourly_accumulations():
    times = np.arange(np.datetime64("2000-01-01T01:00"), np.datetime64("2000-01-03T01:00"), np.timedelta64(1, "h"))
    tp = xr.DataArray(np.full((times.size, 2, 3), 1e-4), dims=("valid_time", "lat", "lon"), coords={"valid_time": times})
    daily = daily_totals_mm(tp)
    # 24 accumulations of 0.1 mm: 2.4 mm/day for each complete day (01:00 of day D .. 00:00 of D+1)
    assert daily.sizes["time"] == 2
    np.testing.assert_allclose(daily.values, 2.4)
    partial = daily_totals_mm(tp.isel(valid_time=slice(0, 30)))
    assert partial.sizes["time"] == 1


def test_guide_temperature_and_humidity_increments_round_trip(tmp_path):
    """T and q nudging in LMDZ's names: ``teta`` (theta increment, K/day) and ``q`` (kg/kg/day); the
    reader gives back the temperature increment in K/s through the file's own pressure ``SP``."""
    from nudgeml.conventions import LMDZ_KAPPA, LMDZ_PREFF_PA

    lat, lon = gaussian_like_grid()
    grid = LmdzGrid(lat, lon, np.array([95000.0, 50000.0]))
    path = tmp_path / "guide_ins.nc"
    w = open_guide_writer(path, grid, epoch=T0, alpha=0.1, window_hours=6, thermo=("t", "q"))
    u = _field(2, lat, lon)
    dt = _field(2, lat, lon) * 1e-7  # K/s
    dq = -_field(2, lat, lon) * 1e-12  # kg/kg/s
    pressure = np.stack([np.full(u.shape[1:], 9.0e4), np.full(u.shape[1:], 4.5e4)]).astype(np.float32)
    w.append(0, **guide_record(grid, u=u, v=u, ua=u, va=u, du_ms2=u * 0, dv_ms2=u * 0, pressure=pressure, dt_kps=dt, ta=u + 250, dq_per_s=dq, qa=u * 1e-6))
    w.close()
    raw = xr.open_dataset(path)
    i, j = 5, 7
    lj = grid.lon_order().tolist().index(j)
    theta_per_day = dt[1, i, j] * 86400 * (LMDZ_PREFF_PA / 4.5e4) ** LMDZ_KAPPA
    np.testing.assert_allclose(raw["teta"].values[0, 1, lat.size - 1 - i, lj], theta_per_day, rtol=1e-5)
    assert raw["teta"].attrs["units"] == "K/day" and raw["q"].attrs["units"] == "kg/kg/day"
    g = read_guide(path)
    np.testing.assert_allclose(g["dt"].values[0], dt, rtol=1e-5)
    np.testing.assert_allclose(g["dq"].values[0], dq, rtol=1e-5)
    np.testing.assert_allclose(g["ta"].values[0], u + 250, rtol=1e-6)
    np.testing.assert_allclose(g["qa"].values[0], u * 1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="goes with its analysis"):
        guide_record(grid, u=u, v=u, ua=u, va=u, du_ms2=u, dv_ms2=u, pressure=pressure, dt_kps=dt)


def test_guide_without_thermo_has_no_temperature_fields(tmp_path):
    lat, lon = gaussian_like_grid()
    grid = LmdzGrid(lat, lon, np.array([95000.0, 50000.0]))
    path = tmp_path / "guide_ins.nc"
    w = open_guide_writer(path, grid, epoch=T0, alpha=0.1, window_hours=6)
    u = _field(2, lat, lon)
    w.append(0, **guide_record(grid, u=u, v=u, ua=u, va=u, du_ms2=u * 0, dv_ms2=u * 0, pressure=u * 0 + 5e4))
    w.close()
    g = read_guide(path)
    assert not {"dt", "dq", "ta", "qa"} & set(g.data_vars)
    with pytest.raises(ValueError, match="among 't', 'q'"):
        open_guide_writer(tmp_path / "x.nc", grid, epoch=T0, alpha=0.1, window_hours=6, thermo=("T",))

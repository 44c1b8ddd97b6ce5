"""The mean nudging tendency: winds always, temperature and humidity when the nudged run relaxed them."""

import numpy as np
import pytest
import xarray as xr

from nudgeml.conventions import LmdzGrid, guide_record, open_guide_writer
from nudgeml.errors import InputError
from nudgeml.mean_tendency import mean_tendency, mean_variables, read_mean_tendency, write_mean_tendency
from nudgeml.ncstream import seconds_since

T0 = np.datetime64("2000-01-31T12:00", "s")
NLAT, NLON, NLEV = 4, 8, 3


def write_guide(path, thermo=("t", "q"), ntime=6):
    """Window k (6-hourly from T0, across the Jan/Feb boundary) has du = (k+1) 1e-6 m s-2,
    dt = (k+1) 1e-5 K s-1 and dq = -(k+1) 1e-9 kg kg-1 s-1 everywhere (pressure varying by level)."""
    lat = np.linspace(-67.5, 67.5, NLAT)
    lon = np.arange(NLON) * 45.0
    grid = LmdzGrid(lat, lon, np.linspace(95000.0, 20000.0, NLEV))
    w = open_guide_writer(path, grid, epoch=T0, alpha=0.1, window_hours=6, thermo=thermo)
    one = np.ones((NLEV, NLAT, NLON))
    p = np.broadcast_to(grid.presnivs_pa[:, None, None], one.shape)
    for k in range(ntime):
        scalars = {}
        if "t" in thermo:
            scalars.update(dt_kps=(k + 1) * 1e-5 * one, ta=250 * one)
        if "q" in thermo:
            scalars.update(dq_per_s=-(k + 1) * 1e-9 * one, qa=1e-3 * one)
        rec = guide_record(grid, u=one, v=one, ua=one, va=one, du_ms2=(k + 1) * 1e-6 * one, dv_ms2=0 * one, pressure=p, **scalars)
        w.append(seconds_since([T0 + np.timedelta64(6 * k, "h")], T0)[0], **rec)
    w.close()
    return path


def test_mean_holds_t_and_q_when_nudged_with_units_blocks_and_climatology(tmp_path):
    guide = write_guide(tmp_path / "guide_ins.nc")
    # windows 0..4 (Jan 31 12h - Feb 1 12h) are training; window 5 is not
    blocks = [(T0, T0 + np.timedelta64(6, "h")), (T0 + np.timedelta64(12, "h"), T0 + np.timedelta64(24, "h"))]
    ds = mean_tendency(guide, blocks)
    assert mean_variables(ds) == ("du", "dv", "dt", "dq") and ds.attrs["variables"] == "du dv dt dq"
    assert ds["dt_mean"].attrs["units"] == "K s-1" and ds["dq_mean"].attrs["units"] == "kg kg-1 s-1" and ds["du_mean"].attrs["units"] == "m s-2"
    np.testing.assert_allclose(ds["du_mean"].values, 3e-6, rtol=1e-5)  # mean of 1..5
    np.testing.assert_allclose(ds["dt_mean"].values, 3e-5, rtol=1e-4)  # teta -> T through SP: recovered
    np.testing.assert_allclose(ds["dq_mean"].values, -3e-9, rtol=1e-4)
    # January: windows 0, 1 (1.5); February: windows 2..4 (4); other months: the overall mean
    np.testing.assert_allclose(ds["dt_monthly"].sel(month=1).values, 1.5e-5, rtol=1e-4)
    np.testing.assert_allclose(ds["dt_monthly"].sel(month=2).values, 4e-5, rtol=1e-4)
    np.testing.assert_allclose(ds["dq_monthly"].sel(month=7).values, -3e-9, rtol=1e-4)
    out = write_mean_tendency(ds, tmp_path / "mean.nc")
    assert mean_variables(read_mean_tendency(out)) == ("du", "dv", "dt", "dq")


def test_mean_of_a_winds_only_run_has_no_t_or_q(tmp_path):
    guide = write_guide(tmp_path / "guide_ins.nc", thermo=())
    ds = mean_tendency(guide, [(T0, T0 + np.timedelta64(1, "D"))])
    assert mean_variables(ds) == ("du", "dv") and "dt_mean" not in ds
    t_only = mean_tendency(write_guide(tmp_path / "t.nc", thermo=("t",)), [(T0, T0 + np.timedelta64(1, "D"))])
    assert mean_variables(t_only) == ("du", "dv", "dt")


def test_a_mean_file_with_half_a_pair_is_refused_naming_it(tmp_path):
    ds = mean_tendency(write_guide(tmp_path / "guide_ins.nc"), [(T0, T0 + np.timedelta64(1, "D"))])
    ds.drop_vars("dt_monthly").to_netcdf(tmp_path / "bad.nc")
    with pytest.raises(InputError, match=r"bad\.nc: mean tendency file has 'dt_mean' without 'dt_monthly'"):
        read_mean_tendency(tmp_path / "bad.nc")
    xr.Dataset({"du_mean": ds["du_mean"]}).to_netcdf(tmp_path / "winds.nc")
    with pytest.raises(InputError, match=r"winds\.nc: mean tendency file has no 'dv_mean'"):
        read_mean_tendency(tmp_path / "winds.nc")

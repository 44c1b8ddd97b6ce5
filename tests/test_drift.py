"""The monthly zonal-mean error of a free run (``nudgeml drift``): the drift the year's one score hides."""

from pathlib import Path

import numpy as np
import xarray as xr

from nudgeml.cli import main
from nudgeml.metrics import monthly_zonal_rmse


def test_monthly_zonal_rmse_is_each_months_offset():
    """A run equal to the truth plus 1 m/s in January and 3 m/s in February on every level and latitude:
    its monthly errors are 1 and 3, whatever the truth's eddies (they cancel in the zonal mean)."""
    rng = np.random.default_rng(0)
    times = np.arange(np.datetime64("2001-01-25T00:00"), np.datetime64("2001-02-10T00:00"), np.timedelta64(6, "h"))
    truth = rng.normal(size=(times.size, 2, 4, 8))
    offset = np.where(times.astype("datetime64[M]") == np.datetime64("2001-01"), 1.0, 3.0)
    run = truth + offset[:, None, None, None]
    got = monthly_zonal_rmse(run, truth, times, np.array([-60.0, -20.0, 20.0, 60.0]))
    assert [m for m, _ in got] == ["2001-01", "2001-02"]
    np.testing.assert_allclose([v for _, v in got], [1.0, 3.0], rtol=1e-12)


def test_drift_command_pairs_runs_and_truth_by_time(tmp_path: Path, capsys):
    """The command reads free runs' histories and the truth on the model grid, keeps their common times,
    and prints one row per run; a run that shares no time with the truth is named."""
    times = np.arange(np.datetime64("2001-01-30T00:00"), np.datetime64("2001-02-03T00:00"), np.timedelta64(6, "h")).astype("datetime64[ns]")
    lat, lon, lev = np.array([-45.0, 45.0]), np.arange(4) * 90.0, np.array([90000.0, 50000.0])
    truth = np.zeros((times.size, 2, 2, 4))
    fields = {k: (("time", "lev", "lat", "lon"), truth) for k in ("u", "v", "t", "q")} | {"ps": (("time", "lat", "lon"), truth[:, 0] + 1e5)}
    xr.Dataset(fields, coords={"time": times, "lev": lev, "lat": lat, "lon": lon}).to_netcdf(tmp_path / "2001-01.nc")
    run_dir = tmp_path / "free" / "ml"
    run_dir.mkdir(parents=True)
    u = np.where((times.astype("datetime64[M]") == np.datetime64("2001-02"))[:, None, None, None], 2.0, 0.5) + truth
    t_secs = (times - times[0]) / np.timedelta64(1, "s")
    hist = xr.Dataset(
        {"vitu": (("time_counter", "presnivs", "lat", "lon"), u.astype(np.float32)), "vitv": (("time_counter", "presnivs", "lat", "lon"), truth.astype(np.float32)),
         "temp": (("time_counter", "presnivs", "lat", "lon"), truth.astype(np.float32) + 250), "ovap": (("time_counter", "presnivs", "lat", "lon"), truth.astype(np.float32)),
         "psol": (("time_counter", "lat", "lon"), truth[:, 0].astype(np.float32) + 1e5), "precip": (("time_counter", "lat", "lon"), truth[:, 0].astype(np.float32))},
        coords={"time_counter": ("time_counter", t_secs, {"units": "seconds since 2001-01-30 00:00:00", "calendar": "gregorian"}),
                "presnivs": ("presnivs", lev, {"units": "Pa"}), "lat": lat, "lon": lon})
    hist.to_netcdf(run_dir / "histhf.nc")
    assert main(["drift", str(run_dir / "histhf.nc"), "--truth", str(tmp_path / "2001-01.nc")]) == 0
    out = capsys.readouterr().out
    assert "| run | 2001-01 | 2001-02 |" in out and "| ml | 0.50 | 2.00 |" in out
    later = tmp_path / "free" / "later"
    later.mkdir()
    hist.assign_coords(time_counter=("time_counter", t_secs, {"units": "seconds since 2003-01-30 00:00:00", "calendar": "gregorian"})).to_netcdf(later / "histhf.nc")
    assert main(["drift", str(later / "histhf.nc"), "--truth", str(tmp_path / "2001-01.nc")]) == 2
    assert "later/histhf.nc: no time in common with the truth files" in capsys.readouterr().err

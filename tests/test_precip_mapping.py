"""The precipitation mapping (nudgeml.precip_mapping) on synthetic distributions whose answer is known."""

import numpy as np
import pytest
import xarray as xr

from nudgeml.errors import InputError
from nudgeml.precip_mapping import QuantileMapping, fit_quantile_mapping, read_mapping, run_rng, write_mapping

LAT = np.array([-45.0, 0.0, 45.0])
NLON = 40


def _daily(values: np.ndarray, start: str = "2000-01-01") -> xr.DataArray:
    t = np.datetime64(start, "ns") + np.arange(values.shape[0]) * np.timedelta64(1, "D")
    return xr.DataArray(values, dims=("time", "lat", "lon"), coords={"time": t, "lat": LAT, "lon": np.arange(NLON) * 9.0})


def _analysis(rng: np.random.Generator, n: int) -> np.ndarray:
    """Gamma rain on 80 % of the cell-days, 0 on the rest; the equator's row rains twice as hard."""
    wet = rng.random((n, LAT.size, NLON)) < 0.8
    return np.where(wet, rng.gamma(0.8, 5.0, (n, LAT.size, NLON)) * np.array([1.0, 2.0, 1.0])[:, None], 0.0)


def _model(rng: np.random.Generator, n: int) -> np.ndarray:
    """The model's: dry on 40 % of the cell-days (exact zeros, ties), 1.5 x too hard when it rains."""
    wet = rng.random((n, LAT.size, NLON)) < 0.6
    return np.where(wet, 1.5 * rng.gamma(0.8, 5.0, (n, LAT.size, NLON)) * np.array([1.0, 2.0, 1.0])[:, None], 0.0)


def test_the_mapping_gives_fresh_model_days_the_analysis_distribution_row_by_row():
    rng = np.random.default_rng(1)
    n = 400
    m = fit_quantile_mapping(_daily(_model(rng, n)), _daily(_analysis(rng, n)), before=np.datetime64("2002-01-01"), quantiles=200)
    assert m.n_days == n and m.model_mm.shape == (LAT.size, 200)
    fresh = _model(rng, 300)  # out of sample: new draws of the same model
    mapped = m.apply(fresh, LAT, run_rng(0, "control"))
    target = _analysis(rng, 300)
    for j in range(LAT.size):
        got, want = mapped[:, j].ravel(), target[:, j].ravel()
        assert np.mean(got == 0.0) == pytest.approx(0.2, abs=0.02)  # the model's extra dry days get the analysis' rain
        assert np.mean(fresh[:, j] == 0.0) == pytest.approx(0.4, abs=0.02)
        for q in (0.5, 0.9, 0.99):
            assert np.quantile(got, q) == pytest.approx(np.quantile(want, q), rel=0.08), (j, q)
    wet = fresh > 0  # between the model's quantiles the mapping is monotone: a wetter day stays wetter
    for j in range(LAT.size):
        x, y = fresh[:, j][wet[:, j]], mapped[:, j][wet[:, j]]
        order = np.argsort(x)
        assert np.all(np.diff(y[order]) >= -1e-9)
    again = m.apply(fresh, LAT, run_rng(0, "control"))
    assert np.array_equal(again, mapped)  # seeded: the report is reproducible
    assert not np.array_equal(m.apply(fresh, LAT, run_rng(0, "control.m1")), mapped)  # each run its own draws


def test_the_fit_uses_only_the_days_before_the_free_runs():
    rng = np.random.default_rng(2)
    a, mdl = _analysis(rng, 60), _model(rng, 60)
    base = fit_quantile_mapping(_daily(mdl[:30]), _daily(a[:30]), before=np.datetime64("2000-01-31"), quantiles=100)
    mdl[30:] *= 100.0  # the free runs' period: anything there must not move the fit
    full = fit_quantile_mapping(_daily(mdl), _daily(a), before=np.datetime64("2000-01-31"), quantiles=100)
    assert full.n_days == 30 and full.last_day == "2000-01-30"
    assert np.array_equal(full.model_mm, base.model_mm) and np.array_equal(full.analysis_mm, base.analysis_mm)


def test_values_beyond_the_fitted_range_keep_the_outermost_difference():
    levels = np.array([0.25, 0.75])
    m = QuantileMapping(levels=levels, model_mm=np.array([[1.0, 3.0]]), analysis_mm=np.array([[2.0, 5.0]]), lat=np.array([0.0]), first_day="", last_day="", n_days=1)
    x = np.array([[[0.5, 2.0, 10.0]]])
    got = m.apply(x, np.array([0.0]), run_rng(0, "r"))
    assert got.tolist() == [[[1.5, 3.5, 12.0]]]  # below: +1; halfway: 3.5; above: +2


def test_bad_input_is_refused_naming_the_file(tmp_path):
    rng = np.random.default_rng(3)
    model, analysis = _daily(_model(rng, 5)), _daily(_analysis(rng, 5))
    with pytest.raises(InputError, match=r"nudged\.nc: 5 complete day.*report\.precip_mapping\.quantiles \(500\)"):
        fit_quantile_mapping(model, analysis, before=np.datetime64("2001-01-01"), quantiles=500, model_path="nudged.nc")
    with pytest.raises(InputError, match=r"nudged\.nc: 0 complete day"):
        fit_quantile_mapping(model, analysis, before=np.datetime64("1999-01-01"), quantiles=10, model_path="nudged.nc")
    with pytest.raises(InputError, match=r"nudged\.nc: its precipitation grid"):
        fit_quantile_mapping(model.isel(lat=[0, 1]), analysis, before=np.datetime64("2001-01-01"), quantiles=10, model_path="nudged.nc")
    m = fit_quantile_mapping(model, analysis, before=np.datetime64("2001-01-01"), quantiles=10)
    write_mapping(m, tmp_path / "map.nc")
    back = read_mapping(tmp_path / "map.nc")
    assert np.array_equal(back.model_mm, m.model_mm) and back.n_days == 5 and back.first_day == "2000-01-01"
    with pytest.raises(InputError, match=r"run\.nc: its latitudes \(2 rows\)"):
        back.apply(np.zeros((3, 2, NLON)), LAT[:2], run_rng(0, "r"), where="run.nc")
    xr.Dataset({"x": ("lat", LAT)}).to_netcdf(tmp_path / "other.nc")
    with pytest.raises(InputError, match=r"other\.nc: no 'model_quantile'"):
        read_mapping(tmp_path / "other.nc")

"""The damped-copy factors on a synthetic analysis / nudged-state pair whose answer is known analytically."""

import json

import numpy as np
import pytest

from nudgeml.tracking import damped_copy_factors, level_factors

DT_S = 900.0  # the stand-in's 15-min step


def relaxed_pair(phi: float, tau_s: float, n_time: int = 6000, n_space: int = 64, seed: int = 0):
    """An AR(1) analysis ``a`` on independent points and its forward-Euler relaxed copy ``x``.

    The model's own tendency is zero here, so the nudging tendency ``(a - x) / tau`` is all it does;
    ``x`` starts on ``a`` and the first 1000 steps (many times tau and the AR time scale) are dropped.
    """
    rng = np.random.default_rng(seed)
    alpha = DT_S / tau_s
    a = np.empty((n_time + 1000, n_space))
    x = np.empty_like(a)
    a[0] = rng.standard_normal(n_space) / np.sqrt(1 - phi**2)
    x[0] = a[0]
    for n in range(a.shape[0] - 1):
        a[n + 1] = phi * a[n] + rng.standard_normal(n_space)
        x[n + 1] = x[n] + alpha * (a[n] - x[n])
    a, x = a[1000:], x[1000:]
    return a[:, :, None], x[:, :, None], (a - x)[:, :, None] / tau_s  # (time, lat=space, lon=1)


@pytest.mark.parametrize("phi, tau_h", [(0.95, 1.0), (0.9, 3.0), (0.98, 6.0)])
def test_factors_match_the_analytic_damped_copy(phi, tau_h):
    tau_s = tau_h * 3600.0
    a, x, g = relaxed_pair(phi, tau_s)
    f = level_factors(a, x, g, tau_seconds=tau_s)
    cov_ratio, var_ratio = damped_copy_factors(phi, DT_S / tau_s)
    # sampling error: ~1/sqrt(n_space * n_time / decorrelation) of the ratios, well under 2 %
    assert f.cov_ratio == pytest.approx(cov_ratio, rel=0.02)
    assert f.var_ratio == pytest.approx(var_ratio, rel=0.02)
    assert f.cov_ratio < 1.0 and f.var_ratio < 1.0  # a damped, lagged copy: less variance, imperfect covariance
    # the tendency is exactly (a - x)/tau: its slopes follow from the two factors
    assert f.slope_on_x_times_tau == pytest.approx(cov_ratio / var_ratio - 1.0, rel=0.05, abs=2e-3)
    assert f.slope_on_a_times_tau == pytest.approx(1.0 - cov_ratio, rel=0.05, abs=2e-3)
    assert f.slope_on_x_per_s * tau_s == pytest.approx(f.slope_on_x_times_tau)


def test_factors_tell_tau_apart():
    """The measurement is not a constant: a 6-h relaxation is not mistaken for a 1-h one."""
    a, x, _ = relaxed_pair(0.95, 6 * 3600.0, n_time=3000)
    f = level_factors(a, x)
    assert f.cov_ratio == pytest.approx(damped_copy_factors(0.95, DT_S / (6 * 3600.0))[0], rel=0.02)
    assert abs(f.cov_ratio - damped_copy_factors(0.95, DT_S / 3600.0)[0]) > 0.1


def test_analytic_limits():
    # alpha = 1: x[n] = a[n-1], so Cov/Var = phi and Var(x) = Var(a)
    assert damped_copy_factors(0.7, 1.0) == pytest.approx((0.7, 1.0))
    # a white-noise analysis (phi -> 0): x is uncorrelated with a at the same time
    c, v = damped_copy_factors(1e-12, 0.25)
    assert c == pytest.approx(0.0, abs=1e-9) and v == pytest.approx(0.25 / 1.75)
    with pytest.raises(ValueError, match="alpha"):
        damped_copy_factors(0.9, 0.0)


def test_perfect_copy_and_weights():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((50, 4, 6))
    f = level_factors(a, a.copy(), lat_deg=np.array([-60.0, -20.0, 20.0, 60.0]))
    assert (f.cov_ratio, f.var_ratio, f.correlation) == pytest.approx((1.0, 1.0, 1.0))
    assert f.slope_on_x_per_s is None
    # a time-constant offset is not tracking error: gridpoint anomalies remove it, level anomalies keep it
    offset = a + rng.standard_normal((1, 4, 6)) * 3.0
    assert level_factors(a, offset).var_ratio == pytest.approx(1.0)
    assert level_factors(a, offset, anomalies="level").var_ratio > 2.0


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="must be equal"):
        level_factors(np.zeros((5, 2, 2)), np.zeros((5, 2, 3)))
    with pytest.raises(ValueError, match="no variance"):
        level_factors(np.ones((5, 2, 2)), np.ones((5, 2, 2)), level=85000.0)


def test_json_is_written_atomically(tmp_path):
    from nudgeml.tracking import write_json

    write_json({"variables": {}}, tmp_path / "f.json")
    assert json.loads((tmp_path / "f.json").read_text()) == {"variables": {}}
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_factors_of_a_run_from_its_guide_file(tmp_path, capsys):
    """From a guide_ins file (the stand-in's layout): the same numbers as on the arrays, the CLI prints
    and writes them, and a variable the run did not nudge is named."""
    from conftest import gaussian_like_grid
    from nudgeml.cli import main
    from nudgeml.conventions import LmdzGrid, guide_record, open_guide_writer
    from nudgeml.errors import InputError
    from nudgeml.ncstream import seconds_since
    from nudgeml.tracking import run_factors

    lat, lon = gaussian_like_grid(8, 16)
    grid = LmdzGrid(lat, lon, np.array([95000.0, 50000.0]))
    rng = np.random.default_rng(3)
    ntime = 40
    a = rng.standard_normal((ntime, 2, lat.size, lon.size)).astype(np.float32)
    x = (0.8 * a + 0.3 * rng.standard_normal(a.shape)).astype(np.float32)
    tau_s = 6 * 3600.0
    t0 = np.datetime64("2000-01-01T00:00", "s")
    path = tmp_path / "guide_ins.nc"
    w = open_guide_writer(path, grid, epoch=t0, alpha=0.1, window_hours=6, attrs={"tau_hours": 6.0})
    for i in range(ntime):
        g = (a[i] - x[i]) / tau_s
        w.append(seconds_since([t0 + np.timedelta64(6 * i, "h")], t0)[0], **guide_record(grid, u=x[i], v=x[i], ua=a[i], va=a[i], du_ms2=g, dv_ms2=g, pressure=a[i] * 0 + 5e4))
    w.close()
    res = run_factors(path)
    ref = level_factors(a[:, 1], x[:, 1], (a[:, 1] - x[:, 1]) / tau_s, tau_seconds=tau_s, lat_deg=lat)
    got = res["variables"]["u"]["levels"][1]
    assert res["variables"]["u"]["tau_hours"] == 6.0
    for key in ("cov_ratio", "var_ratio", "slope_on_x_times_tau", "slope_on_a_times_tau"):
        assert got[key] == pytest.approx(getattr(ref, key), rel=1e-4)
    assert got["cov_ratio"] == pytest.approx(0.8, abs=0.03)
    with pytest.raises(InputError, match="'ta'.*'t'"):
        run_factors(path, variables=("t",), tau_hours=6.0)
    assert main(["tracking", str(path), "--json", str(tmp_path / "f.json")]) == 0
    assert "| u | 950 |" in capsys.readouterr().out
    assert json.loads((tmp_path / "f.json").read_text())["variables"]["v"]["levels"][0]["cov_ratio"] > 0.7

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

import numpy as np
import pytest

from nudgeml.gcm.vertical import GRAVITY_M_S2, LAPSE_RATE_K_M, RD_J_KG_K, sigma_to_pressure

SIGMA = np.array([0.95, 0.835, 0.685, 0.51, 0.34, 0.2, 0.095, 0.025])  # surface first


def test_exact_for_fields_linear_in_log_pressure():
    ps = np.array([[100000.0, 85000.0]])
    p = SIGMA[:, None, None] * ps[None]
    field = 3.0 * np.log(p) + 1.0
    plev = np.array([80000.0, 50000.0, 20000.0, 5000.0])
    out = sigma_to_pressure(field, ps, SIGMA, plev, kind="wind")
    np.testing.assert_allclose(out, 3.0 * np.log(plev)[:, None, None] + 1.0 + 0 * ps[None], rtol=1e-6)


def test_orientation_is_checked():
    with pytest.raises(ValueError, match="surface first"):
        sigma_to_pressure(np.zeros((8, 1, 1)), np.ones((1, 1)), SIGMA[::-1], np.array([5e4]), kind="wind")


def test_extrapolation_below_ground_and_above_top():
    ps = np.array([[80000.0]])
    t = np.linspace(280.0, 220.0, 8)[:, None, None]
    out_t = sigma_to_pressure(t, ps, SIGMA, np.array([100000.0, 1000.0]), kind="temperature")
    expo = RD_J_KG_K * LAPSE_RATE_K_M / GRAVITY_M_S2
    np.testing.assert_allclose(out_t[0, 0, 0], 280.0 * (100000.0 / (0.95 * 80000.0)) ** expo, rtol=1e-6)
    assert out_t[0, 0, 0] > 280.0, "warmer below ground"
    np.testing.assert_allclose(out_t[1, 0, 0], 220.0)
    u = np.arange(8.0)[:, None, None]
    out_u = sigma_to_pressure(u, ps, SIGMA, np.array([100000.0, 1000.0]), kind="wind")
    np.testing.assert_allclose(out_u[:, 0, 0], [0.0, 7.0])
    z = np.linspace(500.0, 250000.0, 8)[:, None, None]
    out_z = sigma_to_pressure(z, ps, SIGMA, np.array([100000.0, 1000.0]), kind="geopotential", t_lowest=t[0], t_highest=t[-1])
    assert out_z[0, 0, 0] < 500.0, "geopotential decreases below the lowest level"
    np.testing.assert_allclose(out_z[1, 0, 0], 250000.0 + RD_J_KG_K * 220.0 * np.log(0.025 * 80000.0 / 1000.0), rtol=1e-6)

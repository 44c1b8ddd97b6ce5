"""The stand-in GCM: orientation, and proof that the stored nudging tendency is the one applied.

A T21 truth (default physics) and a T21 model (perturbed physics) run in-process; the model is nudged
toward the truth's winds. Compiling two models costs ~1 min, hence the ``slow`` mark.
"""

import numpy as np
import pytest

from factories import spun_up_t21
from nudgeml.gcm.standin import GCMConfig, GridState, StandinGCM, from_jcm, to_jcm

pytestmark = pytest.mark.slow

T0 = np.datetime64("2000-03-01T00:00", "s")
PERTURBED = {"convection.trcnv": 12.0, "convection.rhbl": 0.85, "surface_flux.cdl": 3.6e-3, "surface_flux.cds": 1.5e-3}
TAU_H = 6.0
N_TRUTH = 16  # 4 days of 6-hourly truth after spin-up


@pytest.fixture(scope="module")
def truth():
    """Spun-up T21 truth: 6-hourly states (time, lev, lat, lon)."""
    g = spun_up_t21(T0, days=10)
    states = []
    for _ in range(N_TRUTH):
        states.append(g.current_state())
        g.run_window()
    times = T0 + np.arange(N_TRUTH) * np.timedelta64(6, "h")
    return times, states


@pytest.fixture(scope="module")
def nudged(truth):
    """The perturbed model nudged toward the projected truth winds for 2 days."""
    times, states = truth
    g = StandinGCM(GCMConfig(21, physics=PERTURBED), T0)
    ua = np.stack([g.project_winds(s.u, s.v)[0] for s in states])
    va = np.stack([g.project_winds(s.u, s.v)[1] for s in states])
    g.set_relaxation(times, ua, va, TAU_H)
    g.start(states[0])
    for _ in range(8):
        g.run_window()
    return g, times, ua, va


def target_at(times, series, t):
    """Linear interpolation of the 6-hourly target at ``t`` (what jcm's BY_DATE_INTERP does)."""
    x = (t - times[0]) / np.timedelta64(1, "s") / 21600.0
    i = int(np.floor(x))
    a = x - i
    return (1 - a) * series[i] + a * series[min(i + 1, len(series) - 1)]


def test_layout_conversions_are_inverse():
    a = np.random.default_rng(0).normal(size=(8, 32, 64))
    np.testing.assert_array_equal(from_jcm(to_jcm(a)), a)
    np.testing.assert_array_equal(from_jcm(to_jcm(a[0])), a[0])
    assert to_jcm(a).shape == (8, 64, 32)
    np.testing.assert_array_equal(to_jcm(a)[0], a[-1].T), "jcm level 0 is the model top"


def test_orientation_of_state_and_grid(truth):
    _, states = truth
    s = states[-1]
    g_sigma = StandinGCM(GCMConfig(21), T0).grid.sigma
    assert np.all(np.diff(g_sigma) < 0), "sigma surface first"
    tropics = slice(12, 20)  # latitudes ascending: the middle rows are tropical
    assert s.t[0, tropics].mean() > s.t[-1, tropics].mean() + 20, "level 0 is the warm surface level"
    assert s.z is not None and np.all(np.diff(s.z.mean(axis=(1, 2))) > 0), "geopotential grows upward"
    assert 9.0e4 < s.ps.mean() < 1.05e5
    assert s.q[0].mean() > 10 * s.q[-1].mean(), "humid near the surface"


def test_recorded_diagnostics_match_jcm_own_labelled_output(truth):
    """jcm's to_xarray labels levels surface first with (lon, lat); our conversion must agree."""
    _, states = truth
    g = StandinGCM(GCMConfig(21), T0)
    g.start(states[0])
    du = np.random.default_rng(1).normal(scale=1e-5, size=g.grid.shape).astype(np.float32)
    g.model.resume(forcing=g._forcing(du, None), save_interval=0.25, total_time=0.25, output_averages=True)
    pred = g.model.resume(forcing=g._forcing(du, None), save_interval=0.25, total_time=0.25, output_averages=True)
    ds = pred.to_xarray()
    labelled = ds["nudgeml.du_extra"].isel(time=0).transpose("level", "lat", "lon").values
    assert ds["level"].values[0] > ds["level"].values[-1], "jcm labels level 0 as the surface in its output"
    np.testing.assert_allclose(labelled, du, rtol=1e-6)


def test_stored_tendency_is_the_window_mean_of_the_per_step_term(nudged):
    """Step by step, the recorded term is (target(t_n) - state(t_n)) / tau; the stored value is the
    window mean of those terms as the dycore applied them (its linear spectral projection)."""
    g, times, ua, va = nudged
    ck = g.checkpoint()
    window = g.run_window()  # 12 steps of 30 min, recorded as the window mean
    end_of_window = g.current_state()
    g.restore(ck)
    per_step_u, per_step_v = [], []
    for _ in range(12):
        t = g.time
        s = g.current_state()
        step = g.run_window(hours=g.dt_seconds / 3600.0)
        expected_u = (target_at(times, ua, t) - s.u) / (TAU_H * 3600.0)
        expected_v = (target_at(times, va, t) - s.v) / (TAU_H * 3600.0)
        assert np.abs(step.du_nudge_raw - expected_u).max() < 1e-5 * np.abs(expected_u).max(), "per-step term = (target(t_n) - state(t_n)) / tau"
        assert np.abs(step.dv_nudge_raw - expected_v).max() < 1e-5 * np.abs(expected_v).max()
        per_step_u.append(expected_u)
        per_step_v.append(expected_v)
    end_of_steps = g.current_state()
    g.restore(ck)
    # one 12-step call and twelve 1-step calls follow the same trajectory up to float32 round-off
    # (the wind states differ by ~1e-3 m/s at the end); the tendency, a difference of such states
    # divided by tau, inherits that as a few 1e-3 relative
    assert np.sqrt(np.mean((end_of_window.u - end_of_steps.u) ** 2)) < 0.01
    mean_u, mean_v = np.mean(per_step_u, axis=0), np.mean(per_step_v, axis=0)
    assert rel_rms(window.du_nudge_raw, mean_u) < 0.01 and rel_rms(window.dv_nudge_raw, mean_v) < 0.01
    applied_u, applied_v = g.applied_tendency(mean_u, mean_v)
    assert rel_rms(window.du_nudge, applied_u) < 0.01 and rel_rms(window.dv_nudge, applied_v) < 0.01
    # and what is stored differs from the gridpoint mean only by what the truncation cannot hold
    assert 0.0 < rel_rms(window.du_nudge, window.du_nudge_raw) < 0.2


def test_stored_temperature_and_humidity_tendencies_are_the_applied_ones(nudged, truth):
    """T and q nudging (LMDZ guide_T, guide_Q) recorded as the winds' is: step by step the term is
    (target(t_n) - state(t_n)) / tau, the stored window value is the projected mean of those terms,
    and one step adds exactly dt x the stored term to the state the dynamics start from."""
    import jax.numpy as jnp
    from jcm.physics_interface import PhysicsTendency

    g, times, _, _ = nudged
    _, states = truth
    tau_t_h, tau_q_h = 3.0, 12.0  # their own time scales, not the winds'
    ta = np.stack([g.project_scalar(s.t) for s in states])
    qa = np.stack([np.clip(g.project_scalar(s.q), 0.0, None) for s in states])
    ck = g.checkpoint()
    g.set_thermo_relaxation(times, t_target=ta, tau_t_hours=tau_t_h, q_target=qa, tau_q_hours=tau_q_h)
    try:
        assert g.thermo_relaxed
        window = g.run_window()
        g.restore(ck)
        per_step_t, per_step_q = [], []
        for n in range(12):
            t = g.time
            s = g.current_state()
            expected_t = (target_at(times, ta, t) - s.t) / (tau_t_h * 3600.0)
            # the physics receives humidity clipped at zero (the spectral state rings slightly
            # negative in dry air): the term relaxes what the physics sees
            expected_q = (target_at(times, qa, t) - np.maximum(s.q, 0.0)) / (tau_q_h * 3600.0)
            if n == 0:  # the state the dynamics start from = state + dt x the stored (applied) term
                zero = jnp.zeros(to_jcm(s.t).shape)
                tend = PhysicsTendency(u_wind=zero, v_wind=zero, temperature=jnp.asarray(to_jcm(expected_t)), specific_humidity=jnp.asarray(to_jcm(expected_q)), tracers={})
                dyn = g.model.dycore
                before = dyn.to_physics_state(g.model.dycore_state)
                after = dyn.after_physics_state(g.model.dycore_state, tend)
            step = g.run_window(hours=g.dt_seconds / 3600.0)
            assert np.abs(step.dt_nudge_raw - expected_t).max() < 1e-4 * np.abs(expected_t).max(), "per-step term = (T_target(t_n) - T(t_n)) / tau_T"
            assert np.abs(step.dq_nudge_raw - expected_q).max() < 1e-4 * np.abs(expected_q).max()
            if n == 0:
                added_t = from_jcm(after.temperature) - from_jcm(before.temperature)
                added_q = from_jcm(after.specific_humidity) - from_jcm(before.specific_humidity)
                assert rel_rms(added_t, g.dt_seconds * step.dt_nudge) < 1e-3
                assert rel_rms(added_q, g.dt_seconds * step.dq_nudge) < 1e-3
            per_step_t.append(expected_t)
            per_step_q.append(expected_q)
        applied_t, applied_q = g.applied_thermo_tendency(np.mean(per_step_t, axis=0), np.mean(per_step_q, axis=0))
        assert rel_rms(window.dt_nudge, applied_t) < 0.01 and rel_rms(window.dq_nudge, applied_q) < 0.01
        assert np.abs(window.dt_nudge).max() > 0 and np.abs(window.du_nudge).max() > 0, "winds and T nudged together"
    finally:
        g.set_thermo_relaxation(None)
        g.restore(ck)
    assert not g.thermo_relaxed


def rel_rms(a, b):
    return float(np.sqrt(np.mean((a - b) ** 2)) / np.sqrt(np.mean(b**2)))


def test_one_step_nudged_minus_free_is_dt_times_the_stored_term(nudged):
    """From the same state, one step nudged minus one step free = dt x the stored term.

    Before the step's dynamics the model adds exactly dt x the stored term (checked on the real state
    to 0.1 %). The dynamics of that same 30-min step then act on the increment: the Coriolis force
    turns it by f dt (up to 10 degrees) and the pressure gradient starts the adjustment. So nudged - free
    after the full step keeps the term's magnitude (measured 0.97-0.99) and matches it component by
    component once the inertial turn is applied (measured residual 2-8 %); without the turn the
    components differ by 15-20 %, mostly in the other component — physics, not a recording error.
    """
    import jax.numpy as jnp
    from jcm.physics_interface import PhysicsTendency

    g, times, ua, va = nudged
    ck = g.checkpoint()
    s = g.current_state()
    raw_u = (target_at(times, ua, g.time) - s.u) / (TAU_H * 3600.0)
    raw_v = (target_at(times, va, g.time) - s.v) / (TAU_H * 3600.0)
    zero = jnp.zeros(to_jcm(s.t).shape)
    tend = PhysicsTendency(u_wind=jnp.asarray(to_jcm(raw_u)), v_wind=jnp.asarray(to_jcm(raw_v)), temperature=zero, specific_humidity=zero, tracers={})
    dyn = g.model.dycore
    before = dyn.to_physics_state(g.model.dycore_state)
    after = dyn.after_physics_state(g.model.dycore_state, tend)
    step = g.run_window(hours=g.dt_seconds / 3600.0)
    nudged_state = g.current_state()
    added_u = from_jcm(after.u_wind) - from_jcm(before.u_wind)
    added_v = from_jcm(after.v_wind) - from_jcm(before.v_wind)
    assert rel_rms(added_u, g.dt_seconds * step.du_nudge) < 1e-3
    assert rel_rms(added_v, g.dt_seconds * step.dv_nudge) < 1e-3
    g.restore(ck)
    saved = g._targets, g._inv_tau
    g.set_relaxation(None, None, None, None)
    g.run_window(hours=g.dt_seconds / 3600.0)
    free_state = g.current_state()
    g._targets, g._inv_tau = saved
    g.restore(ck)
    dt = g.dt_seconds
    du, dv = nudged_state.u - free_state.u, nudged_state.v - free_state.v
    eu, ev = dt * step.du_nudge, dt * step.dv_nudge
    norm_ratio = float(np.sqrt(np.sum(du**2 + dv**2) / np.sum(eu**2 + ev**2)))
    f = 2 * 7.2921e-5 * np.sin(np.deg2rad(g.grid.lat_deg))[None, :, None]
    turn = -f * dt
    ru, rv = eu * np.cos(turn) - ev * np.sin(turn), eu * np.sin(turn) + ev * np.cos(turn)
    err_u, err_v = rel_rms(du, ru), rel_rms(dv, rv)
    print(f"one step nudged - free vs dt x stored term: |.| ratio {norm_ratio:.4f}; after the inertial turn rel. rms error u {err_u:.4f}, v {err_v:.4f}")
    assert abs(norm_ratio - 1.0) < 0.05
    assert err_u < 0.12 and err_v < 0.12


def test_external_tendency_is_recorded_and_free_run_has_no_relaxation(truth):
    _, states = truth
    g = StandinGCM(GCMConfig(21, physics=PERTURBED), T0)
    g.start(states[0])
    lat = np.deg2rad(g.grid.lat_deg)[None, :, None]
    du = (2e-5 * np.cos(lat) ** 2 * np.ones(g.grid.shape)).astype(np.float32)
    w = g.run_window(du, None)
    applied_u, _ = g.applied_tendency(du, np.zeros_like(du))
    np.testing.assert_allclose(w.du_extra, applied_u, atol=1e-4 * np.abs(applied_u).max())
    assert rel_rms(w.du_extra, du) < 0.02, "a smooth zonal tendency is applied almost whole"
    assert np.abs(w.du_nudge).max() == 0.0 and np.abs(w.dv_extra).max() < 1e-10
    with pytest.raises(ValueError, match="external tendency has shape"):
        g.run_window(du[:, :-1], None)


def test_external_temperature_and_humidity_tendency_stored_is_applied_step_by_step(truth):
    """A correction of T and q (K s-1, kg kg-1 s-1, constant over the window) goes through the path the
    T/q nudging uses: step by step the model adds dt x the stored term to the state the dynamics start
    from, and the stored window value is the projection of the constant given."""
    import jax.numpy as jnp
    from jcm.physics_interface import PhysicsTendency

    _, states = truth
    g = StandinGCM(GCMConfig(21, physics=PERTURBED), T0)
    g.start(states[2])
    lat = np.deg2rad(g.grid.lat_deg)[None, :, None]
    lon = np.deg2rad(g.grid.lon_deg)[None, None, :]
    shape = g.grid.shape
    # large, so that one step's increment (up to 2.3 K, 3.6e-5 kg/kg) stands far above the float32
    # round-off of T ~ 280 K (3e-5 K): at 1e-5 K s-1 that round-off alone was 1.2e-3 of the increment
    dt_kps = (1e-3 * np.cos(lat) ** 2 * (1 + 0.3 * np.sin(2 * lon)) * np.ones(shape)).astype(np.float32)
    dq_per_s = (2e-8 * np.cos(lat) ** 4 * np.ones(shape)).astype(np.float32)
    applied_t, applied_q = g.applied_thermo_tendency(dt_kps, dq_per_s)
    for n in range(3):
        zero = jnp.zeros(to_jcm(dt_kps).shape)
        tend = PhysicsTendency(u_wind=zero, v_wind=zero, temperature=jnp.asarray(to_jcm(dt_kps)), specific_humidity=jnp.asarray(to_jcm(dq_per_s)), tracers={})
        dyn = g.model.dycore
        before = dyn.to_physics_state(g.model.dycore_state)
        after = dyn.after_physics_state(g.model.dycore_state, tend)
        free = g.checkpoint()
        step = g.run_window(dt_extra=dt_kps, dq_extra=dq_per_s, hours=g.dt_seconds / 3600.0)
        added_t = from_jcm(after.temperature) - from_jcm(before.temperature)
        added_q = from_jcm(after.specific_humidity) - from_jcm(before.specific_humidity)
        assert rel_rms(added_t, g.dt_seconds * step.dt_extra) < 1e-3, f"step {n}: T added = dt x stored"
        assert rel_rms(added_q, g.dt_seconds * step.dq_extra) < 1e-3, f"step {n}: q added = dt x stored"
        assert rel_rms(step.dt_extra, applied_t) < 1e-4 and rel_rms(step.dq_extra, applied_q) < 1e-4
        assert np.abs(step.du_extra).max() < 1e-10 and np.abs(step.dt_nudge).max() == 0.0, "only what was given"
        # and the state moved: the same step without the correction ends colder where dt > 0
        with_corr = g.current_state()
        g.restore(free)
        g.run_window(hours=g.dt_seconds / 3600.0)
        without = g.current_state()
        assert 0.5 < float(np.mean(with_corr.t - without.t)) / float(g.dt_seconds * np.mean(dt_kps)) < 1.5
        g.restore(free)
        g.run_window(dt_extra=dt_kps, dq_extra=dq_per_s, hours=g.dt_seconds / 3600.0)
    window = g.run_window(dt_extra=dt_kps, dq_extra=dq_per_s)  # the whole window: the same constant, stored once
    assert rel_rms(window.dt_extra, applied_t) < 1e-4 and rel_rms(window.dq_extra, applied_q) < 1e-4
    assert rel_rms(window.dt_extra, dt_kps) < 0.02, "a smooth tendency is applied almost whole"
    without = g.run_window()
    assert np.abs(without.dt_extra).max() == 0.0 and np.abs(without.dq_extra).max() == 0.0
    with pytest.raises(ValueError, match="external tendency has shape"):
        g.run_window(dt_extra=dt_kps[:, :-1])


def test_bad_initial_state_is_rejected(truth):
    _, states = truth
    g = StandinGCM(GCMConfig(21), T0)
    s = states[0]
    with pytest.raises(ValueError, match="'u' has shape"):
        g.start(GridState(u=s.u[:, ::2], v=s.v, t=s.t, q=s.q, ps=s.ps))


def test_large_scale_filter_keeps_planetary_scales_and_removes_the_rest(nudged):
    g = nudged[0]
    rng = np.random.default_rng(3)
    u, v = (rng.normal(size=g.grid.shape).astype(np.float32) for _ in range(2))
    # at the model truncation the filter is the model's own projection
    fu, fv = g.large_scale_winds(u, v, g.grid.truncation)
    pu, pv = g.project_winds(u, v)
    np.testing.assert_allclose(fu, pu, atol=1e-5)
    np.testing.assert_allclose(fv, pv, atol=1e-5)
    # solid-body rotation (vorticity at total wavenumber 1) passes a T1 filter unchanged
    coslat = np.cos(np.deg2rad(g.grid.lat_deg))[None, :, None]
    solid = np.broadcast_to(10.0 * coslat, g.grid.shape).astype(np.float32)
    su, sv = g.large_scale_winds(solid, np.zeros_like(solid), 1)
    np.testing.assert_allclose(su, solid, atol=1e-3)
    assert np.abs(sv).max() < 1e-3
    # white noise keeps only a small share of its variance at T5, and the filter is idempotent
    lu, lv = g.large_scale_winds(u, v, 5)
    assert np.var(lu) < 0.15 * np.var(pu)
    lu2, lv2 = g.large_scale_winds(lu, lv, 5)
    np.testing.assert_allclose(lu2, lu, atol=1e-5)
    np.testing.assert_allclose(lv2, lv, atol=1e-5)
    with pytest.raises(ValueError, match="outside"):
        g.large_scale_winds(u, v, g.grid.truncation + 1)


def test_grid_orography_is_the_one_the_dynamics_integrate_over(truth):
    """The lowest level's geopotential, which the core derives from its own orography, sits one
    hypsometric layer above the grid's surface geopotential: the regridded truth's ps is moved onto it.
    With jcm's ``phis0`` (another truncation) this was off by up to ~1200 m over the Himalaya at T21."""
    from nudgeml.gcm.standin import GRAVITY_M_S2, RD_J_KG_K

    _, states = truth
    s = states[-1]
    g = StandinGCM(GCMConfig(21), T0)  # the same grid and orography as the truth's
    layer = RD_J_KG_K * s.t[0] * np.log(1.0 / g.grid.sigma[0])  # surface -> lowest level
    off_m = (s.z[0] - g.grid.surface_geopotential - layer) / GRAVITY_M_S2
    assert np.abs(off_m).max() < 10.0, f"grid orography off the dynamics' by up to {np.abs(off_m).max():.0f} m"
    phis0 = from_jcm(np.asarray(g.model.dycore.terrain.phis0, np.float64))
    assert np.abs((s.z[0] - phis0 - layer) / GRAVITY_M_S2).max() > 500.0, "the physics' phis0 is another orography"

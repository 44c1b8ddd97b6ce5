"""Ensemble Kalman inversion of the gains on an ML correction's state-dependent part (nudgeml.calibrate)."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
import xarray as xr

from nudgeml.calibrate import (
    Calibration,
    CalibrationSettings,
    _BandGains,
    band_index,
    calibrate,
    check_calibration_config,
    eki_update,
    level_gains,
    run_settings,
    snapshot_stats,
    start_dates,
    window_variance,
)
from nudgeml.checks import load_config
from nudgeml.coupled import read_gains
from nudgeml.errors import ConfigError, InputError

T0 = np.datetime64("2000-03-01T00:00", "s")


def linear_problem(seed=0, m=40, k=4):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(m, k))
    truth = np.array([0.8, -0.3, 0.0, 1.2])[:k]
    return a, truth


def test_eki_recovers_the_parameters_of_a_linear_forward_model():
    """G(theta) = A theta with small noise: the ensemble mean goes to theta*; with the update's sign
    flipped (a classic slip) it moves away."""
    a, truth = linear_problem()
    gamma = np.full(a.shape[0], 1e-4)
    y = a @ truth
    for sign, ok in ((1, True), (-1, False)):
        rng = np.random.default_rng(1)
        theta = 0.5 + 0.5 * rng.normal(size=(12, a.shape[1]))
        for _ in range(6):
            new = eki_update(theta, theta @ a.T, y, gamma, rng)
            theta = theta + sign * (new - theta)
        err = np.abs(theta.mean(axis=0) - truth).max()
        assert (err < 0.02) == ok, (sign, err)


def test_a_failed_member_is_left_out_and_redrawn():
    a, truth = linear_problem()
    rng = np.random.default_rng(2)
    theta = rng.normal(size=(8, 4))
    g = theta @ a.T
    g[3] = np.nan
    new = eki_update(theta, g, a @ truth, np.full(a.shape[0], 1e-4), rng)
    assert np.isfinite(new).all() and not np.allclose(new[3], theta[3])
    g[1:] = np.nan
    with pytest.raises(InputError, match="1 of 8 members ran"):
        eki_update(theta, g, a @ truth, np.full(a.shape[0], 1e-4), rng)


class FakeForward:
    """A linear forward model in Calibration's interface."""

    def __init__(self, a, truth, noise=0.01):
        self.a, self.noise = a, noise
        self.y = a @ truth
        self.window_var = np.full(self.y.size, 0.5 * noise**2)
        self.s = CalibrationSettings()
        self.starts, self.runs = [T0], 0

    def __call__(self, gains):
        self.runs += 1
        g = self.a @ gains
        if np.abs(gains).max() > 5:  # "blew up"
            return np.full(self.y.size, np.nan)
        return g


def test_calibrate_loop_records_the_history_and_recovers_the_gains():
    a, truth = linear_problem()
    s = CalibrationSettings(members=10, iterations=6, seed=0)
    fwd = FakeForward(a, truth)
    rec = calibrate(fwd, 4, s)
    np.testing.assert_allclose(rec["gains"], truth, atol=0.05)
    assert len(rec["history"]) == s.iterations + 1
    assert fwd.runs == rec["runs"] == 1 + s.members * (s.iterations + 1)
    first, last = (np.median(h["misfit"]) for h in (rec["history"][0], rec["history"][-1]))
    assert last < 0.01 * first
    assert rec["baseline_misfit"] > 100 * last  # gains 0 (the mean baseline) are far from theta*


def test_noise_is_the_weathers_not_the_seasons():
    """Window means of white noise (variance 1 per analysis) about a steady trend: the noise is the
    weather's 1/n, with the trend (the seasonal cycle's stand-in) cancelled; the variance about one
    mean over the block, as before, held the trend and was ~10^4 times larger."""
    rng = np.random.default_rng(3)
    nt, n = 4000, 4
    u = 0.05 * np.arange(nt) + rng.normal(size=nt)
    times = T0 + np.timedelta64(6, "h") * np.arange(nt)
    field = np.broadcast_to(u[:, None, None, None], (nt, 1, 1, 2))
    forcing = xr.Dataset({k: (("time", "lev", "lat", "lon"), field * (k == "u")) for k in ("u", "v", "t")}, coords={"time": times.astype("datetime64[ns]")})
    var = window_variance(forcing, [(times[0], times[-1])], n, ("mean",))
    assert var[0] == pytest.approx(1 / n, rel=0.1)
    means = np.convolve(u, np.ones(n) / n, mode="valid")
    assert means.var() > 1e3 * var[0]
    with pytest.raises(ConfigError, match="no two adjacent windows of 4 analyses"):
        window_variance(forcing, [(times[0], times[6])], n, ("mean",))


def test_statistics_of_a_known_field():
    lon = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    u = np.broadcast_to(5.0 + 2.0 * np.cos(lon), (3, 2, 4, 16))  # (time, lev, lat, lon)
    fields = {"u": u, "v": np.zeros_like(u), "t": np.full_like(u, 250.0)}
    z = snapshot_stats(fields, ("mean", "eddy"))
    n = 2 * 4
    assert z.shape == (3, 5 * n)
    np.testing.assert_allclose(z[:, :n], 5.0)  # zonal-mean u
    np.testing.assert_allclose(z[:, 2 * n:3 * n], 250.0)  # zonal-mean T
    np.testing.assert_allclose(z[:, 3 * n:4 * n], 2.0)  # zonal variance of u: amplitude^2 / 2
    np.testing.assert_allclose(z[:, 4 * n:], 0.0)
    with pytest.raises(ConfigError, match="calibration.statistics"):
        CalibrationSettings.from_config({"statistics": ["eddy"]})


def test_bands_and_level_gains():
    p = np.array([96300, 83500, 69500, 51000, 33500, 19000, 7800, 2500], float)  # the stand-in's 8 levels
    bands = band_index(p, (700, 200))
    assert bands.tolist() == [0, 0, 1, 1, 1, 2, 2, 2]
    g = level_gains(np.array([0.1, 0.2, 0.3, 1.0, 2.0, 3.0]), bands)
    assert g.shape == (2, 8) and g[0].tolist() == [0.1, 0.1, 0.2, 0.2, 0.2, 0.3, 0.3, 0.3] and g[1, -1] == 3.0


def test_start_dates_keep_every_run_inside_its_training_block():
    blocks = [(np.datetime64("2000-01-31T00:00"), np.datetime64("2000-02-21T18:00"))]
    starts = start_dates(blocks, 10, 3)
    assert starts[0] == np.datetime64("2000-01-31T00:00") and starts[-1] + np.timedelta64(10, "D") <= blocks[0][1]
    assert len(set(starts)) == 3
    with pytest.raises(ConfigError, match="calibration.days"):
        start_dates(blocks, 25, 1)


def test_settings_and_the_config_check_name_the_key():
    with pytest.raises(ConfigError, match="level_bands_hpa"):
        CalibrationSettings.from_config({"level_bands_hpa": [200, 700]})
    with pytest.raises(ConfigError, match="skip_days"):
        CalibrationSettings.from_config({"days": 2, "skip_days": 2})
    base = load_config("config/config.yaml")
    runs = {"ml-eki": {"correction": "ml", "model": "mlp", "calibrated": True}}
    with pytest.raises(ConfigError, match="free_runs.runs.ml-eki.calibrated.*mean_residual"):
        check_calibration_config(base | {"free_runs": base["free_runs"] | {"runs": runs}})
    ok = load_config("config/config.yaml", {"free_runs": {"runs": {"ml-eki": runs["ml-eki"] | {"mean_residual": True}}}})
    assert ok["calibration"]["members"] == 8
    own = load_config("config/config.yaml", {"free_runs": {"runs": {"ml-eki": runs["ml-eki"] | {"mean_residual": True, "calibrated": {"statistics": ["mean", "eddy"]}}}}})
    settings = run_settings(own, own["free_runs"]["runs"]["ml-eki"])
    assert settings["statistics"] == ["mean", "eddy"] and settings["members"] == 8
    with pytest.raises(ConfigError, match="calibrated"):
        load_config("config/config.yaml", {"free_runs": {"runs": {"ml-eki": runs["ml-eki"] | {"mean_residual": True, "calibrated": {"members": 1}}}}})
    with pytest.raises(ConfigError, match="calibrated"):
        load_config("config/config.yaml", {"free_runs": {"runs": {"ml-eki": {"correction": "mean", "calibrated": True}}}})


def test_read_gains_checks_the_run(tmp_path):
    p = tmp_path / "gains.json"
    p.write_text(json.dumps({"variables": ["du", "dv"], "level_gains": np.zeros((2, 8)).tolist()}))
    assert read_gains(p, ["du", "dv"], 8).shape == (2, 8)
    with pytest.raises(InputError, match="gains.json: gains for \\['du', 'dv'\\] on 8 levels; the run corrects"):
        read_gains(p, ["du", "dv", "dt"], 8)
    p.write_text("{}")
    with pytest.raises(InputError, match="gains.json: not a calibration record"):
        read_gains(p, ["du", "dv"], 8)


class LowestU(torch.nn.Module):
    """du = k * u at the lowest level (feature 0), dv = 0: a state-dependent model (amplification)."""

    def __init__(self, n_targets: int, nlev: int, k: float) -> None:
        super().__init__()
        self.nlev, self.k, self.nt = nlev, k, n_targets

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(x.shape[0], self.nt, dtype=x.dtype)
        out[:, : self.nlev] = self.k * x[:, :1]
        return out


@pytest.mark.slow
def test_calibration_runs_the_stand_in_from_the_analysis(tmp_path):
    """The forward model on the stand-in: the statistics are the zonal means the runs produce, a rerun
    with the same gains repeats them exactly (each run restarts from the analysis), a perturbed member
    and other gains change them; the loop counts its runs and writes finite gains."""
    from factories import forced_truth
    from nudgeml.coupled import make_corrector
    from nudgeml.export import export_model
    from nudgeml.extract import ColumnSpec
    from nudgeml.gcm.standin import GCMConfig, GridState, StandinGCM
    from nudgeml.manifest import Block, Grid, Guard, Levels, Manifest

    grid, _ = forced_truth(tmp_path, T0, 2e-5, windows=12)
    spec = ColumnSpec(geo=("sin_lat", "cos_lat", "land_fraction"))
    nlev = grid.sigma.size
    fb, tb = spec.feature_blocks(nlev), spec.target_blocks(nlev)
    nf, nt = sum(b["levels"] for b in fb), sum(b["levels"] for b in tb)
    manifest = Manifest(name="lin", kind="mlp", features=tuple(Block(b["name"], b["units"], b["levels"]) for b in fb),
                        targets=tuple(Block(b["name"], b["units"], b["levels"]) for b in tb), levels=Levels(tuple(grid.presnivs_pa)),
                        guard=Guard(0.1, (-1e9,) * nf, (1e9,) * nf, (-1.0,) * nt, (1.0,) * nt), grid=Grid("t21", nlon=grid.lon_deg.size, nlat=grid.lat_deg.size))
    export_model(LowestU(nt, nlev, 2e-6), manifest, tmp_path / "lin", torch.zeros(4, nf), aoti=False)
    xr.Dataset({
        "du_mean": (("lev", "lat", "lon"), np.zeros(grid.shape, np.float32)), "dv_mean": (("lev", "lat", "lon"), np.zeros(grid.shape, np.float32)),
        "du_monthly": (("month", "lev", "lat", "lon"), np.zeros((12, *grid.shape), np.float32)), "dv_monthly": (("month", "lev", "lat", "lon"), np.zeros((12, *grid.shape), np.float32)),
    }).to_netcdf(tmp_path / "mean.nc")
    ml = make_corrector({"correction": "ml", "model": "lin"}, columns=spec, grid=grid, mean_file=tmp_path / "mean.nc", model_dir=tmp_path / "lin")
    forcing = xr.open_dataset(tmp_path / "forcing.nc")
    training = [(np.datetime64(t, "s"), GridState(**{k: forcing[k].sel(time=t).values for k in ("u", "v", "t", "q", "ps")})) for t in forcing["time"].values[:4]]
    ml.add_mean_residual((np.zeros(grid.shape, np.float32),) * 2, iter(training))
    s = CalibrationSettings(members=3, iterations=1, starts=2, days=1, skip_days=0.5, level_bands_hpa=(500.0,))
    starts = start_dates([(T0, T0 + np.timedelta64(3, "D"))], s.days, s.starts)
    gcm = StandinGCM(GCMConfig(21), starts[0])
    bands = band_index(grid.presnivs_pa, s.level_bands_hpa)
    fwd = Calibration(gcm, _BandGains(ml, bands), forcing, starts, s, blocks=[(T0, T0 + np.timedelta64(3, "D"))], max_wind_ms=250)
    assert fwd.y.size == fwd.window_var.size == 2 * 3 * nlev * grid.lat_deg.size
    # the noise: the analysis' own 12-h means (2 analyses) vary across the 3 days' windows
    u0 = forcing["u"].mean(dim="lon").values[:, 0, 10]
    pairs = (u0[:-1] + u0[1:]) / 2
    assert fwd.window_var[10] == pytest.approx((pairs[2:] - pairs[:-2]).var(ddof=1) / 2, rel=1e-4)
    zero = np.zeros(4)
    g0 = fwd(zero)
    np.testing.assert_array_equal(fwd(zero), g0)  # each run restarts from the analysis
    g1 = fwd(np.array([5.0, 0.0, 0.0, 0.0]))  # low-level amplification, e-folding ~1 day
    assert np.abs(g1 - g0).max() > 0.05
    assert np.isnan(fwd(np.array([5000.0, 0.0, 0.0, 0.0]))).all()  # e-folding ~30 s: blows up, marked NaN
    # the first start's u at its first statistics time is within the model's 1-day drift of the analysis
    assert np.abs(g0[: nlev * grid.lat_deg.size] - fwd.y[: nlev * grid.lat_deg.size]).max() < 10.0
    eddy = Calibration(gcm, _BandGains(ml, bands), forcing, starts, replace(s, statistics=("mean", "eddy")), blocks=[(T0, T0 + np.timedelta64(3, "D"))], max_wind_ms=250)
    assert eddy.y.size == 2 * 5 * nlev * grid.lat_deg.size and np.array_equal(eddy.y[: fwd.y.size // 2], fwd.y[: fwd.y.size // 2])
    fwd.runs = 0
    rec = calibrate(fwd, 4, s)
    assert np.isfinite(rec["gains"]).all() and rec["runs"] == s.starts * (1 + s.members * (s.iterations + 1))


def test_calibrate_overlay_is_valid():
    import yaml

    cfg = load_config("config/config.yaml", yaml.safe_load(open("config/calibrate.yaml")))
    runs = cfg["free_runs"]["runs"]
    assert runs["ml-mlp-eki"]["calibrated"] and runs["ml-mlp-eki"]["mean_residual"]
    assert runs["control"]["members"] >= 5 and all(runs[k]["members"] >= 3 for k in ("mean", "ml-mlp-mr", "ml-mlp-eki"))

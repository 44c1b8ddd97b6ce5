"""The mean tendency tuned on free runs of the training period (nudgeml.feedback)."""

import copy
import json

import numpy as np
import pytest
import xarray as xr

from nudgeml.checks import load_config
from nudgeml.errors import ConfigError, InputError
from nudgeml.feedback import (
    FeedbackSettings,
    TrainingPeriodRun,
    check_feedback_config,
    feedback_step,
    misfit,
    response_times,
    split_parts,
    tune,
    tuned_mean,
)

DAY = 86400.0
SHAPE = (3, 8, 16)
LAT = np.linspace(-78.75, 78.75, 8)


def linear_response(tau_zonal_days, tau_eddy_days):
    """The time-mean state's change under a tendency F: tau_z [F] + tau_e F* per level (s)."""
    tz, te = np.asarray(tau_zonal_days) * DAY, np.asarray(tau_eddy_days) * DAY

    def response(f):
        p = split_parts(f)
        return tz[:, None, None] * p["zonal"] + te[:, None, None] * p["eddy"]

    return response


def linear_model(seed, response):
    """A forward model x(F) = x_c + response(F) per wind, against a fixed analysis."""
    rng = np.random.default_rng(seed)
    x_c = {k: rng.normal(size=SHAPE) for k in "uv"}
    ana = {k: rng.normal(size=SHAPE) for k in "uv"}
    f0 = {k: rng.normal(size=SHAPE) * 1e-5 for k in ("du", "dv")}

    def forward(f):
        return {k: (x_c[k] + response(f["d" + k]), ana[k]) for k in "uv"}

    return forward, f0


def test_response_times_recover_a_linear_response():
    response = linear_response([2.0, 1.0, 3.0], [0.5, 0.4, 0.3])
    f = np.random.default_rng(1).normal(size=SHAPE)
    tau = response_times(response(f), f, LAT)
    np.testing.assert_allclose(tau["zonal"] / DAY, [2.0, 1.0, 3.0], rtol=1e-12)
    np.testing.assert_allclose(tau["eddy"] / DAY, [0.5, 0.4, 0.3], rtol=1e-12)
    zonal_only = np.broadcast_to(f.mean(axis=-1, keepdims=True), SHAPE)
    assert np.isnan(response_times(response(zonal_only), zonal_only, LAT)["eddy"]).all()  # no eddy part: no slope


def test_one_step_removes_the_bias_of_a_linear_model():
    """On a model whose response the secant measures exactly, gain 1 takes each part's bias away."""
    forward, f0 = linear_model(0, linear_response([2.0, 1.0, 3.0], [0.5, 0.4, 0.3]))
    s = FeedbackSettings(parts=("zonal", "eddy"), gain=1.0, min_abs_lat_deg=0.0)
    tuned, rec = tune(forward, f0, LAT, s)
    assert rec["misfit_final"] < 1e-20 < rec["misfit_mean"]
    assert [(h["part"], h["gain"], h["accepted"]) for h in rec["history"]] == [("zonal", 1.0, True), ("eddy", 1.0, True)]
    assert rec["runs"] == 4
    x = forward(tuned)
    for k in "uv":
        np.testing.assert_allclose(x[k][0], x[k][1], atol=1e-9)
    assert rec["response_days"]["du"]["zonal"] == pytest.approx([2.0, 1.0, 3.0])


def test_line_search_halves_an_overshooting_step():
    """The model answers departures from F0 four times as strongly as F0 itself: gain 1 makes the bias
    -3x, 0.5 -1x (not lower: rejected), 0.25 takes it away."""
    base = linear_response([2.0, 2.0, 2.0], [1.0, 1.0, 1.0])
    forward0, f0 = linear_model(2, base)

    def forward(f):
        if all(not np.any(v) for v in f.values()):
            return forward0(f)
        return forward0({k: f0[k] + 4.0 * (f[k] - f0[k]) for k in f})

    tuned, rec = tune(forward, f0, LAT, FeedbackSettings(parts=("zonal",), gain=1.0, max_halvings=3, min_abs_lat_deg=0.0))
    assert [(h["gain"], h["accepted"]) for h in rec["history"]] == [(1.0, False), (0.5, False), (0.25, True)]
    zonal_bias = {k: split_parts(forward(tuned)[k][0] - forward(tuned)[k][1])["zonal"] for k in "uv"}
    assert max(np.abs(z).max() for z in zonal_bias.values()) < 1e-9
    assert rec["runs"] == 5


def test_a_blown_up_trial_is_rejected_and_no_accepted_step_keeps_the_mean():
    forward0, f0 = linear_model(3, linear_response([1.0] * 3, [1.0] * 3))
    calls = []

    def forward(f):
        calls.append(f)
        return forward0(f) if len(calls) <= 2 else None  # every trial blows up

    tuned, rec = tune(forward, f0, LAT, FeedbackSettings(gain=1.0, max_halvings=1, min_abs_lat_deg=0.0))
    assert [h["misfit"] for h in rec["history"]] == [None, None] and not any(h["accepted"] for h in rec["history"])
    assert rec["misfit_final"] == rec["misfit_mean"]
    for k in f0:
        np.testing.assert_array_equal(tuned[k], f0[k])


def test_a_blown_up_baseline_run_is_an_error():
    forward0, f0 = linear_model(4, linear_response([1.0] * 3, [1.0] * 3))
    with pytest.raises(InputError, match="blew up"):
        tune(lambda f: None if not any(np.any(v) for v in f.values()) else forward0(f), f0, LAT, FeedbackSettings())


def test_step_leaves_the_equator_and_the_slow_or_opposed_levels_alone():
    bias = np.ones(SHAPE)
    tau = {"zonal": np.array([2.0, -1.0, 0.1]) * DAY, "eddy": np.array([0.5, 0.5, 0.5]) * DAY}
    s = FeedbackSettings(min_response_days=0.2, min_abs_lat_deg=20.0)
    step = feedback_step(bias, tau, "zonal", LAT, s)
    tropics = np.abs(LAT) < 20.0
    assert tropics.any() and not step[:, tropics].any()
    np.testing.assert_allclose(step[0][~tropics], -1.0 / (2.0 * DAY))  # the zonal mean of a uniform bias is itself
    assert not step[1:].any()  # negative (opposed) and too short a response: no step
    eddy = feedback_step(bias, tau, "eddy", LAT, s)
    np.testing.assert_allclose(eddy, 0.0, atol=1e-30)  # a uniform bias has no eddy part


def test_misfit_is_the_area_weighted_mse_of_u_and_v():
    run = {"u": (np.full(SHAPE, 2.0), np.zeros(SHAPE)), "v": (np.ones(SHAPE), np.zeros(SHAPE))}
    assert misfit(run, LAT) == pytest.approx(5.0)
    run["v"] = (np.full(SHAPE, np.nan), np.zeros(SHAPE))
    assert misfit(run, LAT) == float("inf") and misfit(None, LAT) == float("inf")


def test_tuned_mean_adds_the_step_to_the_annual_and_every_month():
    rng = np.random.default_rng(5)
    dims3, dims4 = ("lev", "lat", "lon"), ("month", "lev", "lat", "lon")
    ds = xr.Dataset({
        **{f"{k}_mean": (dims3, rng.normal(size=SHAPE).astype(np.float32)) for k in ("du", "dv", "dt")},
        **{f"{k}_monthly": (dims4, rng.normal(size=(12, *SHAPE)).astype(np.float32)) for k in ("du", "dv", "dt")},
    })
    step = {k: rng.normal(size=SHAPE) for k in ("du", "dv")}
    tuned = {k: ds[f"{k}_mean"].values + step[k] for k in step}
    out = tuned_mean(ds, tuned, FeedbackSettings(), {"misfit_mean": 2.0, "misfit_final": 1.0})
    for k in ("du", "dv"):
        np.testing.assert_allclose(out[f"{k}_mean"].values, tuned[k], atol=1e-6)  # float32, as the file
        np.testing.assert_allclose(out[f"{k}_monthly"].values - ds[f"{k}_monthly"].values, np.broadcast_to(step[k], (12, *SHAPE)), atol=1e-5)
    xr.testing.assert_equal(out["dt_mean"], ds["dt_mean"])  # T is not the feedback's
    assert json.loads(out.attrs["feedback"])["misfit_final"] == 1.0


def test_config_check_names_the_key():
    cfg = load_config("config/config.yaml")
    ok = copy.deepcopy(cfg)
    ok["free_runs"]["runs"]["mean-fb"] = {"correction": "mean", "feedback": True}
    ok["free_runs"]["runs"]["ml-fb"] = {"correction": "ml", "model": "mlp", "mean_residual": True, "feedback": True}
    check_feedback_config(ok)
    bad = copy.deepcopy(cfg)
    bad["free_runs"]["runs"]["ml-fb"] = {"correction": "ml", "model": "mlp", "feedback": True}
    with pytest.raises(ConfigError, match=r"free_runs\.runs\.ml-fb\.feedback"):
        check_feedback_config(bad)
    bad = copy.deepcopy(cfg)
    bad["free_runs"]["runs"]["mean-fb"] = {"correction": "mean", "feedback": True, "iterations": 1}
    with pytest.raises(ConfigError, match=r"free_runs\.runs\.mean-fb\.feedback"):
        check_feedback_config(bad)
    bad = copy.deepcopy(ok)
    bad["feedback"] = {"parts": ["meridional"]}
    with pytest.raises(ConfigError, match=r"feedback\.parts"):
        check_feedback_config(bad)
    tq = copy.deepcopy(ok)
    tq["nudging"]["t"] = {"tau_hours": 6.0}
    with pytest.raises(ConfigError, match=r"free_runs\.runs\.mean-fb\.feedback.*nudging\.t"):
        check_feedback_config(tq)
    method = copy.deepcopy(ok)
    method["feedback"]["run"] = "ml-fb"  # the method about the mean, feedback: true
    check_feedback_config(method)
    for run, why in (("ml-nope", "not in free_runs.runs"), ("mean-fb", "ml run about the mean"), ("ml-mlp", "ml run about the mean")):
        bad = copy.deepcopy(method)
        bad["feedback"]["run"] = run
        with pytest.raises(ConfigError, match=rf"feedback\.run.*{run}.*{why}"):
            check_feedback_config(bad)
    bad = copy.deepcopy(method)
    bad["free_runs"]["runs"]["ml-fb"]["feedback"] = False  # the tuned mean would not be read by it
    with pytest.raises(ConfigError, match=r"feedback\.run.*ml-fb.*feedback: true"):
        check_feedback_config(bad)
    bad = copy.deepcopy(method)
    bad["free_runs"]["runs"]["ml-fb"]["calibrated"] = True
    with pytest.raises(ConfigError, match=r"feedback\.run.*calibrated"):
        check_feedback_config(bad)
    from nudgeml.gcm.registry import check_backend

    lmdze = copy.deepcopy(cfg)
    lmdze["backend"] = "lmdze"
    lmdze["free_runs"]["runs"] = {"mean-fb": {"correction": "mean", "feedback": True}}
    with pytest.raises(ConfigError, match=r"free_runs\.runs\.mean-fb\.feedback"):  # the runs are the stand-in's
        check_backend(lmdze)


def test_training_period_run_on_the_stand_in(tmp_path):
    """The forward model: one run from the analysis at the first block's start through the last block's
    end, its time means over the scored times (inside the blocks, after skip_days) and the analysis' at
    the same times; a rerun repeats it exactly, a tendency changes it."""
    from factories import forced_truth
    from nudgeml.gcm.standin import GCMConfig, StandinGCM

    t0 = np.datetime64("2000-03-01T00:00", "s")
    grid, a = forced_truth(tmp_path, t0, 2e-5, windows=12)
    forcing = xr.open_dataset(tmp_path / "forcing.nc")
    blocks = [(t0, t0 + np.timedelta64(24, "h")), (t0 + np.timedelta64(48, "h"), t0 + np.timedelta64(72, "h"))]
    gcm = StandinGCM(GCMConfig(21), t0)
    run = TrainingPeriodRun(gcm, forcing, blocks, FeedbackSettings(skip_days=0.5), max_wind_ms=250.0)
    # window ends 06 .. 72 h; scored: >= 12 h and inside a block: 12, 18, 24, 48, 54, 60, 66, 72 h
    assert run.n_windows == 12 and int(run.scored.sum()) == 8
    hours = [6 * (i + 1) for i in np.flatnonzero(run.scored)]
    assert hours == [12, 18, 24, 48, 54, 60, 66, 72]
    times = (t0 + np.array(hours) * np.timedelta64(1, "h")).astype("datetime64[ns]")
    np.testing.assert_allclose(run.analysis["u"], forcing["u"].sel(time=times).mean("time").values, rtol=1e-6)
    zero = {k: np.zeros(grid.shape) for k in ("du", "dv")}
    x0 = run(zero)
    np.testing.assert_array_equal(run(zero)["u"][0], x0["u"][0])  # each run restarts from the analysis
    forced = run({"du": np.asarray(a, float), "dv": np.zeros(grid.shape)})  # the truth's own forcing
    assert np.abs(forced["u"][0] - x0["u"][0]).max() > 0.1
    assert misfit(forced, grid.lat_deg) < misfit(x0, grid.lat_deg)  # the forcing that made the truth brings the run nearer
    assert run.runs == 3
    with pytest.raises(ConfigError, match=r"feedback\.skip_days"):
        TrainingPeriodRun(gcm, forcing, blocks, FeedbackSettings(skip_days=5.0), max_wind_ms=250.0)


def test_run_feedback_writes_the_tuned_mean_or_names_the_missing_analysis(tmp_path):
    """The job on the stand-in: a mean file and feedback.json, the run count the record gives (2 + the
    trials); blocks beyond the analysis: one error naming the file, nothing written."""
    from factories import forced_truth
    from nudgeml.feedback import run_feedback

    t0 = np.datetime64("2000-03-01T00:00", "s")
    grid, a = forced_truth(tmp_path, t0, 2e-5, windows=8)
    zeros = np.zeros((12, *grid.shape), np.float32)
    xr.Dataset({
        "du_mean": (("lev", "lat", "lon"), (0.5 * a).astype(np.float32)), "dv_mean": (("lev", "lat", "lon"), np.zeros(grid.shape, np.float32)),
        "du_monthly": (("month", "lev", "lat", "lon"), zeros + 0.5 * a), "dv_monthly": (("month", "lev", "lat", "lon"), zeros),
    }).to_netcdf(tmp_path / "mean.nc")
    cfg = {"model": {"truncation": 21, "layers": grid.sigma.size, "physics": {}}, "free_runs": {"max_wind_ms": 250.0},
           "feedback": {"gain": 1.0, "max_halvings": 1, "skip_days": 0.5, "min_abs_lat_deg": 0.0}}
    out_nc, out_json = tmp_path / "fb" / "mean_tendency.nc", tmp_path / "fb" / "feedback.json"
    blocks = [(t0, t0 + np.timedelta64(48, "h"))]
    rec = run_feedback(cfg, tmp_path / "grid.nc", [tmp_path / "forcing.nc"], mean_file=tmp_path / "mean.nc", training=blocks, out_nc=out_nc, out_json=out_json)
    assert json.loads(out_json.read_text())["runs"] == rec["runs"] == 2 + len(rec["history"])
    tuned = xr.open_dataset(out_nc)
    assert set(tuned.data_vars) == {"du_mean", "dv_mean", "du_monthly", "dv_monthly"}
    assert rec["misfit_final"] <= rec["misfit_mean"]
    with pytest.raises(InputError, match="forcing.nc"):
        run_feedback(cfg, tmp_path / "grid.nc", [tmp_path / "forcing.nc"], mean_file=tmp_path / "mean.nc",
                     training=[(t0, t0 + np.timedelta64(72, "h"))], out_nc=tmp_path / "bad.nc", out_json=tmp_path / "bad.json")
    assert not (tmp_path / "bad.nc").exists() and not (tmp_path / "bad.json").exists()


def test_training_period_runs_apply_the_method_about_each_trial_mean(tmp_path):
    """feedback.run: the forward model rebases the method's corrector on each trial mean and applies its
    output every window. A model adding 0 about the mean reproduces the constant mean's runs bit for bit,
    trial after trial; a state-dependent one changes them."""
    from factories import FirstFeature, export_constant, forced_truth
    from nudgeml.coupled import MLCorrector
    from nudgeml.extract import ColumnSpec
    from nudgeml.gcm.standin import GCMConfig, StandinGCM

    t0 = np.datetime64("2000-03-01T00:00", "s")
    grid, a = forced_truth(tmp_path, t0, 2e-5, windows=8)
    forcing = xr.open_dataset(tmp_path / "forcing.nc")
    blocks = [(t0, t0 + np.timedelta64(48, "h"))]
    s = FeedbackSettings(skip_days=0.25)
    columns = ColumnSpec(geo=("sin_lat", "cos_lat", "land_fraction"))
    zeros = (np.zeros(grid.shape, np.float32),) * 2
    gcm = StandinGCM(GCMConfig(21), t0)
    plain = TrainingPeriodRun(gcm, forcing, blocks, s, max_wind_ms=250.0)
    zero_model = MLCorrector(export_constant(tmp_path, grid, "zero", 0.0), "torchscript", columns, grid, zeros, add_mean=True)
    method = TrainingPeriodRun(gcm, forcing, blocks, s, max_wind_ms=250.0, corrector=zero_model)
    trials = [{"du": np.asarray(a, float), "dv": np.zeros(grid.shape)}, {"du": np.zeros(grid.shape), "dv": 0.5 * np.asarray(a, float)}]
    for f in trials:
        want, got = plain(f), method(f)
        for k in ("u", "v"):
            np.testing.assert_array_equal(got[k][0], want[k][0])
    assert zero_model.calls == len(trials) * method.n_windows  # one call a window, each run
    waves = MLCorrector(export_constant(tmp_path, grid, "first", 0.0, module=FirstFeature(2 * grid.sigma.size, 1e-7)),
                        "torchscript", columns, grid, zeros, add_mean=True)
    moved = TrainingPeriodRun(gcm, forcing, blocks, s, max_wind_ms=250.0, corrector=waves)(trials[0])
    assert np.abs(moved["u"][0] - plain(trials[0])["u"][0]).max() > 1e-3

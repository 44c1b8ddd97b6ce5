"""Forecast-error targets (nudgeml.forecast): a known constant forcing comes back.

The set-up of tests/test_iterate.py: the truth is the T21 stand-in with an extra, constant zonal-wind
forcing ``a = A cos(lat)``; the model is the same stand-in without it, started from the same state. The
model's only error is the missing ``a``, so a 6-h forecast from a state on the analysis falls short of
the analysis by the response to ``a`` over 6 h: at this planetary scale (far above the Rossby radius)
the zonal wind keeps it (the target's regression on ``a``: 1.08 when written), and the Coriolis force
turns a part into the meridional wind. The spun-up states (1-h relaxation) must sit closer to the
analysis in u than the nudged run's own (6 h): that is the tracking error the target is meant to shed.
"""

import copy
import json

import numpy as np
import pytest

from factories import forced_truth
from nudgeml.checks import load_config, validate
from nudgeml.conventions import read_guide, read_histhf
from nudgeml.errors import ConfigError, InputError
from nudgeml.forecast import ForecastSettings, run_forecast_targets, usable_times
from nudgeml.nudged import run_nudged

T0 = np.datetime64("2000-03-01T00:00", "s")
WINDOWS = 8  # two days of 6-h windows
A_MS2 = 1.0e-4


def config(jax_dir):
    cfg = load_config("config/config.yaml", {
        "jax_cache_dir": str(jax_dir),
        "period": {"start": "2000-03-01T00:00", "end": "2000-03-03T00:00"},
        "dataset": {"split": {"dates": {"train": ["2000-03-01T00:00", "2000-03-01T18:00"], "val": ["2000-03-02T00:00", "2000-03-02T00:00"],
                                        "test": ["2000-03-02T06:00", "2000-03-02T06:00"]}, "gap_hours": 6}},
        "free_runs": {"start": "2000-03-02T18:00", "end": "2000-03-03T00:00"},
        "models": {"mlp": {"target": "forecast"}},
    })
    cfg["model"]["physics"] = {}  # the truth's physics: the missing forcing is the only error
    return cfg


@pytest.fixture(scope="module")
def targets(tmp_path_factory):
    root = tmp_path_factory.mktemp("forecast")
    grid, a = forced_truth(root, T0, A_MS2, WINDOWS)
    cfg = config(root / "jax")
    run_nudged(cfg, root / "grid.nc", [root / "forcing.nc"], root / "nudged_histhf.nc", root / "nudged_guide.nc")
    n = run_forecast_targets(cfg, root / "grid.nc", [root / "forcing.nc"], root / "nudged_histhf.nc",
                             root / "histhf.nc", root / "guide.nc", root / "diagnostics.json")
    return root, grid, a, n


def test_a_constant_forcing_comes_back_as_the_forecast_error(targets):
    root, grid, a, n = targets
    # the split's times with 6 h of nudged run before them: 06, 12, 18 (train), 00 (val), 06 (test)
    assert n == 5
    g = read_guide(root / "guide.nc")
    h = read_histhf(root / "histhf.nc")
    expect = np.array(["2000-03-01T06", "2000-03-01T12", "2000-03-01T18", "2000-03-02T00", "2000-03-02T06"], "datetime64[ns]")
    np.testing.assert_array_equal(g["time"].values, expect)
    np.testing.assert_array_equal(h["time"].values, expect)  # one input state per target, same times
    w = np.cos(np.deg2rad(grid.lat_deg))[None, None, :, None]
    du = g["du"].values.mean(axis=0)[None]  # (lev, lat, lon) time mean
    gain = float(np.sum(du * a * w) / np.sum(a * a * w))  # regression of the target on the forcing
    assert 0.85 < gain < 1.2, gain  # 1.08 when written
    resid = float(np.sqrt(np.sum((du - gain * a) ** 2 * w) / np.sum(a * a * w)))
    assert resid < 0.35, resid  # 0.27
    # the Coriolis force turns part of the 6-h response into v (0.43 |a| when written): bounded, not zero
    dv = g["dv"].values.mean(axis=0)[None]
    assert float(np.sqrt(np.sum(dv**2 * w) / np.sum(a * a * w))) < 0.6


def test_spun_up_states_sit_closer_to_the_analysis_than_the_nudged_ones(targets):
    root, _, _, _ = targets
    d = json.loads((root / "diagnostics.json").read_text())
    assert d["n_samples"] == 5 and d["settings"]["spinup_tau_hours"] == 1.0
    # u, which the missing forcing drives: half the nudged run's distance (0.63-1.48 against 1.22-2.07 m/s
    # when written); v, which it drives only through the Coriolis force, as close (0.72-1.78 against
    # 0.67-1.77: the short relaxation pulls u onto the analysis faster than v adjusts)
    for row in d["levels"]["u"]:
        assert row["spun_up"]["rms_to_analysis"] < 0.8 * row["nudged"]["rms_to_analysis"], row
    for row in d["levels"]["v"]:
        assert row["spun_up"]["rms_to_analysis"] < 1.15 * row["nudged"]["rms_to_analysis"], row
    assert all(row["target_rms"] > 0 for var in ("u", "v") for row in d["levels"][var])


def test_sample_times_need_their_spinup_and_lead_inside_the_run():
    s = ForecastSettings(every_hours=6, spinup_hours=12, spinup_tau_hours=1, lead_hours=6)
    t = T0 + np.arange(6) * np.timedelta64(6, "h")
    got = usable_times(t, T0, T0 + np.timedelta64(30, "h"), s)
    np.testing.assert_array_equal(got, t[2:5])  # 12 h after the first state, 6 h before the last analysis


def test_no_usable_sample_is_named(targets, tmp_path):
    root, _, _, _ = targets
    cfg = config(root / "jax")
    cfg["forecast"]["spinup_hours"] = 36  # only 2000-03-02T12 onwards: no split time left
    with pytest.raises(InputError, match="no sample time with 36 h of nudged run before it"):
        run_forecast_targets(cfg, root / "grid.nc", [root / "forcing.nc"], root / "nudged_histhf.nc",
                             tmp_path / "h.nc", tmp_path / "g.nc", tmp_path / "d.json")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c["forecast"].update(lead_hours=12), r"'forecast.lead_hours' \(12 h\) exceeds 'dataset.split.gap_hours' \(6 h\)"),
        (lambda c: c["forecast"].update(lead_hours=5), r"'forecast.lead_hours'.*multiple of 6"),
        (lambda c: c["columns"].update(targets=["du", "dv", "dt"]) or c["nudging"].update(t={"tau_hours": 12}), r"'columns.targets' is \['du', 'dv', 'dt'\]: the forecast target holds du, dv only"),
        (lambda c: c["forecast"].update(spinup_hours=24, lead_hours=6) or c["period"].update(end="2000-03-02T06:00")
         or c["free_runs"].update(start="2000-03-02T00:00", end="2000-03-02T06:00")
         or c["dataset"]["split"].update(dates={"train": ["2000-03-01T00:00", "2000-03-01T06:00"], "val": ["2000-03-01T12:00", "2000-03-01T12:00"],
                                                "test": ["2000-03-01T18:00", "2000-03-01T18:00"]}),
         r"'forecast.spinup_hours' \+ 'forecast.lead_hours' \(30 h\) leave no sample time"),
    ],
)
def test_bad_forecast_settings_are_refused_naming_the_key(tmp_path, edit, message):
    cfg = copy.deepcopy(config(tmp_path))
    validate(cfg)
    edit(cfg)
    with pytest.raises(ConfigError, match=message):
        validate(cfg)


def test_forecast_overlay_trains_the_forecast_mlp_beside_the_seeds():
    import yaml

    from nudgeml.targets import target_of

    with open("config/forecast.yaml") as fh:
        cfg = load_config("config/config.yaml", yaml.safe_load(fh))
    assert cfg["train"]["models"] == ["mlp", "mlp-fc"]
    assert target_of(cfg["models"]["mlp-fc"]).name == "forecast" and target_of(cfg["models"]["mlp"]).name == "nudging"
    assert {"ml-mlp", "ml-mlp-fc"} <= set(cfg["free_runs"]["runs"]) and "mean-monthly" not in cfg["free_runs"]["runs"]

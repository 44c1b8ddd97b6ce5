"""The report's numbers against independent computations on small synthetic fields."""

import numpy as np
import pytest
import xarray as xr
from scipy import stats

from nudgeml.metrics import area_weights
from nudgeml.report import (
    PRECIP_BINS,
    _conclusion_html,
    daily_precip_from_history,
    field_metrics,
    noise_floor,
    perkins_skill_score,
    precip_pdf,
    precip_summary,
    summary_markdown,
    truth_reference,
    wasserstein,
    weighted_quantiles,
)

LAT = np.array([-60.0, -20.0, 20.0, 60.0])
NLON = 6


def test_known_bias_gives_known_rmse_and_bias():
    truth = {"u": np.zeros((3, 4, NLON)), "ps": np.full((4, NLON), 1e5)}
    run = {"u": np.full((3, 4, NLON), 2.0), "ps": np.full((4, NLON), 1e5 + 300.0)}
    run["u"][:, 0, :] = -2.0  # a bias of -2 at 60S: the RMSE stays 2, the mean bias drops
    m = field_metrics(run, truth, LAT)
    assert m["u"]["rmse"] == pytest.approx(2.0)
    w = np.cos(np.deg2rad(LAT))
    assert m["u"]["bias"] == pytest.approx(2.0 * (w.sum() - 2 * w[0]) / w.sum())
    assert m["ps"]["rmse"] == pytest.approx(3.0) and m["ps"]["bias"] == pytest.approx(3.0)  # reported in hPa


def test_noise_floor_is_the_mean_pairwise_rmse():
    members = [{"t": np.full((2, 4, NLON), c)} for c in (0.0, 1.0, 3.0)]
    # pairs: |0-1| = 1, |0-3| = 3, |1-3| = 2 -> mean 2
    assert noise_floor(members, LAT)["t"] == pytest.approx(2.0)
    assert noise_floor(members[:1], LAT) == {}


def test_weighted_quantiles_match_repeated_samples():
    rng = np.random.default_rng(0)
    v = rng.gamma(0.5, 8.0, size=4000)
    w = rng.integers(1, 4, size=4000).astype(float)
    expanded = np.repeat(v, w.astype(int))
    got = weighted_quantiles(v, w, [50, 90, 99])
    np.testing.assert_allclose(got, np.percentile(expanded, [50, 90, 99]), rtol=0.02)


def test_identical_distributions_score_one_and_distance_zero():
    rng = np.random.default_rng(1)
    d = rng.gamma(0.6, 6.0, size=(30, 4, NLON))
    w = np.broadcast_to(area_weights(LAT, NLON), d.shape)
    s = precip_summary(d, w, truth_reference(d, w))
    assert s["perkins"] == pytest.approx(1.0)
    assert s["wasserstein"] == pytest.approx(0.0, abs=1e-12)


def test_wet_day_intensity_and_the_share_above_the_truths_p99():
    """Worked by hand: cell-days of 0, 0.5, 2 and 6 mm with weights 1, 1, 1, 3: the wet days (>= 1 mm)
    average (2 + 3 x 6) / 4 = 5 mm; above 4 mm lies weight 3 of 6. The truth has 1 % above its own p99,
    a run twice as wet more, and a higher intensity."""
    from nudgeml.report import share_above, wet_day_intensity

    d, w = np.array([0.0, 0.5, 2.0, 6.0]), np.array([1.0, 1.0, 1.0, 3.0])
    assert wet_day_intensity(d, w) == pytest.approx(5.0)
    assert wet_day_intensity(np.zeros(3), np.ones(3)) is None
    assert share_above(d, w, 4.0) == pytest.approx(0.5)
    rng = np.random.default_rng(3)
    t = rng.gamma(0.6, 6.0, size=(60, 4, NLON))
    tw = np.broadcast_to(area_weights(LAT, NLON), t.shape)
    truth = precip_summary(t, tw, truth_reference(t, tw))
    assert truth["above_truth_p99"] == pytest.approx(0.01, abs=0.002)
    wetter = precip_summary(2.0 * t, tw, truth_reference(t, tw))
    assert wetter["wet_day_intensity"] > truth["wet_day_intensity"] and wetter["above_truth_p99"] > 0.05
    # the same days count as wet when the threshold doubles with the rain: exactly twice the intensity
    assert wet_day_intensity(2.0 * t, tw, threshold=2.0) == pytest.approx(2.0 * truth["wet_day_intensity"], rel=1e-12)


def test_shifted_distribution_distance_and_percentiles():
    rng = np.random.default_rng(2)
    a = rng.gamma(0.6, 6.0, size=20000)
    b = a + 2.0  # every day 2 mm wetter
    ones = np.ones_like(a)
    assert wasserstein(b, ones, a, ones) == pytest.approx(2.0, rel=1e-9)
    assert wasserstein(b, ones, a, ones) == pytest.approx(stats.wasserstein_distance(a, b))
    pa, dry_a = precip_pdf(a, ones)
    pb, dry_b = precip_pdf(b, ones)
    pss = perkins_skill_score(np.append(pa, dry_a), np.append(pb, dry_b))
    assert 0.0 < pss < 1.0
    np.testing.assert_allclose(weighted_quantiles(b, ones, [50, 99]) - weighted_quantiles(a, ones, [50, 99]), 2.0, rtol=1e-6)
    assert pa.sum() + dry_a == pytest.approx(1.0)
    assert np.all(PRECIP_BINS[1:] > PRECIP_BINS[:-1])


def test_daily_totals_from_six_hourly_window_means():
    times = np.arange(np.datetime64("2000-01-01T00"), np.datetime64("2000-01-03T06"), np.timedelta64(6, "h"))
    rate = xr.DataArray(np.full((times.size, 2, 3), 1.0 / 86400.0), dims=("time", "lat", "lon"), coords={"time": times})  # 1 mm/day
    daily = daily_precip_from_history(rate)
    assert daily.sizes["time"] == 2, "the partial third day is left out"
    np.testing.assert_allclose(daily.values, 1.0)


def test_summary_markdown_of_a_metrics_json_from_before_the_rule():
    var = lambda r: {"rmse": r, "bias": 0.0}  # noqa: E731
    metrics = {
        "noise_floor": {"u": 0.5, "v": 0.3, "t": 0.2, "q": 0.01, "precip": 0.1},
        "window": {"start": "2001-01-16", "end": "2002-01-01", "n_analyses": 1400},
        "precipitation": {"ml-x": {"perkins": 0.9, "wasserstein": 0.25}},
        "table": [
            {"run": "mean", "correction": "mean (annual)", "status": "ok", "max_abs_u": 120.4, "metrics": {v: var(2.0) for v in ("u", "v", "t", "q", "precip")}},
            {"run": "ml-x", "correction": "ml: x", "status": "ok", "max_abs_u": 131.0, "fallback_share": 0.012,
             "metrics": {v: var(1.0) for v in ("u", "v", "t", "q", "precip")}, "zonal_u_bias": {"rmse": 1.5, "max_abs": 7.0},
             "vs_mean": {"u": {"delta_rmse": -1.0, "significant": True}, "v": {"delta_rmse": -0.2, "significant": False}}},
            {"run": "ml-y", "correction": "ml: y", "status": "failed", "metrics": {}},
        ],
    }
    lines = summary_markdown(metrics, {"x": 0.25}).splitlines()
    row = next(ln for ln in lines if ln.startswith("| ml-x "))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2] == "ok, 131 m/s, 1.2 %"
    assert cells[3:5] == ["1.00", "1.00"] and cells[-2:] == ["-1.00", "-0.20 (ns)"]
    assert cells[8] == "1.50 / 7.0"
    failed = next(ln for ln in lines if ln.startswith("| ml-y "))
    assert failed.count("–") == 10
    assert any(ln.startswith("| field-to-field floor |") and "| 0.50 | 0.30 |" in ln for ln in lines)
    assert lines[-1] == "Offline R² (test split): x 0.25."


def _verdict(verdict, delta=0.1, p=0.2, n=(3, 3), reason=""):
    sig = {"better": True, "worse": True, "not significant": False}.get(verdict)
    text = f"{verdict} ({reason})" if reason else f"{verdict} ({delta:+.3g}, ranges apart, p = {p:.3f})"
    return {"verdict": verdict, "significant": sig, "n": list(n), "delta": delta, "p": p, "ranges_overlap": False, "reason": reason, "text": text}


def _metrics(saturated: bool):
    """A metrics.json as evaluate_runs writes it: control and ml-x, two members each."""
    var = lambda r: {"rmse": r, "bias": 0.0}  # noqa: E731
    vs = ("u", "v", "t", "q", "precip")
    ratio = 0.83 if saturated else 0.02
    reason = f"members' spread {ratio:.2f} x the truth's" + ("" if saturated else " (< 0.5)")
    sat = {v: {"member_spread": 0.6 * ratio, "truth_spread": 0.6, "ratio": ratio, "saturated": saturated, "reason": reason} for v in (*vs, "ps")}
    if saturated:
        ml_u = _verdict("better", delta=-0.4, p=0.001)
        ml_v = _verdict("not significant", delta=-0.1, p=0.3)
    else:
        ml_u = ml_v = _verdict("not concluded", reason="spread not saturated")
    ens = {
        "control": {"runs": ["control", "control.m1"], "used": ["control", "control.m1"], "correction": "none",
                    "scores": {v: [2.0, 2.1] for v in vs}, "mean": {v: 2.05 for v in vs}, "range": {v: [2.0, 2.1] for v in vs}},
        "ml-x": {"runs": ["ml-x", "ml-x.m1"], "used": ["ml-x", "ml-x.m1"], "correction": "ml: x",
                 "scores": {v: [1.6, 1.7] for v in vs}, "mean": {v: 1.65 for v in vs}, "range": {v: [1.6, 1.7] for v in vs}},
    }
    change = {v: {"delta_rmse": -0.45, "significant": c["significant"], "verdict": c["verdict"]} for v, c in (("u", ml_u), ("v", ml_v))}
    return {
        "window": {"start": "2000-03-06T00:00:00", "end": "2000-03-21T00:00:00", "n_analyses": 60, "n_days": 15, "skip_days": 2.0},
        "rule": "RULE", "noise_floor": {v: 0.5 for v in vs}, "saturation": sat, "spread_saturated": saturated, "ensembles": ens,
        "verdicts": {"ml-x": {"vs_control": {"u": ml_u, "v": ml_v}}},
        "lower_bound": {"u": {"holds": True, "nudged": 0.5, "best_free_run": "ml-x", "best_free_rmse": 1.6},
                        "t": {"holds": False, "nudged": 3.46, "best_free_run": "control", "best_free_rmse": 0.77}},
        "precipitation": {},
        "table": [{"run": "ml-x", "correction": "ml: x", "status": "ok", "metrics": {v: var(1.6) for v in vs}, "vs_control": change, "vs_mean": change}],
    }


def test_conclusion_block_names_significant_runs_and_where_the_nudged_run_bounds():
    page = _conclusion_html(_metrics(saturated=True))
    assert "class=banner" not in page
    assert "Differ significantly from the control: <b>ml-x</b> (u better)." in page
    assert "2000-03-06T00:00:00 – 2000-03-21T00:00:00" in page
    assert "lower bound (its RMSE is at most every free run's) for: u." in page
    assert "It is not for: t (nudged 3.460 &gt; control 0.770 K)" in page


def test_conclusion_block_has_the_banner_and_no_claim_when_unsaturated():
    page = _conclusion_html(_metrics(saturated=False))
    assert "<div class=banner><b>The control members&#x27; spread has not saturated for u, v, t, q, precip, ps.</b>" in page
    assert "Differ significantly from the control: none. Not concluded: ml-x." in page
    assert "not concluded (spread not saturated)" in page


def test_summary_markdown_carries_the_verdicts():
    text = summary_markdown(_metrics(saturated=True))
    row = next(ln for ln in text.splitlines() if ln.startswith("| ml-x "))
    assert [c.strip() for c in row.strip("|").split("|")][-2:] == ["-0.45", "-0.45 (ns)"]
    assert "- ml-x vs control: u better (-0.4, ranges apart, p = 0.001); v not significant (-0.1, ranges apart, p = 0.300)" in text
    assert "Spread saturated for every variable." in text
    assert "Nudged run a lower bound for: u." in text
    unsat = summary_markdown(_metrics(saturated=False))
    row = next(ln for ln in unsat.splitlines() if ln.startswith("| ml-x "))
    assert [c.strip() for c in row.strip("|").split("|")][-2:] == ["-0.45 (nc)", "-0.45 (nc)"]
    assert "**Spread not saturated (or not assessable) for u (members' spread 0.02 x the truth's (< 0.5))" in unsat
    assert "Precipitation:" not in text  # a metrics.json from before report.precipitation says nothing
    from nudgeml.report import PRECIP_DEFINITIONS

    physics = summary_markdown({**_metrics(saturated=True), "precip_definition": {"name": "physics", "text": PRECIP_DEFINITIONS["physics"]}})
    assert f"Precipitation: {PRECIP_DEFINITIONS['physics']} (report.precipitation: physics)." in physics


def _write_case(root, *, diverged: bool):
    """Truth: 40 days of white-noise 'weather' (u, v, T, q, ps; hourly precipitation). Free runs over days
    20-30: the control (u, v off by 1 m/s, precipitation 1.5 x) and a better method (off by 0.3 m/s), 3 members each, their
    weather from independent stretches (diverged) or one shared stretch (members that never diverged)."""
    rng = np.random.default_rng(7)
    lat, lon, lev = LAT, np.arange(NLON) * 60.0, np.array([85000.0, 50000.0])
    t6 = np.datetime64("2000-01-01T00", "ns") + np.arange(160) * np.timedelta64(6, "h")
    shape = (t6.size, lev.size, lat.size, lon.size)
    base = {"u": 0.0, "v": 0.0, "t": 280.0, "q": 5e-3, "ps": 1e5}
    amp = {"u": 1.0, "v": 1.0, "t": 1.0, "q": 1e-4, "ps": 100.0}
    truth = {v: base[v] + amp[v] * rng.normal(size=shape[:1] + shape[2:] if v == "ps" else shape) for v in base}
    dims = {v: ("time", "lat", "lon") if v == "ps" else ("time", "lev", "lat", "lon") for v in base}
    xr.Dataset({v: (dims[v], truth[v]) for v in base}, coords={"time": t6, "lev": lev, "lat": lat, "lon": lon}).to_netcdf(root / "forcing.nc")
    th = np.datetime64("2000-01-01T01", "ns") + np.arange(40 * 24) * np.timedelta64(1, "h")
    tp = rng.uniform(0.0, 2e-4, size=(th.size, lat.size, lon.size))
    xr.Dataset({"tp": (("valid_time", "lat", "lon"), tp)}, coords={"valid_time": th, "lat": lat, "lon": lon}).to_netcdf(root / "precip.nc")

    free = slice(80, 120)  # days 20-30
    names = {"vitu": "u", "vitv": "v", "temp": "t", "ovap": "q", "psol": "ps"}
    shared = {v: amp[v] * rng.normal(size=truth[v][free].shape) for v in base}
    shared_p = rng.uniform(0.0, 1.2, size=(40, lat.size, lon.size))

    def history(path, bias, weather, precip_mm):
        data = {k: (("time_counter", "lat", "lon") if v == "ps" else ("time_counter", "presnivs", "lat", "lon"), base[v] + bias.get(v, 0.0) + weather[v]) for k, v in names.items()}
        data["precip"] = (("time_counter", "lat", "lon"), precip_mm / 21600.0)  # window-mean rate, kg m-2 s-1
        xr.Dataset(data, coords={"time_counter": t6[free], "presnivs": lev, "lat": lat, "lon": lon}).to_netcdf(path)

    runs = {}
    for run, bias in (("control", 1.0), ("better", 0.3)):
        for k in range(3):
            name = run if k == 0 else f"{run}.m{k}"
            if diverged:
                weather = {v: amp[v] * rng.normal(size=shared[v].shape) for v in base}
                precip = rng.uniform(0.0, 1.2, size=shared_p.shape)
            else:
                weather = {v: shared[v] + 1e-4 * amp[v] * rng.normal(size=shared[v].shape) for v in base}
                precip = shared_p
            # the control rains 1.5 x too much at every rate: its daily-precipitation distribution is off
            history(root / f"{name}.nc", {"u": bias, "v": bias}, weather, precip * (1.5 if run == "control" else 1.0))
            (root / f"{name}.json").write_text('{"status": "ok"}')
            runs[name] = (root / f"{name}.nc", root / f"{name}.json")
    history(root / "nudged.nc", {}, {v: 0.1 * (truth[v][free] - base[v]) for v in base}, shared_p)
    return runs


@pytest.mark.parametrize("diverged", [True, False])
def test_evaluate_runs_judges_ensembles_and_withholds_verdicts_when_unsaturated(tmp_path, diverged):
    from nudgeml.report import evaluate_runs

    runs = _write_case(tmp_path, diverged=diverged)
    # a calibrated member (nudgeml.calibrate): its status holds per-level gains, which its row shows
    (tmp_path / "better.m2.json").write_text('{"status": "ok", "corrected": ["du", "dv"], "level_gains": [[0.1, 0.2, 0.15], [1.0, 2.0, 1.5]]}')
    ev = evaluate_runs(
        [tmp_path / "forcing.nc"], [tmp_path / "precip.nc"], tmp_path / "nudged.nc", runs,
        start=np.datetime64("2000-01-21T00:00"), end=np.datetime64("2000-01-31T00:00"), skip_days=0.0,
        corrections={n: ("none" if n.startswith("control") else "mean (annual)") for n in runs},
        truth_paths=[tmp_path / "forcing.nc"], truth_precip_paths=[tmp_path / "precip.nc"],
    )
    assert ev["window"]["n_analyses"] == 40 and ev["window"]["n_days"] == 10
    assert ev["ensembles"]["better"]["used"] == ["better", "better.m1", "better.m2"]
    u = ev["verdicts"]["better"]["vs_control"]["u"]
    assert u["n"] == [3, 3] and u["delta"] < -0.5
    if diverged:
        assert ev["spread_saturated"] is True, ev["saturation"]
        assert 0.5 < ev["saturation"]["u"]["ratio"] < 2.0
        assert u["verdict"] == "better" and u["p"] < 0.05 and not u["ranges_overlap"]
        assert ev["verdicts"]["better"]["vs_control"]["t"]["verdict"] == "not significant"  # no T bias either way
        # precipitation's distribution, by the same rule: closer to the truth's on both scores
        for k in ("precip_pdf", "precip_w1"):
            d = ev["verdicts"]["better"]["vs_control"][k]
            assert d["verdict"] == "better" and d["n"] == [3, 3], (k, d)
        assert ev["ensembles"]["control"]["range"]["precip_w1"][0] > ev["ensembles"]["better"]["range"]["precip_w1"][1]
    else:
        assert ev["spread_saturated"] is False and ev["saturation"]["u"]["ratio"] < 0.01
        assert u["verdict"] == "not concluded" and u["text"] == "not concluded (spread not saturated)"
        assert ev["verdicts"]["better"]["vs_control"]["precip_w1"]["verdict"] == "not concluded"  # precipitation's saturation
    row = next(r for r in ev["table"] if r["run"] == "better.m1")
    assert row["vs_control"]["u"]["verdict"] == u["verdict"] and "vs_control" not in next(r for r in ev["table"] if r["run"] == "control.m1")
    calibrated = next(r for r in ev["table"] if r["run"] == "better.m2")
    assert calibrated["correction"] == "mean (annual); gains du 0.10..0.20, dv 1.00..2.00" and len(calibrated["level_gains"]) == 2
    assert row["correction"] == "mean (annual)" and "level_gains" not in row
    assert ev["lower_bound"]["u"]["holds"] is True  # the nudged run sits on the truth
    page = _conclusion_html(ev)
    assert ("class=banner" in page) is not diverged


def test_mean_coverage_names_the_window_months_without_training_data(tmp_path):
    """The embedded default's case: training in Feb, free runs in March -> the monthly climatology is
    the annual mean there, and the page says so (it never read samples_per_month before)."""
    import json as _json

    from nudgeml.report import _coverage_html, _share, mean_coverage

    counts = np.zeros(12, np.int32)
    counts[0], counts[1] = 4, 80
    xr.Dataset({"samples_per_month": (("month",), counts)}, coords={"month": np.arange(1, 13)},
               attrs={"training_blocks": _json.dumps([["2000-01-31T00:00:00", "2000-02-21T18:00:00"]])}).to_netcdf(tmp_path / "mean.nc")
    cov = mean_coverage(tmp_path / "mean.nc", np.datetime64("2000-02-28T00:00"), np.datetime64("2000-03-21T00:00"))
    assert cov["window_months"] == [2, 3] and cov["window_months_without_data"] == [3]
    page = _coverage_html(cov)
    assert "covering Jan, Feb" in page and "month(s) Mar had no training data" in page
    full = mean_coverage(tmp_path / "mean.nc", np.datetime64("2000-01-31T00:00"), np.datetime64("2000-02-21T00:00"))
    assert "Every month of the evaluation window had training data" in _coverage_html(full)
    assert _share(16330, 65536) == "16330 of 65536 (25 %)" and _share(None, 10) == "–"


def test_offline_table_has_a_column_per_learned_target():
    """A model on du dv dt dq gets four labelled columns (the header named du, dv only, so dt's R² sat
    under no label); a winds-only model beside it shows dashes for dt, dq."""
    from nudgeml.report import offline_table

    def res(**r2):
        return {"targets": {k: {"r2_overall": v} for k, v in r2.items()}}

    html = offline_table({"mlp": res(du=0.108, dv=0.195, dt=0.149, dq=float("nan")), "xgb": res(du=0.2, dv=0.3)})
    assert "<th>R² du</th><th>R² dv</th><th>R² dt</th><th>R² dq</th>" in html
    assert "<tr><td>mlp</td><td>0.108</td><td>0.195</td><td>0.149</td><td>–</td></tr>" in html
    assert "<tr><td>xgb</td><td>0.200</td><td>0.300</td><td>–</td><td>–</td></tr>" in html


def test_total_precipitation_adds_what_the_humidity_correction_implies(tmp_path):
    """``total``: precip + precip_correction, negative sums floored at zero and counted; ``physics``: the
    physics' own; a dq-corrected run without the record is one error naming the file and the variable."""
    from nudgeml.errors import ConfigError, InputError
    from nudgeml.report import run_precipitation

    t = np.datetime64("2000-01-01T00", "ns") + np.arange(4) * np.timedelta64(6, "h")
    precip = np.full((4, LAT.size, NLON), 2e-5)
    corr = np.full_like(precip, 1e-5)
    corr[:, 0, :] = -3e-5  # 60S: the correction takes more than the physics rains -> floored
    coords = {"time": t, "lat": LAT, "lon": np.arange(NLON) * 60.0}
    h = xr.Dataset({"precip": (("time", "lat", "lon"), precip), "precip_correction": (("time", "lat", "lon"), corr)}, coords=coords, attrs={"corrected": "du dv dt dq"})
    total, size = run_precipitation(h, "run.nc", "total")
    want = np.clip(precip + corr, 0.0, None)
    np.testing.assert_allclose(total.values, want)
    w = area_weights(LAT, NLON)
    assert size["implied_mm_day"] == pytest.approx(float((corr[0] * w).sum()) * 86400.0)
    assert size["floored_mm_day"] == pytest.approx(1e-5 * 86400.0 * float(w[0].sum()))
    assert size["floored_share"] == pytest.approx(float(w[0].sum()))
    physics, none = run_precipitation(h, "run.nc", "physics")
    np.testing.assert_array_equal(physics.values, precip) and none is None
    bare = h.drop_vars("precip_correction")
    with pytest.raises(InputError, match=r"run\.nc: the run corrects humidity \(dq\) but has no 'precip_qcorr'"):
        run_precipitation(bare, "run.nc", "total")
    winds = bare.assign_attrs(corrected="du dv")
    np.testing.assert_array_equal(run_precipitation(winds, "run.nc", "total")[0].values, precip)  # nothing to add
    with pytest.raises(ConfigError, match="report.precipitation' is 'all'"):
        run_precipitation(h, "run.nc", "all")


def test_evaluate_runs_scores_the_total_precipitation_when_asked(tmp_path):
    """The control rains 1.5 x the method; a humidity correction that takes a third of it back (recorded as
    precip_qcorr) makes its total the method's kind of rain: closer to the truth under ``total``, unchanged
    under ``physics``; the page says which."""
    from nudgeml.report import evaluate_runs, render_html

    runs = _write_case(tmp_path, diverged=True)
    for name, (path, _) in runs.items():
        if name.startswith("control"):
            h = xr.load_dataset(path)
            h["precip_qcorr"] = -h["precip"] / 3.0
            h.attrs["corrected"] = "du dv dt dq"
            h.to_netcdf(path)
    kw = dict(start=np.datetime64("2000-01-21T00:00"), end=np.datetime64("2000-01-31T00:00"), skip_days=0.0,
              corrections={n: "x" for n in runs}, truth_paths=[tmp_path / "forcing.nc"], truth_precip_paths=[tmp_path / "precip.nc"])
    args = ([tmp_path / "forcing.nc"], [tmp_path / "precip.nc"], tmp_path / "nudged.nc", runs)
    phys = evaluate_runs(*args, precipitation="physics", **kw)
    total = evaluate_runs(*args, precipitation="total", **kw)
    for name in ("better", "better.m1"):
        assert total["precipitation"][name]["wasserstein"] == phys["precipitation"][name]["wasserstein"]
        assert "humidity_correction" not in total["precipitation"][name]
    c_phys, c_total = phys["precipitation"]["control"], total["precipitation"]["control"]
    assert c_total["mean"] == pytest.approx(c_phys["mean"] * 2.0 / 3.0)
    assert c_total["wasserstein"] < 0.5 * c_phys["wasserstein"]
    assert c_total["humidity_correction"]["implied_mm_day"] == pytest.approx(-c_phys["mean"] / 3.0, rel=0.02)
    assert total["precip_definition"]["name"] == "total" and phys["precip_definition"]["name"] == "physics"
    page = render_html(total, figures={}, statuses={}, offline={}, config={}, versions={}, commit="x")
    assert "report.precipitation: total" in page and "implies" in page


def test_evaluate_runs_scores_the_mapped_precipitation_beside_the_raw(tmp_path):
    """A mapping that divides by 1.5 (the model's quantiles 1.5 x the analysis'): the control, which rains
    1.5 x too hard, comes out as the method's kind of rain, so its mapped distribution is as close to the
    truth as the method's raw one; the raw scores are unchanged and the page says what was mapped."""
    from nudgeml.precip_mapping import QuantileMapping
    from nudgeml.report import evaluate_runs, render_html

    runs = _write_case(tmp_path, diverged=True)
    levels = (np.arange(100) + 0.5) / 100
    base = np.quantile(np.random.default_rng(0).uniform(0.0, 4.8, 100_000), levels)
    mapping = QuantileMapping(levels=levels, model_mm=np.tile(1.5 * base, (LAT.size, 1)), analysis_mm=np.tile(base, (LAT.size, 1)),
                              lat=LAT, first_day="2000-01-01", last_day="2000-01-20", n_days=20)
    kw = dict(start=np.datetime64("2000-01-21T00:00"), end=np.datetime64("2000-01-31T00:00"), skip_days=0.0,
              corrections={n: "x" for n in runs}, truth_paths=[tmp_path / "forcing.nc"], truth_precip_paths=[tmp_path / "precip.nc"])
    args = ([tmp_path / "forcing.nc"], [tmp_path / "precip.nc"], tmp_path / "nudged.nc", runs)
    raw = evaluate_runs(*args, **kw)
    ev = evaluate_runs(*args, mapping=mapping, **kw)
    assert raw["precip_mapping"] is None and "precip_w1_mapped" not in raw["ensembles"]["control"]["scores"]
    assert ev["ensembles"]["control"]["scores"]["precip_w1"] == raw["ensembles"]["control"]["scores"]["precip_w1"]
    ctl, better = ev["precipitation"]["control"], ev["precipitation"]["better"]
    assert ctl["mapped"]["mean"] == pytest.approx(ctl["mean"] / 1.5, rel=0.02)
    assert ctl["mapped"]["wasserstein"] < 0.3 * ctl["wasserstein"]
    assert ctl["mapped"]["wasserstein"] < 2.0 * better["wasserstein"]
    assert raw["verdicts"]["better"]["vs_control"]["precip_w1"]["verdict"] == "better"
    assert ev["verdicts"]["better"]["vs_control"]["precip_w1_mapped"]["verdict"] == "worse"  # the mapping overcorrects the method
    assert {"precip_mapped", "precip_pdf_mapped", "precip_w1_mapped"} <= set(ev["verdicts"]["better"]["vs_control"])
    page = render_html(ev, figures={}, statuses={}, offline={}, config={}, versions={}, commit="x")
    assert "control, mapped" in page and "20 days, 2000-01-01 – 2000-01-20, before the free runs" in page and "precip_w1_mapped" in page

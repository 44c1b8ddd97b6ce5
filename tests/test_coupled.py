"""Free runs with corrections: the guard, blow-up handling, and model/grid mismatches."""

import json

import numpy as np
import pytest
import torch
import xarray as xr

from factories import FirstFeature, export_constant, spun_up_t21
from nudgeml.checks import load_config
from nudgeml.coupled import MLCorrector, describe_correction, make_corrector, run_free, zonal_departure
from nudgeml.errors import ConfigError, InputError
from nudgeml.export import export_model
from nudgeml.extract import ColumnSpec
from nudgeml.gcm.standin import GCMConfig, GridState, StandinGCM
from nudgeml.grid import write_model_grid
from nudgeml.manifest import Block, Grid, Guard, Levels, Manifest, read_manifest, write_manifest
from nudgeml.naming import run_names, split_member

T0 = np.datetime64("2000-03-01T00:00", "s")


def test_member_names():
    assert run_names({"control": {"correction": "none", "members": 3}, "mean": {"correction": "mean"}}) == ["control", "control.m1", "control.m2", "mean"]
    assert split_member("control.m2") == ("control", 2) and split_member("ml-mlp") == ("ml-mlp", 0)


def test_correction_descriptions():
    assert describe_correction({"correction": "none"}) == "none"
    assert describe_correction({"correction": "mean", "climatology": "monthly"}) == "mean (monthly)"
    assert describe_correction({"correction": "mean", "climatology": "annual", "iterations": 2}) == "mean (annual, 2 iterations)"
    assert describe_correction({"correction": "mean", "variables": ["du", "dv"]}) == "mean (annual, du dv)"
    spec = {"correction": "ml", "model": "mlp-replay", "mean_residual": True, "filter_truncation": 6, "scale": 0.5}
    assert describe_correction(spec) == "ml: mlp-replay + mean residual, T6 filter, x0.5"
    assert describe_correction({"correction": "ml", "model": "mlp", "mean_residual": True, "calibrated": True}) == "ml: mlp + mean residual, EKI gains"
    assert describe_correction({"correction": "ml", "model": "mlp", "mean_residual": True, "eddy_only": True}) == "ml: mlp + mean residual, eddies only"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A spun-up T21 state as 'regridded ERA5', the grid file, a mean tendency, a config."""
    root = tmp_path_factory.mktemp("coupled")
    g = spun_up_t21(T0)
    s = g.current_state()
    grid = g.grid
    write_model_grid(grid, root / "grid.nc", root / "grid.txt")
    times = np.array([T0, T0 + np.timedelta64(6, "h")], dtype="datetime64[ns]")
    ds = xr.Dataset(
        {k: (("time", "lev", "lat", "lon"), np.stack([getattr(s, k)] * 2)) for k in ("u", "v", "t", "q")} | {"ps": (("time", "lat", "lon"), np.stack([s.ps] * 2))},
        coords={"time": times, "lev": grid.presnivs_pa, "lat": grid.lat_deg, "lon": grid.lon_deg},
    )
    ds.to_netcdf(root / "forcing.nc")
    mean = xr.Dataset({
        "du_mean": (("lev", "lat", "lon"), np.full(grid.shape, 1e-6, np.float32)),
        "dv_mean": (("lev", "lat", "lon"), np.zeros(grid.shape, np.float32)),
        "du_monthly": (("month", "lev", "lat", "lon"), np.full((12, *grid.shape), 1e-6, np.float32)),
        "dv_monthly": (("month", "lev", "lat", "lon"), np.zeros((12, *grid.shape), np.float32)),
    })
    mean.to_netcdf(root / "mean.nc")
    cfg = load_config("config/config.yaml", {
        "jax_cache_dir": str(root / "jax"),
        "period": {"start": "2000-03-01T00:00", "end": "2000-03-03T00:00"},
        "dataset": {"split": {"dates": {"train": ["2000-03-01T00:00", "2000-03-01T00:00"], "val": ["2000-03-01T06:00", "2000-03-01T06:00"], "test": ["2000-03-01T12:00", "2000-03-01T12:00"]}, "gap_hours": 0}},
        "free_runs": {"start": "2000-03-02T00:00", "end": "2000-03-03T00:00", "runs": {"ml-mlp": {"correction": "ml", "model": "mlp", "backend": "torchscript"}}},
    })
    cfg["free_runs"]["start"] = "2000-03-01T00:00"  # the run starts at the fixture's state
    cfg["free_runs"]["end"] = "2000-03-01T18:00"  # 3 windows
    return root, grid, cfg


def run(setup, model_dir, tag):
    root, grid, cfg = setup
    return run_free(cfg, "ml-mlp", root / "grid.nc", [root / "forcing.nc"], root / f"{tag}.nc", root / f"{tag}.json", mean_file=root / "mean.nc", model_dir=model_dir)


@pytest.mark.slow
def test_nan_model_falls_back_to_the_mean_everywhere(setup):
    root, grid, _ = setup
    status = run(setup, export_constant(root, grid, "nan", float("nan")), "nan")
    assert status["status"] == "ok" and status["calls"] == 3
    assert status["guard"]["fallback_columns"] == status["guard"]["columns"] == 3 * grid.lat_deg.size * grid.lon_deg.size
    assert 0.0 < status["inference_share"] < 1.0
    assert 0.0 < status["inference_share_steady"] < 1.0  # 2 of the 3 calls, over the last 2 windows
    # the steady calls' time split into its parts, which add up to it (features, network, guard, form)
    parts = status["inference_parts_share_steady"]
    assert list(parts) == ["features", "network", "guard", "form"] and min(parts.values()) >= 0.0 and parts["network"] > 0.0
    assert sum(parts.values()) == pytest.approx(status["inference_share_steady"], rel=1e-3, abs=1e-5)


@pytest.mark.slow
def test_blow_up_stops_cleanly_and_keeps_the_history(setup):
    root, grid, _ = setup
    status = run(setup, export_constant(root, grid, "huge", 0.02), "huge")  # 430 m/s per window, inside the +-1.0 guard range
    assert status["status"] == "failed" and ("max_wind_ms" in status["reason"] or "non-finite" in status["reason"])
    assert 1 <= status["windows_done"] < 3
    h = xr.open_dataset(root / "huge.nc")
    assert h.attrs["status"] == "failed" and h.sizes["time_counter"] == status["windows_done"]
    assert json.loads((root / "huge.json").read_text())["status"] == "failed"


def test_model_for_other_levels_is_refused_before_the_run(setup, tmp_path):
    root, grid, _ = setup
    bad = export_constant(tmp_path, grid, "bad", 0.0, levels=list(grid.presnivs_pa + 1000.0))
    with pytest.raises(Exception, match=r"model\.json.*levels"):
        run(setup, bad, "bad")
    assert not (root / "bad.nc").exists()


def test_model_that_does_not_match_its_manifest_is_named_before_the_run(setup, tmp_path):
    """A module taking one feature less than its manifest: named at load, not a bare matmul error later."""
    root, grid, _ = setup
    model = export_constant(tmp_path, grid, "shape", 0.0)
    manifest = json.loads((model / "model.json").read_text())
    nf = sum(b["levels"] for b in manifest["features"])
    nt = sum(b["levels"] for b in manifest["targets"])
    torch.jit.script(torch.nn.Linear(nf - 1, nt)).save(str(model / "model.pt"))
    with pytest.raises(InputError, match=rf"model\.pt: does not take the manifest's {nf} features for {grid.lat_deg.size * grid.lon_deg.size} columns") as err:
        run(setup, model, "shape")
    assert err.value.__cause__ is None
    assert not (root / "shape.nc").exists()


def test_feature_order_mismatch_names_the_first_differing_position():
    from nudgeml.manifest import first_difference

    got = ["u_000", "u_001", "v_000", "v_001"]
    msg = first_difference("features", got, ["u_000", "u_001", "v_001", "v_000"])
    assert msg == "features differ at position 2: 'v_000' in the model, 'v_001' expected (4 vs 4 features)"
    assert "position 4: (end) in the model, 'ps' expected" in first_difference("features", got, [*got, "ps"])


@pytest.mark.slow
def test_large_scale_filter_of_the_model_part(setup):
    """T0 keeps nothing of a model's output (no vorticity or divergence at l = 0); the mean residual
    then restores exactly the mean tendency; a truncation above the model's is refused."""
    root, grid, _ = setup
    model = export_constant(root, grid, "const", 1e-5)
    g = StandinGCM(GCMConfig(21), T0)
    spec = {"correction": "ml", "model": "const", "filter_truncation": 0}
    kw = dict(columns=ColumnSpec(geo=("sin_lat", "cos_lat", "land_fraction")), grid=grid, mean_file=root / "mean.nc", model_dir=model, gcm=g)
    ml = make_corrector(spec, **kw)
    forcing = xr.open_dataset(root / "forcing.nc")
    s = GridState(**{k: forcing[k].values[0] for k in ("u", "v", "t", "q", "ps")})
    du, dv, dt, dq = ml(T0, s)
    assert dt is None and dq is None, "a du, dv model corrects the winds only"
    assert np.abs(du).max() < 1e-9 and np.abs(dv).max() < 1e-9
    full = make_corrector(spec | {"filter_truncation": 21}, **kw)(T0, s).du
    assert np.abs(full).max() > 5e-6  # the unfiltered constant field (projected) is there
    ml.add_mean_residual((np.full(grid.shape, 1e-6, np.float32), np.zeros(grid.shape, np.float32)), iter([(T0, s)]))
    np.testing.assert_allclose(ml(T0, s)[0], 1e-6, rtol=1e-5)
    with pytest.raises(ConfigError, match="filter_truncation 22"):
        make_corrector(spec | {"filter_truncation": 22}, **kw)


def test_fallback_columns_get_the_mean_tendency_with_a_mean_residual(setup):
    """The residual shifts the model part only: a column on the guard's fallback gets the mean itself."""
    root, grid, _ = setup
    model = export_constant(root, grid, "const-fb", 1e-5)
    ml = make_corrector({"correction": "ml", "model": "const-fb"}, columns=ColumnSpec(geo=("sin_lat", "cos_lat", "land_fraction")), grid=grid, mean_file=root / "mean.nc", model_dir=model)
    forcing = xr.open_dataset(root / "forcing.nc")
    fields = {k: forcing[k].values[0].copy() for k in ("u", "v", "t", "q", "ps")}
    ml.add_mean_residual((np.full(grid.shape, 1e-6, np.float32), np.zeros(grid.shape, np.float32)), iter([(T0, GridState(**fields))]))
    fields["u"][0, 3, 5] = np.nan  # one column outside the training range
    du, dv, _, _ = ml(T0, GridState(**fields))
    assert ml.status()["guard"]["fallback_columns"] == 1
    np.testing.assert_allclose(du, 1e-6, rtol=1e-5)  # before: -8e-6 in that column (mean + 1e-6 - 1e-5)
    np.testing.assert_allclose(dv, 0.0, atol=1e-12)


def test_mean_residual_leaves_fallback_columns_out_so_the_training_mean_is_the_nudging_mean(setup):
    """Per column, the correction's mean over the training states is the nudging mean exactly, also
    where the guard fell back in some of them (before: that column's model part entered the mean as the
    fallback value, and the column's training mean was 3.25e-6 instead of 1e-6)."""
    root, grid, _ = setup
    model = export_constant(root, grid, "const-res", 1e-5)
    ml = make_corrector({"correction": "ml", "model": "const-res"}, columns=ColumnSpec(geo=("sin_lat", "cos_lat", "land_fraction")), grid=grid, mean_file=root / "mean.nc", model_dir=model)
    forcing = xr.open_dataset(root / "forcing.nc")
    clean = GridState(**{k: forcing[k].values[0].copy() for k in ("u", "v", "t", "q", "ps")})
    fields = {k: forcing[k].values[0].copy() for k in ("u", "v", "t", "q", "ps")}
    fields["u"][0, 3, 5] = np.nan  # this column falls back in the second training state
    broken = GridState(**fields)
    states = [(T0, clean), (T0 + np.timedelta64(6, "h"), broken)]
    ml.add_mean_residual((np.full(grid.shape, 1e-6, np.float32), np.zeros(grid.shape, np.float32)), iter(states))
    assert ml.residual_counts == {"training_states": 2, "fallback_column_states": 1, "column_states": 2 * grid.lat_deg.size * grid.lon_deg.size}
    mean_du = np.mean([ml(t, s)[0] for t, s in states], axis=0)
    np.testing.assert_allclose(mean_du, 1e-6, rtol=1e-5)
    assert ml.status()["mean_residual"]["fallback_column_states"] == 1


def test_gains_scale_the_model_part_about_the_mean(setup):
    """mean + g (model part - model mean): gains 0 give the mean tendency, 1 the mean-residual output,
    0.5 halfway, per target and level; gains need the mean residual and the run's shape."""
    root, grid, _ = setup
    model = export_constant(root, grid, "first", 0.0, module=FirstFeature(2 * grid.sigma.size, 1e-6))
    ml = make_corrector({"correction": "ml", "model": "first"}, columns=ColumnSpec(geo=("sin_lat", "cos_lat", "land_fraction")), grid=grid, mean_file=root / "mean.nc", model_dir=model)
    forcing = xr.open_dataset(root / "forcing.nc")
    s = GridState(**{k: forcing[k].values[0].copy() for k in ("u", "v", "t", "q", "ps")})
    with pytest.raises(ConfigError, match="mean_residual"):
        ml.set_gains(np.ones((2, grid.sigma.size)))
    shifted = GridState(**{**{k: getattr(s, k) for k in ("v", "t", "q", "ps")}, "u": s.u + 4.0})
    ml.add_mean_residual((np.full(grid.shape, 1e-6, np.float32), np.zeros(grid.shape, np.float32)), iter([(T0, s), (T0, shifted)]))
    one = ml(T0, s)  # s is 2 m/s below the training mean of u: the model part is 2e-6 below its mean
    np.testing.assert_allclose(one.du, 1e-6 - 2e-6, rtol=1e-4)
    np.testing.assert_allclose(one.dv, 0.0 - 2e-6, rtol=1e-4)
    with pytest.raises(ValueError, match="gains have shape"):
        ml.set_gains(np.ones((2, 3)))
    ml.set_gains(np.ones((2, grid.sigma.size)))
    np.testing.assert_allclose(ml(T0, s).du, one.du, rtol=1e-6)
    ml.set_gains(np.zeros((2, grid.sigma.size)))
    np.testing.assert_allclose(ml(T0, s).du, 1e-6, rtol=1e-6)
    np.testing.assert_allclose(ml(T0, s).dv, 0.0, atol=1e-12)
    half = np.zeros((2, grid.sigma.size))
    half[0, :3] = 0.5
    ml.set_gains(half)
    du = ml(T0, s).du
    np.testing.assert_allclose(du[:3], 0.0, atol=1e-11)  # halfway between -1e-6 and the mean 1e-6
    np.testing.assert_allclose(du[3:], 1e-6, rtol=1e-6)


def test_add_mean_adds_the_model_output_to_the_mean_as_it_is(setup):
    """A model trained online as a departure from the mean (nudgeml.online): mean + m(x) per column, the
    mean itself where the guard falls back; refused with the mean residual, which shifts the output."""
    root, grid, _ = setup
    model = export_constant(root, grid, "first-add", 0.0, module=FirstFeature(2 * grid.sigma.size, 1e-6))
    columns = ColumnSpec(geo=("sin_lat", "cos_lat", "land_fraction"))
    with pytest.raises(ConfigError, match="add_mean"):
        make_corrector({"correction": "ml", "model": "first-add", "add_mean": True, "mean_residual": True}, columns=columns, grid=grid,
                       mean_file=root / "mean.nc", model_dir=model)
    ml = make_corrector({"correction": "ml", "model": "first-add", "add_mean": True}, columns=columns, grid=grid, mean_file=root / "mean.nc", model_dir=model)
    forcing = xr.open_dataset(root / "forcing.nc")
    fields = {k: forcing[k].values[0].copy() for k in ("u", "v", "t", "q", "ps")}
    u0 = fields["u"][0]  # the first feature: u at the lowest level, per column
    fields["u"][1, 3, 5] = np.nan  # one column outside the training range (not its first feature)
    du, dv, _, _ = ml(T0, GridState(**fields))
    expect = 1e-6 + 1e-6 * np.broadcast_to(u0, grid.shape)
    keep = np.ones(grid.shape[1:], bool)
    keep[3, 5] = False
    np.testing.assert_allclose(du[:, keep], expect[:, keep], rtol=1e-5, atol=1e-12)
    np.testing.assert_allclose(dv[:, keep], (1e-6 * np.broadcast_to(u0, grid.shape))[:, keep], rtol=1e-5, atol=1e-12)
    np.testing.assert_allclose(du[:, 3, 5], 1e-6, rtol=1e-6)  # the fallback column: the mean
    np.testing.assert_allclose(dv[:, 3, 5], 0.0, atol=1e-12)
    assert ml.status()["add_mean"] and ml.status()["guard"]["fallback_columns"] == 1
    assert describe_correction({"correction": "ml", "model": "mlp-online", "add_mean": True}) == "ml: mean + mlp-online"


def test_zonal_departure_removes_the_zonal_mean_over_the_kept_columns():
    part = np.arange(2 * 3 * 4, dtype=np.float64).reshape(2, 3, 4) ** 2
    kept = np.array([[True] * 4, [True, False, True, False], [False] * 4])
    d = zonal_departure(part, kept)
    np.testing.assert_allclose(d[:, 0], part[:, 0] - part[:, 0].mean(axis=-1, keepdims=True))
    np.testing.assert_allclose(d[:, 1], part[:, 1] - part[:, 1][:, [0, 2]].mean(axis=-1, keepdims=True))  # the mean of the kept two
    np.testing.assert_array_equal(d[:, 2], part[:, 2])  # no kept column: as it is
    np.testing.assert_allclose(zonal_departure(np.broadcast_to(part[..., :1], part.shape), kept)[:, :2], 0.0)  # zonally uniform: nothing left


def test_eddy_only_keeps_the_mean_zonal_mean_and_the_models_departures_from_its_own(setup):
    """eddy_only: the correction's zonal mean (over all columns, fallbacks included) is the mean
    tendency's; per kept column the model's part about the mean is its departure from its zonal mean
    over the kept columns; a fallback column gets the mean. Same rule with the mean residual."""
    root, grid, _ = setup
    model = export_constant(root, grid, "first-eddy", 0.0, module=FirstFeature(2 * grid.sigma.size, 1e-6))
    columns = ColumnSpec(geo=("sin_lat", "cos_lat", "land_fraction"))
    kw = dict(columns=columns, grid=grid, mean_file=root / "mean.nc", model_dir=model)
    forcing = xr.open_dataset(root / "forcing.nc")
    fields = {k: forcing[k].values[0].copy() for k in ("u", "v", "t", "q", "ps")}
    u0 = fields["u"][0].astype(np.float64)  # the first feature: the model part is 1e-6 x u0 in every target and level
    fields["u"][1, 3, 5] = np.nan  # one column outside the training range (not its first feature)
    state = GridState(**fields)
    keep = np.ones(grid.shape[1:], bool)
    keep[3, 5] = False
    ml = make_corrector({"correction": "ml", "model": "first-eddy", "add_mean": True, "eddy_only": True}, **kw)
    du, dv, _, _ = ml(T0, state)
    part = 1e-6 * u0
    eddy = part - np.array([part[j, keep[j]].mean() for j in range(part.shape[0])])[:, None]
    np.testing.assert_allclose(du[:, keep], (1e-6 + np.broadcast_to(eddy, grid.shape))[:, keep], rtol=1e-4, atol=1e-12)
    np.testing.assert_allclose(dv[:, keep], np.broadcast_to(eddy, grid.shape)[:, keep], rtol=1e-4, atol=1e-12)
    np.testing.assert_allclose(du[:, 3, 5], 1e-6, rtol=1e-6)  # the fallback column: the mean
    np.testing.assert_allclose(du.mean(axis=-1), 1e-6, rtol=1e-4)  # the zonal mean is the mean's
    np.testing.assert_allclose(dv.mean(axis=-1), 0.0, atol=1e-11)
    assert np.abs(eddy).max() > 1e-6  # the model's waves are there
    assert ml.status()["eddy_only"]
    # the mean residual: mean + (model part - its training mean), filtered the same way
    mr = make_corrector({"correction": "ml", "model": "first-eddy", "eddy_only": True}, **kw)  # the residual added as make_corrector does
    clean = GridState(**{k: forcing[k].values[0].copy() for k in ("u", "v", "t", "q", "ps")})
    mr.add_mean_residual((np.full(grid.shape, 1e-6, np.float32), np.zeros(grid.shape, np.float32)), iter([(T0, clean)]))
    np.testing.assert_allclose(mr(T0, clean).du, 1e-6, rtol=1e-4)  # at the training state the part is its mean: the mean
    np.testing.assert_allclose(mr(T0, state).du.mean(axis=-1), 1e-6, rtol=1e-4)



def test_top_hpa_keeps_the_model_part_below_it_and_the_mean_above(setup):
    """top_hpa: on the levels whose nominal pressure is below it the correction is the mean tendency;
    on the others the run is unchanged (add_mean and the mean residual alike); a level that the model
    part never reaches, or a run without a mean to fall to, is refused naming the key."""
    root, grid, _ = setup
    model = export_constant(root, grid, "first-top", 0.0, module=FirstFeature(2 * grid.sigma.size, 1e-6))
    columns = ColumnSpec(geo=("sin_lat", "cos_lat", "land_fraction"))
    kw = dict(columns=columns, grid=grid, mean_file=root / "mean.nc", model_dir=model)
    forcing = xr.open_dataset(root / "forcing.nc")
    state = GridState(**{k: forcing[k].values[0].copy() for k in ("u", "v", "t", "q", "ps")})
    p_hpa = np.asarray(grid.presnivs_pa) / 100.0
    top = float(np.sort(p_hpa)[1]) + 1.0  # the two upper levels lie above it
    on = p_hpa >= top
    assert 0 < on.sum() < on.size
    full = make_corrector({"correction": "ml", "model": "first-top", "add_mean": True}, **kw)(T0, state)
    ml = make_corrector({"correction": "ml", "model": "first-top", "add_mean": True, "top_hpa": top}, **kw)
    du, dv, _, _ = ml(T0, state)
    np.testing.assert_array_equal(du[on], full.du[on])
    np.testing.assert_array_equal(dv[on], full.dv[on])
    np.testing.assert_allclose(du[~on], 1e-6, rtol=1e-6)  # the mean above
    np.testing.assert_array_equal(dv[~on], 0.0)
    assert np.abs(full.dv[~on]).max() > 1e-7  # the model had a part there
    assert ml.status()["model_levels_pa"] == np.asarray(grid.presnivs_pa)[on].round(1).tolist()
    # with the mean residual: mean + (part - its training mean) below, the mean above
    mean = (np.full(grid.shape, 1e-6, np.float32), np.zeros(grid.shape, np.float32))  # mean.nc's du, dv means
    mr = type(ml)(model, "torchscript", columns, grid, mean, top_hpa=top)  # the residual added as make_corrector does
    mr.add_mean_residual(mean, iter([(T0, state)]))
    moved = {k: forcing[k].values[0].copy() for k in ("u", "v", "t", "q", "ps")}
    moved["u"] += 3.0  # away from the training state: the model part leaves its mean
    out = mr(T0, GridState(**moved))
    np.testing.assert_allclose(out.du[~on], 1e-6, rtol=1e-6)
    np.testing.assert_array_equal(out.dv[~on], 0.0)
    np.testing.assert_allclose(out.dv[on], 3e-6, rtol=1e-4)  # the state dependence stays below: 1e-6 x 3 m/s
    assert describe_correction({"correction": "ml", "model": "mlp", "mean_residual": True, "top_hpa": 150}) == "ml: mlp + mean residual, model part at p >= 150 hPa"
    with pytest.raises(ConfigError, match="top_hpa"):
        make_corrector({"correction": "ml", "model": "first-top", "top_hpa": top}, **kw)  # no mean residual, no add_mean
    with pytest.raises(ConfigError, match="top_hpa 2000 hPa keep no model level"):
        make_corrector({"correction": "ml", "model": "first-top", "add_mean": True, "top_hpa": 2000}, **kw)
    # bottom_hpa: the model part at p <= it, the mean below; with top_hpa a band
    bottom = float(np.sort(p_hpa)[-2]) - 1.0  # the lowest two levels lie below it
    band = on & (p_hpa <= bottom)
    assert 0 < band.sum() < on.sum()
    for spec, kept in (({"bottom_hpa": bottom}, p_hpa <= bottom), ({"top_hpa": top, "bottom_hpa": bottom}, band)):
        out = make_corrector({"correction": "ml", "model": "first-top", "add_mean": True, **spec}, **kw)(T0, state)
        np.testing.assert_array_equal(out.dv[kept], full.dv[kept])
        np.testing.assert_array_equal(out.dv[~kept], 0.0)
        np.testing.assert_allclose(out.du[~kept], 1e-6, rtol=1e-6)
    assert describe_correction({"correction": "ml", "model": "mlp", "mean_residual": True, "top_hpa": 150, "bottom_hpa": 700}) == (
        "ml: mlp + mean residual, model part at 150 <= p <= 700 hPa")
    with pytest.raises(ConfigError, match="bottom_hpa"):
        make_corrector({"correction": "ml", "model": "first-top", "bottom_hpa": bottom}, **kw)  # no mean to fall to
    with pytest.raises(ConfigError, match="top_hpa 700 hPa and bottom_hpa 150 hPa keep no model level"):
        make_corrector({"correction": "ml", "model": "first-top", "add_mean": True, "top_hpa": 700, "bottom_hpa": 150}, **kw)


def test_set_mean_rebases_the_correction_as_a_file_holding_that_mean_would(setup, tmp_path):
    """set_mean (nudgeml.feedback's trial means): a corrector made from one mean file and rebased on
    another mean gives, field for field, what a corrector made from a file holding that mean gives:
    the mean residual, eddies only, the mean above top_hpa, and a fallback column (the new mean)."""
    root, grid, _ = setup
    model = export_constant(root, grid, "first-rebase", 0.0, module=FirstFeature(2 * grid.sigma.size, 1e-6))
    columns = ColumnSpec(geo=("sin_lat", "cos_lat", "land_fraction"))
    forcing = xr.open_dataset(root / "forcing.nc")
    clean = GridState(**{k: forcing[k].values[0].copy() for k in ("u", "v", "t", "q", "ps")})
    moved = {k: forcing[k].values[0].copy() for k in ("u", "v", "t", "q", "ps")}
    moved["u"] += 3.0
    moved["u"][1, 3, 5] = np.nan  # one column outside the training range: the guard's fallback
    state = GridState(**moved)
    rng = np.random.default_rng(0)
    other = tuple(rng.normal(scale=1e-5, size=grid.shape).astype(np.float32) for _ in range(2))
    zeros = np.zeros((12, *grid.shape), np.float32)
    xr.Dataset({"du_mean": (("lev", "lat", "lon"), other[0]), "dv_mean": (("lev", "lat", "lon"), other[1]),
                "du_monthly": (("month", "lev", "lat", "lon"), zeros + other[0]), "dv_monthly": (("month", "lev", "lat", "lon"), zeros + other[1])}).to_netcdf(tmp_path / "other.nc")
    top = float(np.sort(np.asarray(grid.presnivs_pa) / 100.0)[1]) + 1.0

    def made(mean_file):  # as make_corrector makes a mean-residual run, over one training state
        from nudgeml.mean_tendency import read_mean_tendency

        m = read_mean_tendency(mean_file)
        mean = tuple(m[f"{k}_mean"].values for k in ("du", "dv"))
        ml = MLCorrector(model, "torchscript", columns, grid, mean, eddy_only=True, top_hpa=top)
        ml.add_mean_residual(mean, iter([(T0, clean)]))
        return ml

    rebased, direct = made(root / "mean.nc"), made(tmp_path / "other.nc")
    before = rebased(T0, state)
    rebased.set_mean(other)
    after, want = rebased(T0, state), direct(T0, state)
    for k in ("du", "dv"):
        np.testing.assert_array_equal(getattr(after, k), getattr(want, k))
    assert np.abs(after.du - before.du).max() > 1e-6  # the mean it applies moved
    np.testing.assert_array_equal(after.du[:, 3, 5], other[0][:, 3, 5])  # the fallback column: the new mean
    with pytest.raises(ValueError, match="one mean per corrected tendency"):
        rebased.set_mean(other[:1])


@pytest.mark.slow
def test_rotational_only_removes_the_model_parts_divergence_and_keeps_its_vorticity(setup):
    """rotational_only: the correction minus the mean has no divergence and the vorticity of the
    unfiltered model part (a model whose du = dv = k x u_lowest, which is divergent); the winds only
    (the mean's divergence stays); without the stand-in's transform it is refused."""
    from dinosaur import spherical_harmonic as sh

    from nudgeml.gcm.standin import to_jcm

    root, grid, _ = setup
    model = export_constant(root, grid, "first-rot", 0.0, module=FirstFeature(2 * grid.sigma.size, 1e-6))
    g = StandinGCM(GCMConfig(21), T0)
    kw = dict(columns=ColumnSpec(geo=("sin_lat", "cos_lat", "land_fraction")), grid=grid, mean_file=root / "mean.nc", model_dir=model, gcm=g)
    forcing = xr.open_dataset(root / "forcing.nc")
    state = GridState(**{k: forcing[k].values[0].copy() for k in ("u", "v", "t", "q", "ps")})
    spec = {"correction": "ml", "model": "first-rot", "add_mean": True}
    full = make_corrector(spec, **kw)(T0, state)
    ml = make_corrector(spec | {"rotational_only": True}, **kw)
    rot = ml(T0, state)
    mean_du, mean_dv = 1e-6, 0.0  # mean.nc's
    h = g.model.coords.horizontal

    def vor_div(du, dv):
        vor, div = sh.uv_nodal_to_vor_div_modal(h, to_jcm(du - mean_du), to_jcm(dv - mean_dv))
        return np.asarray(vor), np.asarray(div)

    vor_full, div_full = vor_div(full.du, full.dv)
    vor_rot, div_rot = vor_div(rot.du, rot.dv)
    assert np.abs(div_full).max() > 1e-3 * np.abs(vor_full).max() > 0  # the model part was divergent
    assert np.abs(div_rot).max() < 1e-3 * np.abs(div_full).max()
    np.testing.assert_allclose(vor_rot, vor_full, atol=1e-4 * np.abs(vor_full).max())
    assert ml.status()["rotational_only"]
    assert describe_correction(spec | {"rotational_only": True}) == "ml: mean + first-rot, rotational part"
    with pytest.raises(ConfigError, match="rotational_only needs the stand-in"):
        make_corrector(spec | {"rotational_only": True}, **{**kw, "gcm": None})

def export_cnn(root, grid, name, grid_shape, *, aoti=False):
    """An untrained CNN (bounded output: tanh, y_std 1e-6 m s-2) exported for ``grid_shape``."""
    from nudgeml.models.cnn import CNNConfig, FieldModel, build_net

    spec = ColumnSpec(geo=("sin_lat", "cos_lat", "land_fraction"))
    nlev = grid.sigma.size
    fb, tb = spec.feature_blocks(nlev), spec.target_blocks(nlev)
    nf, nt = sum(b["levels"] for b in fb), sum(b["levels"] for b in tb)
    torch.manual_seed(0)
    scale = torch.tensor([10.0] * 2 * nlev + [30.0] * nlev + [1e-2] * nlev + [1e4, 1.0, 1.0, 1.0])
    module = FieldModel(build_net(nf, nt, CNNConfig(channels=4, depth=2, activation="tanh")), grid_shape, torch.zeros(nf), scale, torch.zeros(nt), torch.full((nt,), 1e-6))
    manifest = Manifest(
        name=name, kind="cnn",
        features=tuple(Block(b["name"], b["units"], b["levels"]) for b in fb),
        targets=tuple(Block(b["name"], b["units"], b["levels"]) for b in tb),
        levels=Levels(tuple(grid.presnivs_pa)),
        guard=Guard(0.1, (-1e9,) * nf, (1e9,) * nf, (-1.0,) * nt, (1.0,) * nt),
        grid=Grid("t21", nlon=grid_shape[1], nlat=grid_shape[0]),
    )
    export_model(module, manifest, root / name, aoti=aoti)
    return root / name


@pytest.mark.slow
def test_cnn_runs_on_the_whole_grid_with_both_backends(setup):
    root, grid, _ = setup
    nlat, nlon = grid.lat_deg.size, grid.lon_deg.size
    model_dir = export_cnn(root, grid, "cnn", (nlat, nlon), aoti=True)
    status = run(setup, model_dir, "cnn")
    assert status["status"] == "ok" and status["calls"] == 3
    assert status["guard"]["columns"] == 3 * nlat * nlon and status["guard"]["fallback_columns"] == 0
    snap = xr.open_dataset(root / "forcing.nc").isel(time=0).load()
    state = GridState(**{k: snap[k].values for k in ("u", "v", "t", "q", "ps")})
    fallback = (np.zeros(grid.shape), np.zeros(grid.shape))
    columns = ColumnSpec(geo=("sin_lat", "cos_lat", "land_fraction"))
    ts = MLCorrector(model_dir, "torchscript", columns, grid, fallback).predict(T0, state)
    pt2 = MLCorrector(model_dir, "aoti", columns, grid, fallback).predict(T0, state)
    assert 0 < np.abs(ts[0][0]).max() < 1e-4
    np.testing.assert_allclose(pt2[0][0], ts[0][0], rtol=0, atol=1e-5 * np.abs(ts[0][0]).max())
    np.testing.assert_allclose(pt2[0][1], ts[0][1], rtol=0, atol=1e-5 * np.abs(ts[0][1]).max())


def test_cnn_for_another_grid_is_refused_before_the_run(setup, tmp_path):
    root, grid, _ = setup
    bad = export_cnn(tmp_path, grid, "cnn-t10", (grid.lat_deg.size // 2, grid.lon_deg.size // 2))
    with pytest.raises(Exception, match=r"model\.json.*key 'grid'"):
        run(setup, bad, "cnn-t10")
    assert not (root / "cnn-t10.nc").exists()


def test_tree_model_runs_through_its_compiled_library(setup, tmp_path):
    """An xgboost export with ``tree_backend: tl2cgen``: the corrector calls model_trees.so (for
    either torch backend) and gives the TorchScript walker's tendencies within float32 rounding."""
    import dataclasses
    import shutil

    import xgboost as xgb

    from nudgeml.extract import column_features
    from nudgeml.models.xgb import tree_module
    from nudgeml.trees import compile_trees

    root, grid, _ = setup
    walker_dir = export_constant(tmp_path, grid, "walker", 0.0)  # manifest and layout; model replaced below
    manifest = json.loads((walker_dir / "model.json").read_text())
    nf, nt = manifest["n_features"], manifest["n_targets"]
    snap = xr.open_dataset(root / "forcing.nc").isel(time=0).load()
    state = GridState(**{k: snap[k].values for k in ("u", "v", "t", "q", "ps")})
    spec = ColumnSpec(geo=("sin_lat", "cos_lat", "land_fraction"))
    fields = {k: getattr(state, k)[None] for k in ("u", "v", "t", "q", "ps")}
    x = column_features(fields, spec, lat_deg=grid.lat_deg, lon_deg=grid.lon_deg, times=np.array([T0]), land_fraction=grid.land_fraction)[0]
    rng = np.random.default_rng(0)
    z = np.tanh((x - x.mean(0)) / (x.std(0) + 1e-12) @ rng.standard_normal((nf, nt)) / np.sqrt(nf)).astype(np.float32)
    booster = xgb.train({"max_depth": 4, "multi_strategy": "one_output_per_tree", "nthread": 1, "seed": 0}, xgb.DMatrix(x, z), 10)
    stats = {"target_mean": np.zeros(nt, np.float32), "target_std": np.full(nt, 1e-5, np.float32)}
    module = tree_module(booster, np.eye(nt), stats)
    m = dataclasses.replace(read_manifest(walker_dir), kind="xgboost")
    export_model(module, m, walker_dir, torch.from_numpy(x[:4]), aoti=False)
    trees_dir = tmp_path / "trees"
    shutil.copytree(walker_dir, trees_dir)
    compile_trees(booster, trees_dir / "model_trees.so", intercept=module.base.numpy(), modes=np.eye(nt), target_mean=stats["target_mean"], target_std=stats["target_std"])
    write_manifest(dataclasses.replace(m, artifacts={**m.artifacts, "trees": "model_trees.so"}, tree_backend="tl2cgen"), trees_dir / "model.json")
    fallback = (np.zeros(grid.shape), np.zeros(grid.shape))
    walker = MLCorrector(walker_dir, "torchscript", spec, grid, fallback)
    trees = MLCorrector(trees_dir, "torchscript", spec, grid, fallback)
    assert walker.backend == "torchscript" and trees.backend == "tl2cgen"
    want, got = walker.predict(T0, state), trees.predict(T0, state)
    assert 0 < np.abs(want[0][0]).max() and got[1].fallback.sum() == 0
    for a, b in zip(got[0], want[0], strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * 1e-5)


# ---------------------------------------------------------------- temperature and humidity corrections


def thermo_mean(root, grid, out, *, dt=2e-6, dq=None):
    """``out``: a mean file with the winds' means of ``setup`` (in ``root``) and a constant dt (K s-1) /
    dq (kg kg-1 s-1)."""
    mean = xr.open_dataset(root / "mean.nc").load()
    for k, value in (("dt", dt), ("dq", dq)):
        if value is not None:
            mean[f"{k}_mean"] = (("lev", "lat", "lon"), np.full(grid.shape, value, np.float32))
            mean[f"{k}_monthly"] = (("month", "lev", "lat", "lon"), np.full((12, *grid.shape), value, np.float32))
    mean.to_netcdf(out)
    return out


def test_mean_correction_applies_t_and_q_when_the_file_holds_them_unless_told_winds_only(setup, tmp_path):
    from nudgeml.coupled import MeanCorrector

    root, grid, _ = setup
    path = thermo_mean(root, grid, tmp_path / "mean-tq.nc", dt=2e-6, dq=-1e-9)
    mean = xr.open_dataset(path).load()
    both = MeanCorrector(mean, "annual")
    assert both.variables == ("du", "dv", "dt", "dq")
    c = both(T0, None)
    np.testing.assert_allclose(c.dt, 2e-6)
    np.testing.assert_allclose(c.dq, -1e-9)
    np.testing.assert_allclose(MeanCorrector(mean, "monthly")(T0, None).dt, 2e-6)
    uv = MeanCorrector(mean, "annual", ["du", "dv"])
    assert uv.variables == ("du", "dv") and uv(T0, None).dt is None
    winds_only = xr.open_dataset(root / "mean.nc").load()
    assert MeanCorrector(winds_only, "annual")(T0, None).dt is None, "a winds-only file: the winds, as before"
    with pytest.raises(InputError, match=r"mean\.nc: the mean correction applies 'dt' but the file has no 'dt_mean'"):
        MeanCorrector(winds_only, "annual", ["du", "dv", "dt"], source=str(root / "mean.nc"))
    with pytest.raises(InputError, match=r"key 'variables'.*\['dt'\] are not du, dv"):
        MeanCorrector(mean, "annual", ["dt"])
    with pytest.raises(ConfigError, match="'variables' is a key of the mean correction"):
        make_corrector({"correction": "ml", "model": "x", "variables": ["du", "dv"]}, columns=ColumnSpec(), grid=grid, mean_file=path, model_dir=tmp_path)


def test_ml_correction_with_dt_targets_applies_dt_and_falls_back_to_its_mean(setup, tmp_path):
    """A model with targets du, dv, dt: the correction carries dt (a column on the guard's fallback gets
    dt_mean), the mean residual covers dt too; without dt_mean in the mean file: one error naming it."""
    root, grid, _ = setup
    model = export_constant(tmp_path, grid, "const-dt", 1e-5, targets=("du", "dv", "dt"))
    columns = ColumnSpec(geo=("sin_lat", "cos_lat", "land_fraction"))
    with pytest.raises(InputError, match=r"mean\.nc: the model .*model\.json corrects 'dt' but the mean tendency file has no 'dt_mean'"):
        make_corrector({"correction": "ml", "model": "const-dt"}, columns=columns, grid=grid, mean_file=root / "mean.nc", model_dir=model)
    path = thermo_mean(root, grid, tmp_path / "mean-t.nc", dt=2e-6)
    ml = make_corrector({"correction": "ml", "model": "const-dt"}, columns=columns, grid=grid, mean_file=path, model_dir=model)
    assert ml.variables == ("du", "dv", "dt")
    forcing = xr.open_dataset(root / "forcing.nc")
    fields = {k: forcing[k].values[0].copy() for k in ("u", "v", "t", "q", "ps")}
    c = ml(T0, GridState(**fields))
    np.testing.assert_allclose(c.dt, 1e-5)
    np.testing.assert_allclose(c.du, 1e-5)
    assert c.dq is None
    fields["t"][2, 4, 6] = np.nan  # one column outside the training range
    c = ml(T0, GridState(**fields))
    assert c.dt[:, 4, 6] == pytest.approx(2e-6) and c.du[:, 4, 6] == pytest.approx(1e-6), "the fallback is each target's mean"
    assert np.delete(c.dt.reshape(c.dt.shape[0], -1), 4 * grid.lon_deg.size + 6, axis=1) == pytest.approx(1e-5)
    clean = GridState(**{k: forcing[k].values[0] for k in ("u", "v", "t", "q", "ps")})
    ml.add_mean_residual((np.full(grid.shape, 1e-6), np.zeros(grid.shape), np.full(grid.shape, 2e-6)), iter([(T0, clean)]))
    np.testing.assert_allclose(ml(T0, clean).dt, 2e-6, rtol=1e-5)


def test_model_targets_keep_the_model_part_on_those_targets_and_the_mean_on_the_others(setup, tmp_path):
    """model_targets [dt, dq]: T and q get the mean plus the model's part, the winds the mean tendency
    itself (add_mean and the mean residual alike); a target the model lacks is refused naming both."""
    root, grid, _ = setup
    model = export_constant(tmp_path, grid, "const-tq", 1e-5, targets=("du", "dv", "dt", "dq"))
    columns = ColumnSpec(geo=("sin_lat", "cos_lat", "land_fraction"))
    kw = dict(columns=columns, grid=grid, mean_file=thermo_mean(root, grid, tmp_path / "mean-tq.nc", dt=2e-6, dq=-1e-9), model_dir=model)
    forcing = xr.open_dataset(root / "forcing.nc")
    state = GridState(**{k: forcing[k].values[0].copy() for k in ("u", "v", "t", "q", "ps")})
    full = make_corrector({"correction": "ml", "model": "const-tq", "add_mean": True}, **kw)(T0, state)
    np.testing.assert_allclose(full.du, 1e-6 + 1e-5, rtol=1e-5)  # the model part is everywhere without it
    ml = make_corrector({"correction": "ml", "model": "const-tq", "add_mean": True, "model_targets": ["dt", "dq"]}, **kw)
    c = ml(T0, state)
    np.testing.assert_allclose(c.du, 1e-6, rtol=1e-6)
    np.testing.assert_array_equal(c.dv, 0.0)
    np.testing.assert_array_equal(c.dt, full.dt)
    np.testing.assert_array_equal(c.dq, full.dq)
    assert ml.status()["model_targets"] == ["dt", "dq"]
    assert describe_correction({"correction": "ml", "model": "mlp", "mean_residual": True, "model_targets": ["dt", "dq"]}) == (
        "ml: mlp + mean residual, model part on dt dq")
    with pytest.raises(ConfigError, match=r"model_targets \['dq'\]: the model .*const-dt corrects \['du', 'dv', 'dt'\]"):
        make_corrector({"correction": "ml", "model": "const-dt", "add_mean": True, "model_targets": ["dq"]},
                       **{**kw, "model_dir": export_constant(tmp_path, grid, "const-dt", 1e-5, targets=("du", "dv", "dt"))})
    with pytest.raises(ConfigError, match="model_targets keeps the model's part .* needs mean_residual or add_mean"):
        make_corrector({"correction": "ml", "model": "const-tq", "model_targets": ["dt"]}, **kw)


def test_ml_targets_must_be_winds_then_t_and_q(setup, tmp_path):
    root, grid, _ = setup
    model = export_constant(tmp_path, grid, "dt-first", 0.0, targets=("dt", "du", "dv"))
    with pytest.raises(InputError, match=r"model\.json: key 'targets'.*\['dt', 'du', 'dv'\] are not du, dv"):
        make_corrector({"correction": "ml", "model": "dt-first"}, columns=ColumnSpec(), grid=grid, mean_file=thermo_mean(root, grid, tmp_path / "m.nc"), model_dir=model)


@pytest.mark.slow
def test_free_run_applies_the_mean_temperature_correction(setup, tmp_path):
    """A mean correction with dt_mean warms the free run against the same run without it, by about
    dt_mean x time (the model's own response makes it less than that, not the opposite sign)."""
    root, grid, cfg = setup
    path = thermo_mean(root, grid, tmp_path / "mean-dt1e-5.nc", dt=1e-5)  # 0.86 K/day; not a run name (its history)
    runs = {"mean-t": {"correction": "mean"}, "mean-uv": {"correction": "mean", "variables": ["du", "dv"]}}
    cfg = cfg | {"free_runs": cfg["free_runs"] | {"runs": runs}}
    temps = {}
    for name in runs:
        status = run_free(cfg, name, root / "grid.nc", [root / "forcing.nc"], tmp_path / f"{name}.nc", tmp_path / f"{name}.json", mean_file=path)
        assert status["status"] == "ok" and status["corrected"] == (["du", "dv", "dt"] if name == "mean-t" else ["du", "dv"])
        h = xr.open_dataset(tmp_path / f"{name}.nc")
        assert h.attrs["corrected"] == " ".join(status["corrected"])
        temps[name] = h["temp"].values
    warming = float(np.mean(temps["mean-t"][-1] - temps["mean-uv"][-1]))  # at the last window start: 12 h
    assert 0.2 * 1e-5 * 12 * 3600 < warming < 1.2 * 1e-5 * 12 * 3600, warming


@pytest.mark.slow
def test_free_run_records_the_precipitation_its_humidity_correction_implies(setup, tmp_path):
    """A constant dq_mean of -1e-9 kg kg-1 s-1 removes 1e-9 ps / g kg m-2 s-1 of water from every column
    (the sigma layers sum to 1): the history's precip_qcorr is that, with the window's psol; a winds-only
    correction writes zero."""
    from nudgeml.conventions import read_histhf
    from nudgeml.gcm.standin import GRAVITY_M_S2

    root, grid, cfg = setup
    path = thermo_mean(root, grid, tmp_path / "mean-dq.nc", dt=0.0, dq=-1e-9)
    runs = {"mean-q": {"correction": "mean"}, "mean-uv": {"correction": "mean", "variables": ["du", "dv"]}}
    cfg = cfg | {"free_runs": cfg["free_runs"] | {"runs": runs}}
    for name in runs:
        run_free(cfg, name, root / "grid.nc", [root / "forcing.nc"], tmp_path / f"{name}.nc", tmp_path / f"{name}.json", mean_file=path)
    q = read_histhf(tmp_path / "mean-q.nc").load()
    want = 1e-9 * q["ps"].values / GRAVITY_M_S2
    np.testing.assert_allclose(q["precip_correction"].values, want, rtol=2e-3)
    assert q["precip_correction"].attrs["units"] == "kg/(s*m2)"
    np.testing.assert_array_equal(read_histhf(tmp_path / "mean-uv.nc")["precip_correction"].values, 0.0)


def test_column_neutral_humidity_moves_water_within_each_column_in_proportion_to_humidity():
    from nudgeml.coupled import column_neutral_humidity

    rng = np.random.default_rng(3)
    dsigma = np.array([0.1, 0.13, 0.17, 0.18, 0.16, 0.12, 0.09, 0.05])
    q = rng.uniform(1e-6, 2e-2, size=(8, 3, 4))
    dq = rng.normal(0.0, 1e-8, size=(8, 3, 4))
    q[:, 0, 0] = 0.0  # a column without humidity keeps its correction
    out = column_neutral_humidity(dq, q, dsigma)
    net = np.tensordot(dsigma, out.astype(np.float64), axes=(0, 0))
    assert np.abs(net.ravel()[1:]).max() < 1e-6 * np.abs(np.tensordot(dsigma, dq, axes=(0, 0))).max()
    np.testing.assert_allclose(out[:, 0, 0], dq[:, 0, 0], rtol=1e-6)
    # what is taken out is proportional to q: (dq - out) / q is one number per column
    ratio = (dq - out)[:, 1, 2] / q[:, 1, 2]
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-3, atol=1e-14)


def test_humidity_column_neutral_wraps_the_mean_and_refuses_a_run_without_dq(setup, tmp_path):
    from types import SimpleNamespace

    root, grid, _ = setup
    path = thermo_mean(root, grid, tmp_path / "mean-tq.nc", dt=2e-6, dq=-1e-9)
    forcing = xr.open_dataset(root / "forcing.nc")
    state = GridState(**{k: forcing[k].values[0] for k in ("u", "v", "t", "q", "ps")})
    dsigma = np.full(grid.sigma.size, 1.0 / grid.sigma.size)
    gcm = SimpleNamespace(dsigma=dsigma)
    spec = {"correction": "mean", "humidity_column_neutral": True}
    c = make_corrector(spec, columns=ColumnSpec(), grid=grid, mean_file=path, model_dir=None, gcm=gcm)
    plain = make_corrector({"correction": "mean"}, columns=ColumnSpec(), grid=grid, mean_file=path, model_dir=None)
    got, want = c(T0, state), plain(T0, state)
    assert c.variables == ("du", "dv", "dt", "dq") and c.status()["humidity_column_neutral"] is True
    np.testing.assert_array_equal(got.du, want.du)
    np.testing.assert_array_equal(got.dt, want.dt)
    assert np.abs(np.tensordot(dsigma, got.dq.astype(np.float64), axes=(0, 0))).max() < 1e-15  # -1e-9 before
    assert describe_correction(spec) == "mean (annual, dq column-neutral)"
    with pytest.raises(ConfigError, match=r"humidity_column_neutral needs a humidity correction; this run corrects \['du', 'dv'\]"):
        make_corrector({**spec, "variables": ["du", "dv"]}, columns=ColumnSpec(), grid=grid, mean_file=path, model_dir=None, gcm=gcm)
    with pytest.raises(ConfigError, match=r"humidity_column_neutral needs a humidity correction; this run corrects \[\]"):
        make_corrector({"correction": "none", "humidity_column_neutral": True}, columns=ColumnSpec(), grid=grid, mean_file=None, model_dir=None, gcm=gcm)
    with pytest.raises(ConfigError, match="humidity_column_neutral needs the stand-in model"):
        make_corrector(spec, columns=ColumnSpec(), grid=grid, mean_file=path, model_dir=None)

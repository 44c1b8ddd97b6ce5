"""Online training through the differentiable stand-in (nudgeml.online): the network in JAX is the
exported module, the rollout's features are the free run's, and on a truth that differs from the model
by a known forcing the rollout reproduces the analysis when the mean is that forcing, and the gradient
points toward it when the mean is zero."""

import re

import numpy as np
import pytest
import torch
import xarray as xr
import yaml

from factories import T0, forced_truth
from nudgeml.checks import load_config
from nudgeml.errors import ConfigError, InputError
from nudgeml.extract import ColumnSpec, column_features, expand_names
from nudgeml.models.normalized import NormalizedModel, mlp
from nudgeml.naming import offline_root
from nudgeml.online import (
    LOSS_VARIABLES,
    Rollouts,
    candidate_starts,
    check_online_config,
    first_module,
    jax_forward,
    loss_scales,
    module_constants,
    network_of,
    OnlineSettings,
    set_network,
    start_module,
    validation_starts,
)


def random_model(n_in: int, n_out: int, activation=torch.nn.SiLU, clip: bool = False, seed: int = 0) -> NormalizedModel:
    torch.manual_seed(seed)
    net = mlp(n_in, (16, 8), n_out, activation)
    x_mean, x_std = torch.randn(n_in), torch.rand(n_in) + 0.5
    clip_range = (x_mean - 2 * x_std, x_mean + 2 * x_std) if clip else None
    return NormalizedModel(net, x_mean, x_std, torch.randn(n_out), torch.rand(n_out) + 0.5, clip_range).eval()


@pytest.mark.parametrize("activation", [torch.nn.SiLU, torch.nn.ReLU, torch.nn.GELU, torch.nn.Tanh])
@pytest.mark.parametrize("clip", [False, True])
def test_the_jax_network_is_the_torch_module(activation, clip):
    import jax.numpy as jnp

    m = random_model(7, 5, activation, clip)
    x = np.random.default_rng(1).normal(scale=3.0, size=(64, 7)).astype(np.float32)  # beyond the clip range too
    layers, act = network_of(m)
    got = np.asarray(jax_forward([tuple(map(jnp.asarray, p)) for p in layers], act, module_constants(m), jnp.asarray(x)))
    with torch.no_grad():
        want = m(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_start_module_is_zero_and_weights_go_back_into_the_module():
    m = random_model(7, 5)
    start = start_module(m)
    x = torch.randn(10, 7)
    assert torch.equal(start(x), torch.zeros(10, 5))
    assert not torch.equal(m(x), torch.zeros(10, 5))  # the offline model is left as it was
    layers, _ = network_of(m)
    with torch.no_grad():
        np.testing.assert_allclose(set_network(start, layers)(x).numpy(), (m(x) - m.y_mean).numpy(), rtol=1e-6, atol=1e-6)  # y_mean stays 0


def test_a_curriculum_stage_continues_the_network_it_names_in_its_form():
    form = OnlineSettings(init="stage-1", windows=64, eddy_only=True, top_hpa=150.0)
    offline = {"kind": "mlp", "module": random_model(7, 5), "summary": {"val_r2": 0.2}}
    x = torch.randn(10, 7)
    start, prev = first_module(offline, form, "off.pt", "models.m.online")
    assert prev is None and torch.equal(start(x), torch.zeros(10, 5))  # from an offline model: the mean exactly
    trained = set_network(start_module(offline["module"]), network_of(random_model(7, 5, seed=3))[0])
    stage_1 = {"kind": "mlp", "module": trained, "summary": {"online": {"init": "mlp", "windows": 16, "steps": 200, "eddy_only": True, "top_hpa": 150.0}}}
    module, prev = first_module(stage_1, form, "s1.pt", "models.m.online")
    with torch.no_grad():
        assert torch.equal(module(x), trained(x)) and not torch.equal(module(x), torch.zeros(10, 5))  # continued, not restarted
    assert module is not trained and (prev.windows, prev.steps) == (16, 200)
    with pytest.raises(InputError, match=re.escape("s1.pt: trained online in the form {'eddy_only': True, 'top_hpa': 150.0}; models.m.online trains in "
                                                   "{'eddy_only': True, 'top_hpa': None}")):
        first_module(stage_1, OnlineSettings(init="stage-1", eddy_only=True), "s1.pt", "models.m.online")


def test_rollout_starts_stay_inside_their_block():
    h6 = np.timedelta64(6, "h")
    blocks = [(T0, T0 + 4 * h6), (T0 + 10 * h6, T0 + 11 * h6)]
    starts = candidate_starts(blocks, 2)
    assert list(starts) == [T0, T0 + h6, T0 + 2 * h6]  # the second block is shorter than 2 windows
    assert candidate_starts(blocks, 5).size == 0


def test_validation_starts_fit_their_blocks_or_are_refused():
    h6 = np.timedelta64(6, "h")
    blocks = [(T0, T0 + 11 * h6), (T0 + 40 * h6, T0 + 51 * h6)]  # 3 days each
    assert list(validation_starts(blocks, 8, 3, "models.m.online", "store")) == [T0, T0 + 40 * h6, T0 + 43 * h6]
    with pytest.raises(ConfigError, match=r"models\.m\.online\.validation_starts' is 3, but no 16-window rollout fits"):
        validation_starts(blocks, 16, 3, "models.m.online", "store")
    assert validation_starts(blocks, 16, 0, "models.m.online", "store").size == 0


def test_online_models_are_checked_before_any_run():
    base = yaml.safe_load(open("config/config.yaml"))
    ok = {"models": {"mlp-online": {"kind": "mlp", "online": {"init": "mlp", "windows": 4}}},
          "free_runs": {"runs": {"ml-online": {"correction": "ml", "model": "mlp-online", "add_mean": True}}}}
    check_online_config(load_config("config/config.yaml", ok))
    load_config("config/config.yaml", {**ok, "free_runs": {"runs": {"ml-online-mr": {"correction": "ml", "model": "mlp-online", "mean_residual": True}}}})
    cases = [
        ({"models": {"mlp-online": {"kind": "mlp", "online": {"init": "nope"}}}}, "models.mlp-online.online.init' names 'nope'"),
        ({"models": {"mlp-online": {"kind": "mlp", "online": {"init": "xgb"}}}}, "starts an mlp from an mlp ('xgb' is 'xgboost')"),
        ({"models": {"mlp-online": {"kind": "mlp", "online": {"init": "mlp", "windows": 0}}}}, "online.windows"),
        ({**ok, "free_runs": {"runs": {"ml-online": {"correction": "ml", "model": "mlp-online"}}}}, "set add_mean: true"),
        ({**ok, "train": {"models": ["mlp", "mlp-online"]}}, "names the online model 'mlp-online'"),
        ({**ok, "free_runs": {"runs": {"ml-online": {"correction": "ml", "model": "mlp-online", "add_mean": True, "mean_residual": True}}}}, "add_mean"),
    ]
    # a model trained in the form its free run applies (eddies only, below top_hpa): applied in that form only
    form = {"init": "mlp", "windows": 4, "eddy_only": True, "top_hpa": 150}
    as_trained = {"correction": "ml", "model": "mlp-online", "add_mean": True, "eddy_only": True, "top_hpa": 150}
    formed = {"models": {"mlp-online": {"kind": "mlp", "online": form}}, "free_runs": {"runs": {"ml-online": as_trained}}}
    check_online_config(load_config("config/config.yaml", formed))
    for run, missing in [({**as_trained, "eddy_only": False}, "'eddy_only': False"), ({**as_trained, "top_hpa": 100}, "'top_hpa': 100.0"),
                         ({k: v for k, v in as_trained.items() if k != "add_mean"} | {"mean_residual": True}, "without add_mean"),
                         ({**as_trained, "bottom_hpa": 700}, "with ['bottom_hpa']")]:
        cases.append(({**formed, "free_runs": {"runs": {"ml-online": run}}}, "trained online in the form {'eddy_only': True, 'top_hpa': 150.0} (models.mlp-online.online); the run applies"))
        cases.append(({**formed, "free_runs": {"runs": {"ml-online": run}}}, missing))
    cases.append(({"models": {"mlp-online": {"kind": "mlp", "online": {**form, "top_hpa": 0}}}}, "online.top_hpa"))
    # a curriculum stage continues an online model in the same form; the chain ends at an offline model
    stage = {"kind": "mlp", "online": {**form, "init": "mlp-online", "windows": 64}}
    staged = {"models": {**formed["models"], "mlp-online-16d": stage},
              "free_runs": {"runs": {"ml-online-16d": {**as_trained, "model": "mlp-online-16d"}}}}
    cfg = load_config("config/config.yaml", staged)
    assert offline_root(cfg["models"], "mlp-online-16d") == offline_root(cfg["models"], "mlp-online") == "mlp"
    cases.append(({**staged, "models": {**staged["models"], "mlp-online-16d": {**stage, "online": {**stage["online"], "top_hpa": 100}}}},
                  "models.mlp-online-16d.online.init' names the online model 'mlp-online', trained in the form {'eddy_only': True, 'top_hpa': 150.0}; "
                  "this one is trained in {'eddy_only': True, 'top_hpa': 100.0}"))
    looped = {"kind": "mlp", "online": {**form, "init": "mlp-online-16d"}}
    cases.append(({**staged, "models": {"mlp-online": looped, "mlp-online-16d": stage}},
                  "come back on themselves"))
    cases.append(({"models": {"mlp-online": {"kind": "mlp", "online": {**form, "time_mean_weight": -1}}}}, "online.time_mean_weight"))
    assert "xgb" in base["models"]
    for override, message in cases:
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_config("config/config.yaml", override)


@pytest.mark.slow
def test_rollout_reproduces_a_truth_forced_by_the_mean_and_its_gradient_points_to_the_forcing(tmp_path):
    """The truth is the default model plus a = 2e-5 cos(lat) m s-2 on u. Started from the truth's
    state, a rollout whose mean is a reproduces the analysis (loss ~ 0); with mean 0 it does not, and
    the gradient with respect to the last layer's du biases says: raise du (toward a) at every level."""
    import jax.numpy as jnp

    from nudgeml.gcm.standin import GCMConfig, StandinGCM

    grid, a = forced_truth(tmp_path, T0, 2e-5, windows=2)
    forcing = xr.open_dataset(tmp_path / "forcing.nc")
    columns = ColumnSpec(geo=("sin_lat", "cos_lat", "land_fraction", "cos_zenith"))
    nlev = grid.sigma.size
    names = expand_names(columns.feature_blocks(nlev))
    module = start_module(random_model(len(names), 2 * nlev))
    module.y_std.fill_(1e-5)  # the network's output unit: a tendency of the forcing's size (m s-2)
    consts = module_constants(module)
    layers, act = network_of(module)
    params = [tuple(map(jnp.asarray, p)) for p in layers]
    gcm = StandinGCM(GCMConfig(21), T0)
    zero = np.zeros(grid.shape, np.float32)
    scales = {k: np.ones(nlev) for k in LOSS_VARIABLES} | {"q": np.full(nlev, 1e-3)}

    # the rollout's features are those the free run computes from the model's state (its current_state)
    roll = Rollouts(gcm, forcing, [a, zero], ("du", "dv"), columns, consts, act, 2, loss_scale=scales)
    rs, xs = roll.inputs(T0)
    state = gcm.current_state()
    got = np.asarray(roll._features(gcm.model.dycore.to_physics_state(rs.dynamics), xs["cosz"][0]))
    fields = {k: getattr(state, k)[None] for k in ("u", "v", "t", "q", "ps")}
    want = column_features(fields, columns, lat_deg=grid.lat_deg, lon_deg=grid.lon_deg, times=np.array([T0]), land_fraction=grid.land_fraction)[0]
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)

    forced = roll.terms(params, T0)
    free = Rollouts(gcm, forcing, [zero, zero], ("du", "dv"), columns, consts, act, 2, loss_scale=scales)
    terms, grads = free.value_and_grad(params, T0)
    loss = terms.total
    # the same model and forcing: the analysis, but for the start's round trip through the grid
    # (measured 1.9e-4 against 5.6e-2)
    assert forced.total < loss / 20 and forced.time_mean < terms.time_mean / 20, (forced, terms)
    # the error of the rollout's time mean (online.time_mean_weight): without weight the loss is the
    # per-window term; the mean of two windows' errors is smaller than their mean square (they differ);
    # over one window the two terms are the same error
    np.testing.assert_allclose(terms.total, terms.per_window, rtol=1e-6)
    assert 0 < terms.time_mean < terms.per_window, terms
    weighted = Rollouts(gcm, forcing, [zero, zero], ("du", "dv"), columns, consts, act, 2, loss_scale=scales, time_mean_weight=3.0).terms(params, T0)
    np.testing.assert_allclose([weighted.per_window, weighted.time_mean], [terms.per_window, terms.time_mean], rtol=1e-6)
    # each term is its variables' mean; the forcing was on u, so u's error is the largest
    np.testing.assert_allclose(np.mean(list(terms.per_window_vars.values())), terms.per_window, rtol=1e-6)
    np.testing.assert_allclose(np.mean(list(terms.time_mean_vars.values())), terms.time_mean, rtol=1e-6)
    assert max(terms.per_window_vars, key=terms.per_window_vars.get) == "u", terms.per_window_vars
    np.testing.assert_allclose(weighted.total, terms.per_window + 3.0 * terms.time_mean, rtol=1e-6)
    one = Rollouts(gcm, forcing, [zero, zero], ("du", "dv"), columns, consts, act, 1, loss_scale=scales, time_mean_weight=0.5).terms(params, T0)
    np.testing.assert_allclose(one.time_mean, one.per_window, rtol=1e-6)
    np.testing.assert_allclose(one.total, 1.5 * one.per_window, rtol=1e-6)
    bias = np.asarray(grads[-1][1])  # d loss / d (last layer's bias): du's levels, then dv's
    assert np.isfinite(bias).all()
    assert (bias[:nlev] < 0).sum() >= nlev - 1, bias[:nlev]  # raising du everywhere (toward a > 0) lowers the loss
    assert np.abs(bias[:nlev]).max() > 10 * np.abs(bias[nlev:]).max()  # v was not forced
    # a step of the last layer's biases along the gradient (du about +1e-5, half of a) lowers the loss
    step = [*params[:-1], (params[-1][0], params[-1][1] - jnp.asarray(bias / np.abs(bias).max()))]
    assert free.value(step, T0) < 0.8 * loss
    assert loss_scales(consts, names, nlev)["u"].shape == (nlev,)


def test_the_rollout_applies_the_form_the_free_run_applies():
    """Trained in a form (``online.eddy_only``, ``online.top_hpa``), a rollout window's correction is
    the free run's in that form: mean + the network's part on the levels at or below top_hpa, less its
    zonal mean per latitude row and level (``coupled.model_levels``, ``coupled.zonal_departure``)."""
    import jax.numpy as jnp

    from nudgeml.coupled import model_levels, zonal_departure
    from nudgeml.extract import cos_solar_zenith
    from nudgeml.gcm.standin import GCMConfig, StandinGCM, from_jcm

    gcm = StandinGCM(GCMConfig(21), T0)
    gcm.start()
    grid = gcm.grid
    columns = ColumnSpec(geo=("sin_lat", "cos_lat", "land_fraction", "cos_zenith"))
    nlev, nlat, nlon = grid.shape
    names = expand_names(columns.feature_blocks(nlev))
    module = random_model(len(names), 2 * nlev, seed=3)
    # standardised by the state's own columns, as a trained model is: with random statistics, features
    # of 1e5 Pa reach the network at 1e5 and the two float32 paths differ by the CPU's summation order
    state = gcm.current_state()
    fields = {k: getattr(state, k)[None] for k in ("u", "v", "t", "q", "ps")}
    x = column_features(fields, columns, lat_deg=grid.lat_deg, lon_deg=grid.lon_deg, times=np.array([T0]), land_fraction=grid.land_fraction)[0]
    x_std = x.std(axis=0)
    with torch.no_grad():
        module.x_mean.copy_(torch.from_numpy(x.mean(axis=0)))
        module.x_std.copy_(torch.from_numpy(np.where(x_std > 0, x_std, 1.0).astype(np.float32)))
    consts = module_constants(module)
    layers, act = network_of(module)
    params = [tuple(map(jnp.asarray, p)) for p in layers]
    rng = np.random.default_rng(0)
    mean = [(1e-2 * rng.normal(size=grid.shape)).astype(np.float32) for _ in range(2)]
    scales = {k: np.ones(nlev) for k in LOSS_VARIABLES}
    on = model_levels(grid.presnivs_pa, 500.0)
    assert 0 < on.sum() < nlev
    lat2d, lon2d = np.meshgrid(grid.lat_deg, grid.lon_deg, indexing="ij")
    cosz = jnp.asarray(cos_solar_zenith(np.array([T0]), lat2d.ravel(), lon2d.ravel())[0], jnp.float32)
    physics = gcm.model.dycore.to_physics_state(gcm.model.run_state.dynamics)

    # the free run's side, from the model's own state (x above) and the module
    with torch.no_grad():
        y = module(torch.from_numpy(x)).numpy().astype(np.float64)
    parts = [y[:, i * nlev:(i + 1) * nlev].T.reshape(grid.shape) for i in range(2)]
    kept = np.ones((nlat, nlon), bool)

    def rollout(**form):
        roll = Rollouts(gcm, None, mean, ("du", "dv"), columns, consts, act, 1, loss_scale=scales, **form)
        return [from_jcm(c) for c in roll._correction(params, physics, cosz)]

    want = [m + zonal_departure(np.where(on[:, None, None], p, 0.0), kept) for m, p in zip(mean, parts)]
    for got, w, m in zip(rollout(eddy_only=True, levels_on=on), want, mean):
        np.testing.assert_allclose(got, w, rtol=1e-4, atol=1e-4 * np.abs(w - m).max())
        np.testing.assert_allclose(got[~on], m[~on], rtol=0, atol=1e-6)  # above top_hpa: the mean
        # no zonal mean, to the float32 rounding of rows whose parts reach a few units
        assert np.abs((got - m).astype(np.float64).mean(axis=-1)).max() < 1e-4 * np.abs(got - m).max()
    plain = rollout()  # the form is what changed it
    for got, p, m in zip(plain, parts, mean):
        np.testing.assert_allclose(got, m + p, rtol=1e-4, atol=1e-4 * np.abs(p).max())
        assert np.abs((got - m)[~on]).max() > 0.1 * np.abs(p).max()

    # a mean-residual run in that form (nudgeml rollout-loss --run): MLCorrector's steps one by one,
    # model part + (mean - the model's training mean), the mean above top_hpa, the zonal mean removed
    model_mean = [(0.5 * rng.normal(size=grid.shape)).astype(np.float32) for _ in range(2)]
    residual = rollout(eddy_only=True, levels_on=on, offset=[-a for a in model_mean])
    for got, p, m, mm in zip(residual, parts, mean, model_mean):
        f = np.where(on[:, None, None], p + (m - mm), m)
        w = m + zonal_departure(f - m, kept)
        # float32 rounding of the rows' sums, before their zonal mean is taken off
        np.testing.assert_allclose(got, w, rtol=1e-4, atol=1e-4 * np.abs(f - m).max())
    assert max(np.abs(r - w).max() for r, w in zip(residual, want)) > 0.1 * max(np.abs(w - m).max() for w, m in zip(want, mean))
    # a plain ml run: the model alone
    for got, p in zip(rollout(offset=[-m for m in mean]), parts):
        np.testing.assert_allclose(got, p, rtol=1e-4, atol=1e-4 * np.abs(p).max())


def test_scored_forms_are_what_the_free_runs_apply():
    """``nudgeml rollout-loss``: a free run's correction is rolled out as the run applies it, a model
    trained online in a form is scored in that form only, and a run the rollout cannot apply is refused
    by name (not scored as another correction)."""
    from nudgeml.online import ScoredForm, model_form, run_form

    cfg = {"models": {"mlp": {"kind": "mlp"}, "form": {"kind": "mlp", "online": {"init": "mlp", "eddy_only": True, "top_hpa": 150}}},
           "free_runs": {"runs": {
               "mean": {"correction": "mean", "members": 3},
               "mr": {"correction": "ml", "model": "mlp", "backend": "aoti", "mean_residual": True, "eddy_only": True, "top_hpa": 150, "scale": 1.0},
               "plain": {"correction": "ml", "model": "mlp"},
               "online": {"correction": "ml", "model": "form", "add_mean": True, "eddy_only": True, "top_hpa": 150, "ensemble": "x"},
               "control": {"correction": "none"},
               "monthly": {"correction": "mean", "climatology": "monthly"},
               "rot": {"correction": "ml", "model": "mlp", "mean_residual": True, "rotational_only": True, "scale": 0.5},
           }}}
    assert run_form(cfg, "mean") == ScoredForm("mean", "-", "mean")
    assert run_form(cfg, "mr") == ScoredForm("mr", "mlp", "residual", eddy_only=True, top_hpa=150.0)
    assert run_form(cfg, "plain") == ScoredForm("plain", "mlp", "plain")
    assert run_form(cfg, "online") == ScoredForm("online", "form", "add", eddy_only=True, top_hpa=150.0)
    assert model_form(cfg, "form", "add") == ScoredForm("form:add", "form", "add", eddy_only=True, top_hpa=150.0)
    assert model_form(cfg, "mlp", "residual") == ScoredForm("mlp:residual", "mlp", "residual")
    assert model_form(cfg, "mean", "mean") == ScoredForm("mean", "-", "mean")
    with pytest.raises(InputError, match=re.escape("score it as form:add")):
        model_form(cfg, "form", "residual")
    with pytest.raises(InputError, match="form 'plain' of model 'form': it is trained online as a departure"):
        model_form(cfg, "form", "plain")
    with pytest.raises(InputError, match="form 'bogus' of model 'mlp'"):
        model_form(cfg, "mlp", "bogus")
    for run, what in (("control", "correction: none"), ("monthly", "climatology: monthly"), ("rot", "['rotational_only', 'scale']")):
        with pytest.raises(InputError, match=re.escape(f"'free_runs.runs.{run}'") + ".*" + re.escape(what)):
            run_form(cfg, run)
    with pytest.raises(InputError, match="free run 'nope': not in free_runs.runs"):
        run_form(cfg, "nope")


def test_rollout_loss_names_what_is_wrong(tmp_path, capsys):
    from nudgeml.cli import main

    overlay = tmp_path / "o.yaml"
    overlay.write_text("{}\n")
    args = ["rollout-loss", str(tmp_path), "--configfile", str(overlay), "--model"]
    assert main([*args, "mlp:bogus"]) == 2
    assert "form 'bogus' of model 'mlp'" in capsys.readouterr().err
    assert main([*args, "mlp"]) == 2
    assert "form '' of model 'mlp'" in capsys.readouterr().err
    assert main([*args, "mean"]) == 2
    assert "needs one model" in capsys.readouterr().err
    assert main([*args, "mean", "mlp:residual"]) == 2
    assert f"{tmp_path / 'grid/model_grid.nc'}: not found" in capsys.readouterr().err
    assert main([*args[:-1], "--run", "bogus"]) == 2
    assert "free run 'bogus': not in free_runs.runs" in capsys.readouterr().err
    assert main(args[:-1]) == 2
    assert "name what to score" in capsys.readouterr().err
    # a results folder whose store's validation blocks hold 11 windows (2000-01-24T00 .. 01-26T18)
    import zarr

    from nudgeml.shard import FORMAT

    for need in ("grid/model_grid.nc", "mean_tendency.nc"):
        (tmp_path / need).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / need).touch()
    (tmp_path / "forcing").mkdir()
    store = tmp_path / "datasets/nudging/dataset.zarr"
    blocks = [["2000-01-24T00:00:00", "2000-01-26T18:00:00"], ["2000-02-23T00:00:00", "2000-02-25T18:00:00"]]
    zarr.open_group(str(store), mode="w").attrs.update(format=FORMAT, splits={"val": {"start": blocks[0][0], "end": blocks[1][1], "blocks": blocks},
                                                                                "test": {}})
    assert main([*args, "mean", "mlp:residual", "--windows", "12"]) == 2
    assert "--windows 12: no 12-window rollout fits in a block of the 'val' split" in (err := capsys.readouterr().err) and "the longest holds 11" in err
    assert main([*args, "mean", "mlp:residual", "--split", "test"]) == 2
    assert f"{store}: the 'test' split is empty" in capsys.readouterr().err
    assert main([*args, "mean", "mlp:residual", "--starts", "0"]) == 2
    assert "--starts 0: at least one rollout start" in capsys.readouterr().err


def test_online_overlay_is_valid():
    from nudgeml.config import deep_merge

    overlay: dict = {}
    for name in ("science", "calibrate-science", "online-science"):
        overlay = deep_merge(overlay, yaml.safe_load(open(f"config/{name}.yaml")))
    cfg = load_config("config/config.yaml", overlay)
    runs, models = cfg["free_runs"]["runs"], cfg["models"]
    assert runs["ml-mlp-online"]["add_mean"] and runs["ml-mlp-online-mr"]["mean_residual"]
    assert all(runs[k]["members"] >= 3 for k in ("ml-mlp-online", "ml-mlp-online-4d", "ml-mlp-online-mr"))
    assert models["mlp-online"]["online"]["init"] == "mlp" and models["mlp-online-4d"]["online"]["windows"] == 16
    assert runs["control"]["members"] >= 5 and runs["mean"]["members"] >= 3

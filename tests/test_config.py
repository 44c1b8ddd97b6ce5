import copy

import pytest
import yaml

from nudgeml.checks import load_config, validate
from nudgeml.config import analysis_times, months_between
from nudgeml.errors import ConfigError


@pytest.fixture()
def cfg(repo_root):
    return yaml.safe_load((repo_root / "config" / "config.yaml").read_text())


def test_default_config_is_valid(cfg):
    validate(cfg)


@pytest.mark.parametrize(
    "path, value, named",
    [
        (("nudging", "tau_hourz"), 6.0, "'tau_hourz' was unexpected"),
        (("regrid", "method"), "nearest", "config key 'regrid.method'"),
        (("model", "truncation"), "21", "config key 'model.truncation'"),
        (("outdirr",), "x", "'outdirr' was unexpected"),
    ],
)
def test_bad_keys_are_named(cfg, path, value, named):
    bad = copy.deepcopy(cfg)
    node = bad
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    with pytest.raises(ConfigError) as err:
        validate(bad)
    assert named in str(err.value)


def test_unknown_physics_parameter_is_named(cfg):
    from nudgeml.gcm.standin import build_parameters

    with pytest.raises(KeyError, match="convection.trcnvv"):
        build_parameters({"convection.trcnvv": 1.0})
    with pytest.raises(KeyError, match="radiation.x"):
        build_parameters({"radiation.x": 1.0})


def test_consistency_rules(cfg):
    bad = copy.deepcopy(cfg)
    bad["period"]["end"] = bad["period"]["start"]
    with pytest.raises(ConfigError, match="period.end"):
        validate(bad)
    bad = copy.deepcopy(cfg)
    bad["period"]["start"] = "2000-01-31T03:00"
    with pytest.raises(ConfigError, match="6-hourly"):
        validate(bad)
    bad = copy.deepcopy(cfg)
    bad["free_runs"]["end"] = "2001-01-01T00:00"
    with pytest.raises(ConfigError, match="free_runs"):
        validate(bad)
    bad = copy.deepcopy(cfg)  # the default's ML run reads model.pt2, which only export.aoti writes
    assert bad["free_runs"]["runs"]["ml-mlp"]["backend"] == "aoti"
    bad["export"]["aoti"] = False
    with pytest.raises(ConfigError, match=r"'free_runs\.runs\.ml-mlp\.backend' is 'aoti', but 'export\.aoti' is false"):
        validate(bad)
    bad["free_runs"]["runs"]["ml-mlp"]["backend"] = "torchscript"
    with pytest.raises(ConfigError, match=r"'free_runs\.runs\.ml-mlp-mr-eddy-top\.backend' is 'aoti'"):  # each run is checked
        validate(bad)
    bad["free_runs"]["runs"]["ml-mlp-mr-eddy-top"]["backend"] = "torchscript"
    validate(bad)


def test_overrides_are_validated(repo_root):
    with pytest.raises(ConfigError, match="nudging"):
        load_config(repo_root / "config" / "config.yaml", {"nudging": {"tau": 1}})


def test_times_and_months():
    t = analysis_times("2000-01-31T00:00", "2000-02-01T00:00")
    assert len(t) == 5 and str(t[-1]) == "2000-02-01T00:00:00"
    assert months_between("2000-01-31T00:00", "2000-03-01T00:00") == ["2000-01", "2000-02", "2000-03"]


def test_paths_expand_environment_variables(monkeypatch):
    from nudgeml.config import expand_path

    monkeypatch.setenv("SCRATCH", "/scratch/abc")
    monkeypatch.delenv("NUDGEML_UNSET_VAR", raising=False)
    assert expand_path("$SCRATCH/nudgeml/results", "outdir") == "/scratch/abc/nudgeml/results"
    assert expand_path("results", "outdir") == "results"
    with pytest.raises(ConfigError, match=r"config key 'era5.dir' .*NUDGEML_UNSET_VAR not set"):
        expand_path("${NUDGEML_UNSET_VAR}/era5", "era5.dir")


def test_jeanzay_overlay_is_valid(repo_root):
    from nudgeml.config import read_config

    overlay = yaml.safe_load((repo_root / "config" / "jeanzay.yaml").read_text())
    cfg = read_config(repo_root / "config" / "config.yaml", overlay)  # merged, its `name: null` runs dropped
    validate(cfg)
    assert cfg["era5"]["source"] == "cds" and cfg["outdir"].startswith("$SCRATCH") and cfg["era5"]["dir"].startswith("$WORK")


def test_cnn_model_settings_are_validated(cfg):
    good = copy.deepcopy(cfg)
    good["models"]["cnn"] = {"kind": "cnn", "target": "replay", "channels": 16, "depth": 2, "kernel_size": 3, "max_fields_per_epoch": 800}
    validate(good)
    for section, named in (({"kind": "cnn", "chanels": 8}, r"config key 'models\.cnn'.*'chanels' was unexpected"),
                           ({"kind": "cnn", "kernel_size": 4}, r"config key 'models\.cnn\.kernel_size'"),
                           ({"kind": "cnn", "hidden": [64]}, r"'hidden' was unexpected")):
        bad = copy.deepcopy(cfg)
        bad["models"]["cnn"] = section
        with pytest.raises(ConfigError, match=named):
            validate(bad)


@pytest.mark.parametrize("overlay", ["gap-physics.yaml", "gap-resolution.yaml"])
def test_gap_overlays_switch_runs_off_after_the_science_config(repo_root, overlay):
    from nudgeml.config import deep_merge, drop_switched_off
    from nudgeml.naming import run_names

    def read(name):
        return yaml.safe_load((repo_root / "config" / name).read_text())

    cfg = deep_merge(deep_merge(read("config.yaml"), read("science.yaml")), read(overlay))
    switched_off = {name for name, spec in read(overlay)["free_runs"]["runs"].items() if spec is None}
    assert switched_off and switched_off <= set(read("science.yaml")["free_runs"]["runs"])
    drop_switched_off(cfg)
    validate(cfg)
    assert not switched_off & set(cfg["free_runs"]["runs"])
    assert {"control", "control.m1", "control.m2", "mean", "ml-mlp", "ml-replay"} <= set(run_names(cfg["free_runs"]["runs"]))
    # a run switched on whose model is switched off is named, not silently dropped
    cfg["models"]["mlp-replay"] = None
    drop_switched_off(cfg)
    with pytest.raises(ConfigError, match=r"free_runs\.runs\.ml-replay\.model"):
        validate(cfg)


def test_numbers_given_as_strings_are_coerced_where_the_schema_says_number(cfg):
    """What Snakemake passes for --config 'model={physics: {convection.trcnv: 9.0}}' and
    'nudging={tau_hours: -1}': strings. Coerced, the schema then sees the number (and names the sign)."""
    from nudgeml.config import coerce_numbers, validate_config

    c = copy.deepcopy(cfg)
    c["model"]["physics"]["convection.trcnv"] = "9.0"
    c["nudging"]["tau_hours"] = "-1"
    c["free_runs"]["start"] = "2000-03-04T00:00"  # a string where the schema wants a string: kept
    c["dataset"]["seed"] = "not a number"  # left for the schema to name
    changed = coerce_numbers(c)
    assert sorted(changed) == ["model.physics.convection.trcnv", "nudging.tau_hours"]
    assert c["model"]["physics"]["convection.trcnv"] == 9.0 and c["nudging"]["tau_hours"] == -1
    with pytest.raises(ConfigError, match=r"'dataset\.seed': 'not a number' is not of type 'integer'"):
        validate_config(c)
    c["dataset"]["seed"] = 0
    with pytest.raises(ConfigError, match=r"'nudging\.tau_hours': -1 is less than or equal to the minimum of 0"):
        validate_config(c)


@pytest.mark.parametrize(
    "section, key, value, message",
    [
        ("period", "start", "2000-13-01T00:00", r"config key 'period\.start': '2000-13-01T00:00' is not a valid date-time"),
        ("free_runs", "end", "2000-03-01T00:00", r"config key 'free_runs\.end' \(2000-03-01T00:00:00\) must be after 'free_runs\.start'"),
    ],
)
def test_bad_dates_name_their_key(cfg, section, key, value, message):
    c = copy.deepcopy(cfg)
    c[section][key] = value
    with pytest.raises(ConfigError, match=message):
        validate(c)


def test_null_given_as_a_string_switches_a_run_off(cfg):
    """--config 'free_runs={runs: {mean: null}}' arrives as the string 'null'."""
    from nudgeml.config import coerce_numbers, drop_switched_off

    c = copy.deepcopy(cfg)
    c["free_runs"]["runs"]["mean"] = "null"
    assert coerce_numbers(c) == ["free_runs.runs.mean"]
    drop_switched_off(c)
    assert "mean" not in c["free_runs"]["runs"]
    validate(c)


def test_tq_overlay_and_what_free_runs_may_correct(repo_root, cfg):
    """config/tq.yaml validates; a mean run's T / q needs their nudging, variables and ML targets are
    du, dv then dt / dq: each bad combination is one error naming the key, before any run."""
    from nudgeml.config import deep_merge, drop_switched_off

    tq = deep_merge(copy.deepcopy(cfg), yaml.safe_load((repo_root / "config" / "tq.yaml").read_text()))
    drop_switched_off(tq)
    validate(tq)
    assert tq["free_runs"]["runs"]["mean-uv"]["variables"] == ["du", "dv"] and "mean-monthly" not in tq["free_runs"]["runs"]
    cases = [
        (lambda c: c["nudging"].update(t=None), r"'columns.targets' has 'dt', which needs 'nudging.t'"),
        (lambda c: (c["columns"].update(targets=["du", "dv"]), c["nudging"].update(t=None), c["free_runs"]["runs"]["mean-uv"].update(variables=["du", "dv", "dt"])),
         r"'free_runs.runs.mean-uv.variables' has 'dt', which needs 'nudging.t'"),
        (lambda c: c["free_runs"]["runs"]["mean-uv"].update(variables=["du", "dv", "dq", "dt"]), r"'free_runs.runs.mean-uv.variables'.*not du, dv optionally followed"),
        (lambda c: c["free_runs"]["runs"]["ml-mlp"].update(variables=["du", "dv"]), r"'free_runs.runs.ml-mlp.variables': only a mean correction"),
        (lambda c: c["columns"].update(targets=["dt", "du", "dv"]), r"'columns.targets'.*not du, dv optionally followed.*free run 'ml-mlp'"),
        (lambda c: c["free_runs"]["runs"]["mean-uv"].update(variables=["du"]), r"free_runs.runs.mean-uv.variables"),
        # top_hpa keeps the model's part about the mean: an ml run with the mean residual or add_mean only
        (lambda c: c["free_runs"]["runs"]["ml-mlp"].update(top_hpa=150), r"'free_runs.runs.ml-mlp.top_hpa'.*mean_residual or add_mean"),
        (lambda c: c["free_runs"]["runs"]["mean-uv"].update(top_hpa=150), r"'free_runs.runs.mean-uv.top_hpa'.*correction ml"),
        (lambda c: c["free_runs"]["runs"]["ml-mlp"].update(mean_residual=True, top_hpa=0), r"top_hpa"),
        # bottom_hpa likewise, and a band whose bottom is above its top is refused naming both
        (lambda c: c["free_runs"]["runs"]["ml-mlp"].update(bottom_hpa=700), r"'free_runs.runs.ml-mlp.bottom_hpa'.*mean_residual or add_mean"),
        (lambda c: c["free_runs"]["runs"]["ml-mlp"].update(mean_residual=True, top_hpa=700, bottom_hpa=150),
         r"'free_runs.runs.ml-mlp.bottom_hpa' is 150, above its top_hpa 700"),
        # model_targets keeps the model's part on some targets, the mean on the others: a model the run applies
        (lambda c: c["free_runs"]["runs"]["ml-mlp"].update(model_targets=["dt", "dq"]), r"'free_runs.runs.ml-mlp.model_targets'.*mean_residual or add_mean"),
        (lambda c: (c["columns"].update(targets=["du", "dv", "dt"]), c["free_runs"]["runs"]["ml-mlp"].update(mean_residual=True, model_targets=["dt", "dq"])),
         r"'free_runs.runs.ml-mlp.model_targets' names \['dq'\], which the model does not predict"),
        (lambda c: c["free_runs"]["runs"]["ml-mlp"].update(mean_residual=True, model_targets=[]), r"model_targets"),
        # rotational_only filters a model part: ml runs only
        (lambda c: c["free_runs"]["runs"]["mean-uv"].update(rotational_only=True), r"'free_runs.runs.mean-uv.rotational_only': only an ml"),
    ]
    for change, named in cases:
        bad = copy.deepcopy(tq)
        change(bad)
        with pytest.raises(ConfigError, match=named):
            validate(bad)
    ok = copy.deepcopy(tq)
    ok["free_runs"]["runs"]["ml-mlp"].update(mean_residual=True, top_hpa=150)
    validate(ok)
    ok["free_runs"]["runs"]["ml-mlp"].update(bottom_hpa=700, rotational_only=True)
    validate(ok)
    ok["free_runs"]["runs"]["ml-mlp"].update(model_targets=["dt", "dq"])
    validate(ok)


@pytest.mark.parametrize(
    "chain",
    [
        ["science.yaml", "calibrate-science.yaml", "online-science.yaml", "eddy-science.yaml", "top-science.yaml"],
        ["science.yaml", "spunup-science.yaml", "precip-science.yaml"],
        ["science.yaml", "spunup-science.yaml", "cnn-science.yaml"],
        ["science.yaml", "spunup-science.yaml", "tq-science.yaml"],
        ["science.yaml", "spunup-science.yaml", "tq-science.yaml", "tq-neutral-science.yaml"],
        ["science.yaml", "spunup-science.yaml", "spunup-gap-physics.yaml"],
        ["science.yaml", "spunup-science.yaml", "spunup-gap-resolution.yaml"],
        ["science.yaml", "spunup-science.yaml", "tau-science.yaml"],
        ["science.yaml", "spunup-science.yaml", "forecast-science.yaml"],
        ["science.yaml", "spunup-science.yaml", "online-spunup-science.yaml"],
        ["science.yaml", "spunup-science.yaml", "online-form-spunup-science.yaml"],
        ["science.yaml", "spunup-science.yaml", "online-form-spunup-science.yaml", "online-timemean-spunup-science.yaml"],
        ["science.yaml", "spunup-science.yaml", "online-form-spunup-science.yaml", "online-timemean-spunup-science.yaml",
         "online-curriculum-spunup-science.yaml"],
        ["science.yaml", "spunup-science.yaml", "online-form-spunup-science.yaml", "online-timemean-spunup-science.yaml",
         "online-curriculum-spunup-science.yaml", "feedback-spunup-science.yaml"],
        ["science.yaml", "spunup-science.yaml", "online-form-spunup-science.yaml", "online-timemean-spunup-science.yaml",
         "online-curriculum-spunup-science.yaml", "feedback-spunup-science.yaml", "feedback-eddy-spunup-science.yaml"],
        ["science.yaml", "spunup-science.yaml", "online-form-spunup-science.yaml", "online-timemean-spunup-science.yaml",
         "online-curriculum-spunup-science.yaml", "feedback-spunup-science.yaml", "feedback-eddy2-spunup-science.yaml"],
        ["science.yaml", "spunup-science.yaml", "online-form-spunup-science.yaml", "online-timemean-spunup-science.yaml",
         "online-curriculum-spunup-science.yaml", "feedback-spunup-science.yaml", "feedback-zonal2-spunup-science.yaml"],
        ["science.yaml", "spunup-science.yaml", "feedback-method-spunup-science.yaml"],
    ],
)
def test_science_overlay_chains_are_valid(repo_root, chain):
    """The overlays docs/science.md runs, in the order config/README.md gives: each chain validates, and
    every run it adds or keeps names a model the chain trains."""
    from nudgeml.config import deep_merge, drop_switched_off

    cfg = yaml.safe_load((repo_root / "config" / "config.yaml").read_text())
    for name in chain:
        cfg = deep_merge(cfg, yaml.safe_load((repo_root / "config" / name).read_text()))
    drop_switched_off(cfg)
    validate(cfg)
    for name, spec in cfg["free_runs"]["runs"].items():
        if spec["correction"] == "ml":
            assert spec["model"] in cfg["models"], name

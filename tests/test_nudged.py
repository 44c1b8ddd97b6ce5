"""The nudged run's configuration of temperature and humidity nudging, checked before any run."""

import copy

import numpy as np
import pytest
import xarray as xr
import yaml

from nudgeml.checks import validate
from nudgeml.errors import ConfigError, InputError
from nudgeml.nudged import check_thermo_analysis, run_nudged, thermo_nudging


@pytest.fixture()
def cfg(repo_root):
    return yaml.safe_load((repo_root / "config" / "config.yaml").read_text())


def test_thermo_nudging_keys_are_optional_and_validated(cfg):
    assert thermo_nudging(cfg["nudging"]) == {}, "today's configs nudge the winds only"
    on = copy.deepcopy(cfg)
    on["nudging"].update(t={"tau_hours": 12.0}, q=None)
    validate(on)
    assert thermo_nudging(on["nudging"]) == {"t": 12.0}
    bad = copy.deepcopy(cfg)
    bad["nudging"]["q"] = {"tau_hours": -1.0}
    with pytest.raises(ConfigError, match="nudging.q"):
        validate(bad)
    bad["nudging"]["q"] = {"tau_hour": 6.0}
    with pytest.raises(ConfigError, match="tau_hour"):
        validate(bad)


def forcing_without(path, drop):
    """A regridded-analysis-like month lacking ``drop``."""
    times = np.array(["2000-01-31T00:00", "2000-01-31T06:00"], dtype="datetime64[ns]")
    shape = (2, 3, 4, 8)
    dims = ("time", "lev", "lat", "lon")
    data = {n: (dims, np.ones(shape, np.float32)) for n in ("u", "v", "t", "q") if n != drop}
    data["ps"] = (("time", "lat", "lon"), np.full((2, 4, 8), 1e5, np.float32))
    xr.Dataset(data, coords={"time": times}).to_netcdf(path)
    return path


def test_thermo_nudging_without_its_analysis_variable_is_one_clear_error_before_any_run(cfg, tmp_path, monkeypatch):
    path = forcing_without(tmp_path / "2000-01.nc", "q")
    check_thermo_analysis({"t": 12.0}, [path])  # T is there
    with pytest.raises(InputError, match=r"nudging\.q: .*'q'.*2000-01\.nc"):
        check_thermo_analysis({"t": 12.0, "q": 12.0}, [path])
    # and run_nudged asks before it builds the model (which would compile for minutes)
    import nudgeml.nudged as nudged

    def no_model(*args, **kwargs):
        raise AssertionError("the model was built before the input check")

    monkeypatch.setattr(nudged, "model_gcm", no_model)
    monkeypatch.setattr(nudged, "open_forcing", no_model)
    cfg["nudging"]["q"] = {"tau_hours": 6.0}
    with pytest.raises(InputError, match=r"nudging\.q"):
        run_nudged(cfg, tmp_path / "grid.nc", [path], tmp_path / "histhf.nc", tmp_path / "guide_ins.nc")
    assert not (tmp_path / "guide_ins.nc").exists() and not (tmp_path / "histhf.nc").exists()


def test_temperature_target_needs_temperature_nudging(cfg):
    bad = copy.deepcopy(cfg)
    bad["columns"]["targets"] = ["du", "dv", "dt"]
    with pytest.raises(ConfigError, match=r"'dt', which needs 'nudging.t'"):
        validate(bad)
    bad["nudging"]["t"] = {"tau_hours": 12.0}
    validate(bad)


PRECOMPILE_STEP = """
import json, sys
import yaml
from pathlib import Path
from nudgeml import nudged, coupled
cfg = yaml.safe_load(Path(sys.argv[1]).read_text())
root = Path(sys.argv[3])
if sys.argv[2] == "precompile":
    print(json.dumps(nudged.precompile(cfg, root / "grid.nc")))
elif sys.argv[2] == "nudged":
    nudged.run_nudged(cfg, root / "grid.nc", [root / "forcing.nc"], root / "histhf.nc", root / "guide_ins.nc")
else:
    coupled.run_free(cfg, "control", root / "grid.nc", [root / "forcing.nc"], root / "free.nc", root / "status.json")
"""


def test_precompile_leaves_the_nudged_and_free_runs_nothing_to_compile(cfg, tmp_path):
    """The precompile job fills the persistent XLA cache with every program the nudged run and a free run
    compile: run after it, in fresh processes (as Snakemake's jobs), they add no cache entry (every
    compilation is written to it, nudgeml.gcm.standin.enable_jax_compilation_cache)."""
    import subprocess
    import sys

    from factories import forced_truth

    at = np.datetime64("2000-01-31T00:00")
    forced_truth(tmp_path, at, 0.0, windows=4)
    cache = tmp_path / "jax"
    cfg.update(jax_cache_dir=str(cache), period={"start": "2000-01-31T00:00", "end": "2000-02-01T00:00"})
    cfg["free_runs"].update(start="2000-01-31T12:00", end="2000-02-01T00:00")  # later than the nudged run, as in the workflow
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))

    def step(which: str) -> set[str]:
        subprocess.run([sys.executable, "-c", PRECOMPILE_STEP, str(path), which, str(tmp_path)], check=True, capture_output=True, text=True)
        return {p.name for p in cache.iterdir()}

    compiled = step("precompile")
    assert compiled, "nothing reached the cache"
    assert step("nudged") == compiled, "the nudged run compiled a program the precompile job did not"
    assert step("free") == compiled, "the free run compiled a program the precompile job did not"

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

"""The GCM backends registry (nudgeml.gcm.registry): its configuration rules, the lmdz backend's job
(the job kit run by a fake LMDZ, its months joined for extract), the lmdze backend's one-line failure,
and the Jean Zay dry run with backend lmdz (no SLURM needed: Snakemake only renders the jobs)."""

from __future__ import annotations

import copy
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
import yaml

from factories import FirstFeature
from synthetic import lmdz_nudging_files
from nudgeml import lmdze_build
from nudgeml.checks import validate
from nudgeml.config import read_config
from nudgeml.conventions import read_guide, read_histhf
from nudgeml.errors import ConfigError, InputError, RunFailed
from nudgeml.gcm import runners
from nudgeml.gcm.registry import BACKENDS, backend_of, slurm_resources

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "profiles" / "jeanzay"
PROJECT = "nud"


@pytest.fixture()
def jz_env(tmp_path, monkeypatch) -> dict[str, str]:
    """The variables config/jeanzay.yaml reads, pointed into the sandbox."""
    env = {"NUDGEML_JZ_PROJECT": PROJECT, "WORK": str(tmp_path / "work"), "SCRATCH": str(tmp_path / "scratch")}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("NUDGEML_JZ_GPU", raising=False)
    return env


def jeanzay_config() -> dict:
    return read_config(REPO / "config" / "config.yaml", yaml.safe_load((REPO / "config" / "jeanzay.yaml").read_text()))


# ------------------------------------------------------------------------------------------------
# The registry and its configuration rules
# ------------------------------------------------------------------------------------------------


def test_registry_names_three_backends_and_their_runners():
    assert set(BACKENDS) == {"standin", "lmdz", "lmdze"}
    for b in BACKENDS.values():
        assert callable(b.runner("guided")) and callable(b.runner("free"))
        assert not b.precompile or callable(b.runner("precompile"))
    # only the stand-in compiles in its jobs' processes (JAX); LMDZ and LMDZE are built beforehand
    assert [b.name for b in BACKENDS.values() if b.precompile] == ["standin"]
    assert BACKENDS["lmdz"].mpi and not BACKENDS["standin"].mpi
    with pytest.raises(ConfigError, match="'backend' is 'speedy'"):
        backend_of({"backend": "speedy"})


def test_jeanzay_config_is_lmdz_and_valid(jz_env):
    config = jeanzay_config()
    validate(config)
    assert config["backend"] == "lmdz"
    # 40 tasks x 8 threads on 40-core nodes: 8 whole nodes, launched by the job's own srun
    assert slurm_resources(config) == {"tasks": 40, "cpus_per_task": 8, "nodes": 8, "mpi": "srun"}
    assert slurm_resources({**config, "backend": "standin"}) == {}


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c.pop("lmdz"), "'lmdz' is required by backend 'lmdz'"),
        (lambda c: c["free_runs"]["runs"]["control"].update(members=3), "'free_runs.runs.control.members' is 3"),
        (lambda c: c["lmdz"]["guided"].update(start="2011-01-01"), "'lmdz.guided' .* must be period's months"),
        (lambda c: c["lmdz"]["free"].update(end="2016-12-01"), "'lmdz.free' .* must be free_runs' months"),
        # the last guided month needs the next month's first record: period must end on it
        (lambda c: c["period"].update(end="2016-12-31T18:00"), "'period.end' .* next month's first record"),
        (lambda c: c["models"]["mlp"].update(target="replay"), "'models.mlp' trains on .* replay"),
        # forecast targets run from the job kit's spin-up run and array: they need its lmdz.forecast block
        (lambda c: c["models"]["mlp"].update(target="forecast"), "'models.mlp' trains on forecasts: backend 'lmdz' needs the 'lmdz.forecast' block"),
        # LMDZ's physics reads one annual mean tendency
        (lambda c: c["free_runs"]["runs"].update(mm={"correction": "mean", "climatology": "monthly"}), "'free_runs.runs.mm.climatology' is 'monthly'"),
        (lambda c: c["lmdz"].update(calendar="earth_365d"), "'lmdz.calendar' is 'earth_365d'.* use gregorian"),
        (lambda c: c["free_runs"]["runs"].update(cn={"correction": "mean", "variables": ["du", "dv"], "humidity_column_neutral": True}),
         "'free_runs.runs.cn.humidity_column_neutral': backend 'lmdz' applies du, dv only"),
        # the mean residual runs on LMDZ (the routine takes the model's mean); the calibration's members do not
        (lambda c: c["free_runs"]["runs"].update(eki={"correction": "ml", "model": "mlp", "mean_residual": True, "calibrated": True}),
         "'free_runs.runs.eki.calibrated': the calibration runs its members in the job's process, which backend 'lmdz' does not"),
    ],
)
def test_lmdz_configuration_errors_name_the_key(jz_env, edit, message):
    config = copy.deepcopy(jeanzay_config())
    edit(config)
    with pytest.raises(ConfigError, match=message):
        validate(config)


def test_lmdz_forecast_targets_are_valid_with_the_kits_block_and_refused_on_lmdze(jz_env):
    config = copy.deepcopy(jeanzay_config())
    config["models"]["mlp"]["target"] = "forecast"
    config["lmdz"]["forecast"] = {"start": config["lmdz"]["guided"]["start"], "end": config["lmdz"]["guided"]["end"]}
    validate(config)
    lmdze = copy.deepcopy(lmdze_config())
    lmdze["models"]["mlp"]["target"] = "forecast"
    with pytest.raises(ConfigError, match="'models.mlp' trains on forecasts, which backend 'lmdze' does not run"):
        validate(lmdze)


def test_lmdz_ml_run_may_use_the_aoti_artifact(jz_env):
    """LMDZ6's kit passes nudgeml_backend=aoti to the routine; only LMDZE's hook is TorchScript-only."""
    config = copy.deepcopy(jeanzay_config())
    ml = [n for n, s in config["free_runs"]["runs"].items() if s and s.get("correction") == "ml"]
    assert ml
    for name in ml:
        config["free_runs"]["runs"][name]["backend"] = "aoti"
    validate(config)


def test_lmdz_account_takes_the_profile_project(jz_env, monkeypatch):
    from nudgeml.lmdz import LmdzJobConfig

    block = jeanzay_config()["lmdz"]
    assert LmdzJobConfig.from_dict(block, tau_hours=6.0).slurm.account == f"{PROJECT}@cpu"
    monkeypatch.delenv("NUDGEML_JZ_PROJECT")
    with pytest.raises(ValueError, match="slurm.account' is '\\$NUDGEML_JZ_PROJECT@cpu' but the environment variable NUDGEML_JZ_PROJECT is not set"):
        LmdzJobConfig.from_dict(block, tau_hours=6.0)


# ------------------------------------------------------------------------------------------------
# lmdze: one clear line while the build is missing
# ------------------------------------------------------------------------------------------------


def lmdze_config() -> dict:
    return read_config(REPO / "config" / "config.yaml", yaml.safe_load((REPO / "config" / "lmdze.yaml").read_text()))


def test_lmdze_config_is_valid():
    config = lmdze_config()
    validate(config)
    assert config["backend"] == "lmdze" and backend_of(config).lmdz_routine
    assert {n for n, s in config["free_runs"]["runs"].items() if s} == {"control", "mean", "ml-mlp", "ml-mlp-mr", "ml-mlp-mr-eddy-top"}
    assert config["free_runs"]["runs"]["ml-mlp-mr"]["mean_residual"]  # LMDZE's hook takes the model's mean
    # initial-condition ensembles (LMDZE's start perturbed), T nudged, the winds-only mean of LMDZ's routine
    assert config["free_runs"]["runs"]["control"]["members"] >= 5 and config["free_runs"]["runs"]["mean"]["members"] >= 3
    assert config["nudging"]["t"] and config["free_runs"]["runs"]["mean"]["variables"] == ["du", "dv"]
    # the stand-in's best method runs in LMDZ's routine too: eddies only (row sums), below 150 hPa (gains)
    assert config["free_runs"]["runs"]["ml-mlp-mr-eddy-top"]["eddy_only"] and config["free_runs"]["runs"]["ml-mlp-mr-eddy-top"]["top_hpa"] == 150


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        # LMDZ's physics routine (inside LMDZE): one annual mean, du/dv, the TorchScript model
        (lambda c: c["free_runs"]["runs"].update(mm={"correction": "mean", "climatology": "monthly"}), "'free_runs.runs.mm.climatology' is 'monthly'"),
        (lambda c: c["free_runs"]["runs"]["ml-mlp"].update(backend="aoti"), "'free_runs.runs.ml-mlp.backend' is 'aoti'.* use torchscript"),
        # T is nudged: the mean file holds dt, which LMDZ's routine would silently leave out
        (lambda c: c["free_runs"]["runs"]["mean"].pop("variables"), r"'free_runs.runs.mean.variables' is \['du', 'dv', 'dt'\].* set variables: \[du, dv\]"),
        (lambda c: c["columns"].update(targets=["du", "dv", "dt"]), r"'columns.targets' is \['du', 'dv', 'dt'\].* du, dv only"),
        (lambda c: c["models"]["mlp"].update(target="replay"), "'models.mlp' trains on .* replay"),
        (lambda c: c["free_runs"]["runs"]["ml-mlp"].update(mean_residual=True, calibrated=True), "'free_runs.runs.ml-mlp.calibrated': .* backend 'lmdze' does not"),
        # the routine applies the model's output unscaled and unfiltered: the stand-in's levers would be dropped
        (lambda c: c["free_runs"]["runs"]["ml-mlp"].update(scale=0.5), "'free_runs.runs.ml-mlp.scale' is 0.5: backend 'lmdze' applies the model's output unscaled"),
        (lambda c: c["free_runs"]["runs"]["ml-mlp-mr"].update(filter_truncation=6), "'free_runs.runs.ml-mlp-mr.filter_truncation' is 6"),
        (lambda c: c["free_runs"]["runs"]["ml-mlp-mr"].update(rotational_only=True), "'free_runs.runs.ml-mlp-mr.rotational_only' is True: backend 'lmdze'"),
    ],
)
def test_lmdze_configuration_errors_name_the_key(edit, message):
    config = copy.deepcopy(lmdze_config())
    edit(config)
    with pytest.raises(ConfigError, match=message):
        validate(config)


def test_lmdze_without_its_build_fails_in_one_line_naming_where_the_build_goes(tmp_path, monkeypatch):
    monkeypatch.setattr(lmdze_build, "DEFAULT_BUILD_DIR", tmp_path / "build" / "lmdze")
    for which, args in (("guided", ({}, {}, {})), ("free", ({}, "control", {}, {}))):
        with pytest.raises(RunFailed) as err:
            BACKENDS["lmdze"].runner(which)(*args)
        msg = str(err.value)
        assert "\n" not in msg and "LMDZE build is missing" in msg and "scripts/build_lmdze.sh" in msg
        assert str(tmp_path / "build" / "lmdze" / "work" / "LMDZE" / "dyn3d" / "gcm") in msg
    # the grid job runs only ce0l (LMDZE's start files at period.start): it names ce0l, writes nothing
    out = tmp_path / "grid"
    out.mkdir()
    with pytest.raises(RunFailed, match=r"LMDZE build is missing: no .*/work/LMDZE/dynphy_lonlat/ce0l \(scripts/build_lmdze.sh") as err:
        BACKENDS["lmdze"].runner("grid")({"period": {"start": "2000-01-31T00:00"}, "run_dir": str(tmp_path / "run")}, {},
                                         out / "model_grid.nc", out / "model_grid.txt")
    assert "\n" not in str(err.value) and not list(out.iterdir()) and not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------------
# lmdz: the rule's job runs the kit's script (fake LMDZ and srun), joins the months for extract
# ------------------------------------------------------------------------------------------------

FAKE_GCM = """#!/bin/bash
# Fake LMDZ: checks the run directory as gcm.e would, writes the month's history (and guide_ins.nc
# when nudging) from $FAKE_HIST/<anneeref><month> and the restart files.
set -eu
for f in start.nc startphy.nc limit.nc run.def gcm.def nudgeml.def; do [ -e "$f" ] || { echo "no $f"; exit 3; }; done
get() { sed -n "s/^$1=//p" run.def; }
day=$(get dayref); year=$(get anneeref)
month=$(date -d "$year-01-01 +$((day - 1)) days" +%m)
src="$FAKE_HIST/$year$month"
tag=$year$month
if [ "$(get nday)" = 1 ]; then  # a day of the forecast kit's spin-up run or a forecast: $FAKE_DAYS/<YYYYMMDD>
  tag=$(date -d "$year-01-01 +$((day - 1)) days" +%Y%m%d)
  src="$FAKE_DAYS/$tag"
  echo "day $tag from $(cat start.nc) tau=$(sed -n 's/^tau_min_u=//p' guide.def) records=$(cdo -s ntime u.nc)" >> "$FAKE_LOG"
else
  echo "$(grep '^nudgeml_mode' nudgeml.def) $year$month from $(cat start.nc)" >> "$FAKE_LOG"
fi
cp "$src/histhf.nc" histhf.nc
if grep -q '^INCLUDEDEF=guide.def' run.def; then
  [ -e u.nc ] && [ -e v.nc ] || { echo "no nudging files"; exit 4; }
  cp "$src/guide_ins.nc" guide_ins.nc
fi
echo "end of $tag" > restart.nc
cp restart.nc restartphy.nc
"""


#: the fake LMDZ's grid: iim x jjm, llm levels (the lmdz block's grid in lmdz_world)
IIM, JJM, LLM = 8, 4, 3


def _month_files(root: Path, tag: str, day0: int, guide_shift: int = 0) -> None:
    """Eight 6-hourly records of month ``tag`` (from ``day0`` days after 2000-01-01) as LMDZ writes
    them: ``histhf.nc`` on the physics grid (``iim`` longitudes from -180, ``jjm + 1`` latitudes north
    first with the poles, ``presnivs`` in Pa; IOIPSL's ``time_counter`` in seconds since the month's
    start) and ``guide_ins.nc`` as ``guide_out`` writes it: the staggered dynamics grid, ``TIME`` a
    dimension without values, ``SP`` on the levels, scalars on ``(LATU, LONV)``, ``cu`` = 0 and u = 0 on
    the pole rows. The guide's model wind ``u`` is the history's ``vitu`` of the same record
    (``guide_shift`` records later: guide and history written at different instants)."""
    from nudgeml.lmdz_forcing import lmdz_points

    (root / tag).mkdir(parents=True)
    nt = 8
    t0 = np.datetime64("2000-01-01T00:00", "s") + np.timedelta64(day0, "D")
    lon_s, lat_s = lmdz_points(IIM, JJM, "scalar")
    lon_u, _ = lmdz_points(IIM, JJM, "u")
    _, lat_v = lmdz_points(IIM, JJM, "v")
    presnivs = np.array([95000.0, 50000.0, 10000.0])
    k = np.arange(nt)[:, None, None, None] + day0  # a value per record, different in each month
    field = (k + presnivs[None, :, None, None] / 1e5 + lat_s[None, None, :, None] / 90.0 + 0 * lon_s[None, None, None, :IIM]).astype(np.float32)
    hist = xr.Dataset(
        {"vitu": (("time_counter", "presnivs", "lat", "lon"), field), "vitv": (("time_counter", "presnivs", "lat", "lon"), -field),
         "temp": (("time_counter", "presnivs", "lat", "lon"), 250 + field), "ovap": (("time_counter", "presnivs", "lat", "lon"), 1e-3 + 0 * field),
         "psol": (("time_counter", "lat", "lon"), 1e5 + field[:, 0]), "precip": (("time_counter", "lat", "lon"), 0 * field[:, 0])},
        coords={"time_counter": ("time_counter", 21600.0 * np.arange(nt), {"units": f"seconds since {str(t0).replace('T', ' ')}", "calendar": "gregorian"}),
                "presnivs": ("presnivs", presnivs, {"units": "Pa"}), "lat": ("lat", lat_s), "lon": ("lon", lon_s[:IIM])},
    )
    hist.to_netcdf(root / tag / "histhf.nc")
    cu = 6.371e6 * np.cos(np.deg2rad(lat_s))[:, None] * 2 * np.pi / IIM * np.ones((1, IIM + 1))
    cu[[0, -1]] = 0.0
    cv = 6.371e6 * np.pi / JJM * np.ones((JJM, IIM + 1))
    du = 1e-5 * (k + 1.0) * np.ones((1, LLM, JJM + 1, IIM + 1))  # m s-2, uniform: destaggering keeps it
    du[:, :, [0, -1]] = 0.0
    dv = -1e-5 * (k + 1.0) * np.ones((1, LLM, JJM, IIM + 1))
    u4, v4, s4 = ("TIME", "LEVEL", "LATU", "LONU"), ("TIME", "LEVEL", "LATV", "LONV"), ("TIME", "LEVEL", "LATU", "LONV")
    u_model = (k + guide_shift + presnivs[None, :, None, None] / 1e5 + lat_s[None, None, :, None] / 90.0) * np.ones((1, 1, 1, IIM + 1))
    u_model[:, :, [0, -1]] = 0.0  # guide_out writes no u on the pole rows
    guide = xr.Dataset(
        {"ucov": (u4, (du * 86400 * cu).astype(np.float32)), "u": (u4, u_model), "ua": (u4, 0 * du),
         "vcov": (v4, (dv * 86400 * cv).astype(np.float32)), "v": (v4, 0 * dv), "va": (v4, 0 * dv),
         "SP": (s4, np.broadcast_to(presnivs[None, :, None, None], (nt, LLM, JJM + 1, IIM + 1)).astype(np.float32)),
         "cu": (("LATU", "LONU"), cu), "cv": (("LATV", "LONV"), cv)},
        coords={"LONU": lon_u, "LONV": lon_s, "LATU": lat_s, "LATV": lat_v, "LEVEL": presnivs},
    )
    guide.to_netcdf(root / tag / "guide_ins.nc")


def _forecast_day(out: Path, marker: float, increment: tuple[float, float] | None = None) -> None:
    """One LMDZ day's ``histhf.nc`` in ``out`` (records at 06, 12, 18 and 24 UTC of the day ``out`` is named after, vitu = ``marker`` + the
    record + the level's and latitude's values) and, with ``increment`` ``(du, dv)`` in m/s, a
    ``guide_ins.nc`` as a forecast's ``guide_out`` writes it: the model's winds (u = the history's vitu,
    record for record), the analysis ``ua = u + du (k + 1)``, ``va = v + dv (k + 1)`` at record k."""
    from nudgeml.lmdz_forcing import lmdz_points

    out.mkdir(parents=True)
    day = out.name
    t0 = np.datetime64(f"{day[:4]}-{day[4:6]}-{day[6:]}T00:00", "s")
    lon_s, lat_s = lmdz_points(IIM, JJM, "scalar")
    lon_u, _ = lmdz_points(IIM, JJM, "u")
    _, lat_v = lmdz_points(IIM, JJM, "v")
    presnivs = np.array([95000.0, 50000.0, 10000.0])
    k = np.arange(4)[:, None, None, None]
    field = (marker + k + presnivs[None, :, None, None] / 1e5 + lat_s[None, None, :, None] / 90.0 + 0 * lon_s[None, None, None, :IIM]).astype(np.float32)
    dims = ("time_counter", "presnivs", "lat", "lon")
    xr.Dataset(
        {"vitu": (dims, field), "vitv": (dims, -field), "temp": (dims, 250 + field), "ovap": (dims, 1e-3 + 0 * field),
         "psol": (dims[::2][:1] + dims[2:], 1e5 + field[:, 0]), "precip": (dims[::2][:1] + dims[2:], 0 * field[:, 0])},
        coords={"time_counter": ("time_counter", 21600.0 * np.arange(1, 5), {"units": f"seconds since {str(t0).replace('T', ' ')}", "calendar": "gregorian"}),
                "presnivs": ("presnivs", presnivs, {"units": "Pa"}), "lat": ("lat", lat_s), "lon": ("lon", lon_s[:IIM])},
    ).to_netcdf(out / "histhf.nc")
    if increment is None:
        return
    cu = 6.371e6 * np.cos(np.deg2rad(lat_s))[:, None] * 2 * np.pi / IIM * np.ones((1, IIM + 1))
    cu[[0, -1]] = 0.0
    cv = 6.371e6 * np.pi / JJM * np.ones((JJM, IIM + 1))
    u = (field[..., :1] * np.ones((1, 1, 1, IIM + 1))).astype(np.float64)
    u[:, :, [0, -1]] = 0.0  # guide_out writes no u on the pole rows
    ua = u + increment[0] * (k + 1.0)
    ua[:, :, [0, -1]] = 0.0
    v = np.zeros((4, LLM, JJM, IIM + 1))
    u4, v4 = ("TIME", "LEVEL", "LATU", "LONU"), ("TIME", "LEVEL", "LATV", "LONV")
    xr.Dataset(
        {"ucov": (u4, 0 * u), "u": (u4, u), "ua": (u4, ua), "vcov": (v4, v), "v": (v4, v), "va": (v4, v + increment[1] * (k + 1.0)),
         "cu": (("LATU", "LONU"), cu), "cv": (("LATV", "LONV"), cv)},
        coords={"LONU": lon_u, "LONV": lon_s, "LATU": lat_s, "LATV": lat_v, "LEVEL": presnivs},
    ).to_netcdf(out / "guide_ins.nc")


def test_lmdz_forecast_samples_join_into_states_and_forecast_error_targets(tmp_path):
    """The kit's samples (lmdz.forecast) joined for extract: the input is the spin-up run's state at the
    sample's 00 UTC, the target (analysis - forecast) / lead from the forecast's guide record at t + lead.
    Known answer: forecasts that fall 2.16 m/s behind the analysis in u (and 1.08 m/s ahead in v) per 6 h
    give 1e-4 and -5e-5 m s-2 at a 6-h lead, 2.16 x 2 / 12 h at a 12-h lead."""
    from nudgeml.cli import main

    root = tmp_path / "runs"
    for i, day in enumerate(("20000201", "20000202")):  # the spin-up run's days ending on the samples' 00 UTC
        _forecast_day(root / "spinup" / "output" / day, marker=10.0 * i)
    for day in ("20000202", "20000203"):
        _forecast_day(root / "forecast" / "output" / day, marker=100.0, increment=(2.16, -1.08))
        (root / "forecast" / "output" / day / ".done").touch()
    _forecast_day(root / "forecast" / "output" / "20000204", marker=100.0, increment=(2.16, -1.08))  # not done: left out
    assert main(["lmdz-forecast-join", str(root), str(tmp_path / "out"), "--lead-hours", "6"]) == 0
    hist, guide = read_histhf(tmp_path / "out" / "histhf.nc"), read_guide(tmp_path / "out" / "guide_ins.nc")
    np.testing.assert_array_equal(hist["time"].values, np.array(["2000-02-02T00:00", "2000-02-03T00:00"], "datetime64[ns]"))
    np.testing.assert_array_equal(guide["time"].values, hist["time"].values)
    # the state at 00 UTC: the last record (k = 3) of the day before, marker 0 then 10
    np.testing.assert_allclose(hist["u"].isel(lev=0).values.mean(axis=(1, 2)) - hist["u"].isel(lev=0, time=0).values.mean(), [0.0, 10.0], atol=1e-5)
    assert np.abs(hist["u"].isel(time=0).values - read_histhf(root / "spinup" / "output" / "20000201" / "histhf.nc")["u"].isel(time=3).values).max() == 0
    inner = slice(1, -1)  # the pole rows carry no u increment
    np.testing.assert_allclose(guide["du"].isel(lat=inner).values, 1e-4, rtol=1e-5)
    np.testing.assert_allclose(guide["dv"].values, -5e-5, rtol=1e-5)
    runners.join_forecasts(root, 12.0, tmp_path / "h12.nc", tmp_path / "g12.nc")
    np.testing.assert_allclose(read_guide(tmp_path / "g12.nc")["du"].isel(lat=inner).values, 2 * 2.16 / 43200, rtol=1e-5)
    # a missing spin-up day is named; a lead the forecast did not save is named
    (root / "spinup" / "output" / "20000202" / "histhf.nc").unlink()
    with pytest.raises(InputError, match=r"spinup/output/20000202/histhf.nc: the spin-up run's history of the day before sample 20000203"):
        runners.join_forecasts(root, 6.0, tmp_path / "h.nc", tmp_path / "g.nc")
    with pytest.raises(InputError, match=r"no record at 20000202 \+ 30 h"):
        runners.join_forecasts(root, 30.0, tmp_path / "h.nc", tmp_path / "g.nc")
    assert not (tmp_path / "h.nc").exists() and not (tmp_path / "g.nc").exists()


@pytest.fixture()
def lmdz_world(tmp_path, jz_env, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in {"gcm.e": FAKE_GCM, "srun": '#!/bin/bash\nexec "$@"\n', "module": "#!/bin/bash\nexit 0\n"}.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755 | stat.S_IXUSR)
    ref = tmp_path / "ref"
    ref.mkdir()
    for f in ("start.nc", "startphy.nc", "limit.nc", "gcm.def", "physiq.def", "config.def", "output.def"):
        (ref / f).write_text(f"# {f}\n")
    (ref / "gcm.def").write_text("# gcm.def\nday_step=480\niperiod=5\n")  # 480/4 = 120 steps, 24 Matsuno steps
    forcing = tmp_path / "forcing"
    forcing.mkdir()
    hist = tmp_path / "hist"
    lmdz_nudging_files(forcing, ["200001", "200002", "200003"])  # real netCDF: the forecast kit cuts days with cdo
    for i, tag in enumerate(("200001", "200002", "200003")):
        _month_files(hist, tag, (0, 31, 60)[i])
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "log"))
    monkeypatch.setenv("FAKE_HIST", str(hist))
    block = jeanzay_config()["lmdz"]
    block.update(executable=str(bin_dir / "gcm.e"), reference_dir=str(ref), run_root=str(tmp_path / "runs"), months_per_job=2,
                 grid={"iim": IIM, "jjm": JJM})
    block["nudging"]["forcing_dir"] = str(forcing)
    block["guided"] = {"start": "2000-01-01", "end": "2000-03-01"}
    block["free"] = {"start": "2000-02-01", "end": "2000-04-01", "runs": {"control": {"correction": "none"}}}
    return {"lmdz": block, "tau_hours": 6.0, "kit_dir": str(tmp_path / "kit")}


def test_lmdz_forecast_job_runs_the_kits_spinup_and_array_and_joins_the_samples(lmdz_world, tmp_path, monkeypatch):
    """backend lmdz, target forecast: the forecast rule's job runs the kit's spin-up run (from the guided
    run's state at the end of January) and its array's tasks, then joins the samples for extract."""
    days = tmp_path / "days"
    for d in range(1, 30):
        tag = f"200002{d:02d}"
        _forecast_day(days / tag, marker=float(d), increment=(2.16, 0.0))
    monkeypatch.setenv("FAKE_DAYS", str(days))
    lmdz_world["lmdz"]["forecast"] = {"start": "2000-02-01", "end": "2000-03-01", "every_days": 10, "samples_per_task": 2}
    BACKENDS["lmdz"].runner("guided")(lmdz_world, {}, {"histhf": tmp_path / "g" / "histhf.nc", "guide": tmp_path / "g" / "guide_ins.nc"})
    out = {k: tmp_path / "fc" / f for k, f in (("histhf", "histhf.nc"), ("guide", "guide_ins.nc"), ("diagnostics", "diagnostics.json"))}
    cfg = {**lmdz_world, "forecast": {"spinup_tau_hours": 1.0, "lead_hours": 6.0}}
    BACKENDS["lmdz"].runner("forecast")(cfg, {}, out)
    log = [ln for ln in (tmp_path / "log").read_text().splitlines() if ln.startswith("day ")]
    # samples on the 2nd, 12th and 22nd; the spin-up run's days are the 1st to the 21st, from the guided state
    spin = [ln for ln in log if "tau=0.0416667" in ln]
    assert len(spin) == 21 and spin[0] == "day 20000201 from end of 200001 tau=0.0416667 records=5"
    assert spin[1] == "day 20000202 from end of 20000201 tau=0.0416667 records=5"
    assert [ln for ln in log if "tau=1e+06" in ln] == [f"day 200002{d:02d} from end of 200002{d - 1:02d} tau=1e+06 records=5" for d in (2, 12, 22)]
    hist, guide = read_histhf(out["histhf"]), read_guide(out["guide"])
    np.testing.assert_array_equal(hist["time"].values, np.array(["2000-02-02", "2000-02-12", "2000-02-22"], "datetime64[ns]"))
    np.testing.assert_array_equal(guide["time"].values, hist["time"].values)
    np.testing.assert_allclose(guide["du"].isel(lat=slice(1, -1)).values, 1e-4, rtol=1e-5)
    diag = json.loads(out["diagnostics"].read_text())
    assert (diag["samples"], diag["first"], diag["cost"]["forecasts"]["array_tasks"]) == (3, "20000202", 2)


def test_lmdz_guided_job_runs_the_kit_and_joins_the_months_for_extract(lmdz_world, tmp_path):
    out = {"histhf": tmp_path / "out" / "histhf.nc", "guide": tmp_path / "out" / "guide_ins.nc"}
    BACKENDS["lmdz"].runner("guided")(lmdz_world, {}, out)
    log = (tmp_path / "log").read_text().splitlines()
    assert log == ["nudgeml_mode=0 200001 from # start.nc", "nudgeml_mode=0 200002 from end of 200001"]
    # the state the free runs start from (free_runs.start 2000-02) is kept
    assert (tmp_path / "runs" / "guided" / "output" / "200001" / "start.nc").read_text() == "end of 200001\n"
    hist = read_histhf(out["histhf"])
    guide = read_guide(out["guide"])
    assert hist.sizes["time"] == guide.sizes["time"] == 16  # two months of 8 windows, in order
    assert np.all(np.diff(hist["time"].values) > np.timedelta64(0))
    assert hist["time"].values[8] == np.datetime64("2000-02-01T00:00")
    # LMDZ's guide_ins has no TIME values: the joined file takes its months' history times
    np.testing.assert_array_equal(guide["time"].values, hist["time"].values)
    # the joined files carry each month's values unchanged
    first = read_guide(tmp_path / "hist" / "200002" / "guide_ins.nc")
    np.testing.assert_array_equal(guide["du"].values[8:], first["du"].values)
    # a rerun resumes: the months done are not run again
    BACKENDS["lmdz"].runner("guided")(lmdz_world, {}, out)
    assert len((tmp_path / "log").read_text().splitlines()) == 2


def lmdz_mean(tmp_path: Path) -> Path:
    """The workflow's mean tendency of the fake LMDZ's guided months (canonical, as mean_tendency writes it)."""
    from nudgeml.mean_tendency import mean_tendency, write_mean_tendency

    months = [tmp_path / "hist" / tag for tag in ("200001", "200002")]
    runners.join_months([m / "guide_ins.nc" for m in months], tmp_path / "g_all.nc", times_from=[m / "histhf.nc" for m in months])
    blocks = [(np.datetime64("2000-01-01T00:00", "s"), np.datetime64("2000-02-28T18:00", "s"))]
    return write_mean_tendency(mean_tendency(tmp_path / "g_all.nc", blocks), tmp_path / "mean.nc")


def test_lmdz_free_run_uses_the_workflow_run_and_mean(lmdz_world, tmp_path):
    from nudgeml.lmdz_grid import klon

    lmdz_mean(tmp_path)
    cfg = {**lmdz_world, "free_runs": {"runs": {"mean": {"correction": "mean", "climatology": "annual"}}}}
    out = {"histhf": tmp_path / "free" / "histhf.nc", "status": tmp_path / "free" / "status.json"}
    with pytest.raises(RunFailed, match="the guided run's restart is missing"):  # the guided run first
        BACKENDS["lmdz"].runner("free")(cfg, "mean", {"mean": str(tmp_path / "mean.nc"), "nudged": "x"}, out)
    BACKENDS["lmdz"].runner("guided")(lmdz_world, {}, {"histhf": tmp_path / "g" / "histhf.nc", "guide": tmp_path / "g" / "guide_ins.nc"})
    BACKENDS["lmdz"].runner("free")(cfg, "mean", {"mean": str(tmp_path / "mean.nc"), "nudged": "x"}, out)
    # it starts from the guided run's state at free_runs.start, not from the reference start.nc
    assert (tmp_path / "log").read_text().splitlines()[2:] == ["nudgeml_mode=1 200002 from end of 200001", "nudgeml_mode=1 200003 from end of 200002"]
    # LMDZ reads the mean in its physics columns (presnivs, points_physiques), not the workflow's layout
    with xr.open_dataset(tmp_path / "runs" / "mean" / "nudgeml_mean.nc") as m, xr.open_dataset(tmp_path / "mean.nc") as w:
        assert m["du_mean"].dims == ("presnivs", "points_physiques") and m.sizes["points_physiques"] == klon(IIM, JJM)
        # the fake's increments are uniform off the poles: 1e-5 * mean(k + 1) over the two months' records
        interior = w["du_mean"].values[:, 1:-1]
        np.testing.assert_allclose(m["du_mean"].values[:, 1:-1], interior.reshape(LLM, -1)[:, 0:1] * np.ones((1, klon(IIM, JJM) - 2)), rtol=1e-6)
        np.testing.assert_allclose(m["dv_mean"].values, w["dv_mean"].values[:, :1, :1].reshape(LLM, 1) * np.ones((1, klon(IIM, JJM))), rtol=1e-6)
    assert read_histhf(out["histhf"]).sizes["time"] == 16
    status = yaml.safe_load(out["status"].read_text())
    assert status["status"] == "ok" and status["correction"] == "mean" and status["months"] == 2


def test_lmdz_mean_residual_run_gives_the_routine_the_models_mean_over_the_training_states(lmdz_world, tmp_path):
    """A mean-residual ML run on LMDZ: the job takes the model's mean over the guided run's training
    states (its first 8 records, January's) on LMDZ's columns and writes it into the run's mean file
    beside the mean tendency, and the kit tells the routine to use it; a mean file without it is refused
    by the kit, naming the file."""
    import zarr
    from test_lmdz_grid import write_start, write_startphy

    from nudgeml.export import export_model
    from nudgeml.extract import ColumnSpec
    from nudgeml.grid import read_model_grid
    from nudgeml.lmdz import LmdzJobConfig
    from nudgeml.lmdz_grid import klon
    from nudgeml.manifest import Block, Guard, Levels, Manifest
    from nudgeml.shard import FORMAT

    lmdz_mean(tmp_path)
    guided = {"histhf": tmp_path / "g" / "histhf.nc", "guide": tmp_path / "g" / "guide_ins.nc"}
    BACKENDS["lmdz"].runner("guided")(lmdz_world, {}, guided)
    ap, bp = np.array([0.0, 0.0, 2000.0, 0.0]), np.array([1.0, 0.9, 0.1, 0.0])
    ref = {"start": write_start(tmp_path / "start.nc", iim=IIM, jjm=JJM, ap=ap, bp=bp), "startphy": write_startphy(tmp_path / "startphy.nc", iim=IIM, jjm=JJM)}
    BACKENDS["lmdz"].runner("grid")({"lmdz": {"grid": {"iim": IIM, "jjm": JJM}}}, ref, tmp_path / "grid.nc", tmp_path / "grid.txt")
    grid = read_model_grid(tmp_path / "grid.nc")
    spec = ColumnSpec()
    fb, tb = spec.feature_blocks(LLM), spec.target_blocks(LLM)
    nf, nt = sum(b["levels"] for b in fb), sum(b["levels"] for b in tb)
    manifest = Manifest(name="first", kind="mlp", features=tuple(Block(b["name"], b["units"], b["levels"]) for b in fb),
                        targets=tuple(Block(b["name"], b["units"], b["levels"]) for b in tb), levels=Levels(tuple(grid.presnivs_pa)),
                        guard=Guard(0.1, (-1e9,) * nf, (1e9,) * nf, (-1.0,) * nt, (1.0,) * nt))
    export_model(FirstFeature(nt, 1e-6), manifest, tmp_path / "first", torch.zeros(4, nf), aoti=False)
    (tmp_path / "first" / "model.pt2").write_bytes(b"")  # the kit copies both artefacts; the fake LMDZ loads neither
    store = zarr.open_group(str(tmp_path / "store.zarr"), mode="w")  # only what training_blocks reads
    store.attrs.update(format=FORMAT, splits={"train": {"start": "2000-01-01T00:00:00", "end": "2000-01-02T18:00:00"}})
    cfg = {**lmdz_world, "free_runs": {"runs": {"ml-mr": {"correction": "ml", "model": "first", "backend": "torchscript", "mean_residual": True}}}}
    inputs = {"mean": str(tmp_path / "mean.nc"), "nudged": str(guided["histhf"]), "store": str(tmp_path / "store.zarr"),
              "grid": str(tmp_path / "grid.nc"), "manifest": str(tmp_path / "first" / "model.json")}
    out = {"histhf": tmp_path / "free" / "histhf.nc", "status": tmp_path / "free" / "status.json"}
    BACKENDS["lmdz"].runner("free")(cfg, "ml-mr", inputs, out)
    run_def = (tmp_path / "kit" / "ml-mr" / "nudgeml.def").read_text()
    assert "nudgeml_mode=2" in run_def and "nudgeml_mean_residual=y" in run_def
    with xr.open_dataset(tmp_path / "runs" / "ml-mr" / "nudgeml_mean.nc") as m:
        assert m["du_model_mean"].dims == ("presnivs", "points_physiques") and m.sizes["points_physiques"] == klon(IIM, JJM)
        assert "gain_du" not in m
        # the fake's lowest-level u is k + 0.95 + lat / 90 at record k: January's 8 records average k = 3.5,
        # and the model is 1e-6 x that; the first physics column is the north pole, the last the south pole
        np.testing.assert_allclose(m["du_model_mean"].values[0, 0], 1e-6 * (3.5 + 0.95 + 1.0), rtol=1e-6)
        np.testing.assert_allclose(m["dv_model_mean"].values[:, -1], 1e-6 * (3.5 + 0.95 - 1.0), rtol=1e-6)
    assert yaml.safe_load(out["status"].read_text())["status"] == "ok"
    # top_hpa: the routine gets it as per-level gains about the model's mean, 1 at and below it, 0 above
    p_hpa = np.asarray(grid.presnivs_pa) / 100.0
    top = float(np.sort(p_hpa)[1]) + 1.0  # the upper two levels lie above it
    cfg["free_runs"]["runs"]["ml-mr-top"] = {**cfg["free_runs"]["runs"]["ml-mr"], "top_hpa": top}
    BACKENDS["lmdz"].runner("free")(cfg, "ml-mr-top", inputs, {k: tmp_path / "free-top" / Path(v).name for k, v in out.items()})
    with xr.open_dataset(tmp_path / "runs" / "ml-mr-top" / "nudgeml_mean.nc") as m:
        for k in ("du", "dv"):
            assert m[f"gain_{k}"].dims == ("presnivs",)
            np.testing.assert_array_equal(m[f"gain_{k}"].values, (p_hpa >= top).astype(float))
        assert 0 < m["gain_du"].values.sum() < m.sizes["presnivs"]
    # with bottom_hpa too, a band: 1 at top <= p <= bottom, 0 elsewhere
    top, bottom = float(np.sort(p_hpa)[0]) + 1.0, float(np.sort(p_hpa)[-1]) - 1.0  # the middle levels
    cfg["free_runs"]["runs"]["ml-mr-band"] = {**cfg["free_runs"]["runs"]["ml-mr"], "top_hpa": top, "bottom_hpa": bottom}
    BACKENDS["lmdz"].runner("free")(cfg, "ml-mr-band", inputs, {k: tmp_path / "free-band" / Path(v).name for k, v in out.items()})
    with xr.open_dataset(tmp_path / "runs" / "ml-mr-band" / "nudgeml_mean.nc") as m:
        band = ((p_hpa >= top) & (p_hpa <= bottom)).astype(float)
        assert 0 < band.sum() < (p_hpa >= top).sum() < p_hpa.size
        for k in ("du", "dv"):
            np.testing.assert_array_equal(m[f"gain_{k}"].values, band)
    # eddy_only: the kit's nudgeml.def turns the routine's row means on (LMDZ passes rows and its reduction)
    assert "nudgeml_eddy_only=n" in run_def
    cfg["free_runs"]["runs"]["ml-mr-eddy"] = {**cfg["free_runs"]["runs"]["ml-mr"], "eddy_only": True}
    BACKENDS["lmdz"].runner("free")(cfg, "ml-mr-eddy", inputs, {k: tmp_path / "free-eddy" / Path(v).name for k, v in out.items()})
    assert "nudgeml_eddy_only=y" in (tmp_path / "kit" / "ml-mr-eddy" / "nudgeml.def").read_text()
    # model_targets: the routine's gain row of a target left out is 0 on every level (its mean only)
    cfg["free_runs"]["runs"]["ml-mr-du"] = {**cfg["free_runs"]["runs"]["ml-mr"], "model_targets": ["du"], "top_hpa": top}
    BACKENDS["lmdz"].runner("free")(cfg, "ml-mr-du", inputs, {k: tmp_path / "free-du" / Path(v).name for k, v in out.items()})
    with xr.open_dataset(tmp_path / "runs" / "ml-mr-du" / "nudgeml_mean.nc") as m:
        np.testing.assert_array_equal(m["gain_du"].values, (p_hpa >= top).astype(float))
        np.testing.assert_array_equal(m["gain_dv"].values, 0.0)
    # the kit refuses a mean-residual run whose mean file lacks the model's mean, naming the file
    block = copy.deepcopy(lmdz_world["lmdz"])
    block["correction"] = {"mean_file": str(tmp_path / "mean_only.nc")}
    runners.lmdz_mean_file(tmp_path / "mean.nc", IIM, JJM, tmp_path / "mean_only.nc")
    block["free"]["runs"] = {"ml-mr": {"correction": "ml", "model": str(tmp_path / "first"), "mean_residual": True}}
    with pytest.raises(ValueError, match=r"free.runs.ml-mr.mean_residual' needs \['du_model_mean', 'dv_model_mean'\] in .*mean_only.nc"):
        LmdzJobConfig.from_dict(block, tau_hours=6.0)


def test_lmdz_mean_file_carries_per_level_gains(lmdz_world, tmp_path):
    """The mean file's gains (what the routine's init takes per level, du then dv), beside the means."""
    lmdz_mean(tmp_path)
    with xr.open_dataset(tmp_path / "mean.nc") as w:
        shape = w["du_mean"].shape
    gains = np.array([[0.1, 0.2, 0.3], [1.0, 1.5, 2.0]])
    runners.lmdz_mean_file(tmp_path / "mean.nc", IIM, JJM, tmp_path / "out.nc", model_mean=(np.full(shape, 2e-6), np.zeros(shape)), gains=gains)
    with xr.open_dataset(tmp_path / "out.nc") as m:
        np.testing.assert_array_equal(m["gain_du"].values, gains[0])
        np.testing.assert_array_equal(m["gain_dv"].values, gains[1])
        assert m["gain_dv"].dims == ("presnivs",)
        np.testing.assert_allclose(m["du_model_mean"].values, 2e-6)


def test_a_failing_month_fails_the_job_and_names_its_log(lmdz_world, tmp_path):
    (tmp_path / "hist" / "200002" / "histhf.nc").unlink()
    out = {"histhf": tmp_path / "out" / "histhf.nc", "guide": tmp_path / "out" / "guide_ins.nc"}
    with pytest.raises(RunFailed, match=r"LMDZ job .*job_001.slurm failed .*LMDZ failed for 200002"):
        BACKENDS["lmdz"].runner("guided")(lmdz_world, {}, out)
    assert not out["histhf"].exists() and not out["guide"].exists()


def test_guide_records_written_at_other_instants_than_the_history_are_refused(tmp_path, caplog):
    """The join pairs guide_ins and histhf records one for one: checked on their model winds."""
    _month_files(tmp_path / "ok", "200001", 0)
    rms = runners.check_pairing(tmp_path / "ok" / "200001" / "histhf.nc", tmp_path / "ok" / "200001" / "guide_ins.nc")
    assert rms[0] < 1e-6 < rms[1]
    _month_files(tmp_path / "late", "200001", 0, guide_shift=1)
    with pytest.raises(InputError, match=r"guide_ins.nc: its record t matches .*histhf.nc's record t\+1 \(6 h apart\)"):
        runners.check_pairing(tmp_path / "late" / "200001" / "histhf.nc", tmp_path / "late" / "200001" / "guide_ins.nc")


def test_lmdz_guided_job_with_misaligned_guide_records_writes_nothing(lmdz_world, tmp_path):
    import shutil

    shutil.rmtree(tmp_path / "hist" / "200001")
    _month_files(tmp_path / "hist", "200001", 0, guide_shift=1)
    out = {"histhf": tmp_path / "out" / "histhf.nc", "guide": tmp_path / "out" / "guide_ins.nc"}
    with pytest.raises(InputError, match=r"record t\+1 \(6 h apart\)"):
        BACKENDS["lmdz"].runner("guided")(lmdz_world, {}, out)
    assert not out["histhf"].exists() and not out["guide"].exists()


def test_missing_month_history_is_named(tmp_path):
    with pytest.raises(InputError, match="LMDZ wrote no histhf.nc for 1 month"):
        runners.month_outputs(tmp_path, ["200001"], "histhf.nc")


# ------------------------------------------------------------------------------------------------
# Acceptance: the Jean Zay dry run with backend lmdz lists the LMDZ jobs, with MPI resources
# ------------------------------------------------------------------------------------------------


def test_jeanzay_dry_run_with_lmdz_lists_the_lmdz_pipeline(tmp_path, jz_env):
    ref = Path(jz_env["WORK"]) / "nudgeml" / "lmdz-reference"  # lmdz.reference_dir of config/jeanzay.yaml
    ref.mkdir(parents=True)
    for f in ("start.nc", "startphy.nc"):
        (ref / f).write_text(f)  # a dry run only needs them to exist
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env["PYTHONPATH"] = f"{REPO / 'src'}{os.pathsep}{env.get('PYTHONPATH', '')}"
    # and a mean-residual ML run: its job reads the guided run, the store's training blocks and the model grid
    (tmp_path / "mr.yaml").write_text(yaml.safe_dump({"free_runs": {"runs": {"ml-mlp-mr": {"correction": "ml", "model": "mlp", "mean_residual": True}}}}))
    res = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--profile", str(PROFILE), "--configfile", "config/jeanzay.yaml", str(tmp_path / "mr.yaml")],
                         cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    mr = re.search(r"^rule free_run:\n((?:    .*\n)*?)    wildcards: run=ml-mlp-mr\n", res.stdout, re.M).group(1)
    for want in ("nudged/histhf.nc", "grid/model_grid.nc", "mean_tendency.nc", "models/mlp/model.json", ".zarr"):
        assert want in mr, (want, mr)
    jobs = re.findall(r"^rule (\w+):\n(?:    .*\n)*?    resources: (.*)$", res.stdout, re.M)
    counts: dict[str, int] = {}
    for rule, _ in jobs:
        counts[rule] = counts.get(rule, 0) + 1
    assert {"nudged", "lmdz_forcing", "extract", "shard", "train", "export", "free_run"} <= set(counts)
    assert counts["lmdz_forcing"] == 84  # 2010-01 .. 2016-12, each with the next month's first record
    # control, mean, ml-mlp (LMDZ reads one annual mean), ml-mlp-mr, ml-mlp-mr-eddy-top (row means, gains)
    assert counts["nudged"] == 1 and counts["free_run"] == 5
    # the model grid every downstream stage reads is LMDZ's, made from the reference files
    grid = re.search(r"^rule model_grid:\n((?:    .*\n)*)", res.stdout, re.M).group(1)
    assert f"input: {ref}/start.nc, {ref}/startphy.nc" in grid, grid
    for rule, resources in jobs:
        if rule in ("nudged", "free_run"):  # LMDZ's MPI job: 8 nodes, srun inside; no --mem
            for want in ("slurm_partition=cpu_p1", f"slurm_account={PROJECT}@cpu", "tasks=40", "cpus_per_task=8", "nodes=8", "mpi=srun", "mem_mb=0,"):
                assert want in resources, (rule, want, resources)
        if rule == "train":
            assert "gres=gpu:1" in resources and "mpi" not in resources
    # the stand-in's regridded forcing is no input of the LMDZ guided run
    nudged = re.search(r"^rule nudged:\n((?:    .*\n)*)", res.stdout, re.M).group(1)
    assert "forcing/lmdz/u_201001.nc" in nudged and "/forcing/2010-01.nc" not in nudged


def test_lmdz_chain_reads_the_joined_runs_on_lmdz_grid(lmdz_world, tmp_path):
    """Downstream of the guided LMDZ run: extract pairs the joined history and guide_ins by date on
    LMDZ's physics grid, its land fraction coming from the lmdz grid file (the reference files); a
    stand-in grid file, or a truth on it, is refused naming the file rather than read point by point."""
    from test_lmdz_grid import write_start, write_startphy

    from nudgeml.extract import ColumnSpec, column_dataset
    from nudgeml.grid import read_model_grid
    from nudgeml.regrid import check_on_truth_grid

    out = {"histhf": tmp_path / "out" / "histhf.nc", "guide": tmp_path / "out" / "guide_ins.nc"}
    BACKENDS["lmdz"].runner("guided")(lmdz_world, {}, out)
    ap, bp = np.array([0.0, 0.0, 2000.0, 0.0]), np.array([1.0, 0.9, 0.1, 0.0])  # LLM layers
    ref = {"start": write_start(tmp_path / "start.nc", iim=IIM, jjm=JJM, ap=ap, bp=bp), "startphy": write_startphy(tmp_path / "startphy.nc", iim=IIM, jjm=JJM)}
    BACKENDS["lmdz"].runner("grid")({"lmdz": {"grid": {"iim": IIM, "jjm": JJM}}}, ref, tmp_path / "grid.nc", tmp_path / "grid.txt")
    spec = ColumnSpec(geo=("land_fraction",))
    ds = column_dataset(out["histhf"], out["guide"], tmp_path / "grid.nc", spec)
    hist = read_histhf(out["histhf"])
    assert ds.sizes["column"] == (JJM + 1) * IIM and ds.sizes["time"] == 16
    np.testing.assert_array_equal(ds["time"].values, hist["time"].values)
    grid = read_model_grid(tmp_path / "grid.nc")
    feats = list(ds["feature"].values)
    np.testing.assert_allclose(ds["inputs"].values[3, :, feats.index("land_fraction")], grid.land_fraction.ravel(), rtol=1e-6)
    # targets: the fake's uniform increments 1e-5 (k + 1) (k: the record, from day0 = 31 in February) off the poles
    targets = ds["targets"].values.reshape(16, JJM + 1, IIM, -1)
    np.testing.assert_allclose(targets[9, 1:-1, :, 0], 1e-5 * (31 + 1 + 1), rtol=1e-5)
    np.testing.assert_allclose(targets[9, :, :, LLM], -1e-5 * (31 + 1 + 1), rtol=1e-5)
    # the stand-in's grid file beside LMDZ's histories: refused, naming the file
    from nudgeml.gcm.standin import ModelGrid
    from nudgeml.grid import write_model_grid

    lat = np.linspace(-67.5, 67.5, 4)
    standin = ModelGrid(lat, np.arange(8) * 45.0, np.array([0.9, 0.5, 0.1]), np.zeros((4, 8)), np.zeros((4, 8)), 5)
    write_model_grid(standin, tmp_path / "standin.nc", tmp_path / "standin.txt")
    with pytest.raises(InputError, match=r"standin.nc: model grid 4x8 is not the grid of .*histhf.nc \(5x8\)"):
        column_dataset(out["histhf"], out["guide"], tmp_path / "standin.nc", spec)
    # bias_check's and the report's comparison: a truth on LMDZ's grid passes, one on the stand-in's is named
    def truth_on(g):
        return xr.Dataset(coords={"lev": g.presnivs_pa, "lat": g.lat_deg, "lon": g.lon_deg})

    check_on_truth_grid(hist, truth_on(grid), out["histhf"])
    with pytest.raises(InputError, match=r"histhf.nc: history grid .* is not the regridded truth's"):
        check_on_truth_grid(hist, truth_on(standin), out["histhf"])


def test_lmdze_dry_run_makes_the_model_grid_from_the_start_month_of_the_truth(tmp_path):
    """backend lmdze: the model_grid job reads the ERA5 files of period.start's month (the start files
    its ce0l makes are the guided run's), and everything that reads the model grid waits for it."""
    out = tmp_path / "out"
    overlay = {"outdir": str(out), "backend": "lmdze", "lmdze": {"iim": 16, "jjm": 12, "llm": 11},
               # LMDZ's physics routine applies one annual mean: config.yaml's monthly-mean run is switched off
               "free_runs": {"start": "2000-02-06T00:00", "end": "2000-02-08T00:00",
                             # LMDZE's hook loads the TorchScript model (the default's ML run reads the .pt2)
                             "runs": {"control": {"correction": "none", "members": 1}, "mean-monthly": None, "ml-mlp": {"backend": "torchscript"},
                                      "ml-mlp-mr-eddy-top": None}}}
    (tmp_path / "lmdze.yaml").write_text(yaml.safe_dump(overlay))
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    res = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--configfile", "config/tiny.yaml", str(tmp_path / "lmdze.yaml")],
                         cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    grid = re.search(r"^rule model_grid:\n((?:    .*\n)*)", res.stdout, re.M).group(1)
    era5 = out / "era5"  # config/tiny.yaml's period: 2000-01-31 .. 2000-02-08, two months of files
    want = f"input: {era5}/pressure_levels/2000-01.nc, {era5}/single_levels/2000-01.nc, {era5}/invariant.nc\n"
    assert want in grid, grid
    for rule in ("regrid", "extract"):  # the truth's regrid and the land fraction feature read LMDZE's grid
        block = re.search(rf"^rule {rule}:\n((?:    .*\n)*)", res.stdout, re.M).group(1)
        assert f"{out}/grid/model_grid" in block, (rule, block)


def test_lmdz_ml_run_of_an_xgboost_export_calls_its_compiled_trees(jz_env, tmp_path):
    """The kit passes nudgeml_backend=trees for a model whose manifest carries compiled trees (as the
    stand-in's free run calls them), and the backend the run asks for otherwise."""
    import dataclasses

    from nudgeml import manifest as mf
    from nudgeml.gcm.runners import kit_config
    from nudgeml.trees import TREE_BACKEND

    jz = jeanzay_config()
    config = {"lmdz": copy.deepcopy(jz["lmdz"]), "tau_hours": jz["nudging"]["tau_hours"]}  # the free run job's params
    spec = {"correction": "ml", "model": "mlp", "backend": "aoti"}
    m = mf.Manifest(name="m", kind="mlp", features=(mf.Block("u", "m s-1", 1),), targets=(mf.Block("du", "m s-2", 1), mf.Block("dv", "m s-2", 1)),
                    levels=mf.Levels((95000.0,)), guard=mf.Guard(0.1, (0.0,), (1.0,), (0.0, 0.0), (1.0, 1.0)))
    (tmp_path / "mlp").mkdir()
    mf.write_manifest(m, tmp_path / "mlp" / "model.json")
    kit = kit_config(config, "ml-mlp", spec, mean_file=str(tmp_path / "mean.nc"), model_dir=str(tmp_path / "mlp"))
    assert kit.correction.backend == "aoti"
    trees = dataclasses.replace(m, kind="xgboost", tree_backend=TREE_BACKEND, artifacts={**m.artifacts, "trees": "model_trees.so"})
    (tmp_path / "xgb").mkdir()
    mf.write_manifest(trees, tmp_path / "xgb" / "model.json")
    kit = kit_config(config, "ml-xgb", {**spec, "model": "xgb"}, mean_file=str(tmp_path / "mean.nc"), model_dir=str(tmp_path / "xgb"))
    assert kit.correction.backend == "trees"

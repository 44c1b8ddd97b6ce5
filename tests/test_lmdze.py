"""LMDZE built by ``nudgeml.lmdze_build`` (``scripts/build_lmdze.sh``) with the compat library.

Needs the four GitHub repositories (lguez/LMDZE, Jumble, NetCDF95, cmake) as source folders
(``LMDZE_SRC``, ``JUMBLE_SRC``, ``NETCDF95_SRC``, ``LGUEZ_CMAKE_SRC``, or ``LMDZE_SOURCES`` holding
the four, or ``build/lmdze/sources`` from ``scripts/build_lmdze.sh --clone``) and apt's
libnetcdff-dev; skips with one line naming what is missing otherwise (CI has neither). Builds into
``build/lmdze`` (``NUDGEML_LMDZE_BUILD_DIR`` to change it), so a second session reuses the build.
"""

import os
from pathlib import Path

import pytest

from nudgeml import lmdze_build

pytestmark = pytest.mark.lmdze

BUILD_DIR = Path(os.environ.get("NUDGEML_LMDZE_BUILD_DIR", lmdze_build.DEFAULT_BUILD_DIR))


@pytest.fixture(scope="module")
def built():
    _, missing = lmdze_build.find_sources(BUILD_DIR)
    if missing:
        pytest.skip("LMDZE sources not found (docs/lmdze.md): " + "; ".join(missing))
    if tools := lmdze_build.missing_tools():
        pytest.skip("LMDZE build tools missing: " + "; ".join(tools))
    return lmdze_build.build(BUILD_DIR, jobs=int(os.environ.get("NUDGEML_LMDZE_JOBS", "2")))


def test_gcm_and_ce0l_are_built_with_the_compat_libraries(built):
    import subprocess

    for exe in (built.gcm, built.ce0l):
        assert exe.is_file() and os.access(exe, os.X_OK), exe
    # nqmx = 4 in the compiled copy only; LMDZE's own source is untouched
    tree = BUILD_DIR / "work" / "LMDZE-src" / "dimensions.f90"
    assert "nqmx = 4" in tree.read_text()
    cache = (BUILD_DIR / "work" / "LMDZE" / "CMakeCache.txt").read_text()
    prefix = str((BUILD_DIR / "prefix").resolve())
    for package in ("Numer_Rec_95", "XIOS", "MPI"):
        assert f"{package}_DIR:PATH={prefix}/lib/cmake/{package}" in cache
    symbols = subprocess.run(["nm", str(built.gcm)], capture_output=True, text=True, check=True).stdout
    assert "__numer_rec_95_MOD_rtsafe_sp" in symbols and "__mpi_f08_MOD_mpi_init" in symbols


def test_rerun_skips_every_step(built):
    again = lmdze_build.build(BUILD_DIR)
    assert again.skipped == ["compat", "Jumble", "NetCDF95", "bridge", "LMDZE-tree", "LMDZE"]
    assert again.gcm == built.gcm


def _namelists(name: str) -> str:
    """One of LMDZE's own test namelist files (Tests_input/Namelists), read from its source."""
    sources, _ = lmdze_build.find_sources(BUILD_DIR)
    return (sources["LMDZE"] / "Tests_input" / "Namelists" / name).read_text()


def _run(exe: Path, cwd: Path, stdin: str, timeout: float) -> str:
    import subprocess

    proc = subprocess.run([str(exe)], cwd=cwd, input=stdin, capture_output=True, text=True, timeout=timeout,
                          check=False)
    out = proc.stdout + proc.stderr
    (cwd / f"{exe.name}.log").write_text(out)
    assert proc.returncode == 0, f"{exe.name} failed (status {proc.returncode}):\n{out[-4000:]}"
    return out


@pytest.fixture(scope="module")
def ce0l_outputs(built, tmp_path_factory):
    from lmdze_inputs import write_ce0l_inputs

    run = tmp_path_factory.mktemp("lmdze_ce0l")
    write_ce0l_inputs(run)
    out = _run(built.ce0l, run, _namelists("ce0l_nml_control.txt"), timeout=300)
    assert "ce0l: done" in out
    return run


def test_ce0l_writes_start_and_boundary_files(ce0l_outputs):
    import numpy as np
    from netCDF4 import Dataset

    for name in ("restart.nc", "restartphy.nc", "limit.nc", "grilles_gcm.nc"):
        assert (ce0l_outputs / name).is_file(), name
    with Dataset(ce0l_outputs / "restart.nc") as nc:
        ps = np.asarray(nc["ps"][:])
        assert ps.shape[-2:] == (13, 17)  # (jjm + 1, iim + 1) at the default 16x12
        assert np.all(np.isfinite(ps)) and 9e4 < ps.min() and ps.max() < 1.05e5
        teta = np.asarray(nc["teta"][:])
        assert np.all(np.isfinite(teta)) and teta.min() > 200


def test_gcm_runs_one_day(built, ce0l_outputs, tmp_path):
    import shutil

    import numpy as np
    from netCDF4 import Dataset

    for src, dest in (("restart.nc", "start.nc"), ("restartphy.nc", "startphy.nc"), ("limit.nc", "limit.nc")):
        shutil.copy(ce0l_outputs / src, tmp_path / dest)
    namelists = _namelists("gcm_nml_control.txt")
    assert "&conf_gcm_nml /" in namelists
    out = _run(built.gcm, tmp_path, namelists.replace("&conf_gcm_nml /", "&conf_gcm_nml nday = 1 /"), timeout=600)
    assert "Everything is cool" in out
    with Dataset(tmp_path / "start.nc") as a, Dataset(tmp_path / "restart.nc") as b:
        u0, u1 = np.asarray(a["ucov"][:]), np.asarray(b["ucov"][:])
        assert np.all(np.isfinite(u1)) and not np.array_equal(u0, u1)  # one day later, the state moved


# ------------------------------------------------------------------------------------------------
# ce0l on inputs built from a truth (nudgeml.lmdze_inputs), as the lmdze backend builds them
# ------------------------------------------------------------------------------------------------

TRUTH_START = "2000-01-31T00:00"


@pytest.fixture(scope="module")
def truth_era5(tmp_path_factory):
    import numpy as np
    from lmdze_inputs import write_truth_era5

    return write_truth_era5(tmp_path_factory.mktemp("lmdze_truth"), np.datetime64(TRUTH_START), records=5)


@pytest.fixture(scope="module")
def ce0l_from_truth(built, truth_era5, tmp_path_factory):
    from nudgeml.lmdze_inputs import lmdze_day_ref, write_ce0l_inputs_from_truth

    run = tmp_path_factory.mktemp("lmdze_ce0l_truth")
    write_ce0l_inputs_from_truth(run, start=TRUTH_START, **truth_era5)
    day_ref, year = lmdze_day_ref(TRUTH_START)
    namelists = _namelists("ce0l_nml_control.txt").replace("&dynetat0_nml /", f"&dynetat0_nml day_ref = {day_ref}, annee_ref = {year} /")
    out = _run(built.ce0l, run, namelists, timeout=300)
    assert "ce0l: done" in out
    return run


def test_ce0l_on_the_truth_keeps_its_surface_pressure(ce0l_from_truth, truth_era5):
    """ce0l's ps is the truth's moved onto LMDZE's smoother orography: the global mean (mass) within
    0.5 %, and reduced to sea level with the same temperature, every column within 3 %."""
    import numpy as np
    import xarray as xr

    for name in ("restart.nc", "restartphy.nc", "limit.nc"):
        assert (ce0l_from_truth / name).is_file(), name
    with xr.open_dataset(ce0l_from_truth / "restart.nc", decode_times=False) as r:
        ps = r["ps"].values[0][:, :-1]  # the periodic column repeated
        phis = r["phis"].values[:, :-1]
        lat = np.rad2deg(r["rlatu"].values)
        lon = np.rad2deg(r["rlonv"].values)[:-1]
        bounds = np.deg2rad(np.concatenate([[90.0], 0.5 * (lat[:-1] + lat[1:]), [-90.0]]))
    assert ps.shape == (13, 16)
    area = (np.sin(bounds[:-1]) - np.sin(bounds[1:]))[:, None] * np.ones((1, lon.size))  # cell areas (pole caps)
    with xr.open_dataset(truth_era5["single_levels"]) as s, xr.open_dataset(truth_era5["invariant"]) as inv:
        sp = s["sp"].isel(valid_time=0)
        z = inv["z"].isel(valid_time=0)
        w = np.cos(np.deg2rad(sp["latitude"]))
        truth_mean = float((sp * w).sum() / (w.sum() * sp.sizes["longitude"]))
        model_mean = float((ps * area).sum() / area.sum())
        assert abs(model_mean - truth_mean) / truth_mean < 0.005, (model_mean, truth_mean)
        t_ref, rd = 288.0, 287.05
        slp = (sp * np.exp(z / (rd * t_ref))).interp(latitude=xr.DataArray(lat[1:-1], dims="y"),
                                                     longitude=xr.DataArray(lon % 360, dims="x"))
    slp_model = ps[1:-1] * np.exp(phis[1:-1] / (rd * t_ref))
    assert np.nanmax(np.abs(slp_model - slp.values) / slp.values) < 0.03


def _gcm_day(built, ce0l_dir: Path, run: Path, guide: str) -> Path:
    run.mkdir()
    return _gcm_day_in(built, ce0l_dir, run, guide)


def _gcm_day_in(built, ce0l_dir: Path, run: Path, guide: str) -> Path:
    """One day of gcm in ``run`` from ce0l's files, with ``conf_guide_nml`` set to ``guide``."""
    import shutil

    for src, dest in (("restart.nc", "start.nc"), ("restartphy.nc", "startphy.nc"), ("limit.nc", "limit.nc")):
        shutil.copy(ce0l_dir / src, run / dest)
    namelists = _namelists("gcm_nml_nudging.txt")
    assert "&conf_guide_nml guide_u = t, guide_v = t /" in namelists and "&conf_gcm_nml\n/" in namelists
    namelists = namelists.replace("&conf_gcm_nml\n/", "&conf_gcm_nml nday = 1 /").replace(
        "&conf_guide_nml guide_u = t, guide_v = t /", f"&conf_guide_nml {guide} /")
    out = _run(built.gcm, run, namelists, timeout=600)
    assert "Everything is cool" in out
    return run


def test_guided_day_moves_toward_the_analysis(built, ce0l_from_truth, truth_era5, tmp_path):
    """One day guided (u, v, tau 6 h) on the nudging files from the truth ends closer to the truth's
    analysis at +24 h (LMDZE's own ucovrea2, the analysis on its levels) than the same day unguided."""
    import numpy as np
    import xarray as xr

    from nudgeml.lmdz_forcing import write_lmdze_guide

    guided = tmp_path / "guided"
    guided.mkdir()
    write_lmdze_guide(era5_files={"pressure_levels": [truth_era5["pressure_levels"]]}, start=TRUTH_START, days=1,
                      out_paths={"u": guided / "u.nc", "v": guided / "v.nc"}, iim=16, jjm=12)
    _gcm_day_in(built, ce0l_from_truth, guided, "guide_u = t, guide_v = t, tau_max_u = 0.25, tau_max_v = 0.25")
    free = _gcm_day(built, ce0l_from_truth, tmp_path / "free", "")
    with xr.open_dataset(guided / "ucovrea2.nc") as a:
        assert a.sizes["iter"] == 4  # the analyses at +6, +12, +18 and +24 h
        analysis = a["ucovrea2"].values[-1]

    def distance(run: Path) -> float:
        with xr.open_dataset(run / "restart.nc", decode_times=False) as r:
            ucov = r["ucov"].values[0]
        return float(np.sqrt(np.mean((ucov[:, 1:-1] - analysis[:, 1:-1]) ** 2)))  # poles: ucov = 0

    assert distance(guided) < 0.7 * distance(free), (distance(guided), distance(free))


def test_run_guided_with_the_packages_namelists(built, truth_era5, tmp_path):
    """nudgeml.lmdze_run: inputs from the truth, ce0l then a guided gcm day with namelists rendered by
    the package (not LMDZE's test files); LMDZE reports the factt behind the package's alpha."""
    import math

    import xarray as xr

    from nudgeml.lmdze_run import LmdzeSettings, run_guided

    s = LmdzeSettings(start=TRUTH_START, days=1, guide=("u", "v", "t"), tau_hours=6.0)
    res = run_guided(tmp_path / "run", s, ce0l=built.ce0l, gcm=built.gcm, pressure_levels=[truth_era5["pressure_levels"]],
                     single_levels=[truth_era5["single_levels"]], invariant=truth_era5["invariant"])
    log = (res.run_dir / "gcm.log").read_text()
    factt = float(log.split("factt =")[1].split()[0])
    assert res.alpha == pytest.approx(1.0 - math.exp(-factt / 0.25), rel=1e-6)
    for name in ("restart.nc", "restartphy.nc", "ucov.nc", "ucovrea2.nc", "teta.nc", "tetarea2.nc", "T.nc"):
        assert (res.run_dir / name).is_file(), name
    with xr.open_dataset(res.run_dir / "tetarea2.nc") as a:
        assert a.sizes["iter"] == 4


def test_recorded_increments_are_what_the_guide_applied(built, truth_era5, tmp_path):
    """The build's guide diagnostic (fortran/lmdze_guide) records after - before around LMDZE's
    relaxation. At a window's first call (tau = 0) the target is the analysis LMDZE read at the window
    start, so there the recorded increment must be alpha * (analysis - state) from LMDZE's own
    6-hourly files (ucovrea2 of the previous window, ucov written before the call), to float32
    precision; the window sums hold the other calls too (12 per window at day_step 240, iperiod 5)."""
    import numpy as np
    import xarray as xr

    from nudgeml.lmdze_run import LmdzeSettings, nudging_alpha, run_guided

    s = LmdzeSettings(start=TRUTH_START, days=1, guide=("u", "v", "t"), tau_hours=6.0)
    run = run_guided(tmp_path / "run", s, ce0l=built.ce0l, gcm=built.gcm, pressure_levels=[truth_era5["pressure_levels"]],
                     single_levels=[truth_era5["single_levels"]], invariant=truth_era5["invariant"]).run_dir

    def field(name):
        with xr.open_dataset(run / f"{name}.nc") as ds:
            return ds[name].values

    for inc, state, analysis in (("du_guide0", "ucov", "ucovrea2"), ("dteta_guide0", "teta", "tetarea2")):
        first, x, xa = field(inc), field(state), field(analysis)
        assert first.shape[0] == x.shape[0] == 4  # four 6-hour windows in the day
        for k in (1, 2, 3):
            want = nudging_alpha(s) * (xa[k - 1] - x[k])
            scale = np.abs(x[k]).max()
            assert np.abs(first[k] - want).max() <= 4e-6 * scale, (inc, k, np.abs(first[k] - want).max(), scale)
            assert np.abs(want).max() > 100 * 4e-6 * scale  # not vacuous: the relaxation did far more than the tolerance
        total = field(inc[:-1])
        assert np.all(np.isfinite(total)) and np.abs(total).max() > np.abs(first).max()


def test_guided_outputs_in_lmdz_conventions(built, truth_era5, tmp_path):
    """histhf.nc and guide_ins.nc from a guided day (nudgeml.lmdze_history), read by the readers of
    LMDZ's files: the window states are LMDZE's own 6-hourly ucov/teta, the analyses rebuilt from the
    first increments equal LMDZE's own ucovrea2/tetarea2 (windows 1-3, float32 precision), the
    increments are the recorded window sums, and the history's winds are the guide file's states."""
    import numpy as np
    import xarray as xr

    from nudgeml.conventions import LMDZ_KAPPA, LMDZ_PREFF_PA, read_guide, read_histhf
    from nudgeml.lmdze_history import metric, write_guided_outputs
    from nudgeml.lmdze_run import LmdzeSettings, run_guided

    s = LmdzeSettings(start=TRUTH_START, days=1, guide=("u", "v", "t"), tau_hours=6.0)
    run = run_guided(tmp_path / "run", s, ce0l=built.ce0l, gcm=built.gcm, pressure_levels=[truth_era5["pressure_levels"]],
                     single_levels=[truth_era5["single_levels"]], invariant=truth_era5["invariant"]).run_dir
    n = write_guided_outputs(run, s, epoch=TRUTH_START, histhf=tmp_path / "histhf.nc", guide=tmp_path / "guide_ins.nc")
    assert n == 4

    def field(name):
        with xr.open_dataset(run / f"{name}.nc") as ds:
            return ds[name].values.astype(np.float64)

    cu, _ = metric(16, 12)
    inner = slice(1, -1)  # no zonal wind on the pole rows
    with xr.open_dataset(tmp_path / "guide_ins.nc") as g:
        u, ua, ucov = g["u"].values, g["ua"].values, g["ucov"].values
        teta_inc, sp = g["teta"].values, g["SP"].values
    lmdze_state, lmdze_analysis = field("ucov") / cu, field("ucovrea2") / cu
    assert np.abs(u - lmdze_state)[:, :, inner].max() < 1e-4 * np.abs(lmdze_state).max()
    assert np.abs(ua[1:] - lmdze_analysis[:3])[:, :, inner].max() < 1e-4 * np.abs(lmdze_analysis).max()
    assert np.allclose(ucov, field("du_guide") * 4.0, rtol=1e-6)  # window sum over 6 h, per day
    assert np.allclose(teta_inc, field("dteta_guide") * 4.0, rtol=1e-6)

    g = read_guide(tmp_path / "guide_ins.nc")
    h = read_histhf(tmp_path / "histhf.nc")
    assert g.sizes == {"time": 4, "lev": 11, "lat": 13, "lon": 16} and dict(h["u"].sizes) == {"time": 4, "lev": 11, "lat": 13, "lon": 16}
    for name in ("du", "dv", "dt", "u", "ua", "ta"):
        assert np.all(np.isfinite(g[name].values)), name
    assert np.array_equal(g["lat"].values, h["lat"].values) and np.array_equal(g["lon"].values, h["lon"].values)
    # the reader's temperature increment: teta increment x (SP / preff)^kappa, LMDZE's T / theta
    with xr.open_dataset(run / "dyn_hist.nc", decode_times=False) as d:
        exner = (d["temp"] / d["theta"]).values[[0, 59, 119, 179]]  # records at the window starts (first: one step in)
    assert np.allclose((sp / LMDZ_PREFF_PA) ** LMDZ_KAPPA, exner, rtol=1e-5)
    # history and guide file hold the same window-start winds (the history's is one dynamics record,
    # the guide's the state just before that step's relaxation): close, away from the poles
    diff = np.abs(h["u"].values - g["u"].values)[:, :, 2:-2]
    assert diff.max() < 1.0, diff.max()
    assert float(h["precip"].min()) >= 0.0 and float(h["ps"].min()) > 5e4


def test_backend_guided_job_writes_what_extract_reads(built, truth_era5, tmp_path, monkeypatch):
    """The lmdze backend's nudged job (registry runner, as workflow/scripts/nudged.py calls it) on the
    truth's ERA5 files: histhf.nc and guide_ins.nc, read by the readers extract uses."""
    import numpy as np

    from nudgeml import lmdze_build
    from nudgeml.conventions import read_guide, read_histhf
    from nudgeml.gcm.registry import BACKENDS

    monkeypatch.setattr(lmdze_build, "DEFAULT_BUILD_DIR", BUILD_DIR)
    cfg = {"period": {"start": TRUTH_START, "end": "2000-02-01T00:00"}, "nudging": {"tau_hours": 6.0, "project_target": False},
           "run_dir": str(tmp_path / "lmdze" / "guided")}
    inputs = {"pressure_levels": [str(truth_era5["pressure_levels"])], "single_levels": [str(truth_era5["single_levels"])],
              "invariant": str(truth_era5["invariant"])}
    outputs = {"histhf": str(tmp_path / "nudged" / "histhf.nc"), "guide": str(tmp_path / "nudged" / "guide_ins.nc")}
    BACKENDS["lmdze"].runner("guided")(cfg, inputs, outputs)
    g, h = read_guide(outputs["guide"]), read_histhf(outputs["histhf"])
    assert g.sizes["time"] == h.sizes["time"] == 4 and "dt" not in g  # u, v only
    assert np.all(np.isfinite(g["du"].values)) and float(np.abs(g["du"]).max()) > 0
    assert str(h["time"].values[0])[:13] == "2000-01-31T00"
    # the extract stage's own function builds the training columns from them (the land_fraction feature
    # reads the backend's grid file: test_lmdze_model_grid_is_the_guided_runs_grid)
    from nudgeml.extract import ColumnSpec, column_dataset

    spec = ColumnSpec.from_config({"level_inputs": ["u", "v", "t", "q"], "surface_inputs": ["ps"], "geo": ["sin_lat", "cos_lat"],
                                   "targets": ["du", "dv"], "history_names": {"u": "vitu", "v": "vitv", "t": "temp", "q": "ovap", "ps": "psol"}})
    cols = column_dataset(outputs["histhf"], outputs["guide"], None, spec)
    assert str(cols.attrs["grid_shape"]) == "[13, 16]" and cols["targets"].shape == (4, 13 * 16, 22)
    assert np.all(np.isfinite(cols["inputs"].values)) and np.all(np.isfinite(cols["targets"].values))


def test_guided_humidity_through_relative_humidity(built, truth_era5, tmp_path, monkeypatch):
    """nudging.q: hur.nc from the truth, LMDZE relaxes q toward q_sat(model T, p) x the analysis' RH;
    guide_ins.nc holds the applied q increments (read_guide's dq) and that target (qa), which is 0.6
    q_sat of the model's window-start temperature, as the truth's q is 0.6 q_sat."""
    import numpy as np
    import xarray as xr

    from nudgeml import lmdze_build
    from nudgeml.conventions import read_guide, read_histhf
    from nudgeml.gcm.registry import BACKENDS
    from nudgeml.lmdze_inputs import q_sat

    monkeypatch.setattr(lmdze_build, "DEFAULT_BUILD_DIR", BUILD_DIR)
    cfg = {"period": {"start": TRUTH_START, "end": "2000-02-01T00:00"},
           "nudging": {"tau_hours": 6.0, "project_target": False, "q": {"tau_hours": 6.0}}, "run_dir": str(tmp_path / "run")}
    inputs = {"pressure_levels": [str(truth_era5["pressure_levels"])], "single_levels": [str(truth_era5["single_levels"])],
              "invariant": str(truth_era5["invariant"])}
    outputs = {"histhf": str(tmp_path / "histhf.nc"), "guide": str(tmp_path / "guide_ins.nc")}
    BACKENDS["lmdze"].runner("guided")(cfg, inputs, outputs)
    assert (tmp_path / "run" / "hur.nc").is_file()
    g, h = read_guide(outputs["guide"]), read_histhf(outputs["histhf"])
    assert np.all(np.isfinite(g["dq"].values)) and float(np.abs(g["dq"]).max()) > 0
    with xr.open_dataset(outputs["guide"]) as raw:
        sp = raw["SP"].values[:, :, ::-1, :-1]  # LATU north first -> canonical; drop the repeated longitude
    order = np.argsort(np.mod(np.linspace(-180, 180, 17)[:-1], 360.0))
    ratio = g["qa"].values[1:] / q_sat(h["t"].values[1:], sp[1:][..., order])  # windows 1-3: history at the window start
    assert abs(float(np.median(ratio)) - 0.6) < 0.01, float(np.median(ratio))


def test_free_runs_control_mean_and_ml_through_the_bridge(built, truth_era5, lmdze_grid, tmp_path, monkeypatch):
    """The lmdze backend's free runs (registry runner, as workflow/scripts/coupled.py calls it): the
    control adds nothing, the mean run adds the guided run's mean tendency every step, the ML run the
    exported model through the bridge inside physiq (refreshed every 6 h, guarded), and its first
    refresh equals the Python model on the same columns bit for bit (issue 15, items 2 and 3); the
    mean-residual ML run holds mean + (model - the model's mean over the guided run's states), also bit
    for bit, and so does the eddies-only run (row means removed)."""
    import json

    import numpy as np
    import xarray as xr

    from nudgeml import lmdze_build
    from nudgeml.conventions import read_histhf
    from nudgeml.extract import ColumnSpec, column_dataset
    from nudgeml.gcm.registry import BACKENDS
    from lmdze_inputs import export_untrained_mlp

    from nudgeml.lmdze_run import check_refresh
    from nudgeml.mean_tendency import mean_tendency, write_mean_tendency

    monkeypatch.setattr(lmdze_build, "DEFAULT_BUILD_DIR", BUILD_DIR)
    era5 = {"pressure_levels": [str(truth_era5["pressure_levels"])], "single_levels": [str(truth_era5["single_levels"])],
            "invariant": str(truth_era5["invariant"])}
    guided = {"histhf": str(tmp_path / "nudged" / "histhf.nc"), "guide": str(tmp_path / "nudged" / "guide_ins.nc")}
    BACKENDS["lmdze"].runner("guided")({"period": {"start": TRUTH_START, "end": "2000-02-01T00:00"}, "nudging": {"tau_hours": 6.0},
                                        "run_dir": str(tmp_path / "lmdze" / "guided")}, era5, guided)
    mean = tmp_path / "mean_tendency.nc"
    write_mean_tendency(mean_tendency(guided["guide"], [(np.datetime64("2000-01-01"), np.datetime64("2000-03-01"))]), mean)
    spec = ColumnSpec.from_config({"level_inputs": ["u", "v", "t", "q"], "surface_inputs": ["ps"], "geo": ["sin_lat", "cos_lat"],
                                   "targets": ["du", "dv"], "history_names": {"u": "vitu", "v": "vitv", "t": "temp", "q": "ovap", "ps": "psol"}})
    model_dir = export_untrained_mlp(column_dataset(guided["histhf"], guided["guide"], lmdze_grid / "grid" / "model_grid.nc", spec), tmp_path / "model")

    import zarr

    from nudgeml.shard import FORMAT

    store = zarr.open_group(str(tmp_path / "store.zarr"), mode="w")  # only what training_blocks reads: the guided day
    store.attrs.update(format=FORMAT, splits={"train": {"start": TRUTH_START + ":00", "end": "2000-01-31T18:00:00"}})
    residual_inputs = {"nudged": guided["histhf"], "store": str(tmp_path / "store.zarr"), "grid": str(lmdze_grid / "grid" / "model_grid.nc")}
    columns = {"level_inputs": ["u", "v", "t", "q"], "surface_inputs": ["ps"], "geo": ["sin_lat", "cos_lat"], "targets": ["du", "dv"]}
    runs = {"control": {"correction": "none"}, "mean": {"correction": "mean"}, "ml": {"correction": "ml", "model": "m"},
            "ml-mr": {"correction": "ml", "model": "m", "mean_residual": True},
            "ml-mr-top": {"correction": "ml", "model": "m", "mean_residual": True, "top_hpa": 300.0},
            "ml-mr-eddy-top": {"correction": "ml", "model": "m", "mean_residual": True, "eddy_only": True, "top_hpa": 300.0}}
    hist, status = {}, {}
    for name, run_spec in runs.items():
        cfg = {"free_runs": {"start": TRUTH_START, "end": "2000-02-01T00:00", "runs": {name: run_spec}},
               "run_dir": str(tmp_path / "lmdze" / "free" / name), "columns": columns}
        inputs = dict(era5, **({"mean": str(mean)} if name != "control" else {}),
                      **({"manifest": str(model_dir / "model.json")} if name.startswith("ml") else {}),
                      **(residual_inputs if name.startswith("ml-mr") else {}))
        outputs = {"histhf": str(tmp_path / "free" / name / "histhf.nc"), "status": str(tmp_path / "free" / name / "status.json")}
        BACKENDS["lmdze"].runner("free")(cfg, name, inputs, outputs)
        hist[name] = read_histhf(outputs["histhf"]).load()
        status[name] = json.loads(Path(outputs["status"]).read_text())
        log = (tmp_path / "lmdze" / "free" / name / "gcm.log").read_text()
        assert f"nudgeml: correction {'off' if name == 'control' else name[:2] if name.startswith('ml') else name}" in log

    for name in runs:
        assert hist[name].sizes["time"] == 4 and str(hist[name]["time"].values[0])[:13] == "2000-01-31T00"
        assert all(np.all(np.isfinite(hist[name][v].values)) for v in ("u", "v", "t", "q", "ps", "precip"))
    # the first record is the state one step in; afterwards each correction moves the winds
    rms = {n: float(np.sqrt(((hist[n]["u"] - hist["control"]["u"]).isel(time=-1) ** 2).mean())) for n in ("mean", "ml")}
    assert rms["mean"] > 1e-3 and rms["ml"] > 1e-3, rms
    assert float(np.abs(hist["ml"]["u"] - hist["mean"]["u"]).isel(time=-1).max()) > 1e-3
    klon = 16 * 11 + 2
    guard = status["ml"]["guard"]
    assert guard["refreshes"] == 4 and guard["columns"] == 4 * klon and 0 <= guard["fallback_columns"] < guard["columns"]
    assert status["ml"]["refresh_check"]["bitwise"] is True and status["ml"]["refresh_check"]["columns"] == klon
    assert "guard" not in status["control"] and "guard" not in status["mean"]
    # the hook's own wall time (settings and model load, steps) comes back from gcm's log; none when off
    assert status["ml"]["hook"]["init_s"] > 0 and status["ml"]["hook"]["steps_s"] > 0 and "hook" in status["mean"]
    assert "hook" in status["control"]
    # the mean residual: the routine got the model's mean, its first refresh is Python's bit for bit, and
    # it moves the winds away from the plain ML run
    mr_mean = tmp_path / "lmdze" / "free" / "ml-mr.mean_physics.nc"
    with xr.open_dataset(mr_mean) as m:
        assert m["du_model_mean"].dims == ("presnivs", "points_physiques") and m.sizes["points_physiques"] == klon
        stripped = m[["du_mean", "dv_mean"]].load()
    assert status["ml-mr"]["refresh_check"]["bitwise"] is True
    assert float(np.abs(hist["ml-mr"]["u"] - hist["ml"]["u"]).isel(time=-1).max()) > 1e-4
    # the check sees the residual: the same dump against the plain ML formula is not bit for bit
    stripped.to_netcdf(tmp_path / "mean_only.nc")
    assert not check_refresh(tmp_path / "lmdze" / "free" / "ml-mr" / "refresh_dump.nc", model_dir, tmp_path / "mean_only.nc").bitwise
    # top_hpa: the routine applies it as per-level gains (0 above 300 hPa), bit for bit as Python, and the
    # run differs from the plain mean-residual run
    from nudgeml.grid import read_model_grid

    p_hpa = read_model_grid(lmdze_grid / "grid" / "model_grid.nc").presnivs_pa / 100.0
    with xr.open_dataset(tmp_path / "lmdze" / "free" / "ml-mr-top.mean_physics.nc") as m:
        np.testing.assert_array_equal(m["gain_du"].values, (p_hpa >= 300.0).astype(float))
        np.testing.assert_array_equal(m["gain_dv"].values, m["gain_du"].values)
    assert 0 < (p_hpa >= 300.0).sum() < p_hpa.size
    assert status["ml-mr-top"]["refresh_check"]["bitwise"] is True
    assert float(np.abs(hist["ml-mr-top"]["u"] - hist["ml-mr"]["u"]).isel(time=-1).max()) > 1e-6
    # eddy_only: the routine removes each latitude row's mean of the model's part about the mean (rows
    # numbered from rlat in the hook), bit for bit as Python; the increments' zonal mean over the kept
    # columns of a row is the mean tendency's; the check sees the row means
    from nudgeml.lmdze_run import latitude_rows

    eddy_dump = tmp_path / "lmdze" / "free" / "ml-mr-eddy-top" / "refresh_dump.nc"
    assert status["ml-mr-eddy-top"]["refresh_check"]["bitwise"] is True
    with xr.open_dataset(eddy_dump) as ds, xr.open_dataset(tmp_path / "lmdze" / "free" / "ml-mr-eddy-top.mean_physics.nc") as m:
        assert int(ds.attrs["eddy_only"]) == 1
        rows = latitude_rows(ds["lat_deg"].values)
        part = (ds["d_u"].values / float(ds.attrs["dtphys_s"]) - m["du_mean"].values).T  # (klon, klev)
    assert rows.max() == 13 and np.bincount(rows)[2:-1].tolist() == [16] * 11  # 2 poles, 11 rows of 16
    fell_back = np.all(part == 0.0, axis=1)  # on the guard's fallback (or alone in its row)
    checked = 0
    for r in range(2, 13):
        kept = (rows == r) & ~fell_back
        if kept.sum() > 1:
            np.testing.assert_allclose(part[kept].mean(axis=0), 0.0, atol=1e-12)
            checked += 1
    assert checked >= 5, checked
    assert np.abs(part).max() > 1e-7  # waves stay
    top_dump = xr.open_dataset(tmp_path / "lmdze" / "free" / "ml-mr-top" / "refresh_dump.nc").load()
    top_dump.attrs["eddy_only"] = 1  # the eddies-only formula on the run without it: not bit for bit
    top_dump.to_netcdf(tmp_path / "dump_as_eddy.nc")
    assert not check_refresh(tmp_path / "dump_as_eddy.nc", model_dir, tmp_path / "lmdze" / "free" / "ml-mr-top.mean_physics.nc").bitwise

    # the check can fail: the same dump against another model is not bit for bit
    dump = tmp_path / "lmdze" / "free" / "ml" / "refresh_dump.nc"
    mean_phys = tmp_path / "lmdze" / "free" / "ml.mean_physics.nc"
    assert check_refresh(dump, model_dir, mean_phys).bitwise
    with xr.open_dataset(dump) as ds:
        changed = ds.load()
    changed["d_u"][0, 5] = np.nextafter(changed["d_u"].values[0, 5], np.inf)  # one increment one ulp off
    changed.to_netcdf(tmp_path / "dump_changed.nc")
    bad = check_refresh(tmp_path / "dump_changed.nc", model_dir, mean_phys)
    assert not bad.bitwise and 0 < bad.max_abs_diff < 1e-12


# ------------------------------------------------------------------------------------------------
# The lmdze model grid (registry grid hook): ce0l's start files at period.start, histhf.nc's points
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lmdze_grid(built, truth_era5, tmp_path_factory):
    """The backend's grid job (registry hook, as workflow/scripts/grid.py calls it) on the truth."""
    from nudgeml.gcm.registry import BACKENDS

    out = tmp_path_factory.mktemp("lmdze_grid")
    cfg = {"period": {"start": TRUTH_START}, "lmdze": {"iim": 16, "jjm": 12, "llm": 11}, "run_dir": str(out / "lmdze" / "grid")}
    inputs = {"pressure_levels": [str(truth_era5["pressure_levels"])], "single_levels": [str(truth_era5["single_levels"])],
              "invariant": str(truth_era5["invariant"])}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(lmdze_build, "DEFAULT_BUILD_DIR", BUILD_DIR)
        BACKENDS["lmdze"].runner("grid")(cfg, inputs, out / "grid" / "model_grid.nc", out / "grid" / "model_grid.txt")
    return out


def test_lmdze_model_grid_is_ce0l_start_files(lmdze_grid):
    """The grid file holds ce0l's orography (restart.nc phis), land fraction (restartphy.nc masque, in
    [0, 1], land and sea both present), levels (presnivs) and hybrid coefficients, on histhf.nc's points."""
    import numpy as np
    import xarray as xr

    from nudgeml.grid import read_hybrid_levels, read_model_grid
    from nudgeml.lmdz_grid import physics_to_rows, rows_to_canonical
    from nudgeml.lmdze_history import histhf_grid

    run = lmdze_grid / "lmdze" / "grid"
    assert "ce0l: done" in (run / "ce0l.log").read_text()
    g = read_model_grid(lmdze_grid / "grid" / "model_grid.nc")
    assert g.land_fraction.shape == (13, 16) and g.sigma.size == 11
    with xr.open_dataset(run / "restart.nc", decode_times=False) as r, xr.open_dataset(run / "restartphy.nc") as p:
        presnivs, ap, bp = (r[n].values.astype(np.float64) for n in ("presnivs", "ap", "bp"))
        phis = rows_to_canonical(r["phis"].values[:, :-1], 16)
        masque = rows_to_canonical(physics_to_rows(p["masque"].values, 16, 12), 16)
    np.testing.assert_allclose(g.presnivs_pa, presnivs, rtol=1e-6)
    np.testing.assert_allclose(g.surface_geopotential, phis, rtol=1e-6)
    np.testing.assert_allclose(g.land_fraction, masque, atol=1e-7)
    assert g.land_fraction.min() >= 0.0 and g.land_fraction.max() <= 1.0
    assert 0.0 < float(g.land_fraction.mean()) < 1.0 and g.surface_geopotential.max() > 100.0
    a_mid, b_mid = read_hybrid_levels(lmdze_grid / "grid" / "model_grid.nc")
    np.testing.assert_allclose(a_mid + b_mid * 101325.0, 0.5 * (ap[:-1] + ap[1:]) + 0.5 * (bp[:-1] + bp[1:]) * 101325.0, rtol=1e-6)
    h = histhf_grid(16, 12, presnivs)
    assert np.array_equal(g.lat_deg, h.lat_deg) and np.array_equal(g.lon_deg, h.lon_deg)
    text = (lmdze_grid / "grid" / "model_grid.txt").read_text()
    assert "xsize     = 16" in text and "ysize     = 13" in text and "xfirst    = 0.0000000000" in text


def test_lmdze_model_grid_is_the_guided_runs_grid(built, lmdze_grid, truth_era5, tmp_path, monkeypatch):
    """The guided job from the same truth starts from the same start files, its histhf.nc is on the grid
    file's points and levels, and extract's land_fraction feature reads the grid file's land fraction."""
    import numpy as np
    import xarray as xr

    from nudgeml.conventions import read_histhf
    from nudgeml.extract import ColumnSpec, column_dataset
    from nudgeml.gcm.registry import BACKENDS
    from nudgeml.grid import read_model_grid

    monkeypatch.setattr(lmdze_build, "DEFAULT_BUILD_DIR", BUILD_DIR)
    cfg = {"period": {"start": TRUTH_START, "end": "2000-02-01T00:00"}, "nudging": {"tau_hours": 6.0, "project_target": False},
           "lmdze": {"iim": 16, "jjm": 12, "llm": 11}, "run_dir": str(tmp_path / "lmdze" / "guided")}
    inputs = {"pressure_levels": [str(truth_era5["pressure_levels"])], "single_levels": [str(truth_era5["single_levels"])],
              "invariant": str(truth_era5["invariant"])}
    outputs = {"histhf": str(tmp_path / "nudged" / "histhf.nc"), "guide": str(tmp_path / "nudged" / "guide_ins.nc")}
    BACKENDS["lmdze"].runner("guided")(cfg, inputs, outputs)
    grid_run = lmdze_grid / "lmdze" / "grid"
    for name, var in (("start.nc", "phis"), ("startphy.nc", "masque")):
        with xr.open_dataset(tmp_path / "lmdze" / "guided" / name, decode_times=False) as a, \
                xr.open_dataset(grid_run / f"re{name}", decode_times=False) as b:
            np.testing.assert_array_equal(a[var].values, b[var].values)
    g = read_model_grid(lmdze_grid / "grid" / "model_grid.nc")
    h = read_histhf(outputs["histhf"])
    np.testing.assert_array_equal(h["lat"].values, g.lat_deg)  # float32 in the file; exact on this grid
    np.testing.assert_array_equal(h["lon"].values, g.lon_deg)
    np.testing.assert_allclose(h["lev"].values, g.presnivs_pa, rtol=1e-6)
    spec = ColumnSpec.from_config({"level_inputs": ["u", "v", "t", "q"], "surface_inputs": ["ps"], "geo": ["sin_lat", "land_fraction"],
                                   "targets": ["du", "dv"], "history_names": {"u": "vitu", "v": "vitv", "t": "temp", "q": "ovap", "ps": "psol"}})
    cols = column_dataset(outputs["histhf"], outputs["guide"], lmdze_grid / "grid" / "model_grid.nc", spec)
    feats = list(cols["feature"].values)
    assert np.all(np.isfinite(cols["inputs"].values))
    np.testing.assert_allclose(cols["inputs"].values[0, :, feats.index("land_fraction")], g.land_fraction.ravel(), rtol=1e-6)

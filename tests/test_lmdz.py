"""LMDZ job kit: configuration checks, rendered SLURM scripts and .def files, and a dry execution
of the rendered jobs with stand-ins for srun/module and a fake LMDZ executable."""

import copy
import datetime
import json
import os
import re
import stat
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

from nudgeml import lmdz
from nudgeml.config import SCHEMA_PATH
from synthetic import lmdz_nudging_files

KIT = Path(__file__).resolve().parents[1] / "lmdz"
LMDZ_SCHEMA = SCHEMA_PATH.parent / "lmdz.schema.yaml"
TAU = 6.0  # the workflow's nudging.tau_hours, which the kit uses unless lmdz.nudging.tau_hours is set


@pytest.fixture()
def raw() -> dict:
    return copy.deepcopy(yaml.safe_load((KIT / "config.example.yaml").read_text())["lmdz"])


def small(raw: dict, tmp_path: Path) -> dict:
    """The example config shrunk to 3 guided months and 2 free months in a sandbox."""
    raw = copy.deepcopy(raw)
    raw.update(executable=str(tmp_path / "bin" / "gcm.e"), reference_dir=str(tmp_path / "ref"),
               run_root=str(tmp_path / "runs"), months_per_job=2)
    raw["nudging"]["forcing_dir"] = str(tmp_path / "forcing")
    raw["guided"] = {"start": "2000-01-01", "end": "2000-04-01"}
    raw["free"]["start"], raw["free"]["end"] = "2000-04-01", "2000-06-01"
    raw["free"]["runs"]["ml-mlp"]["model"] = str(tmp_path / "model")
    raw["correction"]["mean_file"] = str(tmp_path / "mean.nc")
    return raw


def render(raw: dict, out: Path) -> dict[str, Path]:
    paths = lmdz.render_jobs(lmdz.LmdzJobConfig.from_dict(raw, tau_hours=TAU), out)
    return {str(p.relative_to(out)): p for p in paths}


def test_example_config_matches_schema_and_parses(raw):
    schema = yaml.safe_load(LMDZ_SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(raw)
    cfg = lmdz.LmdzJobConfig.from_dict(raw, tau_hours=TAU)
    assert cfg.slurm.account == "abc@cpu"
    assert [r.name for r in cfg.free_runs] == ["control", "mean", "ml-mlp"]
    assert cfg.nudging.tau_days == 0.25


def test_schema_rejects_what_the_parser_rejects(raw):
    schema = yaml.safe_load(LMDZ_SCHEMA.read_text())
    bad = copy.deepcopy(raw)
    bad["slurm"]["account"] = "abc@v100"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    with pytest.raises(lmdz.LmdzConfigError, match="slurm.account"):
        lmdz.LmdzJobConfig.from_dict(bad, tau_hours=TAU)
    bad = copy.deepcopy(raw)
    del bad["free"]["runs"]["ml-mlp"]["model"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    with pytest.raises(lmdz.LmdzConfigError, match=r"free.runs.ml-mlp.model' is missing"):
        lmdz.LmdzJobConfig.from_dict(bad, tau_hours=TAU)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("executable",), None, "'lmdz.executable' is missing"),
        (("guided", "start"), "2000-01-15", "first day of a month"),
        (("guided", "end"), "1999-01-01", "must be after"),
        (("nudging", "variables"), ["u", "w"], "nudging.variables"),
        (("nudging", "tau_hours"), 0, "nudging.tau_hours"),
        (("nudging", "file_pattern"), "{var}_{day}.nc", "nudging.file_pattern"),
        (("omp_threads",), 48, "exceeds slurm.cores_per_node"),
        (("calendar",), "julian", "'lmdz.calendar'"),
        (("mpi_tasks",), "40", "must be int"),
        (("slurm", "time_limit"), "20h", "slurm.time_limit"),
        (("slurm", "modules"), ["intel; rm -rf /"], "odd characters"),
        (("correction", "backend"), "onnx", "correction.backend"),
        (("free", "runs"), {"guided": {"correction": "none"}}, "not a usable run name"),
        (("free", "runs"), {"x": {"correction": "none", "model": "m"}}, "given for a run with correction"),
        (("free", "runs"), {"forecast": {"correction": "none"}}, "not a usable run name"),
        # forecast-error targets: inside the guided run, a lead the one-day forecast saves, a sample day
        (("forecast",), {"start": "1999-12-01", "end": "2000-02-01"}, "must lie inside lmdz.guided"),
        (("forecast",), {"start": "2000-01-01", "end": "2000-02-01", "lead_hours": 9}, "'lmdz.forecast.lead_hours' is 9"),
        (("forecast",), {"start": "2000-01-01", "end": "2000-02-01", "spinup_days": 31}, "has no sample day"),
        (("forecast",), {"start": "2000-01-01", "end": "2000-02-01", "samples_per_task": 0}, "forecast.samples_per_task"),
        (("forecast",), {"start": "2000-01-01", "end": "2000-02-01", "time_limit": "2h"}, "forecast.time_limit"),
    ],
)
def test_config_errors_name_the_key(raw, path, value, message):
    raw["guided"] = {"start": "2000-01-01", "end": "2001-01-01"}
    d = raw
    for k in path[:-1]:
        d = d[k]
    if value is None:
        del d[path[-1]]
    else:
        d[path[-1]] = value
    with pytest.raises(lmdz.LmdzConfigError, match=re.escape(message) if "'" in message else message):
        lmdz.LmdzJobConfig.from_dict(raw, tau_hours=TAU)


def test_tau_is_the_workflow_one_unless_the_lmdz_block_overrides_it(raw):
    assert "tau_hours" not in raw["nudging"]  # the example relies on the workflow's nudging.tau_hours
    assert lmdz.LmdzJobConfig.from_dict(raw, tau_hours=3.0).nudging.tau_hours == 3.0
    raw["nudging"]["tau_hours"] = 12
    assert lmdz.LmdzJobConfig.from_dict(raw, tau_hours=3.0).nudging.tau_hours == 12.0
    del raw["nudging"]["tau_hours"]
    with pytest.raises(lmdz.LmdzConfigError, match=r"'lmdz.nudging.tau_hours' is missing"):
        lmdz.LmdzJobConfig.from_dict(raw)


def test_lmdz_grid_defaults_to_lmdz6a_unless_set(raw):
    from nudgeml.naming import DEFAULT_LMDZ_GRID as DEFAULT_GRID
    from nudgeml.naming import lmdz_grid_size as lmdz_grid

    assert lmdz_grid({}) == DEFAULT_GRID == {"iim": 144, "jjm": 142}
    assert lmdz_grid({"grid": {"iim": 96}}) == {"iim": 96, "jjm": 142}
    assert lmdz_grid(raw) == {"iim": 144, "jjm": 142}


def test_month_segments_follow_the_calendar():
    p = lmdz.MonthRange(datetime.date(2000, 1, 1), datetime.date(2001, 3, 1))
    g = lmdz.month_segments(p, "gregorian")
    assert len(g) == 14
    assert (g[1].ndays, g[1].dayref, g[2].dayref) == (29, 32, 61)  # 2000 is a leap year
    assert (g[13].ndays, g[13].year, g[13].dayref) == (28, 2001, 32)
    assert [s.first for s in g[:2]] == [True, False]
    n = lmdz.month_segments(p, "earth_365d")
    assert n[1].ndays == 28 and n[2].dayref == 60
    c = lmdz.month_segments(p, "earth_360d")
    assert {s.ndays for s in c} == {30} and c[2].dayref == 61


def test_rendered_files_and_slurm_headers(raw, tmp_path):
    files = render(small(raw, tmp_path), tmp_path / "kit")
    assert set(files) == {
        "guided/guide.def", "guided/nudgeml.def", "guided/job_001.slurm", "guided/job_002.slurm", "guided/submit.sh",
        "control/nudgeml.def", "control/job_001.slurm", "control/submit.sh",
        "mean/nudgeml.def", "mean/job_001.slurm", "mean/submit.sh",
        "ml-mlp/nudgeml.def", "ml-mlp/job_001.slurm", "ml-mlp/submit.sh",
    }
    for name, path in files.items():
        if not name.endswith((".slurm", ".sh")):
            continue
        text = path.read_text()
        assert os.access(path, os.X_OK), name
        assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0, name
        assert "--mem" not in text, name  # Jean Zay refuses --mem
        if name.endswith(".slurm"):
            header = [ln for ln in text.splitlines() if ln.startswith("#SBATCH")]
            assert "#SBATCH --account=abc@cpu" in header
            assert "#SBATCH --hint=nomultithread" in header
            assert "#SBATCH --ntasks=40" in header and "#SBATCH --cpus-per-task=8" in header
            assert "#SBATCH --partition=cpu_p1" in header and "#SBATCH --qos=qos_cpu-t3" in header
            assert "#SBATCH --time=20:00:00" in header
            assert "export OMP_NUM_THREADS=8" in text and "export OMP_STACKSIZE=200M" in text
            assert "module load netcdf-fortran/4.5.3-mpi" in text
            assert re.search(r'^\s+srun "\$GCM"', text, re.M)
    assert "pytorch-gpu/py3" in files["ml-mlp/job_001.slurm"].read_text()
    assert "pytorch-gpu/py3" not in files["control/job_001.slurm"].read_text()
    submit = files["guided/submit.sh"].read_text()
    assert "sbatch --parsable job_001.slurm" in submit
    assert 'sbatch --parsable --dependency=afterok:"$prev" job_002.slurm' in submit


def test_guide_def(raw, tmp_path):
    raw = small(raw, tmp_path)
    raw["nudging"]["variables"] = ["u", "v", "T"]
    raw["nudging"]["tau_hours"] = 3
    files = render(raw, tmp_path / "kit")
    lines = files["guided/guide.def"].read_text().splitlines()
    keys = dict(ln.split("=", 1) for ln in lines if "=" in ln and not ln.startswith("#"))
    assert keys["ok_guide"] == "y"
    assert (keys["guide_u"], keys["guide_v"], keys["guide_T"], keys["guide_Q"], keys["guide_P"]) == ("y", "y", "y", "n", "n")
    for v in ("u", "v", "T"):
        assert keys[f"tau_min_{v}"] == keys[f"tau_max_{v}"] == "0.125"
    assert "tau_min_Q" not in keys
    assert (keys["iguide_read"], keys["guide_plevs"], keys["guide_sav"]) == ("4", "0", "y")
    job = files["guided/job_001.slurm"].read_text()
    assert f"T.nc={tmp_path}/forcing/T_200001.nc" in job
    assert "INCLUDEDEF=guide.def" in job and "guide_ins.nc" in job


def test_free_runs_def_files(raw, tmp_path):
    files = render(small(raw, tmp_path), tmp_path / "kit")

    def keys(name):
        return dict(ln.split("=", 1) for ln in files[name].read_text().splitlines() if "=" in ln and not ln.startswith("#"))

    assert keys("guided/nudgeml.def") == {"nudgeml_mode": "0"}
    assert keys("control/nudgeml.def") == {"nudgeml_mode": "0", "ok_guide": "n"}
    assert keys("mean/nudgeml.def") == {"nudgeml_mode": "1", "nudgeml_mean_file": "nudgeml_mean.nc",
                                        "nudgeml_interval_hours": "6", "ok_guide": "n"}
    ml = keys("ml-mlp/nudgeml.def")
    assert (ml["nudgeml_mode"], ml["nudgeml_model_dir"], ml["nudgeml_backend"], ml["nudgeml_torch_threads"]) == (
        "2", "model", "torchscript", "1")
    for run in ("control", "mean", "ml-mlp"):
        job = files[f"{run}/job_001.slurm"].read_text()
        assert "guide.def" not in job and "u.nc=" not in job
    assert "nudgeml_mean.nc" not in files["control/job_001.slurm"].read_text()


def _fake_world(tmp_path: Path, months: list[str]) -> dict[str, str]:
    """Stand-ins for srun, module and LMDZ; reference files; forcing files. Returns the job env."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scripts = {
        "srun": '#!/bin/bash\nexec "$@"\n',
        "module": "#!/bin/bash\necho \"module $*\" >> \"$FAKE_LOG\"\n",
        # The fake LMDZ checks what the real one needs and writes what the real one writes.
        "gcm.e": """#!/bin/bash
set -eu
for f in start.nc startphy.nc limit.nc run.def gcm.def nudgeml.def; do [ -e "$f" ] || { echo "no $f"; exit 3; }; done
get() { sed -n "s/^$1=//p" run.def; }
if grep -q '^INCLUDEDEF=guide.def' run.def; then
  [ -e u.nc ] && [ -e v.nc ] || { echo "no nudging files"; exit 4; }
  echo "$(get anneeref) $(readlink u.nc)" >> "$FAKE_LOG"
  echo guide > guide_ins.nc
fi
echo "gcm $(get anneeref) $(get dayref) $(get nday) $(get raz_date) start=$(cat start.nc) threads=$OMP_NUM_THREADS" >> "$FAKE_LOG"
echo "state after day $(get dayref)+$(get nday)" > restart.nc
cp restart.nc restartphy.nc
echo hist > histhf.nc
echo "Everything is cool"
""",
    }
    for name, text in scripts.items():
        p = bin_dir / name
        p.write_text(text)
        p.chmod(p.stat().st_mode | stat.S_IXUSR)
    ref = tmp_path / "ref"
    ref.mkdir()
    for f in ("start.nc", "startphy.nc", "limit.nc", "gcm.def", "physiq.def", "config.def", "output.def"):
        (ref / f).write_text("initial\n" if f.startswith("start") else f"# {f}\n")
    (ref / "gcm.def").write_text("# gcm.def\nday_step=480\niperiod=5\n")  # 480/4 = 120 steps, 24 Matsuno steps
    forcing = tmp_path / "forcing"
    forcing.mkdir()
    for tag in months:
        for var in ("u", "v"):
            (forcing / f"{var}_{tag}.nc").write_text(var)
    model = tmp_path / "model"
    model.mkdir()
    for f in ("model.json", "model.pt", "model.pt2"):
        (model / f).write_text(f)
    (tmp_path / "mean.nc").write_text("mean")
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", FAKE_LOG=str(tmp_path / "log"))
    return env


def test_rendered_jobs_run_month_by_month(raw, tmp_path):
    env = _fake_world(tmp_path, ["200001", "200002", "200003"])
    files = render(small(raw, tmp_path), tmp_path / "kit")
    runs = tmp_path / "runs"

    for job in ("guided/job_001.slurm", "guided/job_002.slurm"):
        r = subprocess.run(["bash", str(files[job])], env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
    log = (tmp_path / "log").read_text().splitlines()
    gcm = [ln for ln in log if ln.startswith("gcm ")]
    assert gcm == [
        "gcm 2000 1 31 1 start=initial threads=8",
        "gcm 2000 32 29 0 start=state after day 1+31 threads=8",
        "gcm 2000 61 31 0 start=state after day 32+29 threads=8",
    ]
    assert f"2000 {tmp_path}/forcing/u_200002.nc" in log
    assert "module load intel-all/2021.9" in log
    for tag in ("200001", "200002", "200003"):
        out = runs / "guided" / "output" / tag
        assert {p.name for p in out.iterdir()} == {".done", "histhf.nc", "guide_ins.nc", f"gcm_{tag}.out"}
    assert (runs / "guided" / "start.nc").read_text() == "state after day 61+31\n"

    # A rerun skips the months already done.
    r = subprocess.run(["bash", str(files["guided/job_002.slurm"])], env=env, capture_output=True, text=True)
    assert r.returncode == 0 and "month 200003 already done" in r.stdout
    assert len([ln for ln in (tmp_path / "log").read_text().splitlines() if ln.startswith("gcm ")]) == 3

    # The ML run brings its model and the mean tendency into its run directory.
    r = subprocess.run(["bash", str(files["ml-mlp/job_001.slurm"])], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    ml = runs / "ml-mlp"
    assert {p.name for p in (ml / "model").iterdir()} == {"model.json", "model.pt", "model.pt2"}
    assert (ml / "nudgeml_mean.nc").read_text() == "mean"
    assert "nudgeml_mode=2" in (ml / "nudgeml.def").read_text()
    assert not (ml / "guide.def").exists()


def test_missing_nudging_file_stops_the_job(raw, tmp_path):
    env = _fake_world(tmp_path, ["200001"])  # February missing
    files = render(small(raw, tmp_path), tmp_path / "kit")
    r = subprocess.run(["bash", str(files["guided/job_001.slurm"])], env=env, capture_output=True, text=True)
    assert r.returncode != 0
    assert f"nudging file missing for 200002: {tmp_path}/forcing/u_200002.nc" in r.stderr
    assert (tmp_path / "runs" / "guided" / "output" / "200001" / ".done").exists()
    assert not (tmp_path / "runs" / "guided" / "output" / "200002").exists()


@pytest.mark.parametrize(("gcm_def", "message"), [
    ("day_step=480\niperiod=7\n", "iguide_read=4: day_step/iguide_read = 480/4 is not a multiple of iperiod=7"),
    ("day_step=480\n   iperiod = 5\n", None),
    ("day_step=100\niperiod=5\n", "iguide_sav=8: day_step/iguide_sav = 100/8 is not a multiple of iperiod=5"),
    ("iperiod=5\n", "day_step and iperiod must be set in gcm.def"),
])
def test_nudging_steps_are_checked_against_iperiod(raw, tmp_path, gcm_def, message):
    """guide_main runs at the Matsuno steps only: a read or save between two of them is skipped."""
    env = _fake_world(tmp_path, ["200001", "200002", "200003"])
    (tmp_path / "ref" / "gcm.def").write_text(gcm_def)
    cfg = small(raw, tmp_path)
    cfg["nudging"]["save_per_day"] = 8
    files = render(cfg, tmp_path / "kit")
    r = subprocess.run(["bash", str(files["guided/job_001.slurm"])], env=env, capture_output=True, text=True)
    if message is None:
        assert r.returncode == 0, r.stderr
        return
    assert r.returncode != 0 and message in r.stderr, r.stderr
    assert not (tmp_path / "log").exists() or "gcm " not in (tmp_path / "log").read_text()


# ---------------------------------------------------------------------------------------------
# forecast-error targets: the spin-up run and the forecast array
# ---------------------------------------------------------------------------------------------


def with_forecast(raw: dict, tmp_path: Path, **kw) -> dict:
    raw = small(raw, tmp_path)
    raw["forecast"] = {"start": "2000-02-01", "end": "2000-03-01", "samples_per_task": 10, **kw}
    return raw


def test_forecast_kit_files_and_cost(raw, tmp_path):
    files = render(with_forecast(raw, tmp_path), tmp_path / "kit")
    cfg = lmdz.LmdzJobConfig.from_dict(with_forecast(raw, tmp_path), tau_hours=TAU, forecast={"spinup_tau_hours": 2.0})
    assert (cfg.forecast.spinup_tau_hours, cfg.forecast.lead_hours) == (2.0, 6.0)  # the workflow's forecast section
    assert {"spinup/job_001.slurm", "spinup/guide.def", "spinup/nudgeml.def", "forecast/forecast.slurm", "forecast/guide.def",
            "forecast/nudgeml.def", "forecast/submit.sh", "forecast/cost.json"} <= set(files)

    def keys(name):
        return dict(ln.split("=", 1) for ln in files[name].read_text().splitlines() if "=" in ln and not ln.startswith("#"))

    assert (keys("spinup/guide.def")["tau_min_u"], keys("spinup/guide.def")["tau_max_v"]) == ("0.0416667", "0.0416667")  # 1 h
    fc = keys("forecast/guide.def")
    assert (fc["ok_guide"], fc["tau_min_u"], fc["tau_max_u"], fc["guide_sav"], fc["iguide_sav"]) == ("y", "1e+06", "1e+06", "y", "4")
    assert keys("guided/guide.def")["tau_min_u"] == "0.25"  # the guided run keeps its own
    # 2000-02: 29 days; samples from the 2nd (one spin-up day) to the 29th; the spin-up run's days are the
    # 1st to the 28th (each one ends on the next day's 00 UTC)
    cost = json.loads(files["forecast/cost.json"].read_text())
    assert cost["guided"] == {"model_days": 91, "executions": 3, "model_days_over_the_sample_period": 29, "executions_over_the_sample_period": 1}
    assert cost["spinup"] == {"model_days": 28, "executions": 28, "jobs": 1}
    assert cost["forecasts"] == {"samples": 28, "model_days": 28, "executions": 28, "array_tasks": 3}
    assert cost["model_days_ratio_to_guided_over_the_sample_period"] == pytest.approx(56 / 29)
    array = files["forecast/forecast.slurm"].read_text()
    assert "#SBATCH --array=1-3" in array and "#SBATCH --time=02:00:00" in array and "%A_%a.out" in array
    assert array.count("run_forecast 2000") == 28 and "run_forecast 20000202 2000 02 02 33 1" in array
    # the guided job keeps its state at the end of January, where the spin-up run starts
    assert 'case "$tag" in 200001)' in files["guided/job_001.slurm"].read_text()
    assert "/runs/guided/output/200001" in files["spinup/job_001.slurm"].read_text()
    submit = files["forecast/submit.sh"].read_text()
    assert "../spinup/job_001.slurm" in submit and "--dependency=afterok:\"$prev\" forecast.slurm" in submit


FAKE_FORECAST_GCM = """#!/bin/bash
# Fake LMDZ for the forecast kit: checks the run directory, logs what it was given (the first
# nudging record's date and the number of records, cut by the job with cdo), writes the restart
# files, the history and, when nudging, guide_ins.nc.
set -eu
for f in start.nc startphy.nc limit.nc run.def gcm.def nudgeml.def; do [ -e "$f" ] || { echo "no $f"; exit 3; }; done
get() { sed -n "s/^$1=//p" run.def; }
first=$(cdo -s showtimestamp u.nc | awk '{print $1}')
n=$(cdo -s ntime u.nc)
echo "gcm $(get anneeref) $(get dayref) nday=$(get nday) raz=$(get raz_date) start=$(cat start.nc) u=$first/$n tau=$(sed -n 's/^tau_min_u=//p' guide.def) sav=$(sed -n 's/^iguide_sav=//p' guide.def)" >> "$FAKE_LOG"
echo "state after day $(get dayref)+$(get nday)" > restart.nc
cp restart.nc restartphy.nc
echo hist > histhf.nc
echo "guide $(get dayref)" > guide_ins.nc
"""


def test_forecast_kit_runs_spinup_then_array_tasks_with_real_cdo(raw, tmp_path):
    env = _fake_world(tmp_path, [])
    (tmp_path / "bin" / "gcm.e").write_text(FAKE_FORECAST_GCM)
    lmdz_nudging_files(tmp_path / "forcing", ["200001", "200002", "200003"])
    files = render(with_forecast(raw, tmp_path), tmp_path / "kit")
    runs = tmp_path / "runs"

    def run(job, **extra):
        r = subprocess.run(["bash", str(files[job])], env=dict(env, **extra), capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
        return r

    # the forecasts need the spin-up run's states
    r = subprocess.run(["bash", str(files["forecast/forecast.slurm"])], env=dict(env, SLURM_ARRAY_TASK_ID="1"), capture_output=True, text=True)
    assert r.returncode != 0 and "the spin-up run's state for 20000202 is missing" in r.stderr
    run("guided/job_001.slurm")  # January and February; keeps the end of January
    run("spinup/job_001.slurm")
    log = [ln for ln in (tmp_path / "log").read_text().splitlines() if ln.startswith("gcm ")]
    spin = [ln for ln in log if "tau=0.0416667" in ln]
    assert len(spin) == 28
    # day 1 of the spin-up: from the guided run's end of January, February's first day of records cut by cdo
    assert spin[0] == "gcm 2000 32 nday=1 raz=1 start=state after day 1+31 u=2000-02-01T00:00:00/5 tau=0.0416667 sav=4"
    assert spin[1] == "gcm 2000 33 nday=1 raz=0 start=state after day 32+1 u=2000-02-02T00:00:00/5 tau=0.0416667 sav=4"
    assert spin[-1].startswith("gcm 2000 59 nday=1 raz=0 start=state after day 58+1 u=2000-02-28T00:00:00/5")
    states = sorted(p.name for p in (runs / "spinup" / "states").iterdir())
    assert states == [f"200002{d:02d}" for d in range(2, 30)]
    assert (runs / "spinup" / "states" / "20000202" / "start.nc").read_text() == "state after day 32+1\n"

    run("forecast/forecast.slurm", SLURM_ARRAY_TASK_ID="3")  # the last task: samples 21 to 28
    fc = [ln for ln in (tmp_path / "log").read_text().splitlines() if "tau=1e+06" in ln]
    assert len(fc) == 8
    # the last sample day (the 29th, leap year): from the spin-up state at its 00 UTC, its day of records
    # (the 29th's four analyses and March 1st 00 UTC, the last record of February's file)
    assert fc[-1] == "gcm 2000 60 nday=1 raz=1 start=state after day 59+1 u=2000-02-29T00:00:00/5 tau=1e+06 sav=4"
    out = runs / "forecast" / "output" / "20000229"
    assert {p.name for p in out.iterdir()} == {".done", "guide_ins.nc", "histhf.nc", "gcm.out"}
    assert not (runs / "forecast" / "work" / "20000229").exists()  # the work directory is removed
    # a rerun skips the samples done; a task number outside the array is refused
    r = run("forecast/forecast.slurm", SLURM_ARRAY_TASK_ID="3")
    assert "sample 20000229 already done" in r.stdout
    assert len([ln for ln in (tmp_path / "log").read_text().splitlines() if "tau=1e+06" in ln]) == 8
    r = subprocess.run(["bash", str(files["forecast/forecast.slurm"])], env=dict(env, SLURM_ARRAY_TASK_ID="4"), capture_output=True, text=True)
    assert r.returncode != 0 and "array task 4 is outside 1-3" in r.stderr

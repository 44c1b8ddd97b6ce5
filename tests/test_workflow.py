"""The Snakemake workflow end to end on the tiny configuration (T21 truth, a few days), as a user runs it."""

import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def smk(*args, outdir, check=True, overlays=()):
    """Run snakemake on the tiny configuration (plus overlays, merged in order) into ``outdir``."""
    cmd = [*SNAKEMAKE, "--configfile", "config/tiny.yaml", *map(str, overlays), "--config", f"outdir={outdir}", "--cores", "2", *args]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}")
    return res


def job_stats(text):
    """The 'Job stats' table of a snakemake run: rule -> count."""
    block = text.split("Job stats:")[1].splitlines()
    stats = {}
    for line in block[3:]:
        parts = line.split()
        if not parts or parts[0] == "total":
            break
        stats[parts[0]] = int(parts[1])
    return stats


def dry_run_jobs(text):
    """The jobs a ``snakemake -n`` would run: (rule, wildcards) pairs, wildcards as printed ('' if none)."""
    jobs = []
    for block in text.split("\n\n"):
        lines = [ln.strip() for ln in block.splitlines()]
        rule = next((ln.split()[-1].rstrip(":") for ln in lines if ln.startswith(("rule ", "localrule "))), None)
        if rule is not None:
            wildcards = next((ln.removeprefix("wildcards:").strip() for ln in lines if ln.startswith("wildcards:")), "")
            jobs.append((rule, wildcards))
    return sorted(jobs)


@pytest.fixture(scope="module")
def workflow_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("wf") / "results"
    smk(outdir=out)
    return out


def test_outputs_and_bias_check(workflow_run):
    out = workflow_run
    for rel in ("era5/invariant.nc", "era5/pressure_levels/2000-02.nc", "grid/model_grid.nc", "forcing/2000-02.nc",
                "nudged/histhf.nc", "nudged/guide_ins.nc", "free/control/histhf.nc", "checks/bias_check.json",
                "columns/nudging/columns.nc", "datasets/nudging/dataset.zarr/zarr.json", "datasets/nudging/dataset.zarr/train/inputs/zarr.json",
                "models/mlp/trained.pt", "models/mlp/model.pt", "models/mlp/model.pt2", "models/mlp/model.json",
                "models/mlp/offline.json", "models/mlp/r2_by_level.png", "mean_tendency.nc",
                "free/control.m1/histhf.nc", "free/ml-mlp/status.json", "report/index.html", "report/metrics.json",
                "report/precip_mapping.nc"):
        assert (out / rel).exists(), rel
    result = json.loads((out / "checks/bias_check.json").read_text())
    assert set(result) >= {"nudged", "control", "_period"}
    assert result["_period"]["n_times"] == 8  # the free runs' 2 days
    for run in ("nudged", "control"):
        assert all(0 < result[run][k] < 20 for k in ("rmse_u", "rmse_v", "rmse_t"))
    # relaxed toward the truth, the nudged winds stay closer to it than the free control's
    assert result["nudged"]["rmse_u"] < result["control"]["rmse_u"]
    for rule in ("era5_standin", "model_grid", "nudged", "bias_check", "extract_nudging", "shard_nudging", "train_mlp", "precip_mapping", "report"):
        assert (out / "logs" / f"{rule}.log").exists() and (out / "benchmarks" / f"{rule}.tsv").exists()
    assert not list(out.rglob("*.tmp.nc")), "no temporary files left behind"
    metrics = json.loads((out / "report/metrics.json").read_text())
    runs = {row["run"] for row in metrics["table"]}
    assert runs == {"nudged", "control", "control.m1", "mean", "mean-monthly", "ml-mlp", "ml-mlp-mr-eddy-top"}
    assert set(metrics["noise_floor"]) == {"u", "v", "t", "q", "ps", "precip", "precip_mapped"}
    # the default maps every run's precipitation onto the analysis' too, fitted before the free runs (6 days)
    assert metrics["precip_mapping"]["n_days"] == 6 and metrics["precip_mapping"]["last_day"] < "2000-02-06"
    assert {"precip_mapped", "precip_pdf_mapped", "precip_w1_mapped"} <= set(metrics["ensembles"]["control"]["scores"])
    page = (out / "report/index.html").read_text()
    assert "data:image/png;base64," in page and "field-to-field floor" in page and 'src="http' not in page, "self-contained"
    assert page.index("What this report concludes") < page.index("Time-mean error"), "the page opens with its conclusion"
    assert metrics["spread_saturated"] is False and "class=banner" in page, "2-day members have not diverged: the page says so"
    assert "The mean-tendency baseline was computed from" in page and metrics["mean_coverage"]["window_months"] == [2]
    assert re.search(r"<td>\d+ of \d+ \([\d.e+-]+ %\)</td>", page), "guard shares with their denominators"


def test_dry_run_after_completion_has_nothing_to_do(workflow_run):
    res = smk("-n", outdir=workflow_run)
    assert "Nothing to be done" in res.stdout + res.stderr


def test_changed_run_setting_reruns_that_run_and_changed_resources_nothing(workflow_run, tmp_path):
    """Snakemake's own rerun detection (params trigger) after the completed run: a job's params are
    the keys it reads, so one run's `scale` reruns that run and what reads its output (bias check,
    report), and `resources` (read by the scheduler only) rerun nothing."""
    scale = tmp_path / "scale.yaml"
    scale.write_text("free_runs:\n  runs:\n    ml-mlp: {scale: 0.5}\n")
    res = smk("-n", overlays=[scale], outdir=workflow_run)
    text = res.stdout + res.stderr
    assert dry_run_jobs(text) == [("all", ""), ("bias_check", ""), ("free_run", "run=ml-mlp"), ("report", "")], text[-3000:]
    assert "Params have changed since last execution" in text
    resources = tmp_path / "resources.yaml"
    resources.write_text("resources:\n  report: {mem_mb: 7000, runtime: 45}\n  free_run: {threads: 2}\n  train: {mem_mb: 9000}\n")
    res = smk("-n", overlays=[resources], outdir=workflow_run)
    assert "Nothing to be done" in res.stdout + res.stderr, dry_run_jobs(res.stdout + res.stderr)


def test_a_calibrated_run_adds_its_calibration_and_nothing_upstream(workflow_run, tmp_path):
    """A calibrated ml run (nudgeml.calibrate) after the completed run: its calibration job, then its
    free run, reading the model, mean and store already there."""
    overlay = tmp_path / "eki.yaml"
    overlay.write_text("free_runs:\n  runs:\n    ml-eki: {correction: ml, model: mlp, mean_residual: true, calibrated: true}\n")
    res = smk("-n", overlays=[overlay], outdir=workflow_run)
    jobs = dry_run_jobs(res.stdout + res.stderr)
    assert jobs == [("all", ""), ("bias_check", ""), ("calibrate", "name=ml-eki"), ("free_run", "run=ml-eki"), ("report", "")], jobs


def test_a_feedback_run_adds_the_tuned_mean_and_nothing_upstream(workflow_run, tmp_path):
    """A mean run tuned on free runs of the training period (nudgeml.feedback) after the completed run:
    the feedback job, then its free run, reading the mean and store already there."""
    overlay = tmp_path / "feedback.yaml"
    overlay.write_text("free_runs:\n  runs:\n    mean-fb: {correction: mean, feedback: true}\n")
    res = smk("-n", overlays=[overlay], outdir=workflow_run)
    jobs = dry_run_jobs(res.stdout + res.stderr)
    assert jobs == [("all", ""), ("bias_check", ""), ("feedback_mean", ""), ("free_run", "run=mean-fb"), ("report", "")], jobs
    # tuned with the method in its runs (feedback.run): the same jobs; the feedback reads that run's model
    # and the nudged run its mean residual is taken over
    overlay.write_text("feedback: {run: ml-fbm}\nfree_runs:\n  runs:\n"
                       "    ml-fbm: {correction: ml, model: mlp, mean_residual: true, eddy_only: true, feedback: true}\n")
    res = smk("-n", overlays=[overlay], outdir=workflow_run)
    text = res.stdout + res.stderr
    assert dry_run_jobs(text) == [("all", ""), ("bias_check", ""), ("feedback_mean", ""), ("free_run", "run=ml-fbm"), ("report", "")], text[-3000:]
    block = text[text.index("rule feedback_mean:"):]
    inputs = block[block.index("input:"):].splitlines()[0]
    assert "models/mlp/model.json" in inputs and "nudged/histhf.nc" in inputs, inputs


def test_forcerun_nudged_reruns_only_downstream(workflow_run):
    res = smk("-n", "--forcerun", "nudged", outdir=workflow_run)
    text = res.stdout + res.stderr
    assert job_stats(text) == {"nudged": 1, "bias_check": 1, "extract": 1, "shard": 1, "train": 1, "export": 1, "offline_eval": 1, "mean_tendency": 1, "free_run": 4, "precip_mapping": 1, "report": 1, "all": 1}
    era5 = workflow_run / "era5/pressure_levels/2000-02.nc"
    before = era5.stat().st_mtime
    smk("--forcerun", "nudged", outdir=workflow_run)
    assert era5.stat().st_mtime == before


def test_forcerun_shard_rebuilds_only_the_store(workflow_run):
    res = smk("-n", "--forcerun", "shard", outdir=workflow_run)
    assert job_stats(res.stdout + res.stderr) == {"shard": 1, "train": 1, "export": 1, "offline_eval": 1, "mean_tendency": 1, "free_run": 4, "bias_check": 1, "report": 1, "all": 1}
    columns = workflow_run / "columns/nudging/columns.nc"
    before = columns.stat().st_mtime
    smk("--forcerun", "shard", outdir=workflow_run)
    assert columns.stat().st_mtime == before
    assert (workflow_run / "datasets/nudging/dataset.zarr/zarr.json").exists()


def test_forcerun_train_retrains_without_upstream(workflow_run):
    res = smk("-n", "--forcerun", "train", outdir=workflow_run)
    assert job_stats(res.stdout + res.stderr) == {"train": 1, "export": 1, "offline_eval": 1, "free_run": 2, "bias_check": 1, "report": 1, "all": 1}


def test_lmdz_backend_renders_forcing_and_jobs(workflow_run, tmp_path):
    overlay = tmp_path / "lmdz.yaml"
    overlay.write_text(f"""
lmdz:
  slurm: {{account: abc@cpu}}
  grid: {{iim: 48, jjm: 36}}
  executable: $WORK/LMDZ/gcm.e
  reference_dir: $WORK/ref
  run_root: $SCRATCH/nudgeml
  nudging: {{forcing_dir: {tmp_path / 'forcing'}, variables: [u, v]}}
  guided: {{start: "2000-01-01", end: "2000-02-01"}}  # January: February's first analysis closes it
  free: {{start: "2000-03-01", end: "2000-04-01", runs: {{control: {{correction: none}}, mean: {{correction: mean}}}}}}
  correction: {{mean_file: $WORK/mean_tendency.nc}}
""")
    smk("lmdz_jobs", overlays=[overlay], outdir=workflow_run)
    assert (tmp_path / "forcing" / "u_200001.nc").exists() and (tmp_path / "forcing" / "v_200001.nc").exists()
    jobs = workflow_run / "lmdz" / "jobs"
    scripts = sorted(p.name for p in jobs.rglob("*.slurm"))
    assert scripts, list(jobs.rglob("*"))
    text = next(jobs.rglob("*.slurm")).read_text()
    assert "#SBATCH --account=abc@cpu" in text and "--mem" not in text


def test_precompile_runs_before_the_nudged_run_only_with_a_cache(tmp_path):
    """The stand-in's precompile job is planned where its jobs share an XLA cache (jax_cache_dir), and
    not without one, where it would compile for nothing and the nudged run would wait for it."""
    res = smk("-n", outdir=tmp_path / "results")
    assert job_stats(res.stdout + res.stderr)["precompile"] == 1
    off = tmp_path / "nocache.yaml"
    off.write_text('jax_cache_dir: ""\n')
    stats = job_stats(smk("-n", overlays=[off], outdir=tmp_path / "results").stdout)
    assert "precompile" not in stats and stats["nudged"] == 1


def test_mistyped_config_key_fails_before_any_work(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("nudging:\n  tau_hourz: 3.0\n")
    out = tmp_path / "results"
    res = smk(overlays=[bad], outdir=out, check=False)
    assert res.returncode != 0
    assert "tau_hourz" in res.stdout + res.stderr
    assert not out.exists()


def test_cnn_model_trains_on_the_column_table(tmp_path):
    """A cnn in the config: its train and offline_eval jobs read the column table beside the store."""
    overlay = tmp_path / "cnn.yaml"
    overlay.write_text("models:\n  cnn: {kind: cnn, target: nudging, channels: 8, depth: 2}\ntrain:\n  models: [mlp, cnn]\n"
                       "free_runs:\n  runs:\n    ml-cnn: {correction: ml, model: cnn}\n")
    out = tmp_path / "results"
    res = smk("-n", overlays=[overlay], outdir=out)
    text = res.stdout + res.stderr
    stats = job_stats(text)
    assert stats["train"] == stats["export"] == stats["offline_eval"] == 2
    jobs = {}
    for block in text.split("\n\n"):
        lines = [ln.strip() for ln in block.splitlines()]
        rule = next((ln.split()[-1].rstrip(":") for ln in lines if ln.startswith(("rule ", "localrule "))), None)
        wildcards = next((ln for ln in lines if ln.startswith("wildcards:")), "")
        inputs = next((ln for ln in lines if ln.startswith("input:")), "")
        if rule in ("train", "offline_eval"):
            jobs[(rule, wildcards.split("model=")[-1])] = inputs
    for rule in ("train", "offline_eval"):
        assert f"{out}/columns/nudging/columns.nc" in jobs[(rule, "cnn")], jobs
        assert f"{out}/datasets/nudging/dataset.zarr" in jobs[(rule, "cnn")]
        assert "columns.nc" not in jobs[(rule, "mlp")], "column models read only the store"
    assert not out.exists()


def test_iterations_chain_nudged_runs_trainings_and_means(tmp_path):
    """iterations: 2 for the MLP and for a mean run: two corrected nudged runs per chain, each
    iteration's model trained on the previous one's run, the last one in models/mlp."""
    overlay = tmp_path / "iter.yaml"
    overlay.write_text("models:\n  mlp:\n    iterations: 2\nfree_runs:\n  runs:\n    mean-it2: {correction: mean, climatology: annual, iterations: 2}\n")
    res = smk("-n", overlays=[overlay], outdir=tmp_path / "results")
    text = res.stdout + res.stderr
    stats = job_stats(text)
    assert stats["nudged"] == 1 and stats["nudged_iter"] == 4 and stats["mean_tendency_iter"] == 2
    assert stats["train_iter"] == stats["export_iter"] == 2 and stats["train"] == stats["export"] == 1
    assert stats["extract"] == stats["shard"] == 3  # the plain nudged run, k1, k2
    out = tmp_path / "results"
    # the final model learns from the run corrected by k1, which learned from the run corrected by k0
    assert re.search(rf"input: {out}/datasets/iter/mlp/k2/dataset.zarr\n\s+output: {out}/models/mlp/trained.pt", text)
    assert re.search(rf"{out}/models/mlp/k1/model.pt\n\s+output: {out}/iter/mlp/k2/nudged/histhf.nc, {out}/iter/mlp/k2/nudged/guide_ins.nc, {out}/iter/mlp/k2/nudged/correction_ins.nc", text)
    assert re.search(rf"input: {out}/datasets/nudging/dataset.zarr\n\s+output: {out}/models/mlp/k0/trained.pt", text)
    assert re.search(rf"{out}/iter/mean-annual/k2/mean_tendency.nc\n\s+output: {out}/free/mean-it2/histhf.nc", text)


def test_config_errors_and_numeric_overrides_from_the_command_line(tmp_path):
    """A numeric --config override works (Snakemake passes it as a string); an unknown key, a bad sign
    and a bad date are each named in a few lines, before any work."""
    out = tmp_path / "results"
    ok = smk("-n", "--config", "model={physics: {convection.trcnv: 9.0}}", outdir=out)
    assert "This was a dry-run" in ok.stdout + ok.stderr
    for override, message in (
        ("unknown_key=1", "config key '<top level>': Additional properties are not allowed ('unknown_key' was unexpected)"),
        ("nudging={tau_hours: -1}", "config key 'nudging.tau_hours': -1 is less than or equal to the minimum of 0"),
        ('period={start: "2000-13-01T00:00"}', "config key 'period.start': '2000-13-01T00:00' is not a valid date-time"),
    ):
        res = smk("-n", "--config", override, outdir=out, check=False)
        text = res.stdout + res.stderr
        assert res.returncode != 0 and message in text, text[-2000:]
        lines = text[text.index("ConfigError"):].splitlines()
        block = lines[:2] + [line for line in itertools.takewhile(lambda x: x.startswith("  File "), lines[2:])]
        assert len(block) <= 5, f"the error takes {len(block)} lines:\n" + "\n".join(lines[:10])
    assert not out.exists()

"""The Jean Zay profile: its content, a dry run without SLURM, and the tiny workflow on a real SLURM.

The cluster (scripts/slurm_cluster.sh) is a one-node SLURM 22.05 with slurmdbd, built from Debian
packages, with Jean Zay's partition names and accounts ``nud@cpu``, ``nud@v100``, ...: the profile runs
unchanged, with NUDGEML_JZ_PROJECT=nud as the only difference from a Jean Zay session.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
import yte

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "profiles" / "jeanzay" / "config.yaml"
CLUSTER = REPO / "scripts" / "slurm_cluster.sh"
PROJECT = "nud"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]

#: The issue's placement policy: downloads, CDO and light work on prepost; GCM runs on the CPU partition.
PARTITION_POLICY = {
    "era5_cds": "prepost", "era5_cds_invariant": "prepost", "model_grid": "prepost", "regrid": "prepost",
    "bias_check": "prepost", "report": "prepost", "precip_mapping": "prepost", "mean_tendency": "prepost", "mean_tendency_iter": "prepost", "offline_eval": "prepost",
    "lmdz_forcing": "prepost", "lmdz_jobs": "prepost",
    "era5_standin": "cpu_p1", "nudged": "cpu_p1", "nudged_iter": "cpu_p1", "free_run": "cpu_p1", "replay": "cpu_p1", "forecast": "cpu_p1", "calibrate": "cpu_p1", "feedback_mean": "cpu_p1",
    "train_online": "cpu_p1", "precompile": "cpu_p1",
    "extract": "cpu_p1", "shard": "cpu_p1", "export": "cpu_p1", "export_iter": "cpu_p1",
    "train": "gpu_p13", "train_iter": "gpu_p13",  # the GPU partition (V100 by default; see GPU_POLICY)
}
#: What the real-SLURM test builds: every CPU stage of the tiny workflow (training needs a GPU node).
CPU_TARGETS = ("nudged/histhf.nc", "free/control/histhf.nc", "datasets/nudging/dataset.zarr", "mean_tendency.nc")
GPU_POLICY = {  # partition, constraint, account suffix, CPUs per GPU (Jean Zay's documentation)
    "v100": ("gpu_p13", None, "v100", 10),
    "a100": ("gpu_p5", "a100", "a100", 8),
    "h100": ("gpu_p6", "h100", "h100", 24),
}


SLURM_COMMANDS = re.compile(r"s(batch|run|queue|info|acct|acctmgr|control|cancel|share|alloc|attach|bcast|crontab|diag|prio|report|stat|trigger|view|h5util)")


def load_profile(monkeypatch, **env) -> dict:
    """The profile as Snakemake reads it (YTE-rendered) under the given NUDGEML_JZ_* variables."""
    for var in ("NUDGEML_JZ_PROJECT", "NUDGEML_JZ_GPU", "NUDGEML_JZ_GCM"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    with PROFILE.open() as fh:
        return yte.process_yaml(fh, require_use_yte=True)


def workflow_rules(source: str, tmp_path: Path) -> list[str]:
    overlay = tmp_path / f"{source}.yaml"
    overlay.write_text(yaml.safe_dump({"era5": {"source": source}}))
    res = subprocess.run([*SNAKEMAKE, "--list-rules", "--configfile", str(overlay)], cwd=REPO, capture_output=True, text=True, check=True)
    return [line.strip() for line in res.stdout.splitlines() if re.fullmatch(r"\w+", line.strip())]


# --------------------------------------------------------------------------------------------------
# The profile
# --------------------------------------------------------------------------------------------------


def test_every_workflow_rule_has_a_profile_entry(monkeypatch, tmp_path):
    profile = load_profile(monkeypatch, NUDGEML_JZ_PROJECT=PROJECT)
    entries = profile["set-resources"]
    rules = set(workflow_rules("standin", tmp_path)) | set(workflow_rules("cds", tmp_path))
    assert {"era5_standin", "era5_cds", "regrid", "nudged"} <= rules
    lmdz = tmp_path / "lmdz.yaml"  # the lmdz backend's rules exist only with an lmdz block
    lmdz.write_text((REPO / "lmdz" / "config.example.yaml").read_text())
    res = subprocess.run([*SNAKEMAKE, "--list-rules", "--configfile", str(lmdz)], cwd=REPO, capture_output=True, text=True, check=True)
    rules |= {line.strip() for line in res.stdout.splitlines() if re.fullmatch(r"\w+", line.strip())}
    assert {"lmdz_forcing", "lmdz_jobs", "train", "report"} <= rules
    for rule in sorted(rules - {"all"}):
        assert rule in entries, f"rule {rule!r} has no line under set-resources in {PROFILE.relative_to(REPO)}"
        assert entries[rule]["mem_mb"] == 0, f"{rule}: Jean Zay rejects --mem; set mem_mb: 0"
        assert entries[rule]["slurm_partition"] == PARTITION_POLICY.get(rule), f"{rule}: partition differs from PARTITION_POLICY (or add it there)"
    defaults = profile["default-resources"]
    assert defaults["slurm_account"] == f"{PROJECT}@cpu" and defaults["mem_mb"] == 0
    assert defaults["slurm_extra"] == "'--hint=nomultithread'"
    assert profile["executor"] == "slurm"


@pytest.mark.parametrize("gpu", sorted(GPU_POLICY))
def test_gpu_switch_sets_partition_constraint_account_and_cpus(monkeypatch, gpu):
    partition, constraint, suffix, cpus = GPU_POLICY[gpu]
    train = load_profile(monkeypatch, NUDGEML_JZ_PROJECT=PROJECT, NUDGEML_JZ_GPU=gpu)["set-resources"]["train"]
    assert train == {"slurm_partition": partition, **({"constraint": constraint} if constraint else {}),
                     "slurm_account": f"{PROJECT}@{suffix}", "gres": "gpu:1", "cpus_per_task": cpus, "mem_mb": 0}


def test_gcm_runs_are_placed_by_the_profile_and_sized_by_the_backend(monkeypatch):
    """The profile no longer has a GCM switch (NUDGEML_JZ_GCM gave 40 MPI tasks to stand-in jobs): it
    places nudged, forecast and free_run on cpu_p1 and leaves their CPUs to the backend's resources
    (tasks x threads with mpi=srun for LMDZ, threads for the stand-in; tests/test_gcm_backends.py)."""
    profile = load_profile(monkeypatch, NUDGEML_JZ_PROJECT=PROJECT, NUDGEML_JZ_GCM="lmdz")
    entries = profile["set-resources"]
    for rule in ("nudged", "forecast", "free_run"):
        assert entries[rule] == {"slurm_partition": "cpu_p1", "mem_mb": 0}, rule
    for rule in ("era5_standin", "replay", "nudged_iter"):  # always the stand-in: one process
        assert entries[rule]["cpus_per_task"] == 2 and "mpi" not in entries[rule] and "tasks" not in entries[rule]
    assert "NUDGEML_JZ_GCM" not in PROFILE.read_text()


def test_profile_turns_off_the_memory_fudge_and_loads_gpu_modules_in_the_job(monkeypatch):
    profile = load_profile(monkeypatch, NUDGEML_JZ_PROJECT=PROJECT)
    assert profile["slurm-disable-memory-fudge"] is True  # Jean Zay gives memory with cores: no --mem added
    assert profile["software-deployment-method"] == ["env-modules"]
    rules = {f.stem: f.read_text() for f in (REPO / "workflow" / "rules").glob("*.smk")}
    for rule_file, rule in (("train", "train"), ("iterate", "train_iter")):
        body = re.search(rf"^rule {rule}:\n((?:    .*\n|\n)*?)(?=^\S|\Z)", rules[rule_file], re.M).group(1)  # up to the next unindented line
        assert "envmodules:\n        *gpu_envmodules()," in body, rule
    modules = yaml.safe_load((REPO / "config" / "jeanzay.yaml").read_text())["envmodules"]["gpu"]
    assert modules["a100"][0] == "arch/a100" and modules["h100"][0] == "arch/h100"
    for kind, mods in modules.items():
        assert kind in GPU_POLICY and mods[-1].startswith("pytorch-gpu/"), kind


@pytest.mark.parametrize("env, named", [({}, "NUDGEML_JZ_PROJECT"), ({"NUDGEML_JZ_PROJECT": "nud", "NUDGEML_JZ_GPU": "p100"}, "NUDGEML_JZ_GPU='p100'")])
def test_bad_switches_fail_with_their_name(tmp_path, env, named):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NUDGEML_JZ_")}
    res = subprocess.run([*SNAKEMAKE, "--profile", str(PROFILE.parent), "-n", "--config", f"outdir={tmp_path}"],
                         cwd=REPO, capture_output=True, text=True, env={**clean, **env})
    assert res.returncode != 0 and named in res.stderr


def test_the_workflow_profile_does_not_override_jeanzay():
    """profiles/default is applied after --profile and wins: it must not set what jeanzay sets."""
    default = yaml.safe_load((REPO / "profiles" / "default" / "config.yaml").read_text())
    jeanzay = yaml.safe_load(PROFILE.read_text())
    clash = {k for k in set(default) & set(jeanzay) if default[k] != jeanzay[k]}
    assert not clash, f"profiles/default would override the jeanzay profile's {sorted(clash)}"


def test_dry_run_without_slurm_prints_the_jobs(tmp_path):
    """The literal `snakemake --profile jeanzay -n` from the repository root, SLURM absent from PATH."""
    subprocess.run([str(REPO / "scripts" / "setup.sh"), "--profiles-only"], check=True)
    assert (REPO / "jeanzay").is_symlink()
    nobin = tmp_path / "bin"  # the system's commands without SLURM's
    nobin.mkdir()
    for d in ("/usr/local/bin", "/usr/bin", "/bin"):
        for exe in Path(d).iterdir() if Path(d).is_dir() else ():
            if not SLURM_COMMANDS.fullmatch(exe.name) and not (nobin / exe.name).exists():
                (nobin / exe.name).symlink_to(exe)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "NUDGEML_JZ_"))}
    env.update(PATH=f"{Path(sys.executable).parent}:{nobin}", NUDGEML_JZ_PROJECT=PROJECT)
    assert shutil.which("sbatch", path=env["PATH"]) is None and shutil.which("sinfo", path=env["PATH"]) is None
    res = subprocess.run(["snakemake", "--profile", "jeanzay", "-n", "--config", f"outdir={tmp_path / 'results'}"], cwd=REPO,
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    jobs = re.findall(r"^rule (\w+):\n(?:    .*\n)*?    resources: (.*)$", res.stdout, re.M)
    assert sorted({rule for rule, _ in jobs}) == ["all", "bias_check", "era5_standin", "export", "extract", "free_run", "mean_tendency",
                                                   "model_grid", "nudged", "offline_eval", "precip_mapping", "precompile", "regrid", "report", "shard", "train"]
    for rule, resources in jobs:
        if rule in ("all", "train"):
            assert rule == "all" or ("slurm_partition=gpu_p13" in resources and f"slurm_account={PROJECT}@v100" in resources and "gres=gpu:1" in resources), resources
            continue
        assert f"slurm_partition={PARTITION_POLICY[rule]}" in resources and f"slurm_account={PROJECT}@cpu" in resources, (rule, resources)
        assert "mem_mb=0," in resources and "slurm_extra=--hint=nomultithread" in resources, (rule, resources)


# --------------------------------------------------------------------------------------------------
# A real SLURM
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster():
    if os.geteuid() != 0:
        pytest.skip("the one-node SLURM cluster runs its daemons as root")
    root = Path(tempfile.mkdtemp(prefix="nudgeml-slurm-", dir="/tmp"))  # short: unix socket paths
    t0 = time.monotonic()
    start = subprocess.run([str(CLUSTER), "start", str(root), PROJECT], capture_output=True, text=True, timeout=300)
    try:
        assert start.returncode == 0, f"cluster did not start:\n{start.stderr[-4000:]}"
        print(f"cluster up in {time.monotonic() - t0:.1f} s")
        yield {"SLURM_CONF": str(root / "slurm.conf"), "root": root}
    finally:
        stop = subprocess.run([str(CLUSTER), "stop", str(root)], capture_output=True, text=True, timeout=300)
        alive = [p.name for p in (root / "run").glob("*.pid")] if (root / "run").exists() else []
        shutil.rmtree(root, ignore_errors=True)
        assert stop.returncode == 0 and not alive, f"cluster did not stop cleanly: {alive}\n{stop.stderr[-2000:]}"
        assert not Path("/etc/slurm/slurm.conf").is_symlink() or Path(os.readlink("/etc/slurm/slurm.conf")).parent != root


def sacct_jobs(env) -> list[dict[str, str]]:
    fields = ["JobID", "JobName", "Partition", "Account", "Comment", "AllocCPUS", "Timelimit", "State", "ReqTRES", "SubmitLine"]
    res = subprocess.run(["sacct", "-X", "--parsable2", "--noheader", "--allusers", "--starttime", "now-1days",
                          f"--format={','.join(fields)}"], capture_output=True, text=True, env=env, check=True)
    return [dict(zip(fields, line.split("|", len(fields) - 1))) for line in res.stdout.splitlines() if line.strip()]


@pytest.mark.slurm
@pytest.mark.slow
def test_tiny_workflow_runs_as_one_slurm_job_per_rule(cluster, tmp_path, monkeypatch):
    out = tmp_path / "results"
    env = {**os.environ, "SLURM_CONF": cluster["SLURM_CONF"], "NUDGEML_JZ_PROJECT": PROJECT, "PYTHONUNBUFFERED": "1"}
    t0 = time.monotonic()
    res = subprocess.run([*SNAKEMAKE, "--profile", str(PROFILE.parent), "--configfile", "config/tiny.yaml", "--config", f"outdir={out}",
                          "--", *(str(out / t) for t in CPU_TARGETS)], cwd=REPO, capture_output=True, text=True, env=env, timeout=1500)
    elapsed = time.monotonic() - t0
    jobs = sacct_jobs(env)
    print(f"workflow through SLURM in {elapsed:.0f} s; sacct:")
    for j in jobs:
        print("  " + " | ".join(f"{k}={v}" for k, v in j.items() if k != "SubmitLine"))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    assert (out / "datasets" / "nudging" / "dataset.zarr" / "zarr.json").exists() and (out / "mean_tendency.nc").exists()

    profile = load_profile(monkeypatch, NUDGEML_JZ_PROJECT=PROJECT)
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["resources"]
    config_key = {"era5_standin": "era5"}
    expected = {"era5_standin": 1, "model_grid": 1, "precompile": 1, "regrid": 2, "nudged": 1, "free_run": 1, "extract": 1, "shard": 1, "mean_tendency": 1}
    by_rule: dict[str, list[dict[str, str]]] = {}
    for job in jobs:
        rule = re.fullmatch(r"rule_(\w+?)(?:_wildcards_.*)?", job["Comment"]).group(1)
        by_rule.setdefault(rule, []).append(job)
    # each rule ran as its own SLURM job(s): one per month for regrid; `all` runs in snakemake itself
    assert {r: len(v) for r, v in by_rule.items()} == expected
    assert len({j["JobName"] for j in jobs}) == 1, "all jobs belong to one snakemake run"
    for rule, rule_jobs in by_rule.items():
        entry = profile["set-resources"][rule]
        rcfg = config[config_key.get(rule, rule)]
        cpus = entry.get("cpus_per_task", rcfg["threads"])
        for job in rule_jobs:
            assert job["State"] == "COMPLETED", job
            assert job["Partition"] == PARTITION_POLICY[rule], job
            assert job["Account"] == f"{PROJECT}@cpu", job
            assert int(job["AllocCPUS"]) == cpus, job
            hours, minutes = divmod(rcfg["runtime"], 60)
            assert job["Timelimit"] == f"{hours:02d}:{minutes:02d}:00", job
            # no --mem: SLURM gave the memory that comes with the cores (DefMemPerCPU=4000 here)
            assert f"mem={4000 * cpus}M" in job["ReqTRES"], job
            assert "--hint=nomultithread" in job["SubmitLine"] and "--mem" not in job["SubmitLine"], job["SubmitLine"][:400]

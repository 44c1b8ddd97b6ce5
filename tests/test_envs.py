"""The conda route of envs/README.md: one environment file that every rule names, usable from a copy."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CONDA = shutil.which("conda")
MICROMAMBA = shutil.which("micromamba")


def test_env_file_names_no_path_and_every_rule_uses_it():
    """Snakemake creates the environment from a copy under .snakemake/conda/: the file holds conda
    packages only (the checkout is installed by the post-deploy script), and all rules share it."""
    env = yaml.safe_load((REPO / "envs" / "nudgeml.yaml").read_text())
    deps = env["dependencies"]
    assert all(isinstance(d, str) for d in deps), f"no pip: section in envs/nudgeml.yaml: {deps}"
    assert {d.split("=")[0] for d in deps} == {"python", "cdo", "pip"}
    deploy = (REPO / "envs" / "nudgeml.post-deploy.sh").read_text()
    assert 'pip install -q -c requirements/constraints.txt -e ".[xgb-cpu]"' in deploy
    rule_files = sorted((REPO / "workflow" / "rules").glob("*.smk"))
    rules = sum(len(re.findall(r"^\s*rule \w+:", f.read_text(), re.M)) for f in rule_files)
    envs = [e for f in rule_files for e in re.findall(r"^\s*conda:\s*\n\s*(\S+)", f.read_text(), re.M)]
    assert len(envs) == rules and set(envs) == {'"../../envs/nudgeml.yaml"'}, envs


@pytest.mark.slow
@pytest.mark.skipif(CONDA is None, reason="no conda on PATH" + (" (micromamba alone cannot run --sdm conda)" if MICROMAMBA else "") + ": `snakemake --sdm conda` is not exercised here")
def test_sdm_conda_builds_the_environment_and_runs_a_job_in_it(tmp_path):
    out = tmp_path / "results"
    target = out / "grid" / "model_grid.nc"
    cmd = [sys.executable, "-m", "snakemake", "--sdm", "conda", "--conda-prefix", str(tmp_path / "conda"), "--cores", "1",
           "--configfile", "config/tiny.yaml", "--config", f"outdir={out}", "--", str(target)]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    text = res.stdout + res.stderr
    assert res.returncode == 0, text[-4000:]
    assert target.exists()
    assert "Running post-deploy script" in text and "Activating conda environment" in text, text[-4000:]

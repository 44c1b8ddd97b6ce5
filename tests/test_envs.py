"""The conda route of envs/README.md: one environment the user creates, which every rule names."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CONDA = shutil.which("conda")
MICROMAMBA = shutil.which("micromamba")


def test_env_file_names_no_path():
    """conda resolves a pip section's paths against the file's folder, micromamba against a temporary
    one, Snakemake against its copy under .snakemake/conda/: the file holds conda packages only."""
    env = yaml.safe_load((REPO / "envs" / "nudgeml.yaml").read_text())
    assert env["channels"] == ["conda-forge"]
    deps = env["dependencies"]
    assert all(isinstance(d, str) for d in deps), f"no pip: section in envs/nudgeml.yaml: {deps}"
    assert {d.split("=")[0] for d in deps} == {"python", "cdo", "pip"}


@pytest.mark.slow
@pytest.mark.skipif(CONDA is None and MICROMAMBA is None, reason="neither conda nor micromamba on PATH: the conda environment of envs/README.md is not built here")
def test_sdm_conda_runs_a_job_in_the_created_environment(tmp_path):
    """The two steps of envs/README.md into a fresh prefix, then one job with --sdm conda in it."""
    tool = CONDA or MICROMAMBA
    prefix = tmp_path / "env"
    create = ["env", "create"] if tool == CONDA else ["create", "--yes"]
    subprocess.run([tool, *create, "-p", str(prefix), "-f", "envs/nudgeml.yaml"], cwd=REPO, check=True)
    pip = ["python", "-m", "pip", "install", "-q", "-c", "requirements/constraints.txt", "-e", ".[xgb-cpu]"]
    subprocess.run([tool, "run", "-p", str(prefix), *pip], cwd=REPO, check=True)
    if CONDA is None:
        pytest.skip("micromamba built the environment; `snakemake --sdm conda` needs conda itself")
    out = tmp_path / "results"
    target = out / "grid" / "model_grid.nc"
    cmd = [sys.executable, "-m", "snakemake", "--sdm", "conda", "--cores", "1", "--configfile", "config/tiny.yaml", "--config", f"outdir={out}", "--", str(target)]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, "NUDGEML_CONDA_ENV": str(prefix)})
    text = res.stdout + res.stderr
    assert res.returncode == 0, text[-4000:]
    assert target.exists()

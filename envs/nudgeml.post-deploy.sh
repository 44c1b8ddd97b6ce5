#!/usr/bin/env bash
# Run by Snakemake (--sdm conda) inside the environment it just created from envs/nudgeml.yaml, from its
# working directory, which is the nudgeml checkout (the workflow is always run from there): installs
# the checkout with its pinned dependencies, as scripts/setup.sh does for the venv.
set -euo pipefail
if ! grep -qs '^name = "nudgeml"' pyproject.toml; then
  echo "envs/nudgeml.post-deploy.sh: run snakemake from the nudgeml checkout (no nudgeml pyproject.toml in $PWD)" >&2
  exit 1
fi
python -m pip install -q -c requirements/constraints.txt -e ".[xgb-cpu]"

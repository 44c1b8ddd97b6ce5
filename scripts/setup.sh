#!/usr/bin/env bash
# Set up everything nudgeml needs on a fresh Debian machine (Python 3.11, root or sudo):
# system packages (cdo for regridding, gfortran/cmake/g++ for the Fortran bridge) and a virtual
# environment with the pinned Python dependencies. Idempotent: reruns only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(cdo gfortran g++ cmake make)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "setup: installing system packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.nudgeml-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ requirements/constraints.txt -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q "pip==26.3"
  # torch is pinned to 2.13.0: on this platform's pip configuration that is the local CPU wheel;
  # xgboost-cpu is the CPU build of XGBoost (the CUDA one comes from the xgb-cuda extra).
  .venv/bin/python -m pip install -q -c requirements/constraints.txt -e ".[test,xgb-cpu]"
  touch "$stamp"
fi
echo "setup: done ($(.venv/bin/python -c 'import nudgeml, torch, jcm; print("nudgeml", nudgeml.__version__, "torch", torch.__version__, "jcm", jcm.__version__)'); $(cdo --version 2>&1 | head -1))"

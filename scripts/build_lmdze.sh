#!/usr/bin/env bash
# Build LMDZE's gcm and ce0l under build/lmdze (docs/lmdze.md). Sources: LMDZE_SRC, JUMBLE_SRC,
# NETCDF95_SRC, LGUEZ_CMAKE_SRC (or LMDZE_SOURCES holding the four checkouts), or --clone from GitHub.
# System packages: scripts/setup.sh --lmdze. Reruns skip the steps whose inputs did not change.
#   scripts/build_lmdze.sh [--clone] [-j N] [--build-dir DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" exec "$PYTHON" -m nudgeml.lmdze_build "$@"

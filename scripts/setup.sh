#!/usr/bin/env bash
# Set up everything nudgeml needs on a fresh Debian machine (Python 3.11, root or sudo):
# system packages (cdo for regridding, gfortran/cmake/g++ for the Fortran bridge) and a virtual
# environment with the pinned Python dependencies. Idempotent: reruns only what is missing.
#   --test           also the Debian packages of the one-node SLURM cluster the tests start
#                    (scripts/slurm_cluster.sh): slurm-wlm slurmdbd munge mariadb-server, and
#                    real ERA5 GRIB for tests/test_grib.py: the cfgrib 0.9.15.1 source distribution
#                    from PyPI (sha256 checked) into .cache/test-data (NUDGEML_TEST_DATA names another)
#   --profiles-only  only link the cluster profiles (./jeanzay -> profiles/jeanzay)
#   --lmdze          also what building LMDZE needs (scripts/build_lmdze.sh, docs/lmdze.md):
#                    libnetcdff-dev netcdf-bin (NetCDF-Fortran, ncdump)
# Without apt-get (Jean Zay), system packages are skipped: load modules instead (docs/production.md, "Jean Zay").
set -euo pipefail
cd "$(dirname "$0")/.."

with_test=0
with_lmdze=0
profiles_only=0
for arg in "$@"; do
  case "$arg" in
    --test) with_test=1 ;;
    --lmdze) with_lmdze=1 ;;
    --profiles-only) profiles_only=1 ;;
    *) echo "usage: $0 [--test] [--lmdze] [--profiles-only]" >&2; exit 2 ;;
  esac
done

# `snakemake --profile NAME` looks for NAME in the working directory (then ~/.config/snakemake):
# link every cluster profile into the repository root so the bare name works from here.
for profile in profiles/*/; do
  name=$(basename "$profile")
  [ "$name" = default ] && continue  # the workflow profile, applied automatically
  if [ -e "$name" ] && [ ! -L "$name" ]; then
    echo "setup: ./$name exists and is not a link: not linking profiles/$name" >&2
  else
    ln -sfn "profiles/$name" "$name"
  fi
done
[ "$profiles_only" -eq 1 ] && exit 0

APT_PACKAGES=(cdo gfortran g++ cmake make)
if [ "$with_test" -eq 1 ]; then
  # SLURM 22.05, its accounting daemon and database, munge (tests/test_slurm.py)
  APT_PACKAGES+=(slurm-wlm slurmdbd slurm-wlm-mysql-plugin munge mariadb-server)
fi
if [ "$with_lmdze" -eq 1 ]; then
  APT_PACKAGES+=(libnetcdff-dev netcdf-bin)
fi
missing=()
if command -v apt-get >/dev/null && command -v dpkg >/dev/null; then
  for p in "${APT_PACKAGES[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
else
  echo "setup: no apt-get here: skipping system packages (${APT_PACKAGES[*]}); cdo must be on PATH"
fi
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
# Real ERA5 GRIB (from the CDS) that cfgrib's source distribution ships for its own tests, and the
# netCDF cfgrib made of it: pinned by version and sha256, unpacked next to the archive (not committed).
CFGRIB_SDIST=cfgrib-0.9.15.1.tar.gz
CFGRIB_SHA256=d959d8b97e55a63646fa86686b297905ff7f2918a91e3a11d6292dab09598e4d
TEST_DATA="${NUDGEML_TEST_DATA:-.cache/test-data}"
if [ "$with_test" -eq 1 ] && [ ! -f "$TEST_DATA/era5-levels-members.grib" ]; then
  mkdir -p "$TEST_DATA"
  [ -f "$TEST_DATA/$CFGRIB_SDIST" ] || .venv/bin/python -m pip download -q --no-deps --no-binary :all: "cfgrib==0.9.15.1" -d "$TEST_DATA"
  if ! echo "$CFGRIB_SHA256  $TEST_DATA/$CFGRIB_SDIST" | sha256sum -c --quiet -; then
    echo "setup: $TEST_DATA/$CFGRIB_SDIST does not have the pinned sha256 $CFGRIB_SHA256: removed" >&2
    rm -f "$TEST_DATA/$CFGRIB_SDIST"
    exit 1
  fi
  tar -xzf "$TEST_DATA/$CFGRIB_SDIST" -C "$TEST_DATA" --strip-components=3 \
    cfgrib-0.9.15.1/tests/sample-data/era5-levels-members.grib cfgrib-0.9.15.1/tests/sample-data/era5-levels-members.nc
  echo "setup: real ERA5 GRIB test data in $TEST_DATA (from $CFGRIB_SDIST, Apache-2.0; ERA5 under the Copernicus licence)"
fi

echo "setup: done ($(.venv/bin/python -c 'import nudgeml, torch, jcm; print("nudgeml", nudgeml.__version__, "torch", torch.__version__, "jcm", jcm.__version__)'); $(cdo --version 2>&1 | head -1))"

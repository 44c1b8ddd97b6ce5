"""Build the Fortran <-> libtorch bridge with CMake and run its ctest suite.

The suite (``fortran/CMakeLists.txt``) exports the fixture models through ``nudgeml.export``, then
compares the Fortran outputs with Python's bit for bit (both backends, all layouts), drives the
LMDZ-shaped routine over 49 physics steps (6-hourly refresh, guard, NaN model, OpenMP threads)
and checks that bad inputs end with a message and a non-zero status. Needs apt's cmake, gfortran
and g++; set NUDGEML_SKIP_BRIDGE=1 to skip on a machine without them (CI installs them).
"""

import os
import re

import pytest

from nudgeml import bridge

pytestmark = pytest.mark.bridge

EXPECTED_TESTS = {
    "fixtures", "bridge_torchscript", "bridge_aoti", "lmdz_routine", "bad_missing_model",
    "bad_missing_artifact", "bad_klev", "bad_n_features", "bad_model_size", "bad_json", "bad_aoti_missing",
}


@pytest.fixture(scope="module")
def build_dir():
    if os.environ.get("NUDGEML_SKIP_BRIDGE") == "1":
        pytest.skip("NUDGEML_SKIP_BRIDGE=1")
    return bridge.configure_and_build(bridge.DEFAULT_BUILD_DIR / "pytest")


def test_ctest_suite_passes(build_dir):
    result = bridge.run_ctest(build_dir)
    assert result.ok, result.output[-8000:]
    passed = set(re.findall(r"Test\s+#\d+: (\S+) \.+\s+Passed", result.output))
    assert passed == EXPECTED_TESTS, result.output[-4000:]
    assert "100% tests passed, 0 tests failed out of 11" in result.output


def test_shim_exports_only_the_c_api(build_dir):
    import subprocess

    lib = build_dir / "libnudgeml_torch.so"
    out = subprocess.run(["nm", "-D", "--defined-only", str(lib)], capture_output=True, text=True, check=True).stdout
    symbols = {line.split()[-1] for line in out.splitlines() if " T " in line}
    assert symbols and all(s.startswith("nudgeml_") for s in symbols), sorted(symbols)
    dyn = subprocess.run(["readelf", "-d", str(lib)], capture_output=True, text=True, check=True).stdout
    assert "RUNPATH" in dyn and "torch/lib" in dyn  # libtorch found without LD_LIBRARY_PATH

"""Build the Fortran <-> libtorch bridge with CMake and run its ctest suite.

The suite (``fortran/CMakeLists.txt``) exports the fixture models through ``nudgeml.export``, then
compares the Fortran outputs with Python's bit for bit (both backends, all layouts), drives the
LMDZ-shaped routine over 49 physics steps (6-hourly refresh, guard, NaN model, OpenMP threads,
the mean residual with and without per-level gains)
and checks that bad inputs end with a message and a non-zero status. Needs apt's cmake, gfortran
and g++; set NUDGEML_SKIP_BRIDGE=1 to skip on a machine without them (CI installs them).
"""

import json
import os
import re
from pathlib import Path

import pytest

from nudgeml import bridge

pytestmark = pytest.mark.bridge

EXPECTED_TESTS = {
    "fixtures", "bridge_torchscript", "bridge_aoti", "lmdz_routine", "bad_missing_model",
    "bad_missing_artifact", "bad_klev", "bad_n_features", "bad_model_size", "bad_json", "bad_aoti_missing",
    "bad_trees_missing",
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
    assert "100% tests passed, 0 tests failed out of 12" in result.output


def test_shim_exports_only_the_c_api(build_dir):
    import subprocess

    lib = build_dir / "libnudgeml_torch.so"
    out = subprocess.run(["nm", "-D", "--defined-only", str(lib)], capture_output=True, text=True, check=True).stdout
    symbols = {line.split()[-1] for line in out.splitlines() if " T " in line}
    assert symbols and all(s.startswith("nudgeml_") for s in symbols), sorted(symbols)
    dyn = subprocess.run(["readelf", "-d", str(lib)], capture_output=True, text=True, check=True).stdout
    assert "RUNPATH" in dyn and "torch/lib" in dyn  # libtorch found without LD_LIBRARY_PATH


def test_fortran_tree_path_equals_python(tmp_path):
    """The compiled tree library called from Fortran (fortran/src/nudgeml_trees.f90: dlopen +
    iso_c_binding, no libtorch) gives Python's outputs bit for bit, and the booster's within float32
    rounding; a wrong shape and a missing library end with a message."""
    import shutil
    import subprocess

    import numpy as np
    import xgboost as xgb

    from nudgeml.models.xgb import booster_predict
    from nudgeml.trees import CompiledTrees, compile_trees

    if shutil.which("gfortran") is None:
        pytest.skip("gfortran not installed")
    rng = np.random.default_rng(0)
    nf, nk, nt, n = 7, 2, 5, 300
    x = rng.standard_normal((2000, nf)).astype(np.float32)
    z = np.stack([np.sin(x[:, 0]) + x[:, 1] * x[:, 2], np.tanh(x[:, 3]) - x[:, 4]], 1)
    booster = xgb.train({"max_depth": 4, "multi_strategy": "one_output_per_tree", "nthread": 1, "seed": 0}, xgb.DMatrix(x, z), 20)
    modes = np.linalg.qr(rng.standard_normal((nt, nk)))[0].T
    stats = {"target_mean": rng.normal(0, 1e-5, nt), "target_std": rng.uniform(1e-5, 1e-4, nt)}
    intercept = np.asarray(json.loads(json.loads(booster.save_config())["learner"]["learner_model_param"]["base_score"]), np.float64)
    model_dir = tmp_path / "model"
    compile_trees(booster, model_dir / "model_trees.so", intercept=intercept, modes=modes, target_mean=stats["target_mean"], target_std=stats["target_std"])
    src = Path(__file__).resolve().parents[1] / "fortran"
    exe = tmp_path / "test_trees"
    subprocess.run(["gfortran", "-O2", "-std=f2018", "-J", str(tmp_path), str(src / "src" / "nudgeml_trees.f90"), str(src / "tests" / "test_trees.f90"), "-ldl", "-o", str(exe)], check=True, capture_output=True, text=True)
    cols = rng.standard_normal((n, nf)).astype(np.float32) * 2
    cols[:10, 3] = np.nan  # missing values take the trees' default directions in both
    cols.tofile(tmp_path / "x.bin")  # row-major (n, nf) = Fortran xt(nf, n)
    run = subprocess.run([str(exe), str(model_dir), str(nf), str(nt), str(n), str(tmp_path / "x.bin"), str(tmp_path / "y.bin")], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count("refused as expected") == 2 and "model_trees.so" in run.stdout, run.stdout
    y_fortran = np.fromfile(tmp_path / "y.bin", np.float32).reshape(n, nt)
    y_python = CompiledTrees(model_dir / "model_trees.so")(cols)
    np.testing.assert_array_equal(y_fortran, y_python)
    ref = booster_predict(booster, cols, modes, stats)
    assert np.all(np.abs(y_python - ref) <= 1e-5 * stats["target_std"]), np.abs(y_python - ref).max(axis=0) / stats["target_std"]

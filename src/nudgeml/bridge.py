"""Build and test the Fortran <-> libtorch bridge (``fortran/``) from Python.

The bridge is a CMake project; this module only drives ``cmake``/``ctest`` with the torch of the
running interpreter (``torch.utils.cmake_prefix_path``), so tests, benchmarks and workflow rules
build it the same way. It imports nothing from Snakemake.
"""

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from nudgeml.errors import BridgeBuildError

REPO_ROOT = Path(__file__).resolve().parents[2]
FORTRAN_DIR = REPO_ROOT / "fortran"
DEFAULT_BUILD_DIR = FORTRAN_DIR / "build"
REQUIRED_TOOLS = ("cmake", "ctest", "gfortran", "g++")


@dataclass(frozen=True)
class CtestResult:
    returncode: int
    output: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def missing_tools() -> list[str]:
    """Names of the build tools not on PATH (apt: cmake, gfortran, g++)."""
    return [t for t in REQUIRED_TOOLS if shutil.which(t) is None]


def _run(cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None,
         timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env, text=True, capture_output=True, timeout=timeout, check=False)


def configure_and_build(build_dir: Path = DEFAULT_BUILD_DIR, *, python: str = sys.executable,
                        jobs: int = 2, build_type: str = "Release", timeout: float = 900,
                        targets: tuple[str, ...] = (), testing: bool = True) -> Path:
    """Configure (if needed) and build ``fortran/`` into ``build_dir``; returns ``build_dir``.

    ``targets``: build only those (default: everything); ``testing=False`` configures without the
    ctest suite and its fixtures (LMDZE's build needs only the shim, ``nudgeml_torch``).

    A cache left by another torch or interpreter is detected by CMake failing to configure; the
    directory is then wiped and configured once more from scratch.
    """
    import torch  # the torch whose libtorch the shim links

    if missing := missing_tools():
        raise BridgeBuildError(f"missing build tools: {', '.join(missing)} (apt-get install cmake gfortran g++)")
    build_dir = Path(build_dir)
    configure = [
        "cmake", "-S", str(FORTRAN_DIR), "-B", str(build_dir),
        f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}",
        f"-DNUDGEML_PYTHON={python}",
        f"-DNUDGEML_TORCH_CXX11_ABI={int(torch.compiled_with_cxx11_abi())}",
        f"-DCMAKE_BUILD_TYPE={build_type}",
        f"-DBUILD_TESTING={'ON' if testing else 'OFF'}",
    ]
    proc = _run(configure, timeout=timeout)
    if proc.returncode != 0 and build_dir.exists():
        shutil.rmtree(build_dir)
        proc = _run(configure, timeout=timeout)
    if proc.returncode != 0:
        raise BridgeBuildError(f"cmake configure failed:\n{(proc.stdout + proc.stderr)[-6000:]}")
    build = ["cmake", "--build", str(build_dir), "-j", str(jobs)]
    for target in targets:
        build += ["--target", target]
    proc = _run(build, timeout=timeout)
    if proc.returncode != 0:
        raise BridgeBuildError(f"build failed:\n{(proc.stdout + proc.stderr)[-6000:]}")
    return build_dir


def run_ctest(build_dir: Path = DEFAULT_BUILD_DIR, *, timeout: float = 900, extra_pythonpath: str | None = None) -> CtestResult:
    """Run the bridge's ctest suite (fixtures export included) and return its exit code and output."""
    env = dict(os.environ)
    src = str(REPO_ROOT / "src")
    paths = [src] + ([extra_pythonpath] if extra_pythonpath else []) + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    proc = _run(["ctest", "--test-dir", str(build_dir), "--output-on-failure"], env=env, timeout=timeout)
    return CtestResult(proc.returncode, proc.stdout + proc.stderr)

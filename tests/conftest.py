"""Shared fixtures: small synthetic grids and ERA5-like files written through the real writers."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]

# JAX on 2 cores: compile caches make the GCM tests several times faster across sessions
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# Compiled XLA programs are released after each test module, and this process writes no persistent XLA
# cache (the Snakemake jobs and other subprocesses the tests start keep theirs): XLA:CPU maps every
# kernel's code on its own (one T21 model: ~3 300 mappings, half of them held by JAX's jit caches until
# cleared), so the ~440 tests before test_replay reached Linux's vm.max_map_count (65 530); the JIT's next
# link then failed ("LLVM compilation error: Cannot allocate memory"), and a failed link leaves its EH
# frames registered over unmapped memory, which libgcc 12's unwinder reads at the next C++ exception
# (SIGSEGV or SIGABRT, no traceback; docs/standin.md, "Many programs in one process"). A cache write links every
# kernel again (executable.serialize -> CpuCompiler::Export), so it was where the links failed first.
import jax  # noqa: E402

jax.config.update("jax_enable_compilation_cache", False)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    yield
    jax.clear_caches()
    gc.collect()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


def gaussian_like_grid(nlat: int = 16, nlon: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Latitudes (ascending, no poles) and longitudes (0..360) of a small global grid."""
    lat = np.linspace(-90 + 90 / nlat, 90 - 90 / nlat, nlat)
    lon = np.arange(nlon) * 360.0 / nlon
    return lat, lon

"""Shared fixtures: small synthetic grids and ERA5-like files written through the real writers."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]

# JAX on 2 cores: compile caches make the GCM tests several times faster across sessions
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# No persistent XLA cache in this process (the Snakemake jobs and other subprocesses the tests start keep
# theirs): in one long-lived process, a cache write that fails (jaxlib 0.10.2: executable.serialize ->
# XLA:CPU CpuCompiler::Export relinks the kernels' object code) frees that code without deregistering its
# EH frames, and with libgcc < 13 (Debian 12's 12.2) the next C++ exception anywhere in the process walks
# the stale registration and crashes (docs/standin.md, "Compilation cache").
import jax  # noqa: E402

jax.config.update("jax_enable_compilation_cache", False)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


def gaussian_like_grid(nlat: int = 16, nlon: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Latitudes (ascending, no poles) and longitudes (0..360) of a small global grid."""
    lat = np.linspace(-90 + 90 / nlat, 90 - 90 / nlat, nlat)
    lon = np.arange(nlon) * 360.0 / nlon
    return lat, lon

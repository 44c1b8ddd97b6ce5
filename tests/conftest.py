"""Shared fixtures: small synthetic grids and ERA5-like files written through the real writers."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]

# JAX on 2 cores: compile caches make the GCM tests several times faster across sessions
os.environ.setdefault("JAX_PLATFORMS", "cpu")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


def gaussian_like_grid(nlat: int = 16, nlon: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Latitudes (ascending, no poles) and longitudes (0..360) of a small global grid."""
    lat = np.linspace(-90 + 90 / nlat, 90 - 90 / nlat, nlat)
    lon = np.arange(nlon) * 360.0 / nlon
    return lat, lon

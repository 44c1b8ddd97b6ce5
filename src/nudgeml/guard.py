"""The online guard of an exported correction, as every caller applies it (``docs/model-format.md``).

This is the reference the Fortran LMDZ routine (``fortran/lmdz/nudgeml_lmdz.F90``) is tested against
bit for bit, so the arithmetic is spelt out and done in float64 in a fixed order:

* bounds, per feature ``j`` (and likewise per target): ``range_j = max_j - min_j``,
  ``lo_j = min_j - margin * range_j``, ``hi_j = max_j + margin * range_j``;
* a column *falls back* when any of its float32 inputs, widened to float64, is outside
  ``[lo_j, hi_j]`` or not finite, or when any of its outputs is not finite; its tendency is then the
  fallback (the mean nudging tendency of that grid point), and no clip is counted for it;
* otherwise each output, widened to float64, is clipped: ``min(max(y, lo), hi)``; a value is counted
  as clipped when ``y < lo`` or ``y > hi``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from nudgeml.manifest import Guard

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class GuardBounds:
    """Widened acceptance intervals, float64: features ``(n_features,)``, targets ``(n_targets,)``."""

    feature_lo: F64
    feature_hi: F64
    target_lo: F64
    target_hi: F64


@dataclass(frozen=True)
class GuardResult:
    tendency: F64  # (n, n_targets), m s-2
    fallback: npt.NDArray[np.bool_]  # (n,), True where the column took the fallback
    n_clipped: int  # values clipped, over the columns that did not fall back

    @property
    def n_fallback(self) -> int:
        return int(self.fallback.sum())


def widen(vmin: npt.ArrayLike, vmax: npt.ArrayLike, margin: float) -> tuple[F64, F64]:
    """``(min - margin*(max-min), max + margin*(max-min))`` in float64."""
    lo = np.asarray(vmin, dtype=np.float64)
    hi = np.asarray(vmax, dtype=np.float64)
    span = hi - lo
    m = np.float64(margin)
    return lo - m * span, hi + m * span


def guard_bounds(guard: Guard) -> GuardBounds:
    flo, fhi = widen(guard.feature_min, guard.feature_max, guard.margin)
    tlo, thi = widen(guard.target_min, guard.target_max, guard.margin)
    return GuardBounds(flo, fhi, tlo, thi)


def apply_guard(x: F32, y: F32, fallback: npt.ArrayLike, bounds: GuardBounds) -> GuardResult:
    """Guard model outputs ``y`` ``(n, n_targets)`` computed from inputs ``x`` ``(n, n_features)``.

    ``fallback`` ``(n, n_targets)`` is the tendency (m s-2) used for columns that fall back.
    """
    x64 = np.asarray(x).astype(np.float64)
    y64 = np.asarray(y).astype(np.float64)
    fb = np.asarray(fallback, dtype=np.float64)
    if x64.ndim != 2 or y64.ndim != 2 or x64.shape[0] != y64.shape[0] or fb.shape != y64.shape:
        raise ValueError(f"shapes x {x64.shape}, y {y64.shape}, fallback {fb.shape} do not match")
    # NaN compares false both ways, so "not inside" also catches non-finite inputs.
    inside = (x64 >= bounds.feature_lo) & (x64 <= bounds.feature_hi)
    bad = ~inside.all(axis=1) | ~np.isfinite(y64).all(axis=1)
    low = y64 < bounds.target_lo
    high = y64 > bounds.target_hi
    clipped = np.minimum(np.maximum(y64, bounds.target_lo), bounds.target_hi)
    n_clipped = int((low | high)[~bad].sum())
    out = np.where(bad[:, None], fb, clipped)
    return GuardResult(tendency=out, fallback=bad, n_clipped=n_clipped)

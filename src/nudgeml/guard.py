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

The online free run wants the result in float32 (the GCM's precision) once per window, and the widening
of 2 048 x 52 values to float64 was a fifth of its ML call. :func:`apply_guard_f32` gives exactly
``apply_guard(...).tendency.astype(float32)`` with float32 arithmetic only: a float32 ``v`` satisfies
``v >= lo`` (``lo`` float64) exactly when ``v >= lo32``, the smallest float32 not below ``lo``, and
``v <= hi`` exactly when ``v <= hi32``, the largest float32 not above ``hi``; a clipped value is
``float32(lo)`` or ``float32(hi)``, as the float64 clip cast to float32 gives.
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


@dataclass(frozen=True)
class GuardBounds32:
    """:class:`GuardBounds` for float32 values: the innermost float32 bounds (``*_lo``, ``*_hi``:
    comparisons equal to the float64 ones) and what a clipped target becomes (``clip_lo``, ``clip_hi``:
    the float64 bounds rounded to float32)."""

    feature_lo: F32
    feature_hi: F32
    target_lo: F32
    target_hi: F32
    clip_lo: F32
    clip_hi: F32


@dataclass(frozen=True)
class GuardResult32:
    tendency: F32  # (n, n_targets), float32
    fallback: npt.NDArray[np.bool_]
    n_clipped: int

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


def _inner_f32(lo: F64, hi: F64) -> tuple[F32, F32]:
    """The smallest float32 >= ``lo`` and the largest float32 <= ``hi`` (elementwise)."""
    with np.errstate(over="ignore"):  # a bound beyond float32's range rounds to +-inf, stepped in below
        lo32 = lo.astype(np.float32)
        hi32 = hi.astype(np.float32)
    lo32 = np.where(lo32.astype(np.float64) < lo, np.nextafter(lo32, np.float32(np.inf)), lo32)
    hi32 = np.where(hi32.astype(np.float64) > hi, np.nextafter(hi32, np.float32(-np.inf)), hi32)
    return lo32.astype(np.float32), hi32.astype(np.float32)


def float32_bounds(bounds: GuardBounds) -> GuardBounds32:
    flo, fhi = _inner_f32(bounds.feature_lo, bounds.feature_hi)
    tlo, thi = _inner_f32(bounds.target_lo, bounds.target_hi)
    with np.errstate(over="ignore"):
        clo, chi = bounds.target_lo.astype(np.float32), bounds.target_hi.astype(np.float32)
    return GuardBounds32(flo, fhi, tlo, thi, clo, chi)


def _check_shapes(x: np.ndarray, y: np.ndarray, fallback: np.ndarray) -> None:
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0] or fallback.shape != y.shape:
        raise ValueError(f"shapes x {x.shape}, y {y.shape}, fallback {fallback.shape} do not match")


def apply_guard_f32(x: F32, y: F32, fallback: F32, bounds: GuardBounds32) -> GuardResult32:
    """:func:`apply_guard` in float32: the same fallback columns and clip count, and exactly its
    tendency cast to float32 (``fallback`` is the float32 cast of the float64 one)."""
    if x.dtype != np.float32 or y.dtype != np.float32 or fallback.dtype != np.float32:
        raise ValueError(f"apply_guard_f32 takes float32 arrays, got x {x.dtype}, y {y.dtype}, fallback {fallback.dtype}")
    _check_shapes(x, y, fallback)
    # NaN compares false both ways, so "not inside" also catches non-finite inputs. A row's verdict is a
    # count, taken as a float32 product with ones (exact below 2**24 entries): numpy's reductions along
    # rows of a few dozen entries cost about 4 times as much (the online call runs this every window)
    inside = (x >= bounds.feature_lo) & (x <= bounds.feature_hi)
    n_inside = inside.astype(np.float32) @ np.ones(x.shape[1], np.float32)
    n_finite = np.isfinite(y).astype(np.float32) @ np.ones(y.shape[1], np.float32)
    bad = (n_inside < x.shape[1]) | (n_finite < y.shape[1])
    low = y < bounds.target_lo
    high = y > bounds.target_hi
    out = y.copy()  # two masked copies: half the time of two nested np.where
    np.copyto(out, np.broadcast_to(bounds.clip_lo, y.shape), where=low)
    np.copyto(out, np.broadcast_to(bounds.clip_hi, y.shape), where=high)
    clipped = low | high
    n_clipped = int(np.count_nonzero(clipped)) - int(np.count_nonzero(clipped[bad]))  # kept rows only
    out[bad] = fallback[bad]
    return GuardResult32(tendency=out, fallback=bad, n_clipped=n_clipped)


def apply_guard(x: F32, y: F32, fallback: npt.ArrayLike, bounds: GuardBounds) -> GuardResult:
    """Guard model outputs ``y`` ``(n, n_targets)`` computed from inputs ``x`` ``(n, n_features)``.

    ``fallback`` ``(n, n_targets)`` is the tendency (m s-2) used for columns that fall back.
    """
    x64 = np.asarray(x).astype(np.float64)
    y64 = np.asarray(y).astype(np.float64)
    fb = np.asarray(fallback, dtype=np.float64)
    _check_shapes(x64, y64, fb)
    # NaN compares false both ways, so "not inside" also catches non-finite inputs.
    inside = (x64 >= bounds.feature_lo) & (x64 <= bounds.feature_hi)
    bad = ~inside.all(axis=1) | ~np.isfinite(y64).all(axis=1)
    low = y64 < bounds.target_lo
    high = y64 > bounds.target_hi
    clipped = np.minimum(np.maximum(y64, bounds.target_lo), bounds.target_hi)
    n_clipped = int((low | high)[~bad].sum())
    out = np.where(bad[:, None], fb, clipped)
    return GuardResult(tendency=out, fallback=bad, n_clipped=n_clipped)

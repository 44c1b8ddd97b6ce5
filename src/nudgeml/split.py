"""Which analysis times of the nudged run go to training, validation and test.

Three kinds of split (``dataset.split`` in the config, exactly one of them):

* ``dates``: explicit ``[first, last]`` per split (inclusive);
* ``fractions``: contiguous blocks in time order, a fraction of the usable times each;
* ``cycle``: a repeating pattern of ``train_days``, ``val_days``, ``test_days`` from the first time, so
  that every season (every calendar month when the cycle is shorter than a month) has training data and
  an "annual" mean is annual.

Neighbouring 6-hourly states are strongly correlated, so ``gap_hours`` are dropped at the start of
every block that follows another one (a block never touches a block of another split).

Out of sample: the free runs are evaluated after ``before`` (``free_runs.start``). ``dates`` blocks must
end ``gap_hours`` before it (checked, :func:`check_out_of_sample`); ``fractions`` and ``cycle`` only ever
use the times before ``before - gap_hours``, so no sample of any split, and no replay state, comes from
the evaluation period.

Numpy only: the Snakefile's configuration check imports this module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nudgeml.errors import InputError

SPLITS = ("train", "val", "test")
KINDS = ("dates", "fractions", "cycle")
SECONDS_PER_DAY = 86400


@dataclass(frozen=True)
class SplitSpec:
    """One ``dataset.split`` section (see the module docstring)."""

    dates: Mapping[str, Sequence[str]] | None = None
    fractions: Mapping[str, float] | None = None
    cycle: Mapping[str, float] | None = None  # train_days / val_days / test_days
    gap_hours: float = 24.0
    before: str | None = None  # exclusive: free_runs.start

    def __post_init__(self) -> None:
        given = [k for k in KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise InputError(f"the split needs exactly one of {KINDS}, got {given or 'none'}")
        if self.cycle is not None:
            unknown = set(self.cycle) - {f"{s}_days" for s in SPLITS}
            if unknown or float(self.cycle.get("train_days", 0)) <= 0:
                raise InputError(f"split cycle needs train_days > 0 (and optionally val_days, test_days), got {dict(self.cycle)}")

    @property
    def kind(self) -> str:
        return next(k for k in KINDS if getattr(self, k) is not None)

    @classmethod
    def from_config(cls, split: Mapping[str, Any], before: str | None = None) -> SplitSpec:
        return cls(
            dates=split.get("dates"),
            fractions=split.get("fractions"),
            cycle=split.get("cycle"),
            gap_hours=float(split.get("gap_hours", 24.0)),
            before=before,
        )

    @property
    def gap(self) -> np.timedelta64:
        return np.timedelta64(int(round(self.gap_hours * 3600)), "s")


def split_times(times: np.ndarray, spec: SplitSpec) -> dict[str, np.ndarray]:
    """Indices into ``times`` (ascending) of each split's time steps, ascending."""
    t = np.asarray(times, dtype="datetime64[s]")
    if t.size > 1 and np.any(np.diff(t) <= np.timedelta64(0, "s")):
        raise InputError("split: the times are not strictly increasing")
    usable = np.ones(t.size, bool)
    if spec.before is not None and spec.kind != "dates":
        usable &= t < np.datetime64(spec.before, "s") - spec.gap
    if spec.kind == "dates":
        out = _by_dates(t, spec)
    elif spec.kind == "fractions":
        out = _by_fractions(t, usable, spec)
    else:
        out = _by_cycle(t, usable, spec)
    if "train" not in out or out["train"].size == 0:
        raise InputError("the training split is empty")
    _check_separated(t, out, spec)
    return out


def _by_dates(t: np.ndarray, spec: SplitSpec) -> dict[str, np.ndarray]:
    out = {}
    for name, (first, last) in (spec.dates or {}).items():
        if name not in SPLITS:
            raise InputError(f"unknown split {name!r}; use {SPLITS}")
        out[name] = np.flatnonzero((t >= np.datetime64(first, "s")) & (t <= np.datetime64(last, "s")))
    return out


def _by_fractions(t: np.ndarray, usable: np.ndarray, spec: SplitSpec) -> dict[str, np.ndarray]:
    fr = dict(spec.fractions or {})
    if set(fr) - set(SPLITS) or abs(sum(fr.values()) - 1.0) > 1e-6:
        raise InputError(f"split fractions must be among {SPLITS} and sum to 1, got {fr}")
    idx_all = np.flatnonzero(usable)
    out: dict[str, np.ndarray] = {}
    edge, last = 0, None
    for name in SPLITS:
        if name not in fr:
            continue
        end = min(idx_all.size, edge + int(round(fr[name] * idx_all.size)))
        idx = idx_all[edge:end]
        if last is not None:  # the gap is taken from the start of the later block
            idx = idx[t[idx] >= last + spec.gap]
        out[name] = idx
        if idx.size:
            last = t[idx[-1]]
        edge = end
    return out


def _by_cycle(t: np.ndarray, usable: np.ndarray, spec: SplitSpec) -> dict[str, np.ndarray]:
    cyc = spec.cycle or {}
    days = np.array([float(cyc.get(f"{s}_days", 0.0)) for s in SPLITS])
    bounds_s = np.round(np.cumsum(days) * SECONDS_PER_DAY).astype(np.int64)  # block ends within a cycle
    length_s = int(bounds_s[-1])
    if t.size == 0:
        return {s: np.array([], int) for s, d in zip(SPLITS, days) if d > 0}
    offset = (t - t[0]).astype(np.int64)
    cycle_no, within = np.divmod(offset, length_s)
    which = np.searchsorted(bounds_s, within, side="right")  # 0 train, 1 val, 2 test
    block_start = np.concatenate([[0], bounds_s[:-1]])[which]
    since_block = within - block_start
    first_block = (cycle_no == 0) & (which == 0)
    keep = usable & (first_block | (since_block >= spec.gap.astype(np.int64)))
    return {s: np.flatnonzero(keep & (which == i)) for i, (s, d) in enumerate(zip(SPLITS, days)) if d > 0}


def _check_separated(t: np.ndarray, out: Mapping[str, np.ndarray], spec: SplitSpec) -> None:
    """No time in two splits, and at least ``gap_hours`` between times of different splits."""
    label = np.full(t.size, -1)
    for i, name in enumerate(SPLITS):
        if name not in out:
            continue
        idx = out[name]
        if np.any(label[idx] >= 0):
            other = SPLITS[int(label[idx][label[idx] >= 0][0])]
            raise InputError(f"splits {other!r} and {name!r} overlap in time")
        label[idx] = i
    used = np.flatnonzero(label >= 0)
    change = np.flatnonzero(label[used][1:] != label[used][:-1])
    if change.size:
        closest = (t[used][change + 1] - t[used][change]).min()
        if closest < spec.gap:
            a = change[np.argmin(t[used][change + 1] - t[used][change])]
            raise InputError(f"splits {SPLITS[label[used][a]]!r} and {SPLITS[label[used][a + 1]]!r} are closer than gap_hours={spec.gap_hours}")


def blocks(times: np.ndarray, idx: np.ndarray, step_hours: float = 6.0) -> list[tuple[str, str]]:
    """The contiguous runs of ``times[idx]`` (consecutive when ``step_hours`` apart), as
    ``(first, last)`` ISO strings: how the store records each split's time coverage."""
    t = np.asarray(times, dtype="datetime64[s]")[np.asarray(idx)]
    if t.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(t) > np.timedelta64(int(round(step_hours * 3600)), "s"))
    starts, ends = np.concatenate([[0], breaks + 1]), np.concatenate([breaks, [t.size - 1]])
    return [(str(t[a]), str(t[b])) for a, b in zip(starts, ends)]


def recorded_blocks(spec: Mapping[str, Any]) -> list[tuple[np.datetime64, np.datetime64]]:
    """One split's time blocks ``[(first, last), ...]`` (inclusive) from the store's record of it
    (``attrs["splits"][split]``); empty when the split is.

    An interleaved split (``dataset.split.cycle``) has one block per cycle: its first and last times
    alone would span the other splits' blocks in between. Stores written before blocks were recorded
    have ``start``/``end`` only: one block.
    """
    if not spec.get("start"):
        return []
    spans = spec.get("blocks") or [[spec["start"], spec["end"]]]
    return [(np.datetime64(a, "s"), np.datetime64(b, "s")) for a, b in spans]


def in_blocks(times: np.ndarray, spans: Sequence[Sequence[str]]) -> np.ndarray:
    """Mask of ``times`` that fall inside any ``[first, last]`` of ``spans``."""
    t = np.asarray(times, dtype="datetime64[s]")
    mask = np.zeros(t.size, bool)
    for first, last in spans:
        mask |= (t >= np.datetime64(first, "s")) & (t <= np.datetime64(last, "s"))
    return mask


def run_starts(spans: Sequence[tuple[np.datetime64, np.datetime64]], length: np.timedelta64, step_hours: float = 6.0) -> np.ndarray:
    """Every analysis time (``step_hours`` apart) inside ``spans`` (inclusive ``(first, last)``) from
    which a run of ``length`` ends inside the same span: the starts of the calibration's free runs and of
    online training's rollouts, which read the analysis they are compared with, never the next block's."""
    step = np.timedelta64(int(round(step_hours * 3600)), "s")
    out = [t for a, b in spans for t in np.arange(np.datetime64(a, "s"), np.datetime64(b, "s") - length + step, step)]
    return np.asarray(out, dtype="datetime64[s]")


def spread(starts: np.ndarray, n: int) -> np.ndarray:
    """``n`` of ``starts`` spread evenly over them, the first and last included."""
    return starts[np.round(np.linspace(0, len(starts) - 1, n)).astype(int)]


def check_out_of_sample(split: Mapping[str, Any], period_start: np.datetime64, free_start: np.datetime64) -> list[str]:
    """Problems (each naming its config key) that would let any split reach the free-run period.

    ``dates`` blocks must lie inside the period and end ``gap_hours`` before ``free_runs.start``;
    ``fractions`` and ``cycle`` are restricted to the times before ``free_runs.start - gap_hours`` by
    :func:`split_times`, so they only need some usable time there.
    """
    spec = SplitSpec.from_config(split, before=str(free_start))
    problems = []
    if spec.kind == "dates":
        for block, (first, last) in (spec.dates or {}).items():
            a, b = np.datetime64(first, "s"), np.datetime64(last, "s")
            if not (period_start <= a <= b and b + spec.gap <= free_start):
                problems.append(
                    f"config key 'dataset.split.dates.{block}' ({first} - {last}) must lie inside the period and end "
                    f"at least gap_hours={spec.gap_hours:g} before free_runs.start ({free_start}): the free runs are evaluated out of sample"
                )
    elif free_start - spec.gap <= period_start:
        problems.append(
            f"config key 'dataset.split.{spec.kind}': no analysis time before free_runs.start ({free_start}) minus "
            f"gap_hours={spec.gap_hours:g}: nothing to train on out of sample"
        )
    return problems

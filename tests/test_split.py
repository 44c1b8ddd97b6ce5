"""The time split: out of sample for every kind, the annual cycle covered, blocks separated by the gap."""

import numpy as np
import pytest

from nudgeml.checks import load_config
from nudgeml.errors import ConfigError, InputError
from nudgeml.replay import sample_times
from nudgeml.split import SplitSpec, blocks, check_out_of_sample, in_blocks, split_times

YEAR = np.arange(np.datetime64("2000-01-01T00", "s"), np.datetime64("2001-01-01T00", "s"), np.timedelta64(6, "h"))
FREE_START = "2000-11-01T00:00"


def test_fractions_never_reach_the_free_runs():
    """Before, fractions cut the whole period, so the test block (and replay) sat in the free runs."""
    spec = SplitSpec(fractions={"train": 0.8, "val": 0.1, "test": 0.1}, gap_hours=24, before=FREE_START)
    out = split_times(YEAR, spec)
    last = max(YEAR[idx].max() for idx in out.values())
    assert last < np.datetime64(FREE_START) - np.timedelta64(24, "h")
    assert set(out) == {"train", "val", "test"} and all(idx.size for idx in out.values())


def test_cycle_covers_every_month_and_keeps_the_gap():
    spec = SplitSpec(cycle={"train_days": 20, "val_days": 4, "test_days": 4}, gap_hours=24, before="2001-01-01T00:00")
    out = split_times(YEAR, spec)
    months = {int(str(t)[5:7]) for t in YEAR[out["train"]]}
    assert months == set(range(1, 13)), "every calendar month has training data"
    assert {int(str(t)[5:7]) for t in YEAR[out["test"]]} >= {1, 6, 12}
    label = np.full(YEAR.size, -1)
    for i, name in enumerate(("train", "val", "test")):
        assert (label[out[name]] == -1).all(), "a time in two splits"
        label[out[name]] = i
    used = np.flatnonzero(label >= 0)
    change = np.flatnonzero(np.diff(label[used]) != 0)
    assert change.size > 20  # interleaved
    assert (YEAR[used][change + 1] - YEAR[used][change]).min() >= np.timedelta64(24, "h")
    # the first gap is dropped at the start of every block but the very first one
    assert YEAR[out["train"][0]] == YEAR[0]
    assert YEAR[out["val"][0]] == YEAR[0] + np.timedelta64(21, "D")


def test_cycle_stops_before_the_free_runs():
    spec = SplitSpec(cycle={"train_days": 20, "val_days": 4, "test_days": 4}, gap_hours=24, before=FREE_START)
    out = split_times(YEAR, spec)
    assert max(YEAR[idx].max() for idx in out.values()) < np.datetime64(FREE_START) - np.timedelta64(24, "h")


def test_blocks_round_trip():
    spec = SplitSpec(cycle={"train_days": 10, "val_days": 2, "test_days": 2}, gap_hours=12)
    idx = split_times(YEAR[:400], spec)["train"]
    spans = blocks(YEAR[:400], idx)
    assert len(spans) == 8
    np.testing.assert_array_equal(np.flatnonzero(in_blocks(YEAR[:400], spans)), idx)


@pytest.mark.parametrize(
    "split, key",
    [
        ({"dates": {"train": ["2000-01-01T00:00", "2000-10-31T18:00"]}, "gap_hours": 24}, "dataset.split.dates.train"),
        ({"dates": {"train": ["2000-01-01T00:00", "2000-06-30T18:00"], "test": ["2000-07-02T00:00", "2000-11-02T00:00"]}, "gap_hours": 24}, "dataset.split.dates.test"),
        ({"fractions": {"train": 1.0}, "gap_hours": 24}, "dataset.split.fractions"),
        ({"cycle": {"train_days": 20}, "gap_hours": 24}, "dataset.split.cycle"),
    ],
)
def test_out_of_sample_problems_name_the_key(split, key):
    """Every kind: a dates block reaching the free runs (or within gap_hours of them) is named; a
    fractions or cycle split with no time before free_runs.start - gap has nothing to train on."""
    free_start = np.datetime64("2000-11-01T00:00") if "dates" in split else np.datetime64("2000-01-01T18:00")
    problems = check_out_of_sample(split, np.datetime64("2000-01-01T00:00"), free_start)
    assert problems and f"'{key}" in problems[0]
    ok = check_out_of_sample(split, np.datetime64("2000-01-01T00:00"), np.datetime64("2000-12-01T00:00"))
    assert ok == []


def test_config_rejects_dates_in_the_free_runs_and_accepts_fractions():
    over = {"dataset": {"split": {"dates": {"train": ["2000-01-31T00:00", "2000-03-03T18:00"]}, "gap_hours": 24}}}
    with pytest.raises(ConfigError, match=r"'dataset\.split\.dates\.train'.*out of sample"):
        load_config("config/config.yaml", over)
    cfg = load_config("config/config.yaml", {"dataset": {"split": {"dates": None, "fractions": {"train": 0.8, "val": 0.2}, "gap_hours": 24}}})
    times = np.arange(np.datetime64(cfg["period"]["start"], "s"), np.datetime64(cfg["period"]["end"], "s") + 1, np.timedelta64(6, "h"))
    replay = sample_times({**cfg, "replay": {"every_hours": 6}}, times)
    assert replay.max() < np.datetime64(cfg["free_runs"]["start"], "s") - np.timedelta64(24, "h")


def test_split_kinds_are_exclusive_and_checked():
    with pytest.raises(InputError, match="exactly one of"):
        SplitSpec(fractions={"train": 1.0}, cycle={"train_days": 3})
    with pytest.raises(InputError, match="train_days"):
        SplitSpec(cycle={"val_days": 3})
    with pytest.raises(InputError, match="training split is empty"):
        split_times(YEAR[:10], SplitSpec(fractions={"train": 1.0}, before="2000-01-01T06:00"))

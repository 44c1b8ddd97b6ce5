import json
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr
import zarr

from factories import write_history
from nudgeml.errors import InputError
from nudgeml.extract import ColumnSpec, column_dataset, write_columns
from nudgeml.shard import ShardConfig, count_files, files_per_split, load_stats, open_store, shard_columns, split_times

CFG = ShardConfig(fractions={"train": 0.6, "val": 0.2, "test": 0.2}, gap_hours=12, chunk_samples=64, shard_samples=256, seed=3)


@pytest.fixture()
def columns(tmp_path):
    hist, guide, _ = write_history(tmp_path / "hist", nlat=6, nlon=12, nlev=3, ntime=20)
    return write_columns(column_dataset(hist, guide, None, ColumnSpec()), tmp_path / "columns.nc")


def read_split(root, split):
    return root[split]["inputs"][:], root[split]["targets"][:]


def test_store_holds_every_sample_once_shuffled_and_split_in_time(columns, tmp_path):
    summary = shard_columns(columns, tmp_path / "ds.zarr", CFG)
    root = open_store(tmp_path / "ds.zarr")
    src = xr.open_dataset(columns)
    times = src["time"].values
    x_all = src["inputs"].values  # (time, column, feature)
    y_all = src["targets"].values
    seen_times = {}
    for split in ("train", "val", "test"):
        x, y = read_split(root, split)
        assert x.shape[0] == summary["splits"][split]["n_samples"] == summary["splits"][split]["n_times"] * 72
        # the time of a sample is encoded in its value (1000 t + ...): recover it
        t_of = np.round((x[:, 0] - x_all[0, :, 0].min()) / 1000.0).astype(int)
        seen_times[split] = set(t_of.tolist())
        assert np.any(np.diff(t_of) < 0), "shuffled, not in time order"
        # every (time, column) sample of the split appears exactly once
        src_x = x_all[sorted(seen_times[split])].reshape(-1, x.shape[1])
        np.testing.assert_array_equal(np.sort(x, axis=0), np.sort(src_x, axis=0))
        # and each sample keeps its own target (inputs and targets are shuffled and written apart)
        src_y = y_all[sorted(seen_times[split])].reshape(-1, y.shape[1])
        np.testing.assert_array_equal(y[np.lexsort(x.T[::-1])], src_y[np.lexsort(src_x.T[::-1])])
    assert not (seen_times["train"] & seen_times["val"]) and not (seen_times["val"] & seen_times["test"])
    gap = np.timedelta64(12, "h")
    assert times[min(seen_times["val"])] - times[max(seen_times["train"])] >= gap
    assert times[min(seen_times["test"])] - times[max(seen_times["val"])] >= gap
    assert root["train"]["inputs"].shards == (256, x_all.shape[2]) and root["train"]["inputs"].chunks == (64, x_all.shape[2])


def test_stats_come_from_the_training_split_only(columns, tmp_path):
    shard_columns(columns, tmp_path / "ds.zarr", CFG)
    root = open_store(tmp_path / "ds.zarr")
    stats = load_stats(root)
    x, y = read_split(root, "train")
    np.testing.assert_allclose(stats["input_mean"], x.astype(np.float64).mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(stats["input_std"], x.astype(np.float64).std(axis=0, ddof=1), rtol=1e-5)
    np.testing.assert_allclose(stats["target_max"], y.max(axis=0), rtol=1e-6)
    x_all = np.concatenate([read_split(root, s)[0] for s in ("train", "val", "test")])
    assert not np.allclose(stats["input_mean"], x_all.mean(axis=0), rtol=1e-3), "val/test must not enter the statistics"


def test_split_by_dates_and_overlap_rejected():
    times = np.arange(np.datetime64("2000-01-01T00"), np.datetime64("2000-01-11T00"), np.timedelta64(6, "h"))
    cfg = ShardConfig(dates={"train": ["2000-01-01", "2000-01-06T18:00"], "test": ["2000-01-08", "2000-01-10T18:00"]}, gap_hours=24)
    s = split_times(times, cfg)
    assert times[s["train"][-1]] == np.datetime64("2000-01-06T18:00") and times[s["test"][0]] == np.datetime64("2000-01-08T00:00")
    bad = ShardConfig(dates={"train": ["2000-01-01", "2000-01-06"], "val": ["2000-01-05", "2000-01-07"]}, gap_hours=0)
    with pytest.raises(InputError, match="overlap"):
        split_times(times, bad)
    close = ShardConfig(dates={"train": ["2000-01-01", "2000-01-06"], "val": ["2000-01-06T06:00", "2000-01-07"]}, gap_hours=24)
    with pytest.raises(InputError, match="gap_hours"):
        split_times(times, close)


def test_nonfinite_columns_dropped_and_counted_or_fatal(tmp_path):
    hist, guide, _ = write_history(tmp_path / "hist", nlat=6, nlon=12, nlev=3, ntime=20, nan_at=(2, 1, 4))
    cols = write_columns(column_dataset(hist, guide, None, ColumnSpec()), tmp_path / "columns.nc")
    summary = shard_columns(cols, tmp_path / "ds.zarr", CFG)
    assert summary["dropped_nonfinite"]["train"] == 1
    root = open_store(tmp_path / "ds.zarr")
    x, y = read_split(root, "train")
    assert np.isfinite(x).all() and np.isfinite(y).all() and x.shape[0] == y.shape[0] == summary["splits"]["train"]["n_samples"]
    assert root.attrs["dropped_nonfinite"]["train"] == 1
    fail = ShardConfig(**{**CFG.__dict__, "nan_policy": "fail"})
    with pytest.raises(InputError, match=r"columns\.nc.*non-finite.*column 16"):
        shard_columns(cols, tmp_path / "ds2.zarr", fail)
    assert not (tmp_path / "ds2.zarr").exists(), "no half-written store left behind"
    assert not list(tmp_path.glob(".ds2*")), "no temporary store left behind"


def test_missing_input_and_wrong_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        shard_columns(tmp_path / "none.nc", tmp_path / "ds.zarr", CFG)
    xr.Dataset({"inputs": (("time", "column", "feature"), np.zeros((1, 1, 1)))}).to_netcdf(tmp_path / "bad.nc")
    with pytest.raises(InputError, match="'targets'"):
        shard_columns(tmp_path / "bad.nc", tmp_path / "ds.zarr", CFG)
    with pytest.raises(InputError, match="not a zarr store|not found|not a nudgeml"):
        open_store(tmp_path / "bad.nc")


def test_files_per_lmdz_year_within_inode_budget():
    """A year of LMDZ 144x142 6-hourly columns at the default shard size stays far below $WORK's quota."""
    n = 20448 * 1460
    assert files_per_split(n, 524288) <= 200


@pytest.mark.slow
def test_streaming_memory_on_lmdz_sized_input(tmp_path):
    """144 x 142 columns x 79 levels x 60 times (1.23 M samples, 2.35 GB as float32) in < 2 GB of memory:
    the input is larger than the bound, so only a streaming shard passes (1.0 GB measured, the same as at
    120 times: the peak does not grow with the input). 60 times, not a month's 120: the store and the
    scratch it streams through are on disk together, and CI's disk is small."""
    code = f"""
import json
import dask.array as da, numpy as np, xarray as xr
from nudgeml.extract import ColumnSpec, expand_names
from nudgeml.shard import ShardConfig, shard_columns
nt, nc, nlev = 60, 20448, 79
spec = ColumnSpec()
fb, tb = spec.feature_blocks(nlev), spec.target_blocks(nlev)
def block(shape, scale):
    def make(block_info=None):
        (t0, t1), (c0, c1), (f0, f1) = block_info[None]["array-location"]
        t = np.arange(t0, t1)[:, None, None]; c = np.arange(c0, c1)[None, :, None]; f = np.arange(f0, f1)[None, None, :]
        return (scale * (np.sin(0.001 * c + 0.1 * f) + 0.01 * t)).astype(np.float32)
    return da.map_blocks(make, chunks=((4,) * (shape[0] // 4), (shape[1],), (shape[2],)), dtype=np.float32)
ds = xr.Dataset(
    {{"inputs": (("time", "column", "feature"), block((nt, nc, 317), 10.0)), "targets": (("time", "column", "target"), block((nt, nc, 158), 1e-4))}},
    coords={{"time": np.arange(np.datetime64("2000-01-01T00"), np.datetime64("2000-01-01T00") + np.timedelta64(6 * nt, "h"), np.timedelta64(6, "h")),
            "feature": expand_names(fb), "target": expand_names(tb), "presnivs": ("lev", np.linspace(1e5, 10, nlev))}},
    attrs={{"feature_blocks": json.dumps(fb), "target_blocks": json.dumps(tb)}})
cfg = ShardConfig(fractions={{"train": 0.8, "val": 0.1, "test": 0.1}}, gap_hours=24)
s = shard_columns(ds, "{tmp_path / 'lmdz.zarr'}", cfg)
# VmHWM, this process's own peak: ru_maxrss carries over the forking parent's (pytest's, several GB
# after the suite's torch and JAX tests) across exec
peak_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({{"peak_mb": peak_kb / 1024, "n_train": s["splits"]["train"]["n_samples"]}}))
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    print(out)
    assert out["n_train"] == 48 * 20448
    assert out["peak_mb"] < 2048, f"peak memory {out['peak_mb']:.0f} MB"
    root = zarr.open_group(str(tmp_path / "lmdz.zarr"), mode="r")
    assert root["train"]["inputs"].shape == (48 * 20448, 317)
    assert count_files(tmp_path / "lmdz.zarr") < 60


@pytest.mark.parametrize("n_rows", [3 * 256, 2 * 256 + 100])
def test_direct_shard_files_are_zarrs_own_bytes(tmp_path, n_rows):
    """Whole shards written straight to their files (no codec: the default store) are byte for byte
    what zarr writes for the same rows, including a partial last shard padded with the fill value and
    a chunk of fill values only (not stored); zarr and the loader read them back."""
    from nudgeml.data import ShardFileReader
    from nudgeml.shard import _compressors, _direct_writable, write_shard_direct

    rng = np.random.default_rng(0)
    rows = rng.standard_normal((n_rows, 7)).astype(np.float32)
    rows[64:128] = np.nan  # chunk 1 of shard 0: the fill value only
    rows[300, 2] = np.nan  # a lone NaN is data
    arrays = {}
    for how in ("zarr", "direct"):
        arr = zarr.create_array(str(tmp_path / f"{how}.zarr"), shape=rows.shape, dtype="float32", chunks=(64, 7), shards=(256, 7),
                                compressors=_compressors(0), fill_value=np.nan)
        assert _direct_writable(arr)
        for s in range(0, n_rows, 256):
            if how == "zarr":
                arr[s:s + 256] = rows[s:s + 256]
            else:
                write_shard_direct(arr, s // 256, np.ascontiguousarray(rows[s:s + 256]))
        arrays[how] = arr
    for s in range(-(-n_rows // 256)):
        key = arrays["zarr"].metadata.encode_chunk_key((s, 0))
        assert (tmp_path / "direct.zarr" / key).read_bytes() == (tmp_path / "zarr.zarr" / key).read_bytes(), f"shard {s}"
    back = zarr.open_array(str(tmp_path / "direct.zarr"), mode="r")
    np.testing.assert_array_equal(back[:], rows)
    out = np.empty_like(rows)
    ShardFileReader(back, tmp_path / "direct.zarr").read_into(0, n_rows, out)
    np.testing.assert_array_equal(out, rows)
    with pytest.raises(ValueError, match="expected"):  # a short last shard must be given whole
        write_shard_direct(arrays["direct"], 0, np.ascontiguousarray(rows[:100]))
    compressed = zarr.create_array(str(tmp_path / "zstd.zarr"), shape=rows.shape, dtype="float32", chunks=(64, 7), shards=(256, 7), compressors=_compressors(3))
    assert not _direct_writable(compressed)


def test_stage_writes_the_same_store_with_or_without_a_codec(columns, tmp_path):
    """The no-codec store (direct shard files) and a zstd store (zarr's path) hold the same samples."""
    import dataclasses

    shard_columns(columns, tmp_path / "raw.zarr", CFG)
    shard_columns(columns, tmp_path / "zstd.zarr", dataclasses.replace(CFG, compression_level=3))
    a, b = open_store(tmp_path / "raw.zarr"), open_store(tmp_path / "zstd.zarr")
    assert a["train"]["inputs"].metadata.codecs[0].codecs[-1].__class__.__name__ == "BytesCodec"
    for split in ("train", "val", "test"):
        for name in ("inputs", "targets"):
            np.testing.assert_array_equal(a[split][name][:], b[split][name][:])

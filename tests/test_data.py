import numpy as np
import pytest
import torch

from factories import write_history
from nudgeml.data import ColumnBatches, Segment, epoch_segments, make_xgb_iter, share, take_range
from nudgeml.errors import InputError
from nudgeml.extract import ColumnSpec, column_dataset, write_columns
from nudgeml.shard import ShardConfig, open_store, shard_columns


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    hist, guide, _ = write_history(root / "hist", nlat=6, nlon=10, nlev=3, ntime=24)
    cols = write_columns(column_dataset(hist, guide, None, ColumnSpec()), root / "columns.nc")
    cfg = ShardConfig(fractions={"train": 0.75, "val": 0.25}, gap_hours=0, chunk_samples=50, shard_samples=200, seed=1)
    shard_columns(cols, root / "ds.zarr", cfg)
    return root / "ds.zarr"


def keys(x):
    """A sample's identity: its full input row."""
    return [tuple(r) for r in x.numpy().round(4)]


def all_train_rows(store):
    return sorted(tuple(r) for r in np.asarray(open_store(store)["train"]["inputs"][:]).round(4))


@pytest.mark.parametrize(("workers", "run_chunks"), [(0, 1), (2, 1), (0, 2), (2, 8)])
def test_every_training_sample_once_per_epoch_across_workers(store, workers, run_chunks):
    ds = ColumnBatches(store, "train", batch_size=37, seed=5, run_chunks=run_chunks)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers)
    for epoch in range(2):
        ds.set_epoch(epoch)
        seen = [k for x, y in loader for k in keys(x)]
        assert sorted(seen) == all_train_rows(store)
    first_epoch = [k for x, _ in ColumnBatches(store, "train", 37, seed=5) for k in keys(x)]
    ds2 = ColumnBatches(store, "train", 37, seed=5)
    ds2.set_epoch(1)
    assert first_epoch != [k for x, _ in ds2 for k in keys(x)], "a new order every epoch"


def test_ranks_and_workers_partition_the_epoch(store):
    """3 DDP ranks x 2 workers: shares are disjoint, equal across ranks, and cover every sample."""
    n = open_store(store)["train"]["inputs"].shape[0]
    world = 3
    assert n % world == 0, "this fixture is sized so that ranks need no padding"
    per_rank = []
    for rank in range(world):
        ds = ColumnBatches(store, "train", batch_size=16, seed=2, rank=rank, world_size=world)
        loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
        per_rank.append([k for x, _ in loader for k in keys(x)])
    assert len({len(r) for r in per_rank}) == 1, "every rank sees the same number of samples"
    union = sorted(k for r in per_rank for k in r)
    assert union == all_train_rows(store)


def test_padding_when_ranks_do_not_divide_the_samples():
    segs = epoch_segments(10, 4, epoch=0, seed=0, shuffle=False)
    shares = [share(segs, 10, r, 4, pad=True) for r in range(4)]
    sizes = [sum(s.stop - s.start for s in sh) for sh in shares]
    assert sizes == [3, 3, 3, 3]
    rows = [i for sh in shares for s in sh for i in range(s.start, s.stop)]
    assert sorted(set(rows)) == list(range(10)) and len(rows) == 12  # 2 padded from the start
    assert take_range([Segment(0, 4), Segment(8, 10)], 3, 5) == [Segment(3, 4), Segment(8, 9)]


def test_batches_are_float32_with_the_store_widths(store):
    x, y = next(iter(ColumnBatches(store, "val", batch_size=8)))
    assert x.dtype == torch.float32 and x.shape == (8, 3 * 4 + 1) and y.shape == (8, 6)


def test_xgboost_iterator_streams_the_split(store):
    import xgboost as xgb

    m = xgb.QuantileDMatrix(make_xgb_iter(store, "train", rows_per_batch=100), max_bin=16)
    assert m.num_row() == open_store(store)["train"]["inputs"].shape[0]
    assert m.get_label().size == m.num_row() * 6


def test_corrupt_chunk_is_reported_with_its_location(store, tmp_path):
    import shutil

    bad = tmp_path / "bad.zarr"
    shutil.copytree(store, bad)
    shard_file = sorted((bad / "train" / "inputs" / "c").rglob("*"))[0]
    if shard_file.is_dir():
        shard_file = sorted(p for p in shard_file.rglob("*") if p.is_file())[0]
    data = shard_file.read_bytes()
    shard_file.write_bytes(data[: len(data) // 2])  # truncated
    ds = ColumnBatches(bad, "train", batch_size=16, shuffle=False)
    with pytest.raises(InputError, match=r"bad\.zarr.*train/inputs"):
        for _ in ds:
            pass
    with pytest.raises(InputError, match="no split 'nope'"):
        ColumnBatches(store, "nope", 8)


@pytest.mark.parametrize("level", [3, 0])
def test_direct_shard_reader_equals_zarr_on_any_row_range(tmp_path, level):
    """The direct reader decodes exactly what zarr reads: chunk, shard and array edges, empty chunks."""
    import zarr

    from nudgeml.data import ShardFileReader
    from nudgeml.shard import _compressors

    rng = np.random.default_rng(0)
    x = rng.normal(size=(1030, 7)).astype(np.float32)
    x[200:250] = np.nan  # a whole chunk of fill value: zarr does not store it
    arr = zarr.create_array(str(tmp_path / "a.zarr"), shape=x.shape, dtype="float32", chunks=(50, 7), shards=(200, 7), compressors=_compressors(level), fill_value=np.nan)
    arr[:] = x
    arr.resize((1010, 7))  # as the shard stage does after dropping rows: the last shard is partial
    assert ShardFileReader.supports(arr)
    reader = ShardFileReader(arr, tmp_path / "a.zarr")
    ranges = [(0, 1010), (0, 50), (49, 51), (190, 420), (200, 250), (1000, 1010), (399, 401)]
    ranges += [tuple(sorted(rng.integers(0, 1011, 2))) for _ in range(30)]
    import nudgeml.data as data_module

    for max_open in (8, 1):  # 1: every shard change closes a file and reopens another
        reader.close()  # the indexes stay cached: files reopen without rereading them
        data_module._MAX_OPEN = max_open
        try:
            for a, b in ranges:
                out = np.full((b - a, 7), 7.0, np.float32)
                reader.read_into(a, b, out)
                np.testing.assert_array_equal(out, arr[a:b], err_msg=f"rows {a}:{b}")
                assert len(reader._fds) <= max_open
        finally:
            data_module._MAX_OPEN = 8
    reader.close()


def test_direct_prefetching_and_zarr_loaders_yield_the_same_batches(store):
    for run in (1, 3):
        ds = ColumnBatches(store, "train", 23, seed=4, run_chunks=run)
        direct = [(x.numpy(), y.numpy()) for x, y in ds]
        assert ds.arrays._direct, "the shard stage's layout is read directly"
        # zarr's read path, no read-ahead thread: the same batches in the same order
        via_zarr = [(x.numpy(), y.numpy()) for x, y in ColumnBatches(store, "train", 23, seed=4, run_chunks=run, direct=False, prefetch=False)]
        assert len(direct) == len(via_zarr)
        for (xd, yd), (xz, yz) in zip(direct, via_zarr, strict=True):
            np.testing.assert_array_equal(xd, xz)
            np.testing.assert_array_equal(yd, yz)

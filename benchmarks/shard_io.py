"""Benchmark: zarr v3 shard I/O vs raw NumPy, measured in one run on 2 M x 317 float32 samples.

I/O is measured as it happens on a cluster file system, not in the page cache: writes end with fsync
of every file written, and reads start cold (the files' cached pages are dropped with
posix_fadvise(DONTNEED)). Prints:
* format write: a sharded zarr array written the shard stage's way vs ``np.save`` of the same array
  (goal >= 0.9): with no codec (the default) whole shards go straight to their files
  (``nudgeml.shard.write_shard_direct``), with a codec through zarr; zarr's own write of the same
  uncompressed array is printed beside it;
* shard stage: the full streaming shuffle (``shard_columns``) vs ``np.save`` (for information: it
  writes the data twice, buckets then store, and shuffles);
* loader: ``ColumnBatches`` epoch throughput (0 and 2 workers; ``--run-chunks`` sweeps the read unit,
  default the loader's) vs a raw memmap read of the same chunks in the same random order (goal >= 0.7);
* files per simulated LMDZ year (144 x 142 columns, 6-hourly) at the default shard size (goal <= 200).

    .venv/bin/python benchmarks/shard_io.py [--samples 2000000] [--features 317] [--run-chunks 1,8,32]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import xarray as xr
import zarr

from nudgeml.data import RUN_CHUNKS, ColumnBatches
from nudgeml.extract import ColumnSpec, expand_names
from nudgeml.shard import ShardConfig, _compressors, _direct_writable, count_files, files_per_split, shard_columns, write_shard_direct
from nudgeml.split import SPLITS


def synthetic(n: int, f: int, seed: int = 0) -> np.ndarray:
    """Column-like data: smooth vertical profiles per sample plus noise (compresses like real states)."""
    rng = np.random.default_rng(seed)
    k = np.arange(f, dtype=np.float32)[None, :]
    amp = rng.normal(size=(n, 1)).astype(np.float32)
    return (10 * np.sin(0.05 * k) + amp * np.cos(0.1 * k) + 0.1 * rng.normal(size=(n, f)).astype(np.float32)).astype(np.float32)


def sync_files(root: Path) -> None:
    """fsync every file under ``root`` (or ``root`` itself)."""
    paths = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def drop_cache(root: Path) -> None:
    """Evict the files' pages from the page cache, so the next read comes from disk."""
    sync_files(root)
    paths = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def timed(fn, *args, **kw):
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    return time.perf_counter() - t0, out


def recode(store: Path, out: Path, level: int) -> Path:
    """A copy of a training store with another compression level (0: no codec)."""
    src = zarr.open_group(str(store), mode="r")
    dst = zarr.open_group(str(out), mode="w", zarr_format=3)
    dst.attrs.update(src.attrs.asdict())
    for split in src.group_keys():
        g = dst.create_group(split)
        for name in src[split].array_keys():
            a = src[split][name]
            b = g.create_array(name, shape=a.shape, dtype=a.dtype, chunks=a.chunks, shards=a.shards, compressors=_compressors(level) if a.shards else None, fill_value=a.fill_value)
            step = a.shards[0] if a.shards else a.shape[0]
            for s in range(0, a.shape[0], step):
                b[s:s + step] = a[s:s + step]
    sync_files(out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=2_000_000)
    ap.add_argument("--features", type=int, default=317)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--run-chunks", default=str(RUN_CHUNKS), help="comma-separated read units (chunks) to sweep")
    ap.add_argument("--workers", default="0,2", help="comma-separated DataLoader worker counts")
    ap.add_argument("--levels", default=None, help="comma-separated compression levels to sweep (0 = uncompressed; default: the shard stage's)")
    ap.add_argument("--prefetch", default="1", help="comma-separated: 1 = read the next buffer on a thread, 0 = not")
    ap.add_argument("--direct", default="1", help="comma-separated: 1 = the loader's direct shard reader, 0 = zarr's read path")
    args = ap.parse_args()
    n, f = args.samples, args.features
    work = Path(tempfile.mkdtemp(prefix="shard-io-", dir=args.workdir))
    cfg = ShardConfig(fractions={"train": 1.0}, gap_hours=0)
    x = synthetic(n, f)
    gb = x.nbytes / 1e9
    try:
        def npy_write() -> None:
            np.save(work / "raw.npy", x)
            sync_files(work / "raw.npy")

        t_npy, _ = timed(npy_write)

        levels = [int(v) for v in args.levels.split(",")] if args.levels else [cfg.compression_level]

        def zarr_write(level: int, direct: bool) -> None:
            arr = zarr.create_array(str(work / "fmt.zarr"), shape=x.shape, dtype="float32", chunks=(cfg.chunk_samples, f), shards=(cfg.shard_samples, f), compressors=_compressors(level), fill_value=np.nan, overwrite=True)
            for s in range(0, n, cfg.shard_samples):
                if direct:
                    write_shard_direct(arr, s // cfg.shard_samples, x[s:s + cfg.shard_samples])
                else:
                    arr[s:s + cfg.shard_samples] = x[s:s + cfg.shard_samples]
            sync_files(work / "fmt.zarr")

        print(f"data: {n} x {f} float32 = {gb:.2f} GB")
        for level in levels:
            probe = zarr.create_array(str(work / "probe.zarr"), shape=x.shape, dtype="float32", chunks=(cfg.chunk_samples, f), shards=(cfg.shard_samples, f), compressors=_compressors(level), fill_value=np.nan, overwrite=True)
            direct = _direct_writable(probe)
            t_zarr, _ = timed(zarr_write, level, direct)
            way = "direct shard files" if direct else "zarr"
            print(f"format write   np.save {gb / t_npy:6.2f} GB/s   sharded, level {level}, the stage's way ({way}) {gb / t_zarr:6.2f} GB/s   ratio {t_npy / t_zarr:.2f} (goal >= 0.9)", flush=True)
            if direct:
                t_lib, _ = timed(zarr_write, level, False)
                print(f"               zarr's own write of the same array {gb / t_lib:6.2f} GB/s   ratio {t_npy / t_lib:.2f}", flush=True)

        # the full shard stage on the same data laid out as (time, column, feature)
        ncol = 20448
        nt = n // ncol
        spec = ColumnSpec()
        nlev = (f - 1) // 4
        ds = xr.Dataset(
            {"inputs": (("time", "column", "feature"), x[: nt * ncol].reshape(nt, ncol, f)),
             "targets": (("time", "column", "target"), x[: nt * ncol, : 2 * nlev].reshape(nt, ncol, 2 * nlev))},
            coords={"time": np.datetime64("2000-01-01T00") + np.arange(nt) * np.timedelta64(6, "h"),
                    "feature": expand_names(spec.feature_blocks(nlev)), "target": expand_names(spec.target_blocks(nlev)),
                    "presnivs": ("lev", np.linspace(1e5, 10, nlev))},
            attrs={"feature_blocks": json.dumps(spec.feature_blocks(nlev)), "target_blocks": json.dumps(spec.target_blocks(nlev))},
        )
        def stage() -> None:
            shard_columns(ds, work / "stage.zarr", cfg)
            sync_files(work / "stage.zarr")

        t_stage, _ = timed(stage)
        stage_gb = (nt * ncol * (f + 2 * nlev) * 4) / 1e9
        print(f"shard stage    {stage_gb / t_stage:6.2f} GB/s (inputs + targets, streaming shuffle; ratio to np.save {(stage_gb / t_stage) / (gb / t_npy):.2f})")

        # loader vs raw memmap, both arrays, same chunk order, cold reads
        store = work / "stage.zarr"
        grp = zarr.open_group(str(store), mode="r")["train"]
        rows, ntarg = grp["inputs"].shape[0], grp["targets"].shape[1]
        np.save(work / "raw_x.npy", np.asarray(grp["inputs"][:]))
        np.save(work / "raw_y.npy", np.asarray(grp["targets"][:]))
        order = np.random.default_rng(0).permutation(-(-rows // cfg.chunk_samples))
        nbytes = rows * (f + ntarg) * 4

        def raw_read() -> int:
            rx, ry = np.load(work / "raw_x.npy", mmap_mode="r"), np.load(work / "raw_y.npy", mmap_mode="r")
            total = 0
            for c in order:
                sl = slice(c * cfg.chunk_samples, (c + 1) * cfg.chunk_samples)
                total += np.array(rx[sl]).shape[0] + 0 * np.array(ry[sl]).shape[0]
            return total

        drop_cache(work / "raw_x.npy")
        drop_cache(work / "raw_y.npy")
        t_raw, _ = timed(raw_read)
        raw_gbs = nbytes / 1e9 / t_raw
        stores = {cfg.compression_level: store}
        for level in levels:  # the same store recoded (untimed): the loader sweep per codec
            if level not in stores:
                stores[level] = recode(store, work / f"level{level}.zarr", level)
        sweep = [(lv, d, pf, r, w) for lv in levels for d in args.direct.split(",") for pf in args.prefetch.split(",") for r in args.run_chunks.split(",") for w in args.workers.split(",")]
        for level, direct, prefetch, run, workers in ((lv, d == "1", pf == "1", int(r), int(w)) for lv, d, pf, r, w in sweep):
            drop_cache(stores[level])
            ds_l = ColumnBatches(stores[level], "train", batch_size=4096, seed=0, run_chunks=run, direct=direct, prefetch=prefetch)
            loader = torch.utils.data.DataLoader(ds_l, batch_size=None, num_workers=workers)
            t_load, seen = timed(lambda: sum(b[0].shape[0] for b in loader))  # noqa: B023 -- called at once
            load_gbs = seen * (f + ntarg) * 4 / 1e9 / t_load
            print(f"loader level {level} {'direct' if direct else 'zarr  '} prefetch={int(prefetch)} run={run:<3d} w={workers} {load_gbs:6.2f} GB/s ({seen / t_load / 1e6:.2f} M samples/s)   raw memmap {raw_gbs:6.2f} GB/s   ratio {load_gbs / raw_gbs:.2f} (goal >= 0.7)", flush=True)

        year = 20448 * 1460
        fr = {"train": 0.7, "val": 0.15, "test": 0.15}
        per_year = sum(files_per_split(int(year * fr[s]), cfg.shard_samples) for s in SPLITS) + 9  # + root, stats
        print(f"files per LMDZ year at shard_samples={cfg.shard_samples}: {per_year} (goal <= 200); this 2 M store: {count_files(store)} files")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

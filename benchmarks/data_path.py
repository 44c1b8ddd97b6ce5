"""Benchmark: the data path at LMDZ size (extract -> shard -> loader), projected to 10 years.

A synthetic LMDZ-size run (144 x 142 = 20 448 columns, 79 levels, 6-hourly windows) is written as
LMDZ-convention ``histhf.nc`` + ``guide_ins.nc`` through the project's own writers (as the tests'
``factories.write_history`` does), then each stage runs in its own child process so its peak memory
(``ru_maxrss``) is its own:

* extract: :func:`nudgeml.extract.column_dataset` + :func:`~nudgeml.extract.write_columns`;
* shard: :func:`nudgeml.shard.shard_columns` (split, streaming shuffle, statistics), fsync'd;
* loader: one epoch of :class:`nudgeml.data.ColumnBatches` over the training split, cold reads.

A full month (124 windows) is ~9 GB of history; ``--windows 8,32`` (the default) runs two scaled-down
sizes: throughput is then projected linearly and the two peak memories show whether memory grows
with the number of windows (the shard stage's memory is bounded by one shard: give ``--shard-samples``
below the training split's size to see the bound at a scaled-down size). Prints per stage and size: seconds, GB/s (stage input + output bytes
for extract and shard, float32 samples for the loader), samples/s, peak RSS; then the 10-year
projection (144 x 142 x 1460 x 10 ~ 298 M samples) against Jean Zay's 20 h ``prepost`` limit, and
the loader against what one A100 consumes for the 317 -> 3x128 -> 158 MLP under a stated assumption.

    .venv/bin/python benchmarks/data_path.py [--windows 8,32] [--shard-samples 524288] [--workdir DIR]

The extract stage fixes glibc's mmap threshold as the rule does (:mod:`nudgeml.memory`);
``NUDGEML_GLIBC_MMAP_DEFAULT=1`` in the environment measures it with glibc's dynamic threshold instead.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

NLON, NLAT, NLEV = 144, 142, 79
COLUMNS = NLON * NLAT
WINDOWS_PER_YEAR = 1460
PREPOST_S = 20 * 3600
# the MLP's multiply-adds per sample: 317 -> 128 -> 128 -> 128 -> 158
MLP_MACS = 317 * 128 + 128 * 128 * 2 + 128 * 158
# stated assumption, not a measurement: A100 FP32 (non-tensor-core) peak 19.5 TFLOP/s; training is
# forward + backward ~ 3x the forward's 2 FLOP per multiply-add; 30 % of peak for 128-wide layers
A100_FLOPS, A100_UTIL = 19.5e12, 0.30


def generate(root: Path, windows: int, seed: int = 0) -> tuple[Path, Path]:
    """LMDZ-convention history + nudging files, one window at a time (smooth fields + noise)."""
    from nudgeml.conventions import LmdzGrid, guide_record, histhf_record, open_guide_writer, open_histhf_writer
    from nudgeml.ncstream import seconds_since

    t0 = np.datetime64("2000-01-01T00:00", "s")
    lat = np.linspace(-90 + 90 / NLAT, 90 - 90 / NLAT, NLAT)
    lon = np.arange(NLON) * 360.0 / NLON
    grid = LmdzGrid(lat, lon, np.linspace(100000.0, 10.0, NLEV))
    root.mkdir(parents=True, exist_ok=True)
    hist = open_histhf_writer(root / "histhf.nc", grid, epoch=t0, window_hours=6)
    guide = open_guide_writer(root / "guide_ins.nc", grid, epoch=t0, alpha=1 / 12, window_hours=6)
    rng = np.random.default_rng(seed)
    k = np.linspace(0, 1, NLEV)[:, None, None]
    base = np.cos(np.deg2rad(lat))[None, :, None] * np.ones((1, 1, NLON))
    for t in range(windows):
        phase = np.sin(np.deg2rad(lon) + 0.3 * t)[None, None, :]
        noise = rng.standard_normal((NLEV, NLAT, NLON), dtype=np.float32)
        u = (20 * base * phase + 5 * k + noise).astype(np.float32)
        v = (5 * phase * k + noise[::-1]).astype(np.float32)
        temp = (290 - 80 * k + 10 * base + 0.5 * noise).astype(np.float32)
        q = (0.01 * np.exp(-5 * k) * base * (1 + 0.1 * noise)).astype(np.float32)
        ps = (1e5 + 1e3 * base[0] * phase[0] + 100 * noise[0]).astype(np.float32)
        when = seconds_since([t0 + np.timedelta64(6 * t, "h")], t0)[0]
        hist.append(when, **histhf_record(grid, u=u, v=v, t=temp, q=q, ps=ps, precip=ps * 0))
        du = (1e-5 * noise * base).astype(np.float32)
        guide.append(when, **guide_record(grid, u=u, v=v, ua=u, va=v, du_ms2=du, dv_ms2=-du, pressure=u * 0 + 5e4))
    hist.close()
    guide.close()
    return root / "histhf.nc", root / "guide_ins.nc"


def _sync_tree(root: Path) -> None:
    for p in [root] if root.is_file() else [q for q in root.rglob("*") if q.is_file()]:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # the next stage reads from disk
        finally:
            os.close(fd)


def _size(root: Path) -> int:
    return root.stat().st_size if root.is_file() else sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def stage(name: str, work: Path, shard_samples: int) -> dict:
    """Run one stage in this (child) process; return its measures."""
    import zarr

    from nudgeml.data import ColumnBatches
    from nudgeml.extract import ColumnSpec, column_dataset, write_columns
    from nudgeml.shard import ShardConfig, shard_columns

    t0 = time.perf_counter()
    if name == "extract":
        if not os.environ.get("NUDGEML_GLIBC_MMAP_DEFAULT"):  # as the rule does; set it to measure glibc's default
            from nudgeml.memory import fix_mmap_threshold

            fix_mmap_threshold()
        ds = column_dataset(work / "histhf.nc", work / "guide_ins.nc", None, ColumnSpec())
        write_columns(ds, work / "columns.nc")
        _sync_tree(work / "columns.nc")
        nbytes = _size(work / "histhf.nc") + _size(work / "guide_ins.nc") + _size(work / "columns.nc")
        samples = ds.sizes["time"] * ds.sizes["column"]
    elif name == "shard":
        cfg = ShardConfig(fractions={"train": 0.8, "val": 0.1, "test": 0.1}, gap_hours=0, shard_samples=shard_samples)
        shard_columns(work / "columns.nc", work / "ds.zarr", cfg)
        _sync_tree(work / "ds.zarr")
        nbytes = _size(work / "columns.nc") + _size(work / "ds.zarr")
        samples = sum(v["n_samples"] for v in zarr.open_group(str(work / "ds.zarr"), mode="r").attrs["splits"].values())
    elif name == "loader":
        ds_l = ColumnBatches(work / "ds.zarr", "train", batch_size=4096, seed=0)
        samples = sum(x.shape[0] for x, _ in ds_l)
        nbytes = samples * (ds_l.arrays.n_features + ds_l.arrays.n_targets) * 4
    else:
        raise SystemExit(f"unknown stage {name!r}")
    seconds = time.perf_counter() - t0
    return {"stage": name, "seconds": seconds, "bytes": nbytes, "samples": samples, "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", default="8,32", help="comma-separated numbers of 6-hourly windows (124 = a month)")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--shard-samples", type=int, default=524288, help="samples per shard (the shard stage's memory unit)")
    ap.add_argument("--stage", help=argparse.SUPPRESS)  # internal: run one stage in this process
    args = ap.parse_args()
    if args.stage:
        print(json.dumps(stage(args.stage, Path(args.workdir), args.shard_samples)))
        return
    results: dict[int, list[dict]] = {}
    for windows in (int(v) for v in args.windows.split(",")):
        work = Path(tempfile.mkdtemp(prefix=f"data-path-{windows}-", dir=args.workdir))
        try:
            t0 = time.perf_counter()
            generate(work, windows)
            _sync_tree(work)
            print(f"{windows} windows x {COLUMNS} columns x {NLEV} levels: history written in {time.perf_counter() - t0:.0f} s ({_size(work) / 1e9:.2f} GB)", flush=True)
            results[windows] = []
            for name in ("extract", "shard", "loader"):
                out = subprocess.run([sys.executable, __file__, "--stage", name, "--workdir", str(work), "--shard-samples", str(args.shard_samples)], capture_output=True, text=True, check=False)
                if out.returncode:
                    raise SystemExit(f"stage {name} failed:\n{out.stderr[-3000:]}")
                r = json.loads(out.stdout.strip().splitlines()[-1])
                results[windows].append(r)
                print(f"  {name:8s} {r['seconds']:7.1f} s  {r['bytes'] / 1e9 / r['seconds']:6.3f} GB/s  {r['samples'] / r['seconds'] / 1e6:6.3f} M samples/s  peak RSS {r['peak_rss_gb']:5.2f} GB", flush=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    largest, smallest = max(results), min(results)
    total = COLUMNS * WINDOWS_PER_YEAR * 10
    how = f"the marginal rate between {smallest} and {largest} windows (start-up costs aside)" if smallest != largest else f"linear from {largest} windows"
    print(f"\n10-year projection ({NLON} x {NLAT} x {WINDOWS_PER_YEAR} x 10 = {total / 1e6:.0f} M samples, "
          f"{total * (317 + 158) * 4 / 1e9:.0f} GB float32), {how}, one process each:")
    for a, b in zip(results[smallest], results[largest], strict=True):
        rate = (b["samples"] - a["samples"]) / (b["seconds"] - a["seconds"]) if smallest != largest else b["samples"] / b["seconds"]
        seconds = total / rate
        print(f"  {b['stage']:8s} {rate / 1e6:6.3f} M samples/s  {seconds / 3600:7.1f} h   ({seconds / PREPOST_S:.2f} x the 20 h prepost limit)   "
              f"peak RSS {a['peak_rss_gb']:.2f} GB at {smallest} windows, {b['peak_rss_gb']:.2f} GB at {largest}")
    loader = next(r for r in results[largest] if r["stage"] == "loader")
    a100 = A100_FLOPS * A100_UTIL / (3 * 2 * MLP_MACS)
    per_proc = loader["samples"] / loader["seconds"]
    print(f"\nA100 MLP consumption (assumed: {A100_FLOPS / 1e12:.1f} TFLOP/s FP32 x {A100_UTIL:.0%} utilisation, training = 3 x forward, "
          f"{MLP_MACS} multiply-adds/sample): {a100 / 1e6:.1f} M samples/s; loader {per_proc / 1e6:.2f} M samples/s per process (cold reads) "
          f"-> {a100 / per_proc:.0f} loader processes per A100")


if __name__ == "__main__":
    main()

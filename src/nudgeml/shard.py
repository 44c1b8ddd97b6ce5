"""Shard: the column table -> a zarr v3 training store (sharded, optionally compressed, pre-shuffled, split in time).

Layout of ``dataset.zarr``::

    zarr.json                   attrs: feature/target names and blocks, levels, units, splits, counts, source hash
    {train,val,test}/inputs     (sample, feature) float32, chunks (chunk_samples, F), shards (shard_samples, F)
    {train,val,test}/targets    (sample, target)  float32
    stats/{input,target}_{mean,std,min,max}   computed on the training split only

* **Split in time** (dates, fractions or a repeating cycle, :mod:`nudgeml.split`), with a gap between
  blocks so neighbouring 6-hourly states (strongly correlated) do not leak across splits, and only
  times before the free runs (out of sample).
* **Shuffled once at write time**, in bounded memory: a random permutation of each split's samples is
  cut into shard-sized buckets; pass 1 streams the table in time order and scatters each sample into its
  bucket (a temporary file, one per bucket), pass 2 writes the buckets one after the other, each
  exactly one zarr shard, inputs then targets. Peak memory is one time block, or one shard of one array
  while zarr encodes it (~3.5x its raw size: a copy per chunk, the encoded chunks, the joined shard),
  whatever the data size. Without a codec (the default) a shard is written straight to its file
  (:func:`write_shard_direct`, byte for byte zarr's layout), at about ``np.save``'s rate.
* **Non-finite samples** are dropped and counted (``nan_policy: drop``) or stop the stage
  (``nan_policy: fail``), never kept.
* Written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import ctypes
import json
import logging
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from nudgeml.atomic import atomic_path
from nudgeml.errors import InputError
from nudgeml.split import SplitSpec, blocks
from nudgeml.split import split_times as _split_times

log = logging.getLogger(__name__)

FORMAT = "nudgeml-columns"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ShardConfig:
    """How the store is laid out (see the module docstring); the time split is :mod:`nudgeml.split`'s."""

    fractions: Mapping[str, float] | None = None  # train/val/test fractions of the usable times
    dates: Mapping[str, Sequence[str]] | None = None  # or explicit [start, end] per split (inclusive)
    cycle: Mapping[str, float] | None = None  # or a repeating train/val/test pattern (days)
    gap_hours: float = 24.0
    before: str | None = None  # free_runs.start: fractions and cycle use only the times before it
    chunk_samples: int = 4096
    shard_samples: int = 524288
    seed: int = 0
    nan_policy: str = "drop"
    compression_level: int = 0  # no codec: the loader reads rows in place (benchmarks/README.md, loader sweep)
    time_block_bytes: int = 256 * 2**20

    def __post_init__(self) -> None:
        self.split  # noqa: B018 -- builds the split spec, which checks the split kind
        if self.shard_samples % self.chunk_samples:
            raise InputError(f"shard_samples ({self.shard_samples}) must be a multiple of chunk_samples ({self.chunk_samples})")
        if self.nan_policy not in ("drop", "fail"):
            raise InputError(f"nan_policy must be 'drop' or 'fail', got {self.nan_policy!r}")

    @property
    def split(self) -> SplitSpec:
        return SplitSpec(dates=self.dates, fractions=self.fractions, cycle=self.cycle, gap_hours=self.gap_hours, before=self.before)

    @classmethod
    def from_config(cls, section: Mapping[str, Any], before: str | None = None) -> "ShardConfig":
        """``section``: the config's ``dataset``; ``before``: ``free_runs.start`` (out of sample)."""
        split = section["split"]
        return cls(
            fractions=split.get("fractions"),
            dates=split.get("dates"),
            cycle=split.get("cycle"),
            gap_hours=float(split.get("gap_hours", 24.0)),
            before=before,
            chunk_samples=int(section["chunk_samples"]),
            shard_samples=int(section["shard_samples"]),
            seed=int(section["seed"]),
            nan_policy=section["nan_policy"],
            compression_level=int(section["compression_level"]),
        )


def split_times(times: np.ndarray, cfg: ShardConfig) -> dict[str, np.ndarray]:
    """Indices of the time steps of each split (:func:`nudgeml.split.split_times`)."""
    return _split_times(times, cfg.split)


class _Moments:
    """Streaming per-column count, mean, M2 (Chan et al.), min and max in float64."""

    def __init__(self, n: int) -> None:
        self.count = 0
        self.mean = np.zeros(n)
        self.m2 = np.zeros(n)
        self.min = np.full(n, np.inf)
        self.max = np.full(n, -np.inf)

    def update(self, x: np.ndarray) -> None:
        if x.shape[0] == 0:
            return
        x = x.astype(np.float64)
        nb = x.shape[0]
        mb = x.mean(axis=0)
        m2b = ((x - mb) ** 2).sum(axis=0)
        n = self.count + nb
        delta = mb - self.mean
        self.mean = self.mean + delta * nb / n
        self.m2 = self.m2 + m2b + delta**2 * self.count * nb / n
        self.count = n
        self.min = np.minimum(self.min, x.min(axis=0))
        self.max = np.maximum(self.max, x.max(axis=0))

    @property
    def std(self) -> np.ndarray:
        std = np.sqrt(self.m2 / max(self.count - 1, 1))
        # a constant column (e.g. a geographic feature on one latitude) must not divide by zero
        return np.where(std > 0, std, 1.0)


def _compressors(level: int) -> Any:
    """Blosc zstd at ``level``; level 0: no codec at all (the loader then reads rows as they lie on disk)."""
    from zarr.codecs import BloscCodec, BloscShuffle

    if level == 0:
        return None

    # byte shuffle: same ratio as bitshuffle on float32 columns, decodes ~1.5x faster (benchmarks/shard_io.py)
    return BloscCodec(cname="zstd", clevel=level, shuffle=BloscShuffle.shuffle)


def _open_source(source: str | os.PathLike[str] | xr.Dataset) -> tuple[xr.Dataset, str]:
    if isinstance(source, xr.Dataset):
        ds, name = source, "<dataset>"
    else:
        path = Path(source)
        if not path.exists():
            raise InputError(f"{path}: column table not found")
        try:
            ds = xr.open_dataset(path)
        except Exception as exc:
            raise InputError(f"{path}: cannot be read as NetCDF ({exc})") from exc
        name = str(path)
    for var in ("inputs", "targets", "feature", "target"):
        if var not in ds.variables:
            raise InputError(f"{name}: column table has no {var!r}")
    return ds, name


def _release_free_memory() -> None:
    """Hand the allocator's free pages back to the system (glibc only; elsewhere a no-op).

    zarr encodes a shard as ~5 MB chunk buffers on several threads; glibc keeps such freed buffers in
    per-thread arenas, so without this the next shard's peak lands on top of the last one's leftovers
    (~0.9 GB on the LMDZ-sized test, whose buckets hold 1 GB).
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


ABSENT_CHUNK = np.iinfo(np.uint64).max  # the shard index's offset (and length) of a chunk that is not stored


def sharded_layout_supported(arr: Any) -> bool:
    """Whether ``arr`` has the one layout this stage writes and :class:`nudgeml.data.ShardFileReader`
    reads directly: a local 2-D float32 array, zarr v3 sharding with the index at the end (``bytes`` +
    ``crc32c``), inner codecs ``bytes`` (little-endian) then optionally Blosc, a shard spanning the rows'
    full width."""
    from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, ShardingCodec
    from zarr.codecs.sharding import ShardingCodecIndexLocation
    from zarr.storage import LocalStore

    codecs = arr.metadata.codecs
    if not (isinstance(arr.store, LocalStore) and len(codecs) == 1 and isinstance(codecs[0], ShardingCodec)):
        return False
    sh = codecs[0]
    inner_ok = (len(sh.codecs) in (1, 2) and isinstance(sh.codecs[0], BytesCodec) and str(sh.codecs[0].endian.value) == "little"
                and (len(sh.codecs) == 1 or isinstance(sh.codecs[1], BloscCodec)))
    index_ok = [type(c) for c in sh.index_codecs] == [BytesCodec, Crc32cCodec] and sh.index_location == ShardingCodecIndexLocation.end
    return bool(inner_ok and index_ok and arr.ndim == 2 and str(arr.dtype) == "float32" and tuple(sh.chunk_shape)[1:] == tuple(arr.shape[1:]) and arr.shards[1] == arr.shape[1])


def _direct_writable(arr: Any) -> bool:
    """Whether :func:`write_shard_direct` can write ``arr``: that layout with no codec."""
    return sharded_layout_supported(arr) and len(arr.metadata.codecs[0].codecs) == 1


def write_shard_direct(arr: Any, s: int, rows: np.ndarray) -> Path:
    """Write shard ``s`` of ``arr`` (all its rows inside the array, ``rows``) straight to its file.

    zarr's sharded write path (3.1) copies each chunk out of the caller's array, encodes it on a thread
    pool and joins the encoded chunks into a new shard buffer before one write: on the benchmark machine
    that was 0.15-0.26 of ``np.save``'s rate without a codec (``benchmarks/README.md``). With no codec a shard is just the
    rows' bytes, then its index, so this writes the caller's buffer as it is, in zarr v3's sharding layout
    (the one :class:`nudgeml.data.ShardFileReader` reads): the chunks back to back in row order from offset
    0, the last one padded to a whole chunk with the fill value; a chunk that would hold only the fill
    value is not stored (zarr's ``write_empty_chunks: false``); then the index, one little-endian uint64
    (offset, length) pair per chunk of the shard (2**64 - 1 twice for a chunk not stored), then the
    index's crc32c. The file is byte for byte zarr's own (``tests/test_shard.py``). Only for arrays
    :func:`_direct_writable` accepts; the caller makes the file durable (the stage renames the store).
    """
    import google_crc32c

    shard_rows, width = int(arr.shards[0]), int(arr.shape[1])
    chunk_rows = int(arr.metadata.codecs[0].chunk_shape[0])
    expected = min(shard_rows, int(arr.shape[0]) - s * shard_rows)
    if rows.shape != (expected, width) or rows.dtype != np.dtype("<f4") or not rows.flags.c_contiguous:
        raise ValueError(f"shard {s} of {arr.path}: rows {rows.shape} {rows.dtype} (C-contiguous: {rows.flags.c_contiguous}), expected ({expected}, {width}) little-endian float32, C order")
    n_chunks = -(-expected // chunk_rows)
    pad = n_chunks * chunk_rows - expected
    tail = np.full((pad, width), arr.fill_value, "<f4") if pad else None
    chunk_bytes = chunk_rows * width * 4
    fill_is_nan = np.isnan(arr.fill_value)
    # a chunk holding only the fill value is not stored; its first row tells cheaply when it cannot be
    empty = np.zeros(n_chunks, bool)
    for k in range(n_chunks):
        first = rows[k * chunk_rows]
        if (np.isnan(first).all() if fill_is_nan else (first == arr.fill_value).all()):
            chunk = rows[k * chunk_rows:(k + 1) * chunk_rows]
            empty[k] = bool(np.isnan(chunk).all() if fill_is_nan else (chunk == arr.fill_value).all())
    index = np.full((shard_rows // chunk_rows, 2), ABSENT_CHUNK, "<u8")
    stored = np.flatnonzero(~empty)
    index[stored, 0] = np.arange(stored.size, dtype=np.uint64) * chunk_bytes
    index[stored, 1] = chunk_bytes
    path = Path(arr.store.root) / arr.path / arr.metadata.encode_chunk_key((s, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        if not empty.any():  # the usual case: the caller's rows in one write
            fh.write(memoryview(rows).cast("B"))
        else:
            for k in stored:
                fh.write(memoryview(rows[k * chunk_rows:min((k + 1) * chunk_rows, expected)]).cast("B"))
                # the padded tail is written below only when the last chunk is stored
        if tail is not None and not empty[-1]:
            fh.write(memoryview(tail).cast("B"))
        raw = index.tobytes()
        fh.write(raw)
        fh.write(google_crc32c.value(raw).to_bytes(4, "little"))
    return path


def _write_split(ds: xr.Dataset, name: str, split: str, t_idx: np.ndarray, group: Any, cfg: ShardConfig, rng: np.random.Generator, scratch: Path, moments: tuple[_Moments, _Moments] | None) -> tuple[int, int]:
    """Shuffle one split into ``group``; return (samples written, non-finite samples dropped).

    Pass 1 appends each time block's rows, with their place in the split's random permutation, to the
    file of the bucket (future shard) that place falls in; pass 2 reads one bucket at a time, puts its
    rows in place, drops non-finite rows and writes it, inputs then targets. Memory: one time block,
    or one array's shard while zarr encodes it.
    """
    times = ds["time"].values
    ncol, nfeat, ntarg = ds.sizes["column"], ds.sizes["feature"], ds.sizes["target"]
    n_all = t_idx.size * ncol
    n_buckets = max(1, math.ceil(n_all / cfg.shard_samples))
    perm = rng.permutation(n_all)
    block = max(1, cfg.time_block_bytes // (ncol * (nfeat + ntarg) * 4))
    files = [open(scratch / f"{split}_{b:05d}.bin", "wb") for b in range(n_buckets)]
    # places of the non-finite rows in each bucket: pass 2 drops them from both arrays
    bad_places: list[list[np.ndarray]] = [[] for _ in range(n_buckets)]
    dropped = 0
    try:
        for start in range(0, t_idx.size, block):
            sl = t_idx[start:start + block]
            x = np.asarray(ds["inputs"].isel(time=sl).values, np.float32).reshape(-1, nfeat)
            y = np.asarray(ds["targets"].isel(time=sl).values, np.float32).reshape(-1, ntarg)
            finite = np.isfinite(x).all(axis=1) & np.isfinite(y).all(axis=1)
            bad = int((~finite).sum())
            if bad and cfg.nan_policy == "fail":
                first = int(np.flatnonzero(~finite)[0])
                raise InputError(
                    f"{name}: {bad} non-finite sample(s) in 'inputs'/'targets' (first at time {times[sl[first // ncol]]}, "
                    f"column {first % ncol}); nan_policy is 'fail'"
                )
            dropped += bad
            if moments is not None:
                # in slices: the float64 copies of a whole block would double pass 1's peak
                for lo in range(0, x.shape[0], 65536):
                    keep = finite[lo:lo + 65536]
                    moments[0].update(x[lo:lo + 65536][keep])
                    moments[1].update(y[lo:lo + 65536][keep])
            pos = perm[start * ncol:start * ncol + x.shape[0]]
            bucket, offset = np.divmod(pos, cfg.shard_samples)
            order = np.argsort(bucket, kind="stable")
            bounds = np.searchsorted(bucket[order], np.arange(n_buckets + 1))
            for b in range(n_buckets):
                rows = order[bounds[b]:bounds[b + 1]]
                if rows.size:  # one record: count, the rows' places in the shard, their inputs, their targets
                    files[b].write(np.int64(rows.size).tobytes())
                    files[b].write(offset[rows].astype(np.int64).tobytes())
                    files[b].write(x[rows].tobytes())
                    files[b].write(y[rows].tobytes())
                    if bad:
                        bad_places[b].append(offset[rows][~finite[rows]])
            del x, y
    finally:
        for f in files:
            f.close()
    arrays = {
        "inputs": group.create_array("inputs", shape=(n_all, nfeat), dtype="float32", chunks=(cfg.chunk_samples, nfeat), shards=(cfg.shard_samples, nfeat), compressors=_compressors(cfg.compression_level), dimension_names=("sample", "feature"), fill_value=np.nan),
        "targets": group.create_array("targets", shape=(n_all, ntarg), dtype="float32", chunks=(cfg.chunk_samples, ntarg), shards=(cfg.shard_samples, ntarg), compressors=_compressors(cfg.compression_level), dimension_names=("sample", "target"), fill_value=np.nan),
    }
    # no codec: whole shards go straight to their files (write_shard_direct), while they stay aligned
    direct = all(_direct_writable(a) for a in arrays.values())
    written = 0
    for b in range(n_buckets):
        path = scratch / f"{split}_{b:05d}.bin"
        size = min(cfg.shard_samples, n_all - b * cfg.shard_samples)
        keep = np.ones(size, bool)
        for places in bad_places[b]:
            keep[places] = False
        n = int(keep.sum())
        # one array at a time, each its own contiguous buffer: zarr holds ~2.5x the shard while it encodes
        for key, width, skip_before, skip_after in (("inputs", nfeat, 0, ntarg), ("targets", ntarg, nfeat, 0)):
            buf = np.empty((size, width), np.float32)
            with open(path, "rb") as fh:  # record by record: memory holds the shard and one record
                while head := fh.read(8):
                    k = int(np.frombuffer(head, np.int64)[0])
                    offs = np.fromfile(fh, np.int64, k)
                    fh.seek(4 * k * skip_before, os.SEEK_CUR)
                    buf[offs] = np.fromfile(fh, np.float32, k * width).reshape(k, width)
                    fh.seek(4 * k * skip_after, os.SEEK_CUR)
            if direct and n == size and written % cfg.shard_samples == 0:
                write_shard_direct(arrays[key], written // cfg.shard_samples, buf)
            else:  # a compressed store, or rows dropped: zarr's path (read-modify-write across shards)
                arrays[key][written:written + n] = buf[keep] if n < size else buf
            del buf
            _release_free_memory()
        path.unlink()
        written += n
    if written != n_all - dropped:
        raise RuntimeError(f"shard {split}: wrote {written} samples, expected {n_all - dropped}")
    for arr in arrays.values():
        arr.resize((written, arr.shape[1]))
    return written, dropped


def shard_columns(source: str | os.PathLike[str] | xr.Dataset, out_store: str | os.PathLike[str], cfg: ShardConfig, *, tmp_dir: str | os.PathLike[str] | None = None, source_digest: str = "") -> dict[str, Any]:
    """Write the training store from a column table (file or dataset); return its summary.

    The summary is also stored as the root group's attributes.
    """
    import zarr

    ds, name = _open_source(source)
    try:
        times = ds["time"].values
        splits = split_times(times, cfg)
        rng = np.random.default_rng(cfg.seed)
        summary: dict[str, Any] = {"splits": {}, "dropped_nonfinite": {}}
        train_moments = (_Moments(ds.sizes["feature"]), _Moments(ds.sizes["target"]))
        with atomic_path(out_store, is_dir=True) as tmp_store, tempfile.TemporaryDirectory(prefix="shard.", dir=tmp_dir or Path(out_store).parent) as scratch:
            root = zarr.open_group(str(tmp_store), mode="w", zarr_format=3)
            for split, t_idx in splits.items():
                n_valid, dropped = _write_split(ds, name, split, t_idx, root.create_group(split), cfg, rng, Path(scratch), train_moments if split == "train" else None)
                t_sel = times[t_idx]
                summary["splits"][split] = {
                    "n_samples": int(n_valid),
                    "n_times": int(t_idx.size),
                    "start": str(np.datetime64(t_sel[0], "s")) if t_idx.size else None,
                    "end": str(np.datetime64(t_sel[-1], "s")) if t_idx.size else None,
                    # the contiguous time blocks (several with an interleaved split: start/end alone
                    # would cover the other splits' blocks in between)
                    "blocks": [list(b) for b in blocks(times, t_idx)],
                }
                summary["dropped_nonfinite"][split] = int(dropped)
                log.info("split %s: %d samples (%d non-finite dropped)", split, n_valid, dropped)
            if train_moments[0].count == 0:
                raise InputError(f"{name}: no finite training sample")
            stats = root.create_group("stats")
            for prefix, mom in (("input", train_moments[0]), ("target", train_moments[1])):
                for stat, values in (("mean", mom.mean), ("std", mom.std), ("min", mom.min), ("max", mom.max)):
                    stats.create_array(f"{prefix}_{stat}", data=values.astype(np.float64), chunks=(values.size,))
            summary.update({
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "feature_names": [str(v) for v in ds["feature"].values],
                "target_names": [str(v) for v in ds["target"].values],
                "feature_blocks": json.loads(ds.attrs["feature_blocks"]),
                "target_blocks": json.loads(ds.attrs["target_blocks"]),
                "levels_pa": [float(v) for v in ds["presnivs"].values],
                "level_order": ds.attrs.get("level_order", "surface_first"),
                "grid_shape": json.loads(ds.attrs.get("grid_shape", "[]")),
                "n_columns": int(ds.sizes["column"]),
                "chunk_samples": cfg.chunk_samples,
                "shard_samples": cfg.shard_samples,
                "gap_hours": cfg.gap_hours,
                "split_kind": cfg.split.kind,
                "seed": cfg.seed,
                "stats_from": "train",
                "source": name,
                "source_sha256": source_digest,
            })
            root.attrs.update(summary)
    finally:
        ds.close()
    return summary


def open_store(path: str | os.PathLike[str]) -> Any:
    """Open a training store read-only, checking it is one; raise naming the path otherwise."""
    import zarr

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: training store not found")
    try:
        root = zarr.open_group(str(path), mode="r")
    except Exception as exc:
        raise InputError(f"{path}: not a zarr store ({exc})") from exc
    if root.attrs.get("format") != FORMAT:
        raise InputError(f"{path}: not a {FORMAT} store (format {root.attrs.get('format')!r})")
    return root


def load_stats(root: Any) -> dict[str, np.ndarray]:
    return {name: np.asarray(root["stats"][name][:]) for name in root["stats"].array_keys()}


def count_files(path: str | os.PathLike[str]) -> int:
    return sum(len(files) for _, _, files in os.walk(path))


def files_per_split(n_samples: int, shard_samples: int) -> int:
    """Files a split takes on disk: one per shard of each of its two arrays, plus their metadata."""
    return 2 * math.ceil(n_samples / shard_samples) + 3

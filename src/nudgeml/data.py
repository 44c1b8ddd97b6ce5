"""Fast loaders over a training store (:mod:`nudgeml.shard`): PyTorch and XGBoost.

Reads are always whole, contiguous row ranges (a run of ``run_chunks`` chunks, or the part of one at a
share boundary) — never fancy row indexing, which is ~10x slower on sharded zarr arrays. The store is
shuffled at write time, so shuffling the *order of runs* each epoch plus an in-memory buffer is enough.
Runs are decoded by zarr straight into buffers allocated once per iterator (``out=``): on the
benchmark machine a fresh array per read cost more in page faults than the decoding itself, and each
batch is gathered from the buffer in one copy (``benchmarks/README.md``, loader sweep).

Work is split first across DDP ranks, then across DataLoader workers: the epoch's permuted chunk list is
cut into equal sample ranges, so every sample is read exactly once per epoch. When the number of samples
is not a multiple of the number of ranks, the last ranks are padded with samples from the start of the
epoch's order (as ``torch.utils.data.DistributedSampler`` does), so every rank runs the same number of
steps.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nudgeml.errors import InputError
from nudgeml.shard import ABSENT_CHUNK, open_store, sharded_layout_supported

# consecutive chunks per read (the loader sweep in benchmarks/README.md)
RUN_CHUNKS = 8


@dataclass(frozen=True)
class Segment:
    """Rows ``[start, stop)`` of one split's arrays."""

    start: int
    stop: int


def epoch_segments(n_rows: int, chunk_rows: int, *, epoch: int, seed: int, shuffle: bool) -> list[Segment]:
    """The epoch's chunk order as row segments (whole chunks, the last one possibly short)."""
    n_chunks = -(-n_rows // chunk_rows)
    order = np.random.default_rng((seed, epoch)).permutation(n_chunks) if shuffle else np.arange(n_chunks)
    return [Segment(int(c) * chunk_rows, min(n_rows, (int(c) + 1) * chunk_rows)) for c in order]


def take_range(segments: list[Segment], start: int, stop: int) -> list[Segment]:
    """Samples ``[start, stop)`` of the concatenation of ``segments``, as segments (wrapping around)."""
    total = sum(s.stop - s.start for s in segments)
    out: list[Segment] = []
    if total == 0:
        return out
    at = start
    while at < stop:
        lo = at % total
        hi = min(total, lo + (stop - at))
        pos = 0
        for s in segments:
            n = s.stop - s.start
            a, b = max(lo, pos), min(hi, pos + n)
            if a < b:
                out.append(Segment(s.start + a - pos, s.start + b - pos))
            pos += n
        at += hi - lo
    return out


def share(segments: list[Segment], n_rows: int, part: int, n_parts: int, *, pad: bool) -> list[Segment]:
    """Part ``part`` of ``n_parts`` equal shares of the epoch's samples.

    ``pad``: every share has ``ceil(n / n_parts)`` samples, the tail wrapping to the start (ranks);
    otherwise shares differ by at most one sample and cover the samples exactly once (workers).
    """
    if pad:
        size = -(-n_rows // n_parts)
        return take_range(segments, part * size, (part + 1) * size)
    base, extra = divmod(n_rows, n_parts)
    start = part * base + min(part, extra)
    return take_range(segments, start, start + base + (1 if part < extra else 0))


def distributed_context() -> tuple[int, int]:
    """(rank, world size) from torch.distributed when initialised, else from the environment."""
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


_ABSENT = ABSENT_CHUNK
_MAX_OPEN = 8  # shard files a reader keeps open


class ShardFileReader:
    """Rows of a sharded zarr v3 array on local disk, decoded straight into a caller's buffer.

    zarr's own read path (3.1) decodes each chunk into a fresh array, copies it into a fresh shard-sized
    selection, then into ``out``: on the benchmark machine that was 2-3x slower than a raw read of the
    same bytes (``benchmarks/README.md``, loader sweep). For the one layout the shard stage writes —
    sharding with the index at the end (little-endian uint64 offset/length pairs + crc32c, zarr v3's
    sharding spec), inner codecs ``bytes`` (little-endian) then optionally Blosc — this reads each run
    of chunks with one ``pread`` and decodes each chunk once, into the destination rows: Blosc through
    numcodecs (the codec library zarr itself calls); with no codec, the rows wanted are one byte range
    per run, read straight into the destination. :meth:`supports`
    says whether an array has that layout; anything else goes through zarr.
    """

    def __init__(self, arr: Any, root: Path) -> None:
        import numcodecs

        self.arr = arr
        self.root = root
        sharding = arr.metadata.codecs[0]
        self.chunk_rows = int(sharding.chunk_shape[0])
        self.shard_rows = int(arr.shards[0])
        self.width = int(arr.shape[1])
        self.n_rows = int(arr.shape[0])
        self.per_shard = self.shard_rows // self.chunk_rows
        self.blosc = len(sharding.codecs) == 2
        self._decompress = numcodecs.blosc.decompress
        self._index: dict[int, np.ndarray] = {}
        self._fds: dict[int, int] = {}
        self._scratch = bytearray(0)  # reused: a fresh buffer per read costs page faults
        self._chunk: np.ndarray | None = None

    @staticmethod
    def supports(arr: Any) -> bool:
        return sharded_layout_supported(arr)

    def _shard(self, s: int) -> tuple[int, np.ndarray] | None:
        """(file descriptor, (chunks, 2) offsets/lengths) of shard ``s``; None when the shard is absent.

        Indexes stay cached (16 bytes a chunk); at most ``_MAX_OPEN`` files stay open, the least recently
        read closed first (a 10-year store has ~600 shards per array, above common descriptor limits).
        """
        path = self.root / self.arr.path / self.arr.metadata.encode_chunk_key((s, 0))
        if s in self._fds:
            self._fds[s] = self._fds.pop(s)  # most recently used last
        else:
            if not path.exists():
                return None
            fd = os.open(path, os.O_RDONLY)
            if s not in self._index:
                import google_crc32c

                tail = 16 * self.per_shard + 4
                size = os.fstat(fd).st_size
                raw = os.pread(fd, tail, size - tail) if size >= tail else b""
                if len(raw) != tail or google_crc32c.value(raw[:-4]) != int.from_bytes(raw[-4:], "little"):
                    os.close(fd)
                    raise InputError(f"{path}: shard index unreadable or fails its checksum (truncated or corrupt shard)")
                self._index[s] = np.frombuffer(raw[:-4], "<u8").reshape(self.per_shard, 2)
            self._fds[s] = fd
            while len(self._fds) > _MAX_OPEN:
                os.close(self._fds.pop(next(iter(self._fds))))
        return self._fds[s], self._index[s]

    def read_into(self, start: int, stop: int, out: np.ndarray) -> None:
        """Rows ``[start, stop)`` into ``out`` (C-contiguous float32, ``stop - start`` rows)."""
        chunk_bytes = self.chunk_rows * self.width * 4
        row = start
        while row < stop:  # shard by shard
            s = row // self.shard_rows
            last = min(stop, (s + 1) * self.shard_rows)
            got = self._shard(s)
            if got is None:  # a shard never written holds only the fill value
                out[row - start:last - start] = self.arr.fill_value
                row = last
                continue
            fd, index = got
            k, k_end = (row - s * self.shard_rows) // self.chunk_rows, (last - 1 - s * self.shard_rows) // self.chunk_rows + 1
            while k < k_end:
                if index[k, 0] == _ABSENT:  # an empty chunk (all fill value) is not stored
                    lo = s * self.shard_rows + k * self.chunk_rows
                    out[max(lo, row) - start:min(lo + self.chunk_rows, last) - start] = self.arr.fill_value
                    k += 1
                    continue
                j = k + 1  # chunks k..j-1 lie back to back in the file: one read
                while j < k_end and index[j, 0] != _ABSENT and index[j, 0] == index[j - 1, 0] + index[j - 1, 1]:
                    j += 1
                if not self.blosc:  # raw chunks back to back: the rows wanted are one byte range, read into out
                    if np.any(index[k:j, 1] != chunk_bytes):
                        raise InputError(f"{self.root / self.arr.path}: shard {s} has a chunk of the wrong size (expected {chunk_bytes} bytes)")
                    lo = s * self.shard_rows + k * self.chunk_rows
                    a, b = max(lo, row), min(lo + (j - k) * self.chunk_rows, last)
                    dest = memoryview(out[a - start:b - start]).cast("B")
                    if os.preadv(fd, [dest], int(index[k, 0]) + (a - lo) * self.width * 4) != dest.nbytes:
                        raise InputError(f"{self.root / self.arr.path}: shard {s} is truncated")
                    k = j
                    continue
                nbytes = int(index[k:j, 1].sum())
                if len(self._scratch) < nbytes:
                    self._scratch = bytearray(nbytes)
                view = memoryview(self._scratch)[:nbytes]
                if os.preadv(fd, [view], int(index[k, 0])) != nbytes:
                    raise InputError(f"{self.root / self.arr.path}: shard {s} is truncated")
                pos = 0
                for m in range(k, j):
                    lo = s * self.shard_rows + m * self.chunk_rows  # the chunk's first row
                    a, b = max(lo, row), min(lo + self.chunk_rows, last)
                    n = int(index[m, 1])
                    part = view[pos:pos + n]
                    pos += n
                    if a == lo and b == lo + self.chunk_rows:  # a whole chunk: decoded straight into out
                        self._decompress(part, out[a - start:b - start])
                    else:
                        if self._chunk is None:
                            self._chunk = np.empty((self.chunk_rows, self.width), np.float32)
                        self._decompress(part, self._chunk)
                        out[a - start:b - start] = self._chunk[a - lo:b - lo]
                k = j
            row = last

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


class SplitArrays:
    """The inputs/targets arrays of one split, opened lazily (once per worker process)."""

    def __init__(self, store: str | os.PathLike[str], split: str, *, direct: bool = True) -> None:
        self.store = Path(store)
        self.split = split
        self.direct = direct
        self._direct: list[ShardFileReader] | None = None
        root = open_store(self.store)
        if split not in root:
            raise InputError(f"{self.store}: no split {split!r} (has {sorted(root.group_keys())})")
        self.n_rows = int(root[split]["inputs"].shape[0])
        self.chunk_rows = int(root[split]["inputs"].chunks[0])
        self.n_features = int(root[split]["inputs"].shape[1])
        self.n_targets = int(root[split]["targets"].shape[1])
        self._arrays: tuple[Any, Any] | None = None

    def read(self, seg: Segment) -> tuple[np.ndarray, np.ndarray]:
        if self._arrays is None:
            root = open_store(self.store)
            self._arrays = (root[self.split]["inputs"], root[self.split]["targets"])
        x_arr, y_arr = self._arrays
        try:
            x = x_arr[seg.start:seg.stop]
            y = y_arr[seg.start:seg.stop]
        except Exception as exc:  # a corrupt or truncated shard: say where
            raise InputError(f"{self.store}: cannot read {self.split}/inputs|targets rows {seg.start}:{seg.stop} ({type(exc).__name__}: {exc})") from exc
        return np.asarray(x, dtype=np.float32), np.asarray(y, dtype=np.float32)

    def read_into(self, seg: Segment, x_out: np.ndarray, y_out: np.ndarray) -> None:
        """Decode rows ``seg`` into the preallocated float32 rows ``x_out``/``y_out`` (no new array).

        Through :class:`ShardFileReader` when both arrays have its layout (and ``direct``), else zarr.
        """
        if self._arrays is None:
            root = open_store(self.store)
            self._arrays = (root[self.split]["inputs"], root[self.split]["targets"])
        if self._direct is None:
            self._direct = [ShardFileReader(a, self.store) for a in self._arrays] if self.direct and all(ShardFileReader.supports(a) for a in self._arrays) else []
        try:
            if self._direct:
                for reader, out in zip(self._direct, (x_out, y_out), strict=True):
                    reader.read_into(seg.start, seg.stop, out)
                return
            from zarr.core.buffer import default_buffer_prototype

            nd = default_buffer_prototype().nd_buffer
            for arr, out in zip(self._arrays, (x_out, y_out), strict=True):
                arr.get_basic_selection(slice(seg.start, seg.stop), out=nd.from_numpy_array(out))
        except InputError as exc:
            raise InputError(f"{self.store}: cannot read {self.split}/inputs|targets rows {seg.start}:{seg.stop} ({exc})") from exc
        except Exception as exc:  # a corrupt or truncated shard: say where
            raise InputError(f"{self.store}: cannot read {self.split}/inputs|targets rows {seg.start}:{seg.stop} ({type(exc).__name__}: {exc})") from exc


try:
    from torch.utils.data import IterableDataset as _IterableBase
except ImportError:  # pragma: no cover
    _IterableBase = object  # type: ignore[assignment,misc]


class ColumnBatches(_IterableBase):  # type: ignore[misc,valid-type]
    """An ``IterableDataset`` of ready-made ``(inputs, targets)`` batches (use ``batch_size=None``).

    Parameters: ``store``, ``split``; ``batch_size``; ``shuffle`` (run order per epoch + buffer);
    ``buffer_chunks`` (chunks mixed in memory, at least one run); ``run_chunks`` (consecutive chunks
    read in one call: the read and shuffle unit); ``direct`` (:class:`ShardFileReader` where the layout
    allows, else zarr's read path); ``prefetch`` (a thread reads the next buffer while this one is
    batched: the read waits on the disk, the batching on memory); ``seed``; ``rank``/``world_size`` (default: from
    torch.distributed). Call :meth:`set_epoch` each epoch for a new order (Lightning does it for us
    through the ``set_epoch`` hook of the dataset when present).
    """

    def __init__(self, store: str | os.PathLike[str], split: str, batch_size: int, *, shuffle: bool = True, buffer_chunks: int = 4, run_chunks: int = RUN_CHUNKS, seed: int = 0, rank: int | None = None, world_size: int | None = None, drop_last: bool = False, direct: bool = True, prefetch: bool = True) -> None:
        super().__init__()
        self.prefetch = prefetch
        self.arrays = SplitArrays(store, split, direct=direct)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.run_chunks = max(1, int(run_chunks))
        self.buffer_chunks = max(self.run_chunks, int(buffer_chunks))
        self.seed = seed
        self.rank, self.world_size = rank, world_size
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _my_segments(self) -> list[Segment]:
        import torch.utils.data as tud

        rank, world = (self.rank, self.world_size) if self.world_size is not None else distributed_context()
        rank = rank or 0
        info = tud.get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        a = self.arrays
        segs = epoch_segments(a.n_rows, a.chunk_rows * self.run_chunks, epoch=self.epoch, seed=self.seed, shuffle=self.shuffle)
        mine = share(segs, a.n_rows, rank, world, pad=world > 1)
        n_mine = sum(s.stop - s.start for s in mine)
        return share(mine, n_mine, worker, n_workers, pad=False)

    def samples_per_rank(self) -> int:
        rank, world = (self.rank, self.world_size) if self.world_size is not None else distributed_context()
        return -(-self.arrays.n_rows // max(world, 1))

    def __len__(self) -> int:
        """Batches per epoch on one rank with one worker (workers may add one short batch each)."""
        n = self.samples_per_rank()
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        import torch

        rng = np.random.default_rng((self.seed, self.epoch, 1))
        a = self.arrays
        fill_rows = self.buffer_chunks * a.chunk_rows
        # the epoch's share as buffer fills: consecutive reads adding up to at most fill_rows
        fills: list[list[Segment]] = []
        total = fill_rows
        for seg in self._my_segments():
            n = seg.stop - seg.start
            if total + n > fill_rows:
                fills.append([])
                total = 0
            fills[-1].append(seg)
            total += n
        # two buffers: a fill is read into one (rows [R, R + fill)) while the other is drained; the
        # < batch_size rows a drain leaves go just before R in the next buffer (a disjoint range)
        lead = self.batch_size
        bufs = [(np.empty((lead + fill_rows, a.n_features), np.float32), np.empty((lead + fill_rows, a.n_targets), np.float32)) for _ in range(2)]

        def read_fill(j: int) -> int:
            bx, by = bufs[j % 2]
            at = lead
            for seg in fills[j]:
                n = seg.stop - seg.start
                a.read_into(seg, bx[at:at + n], by[at:at + n])
                at += n
            return at

        pool = ThreadPoolExecutor(max_workers=1) if self.prefetch else None
        try:
            pending = (pool.submit(read_fill, 0) if pool else None) if fills else None
            left = 0  # rows carried over, at [lead - left, lead) of the current buffer
            for j in range(len(fills)):
                stop = pending.result() if pending is not None else read_fill(j)
                if j + 1 < len(fills) and pool is not None:  # read ahead while this buffer is drained
                    pending = pool.submit(read_fill, j + 1)
                bx, by = bufs[j % 2]
                lo = lead - left
                held = stop - lo
                p = lo + (rng.permutation(held) if self.shuffle else np.arange(held))
                n_full = held // self.batch_size
                for i in range(n_full):  # one gather per batch: a fresh array the consumer may keep
                    rows = p[i * self.batch_size:(i + 1) * self.batch_size]
                    yield torch.from_numpy(bx[rows]), torch.from_numpy(by[rows])
                rest = p[n_full * self.batch_size:]
                if j + 1 < len(fills):
                    nx, ny = bufs[(j + 1) % 2]
                    nx[lead - rest.size:lead], ny[lead - rest.size:lead] = bx[rest], by[rest]
                    left = rest.size
                elif rest.size and not self.drop_last:
                    yield torch.from_numpy(bx[rest]), torch.from_numpy(by[rest])
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)  # no read may still write into the buffers


def make_xgb_iter(store: str | os.PathLike[str], split: str, rows_per_batch: int = 262144, label: Any = None) -> Any:
    """An ``xgboost.DataIter`` over a split, for ``QuantileDMatrix`` / ``ExtMemQuantileDMatrix``.

    Batches are whole-chunk row ranges; ``label`` (targets -> labels) transforms the targets, e.g. to
    standardised principal modes.
    """
    import xgboost as xgb

    arrays = SplitArrays(store, split)
    step = max(arrays.chunk_rows, (rows_per_batch // arrays.chunk_rows) * arrays.chunk_rows)
    segments = [Segment(s, min(arrays.n_rows, s + step)) for s in range(0, arrays.n_rows, step)]

    class _Iter(xgb.DataIter):
        def __init__(self) -> None:
            self._i = 0
            super().__init__(cache_prefix=None)

        def next(self, input_data: Any) -> bool:
            if self._i >= len(segments):
                return False
            x, y = arrays.read(segments[self._i])
            input_data(data=x, label=y if label is None else label(y))
            self._i += 1
            return True

        def reset(self) -> None:
            self._i = 0

    return _Iter()

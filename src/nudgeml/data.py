"""Fast loaders over a training store (:mod:`nudgeml.shard`): PyTorch and XGBoost.

Reads are always whole, contiguous row ranges (a chunk, or the part of one at a share boundary) —
never fancy row indexing, which is ~10x slower on sharded zarr arrays. The store is shuffled at write
time, so shuffling the *order of chunks* each epoch plus a small in-memory buffer is enough.

Work is split first across DDP ranks, then across DataLoader workers: the epoch's permuted chunk list is
cut into equal sample ranges, so every sample is read exactly once per epoch. When the number of samples
is not a multiple of the number of ranks, the last ranks are padded with samples from the start of the
epoch's order (as ``torch.utils.data.DistributedSampler`` does), so every rank runs the same number of
steps.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nudgeml.errors import InputError
from nudgeml.shard import open_store


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


class SplitArrays:
    """The inputs/targets arrays of one split, opened lazily (once per worker process)."""

    def __init__(self, store: str | os.PathLike[str], split: str) -> None:
        self.store = Path(store)
        self.split = split
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


try:
    from torch.utils.data import IterableDataset as _IterableBase
except ImportError:  # pragma: no cover
    _IterableBase = object  # type: ignore[assignment,misc]


class ColumnBatches(_IterableBase):  # type: ignore[misc,valid-type]
    """An ``IterableDataset`` of ready-made ``(inputs, targets)`` batches (use ``batch_size=None``).

    Parameters: ``store``, ``split``; ``batch_size``; ``shuffle`` (chunk order per epoch + buffer);
    ``buffer_chunks`` (chunks mixed in memory); ``seed``; ``rank``/``world_size`` (default: from
    torch.distributed). Call :meth:`set_epoch` each epoch for a new order (Lightning does it for us
    through the ``set_epoch`` hook of the dataset when present).
    """

    def __init__(self, store: str | os.PathLike[str], split: str, batch_size: int, *, shuffle: bool = True, buffer_chunks: int = 4, seed: int = 0, rank: int | None = None, world_size: int | None = None, drop_last: bool = False) -> None:
        super().__init__()
        self.arrays = SplitArrays(store, split)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.buffer_chunks = max(1, int(buffer_chunks))
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
        segs = epoch_segments(a.n_rows, a.chunk_rows, epoch=self.epoch, seed=self.seed, shuffle=self.shuffle)
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
        segs = self._my_segments()
        xs: list[np.ndarray] = []
        ys: list[np.ndarray] = []
        held = 0

        def drain(final: bool) -> Iterator[tuple[Any, Any]]:
            nonlocal xs, ys, held
            x = np.concatenate(xs) if len(xs) > 1 else xs[0]
            y = np.concatenate(ys) if len(ys) > 1 else ys[0]
            if self.shuffle:
                p = rng.permutation(x.shape[0])
                x, y = x[p], y[p]
            n_full = x.shape[0] // self.batch_size
            for i in range(n_full):
                sl = slice(i * self.batch_size, (i + 1) * self.batch_size)
                yield torch.from_numpy(x[sl]), torch.from_numpy(y[sl])
            rest = slice(n_full * self.batch_size, x.shape[0])
            if final:
                if rest.stop > rest.start and not self.drop_last:
                    yield torch.from_numpy(x[rest]), torch.from_numpy(y[rest])
                xs, ys, held = [], [], 0
            else:
                xs, ys = [x[rest]], [y[rest]]
                held = rest.stop - rest.start

        for i, seg in enumerate(segs):
            x, y = self.arrays.read(seg)
            xs.append(x)
            ys.append(y)
            held += x.shape[0]
            if (i + 1) % self.buffer_chunks == 0:
                yield from drain(final=False)
        if held:
            yield from drain(final=True)


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

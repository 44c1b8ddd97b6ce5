"""Atomic file output: write to a temporary sibling, rename when complete.

A reader (or a resumed Snakemake run) therefore never sees a half-written file under its final name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str], *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; rename it onto ``final`` if the block succeeds.

    On any exception the temporary file or directory is removed and ``final`` is left untouched.
    The temporary name keeps ``final``'s suffix so libraries that dispatch on it (netCDF, zarr) work.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=f".tmp{final.suffix}", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()
    if is_dir:
        tmp.mkdir()
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"{tmp} was not written (expected output for {final})")
        if final.is_dir() and not final.is_symlink():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(final: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``final`` atomically."""
    with atomic_path(final) as tmp:
        tmp.write_text(text)


@contextlib.contextmanager
def synced_atomic_path(final: str | os.PathLike[str], *, suffix: str = "") -> Iterator[Path]:
    """Like :func:`atomic_path` for a file, with the data flushed to disk (``fsync``) before the rename.

    For the model files (manifest, TorchScript, ``.pt2``), which a coupled run on another node may
    read right after: a rename is atomic, but without the ``fsync`` a crash could leave the new name
    on an empty file. ``suffix`` ends the temporary name (AOTInductor insists on ``.pt2``).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=f".tmp{suffix}", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)

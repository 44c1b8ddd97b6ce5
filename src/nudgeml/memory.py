"""Process memory settings for the streaming stages.

glibc serves allocations above ``M_MMAP_THRESHOLD`` with their own ``mmap`` (returned to the system when
freed) and the rest from its heap arenas. The threshold starts at 128 KiB and is raised dynamically,
up to 32 MiB on 64-bit systems, each time an mmapped block is freed. After the first freed time block,
the few-MB arrays of a stage at LMDZ size (one level field of 20 448 columns x 79 levels is 6.5 MB) come
from the arenas, whose free space fragments across dask's threads: the resident size of extract then
grows with the number of windows it has streamed. Fixing the threshold turns the dynamic raise off.

Measured (``benchmarks/data_path.py``' extract stage at LMDZ size, peak RSS, ``benchmarks/README.md``):
1.39, 2.00 and 2.48 GB at 8, 32 and 96 windows with glibc's default; 1.36, 1.58 and 1.59 GB with the
threshold fixed at 1 MiB; 1.54 and 1.72 GB at 32 and 96 windows with 4 MiB (allocations of 1-4 MB
then still come from the heap).
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc's malloc.h
STREAMING_MMAP_THRESHOLD_BYTES = 1 << 20


def fix_mmap_threshold(nbytes: int = STREAMING_MMAP_THRESHOLD_BYTES) -> bool:
    """Serve every allocation of at least ``nbytes`` by its own ``mmap`` for the rest of the process (and
    stop glibc raising the threshold). True when set; False where the C library has no ``mallopt``
    (macOS, musl): nothing is changed there."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        log.debug("no mallopt in this C library: the mmap threshold is left as it is")
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    ok = bool(mallopt(M_MMAP_THRESHOLD, int(nbytes)))
    if ok:
        log.info("allocations of %d bytes and more are mmapped (fixed glibc threshold: resident memory bounded while streaming)", nbytes)
    return ok

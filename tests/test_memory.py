import ctypes
import platform
import subprocess
import sys

import pytest

from nudgeml import memory


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_fixed_mmap_threshold_sends_a_few_mb_array_to_its_own_mapping_after_a_large_free():
    """With glibc's dynamic threshold, freeing a 64 MB block raises it (to 32 MiB at most), so a 6.5 MB
    array (one LMDZ-size level field) then comes from the heap and stays resident after it is freed;
    fixed at 1 MiB, that array is mmapped and its pages go back. Measured in fresh processes by the
    resident size left after the array is freed (a one-off process: the settings are process-wide)."""
    code = """
import sys, numpy as np
from nudgeml.memory import fix_mmap_threshold
if sys.argv[1] == "fixed":
    assert fix_mmap_threshold()
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096
big = np.ones(64 << 20, np.uint8); del big  # frees an mmapped block: glibc raises its threshold
keep = []
before = rss()
for _ in range(20):  # fields allocated and freed out of order, as dask's threads do
    a = np.ones(6_500_000 // 8); b = np.ones(6_500_000 // 8); keep.append(np.ones(1000)); del a
    c = np.ones(6_500_000 // 8); del b, c
print(rss() - before)
"""
    grown = {how: int(subprocess.run([sys.executable, "-c", code, how], capture_output=True, text=True, check=True).stdout) for how in ("default", "fixed")}
    assert grown["default"] > 5_000_000, grown  # a freed field stays resident in the heap
    assert grown["fixed"] < 1_000_000, grown


def test_without_mallopt_nothing_is_changed(monkeypatch):
    class NoMallopt:
        def __init__(self, *args, **kwargs):
            pass

    monkeypatch.setattr(ctypes, "CDLL", NoMallopt)
    assert memory.fix_mmap_threshold() is False

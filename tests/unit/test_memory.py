"""ltaug.common.memory: free heap pages scattered between live blocks go back to the system."""

from __future__ import annotations

import ctypes.util
import os

import numpy as np
import pytest

from ltaug.common.memory import release_free_memory


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not os.path.exists("/proc/self/statm") or "libc" not in (ctypes.util.find_library("c") or ""),
                    reason="needs Linux with glibc")  # fmt: skip
def test_freed_blocks_between_live_ones_leave_resident_memory():
    # 1,600 blocks of 100 KiB: below glibc's mmap threshold, so they live on the heap, each touched
    blocks = [np.ones(100 * 1024 // 8) for _ in range(1600)]
    del blocks[::2]  # free every other one: 80 MiB of holes that free() alone keeps resident
    before = rss_mib()
    assert release_free_memory() is True
    after = rss_mib()
    assert before - after > 40, (before, after)  # most of the 80 MiB of holes is given back
    assert all(float(b[0]) == 1.0 for b in blocks)  # the live blocks are untouched

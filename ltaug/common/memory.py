"""Memory of the streaming stages: hand the CPU allocator's free pages back between chunks.

A stage that streams a split chunk by chunk allocates tensors of many sizes (LayerCAM's batches
vary with how many samples of a chunk are positive for a class). glibc keeps the freed blocks in
its heaps, scattered between live ones, so the process's resident memory grows with the number of
chunks although the live data stay O(chunk). ``malloc_trim(0)`` returns every free page of every
heap to the system (madvise), which keeps resident memory flat at the cost of a few milliseconds
a chunk; the data and hence the results are untouched. Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _malloc_trim():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError, TypeError):  # not glibc (musl, macOS): nothing to trim
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_free_memory() -> bool:
    """Return the allocator's free pages to the system; True when it gave any back."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False

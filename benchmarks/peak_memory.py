"""Peak resident memory of the calling process, for the benchmarks that measure stages in child processes."""

from __future__ import annotations

import resource
from pathlib import Path


def peak_rss_mib() -> float:
    """Peak resident memory of this process image in MiB: VmHWM, which a new process image starts afresh,
    where ru_maxrss keeps the parent's peak across execve (a child would report the building parent's peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux: KiB on most systems

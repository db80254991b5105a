"""The classifier's images: read at its size, per batch or cached in memory, and when to cache.

Real images come from the image stores of decode_images (one image a chunk: a batch reads
only its own images), a synthetic set's from its PNG files.
``eval.classifier.cache_images`` true holds every image of a table as uint8 at image_size;
false reads each batch;
auto caches when the images take at most ``CACHE_SHARE`` of the memory available to the
process (its cgroup's limit, else MemAvailable), and says why.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ltaug.common.images import load_image
from ltaug.data.image_store import ImageStores, read_images


class ImageSource:
    """The classifier's images at its size, in order: first the manifest rows ``table`` (columns id, split) from the
    image stores, then the image files ``paths`` (a synthetic set's PNGs, read with ``threads`` readers); all held
    in memory (``cache``) or read per batch."""

    def __init__(self, size: int, cache: bool, threads: int, stores: ImageStores | None, table: pd.DataFrame,
                 paths: Sequence[str] = (), where: Sequence[str] = ()):  # fmt: skip
        self.size, self.threads, self.stores = size, max(1, threads), stores  # stores None: the rows' files
        self.table = table[["id", "split", "path"]].reset_index(drop=True)
        self.files, self.where = list(paths), list(where) or [""] * len(paths)
        self.cache = self._read(range(len(self))) if cache else None

    @property
    def paths(self) -> list[str]:
        """The source file of every image, in order (the real rows' as the manifest names them)."""
        return self.table["path"].tolist() + self.files

    def _read(self, indices) -> torch.Tensor:
        indices = np.asarray(list(indices), dtype=np.int64)
        out = np.zeros((len(indices), self.size, self.size), dtype=np.uint8)
        stored = np.flatnonzero(indices < len(self.table))
        if len(stored):
            out[stored] = read_images(self.table.iloc[indices[stored]], self.size, self.stores)
        files = np.flatnonzero(indices >= len(self.table))
        if len(files):
            at = indices[files] - len(self.table)
            with ThreadPoolExecutor(self.threads) as pool:
                out[files] = np.stack(list(pool.map(lambda i: load_image(self.files[i], self.size, self.where[i]), at)))
        return torch.from_numpy(out[:, None])  # (B, 1, S, S)

    def extended(self, paths: Sequence[str], where: Sequence[str] = ()) -> ImageSource:
        """This source's manifest rows followed by the image files ``paths`` (instead of its own files), sharing the
        rows' images already held in memory: one synthetic draw after another, the real images read once."""
        out = ImageSource.__new__(ImageSource)
        out.size, out.threads, out.stores, out.table = self.size, self.threads, self.stores, self.table
        out.files, out.where = list(paths), list(where) or [""] * len(paths)
        out.cache = None
        if self.cache is not None:
            files = out._read(range(len(out.table), len(out))) if out.files else self.cache[:0]
            out.cache = torch.cat([self.cache[: len(self.table)], files])
        return out

    def __len__(self) -> int:
        return len(self.table) + len(self.files)

    def batch(self, indices: np.ndarray | Sequence[int]) -> torch.Tensor:
        if self.cache is not None:
            return self.cache[torch.as_tensor(np.asarray(indices, dtype=np.int64))]
        return self._read(indices)


CACHE_SHARE = 0.25  # cache_images: auto caches when the images take at most this share of the available memory


def _cgroup_room(proc: Path, cgroup_root: Path) -> int | None:
    """Bytes the process's memory cgroup still allows (limit - usage), None without a limit.

    SLURM confines a job to its --mem with a cgroup, while /proc/meminfo shows the whole node.
    cgroup v2: <root>/<path of /proc/self/cgroup>/memory.max and memory.current; v1:
    <root>/memory/<path>/memory.limit_in_bytes and memory.usage_in_bytes.
    """
    try:
        lines = (proc / "self" / "cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        rel = path.lstrip("/")
        if controllers == "":  # v2
            folder, limit_name, usage_name = cgroup_root / rel, "memory.max", "memory.current"
        elif "memory" in controllers.split(","):  # v1
            folder, limit_name, usage_name = cgroup_root / "memory" / rel, "memory.limit_in_bytes", "memory.usage_in_bytes"
        else:
            continue
        if not folder.is_dir():  # inside a container the cgroup namespace starts at the mount point
            folder = cgroup_root if controllers == "" else cgroup_root / "memory"
        try:
            limit = (folder / limit_name).read_text().strip()
            usage = int((folder / usage_name).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit != "max" and int(limit) < 2**60:  # v1 writes "no limit" as a huge number
            return max(0, int(limit) - usage)
    return None


def available_memory(proc: Path = Path("/proc"), cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """Bytes of memory available to a new allocation: MemAvailable of /proc/meminfo (else physical memory),
    capped by what the process's memory cgroup (a SLURM job's --mem) still allows."""
    available = None
    try:
        for line in (proc / "meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except OSError:
        pass
    if available is None:
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    room = _cgroup_room(proc, cgroup_root)
    return available if room is None else min(available, room)


def cache_decision(setting: bool | str, n_images: int, size: int, available: int | None = None) -> tuple[bool, str]:
    """(cache the images?, why): ``setting`` true/false as given; auto when n_images x size^2 bytes of uint8
    take at most CACHE_SHARE of ``available`` (default: :func:`available_memory`)."""
    need = n_images * size * size
    if setting != "auto":
        return bool(setting), f"eval.classifier.cache_images: {str(bool(setting)).lower()} ({need / 2**30:.2f} GiB of images)"
    available = available_memory() if available is None else available
    cache = need <= CACHE_SHARE * available
    return cache, (f"eval.classifier.cache_images: auto: {n_images} images at {size} px take {need / 2**30:.2f} GiB, "
                   f"{'within' if cache else 'more than'} {CACHE_SHARE:.0%} of the {available / 2**30:.1f} GiB available: "
                   + ("held in memory" if cache else "read from disk per batch"))  # fmt: skip

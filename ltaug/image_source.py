"""The classifier's images: read at its size, from disk per batch or cached in memory, and when to cache.

``eval.classifier.cache_images`` true holds every image of a table as uint8 at image_size
(fast: each is decoded once); false reads each batch from disk with ``threads`` readers;
auto caches when the images take at most ``CACHE_SHARE`` of the memory available to the
process (its cgroup's limit, else MemAvailable), and says why.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from ltaug.images import open_image


def load_image(path: str, size: int, where: str = "") -> np.ndarray:
    """(S, S) uint8 grayscale, shorter side resized to S (bilinear, antialiased) and centre-cropped."""
    image = open_image(path, where).convert("L")
    if image.size != (size, size):
        image = ImageOps.fit(image, (size, size), Image.Resampling.BILINEAR)
    return np.asarray(image)


class ImageSource:
    """Images of a table (columns path, id) at the classifier's size: all in memory, or read per batch."""

    def __init__(self, paths: Sequence[str], size: int, cache: bool, threads: int, where: Sequence[str]):
        self.paths, self.size, self.threads, self.where = list(paths), size, max(1, threads), list(where)
        self.cache = self._read(range(len(self.paths))) if cache else None

    def _read(self, indices) -> torch.Tensor:
        indices = list(indices)
        with ThreadPoolExecutor(self.threads) as pool:
            images = list(pool.map(lambda i: load_image(self.paths[i], self.size, self.where[i]), indices))
        if not images:
            return torch.zeros((0, 1, self.size, self.size), dtype=torch.uint8)
        return torch.from_numpy(np.stack(images)[:, None])  # (B, 1, S, S)

    def __len__(self) -> int:
        return len(self.paths)

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

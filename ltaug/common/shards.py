"""Shards: which rows of a split each of S jobs takes, the check that their stores belong together, and the
chunk-by-chunk writing every Zarr store of the workflow uses (:class:`ChunkWriter`, :func:`concatenate_shards`).

encode_latents and cam_maps can split one split's rows over S jobs (latents.shards,
cam.shards), each on its own GPU; a gather rule then joins their stores, chunk by chunk,
into the store a single job writes. A shard's store carries ``SHARD_KEYS`` besides the
attributes of the single job's store.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr

from ltaug.common.errors import ConfigError, InputError

COMPRESSOR = zarr.codecs.BloscCodec(cname="zstd", clevel=5, shuffle="shuffle")  # of every Zarr array written


def shard_rows(n: int, shard: int, shards: int, key: str = "latents.shards") -> tuple[int, int]:
    """Rows [first, end) of shard ``shard`` (1-based) of ``shards`` over ``n`` rows: contiguous,
    in order, sizes differing by at most one (the last ones may be empty when shards > n).
    ``key`` names the config key in the error."""
    if not (isinstance(shards, int) and isinstance(shard, int) and 1 <= shard <= shards):
        raise ConfigError(f"shard {shard!r} of {shards!r}: expected 1 <= shard <= shards ({key}).")
    return (shard - 1) * n // shards, shard * n // shards


def block_rows(n: int, block: int, shard: int, shards: int, key: str = "latents.shards") -> tuple[int, int]:
    """Rows [first, end) of shard ``shard`` of ``shards`` over ``n`` rows taken in whole blocks
    of ``block`` rows (:func:`shard_rows` over the blocks; only the split's last block may be
    short). A shard then starts where a block of a single job starts, so with blocks = batches
    every row goes through the same batch as in that job, and the results agree bit for bit
    even where kernels depend on the batch."""
    first, end = shard_rows(-(-n // block), shard, shards, key)
    return min(first * block, n), min(end * block, n)


SHARD_KEYS = ("shard", "shards", "first_row", "split_rows")  # attributes only a shard's store has


def check_shards(shards: list[str | Path], groups: list[zarr.Group], rows: str, stage: str) -> tuple[dict, int]:
    """The attributes common to shards 1..S of one split, and the split's row count.

    ``groups`` are the opened shard stores in order; ``rows`` names the array whose length is
    a shard's row count; ``stage`` is the rule that remakes them, for the error message. Each
    shard must carry shard = s, shards = S and first_row = the rows before it, the same
    split_rows and otherwise the same attributes as shard 1, and together they must hold
    split_rows rows; anything else is an InputError naming the shard.
    """
    count = len(groups)
    common = {k: v for k, v in dict(groups[0].attrs).items() if k not in SHARD_KEYS}
    total = groups[0].attrs.get("split_rows")
    row = 0
    for index, (path, group) in enumerate(zip(shards, groups), start=1):
        attrs = dict(group.attrs)
        got = (attrs.get("shard"), attrs.get("shards"), attrs.get("first_row"))
        if got != (index, count, row):
            raise InputError(
                f"{path}: expected shard {index} of {count} starting at row {row} of its split, found shard "
                f"{got[0]} of {got[1]} starting at row {got[2]}; delete the shard stores of this split and rerun "
                f"{stage}."
            )
        differ = sorted(k for k in set(common) | set(attrs) if k not in SHARD_KEYS and attrs.get(k) != common.get(k))
        if differ or attrs.get("split_rows") != total:
            keys = ", ".join(differ or ["split_rows"])
            raise InputError(
                f"{path}: made with other settings than {shards[0]} ({keys} differ); delete the shard stores of "
                f"this split and rerun {stage}."
            )
        row += group[rows].shape[0]
    if row != total:
        raise InputError(
            f"{shards[-1]}: the {count} shards hold {row} rows but their split has {total}; delete the shard "
            f"stores of this split and rerun {stage}."
        )
    return common, total


class ChunkWriter:
    """Buffers rows and writes whole chunks along axis 0, so no chunk is read back and recompressed."""

    def __init__(self, arrays: dict[str, zarr.Array], chunk: int):
        self.arrays, self.chunk = arrays, chunk
        self.start, self.buffer = 0, {name: [] for name in arrays}  # buffer starts at row self.start

    def append(self, **rows: np.ndarray) -> None:
        for name, value in rows.items():
            self.buffer[name].append(value)
        if sum(len(v) for v in self.buffer["ids"]) >= self.chunk:
            self.flush(final=False)

    def flush(self, final: bool = True) -> None:
        data = {name: np.concatenate(parts) for name, parts in self.buffer.items() if parts}
        if not data:
            return
        n = len(data["ids"])
        take = n if final else n - n % self.chunk  # full chunks only, unless this is the end
        for name, values in data.items():
            self.arrays[name][self.start : self.start + take] = values[:take]
            self.buffer[name] = [values[take:]] if take < n else []
        self.start += take


def concatenate_shards(groups: list[zarr.Group], root: zarr.Group, names: tuple[str, ...], chunk_size: int) -> None:
    """Copy arrays ``names`` of the shard stores ``groups``, in order, into the equally named
    (already created, ``chunk_size``-chunked) arrays of ``root``: one shard chunk read at a
    time, whole chunks written, so memory is O(chunk) whatever the split's size."""
    writer = ChunkWriter({name: root[name] for name in names}, chunk_size)
    for group in groups:
        n, step = group["ids"].shape[0], group["ids"].chunks[0]
        for start in range(0, n, step):
            part = slice(start, min(start + step, n))
            writer.append(**{name: group[name][part] for name in names})
    writer.flush()

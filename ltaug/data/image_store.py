"""Stage decode_images: every image of a split read from disk once per size, into a Zarr store.

Reading a full-size radiograph (a 2,544 x 3,056 JPEG: 0.02 s of decoding a core, docs/cost.md) costs more
than anything done with it afterwards, and every stage that sees pixels needs the same few
sizes: the VAE's (latents.image_size) and the classifier's (eval.classifier.image_size). So
each image is opened, mapped to 8 bits (bit depth and ``data.window``: :func:`ltaug.common.images.open_image`),
converted to grayscale and resized once per size, here, and every later stage reads the store:
encode_latents, the baselines, the classifier and the judge, the real features and the
distances, the detector and the funnel. Only synthetic images (a set's PNGs) are still read
as files.

Resizing is :func:`ltaug.common.images.load_image`: the shorter side to S, bilinear with
antialiasing (PIL's filter widens with the scale factor), centre-cropped; an image of S x S
is stored as it is.

Store layout (Zarr v3), one per split and size: results/images/{split}/{S}px.zarr
    pixels  (N, S, S) uint8   one chunk per image (a random read decompresses one image),
                              ``shard_size`` chunks per file (Zarr's sharding codec): N / shard_size files
    ids     (N,) str          image ids, manifest order of the split
    attrs   split, image_size, resample, window, complete (written last)

With images.shards = S > 1 the split is decoded by S jobs, shard s writing rows
block_rows(N, shard_size, s, S) (whole files); gather_images joins them as gather_latents does.
Memory is O(batch_size + shard_size) images whatever N.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import zarr
from tqdm import tqdm

from ltaug.common.config import config_section
from ltaug.common.errors import InputError
from ltaug.common.images import get_window, load_image
from ltaug.common.io import atomic_path
from ltaug.common.shards import COMPRESSOR, ChunkWriter, block_rows, check_shards, concatenate_shards

RESAMPLE = "bilinear"  # load_image's filter, recorded in the store


@config_section("images")
@dataclass(frozen=True)
class ImagesConfig:
    batch_size: int = 64  # images decoded ahead at once by the stage's threads
    shard_size: int = 64  # images per file of a store; each image is its own chunk inside


def store_path(root: str | Path, split: str, size: int) -> Path:
    """results/images/{split}/{size}px.zarr under ``root`` (results/images)."""
    return Path(root) / split / f"{size}px.zarr"


def _create(root: zarr.Group, n: int, size: int, shard_size: int) -> ChunkWriter:
    files = max(1, min(shard_size, n))
    arrays = {
        "pixels": root.create_array("pixels", shape=(n, size, size), chunks=(1, size, size),
                                    shards=(files, size, size), dtype="uint8", compressors=COMPRESSOR),  # fmt: skip
        "ids": root.create_array("ids", shape=(n,), chunks=(files,), dtype=str, compressors=COMPRESSOR),
    }
    return ChunkWriter(arrays, files)


def decode_split(
    manifest: pd.DataFrame,
    split: str,
    size: int,
    store: str | Path,
    cfg: ImagesConfig,
    *,
    threads: int = 2,
    source: str = "the manifest",
    shard: tuple[int, int] = (1, 1),
) -> int:
    """Read every image of ``split`` once, at ``size`` x ``size``, into the store ``store``; returns its rows.

    ``manifest``: the frame of :func:`ltaug.data.manifest.read_manifest`; rows keep its order. Images are
    read by ``threads`` threads one batch ahead of the writer, and written a whole file
    (``cfg.shard_size`` images) at a time, so memory is O(batch_size + shard_size). The store is
    built beside ``store`` and renamed into place when complete: an unreadable image (InputError
    naming the manifest line and id) leaves nothing behind. ``shard=(s, S)``: only rows
    :func:`block_rows` of the split, for :func:`gather_images`.
    """
    rows = manifest[manifest["split"] == split]
    if len(rows) == 0:
        found = ", ".join(sorted(map(str, manifest["split"].unique())))
        raise InputError(f"{source}: no rows of split {split!r} (splits present: {found}); rerun prepare_data.")
    total = len(rows)
    first, stop = block_rows(total, cfg.shard_size, *shard, key="images.shards")
    rows = rows.iloc[first:stop]
    paths, ids = rows["path"].tolist(), rows["id"].astype(str).to_numpy(dtype=str)
    where = [f"{source} line {i + 2}, id {image_id!r}" for i, image_id in zip(rows.index, rows["id"].astype(str))]
    n, bs = len(rows), cfg.batch_size
    window = get_window()
    attrs = {"split": split, "image_size": size, "resample": RESAMPLE, "window": list(window) if window else None}
    if shard[1] > 1:
        attrs.update(shard=shard[0], shards=shard[1], first_row=first, split_rows=total)
    with atomic_path(store) as tmp, ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        root = zarr.open_group(tmp, mode="w", zarr_format=3)
        root.attrs.update(attrs)
        writer = _create(root, n, size, cfg.shard_size)

        def submit(start: int) -> list[Future]:
            return [pool.submit(load_image, paths[i], size, where[i]) for i in range(start, min(start + bs, n))]

        pending = submit(0)
        try:
            with tqdm(total=n, desc=f"decode_images {split} {size}px", unit="img", file=sys.stderr, mininterval=2.0) as bar:
                for start in range(0, n, bs):
                    current, pending = pending, submit(start + bs) if start + bs < n else []
                    images = np.stack([f.result() for f in current])  # (b, S, S); the first failure raises
                    writer.append(pixels=images, ids=ids[start : start + len(images)])
                    bar.update(len(images))
            writer.flush()
        finally:
            for f in pending:
                f.cancel()
        root.attrs["complete"] = True  # last: a store without it was not finished
    return n


def gather_images(shards: list[str | Path], store: str | Path, shard_size: int, expect: dict | None = None) -> int:
    """Join the stores of shards 1..S of one split and size into ``store`` (the store one job writes), a
    file at a time; returns its rows. A missing, unfinished or foreign shard is an InputError naming it."""
    groups = [open_images(path, expect) for path in shards]
    common, total = check_shards(shards, groups, "ids", "decode_images")
    size = int(common["image_size"])
    with atomic_path(store) as tmp:
        root = zarr.open_group(tmp, mode="w", zarr_format=3)
        root.attrs.update({k: v for k, v in common.items() if k != "complete"})
        _create(root, total, size, shard_size)
        concatenate_shards(groups, root, ("pixels", "ids"), max(1, min(shard_size, total)))
        root.attrs["complete"] = True
    return total


def open_images(store: str | Path, expect: dict | None = None) -> zarr.Group:
    """A store of :func:`decode_split`, read-only, after checking it is complete and matches ``expect``
    (attribute -> value, e.g. image_size)."""
    path = Path(store)
    if not path.exists():
        raise InputError(f"{path}: no image store here; run the decode_images stage to make it.")
    try:
        group = zarr.open_group(path, mode="r")
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable Zarr store ({exc}); delete it and rerun decode_images.") from exc
    if group.attrs.get("complete") is not True:
        raise InputError(f"{path}: this image store was made by a run that did not finish; delete it and rerun decode_images.")
    if "pixels" not in group or "ids" not in group or group["pixels"].shape[0] != group["ids"].shape[0]:
        raise InputError(f"{path}: expected arrays pixels and ids of equal length; delete it and rerun decode_images.")
    for key, want in (expect or {}).items():
        if group.attrs.get(key) != want:
            raise InputError(f"{path}: made with {key}={group.attrs.get(key)!r}, but this stage needs {key}={want!r}; "
                             f"rerun decode_images.")  # fmt: skip
    return group


class ImageStores:
    """The data set's images as every stage after decode_images reads them: by manifest row (id, split), at a size.

    ``root`` is results/images; the store of each (split, size) is opened and its ids indexed
    on first use. A row whose id its store lacks (a store of another manifest) is an InputError.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._open: dict[tuple[str, int], tuple[zarr.Array, dict[str, int]]] = {}

    def _store(self, split: str, size: int) -> tuple[zarr.Array, dict[str, int]]:
        key = (split, size)
        if key not in self._open:
            group = open_images(store_path(self.root, split, size), {"split": split, "image_size": size})
            ids = group["ids"][:]
            self._open[key] = (group["pixels"], {str(i): r for r, i in enumerate(ids)})
        return self._open[key]

    def ids(self, split: str, size: int) -> list[str]:
        """The ids of the split's store, in its row order."""
        return list(self._store(split, size)[1])

    def read_ids(self, split: str, ids: Sequence[str], size: int) -> np.ndarray:
        """(len(ids), S, S) uint8: the images of ``ids`` of ``split``, in that order (repeats allowed)."""
        pixels, index = self._store(split, size)
        ids = [str(i) for i in ids]
        missing = [i for i in ids if i not in index]
        if missing:
            raise InputError(f"{store_path(self.root, split, size)}: no image of id {missing[0]!r} ({len(missing)} "
                             f"ids asked for missing); it was made from another manifest: delete it and rerun "
                             f"decode_images.")  # fmt: skip
        if not ids:
            return np.zeros((0, size, size), dtype=np.uint8)
        unique, inverse = np.unique(np.array([index[i] for i in ids], dtype=np.int64), return_inverse=True)
        runs = np.split(unique, np.flatnonzero(np.diff(unique) != 1) + 1)  # consecutive rows: one slice each
        return np.concatenate([pixels[run[0] : run[-1] + 1] for run in runs])[inverse]  # (zarr's oindex is slower)

    def read(self, table: pd.DataFrame, size: int) -> np.ndarray:
        """(len(table), S, S) uint8: the images of the manifest rows ``table`` (columns id and split), in its order."""
        out = np.zeros((len(table), size, size), dtype=np.uint8)
        splits, ids = table["split"].astype(str).to_numpy(), table["id"].astype(str).to_numpy()
        for split in dict.fromkeys(splits):
            mine = np.flatnonzero(splits == split)
            out[mine] = self.read_ids(split, ids[mine], size)
        return out

    def array(self, split: str, size: int, ids: Sequence[str], source: str) -> zarr.Array:
        """The split's (N, S, S) pixels array itself (read by rows or ``oindex``), after :meth:`check` of ``ids``."""
        self.check(split, size, ids, source)
        return self._store(split, size)[0]

    def check(self, split: str, size: int, ids: Sequence[str], source: str) -> None:
        """The split's store holds exactly ``ids`` (the manifest's rows of the split), in order."""
        stored = self.ids(split, size)
        if stored != [str(i) for i in ids]:
            raise InputError(f"{store_path(self.root, split, size)}: its {len(stored)} images are not the {len(ids)} "
                             f"rows of split {split!r} of {source}, in order; delete it and rerun decode_images.")  # fmt: skip


def read_images(table: pd.DataFrame, size: int, stores: ImageStores | None, source: str = "the manifest") -> np.ndarray:
    """(len(table), S, S) uint8 of the manifest rows ``table`` (id, split, path): from ``stores`` in the workflow,
    or, with None, from the image files themselves (functions called outside the workflow, on a few images)."""
    if stores is not None:
        return stores.read(table, size)
    if len(table) == 0:
        return np.zeros((0, size, size), dtype=np.uint8)
    return np.stack([load_image(p, size, f"{source}, id {i!r}") for p, i in zip(table["path"], table["id"])])

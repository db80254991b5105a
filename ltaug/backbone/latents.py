"""Latent store (stage encode_latents) and the one VAE decoder every later stage uses.

Elberg, Parra, Petrache, *Long Tail Image Generation Through Feature Space Augmentation
and Iterated Learning* (arXiv 2405.01705), Sec. 3: the method works in the latent space
of a pre-trained Stable Diffusion VAE. Every image, read from its split's image store
(stage decode_images: resized and centre-cropped to a square once), is scaled to [-1, 1] and encoded into z (4 x H/8 x W/8), multiplied by the VAE's
``scaling_factor`` as Stable Diffusion's UNet expects (Rombach et al. 2022, Sec. 4.3.2).
Iterated learning, CAM, pairing and fusion all read these latents; generation and the
baselines turn latents back into pixels with :func:`decode_latents`, so that every
method's images come out of the same decoder.

Store layout (Zarr v3, Blosc-zstd, chunked along axis 0), one per split:
    z       (N, 4, h, w) float32   scaled latents
    labels  (N, K) uint8           0/1 per class, in manifest column order
    ids     (N,) str               image ids, manifest order
    attrs   classes, split, model_path, model_fingerprint, scaling_factor, shift_factor,
            image_size, mode, seed, complete (written last)

With latents.shards = S > 1 each split is encoded by S jobs, shard s writing rows
block_rows(N, batch_size, s, S) (whole batches) with the attributes shard, shards, first_row and split_rows besides;
gather_shards joins them, chunk by chunk, into the store one job would have written.
"""

from __future__ import annotations

import json
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import zarr
from tqdm import tqdm

from ltaug.common.config import config_section
from ltaug.common.errors import InputError
from ltaug.common.io import atomic_path
from ltaug.common.seeds import rng
from ltaug.common.shards import COMPRESSOR, ChunkWriter, block_rows, check_shards, concatenate_shards
from ltaug.data.image_store import ImageStores, read_images
from ltaug.data.manifest import class_columns

MODES = ("sample", "mean")
MODEL_KEYS = ("model_path", "model_fingerprint")


@config_section("latents")
@dataclass(frozen=True)
class LatentsConfig:
    image_size: int = 128  # images are resized (shorter side) and centre-cropped to this square side; multiple of 8
    mode: str = "sample"  # sample (a draw from the VAE posterior, seeded per image) | mean (the posterior mean)
    seed: int = 0  # seed of the posterior draws in sample mode
    batch_size: int = 32  # images encoded at once; memory is O(batch_size + chunk_size)
    chunk_size: int = 256  # samples per Zarr chunk along axis 0


# ---------------------------------------------------------------------------- pure functions


def to_vae_input(pixels: np.ndarray) -> torch.Tensor:
    """(B, S, S) uint8 grayscale (an image store's rows) -> (B, 3, S, S) float32 in [-1, 1], as Stable Diffusion's
    VAE expects: the channels repeated, p / 127.5 - 1, so 0 -> -1 and 255 -> 1 exactly."""
    x = torch.from_numpy(np.asarray(pixels, dtype=np.float32))[:, None].expand(-1, 3, -1, -1)
    return x / 127.5 - 1.0


def to_rgb_pixels(pixels: np.ndarray) -> np.ndarray:
    """(B, S, S) uint8 grayscale -> (B, S, S, 3) uint8, as :func:`decode_latents` returns images."""
    return np.repeat(np.asarray(pixels)[..., None], 3, axis=-1)


def _noise(seed: int | tuple[int, ...], index: int, shape: tuple[int, ...]) -> torch.Tensor:
    """The standard normal draw of sample ``index``: a numpy generator seeded by (*seed, index),
    so it is the same on every device and for every batching."""
    words = [seed] if isinstance(seed, int) else list(seed)
    return torch.from_numpy(rng(*words, index).standard_normal(shape, dtype=np.float32))


def split_seed(seed: int, split: str) -> tuple[int, int]:
    """The noise seed of one split's store: (seed, crc32(split)), so splits draw independent noise."""
    return seed, zlib.crc32(split.encode())


@torch.no_grad()
def encode_images(vae, images: torch.Tensor, mode: str, seed: int | tuple[int, ...], first_index: int) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] -> (B, C, H/8, W/8) float32 scaled latents, on the VAE's device.

    ``mean``: the posterior mean. ``sample``: mean + std * eps, with eps of image i drawn
    from a generator seeded by (seed, first_index + i), so the result does not depend on
    how the images are batched. Latents are (z - shift_factor) * scaling_factor (SD 1.x
    has no shift_factor).
    """
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not one of {MODES}")
    dist = vae.encode(images.to(device=vae.device, dtype=vae.dtype)).latent_dist
    z = dist.mean  # (B, C, h, w)
    if mode == "sample":
        eps = torch.stack([_noise(seed, first_index + i, tuple(z.shape[1:])) for i in range(len(z))])
        z = z + dist.std * eps.to(device=z.device, dtype=z.dtype)
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return ((z - shift) * vae.config.scaling_factor).float()


@torch.no_grad()
def decode_latents(vae, z: torch.Tensor, batch_size: int = 16) -> np.ndarray:
    """(B, C, h, w) scaled latents -> (B, 8h, 8w, 3) uint8 images; the decoder of every stage.

    Inverts the scaling of :func:`encode_images`, decodes in batches of ``batch_size`` and
    maps [-1, 1] to [0, 255] as diffusers' image processor does: clamp((x + 1) / 2, 0, 1)
    * 255, rounded to the nearest integer.
    """
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    out = []
    for start in range(0, len(z), batch_size):
        batch = z[start : start + batch_size].to(device=vae.device, dtype=vae.dtype)
        x = vae.decode(batch / vae.config.scaling_factor + shift).sample  # (b, 3, H, W) in ~[-1, 1]
        x = (x.float() / 2 + 0.5).clamp(0, 1) * 255
        out.append(x.round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy())  # (b, H, W, 3)
    if not out:
        return np.zeros((0, 0, 0, 3), dtype=np.uint8)
    return np.concatenate(out)


# ---------------------------------------------------------------------------- the store


def _create_arrays(root: zarr.Group, n: int, latent: tuple, k: int, chunk: int) -> ChunkWriter:
    """The store's three arrays, chunked along axis 0 (ids: zarr v3 variable-length UTF-8 strings)."""
    arrays = {
        "z": root.create_array("z", shape=(n, *latent), chunks=(chunk, *latent), dtype="float32", compressors=COMPRESSOR),
        "labels": root.create_array("labels", shape=(n, k), chunks=(chunk, k), dtype="uint8", compressors=COMPRESSOR),
        "ids": root.create_array("ids", shape=(n,), chunks=(chunk,), dtype=str, compressors=COMPRESSOR),
    }
    return ChunkWriter(arrays, chunk)


def encode_split(
    manifest: pd.DataFrame,
    split: str,
    vae,
    store: str | Path,
    cfg: LatentsConfig,
    model: dict,
    device,
    *,
    stores: ImageStores | None = None,
    source: str = "the manifest",
    shard: tuple[int, int] = (1, 1),
) -> None:
    """Encode the images of ``split`` into the Zarr store ``store``, streaming, atomically.

    ``manifest`` is the frame of :func:`ltaug.data.manifest.read_manifest` (id, path, split, then one
    uint8 column per class); rows keep manifest order. ``model`` is {"path", "fingerprint"}
    of another model. The VAE is moved to ``device`` and put in eval mode. Images are read
    from ``stores``, the split's store at ``cfg.image_size`` (stage decode_images; None: the image
    files), a batch at a time (:func:`to_vae_input`); encoded rows are buffered up to a
    chunk boundary, so memory is O(batch_size + chunk_size). The store is written beside
    ``store`` and renamed into place when complete; ``source`` names the manifest in errors
    (row index i of the frame is line i + 2 of the CSV, as read_manifest numbers rows).

    ``shard=(s, S)`` with S > 1 encodes only rows :func:`block_rows` of the split (whole batches), one of S
    jobs whose stores :func:`gather_shards` joins. Image i of the split keeps its posterior
    noise stream (seed, split, i), so the joined store equals the one of a single job.
    """
    if "split" not in manifest.columns:
        raise InputError(f"{source}: no 'split' column; expected the manifest written by prepare_data.")
    classes = class_columns(manifest)
    rows = manifest[manifest["split"] == split]
    if len(rows) == 0:
        found = ", ".join(sorted(map(str, manifest["split"].unique())))
        raise InputError(f"{source}: no rows of split {split!r} (splits present: {found}); rerun prepare_data.")
    total = len(rows)
    first, stop = block_rows(total, cfg.batch_size, *shard)
    if stores is not None:
        stores.check(split, cfg.image_size, rows["id"].astype(str).tolist(), source)
    rows = rows.iloc[first:stop]  # row i of this store is row first + i of the split
    ids = rows["id"].astype(str).to_numpy()
    labels = rows[classes].to_numpy(dtype=np.uint8)  # (N, K)
    n, bs = len(rows), cfg.batch_size

    vae = vae.to(device).eval()
    attrs = {
        "classes": classes,
        "split": split,
        "model_path": str(model["path"]),
        "model_fingerprint": str(model["fingerprint"]),
        "scaling_factor": float(vae.config.scaling_factor),
        "shift_factor": getattr(vae.config, "shift_factor", None),
        "image_size": cfg.image_size,
        "mode": cfg.mode,
        "seed": cfg.seed,
    }
    if shard[1] > 1:
        attrs.update(shard=shard[0], shards=shard[1], first_row=first, split_rows=total)
    with atomic_path(store) as tmp:
        root = zarr.open_group(tmp, mode="w", zarr_format=3)
        root.attrs.update(attrs)
        writer, seed = None, split_seed(cfg.seed, split)
        with tqdm(total=n, desc=f"encode_latents {split}", unit="img", file=sys.stderr, mininterval=2.0) as bar:
            for start in range(0, n, bs):
                pixels = read_images(rows.iloc[start : start + bs], cfg.image_size, stores, source)  # (b, S, S)
                z = encode_images(vae, to_vae_input(pixels), cfg.mode, seed, first + start).cpu().numpy()  # (b, C, h, w)
                if writer is None:  # the latent shape is the VAE's business: take it from the first batch
                    writer = _create_arrays(root, n, z.shape[1:], labels.shape[1], cfg.chunk_size)
                end = start + len(z)
                writer.append(z=z, labels=labels[start:end], ids=ids[start:end])
                bar.update(len(z))
            if writer is None:  # an empty shard (more shards than images): the shape from one blank image
                blank = torch.zeros(1, 3, cfg.image_size, cfg.image_size)
                latent = tuple(encode_images(vae, blank, "mean", 0, 0).shape[1:])
                writer = _create_arrays(root, 0, latent, labels.shape[1], cfg.chunk_size)
            writer.flush()
        root.attrs["complete"] = True  # last: a store without it was not finished


def gather_shards(shards: list[str | Path], store: str | Path, chunk_size: int, expect: dict | None = None) -> int:
    """Join the stores of shards 1..S of one split (``encode_split(..., shard=(s, S))``, in
    order) into ``store``; returns its number of rows.

    The result is the store a single ``encode_split`` job writes: the same arrays value for
    value, chunked by ``chunk_size``, and the same attributes (the shards' own, less
    SHARD_KEYS). Rows are copied a chunk at a time and written as whole chunks, so memory
    is O(chunk_size) whatever the split's size; the store is built beside ``store`` and
    renamed into place when complete. ``expect`` is checked against every shard as by
    :func:`open_latents`. A shard that is missing, unfinished, out of order or made by
    other settings is an InputError naming it (:func:`check_shards`).
    """
    groups = [open_latents(path, expect) for path in shards]
    common, total = check_shards(shards, groups, "z", "encode_latents")
    latent, k = groups[0]["z"].shape[1:], groups[0]["labels"].shape[1]
    with atomic_path(store) as tmp:
        root = zarr.open_group(tmp, mode="w", zarr_format=3)
        root.attrs.update({k: v for k, v in common.items() if k != "complete"})
        _create_arrays(root, total, latent, k, chunk_size)
        concatenate_shards(groups, root, ("z", "labels", "ids"), chunk_size)
        root.attrs["complete"] = True  # last: a store without it was not finished
    return total


def open_latents(store: str | Path, expect: dict | None = None) -> zarr.Group:
    """Open a store written by :func:`encode_split` read-only, after checking it is complete.

    ``expect`` maps attribute names to the values the caller's configuration implies (e.g.
    model_fingerprint, image_size, mode); any difference is an InputError naming both
    values. Pass model_fingerprint without model_path to accept a model that has moved.
    ``group["ids"][:]`` comes back as numpy's variable-width StringDType.
    """
    path = Path(store)
    if not path.exists():
        raise InputError(f"{path}: no latent store here; run the encode_latents stage to make it.")
    try:
        group = zarr.open_group(path, mode="r")
    except (OSError, ValueError) as exc:  # no or unreadable zarr.json
        raise InputError(f"{path}: not a readable Zarr store ({exc}); delete it and rerun encode_latents.") from exc
    if group.attrs.get("complete") is not True:
        raise InputError(
            f"{path}: this latent store was made by a run that did not finish; delete it and rerun encode_latents."
        )
    arrays = {name: group[name] for name in ("z", "labels", "ids") if name in group}
    if len(arrays) < 3 or len({a.shape[0] for a in arrays.values()}) != 1:
        shapes = ", ".join(f"{k} {v.shape}" for k, v in arrays.items())
        raise InputError(
            f"{path}: expected arrays z, labels and ids of equal length, found {shapes or 'none'}; "
            f"delete it and rerun encode_latents."
        )
    if expect:
        _check_expected(path, dict(group.attrs), expect)
    return group


def _check_expected(path: Path, attrs: dict, expect: dict) -> None:
    def plain(value):  # tuples -> lists etc., as the attributes come back from JSON
        return json.loads(json.dumps(value))

    problems = []
    if any(k in expect and plain(expect[k]) != attrs.get(k) for k in MODEL_KEYS):
        def describe(values):
            return f"{values.get('model_path', '?')} (fingerprint {values.get('model_fingerprint', '?')})"
        problems.append(
            f"were made by model {describe(attrs)} but the workflow now uses model {describe(expect)}"
        )
    for key, want in expect.items():
        if key not in MODEL_KEYS and plain(want) != attrs.get(key):
            got = repr(attrs[key]) if key in attrs else "(not recorded)"
            problems.append(f"were made with {key}={got} but the workflow now uses {key}={plain(want)!r}")
    if problems:
        raise InputError(f"{path}: these latents " + "; and ".join(problems) + "; rerun encode_latents.")


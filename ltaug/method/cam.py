"""Stage cam_maps: CAM maps of the IL classifier C over z^s = S(z), stored threshold-free.

Elberg, Parra, Petrache, *Long Tail Image Generation Through Feature Space Augmentation and
Iterated Learning* (arXiv 2405.01705), Sec. 3.2: every sample gets a saliency map M of the
multi-label classifier C, read through the student S so that the map lives on the latent grid
(h x w). ``cam.method`` picks the method from pytorch-grad-cam:

* ``eigencam`` (the paper; Muhammad & Yeasin 2020): the activations A (F, h', w') of one layer
  of C, centred over positions, are projected on their first principal component, negative
  values are cut to 0, the map is resized to h x w and scaled to [0, 1]. It uses no gradient
  and no target class, so a sample's map is the same for every class: it serves as the tail
  map of a tail sample and as the head map of a head neighbour (the authors' code passes
  class targets that EigenCAM ignores). One map per sample.
* ``gradcam``, ``gradcam++``, ``hirescam``, ``layercam``: class-specific maps for the target
  ``ClassifierOutputTarget(k)``. Fusion reads the tail sample's map for its tail class and the
  head neighbour's map for its head class, so a map is computed for every (sample, class) with
  the sample positive for a head or tail class (``map_classes``); the other entries are NaN.

The target layer (``cam.target_layer``; "auto" = the classifier's last layer before any
pooling, :func:`default_target_layer`) should keep the latent resolution: a map read at h/4
and upsampled gives one value per 4 x 4 latent cells, too coarse for a small finding.

pytorch-grad-cam keeps ``activation.cpu().detach()`` of the target layer: on the CPU that is
the very tensor a following in-place ReLU (torchvision's DenseNet) overwrites. The hooks here
(:class:`ClonedActivationsAndGradients`) keep a copy. The methods, the sign and the target
layer are in :mod:`ltaug.method.cam_methods`; this module is the stage and its store.

Sign convention. A principal component has no sign of its own: SVD may return v or -v, and
cutting negatives at 0 then keeps one side of the map or the other. The projection p (h', w')
is oriented so that it correlates positively with the layer's mean activation over channels,
sum((p - mean p) * (a - mean a)) >= 0 with a = mean_F A: the map is high where the layer is
most active. pytorch-grad-cam's own result is kept where its sign already agrees; otherwise
the map is that of -p (same post-processing).

Thresholds (tau_h, tau_l) are applied only in fuse, so changing them never reruns this stage.

Store layout (Zarr v3, Blosc-zstd, chunked along axis 0), one per split:
    maps    (N, h, w) float32   EigenCAM map in [0, 1] at latent resolution, or
            (N, M, h, w)        class-specific maps of the M ``map_classes`` (NaN: not computed)
    probs   (N, K) float32      sigmoid(C(S(z))), the classifier's probabilities
    labels  (N, K) uint8        copied from the latent store
    ids     (N,) str            copied from the latent store
    attrs   classes, split, model_fingerprint (diffusion), il_model, il_fingerprint,
            method, map_classes ([] for eigencam), target_layer, layer_shape (h', w'),
            sign_convention, complete (written last)
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import zarr
from tqdm import tqdm

from ltaug.backbone.latents import open_latents
from ltaug.common.config import config_section
from ltaug.common.errors import InputError
from ltaug.common.io import atomic_path
from ltaug.common.memory import release_free_memory
from ltaug.common.shards import COMPRESSOR, SHARD_KEYS, block_rows, check_shards, concatenate_shards
from ltaug.method.cam_methods import (
    SIGN_CONVENTION,
    build_cam,
    cam_batch,
    class_cam_batch,
    default_target_layer,
    target_module,
)
from ltaug.method.checkpoint import ILModel, load_il_model, read_checkpoint
from ltaug.method.networks import LatentClassifier


@config_section("cam")
@dataclass(frozen=True)
class CamConfig:
    method: str = "layercam"  # eigencam (the paper, class-agnostic) | gradcam | gradcam++ | hirescam | layercam
    target_layer: str = "auto"  # classifier module the CAM reads; auto = the last one before any pooling
    batch_size: int = 64  # latents per forward pass; memory is O(batch_size + chunk_size)
    chunk_size: int = 256  # samples per Zarr chunk along axis 0

    @property
    def class_specific(self) -> bool:
        return self.method != "eigencam"


# ---------------------------------------------------------------------------- which maps a store holds


def map_columns(classes: list[str], head: list[str], tail: list[str]) -> list[str]:
    """The classes a class-specific store keeps maps of: head and tail, in classes.json order."""
    return [c for c in classes if c in head or c in tail]


def select_maps(maps: np.ndarray, map_classes: list[str], wanted: list[str], source: str = "the CAM store") -> np.ndarray:
    """(B, h, w) maps of B samples from rows of a store's ``maps``: a class-agnostic (B, h, w) block
    as it is, a class-specific (B, M, h, w) block at the class each row wants."""
    if maps.ndim == 3:
        return maps
    missing = sorted(set(wanted) - set(map_classes))
    if missing:
        raise InputError(f"{source}: no maps of class(es) {missing} (it has {map_classes}); rerun cam_maps.")
    out = maps[np.arange(len(maps)), [map_classes.index(c) for c in wanted]]  # (B, h, w)
    if np.isnan(out).any():
        raise InputError(
            f"{source}: a map was read for a class its sample is not positive for (not computed); "
            f"fusion reads a tail sample's map for its tail class and a head sample's for its head class."
        )
    return out


# ---------------------------------------------------------------------------- the store


def il_fingerprint(path: str | Path) -> str:
    """sha256 (first 16 hex digits) of what an IL checkpoint is: its config and data digests and
    the weights of S, D and C, not its file bytes (the training history it carries records
    wall times). Later stages refuse maps of another model; two runs that train the same
    weights get the same fingerprint."""
    state = read_checkpoint(path)
    digest = hashlib.sha256()
    head = {k: state[k] for k in ("format", "generation", "config_digest", "data_digest", "latent_shape", "classes")}
    digest.update(json.dumps(head, sort_keys=True).encode())
    for part in ("student", "decoder", "classifier"):
        for name, tensor in sorted(state[part].items()):
            digest.update(f"{part}.{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def check_il_matches(store: str | Path, attrs: dict, il: ILModel, il_path: str | Path) -> None:
    """InputError unless a latent store's diffusion model and classes are those the IL model was trained on."""
    if attrs.get("model_fingerprint") != il.model_fingerprint:
        raise InputError(
            f"{store}: these latents were made by diffusion model {attrs.get('model_path', '?')} (fingerprint "
            f"{str(attrs.get('model_fingerprint'))[:12]}...), but the IL model {il_path} was trained on latents of "
            f"fingerprint {str(il.model_fingerprint)[:12]}...; rerun train_il on the current latents (snakemake does "
            f"so when the latents change), or point this stage at the latents the IL model was trained on."
        )
    if list(attrs.get("classes", [])) != list(il.classes):
        raise InputError(
            f"{store}: classes {list(attrs.get('classes', []))} differ from those of the IL model {il_path} "
            f"({il.classes}); rerun train_il with the current classes."
        )


def open_training_stores(latents_store: str | Path, cam_store: str | Path, il_path: str | Path, classes: list[str]):
    """(il, latents, cams, ids) for the stages that read a split's latents with their CAM store
    (pair_neighbours, fuse), after checking they belong together: the latents are those the IL
    model was trained on, ``classes`` (classes.json) are its classes, and the CAM store was made
    by this IL model from these latents (same ids in the same order). The IL model is on the CPU."""
    il = load_il_model(il_path, "cpu")
    latents = open_latents(latents_store)
    check_il_matches(latents_store, dict(latents.attrs), il, il_path)
    if list(classes) != list(il.classes):
        raise InputError(f"classes.json lists classes {list(classes)}, the IL model {il_path} {il.classes}; rerun train_il.")
    cams = open_cams(cam_store, expect={"il_fingerprint": il_fingerprint(il_path)})
    ids = latents["ids"][:]
    if not np.array_equal(cams["ids"][:], ids):
        raise InputError(f"{cam_store}: its ids differ from those of {latents_store}; rerun cam_maps on these latents.")
    return il, latents, cams, ids


def open_cams(store: str | Path, expect: dict | None = None) -> zarr.Group:
    """A complete CAM store, read-only; ``expect`` maps attribute names to required values."""
    path = Path(store)
    if not path.exists():
        raise InputError(f"{path}: no CAM store here; run the cam_maps stage to make it.")
    group = zarr.open_group(path, mode="r")
    if group.attrs.get("complete") is not True:
        raise InputError(f"{path}: this CAM store was made by a run that did not finish; delete it and rerun cam_maps.")
    for key, want in (expect or {}).items():
        if group.attrs.get(key) != want:
            raise InputError(
                f"{path}: made with {key}={group.attrs.get(key)!r}, but this stage uses {key}={want!r}; "
                f"rerun cam_maps with the current IL model."
            )
    return group


def create_cam_store(root: zarr.Group, n: int, latent_hw: tuple[int, int], k: int, chunk: int, m: int = 0) -> None:
    """The store's arrays (maps, probs, labels, ids), chunked along axis 0, all rows unwritten;
    ``m`` > 0: class-specific maps (N, m, h, w), NaN until written."""
    h, w = latent_hw
    per_sample = (m, h, w) if m else (h, w)
    root.create_array("maps", shape=(n, *per_sample), chunks=(chunk, *per_sample), dtype="float32",
                      compressors=COMPRESSOR, fill_value=np.nan)  # fmt: skip
    root.create_array("probs", shape=(n, k), chunks=(chunk, k), dtype="float32", compressors=COMPRESSOR)
    root.create_array("labels", shape=(n, k), chunks=(chunk, k), dtype="uint8", compressors=COMPRESSOR)
    root.create_array("ids", shape=(n,), chunks=(chunk,), dtype=str, compressors=COMPRESSOR)


def cam_rows(
    model: LatentClassifier,
    layer: nn.Module,
    latents: zarr.Group,
    out: zarr.Group,
    start: int,
    stop: int,
    batch_size: int,
    device: torch.device,
    offset: int = 0,
    method: str = "eigencam",
    map_columns: list[int] | None = None,
) -> None:
    """Compute and write rows [start, stop) of ``out`` (maps, probs, labels, ids) from rows
    [start + offset, stop + offset) of ``latents`` (offset: where a shard store starts in its split).

    ``method`` eigencam: one map per sample. A class-specific method: for every class column in
    ``map_columns`` (the store's ``map_classes``), the map of each sample positive for it.
    Rows go out one whole Zarr chunk at a time, and ``start`` must lie on a chunk boundary, so
    calls covering disjoint ranges never write the same chunk. Memory is O(chunk + batch).
    """
    chunk = out["maps"].chunks[0]
    n = out["maps"].shape[0]
    if start % chunk or not 0 <= start <= stop <= n:
        raise ValueError(f"rows [{start}, {stop}) must start on a chunk boundary (chunk {chunk}) within 0..{n}")
    written = 0
    with build_cam(method, model, layer) as cam:
        bar = tqdm(total=stop - start, desc="cam_maps", unit="z", file=sys.stderr, mininterval=5.0)
        for a in range(start, stop, chunk):
            b = min(a + chunk, stop)
            src = slice(a + offset, b + offset)
            z = latents["z"][src]  # (n, C, h, w)
            labels = latents["labels"][src]  # (n, K)
            if method == "eigencam":
                maps, probs = [], []
                for i in range(0, len(z), batch_size):
                    m, p = cam_batch(cam, torch.from_numpy(z[i : i + batch_size]).to(device))
                    maps.append(m)
                    probs.append(p)
                maps, probs = np.concatenate(maps), np.concatenate(probs)
            else:
                with torch.no_grad():
                    probs = np.concatenate([
                        torch.sigmoid(model(torch.from_numpy(z[i : i + batch_size]).to(device))).cpu().numpy()
                        for i in range(0, len(z), batch_size)
                    ]).astype(np.float32)  # fmt: skip
                maps = np.full((len(z), len(map_columns), *z.shape[2:]), np.nan, dtype=np.float32)  # (n, M, h, w)
                for j, column in enumerate(map_columns):
                    rows = np.flatnonzero(labels[:, column])  # only the samples positive for this class
                    for i in range(0, len(rows), batch_size):
                        part = rows[i : i + batch_size]
                        maps[part, j] = class_cam_batch(cam, torch.from_numpy(z[part]).to(device), column)
            out["maps"][a:b] = maps
            out["probs"][a:b] = probs
            out["labels"][a:b] = labels
            out["ids"][a:b] = latents["ids"][src]
            written += b - a
            bar.update(b - a)
            release_free_memory()  # the batches' freed blocks, or resident memory grows with the chunks
        bar.close()
    if written != stop - start:  # pytorch-grad-cam's __exit__ swallows an IndexError: never pass a short store
        raise RuntimeError(f"the CAM stopped after {written} of {stop - start} rows")


def layer_shape(model: LatentClassifier, layer: nn.Module, latent_shape: tuple[int, ...], device) -> list[int]:
    """(h', w') of the target layer's output for one latent of ``latent_shape``: the map's own resolution."""
    seen = []
    handle = layer.register_forward_hook(lambda module, inputs, output: seen.append(tuple(output.shape[2:])))
    try:
        with torch.no_grad():
            model(torch.zeros((1, *latent_shape), device=device))
    finally:
        handle.remove()
    return list(seen[0])


def cam_maps(
    latents_store: str | Path,
    il_path: str | Path,
    store: str | Path,
    cfg: CamConfig,
    device: torch.device,
    shard: tuple[int, int] = (1, 1),
) -> zarr.Group:
    """Stage cam_maps: EigenCAM map and probabilities of every sample of one split, into ``store`` atomically.

    ``shard=(s, S)`` with S > 1 maps only shard s of the split's Zarr chunks
    (:func:`ltaug.common.shards.block_rows`), one of S jobs whose stores :func:`gather_cams`
    joins. Shards start on chunk boundaries, so every sample goes through the same batch as in
    a single job and the joined store equals that job's value for value.
    """
    il = load_il_model(il_path, device)
    latents = open_latents(latents_store)
    attrs = dict(latents.attrs)
    check_il_matches(latents_store, attrs, il, il_path)
    n, *shape = latents["z"].shape
    if tuple(shape) != tuple(il.latent_shape):
        raise InputError(
            f"{latents_store}: latents of shape {tuple(shape)}, but the IL model {il_path} was trained on "
            f"{tuple(il.latent_shape)}; rerun train_il on these latents."
        )
    model = LatentClassifier(il.model.student, il.model.classifier).eval()
    layer_name = default_target_layer(il.model.classifier) if cfg.target_layer == "auto" else cfg.target_layer
    layer = target_module(il.model.classifier, layer_name)
    resolution = layer_shape(model, layer, tuple(shape), device)
    map_classes = map_columns(list(il.classes), list(il.head), list(il.tail)) if cfg.class_specific else []
    first, stop = block_rows(n, cfg.chunk_size, *shard, key="cam.shards")  # whole chunks, hence whole batches
    with atomic_path(store) as tmp:
        root = zarr.open_group(tmp, mode="w", zarr_format=3)
        root.attrs.update({
            "classes": list(il.classes), "split": attrs.get("split"), "model_path": attrs.get("model_path"),
            "model_fingerprint": attrs.get("model_fingerprint"), "il_model": str(il_path),
            "il_fingerprint": il_fingerprint(il_path), "method": cfg.method, "map_classes": map_classes,
            "target_layer": layer_name, "layer_shape": resolution, "sign_convention": SIGN_CONVENTION,
            "config": asdict(cfg),
        })  # fmt: skip
        if shard[1] > 1:
            root.attrs.update(shard=shard[0], shards=shard[1], first_row=first, split_rows=n)
        create_cam_store(root, stop - first, (shape[1], shape[2]), len(il.classes), cfg.chunk_size, len(map_classes))
        columns = [list(il.classes).index(c) for c in map_classes]
        cam_rows(model, layer, latents, root, 0, stop - first, cfg.batch_size, device, offset=first,
                 method=cfg.method, map_columns=columns)  # fmt: skip
        root.attrs["complete"] = True  # last: a store without it was not finished
    return open_cams(store)


def gather_cams(shards: list[str | Path], store: str | Path, expect: dict | None = None) -> int:
    """Join the CAM stores of shards 1..S of one split (``cam_maps(..., shard=(s, S))``, in
    order) into ``store``, the store a single cam_maps job writes (same arrays, chunks and
    attributes, less the shard keys); returns its number of rows. Memory is O(chunk); the
    store is built beside ``store`` and renamed into place when complete. A shard that is
    missing, unfinished, out of order or made by other settings is an InputError naming it.
    """
    groups = [open_cams(path, expect) for path in shards]
    common, total = check_shards(shards, groups, "maps", "cam_maps")
    chunk = int(common["config"]["chunk_size"])
    h, w = groups[0]["maps"].shape[-2:]
    m = groups[0]["maps"].shape[1] if groups[0]["maps"].ndim == 4 else 0
    with atomic_path(store) as tmp:
        root = zarr.open_group(tmp, mode="w", zarr_format=3)
        root.attrs.update({k: v for k, v in common.items() if k != "complete" and k not in SHARD_KEYS})
        create_cam_store(root, total, (h, w), groups[0]["probs"].shape[1], chunk, m)
        concatenate_shards(groups, root, ("maps", "probs", "labels", "ids"), chunk)
        root.attrs["complete"] = True  # last: a store without it was not finished
    return total

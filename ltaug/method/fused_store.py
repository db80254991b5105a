"""Stage fuse: one fused sample per row of pairs.csv, made by :mod:`ltaug.method.fusion`'s equations and written to the fused
latent store.

Store ``results/fused/<variant>/latents.zarr`` (Zarr v3, chunked along axis 0), readable with
:func:`ltaug.backbone.latents.open_latents`:
    z       (N, C, h, w) float32   z_F, scaled latents as in the latent stores
    labels  (N, K) uint8           by the label policy
    tail_labels (N, K) uint8       the tail sample's own labels (the UNet's prompt by default)
    ids     (N,) str               fused-<tail class>-<j>
    probs   (N, K) float32         sigmoid(C(z_F^s))
    tail_id, head_id, tail_class, head_class  (N,) str   provenance
    tail_share, head_share, coin_share        (N,) float32  share of positions from the tail
            vector, from the head vector, and decided by the coin
    from_tail  (N, h, w) uint8     F: 1 where z_F^s took the tail vector (read by the fidelity funnel)
    attrs   the latent store's (classes, model_fingerprint, scaling_factor, ...), head, tail,
            fusion config, il_model, il_fingerprint, complete (written last)
"""

from __future__ import annotations

import re
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import zarr
from tqdm import tqdm

from ltaug.common.errors import ConfigError, InputError
from ltaug.common.io import atomic_path
from ltaug.common.seeds import seed64, stream
from ltaug.common.shards import COMPRESSOR
from ltaug.common.variants import effective_policy
from ltaug.data.classes import ClassSplit
from ltaug.method.cam import il_fingerprint, open_training_stores, select_maps
from ltaug.method.fusion import (
    FusionConfig,
    FusionMasks,
    combine,
    config_masks,
    decode_fused,
    fused_labels,
    region_carried,
    shares,
)


PAIR_COLUMNS = ["j", "tail_id", "tail_class", "head_class", "head_id", "distance"]


PROVENANCE = ("tail_id", "head_id", "tail_class", "head_class")


SHARES = ("tail_share", "head_share", "coin_share")


def sample_generator(seed: int, tail_index: int, j: int, device: torch.device | str = "cpu") -> torch.Generator:
    """The coin generator of fused sample j of the tail class with index ``tail_index`` in classes.json's tail."""
    return torch.Generator(device=device).manual_seed(seed64(seed, stream("fuse.coins"), tail_index, j))


def slug(name: str) -> str:
    """A class name as a file-name part: runs of characters other than letters and digits become '_'."""
    return re.sub(r"[^0-9A-Za-z]+", "_", name).strip("_")


def read_pairs(path: str | Path, split: ClassSplit) -> pd.DataFrame:
    """pairs.csv as pair_neighbours writes it; every tail class must have rows."""
    frame = pd.read_csv(path, dtype={"tail_id": str, "head_id": str, "tail_class": str, "head_class": str})
    missing = [c for c in PAIR_COLUMNS if c not in frame.columns]
    if missing:
        raise InputError(
            f"{path}: column(s) {', '.join(missing)} missing; expected {PAIR_COLUMNS}. Rerun pair_neighbours."
        )
    absent = [t for t in split.tail if not (frame["tail_class"] == t).any()]
    if absent:
        raise InputError(
            f"{path}: no pair for tail class(es) {', '.join(map(repr, absent))}; every tail class needs at least "
            f"one training sample with a head neighbour. Rerun pair_neighbours with the current classes.json."
        )
    return frame


def plan(pairs: pd.DataFrame, split: ClassSplit, n_per_class: int, source: str = "pairs.csv") -> pd.DataFrame:
    """One row per fused sample: tail class t (classes.json tail order), j = 0..n-1, each its own row of pairs.csv."""
    rows = []
    for t_index, t in enumerate(split.tail):
        own = pairs[pairs["tail_class"] == t].sort_values("j", kind="stable")
        if own["j"].tolist() != list(range(n_per_class)):
            raise InputError(
                f"{source}: tail class {t!r} has pairs j = {own['j'].min()}..{own['j'].max()} ({len(own)} rows), but "
                f"fusion.n_per_class is {n_per_class}: one pair per synthetic sample, j = 0..{n_per_class - 1}. "
                f"Rerun pair_neighbours with the current fusion.n_per_class."
            )
        for pair in own.itertuples():
            rows.append({"id": f"fused-{slug(t)}-{pair.j:05d}", "t_index": t_index, "j": int(pair.j),
                         **{c: getattr(pair, c) for c in PROVENANCE}})  # fmt: skip
    return pd.DataFrame(rows)


def second_tail_carried(
    cfg: FusionConfig, y_tail: np.ndarray, maps: np.ndarray, map_classes: list[str], from_tail: torch.Tensor,
    tail_column: np.ndarray, classes: list[str], tail: list[str],
) -> np.ndarray | None:  # fmt: skip
    """(B, K) bool: which of the tail images' classes each fused sample carries. A second tail class u of a tail
    image (not the one the sample was made for) is carried when at least half of its region, M^S of the image's map
    for u (:func:`ltaug.method.fusion.region_carried`), was taken from the tail; every other class counts as
    carried. None for class-agnostic maps (EigenCAM: no map says where u is; the policy's labels stand)."""
    if maps.ndim == 3:
        return None
    carried = np.ones(y_tail.shape, dtype=bool)
    for u in tail:
        k = classes.index(u)
        rows = np.flatnonzero((y_tail[:, k] == 1) & (tail_column != k))
        if len(rows) == 0 or u not in map_classes:
            continue
        m_u = torch.from_numpy(maps[rows, map_classes.index(u)])  # (R, h, w)
        carried[rows, k] = region_carried(m_u, from_tail[rows], cfg.tau_h, cfg.tail_mask, cfg.region_grow)
    return carried


def _create(root: zarr.Group, n: int, latent: tuple, k: int, chunk: int) -> None:
    def array(name, shape, dtype):
        root.create_array(name, shape=(n, *shape), chunks=(chunk, *shape), dtype=dtype, compressors=COMPRESSOR)

    array("z", latent, "float32")
    array("labels", (k,), "uint8")
    array("tail_labels", (k,), "uint8")
    array("probs", (k,), "float32")
    for name in ("ids", *PROVENANCE):
        array(name, (), str)
    for name in SHARES:
        array(name, (), "float32")
    array("from_tail", latent[1:], "uint8")


def fuse_latents(
    pairs_csv: str | Path,
    latents_store: str | Path,
    cam_store: str | Path,
    il_path: str | Path,
    split: ClassSplit,
    store: str | Path,
    cfg: FusionConfig,
) -> pd.DataFrame:
    """Stage fuse: ``cfg.n_per_class`` fused latents per tail class into ``store``, atomically, on the CPU.

    Returns one row per fused sample (id, provenance, shares). Memory is O(chunk + batch).
    """
    il, latents, cams, ids = open_training_stores(latents_store, cam_store, il_path, split.classes)
    row_of = {sample_id: i for i, sample_id in enumerate(ids)}
    pairs = read_pairs(pairs_csv, split)
    for column in ("tail_id", "head_id"):
        unknown = sorted(set(pairs[column]) - set(row_of))
        if unknown:
            raise InputError(
                f"{pairs_csv}: {column} {', '.join(unknown[:5])} not in {latents_store}; rerun pair_neighbours."
            )
    todo = plan(pairs, split, cfg.n_per_class, str(pairs_csv))
    map_classes = list(cams.attrs.get("map_classes", []))
    classes = list(il.classes)
    if cfg.exclusive_class and cfg.exclusive_class not in classes:
        raise ConfigError(
            f"fusion.exclusive_class: {cfg.exclusive_class!r} is not among the classes ({', '.join(classes)}); "
            f"name the class that means no finding, or set it to \"\" if there is none."
        )
    exclusive = classes.index(cfg.exclusive_class) if cfg.exclusive_class else None
    policy = effective_policy(cfg.label_policy, cfg.tail_mask)
    n, chunk = len(todo), cfg.chunk_size
    latent_shape = tuple(latents["z"].shape[1:])
    student, decoder, classifier = il.model.student, il.model.decoder, il.model.classifier
    results = {name: np.zeros(n, dtype=np.float32) for name in SHARES}

    attrs = {k: latents.attrs.get(k) for k in ("classes", "model_path", "model_fingerprint", "scaling_factor",
                                                "shift_factor", "image_size")}  # fmt: skip
    attrs |= {"split": "fused", "head": list(split.head), "tail": list(split.tail), "config": asdict(cfg),
              "label_policy": policy,
              "il_model": str(il_path), "il_fingerprint": il_fingerprint(il_path)}  # fmt: skip
    with atomic_path(store) as tmp, torch.no_grad():
        root = zarr.open_group(tmp, mode="w", zarr_format=3)
        root.attrs.update(attrs)
        _create(root, n, latent_shape, len(classes), chunk)
        bar = tqdm(total=n, desc="fuse", unit="z", file=sys.stderr, mininterval=5.0)
        for a in range(0, n, chunk):
            part = todo.iloc[a : a + chunk]
            t_rows = part["tail_id"].map(row_of).to_numpy()
            h_rows = part["head_id"].map(row_of).to_numpy()
            needed = np.unique(np.concatenate([t_rows, h_rows]))  # each chunk of the inputs is read once
            where = np.searchsorted(needed, np.stack([t_rows, h_rows]))  # (2, n_part)
            z_in = latents["z"].oindex[needed]  # (U, C, h, w)
            maps_in = cams["maps"].oindex[needed]  # (U, h, w), or (U, M, h, w) class-specific
            y_in = latents["labels"].oindex[needed]  # (U, K)
            out = {name: [] for name in ("z", "labels", "tail_labels", "probs", "from_tail", *SHARES)}
            for b in range(0, len(part), cfg.batch_size):
                ti, hi = where[0, b : b + cfg.batch_size], where[1, b : b + cfg.batch_size]
                z_t, z_h = torch.from_numpy(z_in[ti]), torch.from_numpy(z_in[hi])  # (B, C, h, w)
                zs_t, zs_h = student(z_t), student(z_h)  # (B, C', h, w)
                rows = part.iloc[b : b + cfg.batch_size]
                m_t = torch.from_numpy(select_maps(maps_in[ti], map_classes, list(rows["tail_class"]), str(cam_store)))
                m_h = torch.from_numpy(select_maps(maps_in[hi], map_classes, list(rows["head_class"]), str(cam_store)))
                masks = [  # one coin stream per fused sample: independent of the batch size
                    config_masks(cfg, m_t[i : i + 1], m_h[i : i + 1], sample_generator(cfg.seed, int(r.t_index), int(r.j)))
                    for i, r in enumerate(rows.itertuples())
                ]  # fmt: skip
                masks = FusionMasks(*(torch.cat(m) for m in zip(*masks)))  # each (B, h, w)
                zs_f = combine(zs_t, zs_h, masks.from_tail)  # (B, C', h, w), Eq. 12
                if cfg.space == "latent":  # the control without the IL space: the same masks on the SD latents
                    z_f = combine(z_t, z_h, masks.from_tail)  # (B, C, h, w)
                else:
                    z_f = decode_fused(decoder, zs_f, masks.from_tail, cfg.decode, (z_t, z_h, zs_t, zs_h))  # Eq. 13
                probs = torch.sigmoid(classifier(zs_f)).numpy()  # (B, K)
                out["z"].append(z_f.numpy())
                out["probs"].append(probs)
                out["from_tail"].append(masks.from_tail.numpy().astype(np.uint8))  # (B, h, w)
                tail_column = np.array([classes.index(t) for t in rows["tail_class"]])  # (B,)
                out["tail_labels"].append(y_in[ti])
                carried = second_tail_carried(cfg, y_in[ti], maps_in[ti], map_classes, masks.from_tail, tail_column,
                                              classes, split.tail) if policy in ("union", "tail_only") else None  # fmt: skip
                out["labels"].append(fused_labels(policy, y_in[ti], y_in[hi], probs, cfg.label_threshold, tail_column,
                                                  exclusive, carried))  # fmt: skip
                for name, values in shares(masks).items():
                    out[name].append(values)
                bar.update(len(rows))
            sl = slice(a, a + len(part))
            for name, values in out.items():
                root[name][sl] = np.concatenate(values)
            root["ids"][sl] = part["id"].to_numpy(dtype=str)
            for name in PROVENANCE:
                root[name][sl] = part[name].to_numpy(dtype=str)
            for name in SHARES:
                results[name][sl] = np.concatenate(out[name])
        bar.close()
        root.attrs["complete"] = True  # last: a store without it was not finished
    summary = todo.drop(columns=["t_index", "j"]).assign(**results)
    return summary

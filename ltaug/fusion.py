"""Stage fuse: tail and head sparse vectors fused by their CAM masks, then decoded to latents.

Elberg, Parra, Petrache, *Long Tail Image Generation Through Feature Space Augmentation and
Iterated Learning* (arXiv 2405.01705), Sec. 3.3 and Fig. 2. A tail sample's sparse vector
z_t^s = S(z_t) and its head neighbour's z_h^s = S(z_h) (both (C', h, w), from pair_neighbours)
are fused position by position, guided by the tail sample's CAM map M_t (for its tail class
when the CAM is class-specific) and the head neighbour's map M_h (for its head class), both
(h, w) in [0, 1], from cam_maps. In the paper's numbering:

    M^S = 1[M_t > tau_h], M^G = 1[M_h < tau_l]         tail-specific, generic positions (Eq. 6)
    M^R ~ Bernoulli(1/2), one fair coin per position    1 = tail                        (Eq. 7)
    z_R   = M^R * z_t^s + (1 - M^R) * z_h^s             the random mix                  (Eq. 8)
    z~_R  = A * z_R, A = not (M^S xor M^G)              where both or neither hold      (Eq. 9)
    z~_t  = (M^S and not M^G) * z_t^s                   only tail-specific: tail        (Eq. 10)
    z~_h  = (M^G and not M^S) * z_h^s                   only generic: head              (Eq. 11)
    z_F^s = z~_t + z~_h + z~_R                          masks broadcast over C'         (Eq. 12)
    z_F   = D(z_F^s)                                                                    (Eq. 13)

``fusion.decode: residual`` adds back, at every position, the IL round-trip error of the source
that position was taken from: z_F = D(z_F^s) + F * (z_t - D(z_t^s)) + (1 - F) * (z_h - D(z_h^s)).
The decoder D is trained to reconstruct z from the sparse z^s, and what it cannot reproduce (a
thin line, a small calcification: the fidelity funnel's `il` row) is lost from every fused
sample under Eq. 13; the residual form keeps it, and equals Eq. 13 wherever D is exact.

The three masks of Eqs. 9-11 partition the positions, so Eq. 12 takes each position whole
from one vector: z_F^s = F * z_t^s + (1 - F) * z_h^s with F = (M^S and not M^G) or (A and M^R),
which is how :func:`fusion_masks` and :func:`combine` compute it.

This is the mask convention of ../shared/DESIGN.md: the paper's Eq. 6 is typeset loosely;
Fig. 1, Fig. 2 and the authors' code take tail-specific positions from the tail vector, generic
ones from the head vector and the rest at random. So a tail-specific position that is also
generic for the head neighbour (its head map low there, as it is wherever the head finding is
not) goes to the coin: thresholds decide how much of a tail finding survives, and the fidelity
funnel measures it (``tail_box_share``). Every position gets a coin, used or not, so
the coins of a fused sample do not change with tau_h and tau_l. The authors' code draws the
coin's bias uniformly per batch; here it is a fair coin, as DESIGN.md says.

The stage makes one fused sample per row of pairs.csv, ``fusion.n_per_class`` per tail class
(pair_neighbours draws a fresh neighbour for each); sample j of tail class t draws its coins
from a generator seeded by (fusion.seed, t, j), so the result does not depend on the batch size. Labels follow
``fusion.label_policy``: union (tail and head labels, the paper), tail_only (the tail sample's
labels) or classifier (classes whose probability C(z_F^s) exceeds label_threshold); each
keeps the tail class the sample was made for, and clears ``exclusive_class`` ("No Finding")
when another class is positive.

Store ``results/fused/<variant>/latents.zarr`` (Zarr v3, chunked along axis 0), readable with
:func:`ltaug.latents.open_latents`:
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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
import zarr
from tqdm import tqdm

from ltaug.cam import il_fingerprint, open_training_stores, select_maps
from ltaug.config import config_section
from ltaug.data import ClassSplit
from ltaug.errors import ConfigError, InputError
from ltaug.io import atomic_path
from ltaug.shards import COMPRESSOR

LABEL_POLICIES = ("union", "tail_only", "classifier")
DECODES = ("d", "residual")
TAIL_MASKS = ("cells", "region")
OVERLAPS = ("coin", "tail")
PAIR_COLUMNS = ["j", "tail_id", "tail_class", "head_class", "head_id", "distance"]
PROVENANCE = ("tail_id", "head_id", "tail_class", "head_class")
SHARES = ("tail_share", "head_share", "coin_share")


@config_section("fusion")
@dataclass(frozen=True)
class FusionConfig:
    n_per_class: int = 100  # fused samples per tail class (one pair of pairs.csv each)
    tau_h: float = 0.5  # tail-specific positions: tail map > tau_h (M^S, Eq. 6)
    tau_l: float = 0.5  # generic positions: head map < tau_l (M^G, Eq. 6)
    label_policy: str = "union"  # union (tail and head labels, the paper) | tail_only | classifier
    label_threshold: float = 0.5  # classifier policy: classes with sigmoid(C(z_F^s)) above this (plus the tail class)
    exclusive_class: str = "No Finding"  # a class meaning "no other finding": cleared when a fused label has another class; "" = none
    decode: str = "d"  # d: z_F = D(z_F^s) (Eq. 13) | residual: plus each source's z - D(S(z)) where F took it
    tail_mask: str = "cells"  # cells: M^S = tail map > tau_h (Eq. 6) | region: those cells' connected region around the map's peak, grown
    region_grow: int = 1  # region: cells the region is grown by on every side (binary dilation)
    overlap: str = "coin"  # positions in both or neither mask: coin (the paper's convention) | tail: M^S always from the tail, neither by coin
    mask_source: str = "cam"  # cam: F from the CAM masks | random: F's positions shuffled per sample (the same count; an ablation)
    space: str = "sparse"  # sparse: fuse z^s = S(z) and decode (the paper) | latent: z_F = F z_t + (1 - F) z_h on the SD latents (no IL)
    seed: int = 0  # seed of the per-position coins M^R (one stream per fused sample)
    batch_size: int = 64  # fused samples per student/decoder pass
    chunk_size: int = 256  # samples per Zarr chunk along axis 0


# ---------------------------------------------------------------------------- the fusion (pure)


class FusionMasks(NamedTuple):
    specific: torch.Tensor  # M^S (B, h, w) bool: tail map > tau_h
    generic: torch.Tensor  # M^G (B, h, w) bool: head map < tau_l
    coin: torch.Tensor  # M^R (B, h, w) bool: a fair coin per position, True = tail
    from_tail: torch.Tensor  # F (B, h, w) bool: positions the fused vector takes from the tail vector
    by_coin: torch.Tensor  # (B, h, w) bool: positions the coin decided (both masks or neither; neither alone with overlap tail)


def specific_mask(m_tail: torch.Tensor, tau_h: float, how: str = "cells", grow: int = 1) -> torch.Tensor:
    """M^S (B, h, w) bool from (B, h, w) tail maps: cells, map > tau_h (Eq. 6); region, the 8-connected region of those
    cells that holds the map's maximum (the finding, not scattered cells elsewhere), grown by ``grow`` cells on every
    side. A map whose maximum is not above tau_h gives an empty mask either way."""
    cells = m_tail > tau_h  # (B, h, w)
    if how == "cells":
        return cells
    if how != "region":
        raise ValueError(f"tail mask {how!r} is not one of {TAIL_MASKS}")
    from scipy import ndimage

    out = torch.zeros_like(cells)
    eight = np.ones((3, 3), dtype=bool)
    for b, (mask, m) in enumerate(zip(cells.cpu().numpy(), m_tail.cpu().numpy())):
        peak = np.unravel_index(int(np.argmax(m)), m.shape)
        if not mask[peak]:
            continue
        labels, _ = ndimage.label(mask, structure=eight)
        region = labels == labels[peak]
        if grow:
            region = ndimage.binary_dilation(region, structure=eight, iterations=grow)
        out[b] = torch.from_numpy(region)
    return out


def fusion_masks(
    m_tail: torch.Tensor, m_head: torch.Tensor, tau_h: float, tau_l: float, generator: torch.Generator,
    tail_mask: str = "cells", grow: int = 1, overlap: str = "coin", shuffle: bool = False,
) -> FusionMasks:  # fmt: skip
    """Eqs. 6-11 for (B, h, w) maps: which positions of the fused vector come from the tail vector.

    Mask convention (DESIGN.md): the paper's Eq. 6 is typeset loosely; Fig. 1, Fig. 2 and the
    authors' code take tail-specific positions from the tail vector, generic ones from the head
    vector, and positions where both or neither hold by a fair coin (M^R): M^S = 1[M_tail >
    tau_h] from the tail sample's map (or, with ``tail_mask="region"``, the connected region of
    those cells around the map's peak, grown by ``grow``), M^G = 1[M_head < tau_l] from the head
    neighbour's map. ``overlap="tail"`` (not the paper's) takes every position of M^S from the
    tail even where M^G holds too, generic positions from the head and the rest by the coin.
    The coins are drawn for all B x h x w positions from ``generator`` (on its device), used or
    not; ``shuffle`` (the random-mask ablation) then permutes each sample's F over the positions
    with the same generator, keeping how many come from the tail.
    """
    if m_tail.shape != m_head.shape or m_tail.dim() != 3:
        raise ValueError(f"maps must both be (B, h, w), got {tuple(m_tail.shape)} and {tuple(m_head.shape)}")
    specific = specific_mask(m_tail, tau_h, tail_mask, grow)  # M^S (B, h, w), Eq. 6
    generic = m_head < tau_l  # M^G (B, h, w), Eq. 6
    coin = torch.rand(m_tail.shape, generator=generator, device=generator.device).to(m_tail.device) < 0.5  # M^R, Eq. 7
    if overlap == "coin":
        ambiguous = ~(specific ^ generic)  # both or neither: z~_R takes the random mix z_R there, Eqs. 8-9
        only_tail = specific & ~generic  # z~_t, Eq. 10 (only-generic positions are z~_h, Eq. 11)
        from_tail = only_tail | (ambiguous & coin)  # the positions Eq. 12 takes from z_t^s
        by_coin = ambiguous
    elif overlap == "tail":
        by_coin = ~specific & ~generic
        from_tail = specific | (by_coin & coin)  # M^S wins; neither mask: the coin
    else:
        raise ValueError(f"overlap {overlap!r} is not one of {OVERLAPS}")
    if shuffle:
        b = len(from_tail)
        order = torch.stack([torch.randperm(from_tail[0].numel(), generator=generator, device=generator.device)
                             for _ in range(b)]).to(from_tail.device)  # fmt: skip
        from_tail = torch.gather(from_tail.flatten(1), 1, order).view_as(from_tail)
    return FusionMasks(specific, generic, coin, from_tail, by_coin)


def config_masks(cfg: FusionConfig, m_tail: torch.Tensor, m_head: torch.Tensor, generator: torch.Generator) -> FusionMasks:
    """:func:`fusion_masks` with every mask setting of ``cfg``."""
    return fusion_masks(m_tail, m_head, cfg.tau_h, cfg.tau_l, generator, cfg.tail_mask, cfg.region_grow, cfg.overlap,
                        cfg.mask_source == "random")  # fmt: skip


def combine(zs_tail: torch.Tensor, zs_head: torch.Tensor, from_tail: torch.Tensor) -> torch.Tensor:
    """Eq. 12: z_F^s (B, C', h, w) from z_t^s, z_h^s (B, C', h, w) and the (B, h, w) mask F broadcast over C'
    (z~_t + z~_h + z~_R, whose masks partition the positions)."""
    if zs_tail.shape != zs_head.shape or from_tail.shape != (zs_tail.shape[0], *zs_tail.shape[2:]):
        raise ValueError(
            f"sparse vectors {tuple(zs_tail.shape)}, {tuple(zs_head.shape)} and mask {tuple(from_tail.shape)} "
            f"must be (B, C', h, w), (B, C', h, w) and (B, h, w)"
        )
    return torch.where(from_tail[:, None], zs_tail, zs_head)  # (B, C', h, w), Eq. 12


def decode_fused(
    decoder, zs_f: torch.Tensor, from_tail: torch.Tensor, how: str = "d",
    sources: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:  # fmt: skip
    """z_F (B, C, h, w) from z_F^s: D(z_F^s) (Eq. 13), or with ``how="residual"`` and ``sources`` =
    (z_t, z_h, z_t^s, z_h^s), D(z_F^s) + F * (z_t - D(z_t^s)) + (1 - F) * (z_h - D(z_h^s)), F the
    (B, h, w) mask of positions taken from the tail, broadcast over the latent channels."""
    z_f = decoder(zs_f)
    if how == "d":
        return z_f
    if how != "residual" or sources is None:
        raise ValueError(f"decode {how!r} needs one of {DECODES}, and the sources for residual")
    z_t, z_h, zs_t, zs_h = sources
    return z_f + torch.where(from_tail[:, None], z_t - decoder(zs_t), z_h - decoder(zs_h))


def fuse(
    zs_tail: torch.Tensor,
    zs_head: torch.Tensor,
    m_tail: torch.Tensor,
    m_head: torch.Tensor,
    tau_h: float,
    tau_l: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """Eqs. 6-12: the fused sparse vector z_F^s (B, C', h, w); inputs are left unmodified."""
    return combine(zs_tail, zs_head, fusion_masks(m_tail, m_head, tau_h, tau_l, generator).from_tail)


def shares(masks: FusionMasks) -> dict[str, np.ndarray]:
    """Per sample: share of positions from the tail vector, from the head vector, and decided by the coin."""
    tail = masks.from_tail.flatten(1).float().mean(1)  # (B,)
    coin = masks.by_coin.flatten(1).float().mean(1)  # (B,)
    return {"tail_share": tail.numpy(), "head_share": (1 - tail).numpy(), "coin_share": coin.numpy()}


def fused_labels(
    policy: str,
    y_tail: np.ndarray,
    y_head: np.ndarray,
    probs: np.ndarray,
    threshold: float,
    tail_column: np.ndarray,
    exclusive_column: int | None = None,
) -> np.ndarray:
    """(B, K) uint8 labels of fused samples under ``policy`` from (B, K) tail and head labels, (B, K)
    probabilities C(z_F^s) and the (B,) column of the tail class each sample was made for.

    union: tail or head label (the paper); tail_only: the tail sample's labels; classifier: the
    classes whose probability exceeds ``threshold``. Every policy keeps the tail class a sample
    was made for, so each synthetic sample counts for its class. ``exclusive_column`` is a class
    that excludes every other (CXR-LT's "No Finding"): a head neighbour without findings gives
    the union that label, which the fused sample, positive for its tail class, cannot carry.
    """
    if policy == "union":
        labels = np.maximum(y_tail, y_head)
    elif policy == "tail_only":
        labels = y_tail.copy()
    elif policy == "classifier":
        labels = (probs > threshold).astype(np.uint8)
    else:
        raise ValueError(f"label policy {policy!r} is not one of {LABEL_POLICIES}")
    labels[np.arange(len(labels)), tail_column] = 1
    if exclusive_column is not None:
        others = np.delete(labels, exclusive_column, axis=1).any(axis=1)  # (B,)
        labels[others, exclusive_column] = 0
    return labels.astype(np.uint8)


def sample_generator(seed: int, tail_index: int, j: int, device: torch.device | str = "cpu") -> torch.Generator:
    """The coin generator of fused sample j of the tail class with index ``tail_index`` in classes.json's tail."""
    state = np.random.SeedSequence([seed, tail_index, j]).generate_state(2, dtype=np.uint32)
    return torch.Generator(device=device).manual_seed(int(state[0]) << 32 | int(state[1]))


def slug(name: str) -> str:
    """A class name as a file-name part: runs of characters other than letters and digits become '_'."""
    return re.sub(r"[^0-9A-Za-z]+", "_", name).strip("_")


# ---------------------------------------------------------------------------- the stage


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
    n, chunk = len(todo), cfg.chunk_size
    latent_shape = tuple(latents["z"].shape[1:])
    student, decoder, classifier = il.model.student, il.model.decoder, il.model.classifier
    results = {name: np.zeros(n, dtype=np.float32) for name in SHARES}

    attrs = {k: latents.attrs.get(k) for k in ("classes", "model_path", "model_fingerprint", "scaling_factor",
                                                "shift_factor", "image_size")}  # fmt: skip
    attrs |= {"split": "fused", "head": list(split.head), "tail": list(split.tail), "config": asdict(cfg),
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
                out["labels"].append(fused_labels(cfg.label_policy, y_in[ti], y_in[hi], probs, cfg.label_threshold,
                                                  tail_column, exclusive))  # fmt: skip
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

"""Feature fusion, the equations of stage fuse: tail and head sparse vectors fused by their CAM masks, then decoded.

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
from a generator seeded by (fusion.seed, stream("fuse.coins"), t, j), so the result does not depend on the
batch size. Labels follow ``fusion.label_policy``: union (tail and head labels, the paper, for its whole-image
masks), neighbour (the head neighbour's labels and the tail class: what a region pasted into the neighbour shows),
tail_only (the tail sample's labels) or classifier (classes whose probability C(z_F^s) exceeds label_threshold);
auto, the default, is neighbour for a region mask and union for cells. Each keeps the tail class the sample was made
for, claims a second tail class of the tail image only where the sample carries its region (class-specific maps),
and clears ``exclusive_class`` ("No Finding") when another class is positive.

The stage itself, and the store it writes, are :mod:`ltaug.method.fused_store`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from ltaug.common.config import config_section
from ltaug.common.variants import LABEL_POLICIES

DECODES = ("d", "residual")
TAIL_MASKS = ("cells", "region")
OVERLAPS = ("coin", "tail")


@config_section("fusion")
@dataclass(frozen=True)
class FusionConfig:
    n_per_class: int = 100  # fused samples per tail class (one pair of pairs.csv each)
    tau_h: float = 0.5  # tail-specific positions: tail map > tau_h (M^S, Eq. 6)
    tau_l: float = 0.5  # generic positions: head map < tau_l (M^G, Eq. 6)
    label_policy: str = "auto"  # auto (neighbour for a region mask, union for cells) | union (the paper) | neighbour | tail_only | classifier
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


def region_carried(m_class: torch.Tensor, from_tail: torch.Tensor, tau_h: float, tail_mask: str = "cells",
                   grow: int = 1) -> np.ndarray:  # fmt: skip
    """(B,) bool: whether each fused sample carries the tail image's finding whose (B, h, w) map is ``m_class``: at
    least half of that finding's M^S (as :func:`specific_mask` builds it) lies in F, the positions taken from the
    tail. An empty M^S (the map never above tau_h) is not carried."""
    region = specific_mask(m_class, tau_h, tail_mask, grow)  # (B, h, w)
    size = region.flatten(1).sum(1)
    kept = (region & from_tail.bool()).flatten(1).sum(1)
    return ((size > 0) & (2 * kept >= size)).cpu().numpy()


def fused_labels(
    policy: str,
    y_tail: np.ndarray,
    y_head: np.ndarray,
    probs: np.ndarray,
    threshold: float,
    tail_column: np.ndarray,
    exclusive_column: int | None = None,
    carried: np.ndarray | None = None,
) -> np.ndarray:
    """(B, K) uint8 labels of fused samples under ``policy`` from (B, K) tail and head labels, (B, K)
    probabilities C(z_F^s) and the (B,) column of the tail class each sample was made for.

    union: tail or head label (the paper, for its whole-image masks); neighbour: the head neighbour's labels (the
    image outside the pasted region is the neighbour's) and the tail class; tail_only: the tail sample's labels;
    classifier: the classes whose probability exceeds ``threshold``. Every policy keeps the tail class a sample
    was made for, so each synthetic sample counts for its class. ``carried`` (B, K) bool, where known, says which
    of the tail image's classes the sample carries (:func:`region_carried`): union and tail_only claim a class of
    the tail image only where it is carried (a second tail finding left in the tail image is not the sample's).
    ``exclusive_column`` is a class that excludes every other (CXR-LT's "No Finding"): a head neighbour without
    findings gives that label, which the fused sample, positive for its tail class, cannot carry.
    """
    y_from_tail = y_tail if carried is None else y_tail * np.asarray(carried, dtype=y_tail.dtype)
    if policy == "union":
        labels = np.maximum(y_from_tail, y_head)
    elif policy == "neighbour":
        labels = y_head.copy()
    elif policy == "tail_only":
        labels = y_from_tail.copy()
    elif policy == "classifier":
        labels = (probs > threshold).astype(np.uint8)
    else:
        raise ValueError(f"label policy {policy!r} is not one of {LABEL_POLICIES}")
    labels[np.arange(len(labels)), tail_column] = 1
    if exclusive_column is not None:
        others = np.delete(labels, exclusive_column, axis=1).any(axis=1)  # (B,)
        labels[others, exclusive_column] = 0
    return labels.astype(np.uint8)


# ---------------------------------------------------------------------------- the stage



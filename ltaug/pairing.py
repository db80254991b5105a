"""Stage pair_neighbours: for every tail sample, a head neighbour from the class C confuses it with most.

Elberg, Parra, Petrache, *Long Tail Image Generation Through Feature Space Augmentation and
Iterated Learning* (arXiv 2405.01705), Sec. 3.3: each training sample of a tail class t is
paired with a training sample of the head class of highest confusion, the argmax over head
classes of the IL classifier's predicted probability for that sample (ties go to the first
head class in classes.json order). The neighbour is drawn uniformly, with a seeded generator,
among the k nearest training samples of that head class (scikit-learn NearestNeighbors,
Euclidean distance), measured between the flattened sparse vectors z^s = S(z) (``space:
sparse``, the default) or between the flattened EigenCAM maps (``space: cam``, as the
authors' code does). Head candidates exclude samples that carry the tail class t itself.

Output ``results/pairs/pairs.csv``: one row per (tail class, tail sample), tail classes in
classes.json order and samples in latent-store order, columns tail_id, tail_class,
head_class, head_id, distance, head_probability (the confusion: C's probability of
head_class for the tail sample).

Memory: the features of all training samples are held at once (N x C'hw floats for ``sparse``,
N x hw for ``cam``); use ``space: cam`` where N x C'hw does not fit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.neighbors import NearestNeighbors

from ltaug.cam import open_training_stores
from ltaug.data import ClassSplit
from ltaug.errors import ConfigError, InputError
from ltaug.io import atomic_path
from ltaug.models import Student

SPACES = ("sparse", "cam")
COLUMNS = ["tail_id", "tail_class", "head_class", "head_id", "distance", "head_probability"]


@dataclass(frozen=True)
class PairingConfig:
    space: str = "sparse"  # neighbour distance between flattened sparse vectors z^s (sparse) or EigenCAM maps (cam)
    k: int = 5  # the neighbour is drawn among this many nearest training samples of the head class
    seed: int = 0  # seed of the neighbour draws
    batch_size: int = 64  # latents per student pass when computing z^s

    def __post_init__(self) -> None:
        if self.space not in SPACES:
            raise ConfigError(f"pairing.space: {self.space!r} is not one of {', '.join(SPACES)}.")
        for key, low in (("k", 1), ("batch_size", 1), ("seed", 0)):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"pairing.{key}: {value!r} is not an integer >= {low}.")


def confused_head(probs: np.ndarray, head_columns: np.ndarray) -> np.ndarray:
    """(N, K) probabilities -> (N,) column of the most probable head class; ties go to the first in ``head_columns``."""
    return head_columns[np.argmax(probs[:, head_columns], axis=1)]  # np.argmax returns the first maximum


def draw_neighbours(
    queries: np.ndarray, candidates: np.ndarray, k: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """For each of (Q, D) queries, one of its k nearest (M, D) candidates, drawn uniformly.

    Returns the candidate index (Q,) and the Euclidean distance (Q,) of each draw.
    """
    search = NearestNeighbors(n_neighbors=min(k, len(candidates)), metric="euclidean").fit(candidates)
    distance, index = search.kneighbors(queries)  # (Q, k), nearest first
    pick = rng.integers(0, index.shape[1], size=len(queries))  # (Q,)
    rows = np.arange(len(queries))
    return index[rows, pick], distance[rows, pick]


def pair_samples(
    ids: np.ndarray,
    labels: np.ndarray,
    probs: np.ndarray,
    features: np.ndarray,
    split: ClassSplit,
    k: int,
    seed: int,
    source: str = "the training latents",
) -> pd.DataFrame:
    """The pairs of every tail sample: (N,) ids, (N, K) 0/1 labels, (N, K) probabilities, (N, D) features.

    Deterministic for a seed: tail classes in ``split.tail`` order, head classes in
    ``split.head`` order, one draw per tail sample from a generator seeded with ``seed``.
    """
    classes = list(split.classes)
    labels = np.asarray(labels).astype(bool)  # (N, K)
    if not split.head:
        raise InputError(f"{source}: classes.json lists no head class; pairing needs at least one (long_tail.*).")
    head_columns = np.array([classes.index(h) for h in split.head])
    rng = np.random.default_rng(seed)
    frames = []
    for t in split.tail:
        t_col = classes.index(t)
        rows = np.flatnonzero(labels[:, t_col])  # the tail samples of t, store order
        if len(rows) == 0:
            raise InputError(
                f"{source}: tail class {t!r} has no training sample, so nothing can be fused for it; remove it from "
                f"long_tail.tail_classes or lower long_tail.tail_max_prevalence, or add samples of it."
            )
        head_col = confused_head(probs[rows], head_columns)  # (n_t,)
        head_row, distance = np.zeros(len(rows), dtype=np.int64), np.zeros(len(rows))
        for h_col in head_columns:  # head classes in classes.json order: a fixed order of draws
            chosen = head_col == h_col
            if not chosen.any():
                continue
            candidates = np.flatnonzero(labels[:, h_col] & ~labels[:, t_col])  # head samples without the tail class
            if len(candidates) == 0:
                raise InputError(
                    f"{source}: head class {classes[h_col]!r} has no training sample without tail class {t!r}, but "
                    f"it is the class of highest confusion for {int(chosen.sum())} sample(s) of {t!r}; check the "
                    f"labels, or list the head classes explicitly in long_tail.head_classes."
                )
            pick, dist = draw_neighbours(features[rows[chosen]], features[candidates], k, rng)
            head_row[chosen], distance[chosen] = candidates[pick], dist
        frames.append(pd.DataFrame({
            "tail_id": ids[rows], "tail_class": t, "head_class": [classes[c] for c in head_col],
            "head_id": ids[head_row], "distance": distance, "head_probability": probs[rows, head_col],
        }))  # fmt: skip
    return pd.concat(frames, ignore_index=True)[COLUMNS]


@torch.no_grad()
def sparse_features(student: Student, z, batch_size: int) -> np.ndarray:
    """(N, C'*h*w) float32 flattened z^s = S(z) of a (N, C, h, w) Zarr array, computed batch by batch."""
    n = z.shape[0]
    out = None
    for a in range(0, n, batch_size):
        zs = student(torch.from_numpy(z[a : a + batch_size])).flatten(1).numpy()  # (B, C'hw)
        if out is None:
            out = np.empty((n, zs.shape[1]), dtype=np.float32)
        out[a : a + len(zs)] = zs
    return out


def pair_neighbours(
    latents_store: str | Path,
    cam_store: str | Path,
    il_path: str | Path,
    split: ClassSplit,
    out_csv: str | Path,
    cfg: PairingConfig,
) -> pd.DataFrame:
    """Stage pair_neighbours on the CPU: pairs.csv from the training latents, their CAM store and the IL model."""
    il, latents, cams, ids = open_training_stores(latents_store, cam_store, il_path, split.classes)
    labels = latents["labels"][:].astype(bool)  # (N, K)
    probs = cams["probs"][:]  # (N, K)
    if cfg.space == "sparse":
        features = sparse_features(il.model.student, latents["z"], cfg.batch_size)  # (N, C'hw)
    else:
        features = cams["maps"][:].reshape(len(ids), -1)  # (N, hw)
    pairs = pair_samples(ids, labels, probs, features, split, cfg.k, cfg.seed, source=str(latents_store))
    with atomic_path(out_csv) as tmp:
        pairs.to_csv(tmp, index=False)
    return pairs

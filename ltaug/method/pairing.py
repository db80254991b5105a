"""Stage pair_neighbours: for every tail sample, a head neighbour from the class C confuses it with most.

Elberg, Parra, Petrache, *Long Tail Image Generation Through Feature Space Augmentation and
Iterated Learning* (arXiv 2405.01705), Sec. 3.3: each training sample of a tail class t is
paired with a training sample of the head class of highest confusion, the argmax over head
classes of the IL classifier's predicted probability for that sample (ties go to the first
head class in classes.json order). The neighbour is drawn uniformly, with a seeded generator,
among the k nearest training samples of that head class (scikit-learn NearestNeighbors,
Euclidean distance), measured between the flattened sparse vectors z^s = S(z) (``space:
sparse``, the default) or between the flattened CAM maps (``space: cam``, as the authors'
code does; with a class-specific CAM, the tail sample's map for t against the candidates'
maps for the head class).

One row per synthetic sample: sample j of tail class t (j = 0 .. n_per_class - 1) pairs a tail
sample with a **fresh draw** among its k nearest, as the authors' code draws a new neighbour per
synthetic sample; a tail class with 30 images and 100 samples thus gets up to 100 different
pairs, not 30 pairs cycled. Which tail sample is a seeded draw over the whole class
(:func:`tail_draw`): every one of its n_t samples in a random order, cycled, when n_t <=
n_per_class; n_per_class distinct ones drawn at random when it has more, so neither store order
nor the class's size decides which images are used. Head candidates never
carry t itself and, with ``exclude_tail`` (default), no tail class at all: a neighbour with
another tail finding would put that finding into the fused sample and its label into the
union.

Output ``results/pairs/<variant>/pairs.csv``: tail classes in classes.json order, j in order, columns
j, tail_id, tail_class, head_class, head_id, distance, head_probability (the confusion: C's
probability of head_class for the tail sample).

The search is exact and streams: the queries are the tail samples that synthetic samples use
(at most n_per_class per class, however many the class has), and the candidates of every head class that some query is confused with
are read ``chunk_size`` rows at a time (z^s computed for those rows only, or their maps read),
each chunk updating a running k-best list per query (ties go to the earlier row). Memory is
O(chunk_size x C'hw + tail classes x n_per_class x C'hw) whatever the size of the training
split, and the pairs equal those of an in-memory search for any chunk size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.neighbors import NearestNeighbors

from ltaug.common.config import config_section
from ltaug.common.errors import InputError
from ltaug.common.io import atomic_path
from ltaug.common.seeds import rng as seeded, stream
from ltaug.data.classes import ClassSplit
from ltaug.method.cam import open_training_stores, select_maps
from ltaug.method.networks import Student

COLUMNS = ["j", "tail_id", "tail_class", "head_class", "head_id", "distance", "head_probability"]


@config_section("pairing")
@dataclass(frozen=True)
class PairingConfig:
    space: str = "sparse"  # neighbour distance between flattened sparse vectors z^s (sparse) or CAM maps (cam)
    k: int = 5  # the neighbour is drawn among this many nearest training samples of the head class
    seed: int = 0  # seed of the neighbour draws
    batch_size: int = 64  # latents per student pass when computing z^s
    exclude_tail: bool = True  # head candidates carry no tail class (else only not the sample's own)
    chunk_size: int = 128  # head candidates compared at once; memory O(chunk_size x C'hw)


def confused_head(probs: np.ndarray, head_columns: np.ndarray) -> np.ndarray:
    """(N, K) probabilities -> (N,) column of the most probable head class; ties go to the first in ``head_columns``."""
    return head_columns[np.argmax(probs[:, head_columns], axis=1)]  # np.argmax returns the first maximum


def nearest(queries: np.ndarray, candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(Q, k') indices and Euclidean distances of the k' = min(k, M) nearest of (M, D) candidates, nearest first
    (scikit-learn, in memory: memorisation's nearest training image, and the reference the streaming search of
    :func:`pair_samples` is tested against)."""
    search = NearestNeighbors(n_neighbors=min(k, len(candidates)), metric="euclidean").fit(candidates)
    distance, index = search.kneighbors(queries)  # (Q, k')
    return index, distance


class RunningNearest:
    """The k nearest candidates of fixed queries, updated one chunk of candidates at a time.

    Candidates must arrive in increasing row order; a tie in distance goes to the earlier row,
    so the result is the same for any chunking.
    """

    def __init__(self, queries: np.ndarray, k: int):
        self.queries = np.asarray(queries, dtype=np.float64)
        self.norms = (self.queries**2).sum(axis=1)
        self.k = k
        self.distance = np.full((len(queries), 0), np.inf)
        self.row = np.full((len(queries), 0), -1, dtype=np.int64)

    def update(self, features: np.ndarray, rows: np.ndarray) -> None:
        """Offer (m, D) candidate ``features`` of global ``rows`` (increasing, after every row offered before)."""
        if len(rows) == 0:
            return
        c = np.asarray(features, dtype=np.float64)
        d2 = self.norms[:, None] + (c**2).sum(axis=1)[None, :] - 2 * self.queries @ c.T
        distance = np.concatenate([self.distance, np.sqrt(np.clip(d2, 0, None))], axis=1)
        row = np.concatenate([self.row, np.broadcast_to(rows, (len(self.queries), len(rows)))], axis=1)
        keep = np.argsort(distance, axis=1, kind="stable")[:, : self.k]  # stable: earlier rows win ties
        self.distance = np.take_along_axis(distance, keep, axis=1)
        self.row = np.take_along_axis(row, keep, axis=1)


def tail_draw(n_t: int, n_per_class: int, seed: int, t_index: int) -> np.ndarray:
    """(n_per_class,) indices into a tail class's n_t samples, the tail sample of each synthetic sample j.

    n_t <= n_per_class: every sample, in a seeded random order, cycled (each used floor(n / n_t) or one more
    times); n_t > n_per_class: n_per_class distinct samples drawn without replacement. The stream is seeded
    by (seed, stream("pairing.tail"), t_index), apart from the neighbour draws."""
    rng = seeded(seed, stream("pairing.tail"), t_index)
    if n_t >= n_per_class:
        return rng.choice(n_t, n_per_class, replace=False)
    return rng.permutation(n_t)[np.arange(n_per_class) % n_t]


def used_with(head_col: np.ndarray, h_col: int, sample: np.ndarray) -> np.ndarray:
    """Sorted indices of a tail class's samples that synthetic samples use (``sample``, from :func:`tail_draw`)
    and whose confused head column is ``h_col``: the queries of that head class's search."""
    used = np.unique(sample)
    return used[head_col[used] == h_col]


def pair_samples(
    ids: np.ndarray,
    labels: np.ndarray,
    probs: np.ndarray,
    features: Callable[[np.ndarray, str], np.ndarray],
    split: ClassSplit,
    k: int,
    seed: int,
    n_per_class: int,
    exclude_tail: bool = True,
    source: str = "the training latents",
    chunk_size: int = 128,
) -> pd.DataFrame:
    """``n_per_class`` pairs per tail class from (N,) ids, (N, K) 0/1 labels, (N, K) probabilities and
    ``features(rows, class_name)``: the (len(rows), D) features of those (increasing) rows as seen for that class.

    Every head class's candidates are streamed once, ``chunk_size`` rows at a time, for the
    tail samples of every tail class confused with it. Deterministic for a seed: tail classes in
    ``split.tail`` order, then head classes in ``split.head`` order, then j in order, one draw per
    synthetic sample from one generator.
    """
    classes = list(split.classes)
    labels = np.asarray(labels).astype(bool)  # (N, K)
    if not split.head:
        raise InputError(f"{source}: classes.json lists no head class; pairing needs at least one (long_tail.*).")
    head_columns = np.array([classes.index(h) for h in split.head])
    any_tail = labels[:, [classes.index(t) for t in split.tail]].any(axis=1)
    plan = {}  # tail class -> (its rows, the confused head column of each, the tail sample of each synthetic sample)
    for t_index, t in enumerate(split.tail):
        t_col = classes.index(t)
        rows = np.flatnonzero(labels[:, t_col])  # the tail samples of t, store order
        if len(rows) == 0:
            raise InputError(
                f"{source}: tail class {t!r} has no training sample, so nothing can be fused for it; remove it from "
                f"long_tail.tail_classes or lower long_tail.tail_max_prevalence, or add samples of it."
            )
        head_col = confused_head(probs[rows], head_columns)  # (n_t,)
        sample = tail_draw(len(rows), n_per_class, seed, t_index)  # (n_per_class,) tail sample of each j
        for h_col in head_columns:
            chosen = len(used_with(head_col, h_col, sample))  # only the tail samples synthetic samples use
            if chosen and not (labels[:, h_col] & ~(any_tail if exclude_tail else labels[:, t_col])).any():
                raise InputError(
                    f"{source}: head class {classes[h_col]!r} has no training sample without "
                    f"{'a tail class' if exclude_tail else repr(t)}, but it is the class of highest confusion for "
                    f"{chosen} sample(s) of {t!r}; check the labels, set pairing.exclude_tail: false, or list the "
                    f"head classes explicitly in long_tail.head_classes."
                )
        plan[t] = (rows, head_col, sample)
    searches = {}  # (tail class, head column) -> the k nearest of the used tail samples confused with that class
    for h_col in head_columns:
        waiting = {t: used_with(head_col, h_col, sample) for t, (_, head_col, sample) in plan.items()}
        waiting = {t: chosen for t, chosen in waiting.items() if len(chosen)}
        for t, chosen in waiting.items():
            searches[t, h_col] = RunningNearest(features(plan[t][0][chosen], t), k)
        if not waiting:
            continue
        candidates = np.flatnonzero(labels[:, h_col] & ~any_tail) if exclude_tail else np.flatnonzero(labels[:, h_col])
        for a in range(0, len(candidates), chunk_size):
            rows = candidates[a : a + chunk_size]
            chunk = features(rows, classes[h_col])  # (m, D): read once for every tail class
            for t in waiting:
                allowed = ~labels[rows, classes.index(t)]  # never a sample of t itself
                searches[t, h_col].update(chunk[allowed], rows[allowed])
    rng = seeded(seed, stream("pairing.neighbours"))
    frames = []
    for t, (rows, head_col, sample) in plan.items():
        head_row, distance = np.zeros(n_per_class, dtype=np.int64), np.zeros(n_per_class)
        for h_col in head_columns:  # head classes in classes.json order: a fixed order of draws
            chosen = used_with(head_col, h_col, sample)  # used tail samples confused with this head class
            if len(chosen) == 0:
                continue
            found = searches[t, h_col]
            js = np.flatnonzero(np.isin(sample, chosen))  # synthetic samples of these tail samples, in order
            where = np.searchsorted(chosen, sample[js])
            pick = rng.integers(0, found.row.shape[1], size=len(js))  # a fresh draw per synthetic sample
            head_row[js], distance[js] = found.row[where, pick], found.distance[where, pick]
        frames.append(pd.DataFrame({
            "j": np.arange(n_per_class), "tail_id": ids[rows[sample]], "tail_class": t,
            "head_class": [classes[c] for c in head_col[sample]], "head_id": ids[head_row], "distance": distance,
            "head_probability": probs[rows[sample], head_col[sample]],
        }))  # fmt: skip
    return pd.concat(frames, ignore_index=True)[COLUMNS]


@torch.no_grad()
def sparse_features(student: Student, z, rows: np.ndarray, batch_size: int) -> np.ndarray:
    """(len(rows), C'*h*w) float32 flattened z^s = S(z) of the given (increasing) rows of a (N, C, h, w) Zarr
    array, batch by batch."""
    out = [student(torch.from_numpy(z.oindex[rows[a : a + batch_size]])).flatten(1).numpy()
           for a in range(0, len(rows), batch_size)]  # fmt: skip
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def pair_neighbours(
    latents_store: str | Path,
    cam_store: str | Path,
    il_path: str | Path,
    split: ClassSplit,
    out_csv: str | Path,
    cfg: PairingConfig,
    n_per_class: int,
) -> pd.DataFrame:
    """Stage pair_neighbours on the CPU: pairs.csv (``n_per_class`` rows per tail class) from the
    training latents, their CAM store and the IL model."""
    il, latents, cams, ids = open_training_stores(latents_store, cam_store, il_path, split.classes)
    labels = latents["labels"][:].astype(bool)  # (N, K)
    probs = cams["probs"][:]  # (N, K)
    if cfg.space == "sparse":

        def features(rows: np.ndarray, name: str) -> np.ndarray:
            return sparse_features(il.model.student, latents["z"], rows, cfg.batch_size)
    else:
        map_classes = list(cams.attrs.get("map_classes", []))

        def features(rows: np.ndarray, name: str) -> np.ndarray:
            maps = cams["maps"].oindex[rows]  # (n, h, w) or (n, M, h, w)
            return select_maps(maps, map_classes, [name] * len(rows), str(cam_store)).reshape(len(rows), -1)

    pairs = pair_samples(ids, labels, probs, features, split, cfg.k, cfg.seed, n_per_class, cfg.exclude_tail,
                         source=str(latents_store), chunk_size=cfg.chunk_size)  # fmt: skip
    with atomic_path(out_csv) as tmp:
        pairs.to_csv(tmp, index=False)
    return pairs

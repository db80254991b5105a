"""How new a synthetic set is: the distance of every sample to the real training images of its class.

A synthetic tail sample is worth adding when it is a *new* example of its class, not a
near-copy of one training image: copying the tail image is faithful to the finding and adds
nothing a classifier has not seen (Resample does exactly that). Per sample s made for tail
class t, in a space X (grayscale pixels at the classifier's input size, or the judge's
features):

    d(s)    = min_{i in R_t} |x_s - x_i|                 nearest real training image of class t
    ref_t   = median_{i in R_t} min_{j in R_t, j != i} |x_i - x_j|   how far real images of t lie
                                                                      from their nearest other
    r(s)    = d(s) / ref_t                               novelty ratio: 0 for a copy
    new(s)  = r(s) >= 1                                  at least as far from every real image of
                                                         its class as a typical real one is from
                                                         its nearest other

and, over all training images (of any class), whether the nearest one is an image the sample
was made from (its provenance columns: tail_id, head_id, source_id, neighbour_id): a fused
sample whose nearest training image is its own tail source is a near-copy of that source even
when its class holds no closer image. A set's novelty is the share of new samples and the
median ratio, per tail class and averaged; a copy scores 0 new and ratio 0, an image far from
all of them 1 and a ratio above 1.

The nearest image over the whole training split is found by :class:`ltaug.method.pairing.RunningNearest`
over chunks of the training pixels, so memory is O(chunk + samples), not O(training split).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from ltaug.method.pairing import RunningNearest

SOURCE_COLUMNS = ("tail_id", "head_id", "source_id", "neighbour_id")  # provenance columns naming a training image


def pairwise_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) Euclidean distances of flattened rows, in float64."""
    a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    b = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    d2 = (a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2 * a @ b.T
    return np.sqrt(np.clip(d2, 0, None))


def reference_distance(real: np.ndarray) -> float:
    """ref_t: the median over the (n, D) real images of a class of the distance to their nearest other (n >= 2)."""
    if len(real) < 2:
        raise ValueError(f"a class needs at least 2 real images for a reference distance, got {len(real)}")
    d = pairwise_distances(real, real)
    np.fill_diagonal(d, np.inf)
    return float(np.median(d.min(axis=1)))


def class_novelty(samples: np.ndarray, real: np.ndarray, reference: float | None = None) -> dict[str, np.ndarray | float]:
    """Per sample of one class: distance to the nearest of the (n, D) real images, its index and the ratio to the
    class's reference distance (computed from ``real`` when not given); ``new``: ratio >= 1."""
    reference = reference_distance(real) if reference is None else reference
    if len(samples) == 0:
        empty = np.zeros(0)
        return {"distance": empty, "nearest": empty.astype(np.int64), "ratio": empty, "new": empty.astype(bool),
                "reference": reference}  # fmt: skip
    d = pairwise_distances(samples, real)
    nearest = d.argmin(axis=1)
    distance = d[np.arange(len(d)), nearest]
    ratio = distance / reference if reference > 0 else np.full(len(distance), np.inf)
    return {"distance": distance, "nearest": nearest, "ratio": ratio, "new": ratio >= 1.0, "reference": reference}


def nearest_training(samples: np.ndarray, chunks: Iterable[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """(distance, row) of every sample's nearest training image, the training images offered as (rows, (m, D)
    vectors) chunks in increasing row order (ties go to the earlier row)."""
    search = RunningNearest(np.asarray(samples, dtype=np.float64).reshape(len(samples), -1), 1)
    for rows, vectors in chunks:
        search.update(np.asarray(vectors).reshape(len(rows), -1), np.asarray(rows))
    return search.distance[:, 0], search.row[:, 0]


def own_source(nearest_ids: Sequence[str], sources: dict[str, Sequence[str]]) -> dict[str, np.ndarray]:
    """Per provenance column (tail_id, head_id, ...), whether each sample's nearest training image is the one that
    column names, and ``any``: whether it is any of them."""
    nearest_ids = np.asarray([str(i) for i in nearest_ids])
    out = {c: nearest_ids == np.asarray([str(v) for v in values]) for c, values in sources.items()}
    out["any"] = np.logical_or.reduce(list(out.values())) if out else np.zeros(len(nearest_ids), dtype=bool)
    return out


def summarise(ratio: np.ndarray, new: np.ndarray) -> dict[str, float]:
    """A class's or a set's novelty: share of new samples and the median ratio (NaN without samples)."""
    if len(ratio) == 0:
        return {"new": float("nan"), "median_ratio": float("nan")}
    return {"new": float(np.mean(new)), "median_ratio": float(np.median(ratio))}


def gray_vectors(images: Iterable[np.ndarray]) -> np.ndarray:
    """(n, S*S) float32 in [0, 1] from (S, S) uint8 grayscale images: the pixel space of novelty."""
    arrays = [np.asarray(im, dtype=np.float32).reshape(-1) / 255.0 for im in images]
    return np.stack(arrays) if arrays else np.zeros((0, 0), dtype=np.float32)


def median_example(ratio: np.ndarray) -> int:
    """Index of the sample at the median of the ratios (the lower middle of an even count), for the report's panel."""
    order = np.argsort(ratio, kind="stable")
    return int(order[(len(order) - 1) // 2])


def set_novelty(
    fake_pixels: dict[str, np.ndarray], fake_features: dict[str, np.ndarray], sources: dict[str, dict[str, Sequence[str]]],
    class_rows: dict[str, np.ndarray], train_features: np.ndarray, train_pixels, train_ids: Sequence[str],
    chunk: int = 256,
) -> dict[str, dict]:  # fmt: skip
    """Novelty of one synthetic set, per tail class: ``fake_pixels[t]`` (n, S*S) and ``fake_features[t]`` (n, D) of
    its samples made for t, ``sources[t]``: their provenance columns naming training images, ``class_rows[t]``: the
    training rows of class t; ``train_features`` (N, D) and ``train_pixels`` (an (N, S, S) array read by rows, e.g.
    a Zarr array) of the training split, whose ids are ``train_ids``.

    Returns {t: {"pixels": {...}, "features": {...}, "own_source": share, "nearest_is": {column: share},
    "example": {...}}}: the per-space summaries with the reference distance, the share of samples whose nearest
    training image is one they were made from, and the median sample in pixels with its nearest real image of t
    (for the report's panel); a class with fewer than 2 training images has no reference distance and NaN novelty.
    The nearest image over the whole training split is searched once for every class, ``chunk`` training rows at a
    time."""
    classes = [t for t in fake_pixels if len(fake_pixels[t])]
    every = np.concatenate([fake_pixels[t] for t in classes]) if classes else np.zeros((0, 1))
    n = len(train_ids)

    def chunks():
        for a in range(0, n, chunk):
            rows = np.arange(a, min(a + chunk, n))
            yield rows, gray_vectors(train_pixels[a : a + len(rows)])

    _, row = nearest_training(every, chunks()) if len(every) else (None, np.zeros(0, dtype=np.int64))
    ids = np.asarray([str(i) for i in train_ids])
    out, start = {}, 0
    for t in fake_pixels:
        m = len(fake_pixels[t])
        rows = np.asarray(class_rows[t])
        real_px = gray_vectors(train_pixels.oindex[rows] if hasattr(train_pixels, "oindex") else train_pixels[rows])
        entry = {}
        for space, fake, real in (("pixels", fake_pixels[t], real_px), ("features", fake_features[t], train_features[rows])):
            if len(rows) < 2:  # no distance between real images of the class: novelty is undefined, not guessed
                entry[space] = {"new": float("nan"), "median_ratio": float("nan"), "reference": float("nan")}
                continue
            found = class_novelty(fake, real)
            entry[space] = {**summarise(found["ratio"], found["new"]), "reference": found["reference"]}
            if space == "pixels" and m:
                i = median_example(found["ratio"])
                entry["example"] = {"index": i, "nearest_id": str(ids[rows[found["nearest"][i]]]),
                                    "ratio": float(found["ratio"][i])}  # fmt: skip
        if t in classes:
            own = own_source(ids[row[start : start + m]], sources.get(t, {}))
            start += m
            entry["own_source"] = float(np.mean(own.pop("any"))) if sources.get(t) else float("nan")
            entry["nearest_is"] = {c: float(np.mean(v)) for c, v in own.items()}
        out[t] = entry
    return out

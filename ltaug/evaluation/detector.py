"""Label fidelity of synthetic samples, and a detector of the demo's tail findings (stage fit_detector).

The paper (Elberg, Parra, Petrache, arXiv 2405.01705) measures whether augmented tail
samples help a classifier and how far they are from real images (FID), not whether a
sample made for class t shows class t. Two measures of that:

* label fidelity: the share of the samples made for tail class t that the classifier trained
  on real data only scores positive for t, at the per-class threshold that maximises F1 on
  the validation split (a rare class's scores seldom reach 0.5); the same share on real
  images of the class is reported beside it as the reference;
* on the demo data, detector fidelity: the share whose image shows the class's drawn pattern,
  by a small hand-made detector (:class:`Detector`): a linear filter matched to the pattern
  (isolated bright disk, bright line or ridge under 5 px wide, dark valley below the diaphragm), its maximum inside the
  region where validation images have that finding (the union of their ground-truth boxes),
  and a threshold fitted on validation images: nothing of the training images, which the
  synthetic samples are made from, enters the judge. Its sensitivity, specificity and
  localisation on the real test images, against their ground-truth boxes, are written with it,
  and evaluate_fid reports its false-positive rate on synthetic negatives too (the samples
  made for the other tail classes).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage, signal

from ltaug.common.errors import InputError
from ltaug.common.io import atomic_path
from ltaug.data.image_store import ImageStores, read_images

# finding -> (filter, parameters): the pattern ltaug.data.demo draws for it (see demo.FINDINGS)
FILTERS: dict[str, tuple[str, tuple[float, ...]]] = {
    "Nodule": ("isolated_blob", (6.0, 12.0, 16.0)),  # dense round spot of 16-22 px, darker lung all around
    "Fracture": ("white_tophat", (9,)),  # thin bright oblique line: what a 9 x 9 opening removes
    "Calcification of the Aorta": ("bright_ridge", (2.5,)),  # thin bright arc on the aortic knob: a ridge
    "Pneumoperitoneum": ("dark_valley_y", (3.0,)),  # dark crescent under the diaphragm: vertical valley
    "Atelectasis": ("bright_blob", (1.2, 4.0)),  # plate-like bright band
    "Pneumothorax": ("dark_blob", (2.0, 6.0)),  # texture-free dark rim
}
MARGIN = 2  # px the union of training boxes is grown by
NEGATIVES = 300  # validation images without the finding the threshold is fitted on (a seeded subset)


def label_fidelity(scores: np.ndarray, threshold: float) -> float:
    """Share of ``scores`` (one class's scores of the samples made for it) at or above ``threshold``."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        raise ValueError("no samples to measure label fidelity on")
    return float((scores >= threshold).mean())


def response(image: np.ndarray, kind: str, params: Sequence[float]) -> np.ndarray:
    """(H, W) filter response of a grayscale image; large where the pattern is."""
    x = np.asarray(image, dtype=np.float32)
    if kind in ("bright_blob", "dark_blob"):
        sign = 1.0 if kind == "bright_blob" else -1.0
        return sign * (ndimage.gaussian_filter(x, params[0]) - ndimage.gaussian_filter(x, params[1]))
    if kind == "isolated_blob":  # bright disk darker all around: disk mean - brightest sector of the ring
        return _isolated_blob(x, *params)
    if kind == "white_tophat":  # bright structures narrower than the square structuring element
        return x - ndimage.grey_opening(x, size=(int(params[0]),) * 2)
    if kind == "bright_ridge":  # minus the smaller Hessian eigenvalue, scale-normalised
        s = params[0]
        ixx = ndimage.gaussian_filter(x, s, order=(0, 2))
        iyy = ndimage.gaussian_filter(x, s, order=(2, 0))
        ixy = ndimage.gaussian_filter(x, s, order=(1, 1))
        smaller = (ixx + iyy) / 2 - np.sqrt(((ixx - iyy) / 2) ** 2 + ixy**2)
        return -smaller * s**2
    if kind == "dark_valley_y":  # second derivative across rows: a dark band between brighter rows
        s = params[0]
        return ndimage.gaussian_filter(x, s, order=(2, 0)) * s**2
    raise ValueError(f"unknown filter {kind!r}")


def _isolated_blob(x: np.ndarray, radius: float, inner: float, outer: float, sectors: int = 8) -> np.ndarray:
    """Mean over a disk of ``radius`` px minus the largest mean over ``sectors`` angular sectors of the
    ring ``inner``..``outer`` px around it: high on a bright spot surrounded by darker tissue on every
    side, low on the edge of a large bright structure (one sector of its ring is bright too)."""
    r = int(np.ceil(outer))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    dist, angle = np.hypot(xx, yy), np.arctan2(yy, xx)
    disk = (dist <= radius).astype(np.float32)
    out = signal.fftconvolve(x, disk[::-1, ::-1] / disk.sum(), mode="same")
    ring = (dist >= inner) & (dist <= outer)
    brightest = np.full_like(x, -np.inf)
    for s in range(sectors):
        lo = -np.pi + 2 * np.pi * s / sectors
        part = (ring & (angle >= lo) & (angle < lo + 2 * np.pi / sectors)).astype(np.float32)
        brightest = np.maximum(brightest, signal.fftconvolve(x, part[::-1, ::-1] / part.sum(), mode="same"))
    return out - brightest


def rate_intervals(
    hits: dict[str, np.ndarray], resamples: int = 1000, level: float = 0.95, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Per class and for the mean over classes: the hit rate of (n_c,) bool arrays with a percentile bootstrap
    interval (each replicate resamples every class's samples with replacement, seeded); a class without samples
    is NaN and left out of the mean."""
    rng = np.random.default_rng(seed)
    alpha = (1 - level) / 2
    reps = {}
    for name, h in hits.items():
        h = np.asarray(h, dtype=np.float64)
        reps[name] = h[rng.integers(0, len(h), (resamples, len(h)))].mean(axis=1) if len(h) else np.full(resamples, np.nan)
    out = {}
    for name, h in hits.items():
        rate = float(np.mean(h)) if len(h) else float("nan")
        lo, hi = (np.quantile(reps[name], [alpha, 1 - alpha]) if len(h) else (np.nan, np.nan))
        out[name] = {"rate": rate, "lo": float(lo), "hi": float(hi), "n": int(len(h))}
    defined = [n for n in hits if len(hits[n])]
    if defined:
        mean = np.mean([reps[n] for n in defined], axis=0)
        lo, hi = np.quantile(mean, [alpha, 1 - alpha])
        out["mean"] = {"rate": float(np.mean([out[n]["rate"] for n in defined])), "lo": float(lo), "hi": float(hi),
                       "n": int(sum(out[n]["n"] for n in defined))}  # fmt: skip
    else:
        out["mean"] = {"rate": float("nan"), "lo": float("nan"), "hi": float("nan"), "n": 0}
    return out


def youden_threshold(positive: np.ndarray, negative: np.ndarray) -> tuple[float, float]:
    """(threshold, J): the score threshold maximising sensitivity + specificity - 1."""
    best = (-1.0, 0.0)
    for t in np.unique(np.concatenate([positive, negative])):
        j = (positive >= t).mean() + (negative < t).mean() - 1
        if j > best[0]:
            best = (float(j), float(t))
    return best[1], best[0]


@dataclass
class Detector:
    """Per finding: filter, region mask (union of training boxes), threshold; images at ``image_size``."""

    image_size: int
    classes: dict  # name -> {"filter", "params", "boxes", "threshold", "train", "test"}

    def _mask(self, name: str) -> np.ndarray:
        mask = np.zeros((self.image_size, self.image_size), dtype=bool)
        for x0, y0, x1, y1 in self.classes[name]["boxes"]:
            mask[y0:y1, x0:x1] = True
        return ndimage.binary_dilation(mask, iterations=MARGIN)

    def score(self, name: str, image: np.ndarray, mask: np.ndarray | None = None) -> tuple[float, tuple[int, int]]:
        """(score, (x, y) of the maximum) of one grayscale image for finding ``name``."""
        if image.shape != (self.image_size, self.image_size):
            image = np.asarray(Image.fromarray(np.asarray(image, np.uint8)).resize((self.image_size,) * 2, Image.Resampling.BILINEAR))
        entry = self.classes[name]
        r = response(image, entry["filter"], entry["params"])
        r = np.where(self._mask(name) if mask is None else mask, r, -np.inf)
        y, x = np.unravel_index(int(np.argmax(r)), r.shape)
        return float(r[y, x]), (int(x), int(y))

    def hits(self, name: str, images: Sequence[np.ndarray]) -> np.ndarray:
        """(n,) bool: whether the detector finds ``name`` in each of ``images``."""
        mask = self._mask(name)
        threshold = self.classes[name]["threshold"]
        return np.array([self.score(name, im, mask)[0] >= threshold for im in images], dtype=bool)

    def rate(self, name: str, images: Sequence[np.ndarray]) -> float | None:
        """Share of ``images`` in which the detector finds ``name`` (None: no detector for it)."""
        if name not in self.classes:
            return None
        return float(np.mean(self.hits(name, images)))

    def save(self, path: str | Path) -> None:
        with atomic_path(path) as tmp:
            Path(tmp).write_text(json.dumps({"image_size": self.image_size, "classes": self.classes}, indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Detector:
        if not Path(path).is_file():
            raise InputError(f"{path}: no detector here; run the fit_detector stage (demo data only).")
        data = json.loads(Path(path).read_text())
        return cls(data["image_size"], data["classes"])


def fit_detector(
    manifest: pd.DataFrame, boxes: pd.DataFrame, classes: Sequence[str], image_size: int, seed: int = 0,
    fit: str = "val", measure: str | None = "test", stores: ImageStores | None = None,
) -> Detector:  # fmt: skip
    """Fit the region and threshold on the ``fit`` split (validation) and measure on the ``measure`` split (test;
    None: not measured, for choosing settings without the test split), for each of ``classes`` with a filter.

    The training images are the ones synthetic samples are made from, so nothing of them enters
    the judge: its search region is the union of the ``fit`` split's boxes of the class (grown by
    ``MARGIN``), its threshold the Youden point of that split's positives and (up to ``NEGATIVES``,
    a seeded subset) negatives. ``manifest``: id, path, split and label columns; ``boxes``: the
    demo's boxes.csv (dicom_id, split, class, x0, y0, x1, y1) in pixels of ``image_size`` x
    ``image_size`` images; ``stores``: the image stores of decode_images (None: the image files).
    """
    rng = np.random.default_rng(seed)
    detector = Detector(image_size, {})
    seen: dict[str, np.ndarray] = {}

    def image(i: int) -> np.ndarray:
        key = manifest["id"].iloc[i]
        if key not in seen:
            seen[key] = read_images(manifest.iloc[[i]], image_size, stores)[0]
        return seen[key]

    for name in classes:
        if name not in FILTERS or name not in manifest.columns:
            continue
        kind, params = FILTERS[name]
        mine = boxes[boxes["class"] == name]
        region = mine[mine["split"] == fit][["x0", "y0", "x1", "y1"]].to_numpy().tolist()
        if not region:
            continue
        detector.classes[name] = {"filter": kind, "params": list(params), "boxes": region, "threshold": 0.0,
                                  "fitted_on": fit}  # fmt: skip
        mask = detector._mask(name)
        found = {}
        for split in (fit, measure) if measure else (fit,):
            rows = manifest["split"].to_numpy() == split
            pos = np.flatnonzero(rows & (manifest[name].to_numpy() == 1))
            neg = np.flatnonzero(rows & (manifest[name].to_numpy() == 0))
            if split == fit and len(neg) > NEGATIVES:
                neg = np.sort(rng.choice(neg, NEGATIVES, replace=False))
            found[split] = (pos, [detector.score(name, image(i), mask) for i in pos],
                            [detector.score(name, image(i), mask)[0] for i in neg])  # fmt: skip
        pos, scored, negative = found[fit]
        threshold, j = youden_threshold(np.array([s for s, _ in scored]), np.array(negative))
        detector.classes[name]["threshold"] = threshold
        detector.classes[name][fit] = {"youden_j": j, "positives": len(pos), "negatives": len(negative)}
        if not measure:
            continue
        pos, scored, negative = found[measure]
        where = mine[mine["split"] == measure].set_index("dicom_id")
        hits = [(i, xy) for i, (s, xy) in zip(pos, scored) if s >= threshold]
        inside = [_inside(where.loc[manifest["id"].iloc[i]], xy) for i, xy in hits]
        detector.classes[name][measure] = {
            "positives": len(pos),
            "negatives": len(negative),
            "sensitivity": float(len(hits) / len(pos)) if len(pos) else None,
            "specificity": float(np.mean(np.array(negative) < threshold)) if negative else None,
            "localisation": float(np.mean(inside)) if inside else None,
        }
    return detector


def _inside(box: pd.Series | pd.DataFrame, xy: tuple[int, int]) -> bool:
    """Whether (x, y) lies in the box (or any of the boxes) of the finding in that image."""
    rows = box.to_frame().T if isinstance(box, pd.Series) else box
    x, y = xy
    return bool(((rows["x0"] <= x) & (x < rows["x1"]) & (rows["y0"] <= y) & (y < rows["y1"])).any())

"""The embedded demo: a procedurally drawn, long-tailed, multi-label set of chest-X-ray-like images.

Stands in for MIMIC-CXR-JPG + CXR-LT (see DESIGN.md, "Data") so the whole workflow runs on
a laptop with nothing downloaded. Every image is a grayscale frontal "radiograph": a body
silhouette, two dark lungs, a bright mediastinum and heart shadow, spine, faint ribs,
clavicles and diaphragm domes, with per-image anatomical jitter, mild smooth noise and blur.
Each finding class is a *localised* pattern drawn in a class-specific region (``FINDINGS``);
several can co-occur. Image left is the patient's right, as on a PA film.

Everything is deterministic for ``DemoConfig.seed``. The anatomy, the noise and each finding
come from separate random streams (``_rng``), so drawing an image with or without one finding
leaves everything else identical, and the ground-truth box returned for each finding
(x0, y0, x1, y1: pixels, half-open, clipped) contains every pixel the finding changed.

Labels: per split, class k has exactly ``max(1, round(p_k * n))`` positives (0 when p_k = 0),
so the training prevalences equal the configured ones; with the defaults 4 head (>= 15 %)
and 4 tail (<= 2 %) classes. Files follow the CXR-LT layout, see :func:`make_demo`.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageFilter

from ltaug.common.config import config_section
from ltaug.common.errors import ConfigError, InputError
from ltaug.common.io import atomic_path
from ltaug.common.seeds import rng as seeded
from ltaug.data.demo_drawing import DRAWERS, FINDINGS, draw_anatomy

NO_FINDING = "No Finding"
DEFAULT_PREVALENCE: dict[str, float] = {
    "Cardiomegaly": 0.30,
    "Pleural Effusion": 0.25,
    "Lung Opacity": 0.22,
    "Support Devices": 0.18,
    "Atelectasis": 0.08,
    "Pneumothorax": 0.05,
    "Nodule": 0.02,
    "Fracture": 0.015,
    "Calcification of the Aorta": 0.015,
    "Pneumoperitoneum": 0.01,
}
SPLITS = ("train", "val", "test")

# Seed words that keep the random streams apart (numpy's SeedSequence ignores trailing zeros,
# so the purpose sits in second place): labels (seed, 1, split); ids (seed, 2, split);
# image streams (seed, 3, split, index, stream) with stream 0 = anatomy, 1 = noise, 2 + k = finding k.
# The oracle's fresh images (fresh real tail images, no split's) are place (ORACLE, draw, finding, j) in
# the same streams: labels (seed, 1, ORACLE, draw, finding), images (seed, 3, ORACLE, draw, finding, j, stream),
# a third word that no split has.
_LABELS, _IDS, _IMAGE = 1, 2, 3
ORACLE = len(SPLITS)  # the place word of the oracle's images: after train, val and test


@config_section("demo")
@dataclass(frozen=True)
class DemoConfig:
    seed: int = 0  # everything (labels, anatomy, findings, noise, ids) is a function of it
    image_size: int = 128  # side of the square images in pixels; multiple of 8 (VAE latents are /8), >= 32
    n_train: int = 2000  # images in the training split
    n_val: int = 400  # images in the validation split
    n_test: int = 4000  # images in the test split (40 positives of a 1 % class: Table 1's intervals)
    # finding -> fraction of images with it; a finding left out is never drawn and has no column
    prevalence: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_PREVALENCE))

    def __post_init__(self) -> None:  # types and ranges: the schema (ltaug.common.config.config_section)
        unknown = [name for name in self.prevalence if name not in FINDINGS]
        if unknown:
            raise ConfigError(
                f"demo.prevalence: unknown finding {unknown[0]!r}; the findings are {', '.join(FINDINGS)} "
                f"({NO_FINDING!r} is derived, not sampled). Fix the name or remove it."
            )
        object.__setattr__(self, "prevalence", dict(self.prevalence))


def class_names() -> list[str]:
    """Label columns: the findings in ``FINDINGS`` order, then ``No Finding``."""
    return [*FINDINGS, NO_FINDING]


def _split_index(split: str) -> int:
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is not one of {', '.join(SPLITS)}")
    return SPLITS.index(split)


def _n_positive(p: float, n: int) -> int:
    return max(1, round(p * n)) if p > 0 else 0


def draw_labels(cfg: DemoConfig, split: str) -> np.ndarray:
    """(n, K) uint8 labels of ``split``: exactly ``_n_positive(p_k, n)`` ones in finding column k,
    on images drawn without replacement; the last column is 1 where no finding is."""
    n = getattr(cfg, f"n_{split}")
    rng = seeded(cfg.seed, _LABELS, _split_index(split))
    labels = np.zeros((n, len(FINDINGS) + 1), dtype=np.uint8)  # (n, K)
    for k, name in enumerate(FINDINGS):
        labels[rng.choice(n, _n_positive(cfg.prevalence.get(name, 0.0), n), replace=False), k] = 1
    labels[:, -1] = labels[:, :-1].max(axis=1) == 0
    return labels


# ---------------------------------------------------------------- images (the drawings: ltaug.data.demo_drawing)


def _rng(cfg: DemoConfig, place: tuple[int, ...], stream: int) -> np.random.Generator:
    return seeded(cfg.seed, _IMAGE, *place, stream)


def render_image(
    cfg: DemoConfig, split: str, index: int, findings: Sequence[str]
) -> tuple[np.ndarray, list[tuple[str, int, int, int, int]]]:
    """Draw image ``index`` of ``split`` with ``findings``: (S, S) uint8 and one box per finding,
    (class, x0, y0, x1, y1) in px, half-open, in column order."""
    return _render(cfg, (_split_index(split), index), findings, f"{split} image {index}")


def oracle_findings(cfg: DemoConfig, tail_class: str, n: int, draw: int) -> list[list[str]]:
    """The findings of the oracle's ``n`` fresh images of ``tail_class`` in draw ``draw``, as a training image of the
    class has them: the class itself, and every other finding with its prevalence (the demo draws each class
    independently), from a labels stream of their own."""
    k = list(FINDINGS).index(tail_class)
    rng = seeded(cfg.seed, _LABELS, ORACLE, draw, k)
    others = [c for c in FINDINGS if c != tail_class]
    p = np.array([cfg.prevalence.get(c, 0.0) for c in others])
    present = rng.random((n, len(others))) < p  # (n, K - 1)
    return [[c for c in FINDINGS if c == tail_class or (c in others and row[others.index(c)])] for row in present]


def render_oracle(
    cfg: DemoConfig, tail_class: str, draw: int, j: int, findings: Sequence[str]
) -> tuple[np.ndarray, list[tuple[str, int, int, int, int]]]:
    """Fresh image j of the oracle's draw ``draw`` for ``tail_class``, with ``findings``: drawn as a split's images
    are, from streams no split uses (:data:`ORACLE`), so it is in no split; (S, S) uint8 and its boxes."""
    place = (ORACLE, draw, list(FINDINGS).index(tail_class), j)
    return _render(cfg, place, findings, f"oracle image {j} of {tail_class} (draw {draw})")


def _render(
    cfg: DemoConfig, place: tuple[int, ...], findings: Sequence[str], what: str
) -> tuple[np.ndarray, list[tuple[str, int, int, int, int]]]:
    unknown = sorted(set(findings) - set(FINDINGS))
    if unknown:
        raise ValueError(f"unknown findings {unknown}; known: {', '.join(FINDINGS)}")
    size = cfg.image_size
    img, g = draw_anatomy(size, _rng(cfg, place, 0), enlarged_heart="Cardiomegaly" in findings)
    noise = _rng(cfg, place, 1)
    coarse = Image.fromarray(noise.normal(0, 4.0, (size // 16 + 2,) * 2).astype(np.float32))
    img += np.asarray(coarse.resize((size, size), Image.Resampling.BICUBIC)) + noise.normal(0, 2.5, (size, size))
    radius = 0.6 * size / 128  # blur sigma in px; its kernel reaches < ceil(3 sigma) px
    margin = math.ceil(3 * radius) + 1
    boxes = {}
    for name, draw in DRAWERS.items():
        if name in findings:
            stream = 2 + list(FINDINGS).index(name)
            ys, xs = np.nonzero(draw(img, g, _rng(cfg, place, stream)))
            if len(xs) == 0:
                raise RuntimeError(f"demo: {name} drew nothing in {what}")
            boxes[name] = (name, max(int(xs.min()) - margin, 0), max(int(ys.min()) - margin, 0),
                           min(int(xs.max()) + 1 + margin, size), min(int(ys.max()) + 1 + margin, size))
    img = np.clip(np.rint((img - 100) * g.gain + 100 + g.offset), 0, 255).astype(np.uint8)
    img = np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(radius)))
    return img, [boxes[name] for name in FINDINGS if name in boxes]


# ---------------------------------------------------------------- files


def _ids(cfg: DemoConfig, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(n,) subject ids and (n,) study ids: ~1.5 studies per subject, subjects disjoint across splits."""
    first = 10_000_000 + 17 * sum(math.ceil(getattr(cfg, f"n_{s}") / 1.5) for s in SPLITS[: _split_index(split)])
    n = getattr(cfg, f"n_{split}")
    rng = seeded(cfg.seed, _IDS, _split_index(split))
    subject = first + 17 * np.sort(rng.integers(0, math.ceil(n / 1.5), n))
    study = 50_000_000 + 3_000_000 * _split_index(split) + 11 * np.arange(n) + rng.integers(0, 11, n)
    return subject, study


def _render_to_png(job: tuple) -> list[tuple[str, int, int, int, int]]:
    cfg, split, index, findings, path = job
    img, boxes = render_image(cfg, split, index, findings)  # looked up at call time (tests patch it)
    Image.fromarray(img).save(path, format="PNG")
    return boxes


OUTPUTS = ("images", *(f"{s}.csv" for s in SPLITS), "boxes.csv", "demo.json")  # all make_demo writes


def make_demo(outdir: str | Path, cfg: DemoConfig, workers: int = 1) -> None:
    """Write the demo set under ``outdir``, atomically (an existing one is replaced when complete):

    images/{split}/{dicom_id}.png   8-bit grayscale, dicom_id "demo-{split}-{index:06d}"
    {split}.csv                     dicom_id, subject_id, study_id, path (relative to images/), K 0/1 columns
    boxes.csv                       dicom_id, split, class, x0, y0, x1, y1: every drawn finding's box
    demo.json                       the config, class names, per-split counts and prevalences

    Rendering runs in ``workers`` processes; the files are byte-identical for any ``workers``.
    """
    if not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers: {workers!r} is not an integer >= 1 (the number of processes).")
    outdir = Path(outdir)
    foreign = sorted(p.name for p in outdir.iterdir() if p.name not in OUTPUTS) if outdir.is_dir() else []
    if foreign:
        raise InputError(
            f"{outdir} (demo.outdir) holds files the demo did not write ({', '.join(foreign[:5])}); the demo "
            f"replaces this directory whole, so point demo.outdir at an empty or demo-only directory."
        )
    names = [c for c in class_names() if c in cfg.prevalence or c == NO_FINDING]  # columns written
    cols = [class_names().index(c) for c in names]
    box_rows, summary = [], {}
    with atomic_path(outdir) as tmp:
        pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 1 else None
        try:
            for split in SPLITS:
                start = time.perf_counter()
                labels = draw_labels(cfg, split)  # (n, K)
                ids = [f"demo-{split}-{i:06d}" for i in range(len(labels))]
                (tmp / "images" / split).mkdir(parents=True)
                jobs = [
                    (cfg, split, i, [c for c, y in zip(FINDINGS, row) if y], tmp / "images" / split / f"{ids[i]}.png")
                    for i, row in enumerate(labels)
                ]
                if pool is None:
                    results = map(_render_to_png, jobs)
                else:
                    results = pool.imap(_render_to_png, jobs, chunksize=max(1, len(jobs) // (8 * workers)))
                for dicom_id, boxes in zip(ids, results):
                    box_rows += [(dicom_id, split, *box) for box in boxes]
                subject, study = _ids(cfg, split)
                table = pd.DataFrame({"dicom_id": ids, "subject_id": subject, "study_id": study,
                                      "path": [f"{split}/{i}.png" for i in ids]})
                table[names] = labels[:, cols].astype(np.int64)
                table.to_csv(tmp / f"{split}.csv", index=False, lineterminator="\n")
                positives = labels[:, cols].sum(axis=0)
                summary[split] = {
                    "n": len(labels),
                    "positives": {c: int(v) for c, v in zip(names, positives)},
                    "prevalence": {c: round(float(v) / len(labels), 6) for c, v in zip(names, positives)},
                }
                print(f"demo: {split}: {len(labels)} images in {time.perf_counter() - start:.1f} s", file=sys.stderr)
        finally:
            if pool is not None:
                pool.terminate()  # before atomic_path deletes the folder the workers write into
                pool.join()
        boxes = pd.DataFrame(box_rows, columns=["dicom_id", "split", "class", "x0", "y0", "x1", "y1"])
        boxes.to_csv(tmp / "boxes.csv", index=False, lineterminator="\n")
        info = {"config": asdict(cfg), "classes": names, "findings": FINDINGS, "splits": summary}
        (tmp / "demo.json").write_text(json.dumps(info, indent=2) + "\n")

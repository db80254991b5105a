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

from ltaug.errors import ConfigError, InputError
from ltaug.io import atomic_path

FINDINGS: dict[str, str] = {
    "Cardiomegaly": "heart shadow drawn ~1.4x wider (cardiothoracic ratio > 0.5)",
    "Pleural Effusion": "bright fluid filling one lung base, its top a meniscus rising laterally",
    "Lung Opacity": "hazy, irregular bright patch in the mid/upper zone of one lung",
    "Support Devices": "thin very bright tube down from the neck + small bright box on the upper chest (image right)",
    "Atelectasis": "plate-like bright band, nearly horizontal, in the lower zone of one lung",
    "Pneumothorax": "texture-free very dark crescent at one lung's apex/lateral wall, bounded by a thin pleural line",
    "Nodule": "small dense round spot inside one lung",
    "Fracture": "short thin bright oblique line across the lateral part of one rib",
    "Calcification of the Aorta": "thin bright arc on the upper outer contour of the aortic knob (image right)",
    "Pneumoperitoneum": "dark crescent of free air just under the right hemidiaphragm (image left)",
}
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
_LABELS, _IDS, _IMAGE = 1, 2, 3


@dataclass(frozen=True)
class DemoConfig:
    seed: int = 0  # everything (labels, anatomy, findings, noise, ids) is a function of it
    image_size: int = 128  # side of the square images in pixels; multiple of 8 (VAE latents are /8), >= 32
    n_train: int = 2000  # images in the training split
    n_val: int = 400  # images in the validation split
    n_test: int = 4000  # images in the test split (40 positives of a 1 % class: Table 1's intervals)
    # finding -> fraction of images with it; a finding left out is never drawn and has no column
    prevalence: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_PREVALENCE))

    def __post_init__(self) -> None:
        def is_int(v) -> bool:
            return isinstance(v, int | np.integer) and not isinstance(v, bool)

        if not is_int(self.seed) or self.seed < 0:
            raise ConfigError(f"demo.seed: {self.seed!r} is not an integer >= 0; give e.g. seed: 0.")
        s = self.image_size
        if not is_int(s) or s < 32 or s % 8:
            raise ConfigError(
                f"demo.image_size: {s!r} is not a multiple of 8 that is >= 32; the VAE works on "
                f"8x8 patches, so use e.g. 64, 128 or 256."
            )
        for split in SPLITS:
            n = getattr(self, f"n_{split}")
            if not is_int(n) or n < 1:
                raise ConfigError(f"demo.n_{split}: {n!r} is not an integer >= 1; every split needs images.")
        if not isinstance(self.prevalence, dict):
            raise ConfigError(f"demo.prevalence: expected a mapping finding -> fraction, got {self.prevalence!r}.")
        for name, p in self.prevalence.items():
            if name not in FINDINGS:
                raise ConfigError(
                    f"demo.prevalence: unknown finding {name!r}; the findings are {', '.join(FINDINGS)} "
                    f"({NO_FINDING!r} is derived, not sampled). Fix the name or remove it."
                )
            if not isinstance(p, int | float) or isinstance(p, bool) or not 0 < p < 1:
                raise ConfigError(
                    f"demo.prevalence.{name}: {p!r} is not a fraction in (0, 1); "
                    f"give e.g. 0.02 for 2 % (leave the finding out for none)."
                )
        object.__setattr__(self, "prevalence", dict(self.prevalence))  # no aliasing of the caller's dict


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
    rng = np.random.default_rng([cfg.seed, _LABELS, _split_index(split)])
    labels = np.zeros((n, len(FINDINGS) + 1), dtype=np.uint8)  # (n, K)
    for k, name in enumerate(FINDINGS):
        labels[rng.choice(n, _n_positive(cfg.prevalence.get(name, 0.0), n), replace=False), k] = 1
    labels[:, -1] = labels[:, :-1].max(axis=1) == 0
    return labels


# ---------------------------------------------------------------- drawing primitives
# Every mask is in [0, 1] and exactly 0 beyond half a pixel outside its shape, so a
# finding's support (mask > 0) bounds what it changes before the final blur.


def _ramp(d: np.ndarray, width: float = 1.0) -> np.ndarray:
    """Soft inside-indicator of a signed distance ``d`` in px (> 0 inside)."""
    return np.clip(d / width + 0.5, 0.0, 1.0)


def _ellipse(g: _Anatomy, x: float, y: float, a: float, b: float, p: float = 2.0) -> np.ndarray:
    """(S, S) mask of the (super)ellipse |dx/a|^p + |dy/b|^p <= 1, all in px."""
    r = (np.abs((g.xx - x) / a) ** p + np.abs((g.yy - y) / b) ** p) ** (1 / p)
    return _ramp((1 - r) * min(a, b))


def _segment(g: _Anatomy, x0: float, y0: float, x1: float, y1: float, half_width: float) -> np.ndarray:
    """(S, S) mask of a stroke of ``half_width`` px along the segment (x0, y0)-(x1, y1)."""
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((g.xx - x0) * dx + (g.yy - y0) * dy) / (dx * dx + dy * dy), 0, 1)
    return _ramp(half_width - np.hypot(g.xx - x0 - t * dx, g.yy - y0 - t * dy))


@dataclass
class _Anatomy:
    """One image's jittered anatomy; lengths in px, (u, v) are body-frame units (1 = one body size)."""

    xx: np.ndarray  # (S, S) pixel-centre x
    yy: np.ndarray  # (S, S) pixel-centre y
    cx: float  # body midline x
    cy: float  # body frame centre y
    unit: float  # px per body-frame unit
    gain: float  # exposure: contrast factor around gray 100 ...
    offset: float  # ... and brightness shift, applied after the findings
    lungs: dict  # side "R"/"L" -> (x, y, a, b) of the lung ellipse; R = patient right = image left
    lung_mask: dict  # side -> (S, S) visible lung (ellipse above the diaphragm)
    domes: dict  # side -> (x of dome top, y of dome top, half-width) of each hemidiaphragm
    knob: tuple  # (x, y, a, b) of the aortic knob
    heart_change: np.ndarray  # (S, S) |enlarged - normal| heart mask (Cardiomegaly's support)

    def px(self, u: float, v: float) -> tuple[float, float]:
        return self.cx + u * self.unit, self.cy + v * self.unit

    def dome_y(self, side: str) -> np.ndarray:
        """(S,) y of the hemidiaphragm at every x: a parabola, lowest laterally."""
        x, y, w = self.domes[side]
        return y + 0.15 * self.unit * ((self.xx[0] - x) / w) ** 2

    def rib_y(self, k: int, x: np.ndarray | float) -> np.ndarray | float:
        """y of rib k (0 = top) at x; posterior ribs rise a little from the spine, then fall laterally."""
        t = np.abs(x - self.cx) / (0.3 * self.unit)
        return self.cy + (-0.30 + 0.062 * k - 0.02 * t + 0.09 * t * t) * self.unit


_SIDES = {"R": -1, "L": 1}  # x direction of the patient's side in the image


def _anatomy(size: int, rng: np.random.Generator, enlarged_heart: bool) -> tuple[np.ndarray, _Anatomy]:
    """(S, S) float image of the normal anatomy (gray levels ~0-255) and its geometry."""
    jx, jy, scale, heart, dome, lung_w, body_w, gain, offset = rng.uniform(
        [-0.03, -0.03, 0.92, 0.93, -0.02, 0.94, 0.95, 0.88, -10], [0.03, 0.03, 1.05, 1.07, 0.02, 1.06, 1.05, 1.12, 10]
    )  # always the same draws, so the anatomy does not depend on the findings
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    unit = size * scale
    g = _Anatomy(xx, yy, (0.5 + jx) * size, (0.5 + jy) * size, unit, gain, offset, {}, {}, {}, (), np.zeros(0))
    img = np.full((size, size), 6.0)  # air around the patient

    # body: a boxy torso and the neck; soft tissue below the diaphragm is denser
    body = np.maximum(_ellipse(g, *g.px(0, 0.16), 0.47 * body_w * unit, 0.62 * unit, p=4),
                      _ellipse(g, *g.px(0, -0.5), 0.09 * unit, 0.16 * unit))
    img += (105 - 6) * body
    for side, sx in _SIDES.items():
        g.domes[side] = (*g.px(0.2 * sx, (0.12 if side == "R" else 0.15) + dome), 0.2 * unit)
    dome_y = np.where(xx < g.cx, g.dome_y("R"), g.dome_y("L"))  # (S, S)
    img += 30 * body * _ramp(yy - dome_y, 1.5)

    # lungs: dark (air), a little brighter towards the hila (vessels), cut below by the domes
    for side, sx in _SIDES.items():
        x, y = g.px(0.2 * sx, -0.03)
        g.lungs[side] = (x, y, 0.15 * lung_w * unit, 0.32 * unit)
        g.lung_mask[side] = _ellipse(g, *g.lungs[side]) * _ramp(g.dome_y(side) - yy, 1.5)
        hx, hy = g.px(0.09 * sx, -0.02)
        vessels = 22 * np.exp(-((xx - hx) ** 2 + (yy - hy) ** 2) / (2 * (0.09 * unit) ** 2))
        img += (40 + vessels - img) * g.lung_mask[side]
    lungs = g.lung_mask["R"] + g.lung_mask["L"]
    lateral = np.abs(xx - g.cx)
    ribs = body * (3 + 10 * lungs) * _ramp(lateral - 0.04 * unit, 2) * _ramp(0.37 * unit - lateral, 2)
    below_first = yy - g.rib_y(0, xx)  # ribs: 8 faint bands 0.062 units apart, visible mostly over the lungs
    nearest = np.clip(np.rint(below_first / (0.062 * unit)), 0, 7)
    img += ribs * _ramp(0.011 * unit - np.abs(below_first - nearest * 0.062 * unit), 1.5)

    # mediastinum, heart (bigger with Cardiomegaly), aortic knob, trachea, spine, clavicles
    img += (165 - img) * _ellipse(g, *g.px(0, -0.12), 0.075 * unit, 0.3 * unit, p=3)
    normal = _ellipse(g, *g.px(0.035, 0.1), 0.14 * heart * unit, 0.12 * heart * unit)
    big = _ellipse(g, *g.px(0.055, 0.1), 0.20 * heart * unit, 0.135 * heart * unit)
    g.heart_change = np.abs(big - normal)
    img += (170 - img) * (big if enlarged_heart else normal)
    g.knob = (*g.px(0.075, -0.22), 0.045 * unit, 0.04 * unit)
    img += (160 - img) * _ellipse(g, *g.knob)
    img -= 35 * _ellipse(g, *g.px(0, -0.42), 0.018 * unit, 0.2 * unit)
    vertebrae = 0.7 + 0.3 * np.cos(2 * np.pi * (yy - g.cy) / (0.065 * unit))
    img += 18 * vertebrae * _ramp(0.03 * unit - np.abs(xx - g.cx), 1.5) * body
    for sx in _SIDES.values():
        img += 22 * _segment(g, *g.px(0.04 * sx, -0.36), *g.px(0.30 * sx, -0.42), 0.015 * unit)
    return img, g


# ---------------------------------------------------------------- findings
# Each takes the float image, the anatomy and the finding's own generator, draws in place
# and returns the (S, S) mask of where it drew.


def _side(rng: np.random.Generator) -> tuple[str, int]:
    side = "R" if rng.random() < 0.5 else "L"
    return side, _SIDES[side]


def _cardiomegaly(img, g, rng):
    return g.heart_change  # drawn with the anatomy, whose stream must not depend on the findings


def _pleural_effusion(img, g, rng):
    side, sx = _side(rng)
    x, y, a, b = g.lungs[side]
    level, rise, strength = rng.uniform([0.30, 0.06, 0.85], [0.45, 0.10, 0.95])
    t = np.clip((g.xx - x) * sx / a * 0.5 + 0.5, 0, 1)  # 0 at the medial, 1 at the lateral wall
    meniscus = y + level * b - rise * g.unit * t * t  # fluid climbs the lateral wall
    fluid = g.lung_mask[side] * _ramp(g.yy - meniscus, 3)
    denser = np.maximum(150 - img, 0)  # fluid adds density: it leaves the brighter heart alone
    img += denser * strength * fluid
    return fluid * (denser > 0)


def _lung_opacity(img, g, rng):
    side, sx = _side(rng)
    x, y, a, b = g.lungs[side]
    du, dv, rx, ry, fx, fy, px, py, gain = rng.uniform(
        [-0.15, -0.55, 0.055, 0.06, 8, 8, 0, 0, 35], [0.5, -0.1, 0.085, 0.1, 14, 14, 6.3, 6.3, 50]
    )
    ox, oy = x + du * sx * a, y + dv * b
    r2 = ((g.xx - ox) / (rx * g.unit)) ** 2 + ((g.yy - oy) / (ry * g.unit)) ** 2
    mottle = 1 + 0.3 * np.sin(fx * (g.xx - ox) / g.unit * 2 + px) * np.sin(fy * (g.yy - oy) / g.unit * 2 + py)
    haze = np.clip(1 - r2, 0, 1) ** 2 * mottle * g.lung_mask[side]
    img += gain * haze
    return haze


def _support_devices(img, g, rng):
    x0, v_end, bow, du, dv = rng.uniform([-0.012, -0.15, -0.02, 0.20, -0.36], [0.012, 0.25, 0.02, 0.27, -0.28])
    top, end = 0.0, g.px(0, v_end)[1]
    s = np.clip((g.yy - top) / (end - top), 0, 1)
    path_x = g.px(x0, 0)[0] + bow * g.unit * np.sin(np.pi * s)  # a gently bowed tube
    tube = _ramp(0.006 * g.unit + 0.25 - np.abs(g.xx - path_x)) * _ramp(end - g.yy)
    device = _ellipse(g, *g.px(du, dv), 0.035 * g.unit, 0.022 * g.unit, p=6)
    img += (235 - img) * 0.9 * tube
    img += (250 - img) * device
    return np.maximum(tube, device)


def _atelectasis(img, g, rng):
    side, sx = _side(rng)
    x, y, a, b = g.lungs[side]
    du, dv, angle, half_len, half_w = rng.uniform([-0.2, 0.1, -0.25, 0.5, 0.012], [0.25, 0.3, 0.25, 0.75, 0.018])
    ox, oy, h = x + du * sx * a, y + dv * b, half_len * a
    dx, dy = h * np.cos(angle), h * np.sin(angle)
    plate = _segment(g, ox - dx, oy - dy, ox + dx, oy + dy, half_w * g.unit) * g.lung_mask[side]
    img += 55 * plate
    return plate


def _pneumothorax(img, g, rng):
    side, sx = _side(rng)
    x, y, a, b = g.lungs[side]
    f = rng.uniform(0.72, 0.85)  # size of the collapsed lung
    cx, cy = x - sx * (1 - f) * a, y + 0.8 * (1 - f) * b  # it falls medially and down
    inner = _ellipse(g, cx, cy, f * a, f * b)
    upper = _ramp(y + 0.2 * b - g.yy, 0.2 * b)  # apex and upper lateral wall only
    outer = _ellipse(g, x, y, a, b)
    air = outer * (1 - inner) * upper
    img += (12 - img) * air  # replaces everything, noise and ribs included: texture-free
    r = np.sqrt(((g.xx - cx) / (f * a)) ** 2 + ((g.yy - cy) / (f * b)) ** 2)
    pleura = _ramp(0.6 - np.abs(r - 1) * f * min(a, b)) * outer * upper
    img += 45 * pleura
    return np.maximum(air, pleura)


def _nodule(img, g, rng):
    side, sx = _side(rng)
    x, y, a, b = g.lungs[side]
    # radius 0.068-0.085 body units: 8-11 px at 128 px, a spot spanning at least two 8x latent cells
    # (a 1 cm nodule spans ~1.75 cells of a 512 px RoentGen latent)
    du, dv, r = rng.uniform([-0.1, -0.45, 0.068], [0.35, 0.1, 0.085])  # inside the lung, off the mediastinum
    spot = _ellipse(g, x + du * sx * a, y + dv * b, r * g.unit, r * g.unit)
    img += 70 * spot
    return spot


def _fracture(img, g, rng):
    side, sx = _side(rng)
    k = int(rng.integers(2, 7))
    u, turn, half_len = rng.uniform([0.24, 0.35, 0.05], [0.29, 0.7, 0.065])
    x = g.cx + sx * u * g.unit
    y = g.rib_y(k, x)
    slope = (g.rib_y(k, x + 0.5) - g.rib_y(k, x - 0.5))  # dy/dx of the rib there
    angle = math.atan(slope) + math.pi / 2 + (turn if rng.random() < 0.5 else -turn)  # oblique to the rib
    dx, dy = half_len * g.unit * math.cos(angle), half_len * g.unit * math.sin(angle)
    line = _segment(g, x - dx, y - dy, x + dx, y + dy, 2.5 * g.xx.shape[0] / 128)  # 5 px wide at 128 px
    img += 90 * line
    return line


def _calcification_of_the_aorta(img, g, rng):
    x, y, a, b = g.knob
    start, stop = rng.uniform([-2.6, -0.6], [-1.9, 0.1])  # radians, y down: -pi/2 is the top
    theta = np.arctan2((g.yy - y) / b, (g.xx - x) / a)
    r = np.sqrt(((g.xx - x) / a) ** 2 + ((g.yy - y) / b) ** 2)
    half = 2.5 * g.xx.shape[0] / 128  # 5 px thick at 128 px
    arc = _ramp(half - np.abs(r - 1) * min(a, b)) * ((theta >= start) & (theta <= stop))
    img += 90 * arc
    return arc


def _pneumoperitoneum(img, g, rng):
    shift, half_w, depth = rng.uniform([-0.03, 0.12, 0.065], [0.03, 0.15, 0.08])  # 8-10 px deep at 128 px
    x, _, _ = g.domes["R"]
    s = 1 - ((g.xx - x - shift * g.unit) / (half_w * g.unit)) ** 2  # > 0 under the dome's middle
    top = g.dome_y("R")[None, :]  # the crescent hugs the underside of the dome
    air = _ramp(g.yy - top - 0.5) * _ramp(top + depth * g.unit * s - g.yy, 1.5) * (s > 0)
    img += (20 - img) * 0.85 * air
    return air


# Drawing order: replacing patterns first, additive ones on top, the devices last.
_DRAW = {
    "Cardiomegaly": _cardiomegaly,
    "Pneumothorax": _pneumothorax,
    "Pleural Effusion": _pleural_effusion,
    "Pneumoperitoneum": _pneumoperitoneum,
    "Lung Opacity": _lung_opacity,
    "Atelectasis": _atelectasis,
    "Nodule": _nodule,
    "Fracture": _fracture,
    "Calcification of the Aorta": _calcification_of_the_aorta,
    "Support Devices": _support_devices,
}
assert set(_DRAW) == set(FINDINGS)  # every finding has a drawer


def _rng(cfg: DemoConfig, split: str, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([cfg.seed, _IMAGE, _split_index(split), index, stream])


def render_image(
    cfg: DemoConfig, split: str, index: int, findings: Sequence[str]
) -> tuple[np.ndarray, list[tuple[str, int, int, int, int]]]:
    """Draw image ``index`` of ``split`` with ``findings``: (S, S) uint8 and one box per finding,
    (class, x0, y0, x1, y1) in px, half-open, in column order."""
    unknown = sorted(set(findings) - set(FINDINGS))
    if unknown:
        raise ValueError(f"unknown findings {unknown}; known: {', '.join(FINDINGS)}")
    size = cfg.image_size
    img, g = _anatomy(size, _rng(cfg, split, index, 0), enlarged_heart="Cardiomegaly" in findings)
    noise = _rng(cfg, split, index, 1)
    coarse = Image.fromarray(noise.normal(0, 4.0, (size // 16 + 2,) * 2).astype(np.float32))
    img += np.asarray(coarse.resize((size, size), Image.Resampling.BICUBIC)) + noise.normal(0, 2.5, (size, size))
    radius = 0.6 * size / 128  # blur sigma in px; its kernel reaches < ceil(3 sigma) px
    margin = math.ceil(3 * radius) + 1
    boxes = {}
    for name, draw in _DRAW.items():
        if name in findings:
            stream = 2 + list(FINDINGS).index(name)
            ys, xs = np.nonzero(draw(img, g, _rng(cfg, split, index, stream)))
            if len(xs) == 0:
                raise RuntimeError(f"demo: {name} drew nothing in {split} image {index}")
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
    rng = np.random.default_rng([cfg.seed, _IDS, _split_index(split)])
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
